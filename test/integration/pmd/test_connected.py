#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Connected mode (RFC 4755) between Linux stacks, each behind tap_bridge
(a small DPDK application: a Linux tap <-> net_ipoib, frames up to 64 KB in
chains of 2 KB mbufs; Debian's DPDK 22.11 has no kernel port that carries
them: net_tap caps frames at 1522 bytes, net_pcap's capture at about 16 KB)
on its own HCA of a simulated fabric whose broadcast group allows 2044-byte
datagrams.

The kernels (network namespaces, tap MTU 65520) ARP over UD; each driver
learns the other's 20-byte address with the connected-mode flag, so the
first large frame makes the sending TX queue connect through the CM (REQ,
REP, RTU as MADs between the HCAs) and the frame goes over the Reliable
Connection, in chains of 2 KB mbufs both ways. Checked: ping with 60,000
bytes of payload, DF set (ping verifies its pattern); a TCP stream of 16 MB
(SHA-256); the CM and connection counters on both sides; a datagram-mode peer
over UD; path MTU towards it (ICMP from the driver, the kernel's route
cache), IPv4 without DF fragmented by the driver, a 5,000-byte multicast
datagram fragmented and reassembled; the capture decoded by tshark (CM REQ
with Linux's service ID, REP, RTU; RC SEND packets); DREQ on stop; every mbuf
back. Then seed 003's negotiation: the kernels leave TCP checksums to the
device (virtio-net offload through the tap), the bridge asks the port for
them; agreed -> not computed, reported NONE, valid nowhere on the wire;
one side with icrc_csum=0 -> computed and valid on the wire.

Then failures: a port that goes down while its connection request is
unanswered (the attempt dropped, its held frames counted, a new connection
once the port is back), and a peer killed mid-transfer.

usage: test_connected.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL TAP_BRIDGE
"""
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric, client_env  # noqa: E402
from testpmd import Testpmd  # noqa: E402
from hosts import (TapBridgeHost, guid_of, mac_of, run_on_fabric, sh, tcp_transfer, telemetry,  # noqa: E402
                   transfer_intact)

FABRIC, PMD, IPOIB_ADDR, BRIDGE = (os.path.abspath(a) for a in sys.argv[1:5])
t = Tap()
CWD = tempfile.mkdtemp(prefix="cm-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []
netns = []
IPS = {"Hca1": "10.81.0.1", "Hca2": "10.81.0.2", "Hca3": "10.81.0.3"}
NBYTES = 16 << 20
TSHARK_DLT = 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""'
# A 5,000-byte UDP datagram to 239.1.2.3 without DF, sent a few times (the first wait for the driver's join).
MCAST_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: no DF
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


class Bridge(TapBridgeHost):
    """tap_bridge on HCA `host`: its tap's kernel side in a namespace of its own with IPS[host]."""

    def __init__(self, env, host, devargs, tag, mtu=65520, offload=False):
        self.host = host
        self.prefix = f"cm{tag}{host[-1]}{os.getpid()}"
        self.tap = f"cm{tag}{host[-1]}{os.getpid() % 10000}"
        self.log_path = os.path.join(CWD, f"bridge-{self.prefix}.log")
        self.log = open(self.log_path, "w")
        cmd = [BRIDGE, "--no-huge", "-m", "512", f"--file-prefix={self.prefix}", "--no-pci", "-d", PMD,
               f"--vdev=net_ipoib0,{devargs}", "--log-level=pmd.net.ipoib:info", "--", "--tap", self.tap] + \
              (["--offload"] if offload else [])
        self.p = subprocess.Popen(cmd, env=client_env(env, host), cwd=CWD, stdin=subprocess.DEVNULL,
                                  stdout=self.log, stderr=subprocess.STDOUT)
        running.append(self)
        self.ns = None
        end = time.monotonic() + 60
        while time.monotonic() < end and self.p.poll() is None and "tap_bridge:" not in self.text():
            time.sleep(0.2)
        if "tap_bridge:" not in self.text():
            raise RuntimeError(f"tap_bridge on {host} did not start:\n{self.text()[-2000:]}")
        self.ns = f"ipoibcm{tag}{os.getpid()}{host[-1]}"
        sh(f"ip netns add {self.ns}")
        netns.append(self.ns)
        sh(f"ip link set {self.tap} netns {self.ns}")
        sh(f"ip -n {self.ns} link set {self.tap} mtu {mtu} address {mac_of(IPOIB_ADDR, guid_of(fabric, env, host))}"
           f" && ip -n {self.ns} addr add {IPS[host]}/24 dev {self.tap} && ip -n {self.ns} link set {self.tap} up"
           f" && ip -n {self.ns} link set lo up")

    def forget(self):
        if self in running:
            running.remove(self)
        if self.ns in netns:
            sh(f"ip netns del {self.ns}")
            netns.remove(self.ns)


def cm_counts(b):
    return {k: v for k, v in b.xstats().items() if "cm_" in k}


def scenario(env):
    cap = os.path.join(CWD, "a.pcap")
    a = Bridge(env, "Hca1", f"mode=connected,capture={cap}", "s")
    b = Bridge(env, "Hca2", "mode=connected", "s")
    c = Bridge(env, "Hca3", "mode=datagram", "s", mtu=2044)
    t.ok(all(x.up() for x in (a, b, c)), "the three net_ipoib ports come up")
    pa = a.port()
    t.ok(pa.get("hwaddr", "").startswith("80:") and pa.get("mtu") == 65520,
         "a connected-mode port: its 20-byte address carries the RC flag (0x80), its MTU is 65520", pa)
    t.ok("MTU 65520" in a.text(), "dev_info: the application may set MTU 65520 (tap_bridge took max_mtu)",
         a.text()[:500])
    time.sleep(1)

    r = b.run(f"ping -c 3 -W 5 {IPS['Hca1']}")
    t.ok(r.returncode == 0, "B pings A (small frames; ARP over UD teaches each driver the other's address)",
         r.stdout + r.stderr)
    r = b.run(f"ping -c 5 -W 5 -s 60000 -M do {IPS['Hca1']}")
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

    cli_out, srv_out, secs = tcp_transfer(a.ns, b.ns, IPS["Hca1"], 5003, NBYTES, timeout=120)
    t.note(f"TCP: {NBYTES >> 20} MB in {secs:.1f} s")
    t.ok(transfer_intact(cli_out, srv_out, NBYTES),
         f"a {NBYTES >> 20} MB TCP stream from B to A over the connection arrives whole (length and SHA-256)",
         (cli_out[-300:], srv_out[-300:]))
    ca2 = cm_counts(a)
    t.ok(ca2.get("rx_cm_bytes", 0) - ca.get("rx_cm_bytes", 0) >= NBYTES,
         "the stream's bytes arrived over the connection", (ca, ca2))

    # A datagram-mode peer: UD both ways, the connected port's 2044-byte datagrams.
    r = c.run(f"ping -c 3 -W 5 -s 1900 {IPS['Hca1']}")
    t.ok(r.returncode == 0, "a datagram-mode peer pings the connected-mode port over UD", r.stdout + r.stderr)
    t.eq(c.xstats().get("tx_cm_packets", 0), 0, "the datagram-mode peer sent nothing over connections")

    # Path MTU towards it: DF set -> ICMP "fragmentation needed" from the driver, the kernel lowers the route's MTU.
    xa0 = a.xstats()
    r = a.run(f"ping -c 2 -W 3 -s 3000 -M do {IPS['Hca3']}")
    t.note(f"ping -M do -s 3000 to the datagram peer: {r.stdout.strip()[-300:]}")
    route = sh(f"ip -n {a.ns} route get {IPS['Hca3']}").stdout
    t.ok(re.search(r"\bmtu 2044\b", route) is not None,
         "after the driver's ICMP, A's kernel route cache has the datagram MTU (2044) for the datagram peer", route)
    xa1 = a.xstats()
    t.ok(xa1.get("tx_pmtu_icmp", 0) > xa0.get("tx_pmtu_icmp", 0), "A's driver counted the ICMP it gave its stack",
         {k: v for k, v in xa1.items() if "pmtu" in k})
    # DF clear -> the driver fragments to the datagram MTU; the peer's kernel reassembles.
    sh(f"ip -n {a.ns} route flush cache")
    r = a.run(f"ping -c 3 -W 5 -s 3000 -M dont {IPS['Hca3']}")
    xa2 = a.xstats()
    t.ok(r.returncode == 0 and xa2.get("tx_frag_datagrams", 0) > xa1.get("tx_frag_datagrams", 0),
         "3,000-byte pings without DF to the datagram peer are fragmented by the driver and answered",
         (r.stdout[-300:], {k: v for k, v in xa2.items() if "frag" in k}))
    # IPv6: ICMPv6 "packet too big"; the kernel then fragments itself, and later pings pass.
    for x in (a, c):
        sh(f"ip -n {x.ns} -6 addr add fd00:81::{x.host[-1]}/64 dev {x.tap} nodad")
    time.sleep(1)
    r = a.run("ping -6 -c 4 -i 0.5 -W 3 -s 3000 fd00:81::3", timeout=60)
    route6 = sh(f"ip -n {a.ns} -6 route get fd00:81::3").stdout
    t.note(f"ping -6 -s 3000: {r.stdout.strip()[-300:]}")
    t.ok(re.search(r"\bmtu 2044\b", route6) is not None and re.search(r"[1-9]\d* received", r.stdout),
         "IPv6: the driver's \"packet too big\" lowers A's route MTU to 2044, and the kernel's own fragments pass",
         (route6, r.stdout[-300:]))
    # A large IPv4 multicast without DF: fragmented by the driver, reassembled by the receiver.
    sh(f"ip -n {a.ns} route add 224.0.0.0/4 dev {a.tap}")
    recv = subprocess.Popen(["ip", "netns", "exec", c.ns, "python3", "-c", MCAST_RECEIVER, IPS["Hca3"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)  # (its IGMP report makes C's driver join the group)
    snd = subprocess.run(["ip", "netns", "exec", a.ns, "python3", "-c", MCAST_SENDER, IPS["Hca1"]],
                         capture_output=True, text=True, timeout=60)
    try:
        got, _ = recv.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        recv.kill()
        got = recv.communicate()[0]
    xa3 = a.xstats()
    t.ok("datagram 5000 intact" in got and xa3.get("tx_frag_datagrams", 0) > xa2.get("tx_frag_datagrams", 0),
         "a 5,000-byte IPv4 multicast datagram without DF arrives whole at a datagram-mode member "
         "(fragmented by the sending driver)", (got[-300:], snd.stdout[-200:], snd.stderr[-200:]))

    # Stop: A's DREQ reaches B; every mbuf back.
    qa = a.quit()
    time.sleep(1)
    cb2 = cm_counts(b)
    t.ok(cb2.get("cm_dreq_received", 0) >= 1, "A's stop sent B a DREQ for the connection (B counted it)", cb2)
    for x, q in ((a, qa), (b, b.quit()), (c, c.quit())):
        t.ok(q.get("mbufs_back") == "yes", f"{x.host}: every mbuf back in its pool after stop and close", q)

    # The wire, judged by tshark.
    v = subprocess.run(["tshark", "-o", TSHARK_DLT, "-r", cap, "-V"], capture_output=True, text=True,
                       timeout=120).stdout
    t.ok(re.search(r"ServiceID: 0x1000000000[0-9a-f]{6}", v) is not None,
         "tshark decodes A's CM REQ with Linux's service ID (0x1000000000000000 | QPN)",
         "\n".join(x for x in v.splitlines() if "Service" in x)[:1000])
    for what in ("ConnectReply", "ReadyToUse", "ConnectRequest", "DisconnectRequest"):
        t.ok(f"CM: {what}" in v or f"{what}" in v, f"tshark decodes a CM {what} in A's capture")
    t.ok(re.search(r"\(RC\) - SEND First", v) is not None and re.search(r"\(RC\) - SEND Last", v) is not None,
         "tshark decodes RC SEND packets (first ... last: a 64 KB frame cut at the path MTU)",
         "\n".join(x for x in v.splitlines() if "Opcode" in x)[:1000])


def checksum_offload(env, icrc_b):
    """Seed 003's claim: the kernels leave TCP checksums to the device (the tap's virtio-net offload), the
    bridges ask the port for them (RTE_MBUF_F_TX_*_CKSUM); with "IB CRC as checksum" agreed, B's driver
    leaves them out, A's reports them NONE and A's bridge passes them to its kernel as verified; with B's
    devarg icrc_csum=0, B's driver computes them, A's verifies them GOOD, and they are valid on the wire."""
    tag = f"i{icrc_b}"
    cap = os.path.join(CWD, f"b-{tag}.pcap")
    a = Bridge(env, "Hca1", "mode=connected", tag, offload=True)
    b = Bridge(env, "Hca2", f"mode=connected,icrc_csum={icrc_b},capture={cap}", tag, offload=True)
    t.ok(a.up() and b.up(), f"{tag}: both ports up")
    time.sleep(1)
    n = 4 << 20
    cli_out, srv_out, _ = tcp_transfer(a.ns, b.ns, IPS["Hca1"], 5004, n)
    t.ok(transfer_intact(cli_out, srv_out, n),
         f"{tag}: a TCP stream B -> A whose checksums the kernel offloads arrives whole", (cli_out[-300:], srv_out[-300:]))
    xa, xb = a.xstats(), b.xstats()
    t.note(f"{tag}: B tx_cm_packets {xb.get('tx_cm_packets')} tx_cm_cksum_skipped {xb.get('tx_cm_cksum_skipped')}; "
           f"A rx_cm_packets {xa.get('rx_cm_packets')} rx_cm_cksum_none {xa.get('rx_cm_cksum_none')}")
    qa, qb = a.quit(), b.quit()
    t.note(f"{tag}: bridges: A {qa}, B {qb}")
    if icrc_b:
        t.ok(xb.get("tx_cm_cksum_skipped", 0) >= 50 and xa.get("rx_cm_cksum_none", 0) >= 50 and
             int(qb.get("offloaded", 0)) >= 50,
             f"{tag}: agreed: B's driver left the offloaded checksums to the IB CRC, A's reported them NONE",
             (xa, xb, qb))
    else:
        t.ok(xb.get("tx_cm_cksum_skipped", 0) == 0 and xa.get("rx_cm_cksum_none", 0) == 0 and
             xb.get("tx_cm_packets", 0) >= 50 and int(qb.get("offloaded", 0)) >= 50,
             f"{tag}: not agreed: B's driver computed every offloaded checksum, none reported NONE", (xa, xb, qb))
    t.ok((qa.get("mbufs_back"), qb.get("mbufs_back")) == ("yes", "yes"), f"{tag}: every mbuf back in its pool", (qa, qb))
    # The wire, judged on the frames that fit one RC packet (SEND Only: TCP's checksum covers the segment,
    # which a larger frame spreads over several packets).
    if icrc_b:
        # Wireshark reads a payload as IPoIB only with the header's reserved field zero: read the bytes.
        out = subprocess.run(["tshark", "-o", TSHARK_DLT, "-r", cap, "-Y", "infiniband.bth.opcode == 4",
                              "-T", "fields", "-e", "data.data"], capture_output=True, text=True,
                             timeout=120).stdout.split()
        frames = [bytes.fromhex(x) for x in out if x.startswith("0800")]
        marked = [f for f in frames if f[2:4] == b"\x00\x03"]
        bad_tcp = [f for f in marked if len(f) >= 44 and f[13] == 6 and not tcp_checksum_ok(f[4:])]
        t.note(f"{tag}: B's IPv4 frames in one RC packet: {len(frames)}, marked 0x0003 {len(marked)}, "
               f"TCP checksum not valid {len(bad_tcp)}")
        t.ok(frames and len(marked) == len(frames) and bad_tcp,
             f"{tag}: on the wire B's frames carry the mark (IPoIB reserved bits 0x0003) and TCP checksums that "
             f"are not valid (left to the IB CRC)", (len(frames), len(marked), len(bad_tcp)))
    else:
        out = subprocess.run(["tshark", "-o", TSHARK_DLT, "-o", "ip.check_checksum:TRUE", "-o",
                              "tcp.check_checksum:TRUE", "-r", cap, "-Y",
                              f"infiniband.bth.opcode == 4 && ip.src == {IPS['Hca2']} && tcp", "-T", "fields",
                              "-e", "ip.checksum.status", "-e", "tcp.checksum.status"],
                             capture_output=True, text=True, timeout=120).stdout.split()
        t.note(f"{tag}: tshark's IPv4/TCP checksum verdicts of B's one-packet frames: {sorted(set(out))} "
               f"({len(out) // 2} frames)")
        t.ok(out and all(x == "1" for x in out),
             f"{tag}: on the wire every IPv4 and TCP checksum of B's frames is valid (tshark: Good)",
             sorted(set(out)))


def tcp_checksum_ok(ip):
    """An IPv4/TCP packet's TCP checksum, checked over its bytes."""
    ihl = (ip[0] & 0xf) * 4
    total = int.from_bytes(ip[2:4], "big")
    seg = ip[ihl:total]
    pseudo = ip[12:20] + bytes([0, 6]) + len(seg).to_bytes(2, "big")
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s == 0xffff


def testpmd_pair(env):
    """Two dpdk-testpmd processes in connected mode: A sends one burst of 32 frames of 65534 bytes
    (tx_first; chains of 8 KB mbufs, as testpmd's command line takes at most 128 characters of
    segment sizes), B (2 KB mbufs: each frame a chain of 32 segments) sends each back (macswap):
    counts equal both ways, and the payloads judged on the wire: the RC messages B sent
    carry exactly the bytes of those A sent (both HCAs' captures). B never saw A's address (no
    ARP): it knows A is in connected mode from A's connection to it."""
    cap_a, cap_b = os.path.join(CWD, "tp-a.pcap"), os.path.join(CWD, "tp-b.pcap")
    b = Testpmd(env, "Hca2", [f"net_ipoib0,mode=connected,capture={cap_b}"], PMD, CWD, prefix=f"cmtb{os.getpid()}",
                args=["--enable-scatter"], startup_timeout=60)
    running.append(b)
    t.ok(b.wait_link(0, True, 30), "p: B (testpmd, connected mode) is up")
    pb = telemetry(b.prefix, "/ipoib/ports").get("0", {})
    a = Testpmd(env, "Hca1", [f"net_ipoib0,mode=connected,neigh={pb.get('mac')}/{pb.get('hwaddr')},capture={cap_a}"],
                PMD, CWD, prefix=f"cmta{os.getpid()}", args=["--enable-scatter", "--mbuf-size=8320"],
                startup_timeout=60)
    running.append(a)
    t.ok(a.wait_link(0, True, 30), "p: A (testpmd, connected mode, B given as a neighbour) is up")
    a("set txpkts " + ",".join(["8192"] * 7 + ["8190"]))
    a(f"set eth-peer 0 {pb.get('mac')}")
    b("set fwd macswap")
    b("start")
    a("set fwd rxonly")
    # Warm-up: the first burst makes the connections (A's while its frames wait, at most 3 held;
    # B's when it first answers, over UD meanwhile: fragments); then 32 frames over both.
    a("start tx_first")
    time.sleep(3)
    a("stop")
    for tp in (a, b):
        tp("clear port stats all")
        tp("clear port xstats all")
    a("start tx_first")
    end = time.monotonic() + 30
    while time.monotonic() < end and a.stats(0)[0] < 32:
        time.sleep(0.5)
    a("stop")
    b("stop")
    (a_rx, a_tx), (b_rx, b_tx) = a.stats(0), b.stats(0)
    xa, xb = a.xstats(0), b.xstats(0)
    t.note(f"p: A tx {a_tx} rx {a_rx}, B rx {b_rx} tx {b_tx}; A tx_cm_packets {xa.get('tx_cm_packets')}, "
           f"B rx_cm_packets {xb.get('rx_cm_packets')} rx_lent_frames {xb.get('rx_lent_frames')}")
    t.eq((a_tx, b_rx, b_tx, a_rx), (32, 32, 32, 32), "p: 32 frames of 64 KB A -> B and 32 back, counted exactly")
    t.ok(xa.get("tx_cm_packets", 0) == 32 and xb.get("tx_cm_packets", 0) == 32 and
         xb.get("rx_lent_frames", 0) == 32,
         "p: both ways over connections; B received each frame in its shared receive buffers (lent, 32 x 2 KB)",
         (xa, xb))
    for tp in (a, b):
        tp.quit()
        running.remove(tp)

    def messages(cap):
        """The payloads of the RC SEND messages in a capture (FIRST..LAST joined), read from the pcap
        itself (tshark shows the data of SEND Last packets as nothing): the IB link packet
        (DLT 147) is LRH (8 bytes; LNH 3: a GRH of 40 follows), BTH (12: opcode, pad count), the
        payload, ICRC (4) and VCRC (2)."""
        msgs, cur = [], b""
        with open(cap, "rb") as f:
            data = f.read()
        off = 24  # (the pcap file header)
        while off + 16 <= len(data):
            incl = struct.unpack_from("<I", data, off + 8)[0]
            pkt = data[off + 16:off + 16 + incl]
            off += 16 + incl
            hdr = 8 + (40 if (pkt[1] & 3) == 3 else 0)
            if len(pkt) < hdr + 12 + 6:
                continue
            op, pad = pkt[hdr], (pkt[hdr + 1] >> 4) & 3
            if op > 5:
                continue  # (not an RC SEND)
            cur += pkt[hdr + 12:len(pkt) - 6 - pad]
            if op in (2, 3, 4, 5):  # SEND Last (with immediate), Only (with immediate)
                msgs.append(cur)
                cur = b""
        return msgs

    ma, mb = messages(cap_a), messages(cap_b)
    big_a = [m for m in ma if len(m) >= 65000][-32:]  # (the measured burst: the last 32 each way)
    big_b = [m for m in mb if len(m) >= 65000][-32:]
    t.note(f"p: RC messages on the wire: A {len(ma)} ({len(big_a)} of 64 KB), B {len(mb)} ({len(big_b)} of 64 KB)")
    t.ok(len(big_a) == 32 and big_a == big_b and all(len(m) == 65524 for m in big_a),
         "p: on the wire, B's 32 RC messages of 65524 bytes carry exactly the bytes of A's (payloads verified)",
         (len(big_a), len(big_b), sorted({len(m) for m in big_a + big_b})))


def port_down_in_setup(env):
    """A's port goes down while its connection request waits for an answer (B is stopped: its CM
    answers nothing): the attempt is dropped, the frames held for it are dropped and counted, no
    connection is counted established; with the port back (and B resumed) A connects again and the
    large frames pass; every mbuf back."""
    # A knows B from the start (neigh devarg, a static ARP entry): no frame has passed between them
    # when A first sends, so its first frame asks for the connection.
    b = Bridge(env, "Hca2", "mode=connected", "d")
    t.ok(b.up(), "d: B's port up")
    pb = b.port()
    a = Bridge(env, "Hca1", f"mode=connected,neigh={pb.get('mac')}/{pb.get('hwaddr')}", "d")
    t.ok(a.up(), "d: A's port up, B given as a neighbour")
    sh(f"ip -n {a.ns} neigh replace {IPS['Hca2']} lladdr {pb.get('mac')} dev {a.tap} nud permanent")
    x0 = a.xstats()
    b.p.send_signal(signal.SIGSTOP)
    try:
        big = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "30000",
                                IPS["Hca2"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 10
        while time.monotonic() < end and a.xstats().get("cm_req_sent", 0) <= x0.get("cm_req_sent", 0):
            time.sleep(0.2)
        x1 = a.xstats()
        fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "down", "--wait", "10")
        end = time.monotonic() + 20
        while time.monotonic() < end and a.port().get("link") == "up":
            time.sleep(0.3)
        down = a.port().get("link") != "up"
        big.communicate(timeout=30)
        x2 = a.xstats()
    finally:
        b.p.send_signal(signal.SIGCONT)
    t.note(f"d: A before/at REQ/after port down: cm_req_sent {x0.get('cm_req_sent')}/{x1.get('cm_req_sent')}/"
           f"{x2.get('cm_req_sent')}, cm_established {x0.get('cm_established')}/{x2.get('cm_established')}, "
           f"tx_unresolved_queued {x2.get('tx_unresolved_queued')}, tx_unresolved_drops "
           f"{x2.get('tx_unresolved_drops')}, tx_link_down_drops {x2.get('tx_link_down_drops')}")
    t.ok(x1.get("cm_req_sent", 0) > x0.get("cm_req_sent", 0) and down,
         "d: A's large frame made it send a REQ, unanswered, and then its port went down", (x0, x1, down))
    t.eq(x2.get("cm_established", 0), x0.get("cm_established", 0),
         "d: no connection is counted established by the attempt the port's going down cut short")
    held = x2.get("tx_unresolved_queued", 0) - x0.get("tx_unresolved_queued", 0)
    dropped = sum(x2.get(k, 0) - x0.get(k, 0) for k in ("tx_unresolved_drops", "tx_link_down_drops"))
    t.ok(held >= 1 and dropped >= 1,
         "d: the frames held for the connection were dropped and counted (held, then unresolved or link down)",
         (held, dropped))
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "up", "--wait", "10")
    t.ok(a.up(), "d: A's port comes back up")
    r = None
    for _ in range(5):  # (B's answers to the old request are refused as stale; a new request follows)
        r = a.run(f"ping -c 3 -W 5 -s 30000 {IPS['Hca2']}")
        if r.returncode == 0 and " 0% packet loss" in r.stdout:
            break
    x3 = a.xstats()
    t.ok(r.returncode == 0 and " 0% packet loss" in r.stdout and
         x3.get("cm_established", 0) > x2.get("cm_established", 0),
         "d: after the port came back A connects again and 30,000-byte pings pass", (r.stdout[-300:], x3))
    for x, q in ((a, a.quit()), (b, b.quit())):
        t.ok(q.get("mbufs_back") == "yes", f"d: {x.host}: every mbuf back in its pool", q)


def peer_killed(env):
    """A peer killed in the middle of a transfer: the sender's connection fails (its sends are not
    acknowledged), is closed and counted, its frames are dropped and counted, nothing leaks."""
    a = Bridge(env, "Hca1", "mode=connected", "k")
    b = Bridge(env, "Hca2", "mode=connected", "k")
    t.ok(a.up() and b.up(), "k: both ports up")
    r = a.run(f"ping -c 2 -W 5 -s 30000 {IPS['Hca2']}")
    t.ok(r.returncode == 0, "k: A pings B over the connections", r.stdout[-300:])
    flood = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-i", "0.02", "-c", "200", "-s", "30000",
                              IPS["Hca2"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    b.p.kill()  # SIGKILL: no DREQ, no clean-up
    b.p.wait()
    flood.communicate(timeout=60)
    end = time.monotonic() + 10
    while time.monotonic() < end and a.xstats().get("cm_conn_errors", 0) < 1:
        time.sleep(0.5)
    xa = a.xstats()
    t.note(f"k: A after B's death: cm_conn_errors {xa.get('cm_conn_errors')}, tx_cm_packets {xa.get('tx_cm_packets')},"
           f" tx_hca_errors {xa.get('tx_hca_errors')}, tx_unresolved_drops {xa.get('tx_unresolved_drops')}")
    t.ok(xa.get("cm_conn_errors", 0) >= 1,
         "k: B killed mid-transfer: A's connection to it failed and was closed (cm_conn_errors)", xa)
    qa = a.quit()
    t.ok(qa.get("mbufs_back") == "yes", "k: A: every mbuf back in its pool after its peer died", qa)
    b.quit()
    fabric("down", env["IPOIB_FABRIC_DIR"], check=False)  # (B's ibsim client slot is gone with it)


def scenarios(env):
    scenario(env)
    checksum_offload(env, 1)
    checksum_offload(env, 0)
    testpmd_pair(env)
    port_down_in_setup(env)
    peer_killed(env)


def main():
    run_on_fabric(t, fabric, "connected", scenarios, ["--hcas", "3"], running, netns, CWD, timeout_s=600)


if __name__ == "__main__":
    main()
    t.finish()
