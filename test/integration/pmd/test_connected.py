#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Connected mode (RFC 4755) between two Linux stacks, each behind Debian's
dpdk-testpmd (net_tap <-> net_ipoib,mode=connected) on its own HCA of a
simulated fabric whose broadcast group allows 2044-byte datagrams.

The kernels (network namespaces, tap MTU 65520) ARP over UD; each driver
learns the other's 20-byte address with the connected-mode flag, so the
first large frame makes the sending TX queue connect through the CM (REQ,
REP, RTU as MADs between the HCAs) and the frame goes over the Reliable
Connection, in a chain of 2 KB mbufs both ways. Checked: ping with 60,000
bytes of payload (ping verifies its pattern) and with DF set; a TCP stream
of 16 MB with MSS ~65 KB arriving whole (SHA-256); the CM and connection
counters on both sides; the capture decoded by tshark (CM REQ with Linux's
service ID, REP, RTU; RC SEND packets); a third host in datagram mode still
talks to the connected one over UD; on stop, DREQ, and every mbuf back.

usage: test_connected.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL
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
from hosts import TCP_RECEIVER, TCP_SENDER, guid_of, mac_of, run_on_fabric, sh, telemetry, transfer_intact  # noqa: E402

FABRIC, PMD, IPOIB_ADDR = (os.path.abspath(a) for a in sys.argv[1:4])
t = Tap()
CWD = tempfile.mkdtemp(prefix="cm-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []
netns = []
IPS = {"Hca1": "10.81.0.1", "Hca2": "10.81.0.2", "Hca3": "10.81.0.3"}
NBYTES = 16 << 20


def setup_ns(host, tap, mtu):
    ns = f"ipoibcm{os.getpid()}{host.lower()}"
    sh(f"ip netns add {ns}")
    netns.append(ns)
    sh(f"ip link set {tap} netns {ns}")
    sh(f"ip -n {ns} link set {tap} mtu {mtu} && ip -n {ns} addr add {IPS[host]}/24 dev {tap} && "
       f"ip -n {ns} link set {tap} up && ip -n {ns} link set lo up")
    return ns


def host(env, name, mode, capture=None):
    """testpmd forwarding between a tap (port 0) and net_ipoib (port 1) on HCA `name`."""
    tap = f"ipcm{os.getpid() % 10000}{name[-1]}"
    mac = mac_of(IPOIB_ADDR, guid_of(fabric, env, name))
    ipoib = f"net_ipoib0,mode={mode}" + (f",capture={capture}" if capture else "")
    tp = Testpmd(env, name, [f"net_tap0,iface={tap},mac={mac}", ipoib], PMD, CWD, prefix=f"cm{name[-1]}{os.getpid()}",
                 args=["--enable-scatter", "--rxd=512", "--txd=512"], startup_timeout=90)
    running.append(tp)
    tp("set fwd io")
    tp("start")
    return tp, tap


def cm_counts(tp):
    xs = tp.xstats(1)
    return {k: v for k, v in xs.items() if "cm_" in k}


def scenario(env):
    cap = os.path.join(CWD, "a.pcap")
    a, tap_a = host(env, "Hca1", "connected", capture=cap)
    b, tap_b = host(env, "Hca2", "connected")
    c, tap_c = host(env, "Hca3", "datagram")
    t.ok(all(tp.wait_link(1, True, 60) for tp in (a, b, c)), "the three net_ipoib ports come up")
    ports = telemetry(a.prefix, "/ipoib/ports")
    hw = ports.get("1", {}).get("hwaddr", "")
    t.ok(hw.startswith("80:"), "a connected-mode port's 20-byte address carries the RC flag (0x80)", hw)
    info = a("show port info 1")
    t.ok(re.search(r"Maximum MTU: 65520", info) is not None, "dev_info: the connected-mode port's MTU goes to 65520",
         info[-800:])
    ns_a, ns_b, ns_c = setup_ns("Hca1", tap_a, 65520), setup_ns("Hca2", tap_b, 65520), setup_ns("Hca3", tap_c, 2044)
    time.sleep(1)

    r = sh(f"ip netns exec {ns_b} ping -c 3 -W 5 {IPS['Hca1']}")
    t.ok(r.returncode == 0, "B pings A (small frames; ARP over UD teaches each driver the other's address)",
         r.stdout + r.stderr)
    r = sh(f"ip netns exec {ns_b} ping -c 5 -W 5 -s 60000 -M do {IPS['Hca1']}", timeout=90)
    t.ok(r.returncode == 0 and " 0% packet loss" in r.stdout,
         "B pings A with 60,000-byte payloads, DF set (connections both ways, ping checks the data)",
         r.stdout + r.stderr)
    ca, cb = cm_counts(a), cm_counts(b)
    t.note(f"A's CM counters: {ca}")
    t.note(f"B's CM counters: {cb}")
    t.ok(cb.get("tx_cm_packets", 0) >= 5 and ca.get("rx_cm_packets", 0) >= 5,
         "B's echo requests went over its connection and A received them from its shared receive queue", (ca, cb))
    t.ok(ca.get("tx_cm_packets", 0) >= 5 and cb.get("rx_cm_packets", 0) >= 5,
         "A's echo replies went over A's own connection to B", (ca, cb))
    t.ok(ca.get("cm_established", 0) >= 2 and cb.get("cm_established", 0) >= 2,
         "each side counts two connections established (its own to the peer, the peer's to it)", (ca, cb))

    srv = subprocess.Popen(["ip", "netns", "exec", ns_a, "python3", "-c", TCP_RECEIVER, IPS["Hca1"], "5003"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    cli = subprocess.Popen(["ip", "netns", "exec", ns_b, "python3", "-c", TCP_SENDER, IPS["Hca1"], "5003",
                            str(NBYTES), "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cli_out, _ = cli.communicate(timeout=120)
        srv_out, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        cli.kill()
        srv.kill()
        cli_out, srv_out = cli.communicate()[0], srv.communicate()[0]
    t.ok(transfer_intact(cli_out, srv_out, NBYTES),
         f"a {NBYTES >> 20} MB TCP stream from B to A over the connection arrives whole (length and SHA-256)",
         (cli_out[-300:], srv_out[-300:]))
    ca2 = cm_counts(a)
    t.ok(ca2.get("rx_cm_bytes", 0) - ca.get("rx_cm_bytes", 0) >= NBYTES,
         "the stream's bytes arrived over the connection", (ca, ca2))

    # A datagram-mode peer: UD both ways, the connected port's 2044-byte datagrams.
    r = sh(f"ip netns exec {ns_c} ping -c 3 -W 5 -s 1900 {IPS['Hca1']}")
    t.ok(r.returncode == 0, "a datagram-mode peer pings the connected-mode port over UD", r.stdout + r.stderr)
    xc = c.xstats(1)
    t.eq(xc.get("tx_cm_packets", 0), 0, "the datagram-mode peer sent nothing over connections")

    for tp in (a, b, c):
        tp("stop")
    for tp in (a, b, c):
        tp("port stop all")
    time.sleep(0.5)
    cb2 = cm_counts(b)
    t.ok(cb2.get("cm_dreq_received", 0) >= 1, "A's stop sent B a DREQ for the connection (B counted it)", cb2)
    for tp in (a, b, c):
        tp("port close all")
        ok, detail = tp.mbufs_back()
        t.ok(ok, f"{tp.host}: every mbuf back in its pool after stop and close", detail)

    # The wire, judged by tshark.
    fields = ["-T", "fields", "-E", "separator=|", "-e", "infiniband.bth.opcode", "-e", "infiniband.cm.attribute",
              "-e", "infiniband.cm.req.serviceid"]
    out = subprocess.run(["tshark", "-r", cap] + fields, capture_output=True, text=True, timeout=120)
    t.note(f"capture: {len(out.stdout.splitlines())} packets")
    text = out.stdout
    t.ok(re.search(r"\|0x1000000000[0-9a-f]{6}", text, re.I) is not None or "0x10000000" in text,
         "tshark decodes A's CM REQ with Linux's service ID (0x1000000000000000 | QPN)", text[:2000])
    verbose = subprocess.run(["tshark", "-r", cap, "-V"], capture_output=True, text=True, timeout=120).stdout
    for what in ("ConnectReply", "ReadyToUse"):
        t.ok(what in verbose or what.lower() in verbose.lower(), f"tshark decodes a CM {what} in the capture",
             "")
    t.ok(re.search(r"RC Send (First|Only|Middle|Last)", verbose) is not None or
         re.search(r"Opcode: Reliable Connection \(RC\) - SEND", verbose) is not None,
         "tshark decodes RC SEND packets (the connection's frames)", "")


def main():
    run_on_fabric(t, fabric, "connected", scenario, ["--hcas", "3"], running, netns, CWD)


if __name__ == "__main__":
    main()
    t.finish()
