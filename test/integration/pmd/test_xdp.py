#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""net_ipoib on the xdp provider (RoCE v2 over AF_XDP), on this machine:
two dpdk-testpmd processes, each in a network namespace of its own on one
end of a veth pair (provider=xdp,dev=<its end>), exchange traffic and their
counts must agree exactly: broadcast both ways at 64 and 1000 bytes, then a
macswap ping-pong of unicast (the peer learned from the GRH, its MAC from
its EUI-64 GID). Then the port follows its network device (down, up), and
Linux's ping goes through net_tap and an xdp port to testpmd's icmpecho on
the other. Every mbuf is back at the end. TAP output; needs root.

usage: test_xdp.py PMD_SO
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from netns import VethPair  # noqa: E402
from roce_frame import roce_frame, send_raw  # noqa: E402
from tap import Tap  # noqa: E402
from hosts import telemetry  # noqa: E402
from testpmd import Testpmd, exact_broadcast, kill_all, macswap_pingpong  # noqa: E402

PMD = os.path.abspath(sys.argv[1])
CWD = tempfile.mkdtemp(prefix="pmd-xdp-")
t = Tap()
running = []


def testpmd(veth, i, name, extra=(), tap=False):
    vdevs = [f"net_ipoib0,provider=xdp,dev={veth.devs[i]}"] + ([f"net_tap0,iface=xtap{name}"] if tap else [])
    tp = Testpmd(None, name, vdevs, PMD, CWD, prefix=f"x{name}{os.getpid()}", netns=veth.names[i],
                 log_levels=["pmd.net.ipoib:info"], eal=["-l", "0,1"], startup_timeout=60, args=list(extra))
    running.append(tp)
    return tp


def exact(sender, receiver, what):
    exact_broadcast(t, sender, receiver, what)


def run(veth):
    a = testpmd(veth, 0, "a")
    b = testpmd(veth, 1, "b")
    t.ok("net_ipoib" in a("show port info 0"), "testpmd loads net_ipoib on the xdp provider")
    t.ok(a.wait_link(0, timeout=30) and b.wait_link(0, timeout=30),
         "both links come up (static management: the broadcast group from devargs)")
    info = a("show port info 0")
    t.ok(re.search(r"MTU:\s+1020\b", info), "MTU: the veth's 1500 gives IB MTU 1024, minus 4", info)
    t.ok("static (RoCE) management" in a.startup, "the driver manages the xdp port statically (RoCE)",
         a.startup[-1500:])

    for size in (64, 1000):
        for tp in (a, b):
            tp(f"set txpkts {size}")
        exact(a, b, f"A -> B, {size}-byte frames")
        exact(b, a, f"B -> A, {size}-byte frames")

    # Sustained unicast: a macswap ping-pong, replies to the sender learned from the GRH.
    for tp in (a, b):
        tp("set txpkts 64")
    ((a_rx, a_tx), (b_rx, b_tx)), (ax, bx) = macswap_pingpong(a, b, 3)
    t.note(f"macswap over AF_XDP: A tx {a_tx} rx {a_rx}; B tx {b_tx} rx {b_rx}")
    t.ok(a_rx > 1000 and b_rx > 1000, "macswap <-> macswap keeps frames bouncing over the veth", (a_rx, b_rx))
    t.eq((b_rx, a_rx), (a_tx, b_tx), "each side received exactly what the other sent")
    errs = [x.get(k, -1) for x in (ax, bx) for k in ("tx_hca_errors", "rx_hca_errors", "hca_rx_errors")]
    t.eq(errs, [0] * 6, "no send or receive errors on either side")

    # Frames with a wrong ICRC, written to A's QP from a raw socket beside B: dropped by the
    # provider, counted in A's xstat hca_port_rx_bad_icrc; one with the right ICRC is received.
    bad_icrc(veth, a, b)

    # The port follows the network device (its state read from the kernel).
    veth.ns(0, "ip", "link", "set", veth.devs[0], "down", check=True)
    down = a.wait_link(0, up=False, timeout=10)
    veth.ns(0, "ip", "link", "set", veth.devs[0], "up", check=True)
    t.ok(down, "the link goes down when the network device does")
    t.ok(a.wait_link(0, up=True, timeout=20) and b.wait_link(0, up=True, timeout=20),
         "... and comes back up with it (B's too: a veth's carrier follows its peer)")
    exact(b, a, "after the device came back, B -> A")

    for tp in (a, b):
        tp("port stop all")
        tp("port close all")  # its receive queues give back the mbufs they had posted
        ok, detail = tp.mbufs_back()
        t.ok(ok, f"testpmd {tp.host}: every mbuf is back in its pool", detail)
    for tp in running:
        tp.quit()
    t.eq(([tp.p.returncode for tp in running], [xdp_program(veth, i) for i in (0, 1)]), ([0, 0], [None, None]),
         "both testpmds exit cleanly, and their XDP programs leave the devices")
    running.clear()
    ping_through_tap(veth)


