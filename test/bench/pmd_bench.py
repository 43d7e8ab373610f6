#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Mpps between two testpmd processes, txonly -> rxonly, over net_ipoib (two
simulated HCAs, unicast UD), over net_ipoib on the xdp provider (RoCE v2
over AF_XDP between two network namespaces joined by a veth pair of MTU
3000; as root only) and over net_memif (same testpmd modes, same cores:
sender's forwarding lcore on core 0, receiver's on core 1), for a list of
frame sizes (default 64 and 1500 bytes), each measured REPEAT times.
Prints numbers and ratios (the mean of the runs, and their spread) and
writes every run to a CSV (frame_bytes,driver,mpps,run); asserts nothing.

usage: pmd_bench.py FABRIC_TOOL PMD_SO [SECONDS] [--sizes 64,1500] [--repeat N] [--csv FILE]"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration", "pmd"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from hosts import lidqpn_mac, telemetry  # noqa: E402
from netns import VethPair  # noqa: E402
from testpmd import Testpmd  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("fabric")
ap.add_argument("pmd")
ap.add_argument("seconds", nargs="?", type=float, default=3.0, help="seconds per measurement (default 3)")
ap.add_argument("--sizes", default="64,1500", help="frame sizes in bytes, comma-separated (default 64,1500)")
ap.add_argument("--repeat", type=int, default=1, help="measurements per size and driver (default 1)")
ap.add_argument("--csv", help="CSV path (default build/bench/pmd-bench.csv)")
ARGS = ap.parse_args()
FABRIC, PMD = os.path.abspath(ARGS.fabric), os.path.abspath(ARGS.pmd)
SECS = ARGS.seconds
SIZES = [int(x) for x in ARGS.sizes.split(",")]
BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(PMD))))  # build/drivers/net/ipoib/x.so
CSV = ARGS.csv or os.path.join(BUILD, "bench", "pmd-bench.csv")
CWD = tempfile.mkdtemp(prefix="pmd-bench-", dir=os.path.dirname(os.path.dirname(PMD)))


def measure(rx, tx, port, size, peer_mac):
    tx(f"set txpkts {size}")
    tx(f"set eth-peer {port} {peer_mac}")
    rx("set fwd rxonly")
    tx("set fwd txonly")
    rx("start")
    tx("start")
    time.sleep(1.0)  # warm up
    rx("clear port stats all")
    t0 = time.monotonic()
    time.sleep(SECS)
    out = rx(f"show port stats {port}")
    dt = time.monotonic() - t0
    tx("stop")
    rx("stop")
    n = int(re.search(r"RX-packets:\s+(\d+)", out).group(1))
    return n / dt / 1e6


def port_mac(prefix):
    """The unicast MAC a peer knows port 0 of testpmd `prefix` by (InfiniBand: LID/QPN; RoCE: its GID folded)."""
    return lidqpn_mac(telemetry(prefix, "/ipoib/ports")["0"])


def bench_xdp():
    if os.geteuid() != 0:
        print("xdp provider: skipped (needs root)")
        return None
    # IB MTU 2048 (1500-byte frames fit), and small enough for veth's native XDP (no multi-buffer frames)
    veth = VethPair(mtu=3000)
    try:
        rx = Testpmd(None, "xr", [f"net_ipoib0,provider=xdp,dev={veth.devs[0]}"], PMD, CWD, args=["--rxd=1024"],
                     prefix="bxr", eal=["-l", "0,1", "--main-lcore", "0"], netns=veth.names[0])
        tx = Testpmd(None, "xt", [f"net_ipoib0,provider=xdp,dev={veth.devs[1]}"], PMD, CWD, args=["--txd=1024"],
                     prefix="bxt", eal=["-l", "0,1", "--main-lcore", "1"], netns=veth.names[1])
        rx.wait_link(0)
        tx.wait_link(0)
        # On RoCE a peer is known once heard from (its GID from the GRH): rx sends a broadcast burst.
        tx("set fwd rxonly")
        tx("start")
        rx("set fwd rxonly")
        rx("set eth-peer 0 ff:ff:ff:ff:ff:ff")
        rx("start tx_first")
        time.sleep(1)
        rx("stop")
        tx("stop")
        mac = port_mac("bxr")
        res = {s: [measure(rx, tx, 0, s, mac) for _ in range(ARGS.repeat)] for s in SIZES}
        rx.quit()
        tx.quit()
        return res
    finally:
        veth.remove()


