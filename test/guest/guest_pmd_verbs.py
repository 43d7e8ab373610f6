#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Runs inside the QEMU guest (test/guest/test_verbs_guest.sh): two
dpdk-testpmd processes, each with net_ipoib on the verbs provider over the
guest's Soft-RoCE device rxe0 (static management: no SA on RoCE), exchange
traffic; their counts must agree. A has zero copy (its mbufs sent and
received where they lie: the default where the HCA registers DPDK's
memory), B has zero_copy=0 and rx_copy_max=65535 (copies through the
provider's bounce ring and the driver's receive pool, lending none): the
copied-bytes counters are 0 on A and
exactly the traffic's bytes on B. Then Linux's ping, through net_tap and a
zero-copy net_ipoib port, against testpmd's icmpecho on another: payloads
checked by ping both ways. TAP output.

usage: guest_pmd_verbs.py PMD_SO WORKDIR
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "pmd"))
from tap import Tap  # noqa: E402
from hosts import telemetry  # noqa: E402
from testpmd import Testpmd, exact_broadcast, kill_all, macswap_pingpong  # noqa: E402

PMD, CWD = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
VDEV = "net_ipoib0,provider=verbs,dev=rxe0"
t = Tap()
running = []


def testpmd(name, fwd, main, vdev=VDEV):
    """vdev None: net_ipoib (port 0) and a net_tap (port 1, interface zctap)."""
    # One forwarding lcore each, on different vCPUs; the main lcore mostly waits at the prompt.
    vdevs = [vdev] if vdev else [VDEV, "net_tap0,iface=zctap"]
    tp = Testpmd(None, name, vdevs, PMD, CWD, prefix=f"g{name}", eal=["-l", f"{main},{fwd}", "--main-lcore", str(main)],
                 log_levels=["pmd.net.ipoib:info"],
                 startup_timeout=90)  # software emulation on a host that may be busy: port start waits for the link
    running.append(tp)
    return tp


def exact(sender, receiver, what):
    exact_broadcast(t, sender, receiver, what)


def run():
    a = testpmd("a", fwd=1, main=0)
    b = testpmd("b", fwd=0, main=1, vdev=VDEV + ",zero_copy=0,rx_copy_max=65535")
    t.ok("net_ipoib" in a("show port info 0"), "testpmd loads net_ipoib on the verbs provider (rxe0)")
    t.ok(a.wait_link(0, timeout=30) and b.wait_link(0, timeout=30),
         "both links come up (static management: the broadcast group from devargs)")
    info = a("show port info 0")
    t.ok(re.search(r"MTU:\s+1020\b", info), "MTU is rxe0's active MTU (1024) minus 4", info)
    t.ok("static (RoCE) management" in a.startup, "the driver says it manages rxe0 statically (RoCE)",
         a.startup[-1500:])
    t.ok("zero copy: sends and receives use the mbufs where they lie" in a.startup,
         "A: zero copy (rxe registers DPDK's memory, receives scatter the GRH apart)", a.startup[-1500:])
    t.ok("receives into the driver's receive pool (devarg zero_copy=0): frames over rx_copy_max=65535 lent" in b.startup, "B: copies (zero_copy=0)",
         b.startup[-1500:])
    ta, tb = (telemetry(tp.prefix, "/ipoib/ports").get("0", {}) for tp in (a, b))
    t.ok(ta.get("zero_copy") == "tx+rx" and ta.get("hca_mrs", 0) >= 1 and tb.get("zero_copy") == "off",
         "telemetry /ipoib/ports: A zero copy both ways over the MR cache's MRs, B off", (ta, tb))

    # Frames above the inline size (1000 bytes; rxe's inline limit is at most 256), 128 each way
    # (exact() clears the stats, the copy counters with them, first).
    for tp in (a, b):
        tp("set txpkts 1000")
    exact(a, b, "A -> B, 1000-byte frames")
    ax, bx = a.xstats(0), b.xstats(0)
    t.note(f"A -> B: A tx_bounce_bytes {ax.get('tx_bounce_bytes')}, B rx_copied_bytes {bx.get('rx_copied_bytes')}")
    # A sends 128 frames of 4 + 986 bytes where they lie; B copies each 1000-byte frame into a new mbuf.
    t.eq((ax.get("tx_bounce_bytes"), bx.get("rx_copied_bytes")), (0, 128 * 1000),
         "A -> B: A (zero copy) bounced nothing; B (zero_copy=0) copied every frame it received")
    exact(b, a, "B -> A, 1000-byte frames")
    ax, bx = a.xstats(0), b.xstats(0)
    t.note(f"B -> A: B tx_bounce_bytes {bx.get('tx_bounce_bytes')}, A rx_copied_bytes {ax.get('rx_copied_bytes')}")
    t.eq((bx.get("tx_bounce_bytes"), ax.get("rx_copied_bytes")), (128 * (4 + 1000 - 14), 0),
         "B -> A: B (zero_copy=0) bounced every send; A (zero copy) received every frame in place")
    for tp in (a, b):
        tp("set txpkts 64")

    exact(a, b, "A -> B")
    exact(b, a, "B -> A")

    # Sustained: a macswap ping-pong, unicast replies to the sender learned from the GRH.
    ((a_rx, a_tx), (b_rx, b_tx)), (ax, bx) = macswap_pingpong(a, b, 4)
    t.note(f"macswap over rxe: A tx {a_tx} rx {a_rx}; B tx {b_tx} rx {b_rx}")
    t.note(f"A xstats: { {k: v for k, v in ax.items() if v} }")
    t.ok(a_rx > 200 and b_rx > 200, "macswap <-> macswap keeps frames bouncing over rxe", (a_rx, b_rx))
    t.eq((b_rx, a_rx), (a_tx, b_tx), "each side received exactly what the other sent")
    errs = [x.get(k, -1) for x in (ax, bx) for k in ("tx_hca_errors", "rx_hca_errors", "hca_rx_errors")]
    t.eq(errs, [0] * 6, "no send or receive errors on either side")

    # Port events from the kernel (ibv_get_async_event): the netdev under rxe0 goes down and up.
    subprocess.run(["ip", "link", "set", "dummy0", "down"], check=True)
    down = a.wait_link(0, up=False, timeout=20)
    subprocess.run(["ip", "link", "set", "dummy0", "up"], check=True)
    t.ok(down, "the link goes down when rxe0's port does (IBV_EVENT_PORT_ERR)")
    t.ok(a.wait_link(0, up=True, timeout=30), "... and comes back up with it (IBV_EVENT_PORT_ACTIVE)")
    exact(b, a, "after the port came back, B -> A")

    for tp in running:
        tp.quit()
    t.eq([tp.p.returncode for tp in running], [0, 0], "both testpmds exit cleanly")
    running.clear()
    ping_through_tap()


