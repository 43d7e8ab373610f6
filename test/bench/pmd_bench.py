#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Mpps between two testpmd processes, txonly -> rxonly, over net_ipoib (two
simulated HCAs, unicast UD) and over net_memif (same testpmd modes, same
cores: sender's forwarding lcore on core 0, receiver's on core 1), for 64 and
1500-byte frames. Prints numbers and ratios; asserts nothing.

usage: pmd_bench.py FABRIC_TOOL PMD_SO [SECONDS]"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration", "pmd"))
from testpmd import Testpmd  # noqa: E402

FABRIC, PMD = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
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


def bench_ipoib():
    env = json.loads(subprocess.run([FABRIC, "up", "--format", "json", "--hcas", "2", "--owner", str(os.getpid())],
                                    capture_output=True, text=True, check=True).stdout)
    try:
        rx = Testpmd(env, "Hca1", ["net_ipoib0"], PMD, CWD, args=["--rxd=1024"], prefix="bir", eal=["-l", "0,1", "--main-lcore", "0"])
        tx = Testpmd(env, "Hca2", ["net_ipoib0"], PMD, CWD, args=["--txd=1024"], prefix="bit", eal=["-l", "0,1", "--main-lcore", "1"])
        rx.wait_link(0)
        tx.wait_link(0)
        tel = subprocess.run(["dpdk-telemetry.py", "-f", "bir"], input="/ipoib/ports\n", capture_output=True,
                             text=True).stdout
        port = next(json.loads(line)["/ipoib/ports"]["0"] for line in tel.splitlines() if line.startswith("{"))
        lid, qpn = port["lid"], port["qpn"]
        # A unicast MAC the driver decodes to (LID, QPN): 0e:LL:LL:QQ:QQ:QQ.
        mac = "0e:%02x:%02x:%02x:%02x:%02x" % (lid >> 8, lid & 255, qpn >> 16, (qpn >> 8) & 255, qpn & 255)
        res = {s: measure(rx, tx, 0, s, mac) for s in (64, 1500)}
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
    res = {s: measure(rx, tx, 0, s, "02:00:00:00:00:01") for s in (64, 1500)}
    rx.quit()
    tx.quit()
    return res


def main():
    ipoib = bench_ipoib()
    memif = bench_memif()
    print(f"testpmd txonly -> rxonly, two processes, {SECS:.0f} s per size (2-core machine: numbers are noisy)")
    print(f"{'frame':>7} {'net_ipoib Mpps':>15} {'net_memif Mpps':>15} {'ipoib/memif':>12}")
    for s in (64, 1500):
        print(f"{s:>6}B {ipoib[s]:>15.3f} {memif[s]:>15.3f} {ipoib[s] / memif[s]:>12.2f}")


if __name__ == "__main__":
    main()
