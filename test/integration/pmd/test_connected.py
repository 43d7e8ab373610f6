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
# A 5,000-byte UDP datagram to 239.1.2.3 without DF, sent a few times (the first wait for the driver's join).
MCAST_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MTU_DISCOVER, 0)  # IP_PMTUDISC_DONT: no DF
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
data = bytes((i * 7 + 1) & 0xff for i in range(5000))
for _ in range(10):
    s.sendto(data, ("239.1.2.3", 5004))
    time.sleep(0.5)
"""
MCAST_RECEIVER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("239.1.2.3", 5004))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("239.1.2.3"),
             socket.inet_aton(sys.argv[1])))
s.settimeout(20)
want = bytes((i * 7 + 1) & 0xff for i in range(5000))
try:
    while True:
        d, _ = s.recvfrom(65536)
        print("datagram", len(d), "intact" if d == want else "damaged", flush=True)
        if d == want:
            break
except socket.timeout:
    print("nothing", flush=True)
"""


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

    # Path MTU towards it: DF set -> ICMP "fragmentation needed" from the driver, the kernel lowers the route's MTU.
    xa0 = a.xstats(1)
    r = sh(f"ip netns exec {ns_a} ping -c 2 -W 3 -s 3000 -M do {IPS['Hca3']}")
    t.note(f"ping -M do -s 3000 to the datagram peer: {r.stdout.strip()[-300:]}")
    route = sh(f"ip -n {ns_a} route get {IPS['Hca3']}").stdout
    t.ok(re.search(r"\bmtu 2044\b", route) is not None,
         "after the driver's ICMP, A's kernel route cache has the datagram MTU (2044) for the datagram peer", route)
    xa1 = a.xstats(1)
    t.ok(xa1.get("tx_pmtu_icmp", 0) > xa0.get("tx_pmtu_icmp", 0), "A's driver counted the ICMP it gave its stack",
         {k: v for k, v in xa1.items() if "pmtu" in k})
    # DF clear -> the driver fragments to the datagram MTU; the peer's kernel reassembles.
    sh(f"ip -n {ns_a} route flush cache")
    r = sh(f"ip netns exec {ns_a} ping -c 3 -W 5 -s 3000 -M dont {IPS['Hca3']}")
    xa2 = a.xstats(1)
    t.ok(r.returncode == 0 and xa2.get("tx_frag_datagrams", 0) > xa1.get("tx_frag_datagrams", 0),
         "3,000-byte pings without DF to the datagram peer are fragmented by the driver and answered",
         (r.stdout[-300:], {k: v for k, v in xa2.items() if "frag" in k}))
    # IPv6: ICMPv6 "packet too big"; the kernel then fragments itself, and later pings pass.
    for name, ns in (("Hca1", ns_a), ("Hca3", ns_c)):
        sh(f"ip -n {ns} -6 addr add fd00:81::{name[-1]}/64 dev {tap_a if name == 'Hca1' else tap_c} nodad")
    time.sleep(1)
    r = sh(f"ip netns exec {ns_a} ping -6 -c 4 -i 0.5 -W 3 -s 3000 fd00:81::3", timeout=60)
    route6 = sh(f"ip -n {ns_a} -6 route get fd00:81::3").stdout
    t.note(f"ping -6 -s 3000: {r.stdout.strip()[-300:]}")
    t.ok(re.search(r"\bmtu 2044\b", route6) is not None and re.search(r"[1-9]\d* received", r.stdout),
         "IPv6: the driver's \"packet too big\" lowers A's route MTU to 2044, and the kernel's own fragments pass",
         (route6, r.stdout[-300:]))
    # A large IPv4 multicast without DF: fragmented by the driver, reassembled by the receiver.
    sh(f"ip -n {ns_a} route add 224.0.0.0/4 dev {tap_a}")
    recv = subprocess.Popen(["ip", "netns", "exec", ns_c, "python3", "-c", MCAST_RECEIVER, IPS["Hca3"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)  # (its IGMP report makes C's driver join the group)
    snd = sh(f"ip netns exec {ns_a} python3 -c '{MCAST_SENDER}' {IPS['Hca1']}", timeout=60)
    try:
        got, _ = recv.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        recv.kill()
        got = recv.communicate()[0]
    xa3 = a.xstats(1)
    t.ok("datagram 5000 intact" in got and xa3.get("tx_frag_datagrams", 0) > xa2.get("tx_frag_datagrams", 0),
         "a 5,000-byte IPv4 multicast datagram without DF arrives whole at a datagram-mode member "
         "(fragmented by the sending driver)", (got[-300:], snd.stdout[-200:], snd.stderr[-200:]))

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


def kernel_mac(ns, iface):
    return re.search(r"link/ether (\S+)", sh(f"ip -n {ns} link show {iface}").stdout).group(1)


def checksum_offload(env, icrc_b):
    """Seed 003's claim: B's application asks the port to compute IPv4/TCP checksums (testpmd's csum
    engine, hw for the net_ipoib port); with "IB CRC as checksum" agreed, B's driver leaves them out and
    A's reports them NONE (A's csum engine, software checksums towards its tap, fixes them for A's
    kernel); with B's devarg icrc_csum=0, B's driver computes them and they are valid on the wire."""
    tag = f"icrc{icrc_b}"
    cap = os.path.join(CWD, f"b-{tag}.pcap")
    hosts = {}
    for name, extra in (("Hca1", ""), ("Hca2", f",icrc_csum={icrc_b},capture={cap}")):
        tap = f"ipcs{os.getpid() % 10000}{name[-1]}"
        tp = Testpmd(env, name, [f"net_tap0,iface={tap}", f"net_ipoib0,mode=connected{extra}"], PMD, CWD,
                     prefix=f"cs{tag}{name[-1]}{os.getpid()}", args=["--enable-scatter", "--rx-offloads=0xe"],
                     startup_timeout=90)
        running.append(tp)
        hosts[name] = (tp, tap)
    for name, (tp, tap) in hosts.items():
        t.ok(tp.wait_link(1, True, 60), f"{tag}: {name}'s net_ipoib port is up")
        ns = setup_ns(name, tap, 65520)
        other = "Hca2" if name == "Hca1" else "Hca1"
        tp("port stop 1")
        for what in ("ip", "tcp", "udp"):
            tp(f"csum set {what} hw 1")
        tp("port start 1")
        tp.wait_link(1, True, 30)
        tp(f"set eth-peer 0 {kernel_mac(ns, tap)}")
        tp(f"set eth-peer 1 {mac_of(IPOIB_ADDR, guid_of(fabric, env, other))}")
        tp("set fwd csum")
        tp("start")
        hosts[name] = (tp, tap, ns)
    (a, _, ns_a), (b, _, ns_b) = hosts["Hca1"], hosts["Hca2"]
    time.sleep(1)
    srv = subprocess.Popen(["ip", "netns", "exec", ns_a, "python3", "-c", TCP_RECEIVER, IPS["Hca1"], "5004"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    n = 4 << 20
    cli = subprocess.Popen(["ip", "netns", "exec", ns_b, "python3", "-c", TCP_SENDER, IPS["Hca1"], "5004", str(n),
                            "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cli_out, _ = cli.communicate(timeout=120)
        srv_out, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        cli.kill()
        srv.kill()
        cli_out, srv_out = cli.communicate()[0], srv.communicate()[0]
    t.ok(transfer_intact(cli_out, srv_out, n),
         f"{tag}: a TCP stream B -> A whose checksums B's application offloads arrives whole",
         (cli_out[-300:], srv_out[-300:]))
    xa, xb = a.xstats(1), b.xstats(1)
    t.note(f"{tag}: B tx_cm_packets {xb.get('tx_cm_packets')} tx_cm_cksum_skipped {xb.get('tx_cm_cksum_skipped')}; "
           f"A rx_cm_packets {xa.get('rx_cm_packets')} rx_cm_cksum_none {xa.get('rx_cm_cksum_none')}")
    if icrc_b:
        t.ok(xb.get("tx_cm_cksum_skipped", 0) >= 100 and xa.get("rx_cm_cksum_none", 0) >= 100,
             f"{tag}: agreed: B's driver left the offloaded checksums to the IB CRC, A's reported them NONE",
             (xa, xb))
    else:
        t.ok(xb.get("tx_cm_cksum_skipped", 0) == 0 and xa.get("rx_cm_cksum_none", 0) == 0 and
             xb.get("tx_cm_packets", 0) >= 100,
             f"{tag}: not agreed: B's driver computed every offloaded checksum, none reported NONE", (xa, xb))
    for tp in (a, b):
        tp("stop")
        tp("port stop all")
        tp("port close all")
        ok, detail = tp.mbufs_back()
        t.ok(ok, f"{tag}: {tp.host}: every mbuf back in its pool", detail)
        tp.quit()
        running.remove(tp)
    for ns in (ns_a, ns_b):
        sh(f"ip netns del {ns}")
        netns.remove(ns)
    # The wire: IPv4 header checksums of B's frames to A as tshark judges them.
    out = subprocess.run(["tshark", "-r", cap, "-o", "ip.check_checksum:TRUE", "-Y",
                          f"ip.src == {IPS['Hca2']} && ip.dst == {IPS['Hca1']} && tcp", "-T", "fields", "-e",
                          "ip.checksum.status"], capture_output=True, text=True, timeout=120).stdout.split()
    t.note(f"{tag}: tshark's IPv4 checksum verdicts of B's TCP frames: {sorted(set(out))} ({len(out)} frames)")
    if icrc_b:
        t.ok("0" in out,
             f"{tag}: on the wire the IPv4 checksums B left out are not valid (tshark: Bad)", sorted(set(out)))
    else:
        t.ok(out and all(v == "1" for v in out),
             f"{tag}: on the wire every IPv4 checksum of B's TCP frames is valid (tshark: Good)", sorted(set(out)))


def scenarios(env):
    scenario(env)
    for tp in list(running):
        tp.quit()
        running.remove(tp)
    for ns in list(netns):
        sh(f"ip netns del {ns}")
        netns.remove(ns)
    checksum_offload(env, 1)
    checksum_offload(env, 0)


def main():
    run_on_fabric(t, fabric, "connected", scenarios, ["--hcas", "3"], running, netns, CWD, timeout_s=600)


if __name__ == "__main__":
    main()
    t.finish()