def ping_through_tap():
    """Linux pings through net_tap and a zero-copy net_ipoib port (testpmd io) the icmpecho of
    another zero-copy port: ping checks every reply's payload against its pattern."""
    subprocess.run(["modprobe", "tun"], check=False)
    # No IPv6 on the tap from its birth: its ND would be copied (translated) and blur the counts below.
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1\n")
    except OSError:
        pass  # no IPv6 in this kernel: nothing to keep quiet
    c = testpmd("c", fwd=1, main=0, vdev=None)
    d = testpmd("d", fwd=0, main=1)
    t.ok(c.wait_link(0, timeout=30) and d.wait_link(0, timeout=30), "ping: both net_ipoib links up")
    mac = re.search(r"MAC address:\s+([0-9A-Fa-f:]{17})", c("show port info 0")).group(1)
    # The stack behind the tap has the ipoib port's MAC (frames for it are delivered to the stack).
    for cmd in (["ip", "link", "set", "zctap", "down"], ["ip", "link", "set", "zctap", "address", mac],
                ["ip", "link", "set", "zctap", "mtu", "1020"],
                ["ip", "addr", "add", "10.9.0.1/24", "dev", "zctap"], ["ip", "link", "set", "zctap", "up"]):
        subprocess.run(cmd, check=True)
    c("set fwd io")
    c("start")
    d("set fwd icmpecho")
    d("start")
    # First a reply at all: ARP, then C's neighbour for D (learned, its address
    # handle made) can take seconds in the emulated guest; one run of the
    # measured ping lost all 20 while it did. Then the measured ping.
    warm = None
    for _ in range(15):
        warm = subprocess.run(["ping", "-c", "1", "-W", "2", "10.9.0.2"], capture_output=True, text=True, timeout=10)
        if warm.returncode == 0:
            break
    t.ok(warm is not None and warm.returncode == 0, "ping: a first echo reply comes back (neighbours resolved)",
         warm.stdout[-500:] if warm else "")
    for tp in (c, d):
        tp("clear port xstats all")
    # 960 data bytes: a 988-byte IPv4 packet, far above the inline size, within rxe's 1020-byte MTU.
    pr = subprocess.run(["ping", "-c", "20", "-i", "0.2", "-W", "5", "-s", "960", "-p", "a55a0ff0c33c", "10.9.0.2"],
                        capture_output=True, text=True, timeout=90)
    t.note(pr.stdout.strip().splitlines()[-2] if pr.stdout.strip() else pr.stderr)
    t.ok(pr.returncode == 0 and " 0% packet loss" in pr.stdout and "wrong data" not in pr.stdout,
         "ping -s 960 through net_tap -> net_ipoib (zero copy) -> rxe -> net_ipoib (zero copy, icmpecho) and back: "
         "every reply, its payload as sent", pr.stdout[-1500:] + pr.stderr[-500:])
    c("stop")
    d("stop")
    cx, dx = c.xstats(0), d.xstats(0)
    t.note(f"ping: C tx_bounce_bytes {cx.get('tx_bounce_bytes')} rx_copied_bytes {cx.get('rx_copied_bytes')} "
           f"rx_arp_translated {cx.get('rx_arp_translated')}; D tx_bounce_bytes {dx.get('tx_bounce_bytes')} "
           f"rx_copied_bytes {dx.get('rx_copied_bytes')} rx_arp_translated {dx.get('rx_arp_translated')}")
    t.eq((cx.get("tx_bounce_bytes"), dx.get("tx_bounce_bytes")), (0, 0),
         "ping: no send bounced on either side (ARP included: translated into registered slots)")
    # Only ARP is copied on receive (42-byte frames; the echoes are received where they lie).
    t.eq((cx.get("rx_copied_bytes"), dx.get("rx_copied_bytes")),
         (42 * cx.get("rx_arp_translated", -1), 42 * dx.get("rx_arp_translated", -1)),
         "ping: what the driver copied on receive is the ARP it translated, nothing else")
    for tp in (c, d):
        tp.quit()
    t.eq([tp.p.returncode for tp in (c, d)], [0, 0], "ping: both testpmds exit cleanly")


def main():
    try:
        t.run("testpmd over rxe", run)
    finally:
        kill_all(running)
    t.finish()


if __name__ == "__main__":
    main()
