#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Runs inside the QEMU guest (test/guest/test_verbs_guest.sh): two
dpdk-testpmd processes, each with net_ipoib on the verbs provider over the
guest's Soft-RoCE device rxe0 (static management: no SA on RoCE), exchange
traffic; their counts must agree. TAP output.

usage: guest_pmd_verbs.py PMD_SO WORKDIR
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "pmd"))
from tap import Tap  # noqa: E402
from testpmd import Testpmd  # noqa: E402

PMD, CWD = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
VDEV = "net_ipoib0,provider=verbs,dev=rxe0"
t = Tap()
running = []


def testpmd(name, fwd, main, vdev=VDEV):
    # One forwarding lcore each, on different vCPUs; the main lcore mostly waits at the prompt.
    tp = Testpmd(None, name, [vdev], PMD, CWD, prefix=f"g{name}", eal=["-l", f"{main},{fwd}", "--main-lcore", str(main)],
                 log_levels=["pmd.net.ipoib:info"],
                 startup_timeout=90)  # software emulation on a host that may be busy: port start waits for the link
    running.append(tp)
    return tp


def exact(sender, receiver, what):
    """sender sends 4 bursts of 32 broadcast frames (start tx_first 4), receiver counts them."""
    for tp in (sender, receiver):
        tp("clear port stats all")
    receiver("set fwd rxonly")
    receiver("start")
    sender("set fwd rxonly")
    sender("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    sender("start tx_first 4")
    end = time.monotonic() + 20
    rx = 0
    while time.monotonic() < end and rx < 128:
        time.sleep(0.5)
        rx, _ = receiver.stats(0)
    sender("stop")
    receiver("stop")
    _, tx = sender.stats(0)
    rx, _ = receiver.stats(0)
    t.eq((tx, rx), (128, 128), f"{what}: 128 broadcast frames sent, 128 received")


def run():
    a = testpmd("a", fwd=1, main=0)
    b = testpmd("b", fwd=0, main=1)
    t.ok("net_ipoib" in a("show port info 0"), "testpmd loads net_ipoib on the verbs provider (rxe0)")
    t.ok(a.wait_link(0, timeout=30) and b.wait_link(0, timeout=30),
         "both links come up (static management: the broadcast group from devargs)")
    info = a("show port info 0")
    t.ok(re.search(r"MTU:\s+1020\b", info), "MTU is rxe0's active MTU (1024) minus 4", info)
    t.ok("static (RoCE) management" in a.startup, "the driver says it manages rxe0 statically (RoCE)",
         a.startup[-1500:])

    exact(a, b, "A -> B")
    exact(b, a, "B -> A")

    # Sustained: a macswap ping-pong, unicast replies to the sender learned from the GRH.
    for tp in (a, b):
        tp("clear port stats all")
        tp("clear port xstats all")
    b("set fwd macswap")
    b("start")
    a("set fwd macswap")
    a("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    a("start tx_first")
    time.sleep(4)
    a("stop")
    time.sleep(1)
    b("stop")
    # B's last replies sit in A's receive queue (A stopped first): drain them.
    a("set fwd rxonly")
    a("start")
    time.sleep(1)
    a("stop")
    a_rx, a_tx = a.stats(0)
    b_rx, b_tx = b.stats(0)
    ax, bx = a.xstats(0), b.xstats(0)
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


def main():
    try:
        run()
    except Exception as e:  # noqa: BLE001
        import traceback
        t.ok(False, "testpmd over rxe", traceback.format_exc() or e)
    finally:
        for tp in running:
            if tp.p.poll() is None:
                tp.p.kill()
    t.finish()


if __name__ == "__main__":
    main()
