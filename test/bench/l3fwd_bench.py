#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""DPDK's l3fwd forwarding between two ports, over net_ipoib and over
net_memif, with the same cores and frame sizes. Frames circulate: testpmd
(two ports, mac forwarding, one lcore on core 1) sends into l3fwd's port 0,
l3fwd (one lcore on core 0) routes them (LPM) out of its port 1, testpmd
receives them there and sends them into port 0 again; `start tx_first 64`
puts 64 bursts in. The rate is what l3fwd sent out of port 1 (its
telemetry), per second. (A separate sender and receiver would share core 1
and the faster sender would starve the receiver: on memif l3fwd then found
its TX ring full most of the time.)

Unmodified l3fwd asks every port for RX checksum offload, which net_memif
does not offer (22.11: l3fwd exits "Cannot configure device"), and needs
packet types, which net_memif does not give (--parse-ptype). The memif run
therefore uses a copy of l3fwd whose only change is that request removed,
with --parse-ptype; net_ipoib is measured the same way (the ratio compares
equal work) and with the unmodified l3fwd (the driver's checksums and types).
Prints numbers and writes a CSV beside them; asserts nothing.

usage: l3fwd_bench.py FABRIC_TOOL PMD_SO BUILD_EXAMPLES_SCRIPT EXAMPLES_DIR [SECONDS] [CSV]"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration", "pmd"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from fabric_client import client_env  # noqa: E402
from testpmd import Testpmd  # noqa: E402
from hosts import lidqpn_mac, telemetry  # noqa: E402

FABRIC, PMD, BUILD_EXAMPLES, EXAMPLES = (os.path.abspath(a) for a in sys.argv[1:5])
SECS = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
CSV = sys.argv[6] if len(sys.argv) > 6 else os.path.join(os.path.dirname(os.path.dirname(PMD)), "l3fwd-bench.csv")
CWD = tempfile.mkdtemp(prefix="l3fwd-bench-", dir=os.path.dirname(os.path.dirname(PMD)))
SIZES = tuple(int(x) for x in os.environ.get("L3FWD_BENCH_SIZES", "64,1500").split(","))
SENDER_EAL = ["-l", "0,1", "--main-lcore", "0"]  # forwarding lcore on core 1


def build_l3fwd():
    """(unmodified l3fwd, the copy without the RX checksum request)."""
    plain = subprocess.run([BUILD_EXAMPLES, EXAMPLES, "l3fwd"], capture_output=True, text=True,
                           check=True).stdout.split()[-1]
    src = "/usr/share/dpdk/examples"
    dst = os.path.join(EXAMPLES, "l3fwd-nocksum")
    binary = os.path.join(dst, "l3fwd", "build", "l3fwd")
    if not os.access(binary, os.X_OK):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        shutil.copytree(os.path.join(src, "l3fwd"), os.path.join(dst, "l3fwd"))
        shutil.copytree(os.path.join(src, "common"), os.path.join(dst, "common"))
        main_c = os.path.join(dst, "l3fwd", "main.c")
        text = open(main_c).read()
        patched = text.replace(".offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,", ".offloads = 0,", 1)
        assert patched != text, "l3fwd's RX checksum request not found"
        open(main_c, "w").write(patched)
        subprocess.run(["make", "-C", os.path.join(dst, "l3fwd")], capture_output=True, check=True)
    return plain, binary


def start_l3fwd(binary, env, host, vdevs, next_hop, prefix, same):
    cmd = [binary, "--no-huge", "-m", "512", "--no-pci", f"--file-prefix={prefix}", "-l", "0", "-d", PMD] + \
          [f"--vdev={v}" for v in vdevs] + \
          ["--", "-p", "0x3", "-P", "--config=(0,0,0),(1,0,0)", f"--eth-dest=1,{next_hop}", "--lookup=lpm"] + \
          (["--parse-ptype"] if same else [])
    log = open(os.path.join(CWD, f"{prefix}.log"), "w")
    p = subprocess.Popen(cmd, env=client_env(env, host) if env else dict(os.environ), cwd=CWD,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        if "entering main loop" in open(log.name, errors="replace").read():
            return p
        if p.poll() is not None:
            break
        time.sleep(0.2)
    p.kill()
    raise RuntimeError(f"l3fwd did not start:\n{open(log.name, errors='replace').read()[-2000:]}")


def stop(p):
    if p.poll() is None:
        p.send_signal(2)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure(l3prefix, tp, size, peer0):
    """Mpps l3fwd sends out of port 1 with frames of `size` bytes circulating:
    testpmd (mac forwarding, one lcore) sends what it receives from l3fwd's
    port 1 back into l3fwd's port 0; `start tx_first` puts 64 bursts in."""
    tp(f"set txpkts {size}")
    tp(f"set eth-peer 0 {peer0}")
    tp("set fwd mac")
    tp("start tx_first 64")
    time.sleep(1.0)  # warm up
    a = telemetry(l3prefix, "/ethdev/stats,1").get("opackets", 0)
    t0 = time.monotonic()
    time.sleep(SECS)
    b = telemetry(l3prefix, "/ethdev/stats,1").get("opackets", 0)
    dt = time.monotonic() - t0
    tp("stop")
    time.sleep(0.5)  # what circulates drains
    return (b - a) / dt / 1e6


def bench_ipoib(binary, tag, same):
    env = json.loads(subprocess.run([FABRIC, "up", "--format", "json", "--hcas", "2", "--ports", "2", "--owner",
                                     str(os.getpid())], capture_output=True, text=True, check=True).stdout)
    tp, l3 = None, None
    try:
        # The traffic source and sink: one testpmd on Hca2's two ports (its port 1 receives from l3fwd's port 1).
        tp = Testpmd(env, "Hca2", ["net_ipoib0,port=1", "net_ipoib1,port=2"], PMD, CWD,
                     args=["--rxd=1024", "--txd=1024", "--tx-ip=198.18.1.1,198.18.1.0"], prefix=f"b3t{tag}",
                     eal=SENDER_EAL, startup_timeout=90)
        tp.wait_link(0, timeout=60)
        tp.wait_link(1, timeout=60)
        sink = telemetry(f"b3t{tag}", "/ipoib/ports")["1"]
        l3 = start_l3fwd(binary, env, "Hca1", ["net_ipoib0,port=1", "net_ipoib1,port=2"], lidqpn_mac(sink),
                         f"b3l{tag}", same)
        time.sleep(1)
        port0 = telemetry(f"b3l{tag}", "/ipoib/ports")["0"]
        tp("set eth-peer 1 " + lidqpn_mac(port0))  # tx_first's bursts of port 1 go in too
        return {s: measure(f"b3l{tag}", tp, s, lidqpn_mac(port0)) for s in SIZES}
    finally:
        if tp:
            tp.quit()
        if l3:
            stop(l3)
        subprocess.run([FABRIC, "down", env["IPOIB_FABRIC_DIR"]], capture_output=True)


def bench_memif(binary):
    s0, s1 = os.path.join(CWD, "m0.sock"), os.path.join(CWD, "m1.sock")
    env = {"IBSIM_SOCKNAME": "unused"}
    tp, l3 = None, None
    try:
        l3 = start_l3fwd(binary, None, None, [f"net_memif0,role=server,socket={s0}",
                                             f"net_memif1,role=server,socket={s1},id=1"], "02:00:00:00:00:02", "b3lm",
                         True)
        tp = Testpmd(env, "none", [f"net_memif0,role=client,socket={s0}", f"net_memif1,role=client,socket={s1},id=1"],
                     PMD, CWD, args=["--rxd=1024", "--txd=1024", "--tx-ip=198.18.1.1,198.18.1.0"], prefix="b3tm",
                     eal=SENDER_EAL)
        time.sleep(2)
        return {s: measure("b3lm", tp, s, "02:00:00:00:00:01") for s in SIZES}
    finally:
        if tp:
            tp.quit()
        if l3:
            stop(l3)


def main():
    plain, nocksum = build_l3fwd()
    ipoib_plain = bench_ipoib(plain, "p", False)
    ipoib = bench_ipoib(nocksum, "n", True)
    memif = bench_memif(nocksum)
    print(f"l3fwd (LPM, one lcore on core 0) <-> testpmd (mac forwarding, one lcore on core 1), frames circulating; "
          f"{SECS:.0f} s per size; Mpps l3fwd sent out of its port 1")
    print(f"{'frame':>7} {'ipoib (l3fwd)':>14} {'ipoib (same)':>13} {'memif (same)':>13} {'ipoib/memif':>12}")
    rows = []
    for s in SIZES:
        ratio = ipoib[s] / memif[s] if memif[s] else float("nan")
        print(f"{s:>6}B {ipoib_plain[s]:>14.3f} {ipoib[s]:>13.3f} {memif[s]:>13.3f} {ratio:>12.2f}")
        rows.append(f"{s},{ipoib_plain[s]:.4f},{ipoib[s]:.4f},{memif[s]:.4f},{ratio:.3f}")
    print("(\"same\": the l3fwd copy without the RX checksum request, which net_memif cannot honour, with "
          "--parse-ptype, as net_memif gives no packet types; \"l3fwd\": unmodified, the driver's checksums and types)")
    os.makedirs(os.path.dirname(os.path.abspath(CSV)), exist_ok=True)
    with open(CSV, "w") as f:
        f.write("frame_bytes,ipoib_l3fwd_mpps,ipoib_same_mpps,memif_same_mpps,ipoib_over_memif\n")
        f.write("\n".join(rows) + "\n")
    print(f"CSV: {CSV}")
    if all(ipoib_plain.values()) and all(ipoib.values()) and all(memif.values()):
        shutil.rmtree(CWD, ignore_errors=True)
    else:
        print(f"a run forwarded nothing: logs kept in {CWD}")


if __name__ == "__main__":
    main()
