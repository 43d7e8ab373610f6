#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Connected mode's throughput, in one run, on two simulated HCAs:

1. frames: testpmd txonly -> rxonly between two processes, 65534-byte frames
   (chains of 2 KB mbufs) over a connection, against datagram mode's 2058-byte
   frames (2044 of IPoIB payload), in Gbit/s of frame bytes; beside it one
   core's memcpy bandwidth for 64 KB blocks, measured in this run, cached and
   not (into a 256 MB ring: rc-bench memcpy);
2. TCP: iperf3 between two Linux namespaces behind tap_bridge, connected mode
   (MTU 65520) against datagram mode (2044);
3. the seed's claim: iperf3 with the kernels' checksum offload passed to the
   port (tap_bridge --offload), "IB CRC as checksum" agreed against refused.

Prints numbers and ratios, writes a CSV (what,mode,value,unit,run); asserts
nothing. usage: cm_bench.py FABRIC_TOOL PMD_SO IPOIB_ADDR TAP_BRIDGE [SECONDS] [--csv FILE]"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "pmd"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from testpmd import Testpmd  # noqa: E402
from fabric_client import client_env  # noqa: E402
from hosts import telemetry  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("fabric")
ap.add_argument("pmd")
ap.add_argument("addr")
ap.add_argument("bridge")
ap.add_argument("seconds", nargs="?", type=float, default=4.0, help="seconds per measurement (default 4)")
ap.add_argument("--csv", help="CSV path (default build/bench/cm-bench.csv)")
A = ap.parse_args()
FABRIC, PMD, ADDR, BRIDGE = (os.path.abspath(x) for x in (A.fabric, A.pmd, A.addr, A.bridge))
BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(PMD))))
CSV = A.csv or os.path.join(BUILD, "bench", "cm-bench.csv")
CWD = tempfile.mkdtemp(prefix="cm-bench-", dir=os.path.dirname(os.path.dirname(PMD)))
ROWS = []


def sh(cmd, timeout=120):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)


def fabric_up():
    return json.loads(subprocess.run([FABRIC, "up", "--format", "json", "--hcas", "2", "--owner", str(os.getpid())],
                                     capture_output=True, text=True, check=True, cwd=CWD).stdout)


def fabric_down(env):
    subprocess.run([FABRIC, "down", env["IPOIB_FABRIC_DIR"]], capture_output=True, cwd=CWD)


def memcpy_gbps(block=65536, seconds=1.0):
    src, dst = bytearray(os.urandom(block)), bytearray(block)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(256):
            dst[:] = src
        n += 256
    return n * block * 8 / (time.perf_counter() - t0) / 1e9


def memcpy_ring_gbps(seconds=1.0, area=256 << 20):
    """C memcpy of 64 KB blocks from one cached source into the next of a ring of `area` bytes
    (rc-bench memcpy): data that does not stay in the caches (256 MB, beyond any L3 here), as
    frames moving through mbuf pools and receive queues do not."""
    out = subprocess.run([os.path.join(BUILD, "test", "bench", "rc-bench"), "memcpy", "65536", str(seconds),
                          str(area)], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"([\d.]+) Gbit/s", out)
    return float(m.group(1)) if m else 0.0


def frames(env, mode, txpkts, frame_bytes, tx_args=()):
    """Gbit/s of frame bytes, txonly (Hca1) -> rxonly (Hca2; its frames in chains of 2 KB mbufs)."""
    b = Testpmd(env, "Hca2", [f"net_ipoib0,mode={mode}"], PMD, CWD, prefix=f"cmbr{os.getpid()}",
                args=["--enable-scatter"], eal=["--lcores", "0@(0,1),1@1"], startup_timeout=60)
    try:
        b.wait_link(0, True, 30)
        p = telemetry(b.prefix, "/ipoib/ports")["0"]
        a = Testpmd(env, "Hca1", [f"net_ipoib0,mode={mode},neigh={p['mac']}/{p['hwaddr']}"], PMD, CWD,
                    prefix=f"cmbt{os.getpid()}", args=["--enable-scatter"] + list(tx_args),
                    eal=["--lcores", "0@(0,1),1@0"],
                    startup_timeout=60)
        try:
            a.wait_link(0, True, 30)
            r = a(f"set txpkts {txpkts}")
            if "rror" in r or "nvalid" in r:
                print(f"  set txpkts {txpkts}: {r.strip()[-200:]}")
            a(f"set eth-peer 0 {p['mac']}")
            b("set fwd rxonly")
            a("set fwd txonly")
            b("start")
            a("start")
            time.sleep(2.0)  # connect, warm up
            b("clear port stats all")
            t0 = time.monotonic()
            time.sleep(A.seconds)
            out = b("show port stats 0")
            dt = time.monotonic() - t0
            a("stop")
            b("stop")
            n = int(re.search(r"RX-packets:\s+(\d+)", out).group(1))
            nbytes = int(re.search(r"RX-bytes:\s+(\d+)", out).group(1))
            if n and abs(nbytes / n - frame_bytes) > 1:
                print(f"  {mode}: frames of {nbytes / n:.0f} bytes arrived, not {frame_bytes}")
            return nbytes * 8 / dt / 1e9, n / dt
        finally:
            a.quit()
    finally:
        b.quit()


