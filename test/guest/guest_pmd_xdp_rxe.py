#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Runs inside the QEMU guest (test/guest/test_verbs_guest.sh): the kernel's
rdma_rxe judges the xdp provider's packets. One dpdk-testpmd with net_ipoib
on the verbs provider over an rxe device on one end of a veth pair, one
with the xdp provider (RoCE v2 over AF_XDP) on the other end, in a network
namespace of its own. They exchange broadcast frames both ways, at 64 and
1000 bytes, and a macswap ping-pong of unicast; every count must agree
exactly. rxe delivering our frames is the proof that our headers and ICRC
are right (rxe drops a frame whose ICRC is wrong: the provider suite's
raw-socket check shows that). TAP output.

usage: guest_pmd_xdp_rxe.py PMD_SO WORKDIR RXE XDPDEV NETNS
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "pmd"))
from tap import Tap  # noqa: E402
from testpmd import Testpmd, exact_broadcast, kill_all, macswap_pingpong  # noqa: E402

PMD, CWD, RXE, XDPDEV, NETNS = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), *sys.argv[3:6]
t = Tap()
running = []


def testpmd(name, vdev, fwd, main, netns=None):
    tp = Testpmd(None, name, [vdev], PMD, CWD, prefix=f"x{name}", netns=netns,
                 eal=["-l", f"{main},{fwd}", "--main-lcore", str(main)], log_levels=["pmd.net.ipoib:info"],
                 startup_timeout=180)  # software emulation: slow when the host is busy (seen: over 90 s)
    running.append(tp)
    return tp


def run():
    v = testpmd("v", f"net_ipoib0,provider=verbs,dev={RXE}", fwd=1, main=0)
    x = testpmd("x", f"net_ipoib0,provider=xdp,dev={XDPDEV}", fwd=0, main=1, netns=NETNS)
    t.ok(v.wait_link(0, timeout=30) and x.wait_link(0, timeout=30),
         f"both links up: verbs on {RXE}, xdp on {XDPDEV} (static RoCE management on both)")
    mtus = [re.search(r"MTU:\s+(\d+)", tp("show port info 0")).group(1) for tp in (v, x)]
    t.eq(mtus, ["1020", "1020"], "both ports have MTU 1020 (IB MTU 1024 on a 1500-byte link, minus 4)")
    for size in (64, 1000):
        for tp in (v, x):
            tp(f"set txpkts {size}")
        exact_broadcast(t, x, v, f"xdp -> rxe, {size}-byte frames")
        exact_broadcast(t, v, x, f"rxe -> xdp, {size}-byte frames")
    for tp in (v, x):
        tp("set txpkts 64")
    ((x_rx, x_tx), (v_rx, v_tx)), (xx, vx) = macswap_pingpong(x, v, 4)
    t.note(f"macswap xdp <-> rxe: xdp tx {x_tx} rx {x_rx}; rxe tx {v_tx} rx {v_rx}")
    t.ok(x_rx > 100 and v_rx > 100, "macswap <-> macswap keeps unicast frames bouncing between xdp and rxe",
         (x_rx, v_rx))
    t.eq((v_rx, x_rx), (x_tx, v_tx), "each side received exactly what the other sent")
    errs = [d.get(k, -1) for d in (xx, vx) for k in ("tx_hca_errors", "rx_hca_errors", "hca_rx_errors")]
    t.eq(errs, [0] * 6, "no send or receive errors on either side")
    for tp in (v, x):
        tp.quit()
    t.eq([tp.p.returncode for tp in (v, x)], [0, 0], "both testpmds exit cleanly")
    running.clear()


def main():
    try:
        t.run("testpmd: verbs on rxe <-> xdp", run)
    finally:
        kill_all(running)
    t.finish()


if __name__ == "__main__":
    main()