def bad_icrc(veth, a, b):
    hw_a, hw_b = (telemetry(tp.prefix, "/ipoib/ports")["0"]["hwaddr"] for tp in (a, b))
    qpn_a = int(hw_a.replace(":", "")[:8], 16) & 0xFFFFFF
    gid_a, gid_b = bytes.fromhex(hw_a.replace(":", "")[8:]), bytes.fromhex(hw_b.replace(":", "")[8:])
    mac = [bytes.fromhex(veth.ns(i, "cat", f"/sys/class/net/{veth.devs[i]}/address", capture_output=True,
                                 text=True).stdout.strip().replace(":", "")) for i in (0, 1)]
    # An IPoIB frame: the 4-byte encapsulation header (IPv4), then a minimal IPv4 header.
    payload = bytes.fromhex("08000000" "4500001c0000400040110000" "0a4d0002" "0a4d0001") + bytes(8)
    frame = [roce_frame(mac[1], mac[0], gid_b, gid_a, qpn_a, 0x123, 0x0B1B, payload, corrupt_icrc=c)
             for c in (True, False)]
    a("clear port xstats all")
    a("clear port stats all")
    a("set fwd rxonly")
    a("start")
    send_raw(veth.names[1], veth.devs[1], [frame[0], frame[0], frame[0], frame[1]])
    time.sleep(1)
    a("stop")
    rx, _ = a.stats(0)
    x = a.xstats(0)
    t.eq((x.get("hca_port_rx_bad_icrc"), x.get("hca_port_rx_malformed"), rx), (3, 0, 1),
         "3 frames with a wrong ICRC: dropped, counted in xstat hca_port_rx_bad_icrc; the right one received")


def xdp_program(veth, i):
    """The id of the XDP program on veth end i, or None."""
    m = re.search(r"prog/xdp id (\d+)", veth.ns(i, "ip", "link", "show", veth.devs[i], capture_output=True,
                                                text=True).stdout)
    return int(m.group(1)) if m else None


def ping_through_tap(veth):
    """Linux pings (in A's namespace) through net_tap and an xdp net_ipoib port (testpmd io)
    the icmpecho of another xdp port in B's namespace; ping checks every reply's payload.
    Then C is killed, and E starts on its device."""
    subprocess.run(["modprobe", "tun"], check=False, capture_output=True)  # (built in, or a module)
    c = testpmd(veth, 0, "c", tap=True)
    d = testpmd(veth, 1, "d")
    t.ok(c.wait_link(0, timeout=30) and d.wait_link(0, timeout=30), "ping: both net_ipoib links up")
    mac = re.search(r"MAC address:\s+([0-9A-Fa-f:]{17})", c("show port info 0")).group(1)
    tapdev = "xtapc"
    for cmd in (["ip", "link", "set", tapdev, "down"], ["ip", "link", "set", tapdev, "address", mac],
                ["ip", "link", "set", tapdev, "mtu", "1020"], ["ip", "addr", "add", "10.78.0.1/24", "dev", tapdev],
                ["ip", "link", "set", tapdev, "up"]):
        veth.ns(0, *cmd, check=True)
    c("set fwd io")
    c("start")
    d("set fwd icmpecho")
    d("start")
    warm = None
    for _ in range(10):
        warm = veth.ns(0, "ping", "-c", "1", "-W", "2", "10.78.0.2", capture_output=True, text=True, timeout=10)
        if warm.returncode == 0:
            break
    t.ok(warm is not None and warm.returncode == 0, "ping: a first echo reply comes back (neighbours resolved)",
         warm.stdout[-500:] if warm else "")
    pr = veth.ns(0, "ping", "-c", "20", "-i", "0.05", "-W", "5", "-s", "960", "-p", "a55a0ff0c33c", "10.78.0.2",
                 capture_output=True, text=True, timeout=60)
    t.note(pr.stdout.strip().splitlines()[-2] if pr.stdout.strip() else pr.stderr)
    t.ok(pr.returncode == 0 and " 0% packet loss" in pr.stdout and "wrong data" not in pr.stdout,
         "ping -s 960 through net_tap -> net_ipoib (xdp) -> veth -> net_ipoib (xdp, icmpecho) and back: "
         "every reply, its payload as sent", pr.stdout[-1500:] + pr.stderr[-500:])
    c("stop")
    d("stop")
    # C is killed: its XDP program stays on the device (it outlives its loader); E, started
    # there, finds its owner gone, detaches it and attaches its own.
    stale = xdp_program(veth, 0)
    c.p.kill()
    c.p.wait()
    left = xdp_program(veth, 0)
    t.ok(stale is not None and left == stale, "C, killed (SIGKILL), leaves its XDP program on its device",
         (stale, left))
    e = testpmd(veth, 0, "e")
    now = xdp_program(veth, 0)
    t.ok(e.wait_link(0, timeout=30) and now is not None and now != stale,
         "E starts on that device: the dead process's program detached, its own attached", (stale, now))
    exact_broadcast(t, d, e, "D -> E")
    for tp in (d, e):
        tp.quit()
    t.eq([tp.p.returncode for tp in (d, e)], [0, 0], "ping: D and E exit cleanly")


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (network namespaces, XDP)")
        return
    veth = None
    try:
        veth = VethPair()
        t.run("testpmd over the xdp provider", run, veth)
    finally:
        kill_all(running)
        if veth:
            veth.remove()
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