class Bridge:
    def __init__(self, env, host, ip, devargs, offload, mtu):
        self.prefix = f"cmb{host[-1]}{os.getpid()}"
        self.tap = f"cmb{host[-1]}{os.getpid() % 10000}"
        self.log = open(os.path.join(CWD, f"{self.prefix}.log"), "w")
        cmd = [BRIDGE, "--no-huge", "-m", "512", f"--file-prefix={self.prefix}", "--no-pci", "-d", PMD,
               f"--vdev=net_ipoib0,{devargs}", "--", "--tap", self.tap] + (["--offload"] if offload else [])
        self.p = subprocess.Popen(cmd, env=client_env(env, host), cwd=CWD, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while time.monotonic() < end and not os.path.exists(f"/sys/class/net/{self.tap}"):
            time.sleep(0.2)
        guid = re.search(r"Port GUID: (0x[0-9a-f]+)", subprocess.run(
            ["ibstat"], env=client_env(env, host), capture_output=True, text=True, cwd=CWD).stdout).group(1)
        mac = re.search(r"emulated MAC\s+(\S+)", subprocess.run(
            [ADDR, "--guid", guid], capture_output=True, text=True).stdout).group(1)
        self.ns = f"cmbench{os.getpid()}{host[-1]}"
        sh(f"ip netns add {self.ns}")
        sh(f"ip link set {self.tap} netns {self.ns} && ip -n {self.ns} link set {self.tap} mtu {mtu} address {mac} "
           f"&& ip -n {self.ns} addr add {ip}/24 dev {self.tap} && ip -n {self.ns} link set {self.tap} up "
           f"&& ip -n {self.ns} link set lo up")
        end = time.monotonic() + 60
        while time.monotonic() < end and telemetry(self.prefix, "/ipoib/ports").get("0", {}).get("link") != "up":
            time.sleep(0.5)

    def close(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        sh(f"ip netns del {self.ns}")


def iperf(env, mode, mtu, offload=False, icrc=1):
    a = Bridge(env, "Hca1", "10.82.0.1", f"mode={mode}", offload, mtu)
    b = Bridge(env, "Hca2", "10.82.0.2", f"mode={mode},icrc_csum={icrc}", offload, mtu)
    try:
        srv = subprocess.Popen(["ip", "netns", "exec", a.ns, "iperf3", "-s", "-1", "-B", "10.82.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        sh(f"ip netns exec {b.ns} ping -c 2 -W 3 10.82.0.1")
        r = sh(f"ip netns exec {b.ns} iperf3 -c 10.82.0.1 -t {int(A.seconds)} -J", timeout=120)
        srv.wait(timeout=30)
        try:
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError):
            print(f"  iperf3 failed: {(r.stdout + r.stderr)[-300:]}")
            return 0.0
    finally:
        a.close()
        b.close()


def main():
    global ROWS
    mc = memcpy_gbps()
    ROWS.append(("memcpy_64k", "one core", mc, "Gbit/s", 1))
    print(f"one core's memcpy of 64 KB blocks: {mc:.1f} Gbit/s")
    mr = memcpy_ring_gbps()
    ROWS.append(("memcpy_64k_uncached", "one core, into a 256 MB ring", mr, "Gbit/s", 1))
    print(f"one core's memcpy of 64 KB blocks into a 256 MB ring (not cached): {mr:.1f} Gbit/s")
    env = fabric_up()
    try:
        # (testpmd's command line takes at most 128 characters of segment sizes: the sender's frames
        # are chains of 8 KB mbufs)
        cm, cm_fps = frames(env, "connected", ",".join(["8192"] * 7 + ["8190"]), 65534, ["--mbuf-size=8320"])
        dg, dg_fps = frames(env, "datagram", "2048,10", 2058)
        ROWS += [("frames", "connected 65534 B", cm, "Gbit/s", 1), ("frames", "datagram 2058 B", dg, "Gbit/s", 1)]
        print(f"frames, txonly -> rxonly: connected 65534 B {cm:.2f} Gbit/s ({cm_fps:.0f}/s), datagram 2058 B "
              f"{dg:.2f} Gbit/s ({dg_fps:.0f}/s): x{cm / dg if dg else 0:.1f}; connected vs memcpy "
              f"{100 * cm / mc:.0f}% (cached), {100 * cm / mr if mr else 0:.0f}% (not cached)")
        t_cm = iperf(env, "connected", 65520)
        t_dg = iperf(env, "datagram", 2044)
        ROWS += [("iperf3", "connected", t_cm, "Gbit/s", 1), ("iperf3", "datagram", t_dg, "Gbit/s", 1)]
        print(f"iperf3 TCP through tap_bridge: connected {t_cm:.2f} Gbit/s, datagram {t_dg:.2f} Gbit/s")
        on = iperf(env, "connected", 65520, offload=True, icrc=1)
        off = iperf(env, "connected", 65520, offload=True, icrc=0)
        ROWS += [("iperf3_offload", "icrc agreed", on, "Gbit/s", 1), ("iperf3_offload", "icrc off", off, "Gbit/s", 1)]
        print(f"iperf3 with the kernel's checksum offload: IB CRC as checksum agreed {on:.2f} Gbit/s, off "
              f"{off:.2f} Gbit/s")
    finally:
        fabric_down(env)
        os.makedirs(os.path.dirname(CSV), exist_ok=True)
        with open(CSV, "w") as f:
            f.write("what,mode,value,unit,run\n")
            for r in ROWS:
                f.write(f"{r[0]},{r[1]},{r[2]:.4f},{r[3]},{r[4]}\n")
        print(f"CSV: {CSV}")
        shutil.rmtree(CWD, ignore_errors=True)


if __name__ == "__main__":
    main()
