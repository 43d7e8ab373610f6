#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Link-up time of net_ipoib on a simulated fabric (OpenSM on ibsim, the
software HCA), in one testpmd: from dev_start to link up (the port's
broadcast group joined through OpenSM's SA), and from the port's ReLink
(ibsim console, after an Unlink the driver saw) to link up. The driver
stamps when it was started and when its link went up or down
(CLOCK_MONOTONIC microseconds, telemetry /ipoib/ports); this script reads
them over the telemetry socket and stamps the ReLink itself on the same
clock. Prints min/median/max per measurement and writes one CSV row per
run; asserts nothing.

usage: linkup_bench.py FABRIC_TOOL PMD_SO RUNS CSV"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration", "pmd"))
from testpmd import Testpmd  # noqa: E402

FABRIC, PMD = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 10
CSV = sys.argv[4] if len(sys.argv) > 4 else None
CWD = tempfile.mkdtemp(prefix="linkup-bench-", dir=os.path.dirname(os.path.dirname(PMD)))
PREFIX = f"lub{os.getpid()}"
TIMEOUT = 30.0
KEEP = ["--keep"] if os.environ.get("LINKUP_BENCH_KEEP") else []  # keep the fabric directory (OpenSM log)


def now_us():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Telemetry:
    """DPDK's telemetry socket (what dpdk-telemetry.py speaks), kept open: a query costs no process."""

    def __init__(self, prefix):
        path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
        if os.geteuid() != 0:
            path = os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk", prefix, "dpdk_telemetry.v2")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.connect(path)
        self.s.recv(16384)  # its greeting

    def port(self, port_id=0):
        self.s.send(b"/ipoib/ports")
        return json.loads(self.s.recv(65536))["/ipoib/ports"][str(port_id)]

    def wait(self, cond, what):
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            p = self.port()
            if cond(p):
                return p
            time.sleep(0.001)
        raise RuntimeError(f"linkup-bench: {what} did not happen within {TIMEOUT:.0f} s")


def fabric_cmd(sockname, line):
    """One command to the fabric's supervisor (what `ipoib-fabric port` sends), without starting a process."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("\0ipoib-fabric:" + sockname)
    c.sendall((line + "\n").encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = c.recv(4096)
        if not chunk:
            break
        reply += chunk
    c.close()
    if not reply.startswith(b"ok"):
        raise RuntimeError(f"linkup-bench: fabric said {reply!r} to {line!r}")


def summary(name, ms):
    return f"{name:28s} min {min(ms):7.1f}  median {statistics.median(ms):7.1f}  max {max(ms):7.1f} ms ({len(ms)} runs)"


def main():
    env = json.loads(subprocess.run([FABRIC, "up", "--format", "json", "--hcas", "1", "--owner", str(os.getpid())] + KEEP,
                                    capture_output=True, text=True, check=True).stdout)
    sockname = env["IBSIM_SOCKNAME"]
    rows = []
    tp = None
    try:
        tp = Testpmd(env, "Hca1", ["net_ipoib0"], PMD, CWD, prefix=PREFIX, eal=["-l", "0,1"])
        if not tp.wait_link(0, timeout=TIMEOUT):
            raise RuntimeError("linkup-bench: the port never came up")
        tel = Telemetry(PREFIX)
        for run in range(RUNS):
            # dev_start -> link up.
            tp("port stop 0")
            before = tel.port()["started_us"]
            tp("port start 0")
            p = tel.wait(lambda p: p["started_us"] > before and p["link_up_us"] >= p["started_us"], "link up after start")
            start_ms = (p["link_up_us"] - p["started_us"]) / 1000
            # ReLink -> link up: the port goes down first (and the driver sees it), then comes back.
            up_before = p["link_up_us"]
            fabric_cmd(sockname, "port Hca1 1 down")
            tel.wait(lambda p: p["link_down_us"] > up_before, "link down after Unlink")
            time.sleep(0.2)  # settled: OpenSM has seen the port go
            t0 = now_us()
            fabric_cmd(sockname, "port Hca1 1 up")
            p = tel.wait(lambda p: p["link_up_us"] > t0, "link up after ReLink")
            relink_ms = (p["link_up_us"] - t0) / 1000
            rows.append((run, start_ms, relink_ms))
            print(f"run {run}: dev_start -> link up {start_ms:7.1f} ms, ReLink -> link up {relink_ms:7.1f} ms", flush=True)
    finally:
        if tp is not None:
            tp.quit()
        subprocess.run([FABRIC, "down", env["IPOIB_FABRIC_DIR"]], capture_output=True)
    print(summary("dev_start -> link up:", [r[1] for r in rows]))
    print(summary("ReLink -> link up:", [r[2] for r in rows]))
    if CSV:
        with open(CSV, "w") as f:
            f.write("run,start_to_link_up_ms,relink_to_link_up_ms\n")
            for r in rows:
                f.write(f"{r[0]},{r[1]:.3f},{r[2]:.3f}\n")


if __name__ == "__main__":
    main()
