#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""TSO and checksum offload over chained mbufs, judged by Linux TCP and tshark.

Two hosts, each a Debian dpdk-testpmd with a net_tap port (its kernel side in
a network namespace, MTU 9000) and a net_ipoib port (MTU 2044). On A the csum
engine forwards tap -> IPoIB asking for IPv4 and TCP checksum offload and TSO
with a segment size of 1400 (`csum set ... hw`, `tso set 1400 1`); A's tap
port receives the kernel's 9000-byte TCP segments scattered over 2 KB mbufs
(--enable-scatter), so every frame net_ipoib cuts is a chain. B forwards
IPoIB -> tap unchanged (io). A TCP transfer from A's namespace to B's must
arrive whole (its SHA-256 compared), which only happens if every segment's
headers and checksums are right: B's kernel drops what it cannot verify.
A's capture (the HCA's wire view) is then read by tshark with TCP and IP
checksum validation on.

usage: test_tso.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL
"""
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric  # noqa: E402
from testpmd import Testpmd  # noqa: E402
from hosts import TCP_RECEIVER, TCP_SENDER, guid_of, mac_of, run_on_fabric, sh, transfer_intact  # noqa: E402

FABRIC, PMD, IPOIB_ADDR = (os.path.abspath(a) for a in sys.argv[1:4])
t = Tap()
CWD = tempfile.mkdtemp(prefix="tso-test-", dir=os.path.dirname(os.path.dirname(PMD)))
CAPTURE = os.path.join(CWD, "tso.pcap")
fabric = Fabric(FABRIC, CWD)
running = []
netns = []
MSS = 1400
MTU_TAP = 9000
NBYTES = 4 << 20



def guid(env, host):
    return guid_of(fabric, env, host)


def mac(guid_text):
    return mac_of(IPOIB_ADDR, guid_text)


def host(env, i, tso, peer=None):
    ns = f"ipoibtso{os.getpid()}x{i}"
    sh(f"ip netns add {ns}")
    netns.append(ns)
    tap = f"ipts{os.getpid() % 100000}x{i}"
    ipoib = "net_ipoib0" + (f",capture={CAPTURE}" if tso else "")
    tp = Testpmd(env, f"Hca{i}", [f"net_tap0,iface={tap},mac={mac(guid(env, f'Hca{i}'))}", ipoib], PMD, CWD,
                 prefix=f"tso{i}{os.getpid()}", startup_timeout=90,
                 args=["--total-num-mbufs=8192", "--mbuf-size=2176", "--enable-scatter"])
    running.append(tp)
    tp("port stop all")
    out = tp(f"port config mtu 0 {MTU_TAP}")
    t.ok("error" not in out.lower() and "fail" not in out.lower(), f"Hca{i}: tap port MTU {MTU_TAP}", out)
    if tso:
        for c in ("csum set ip hw 1", "csum set tcp hw 1", f"tso set {MSS} 1", "csum parse-tunnel off 1"):
            out = tp(c)
            t.ok("error" not in out.lower() and "bad" not in out.lower(), f"Hca{i}: {c}", out)
    tp("port start all")
    if tso:
        # The csum engine rewrites both Ethernet addresses: toward the kernel
        # its own tap MAC, toward IPoIB the peer's GUID-derived MAC.
        tp(f"set eth-peer 0 {mac(guid(env, f'Hca{i}'))}")
        tp(f"set eth-peer 1 {peer}")
    tp("set fwd csum" if tso else "set fwd io")
    tp("start")
    t.ok(tp.wait_link(1, timeout=60), f"Hca{i}: net_ipoib port up beside net_tap")
    sh(f"ip link set {tap} netns {ns}")
    sh(f"ip -n {ns} link set {tap} mtu {MTU_TAP} && ip -n {ns} addr add 10.78.0.{i}/24 dev {tap} && "
       f"ip -n {ns} link set {tap} up && ip -n {ns} link set lo up")
    return tp, ns


def xstats(tp, port):
    return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)\s*$", tp(f"show port xstats {port}"), re.M)}


def scenario(env):
    a, ns1 = host(env, 1, True, mac(guid(env, "Hca2")))
    b, ns2 = host(env, 2, False)
    info = a("show port info 1")
    t.ok("Max segment number per MTU/TSO" in info, "testpmd reads net_ipoib's port info", info[-300:])
    cap = a("show port 1 tx_offload capabilities")
    t.ok("TCP_TSO" in cap and "MULTI_SEGS" in cap, "net_ipoib offers TCP_TSO and MULTI_SEGS", cap)
    time.sleep(2)
    # B speaks first: A's driver learns B's address from its ARP.
    r = sh(f"ip netns exec {ns2} ping -c 2 -W 3 10.78.0.1")
    t.ok(r.returncode == 0, "ping from B's kernel to A's (ARP translated both ways)", r.stdout + r.stderr)
    r = sh(f"ip netns exec {ns1} ping -c 2 -W 3 10.78.0.2")
    t.ok(r.returncode == 0, "ping from A's kernel to B's", r.stdout + r.stderr)

    srv = subprocess.Popen(["ip", "netns", "exec", ns2, "python3", "-c", TCP_RECEIVER, "10.78.0.2", "5001"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    cli = subprocess.run(["ip", "netns", "exec", ns1, "python3", "-c", TCP_SENDER, "10.78.0.2", "5001", str(NBYTES),
                          "1"], capture_output=True, text=True, timeout=120)
    try:
        got, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
        got, _ = srv.communicate()
    t.note(f"sent: {cli.stdout.strip()} {cli.stderr.strip()[-300:]}; received: {got.strip()}")
    t.ok(cli.returncode == 0 and transfer_intact(cli.stdout, got, NBYTES),
         f"a {NBYTES >> 20} MB TCP transfer arrives whole (length and SHA-256 agree)", (cli.stdout, got))
    mss = sh(f"ip netns exec {ns1} ss -tin dst 10.78.0.2").stdout
    t.note(f"sender's socket: {' '.join(mss.split())[:300]}")

    for tp in (a, b):
        tp("stop")
    xa = xstats(a, 1)
    frames, segs = xa.get("tx_tso_frames", 0), xa.get("tx_tso_segments", 0)
    t.note(f"A's net_ipoib port: tx_tso_frames {frames}, tx_tso_segments {segs}, tx_tso_bad_drops "
           f"{xa.get('tx_tso_bad_drops')}, tx_too_big {xa.get('tx_too_big')}")
    t.ok(frames > 0 and segs >= 2 * frames, "the driver cut the kernel's large segments (TSO frames, several "
         "segments each)", (frames, segs))
    t.eq(xa.get("tx_tso_bad_drops", -1), 0, "no TSO frame refused")
    t.eq(xa.get("tx_too_big", -1), 0, "no frame too big for the MTU reached net_ipoib unsegmented")
    xt = xstats(a, 0)
    t.note(f"A's tap port: {[(k, v) for k, v in xt.items() if 'bytes' in k and v][:4]}")
    for tp in (a, b):
        tp.quit()
    running.clear()

    out = subprocess.run(["tshark", "-o", 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""',
                          "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-r", CAPTURE,
                          "-Y", "tcp.port == 5001 and tcp.len > 0", "-T", "fields", "-e", "ip.len", "-e",
                          "ip.checksum.status", "-e", "tcp.len", "-e", "tcp.checksum.status"],
                         capture_output=True, text=True, timeout=300).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    t.note(f"tshark: {len(rows)} TCP data segments in A's capture")
    t.ok(len(rows) >= NBYTES // MSS, "the capture holds the transfer's segments", len(rows))
    bad = [r for r in rows if r[1] != "1" or r[3] != "1"]
    t.ok(rows and not bad, "tshark: every segment's IPv4 and TCP checksums are good", bad[:5])
    sizes = [int(r[2]) for r in rows if r[2].isdigit()]
    t.ok(sizes and max(sizes) == MSS and all(int(r[0]) <= 2044 for r in rows if r[0].isdigit()),
         f"segments carry at most the MSS ({MSS}) in IP packets within the IPoIB MTU (2044)",
         (max(sizes) if sizes else None, max((int(r[0]) for r in rows if r[0].isdigit()), default=None)))


def main():
    run_on_fabric(t, fabric, "tso", scenario, ["--hcas", "2"], running, netns, CWD)


if __name__ == "__main__":
    main()
    t.finish()