def bench_ipoib():
    env = json.loads(subprocess.run([FABRIC, "up", "--format", "json", "--hcas", "2", "--owner", str(os.getpid())],
                                    capture_output=True, text=True, check=True).stdout)
    try:
        rx = Testpmd(env, "Hca1", ["net_ipoib0"], PMD, CWD, args=["--rxd=1024"], prefix="bir", eal=["-l", "0,1", "--main-lcore", "0"])
        tx = Testpmd(env, "Hca2", ["net_ipoib0"], PMD, CWD, args=["--txd=1024"], prefix="bit", eal=["-l", "0,1", "--main-lcore", "1"])
        rx.wait_link(0)
        tx.wait_link(0)
        mac = port_mac("bir")  # a unicast MAC the driver decodes to (LID, QPN)
        res = {s: [measure(rx, tx, 0, s, mac) for _ in range(ARGS.repeat)] for s in SIZES}
        rx.quit()
        tx.quit()
        return res
    finally:
        subprocess.run([FABRIC, "down", env["IPOIB_FABRIC_DIR"]], capture_output=True)


def bench_memif():
    sock = os.path.join(CWD, "memif.sock")
    env = {"IBSIM_SOCKNAME": "unused"}
    rx = Testpmd(env, "none", [f"net_memif0,role=server,socket={sock}"], PMD, CWD, args=["--rxd=1024"],
                 prefix="bmr", eal=["-l", "0,1", "--main-lcore", "0"])
    tx = Testpmd(env, "none", [f"net_memif0,role=client,socket={sock}"], PMD, CWD, args=["--txd=1024"],
                 prefix="bmt", eal=["-l", "0,1", "--main-lcore", "1"])
    time.sleep(1)
    res = {s: [measure(rx, tx, 0, s, "02:00:00:00:00:01") for _ in range(ARGS.repeat)] for s in SIZES}
    rx.quit()
    tx.quit()
    return res


def mean(xs):
    return sum(xs) / len(xs)


def main():
    ipoib = bench_ipoib()
    xdp = bench_xdp()
    memif = bench_memif()
    runs = f", {ARGS.repeat} runs each (mean, min-max)" if ARGS.repeat > 1 else ""
    print(f"testpmd txonly -> rxonly, two processes, {SECS:g} s per measurement{runs} "
          f"(2-core machine: numbers are noisy)")
    print(f"{'frame':>7} {'net_ipoib Mpps':>15} {'ipoib xdp Mpps':>15} {'net_memif Mpps':>15} {'ipoib/memif':>12}")
    rows = ["frame_bytes,driver,mpps,run"]
    for s in SIZES:
        xs = f"{mean(xdp[s]):>15.3f}" if xdp else f"{'-':>15}"
        line = f"{s:>6}B {mean(ipoib[s]):>15.3f} {xs} {mean(memif[s]):>15.3f} {mean(ipoib[s]) / mean(memif[s]):>12.2f}"
        if ARGS.repeat > 1:
            line += (f"   (ipoib {min(ipoib[s]):.3f}-{max(ipoib[s]):.3f}, " +
                     (f"xdp {min(xdp[s]):.3f}-{max(xdp[s]):.3f}, " if xdp else "") +
                     f"memif {min(memif[s]):.3f}-{max(memif[s]):.3f})")
        print(line)
        for driver, res in (("ipoib", ipoib), ("ipoib-xdp", xdp), ("memif", memif)):
            if res is None:
                continue
            rows += [f"{s},{driver},{mpps:.4f},{run}" for run, mpps in enumerate(res[s], 1)]
    os.makedirs(os.path.dirname(os.path.abspath(CSV)), exist_ok=True)
    with open(CSV, "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"CSV: {CSV}")
    if all(all(res[s]) for res in (ipoib, xdp, memif) if res for s in SIZES):
        shutil.rmtree(CWD, ignore_errors=True)
    else:
        print(f"a run received nothing: logs kept in {CWD}")


if __name__ == "__main__":
    main()
