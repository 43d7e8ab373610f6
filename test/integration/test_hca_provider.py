#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The HCA provider conformance suite: the same checks against any provider.

Two hca-peer processes, A and B, each with a UD QP, exchange messages through
the provider under test:

  soft:  test_hca_provider.py soft PATH-TO-ipoib-fabric PATH-TO-hca-peer
         A and B on two HCAs of an ibsim fabric managed by OpenSM.
  verbs: test_hca_provider.py verbs DEVICE PATH-TO-hca-peer
         A and B on one rdma-core device (run in the QEMU guest on rxe0:
         test/guest/test_verbs_guest.sh).
  inproc: test_hca_provider.py inproc OPTIONS PATH-TO-hca-peer
         A and B two devices of the in-process HCA, in one hca-peer process
         (their fabric is the process), e.g. OPTIONS link=eth.
  xdp:   test_hca_provider.py xdp [OPTIONS] PATH-TO-hca-peer
         A and B on the two ends of a veth pair, each in a network namespace
         of its own (made and removed here; needs root), RoCE v2 over AF_XDP.
  xdp-rxe: test_hca_provider.py xdp-rxe RXE,NETDEV,XDPDEV,NETNS PATH-TO-hca-peer
         A on the kernel's rdma_rxe device RXE (verbs) over NETDEV, one end of
         a veth pair; B with the xdp provider on the other end XDPDEV, in
         network namespace NETNS (the QEMU guest stage: rxe judges our packets).

What differs between an InfiniBand port and a RoCE port is read from the
port, never assumed: on Ethernet every address carries a GRH and there are
no LIDs. Checked: port attributes, UD both ways with payloads verified,
gather lists, messages of the full MTU, multicast delivered only after
attach (and no more after detach), and drops counted: a message longer than
the receive buffer, a message longer than the MTU, sends to a QP with no
receive buffers posted, a wrong Q_Key; the "QP's own" Q_Key (high bit); and
no send completion lost when a burst is larger than the send CQ.

Multi-queue QPs (the "queues" group), on every provider, by its caps: where
a QP may have several receive queues, an RSS QP with 4 receives 64 IPoIB
IPv4/UDP flows (distinct sources), each on the queue its redirection table
names for the Toeplitz hash this script computes itself (checked against
the RSS specification's values), with that hash in the completion, spread
over more than one queue; set_rss (fields, key, table) is honoured; what is
of no hashed kind (not IP, or a kind not enabled) goes to reta[0]'s queue
without a hash; multicast is spread the same way. Where a QP may have
several send queues, each sends with the QP's one QPN. Where it may have one
of a kind, a QP with two is refused with a message naming the limit. On
every provider: set_rss and receive queue 1 of a one-queue QP are refused,
its queue 0 is reached through post_*_queue, and IPv4/UDP frames to it
arrive intact and unhashed.
"""
import ipaddress
import json
import os
import struct
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Tap  # noqa: E402
from hca_peer_client import HcaPeer, shared_peers  # noqa: E402
from netns import VethPair  # noqa: E402
from roce_frame import roce_frame, send_raw  # noqa: E402

MODE = sys.argv[1]
PEER = os.path.abspath(sys.argv[3])
BCAST_MGID = "ff12:401b:ffff::ffff:ffff"
QKEY = 0x0B1B
t = Tap()
CWD = tempfile.mkdtemp(prefix="hca-provider-test-")
peers = []


cleanups = []


def Peer(name, args, env, netns=None, prefix=()):
    p = HcaPeer(name, (["ip", "netns", "exec", netns] if netns else []) + list(prefix) + [PEER, *args], env, CWD)
    peers.append(p)
    return p


def address(port, qpn, lid_key="lid"):
    """send arguments that reach a peer: LID-routed on InfiniBand, by GID (GRH) on RoCE."""
    a = f"dlid={port[lid_key]} dqpn={qpn}"
    return a + f" dgid={port['gid']}" if port["link_layer"] == "ethernet" else a


def suite(a, b):
    t.ok(a.hello.get("ready") and b.hello.get("ready"), f"both peers open the {MODE} provider", (a.hello, b.hello))
    pa, pb = a("port 1"), b("port 1")
    t.note(f"A: {pa}")
    t.eq((pa["state"], pb["state"]), ("ACTIVE", "ACTIVE"), "port 1 is ACTIVE on both")
    t.ok(pa["mtu"] in (256, 512, 1024, 2048, 4096), f"active MTU is an IB MTU ({pa['mtu']})")
    t.ok(pa["gid"] not in ("", "::") and pb["gid"] not in ("", "::"), "each port has a GID", (pa["gid"], pb["gid"]))
    t.ok(any(k & 0x7FFF == 0x7FFF for _, k in pa["pkeys"]), "the default P_Key is in the table", pa["pkeys"])
    roce = pa["link_layer"] == "ethernet"
    if roce:
        t.ok(pa["lid"] == 0 and pa["gid_index"] > 0 or pa["gid"].startswith("fe80"),
             "RoCE: no LID; the IPoIB GID is a RoCE v2 IPv6 GID", pa)
    else:
        t.ok(pa["lid"] > 0 and pa["sm_lid"] > 0, "InfiniBand: LID and SM LID assigned by the SM", pa)
    mtu = pa["mtu"]

    qa = a(f"qp ua rq=128 qkey={QKEY}")["qpn"]
    qb = b(f"qp ub rq=128 qkey={QKEY}")["qpn"]
    t.ok(qa != qb and 0 < qa < 0xFFFFFF, "UD QPs created (distinct QPNs)", (qa, qb))
    a("post ua n=128")
    b("post ub n=128")
    to_a, to_b = address(pa, qa), address(pb, qb)

    # Unicast both ways, payload checked byte for byte.
    s = a(f"send ua {to_b} qkey={QKEY} size=256 count=50")
    t.eq(s["statuses"], {"success": 50}, "A -> B: 50 sends complete successfully")
    r = b("recv ub count=50 timeout_ms=5000 repost=1")
    t.eq((r["received"], r["bad_payload"], r["src_qps"], r["lens"]), (50, 0, [qa], [256]),
         "B receives all 50 from A's QP, payloads intact")
    if roce:
        t.eq((r["grh"], r["sgids"]), (50, [pa["gid"]]), "RoCE: every receive has a GRH with A's GID as source")
    else:
        t.eq(r["slids"], [pa["lid"]], "B sees A's LID as the source")
    s = b(f"send ub {to_a} qkey={QKEY} size=300 count=40")
    t.eq(s["statuses"], {"success": 40}, "B -> A: 40 sends complete")
    r = a("recv ua count=40 timeout_ms=5000 repost=1")
    t.eq((r["received"], r["bad_payload"], r["src_qps"]), (40, 0, [qb]), "A receives all 40 from B, intact")

    # A gather list of 3 pieces, and a message of the full MTU.
    b(f"send ub {to_a} qkey={QKEY} size=600 count=10 sge=3")
    r = a("recv ua count=10 timeout_ms=5000 repost=1")
    t.eq((r["received"], r["bad_payload"], r["lens"]), (10, 0, [600]), "3-piece gather list arrives as one message")
    s = a(f"send ua {to_b} qkey={QKEY} size={mtu} count=5")
    r = b("recv ub count=5 timeout_ms=5000 repost=1")
    t.eq((s["statuses"], r["received"], r["bad_payload"], r["lens"]), ({"success": 5}, 5, 0, [mtu]),
         f"messages of exactly the MTU ({mtu}) go through")

    # Multicast: nothing before attach; delivered after; nothing after detach.
    mlid = 0 if roce else 0xC000  # the broadcast group OpenSM creates for the default partition
    mc = f"dlid={mlid} dqpn=0xffffff mgid={BCAST_MGID}"
    a(f"send ua {mc} qkey={QKEY} size=200 count=3")
    r = b("recv ub count=1 timeout_ms=500")
    t.eq(r["received"], 0, "B receives no multicast before attaching")
    b(f"attach ub mgid={BCAST_MGID} mlid={mlid}")
    s = a(f"send ua {mc} qkey={QKEY} size=200 count=5")
    r = b("recv ub count=5 timeout_ms=5000 repost=1")
    t.eq((s["statuses"], r["received"], r["bad_payload"], r["grh"], r["sgids"]),
         ({"success": 5}, 5, 0, 5, [pa["gid"]]), "after attach B receives the multicast, with a GRH from A")
    b(f"detach ub mgid={BCAST_MGID} mlid={mlid}")
    a(f"send ua {mc} qkey={QKEY} size=200 count=3")
    r = b("recv ub count=1 timeout_ms=500")
    t.eq(r["received"], 0, "after detach B receives no more multicast")

    # A receive queue whose depth is no power of two, filled again and again in
    # bursts that run across its end: every message arrives, in order, intact.
    qodd = b(f"qp odd rq=5 qkey={QKEY}")["qpn"]
    b("post odd n=5")
    got = []
    for _ in range(6):
        s = a(f"send ua {address(pb, qodd)} qkey={QKEY} size=300 count=3 burst=3")
        r = b("recv odd count=3 timeout_ms=3000 repost=1")
        got.append((s["statuses"].get("success", 0), r["statuses"].get("success", 0), r["bad_payload"]))
    t.eq(got, [(3, 3, 0)] * 6, "bursts of 3 into a 5-deep receive queue, across its end: all arrive intact")

    # Drops, counted. 1: a message longer than the receive buffer.
    qsmall = b("qp small rq=4 bufsize=168")["qpn"]  # room for the GRH + 128 bytes
    b("post small n=4")
    a(f"send ua {address(pb, qsmall)} qkey={QKEY} size=512 count=1")
    r = b("recv small count=1 timeout_ms=3000")
    c = b("counters small")
    t.note(f"too long for the buffer: {r} {c}")
    errors = {k: v for k, v in r["statuses"].items() if k not in ("success", "flushed")}
    # IBA says local length error (the soft HCA, ConnectX); rxe says local QP operation error and
    # moves the QP to the error state (flushing the other buffers).
    t.ok(sum(errors.values()) == 1 and r["statuses"].get("success", 0) == 0,
         "a message longer than the receive buffer completes that buffer in error", r["statuses"])
    t.eq((c["drop_too_long"] + c["rx_errors"], c["rx_packets"]), (1, 0),
         "... and is counted as a receive drop, not as received")

    # 2: a message longer than the MTU.
    c0 = a("counters ua")
    s = a(f"send ua {to_b} qkey={QKEY} size={mtu + 256} count=2")
    c1 = a("counters ua")
    r = b("recv ub count=1 timeout_ms=500 repost=1")
    t.note(f"longer than the MTU: {s} {c1}")
    t.ok(s["statuses"].get("success", 0) == 0 and sum(s["statuses"].values()) == 2,
         f"sends longer than the MTU ({mtu + 256} > {mtu}) fail", s["statuses"])
    t.eq((c1["tx_errors"] - c0["tx_errors"], r["received"]), (2, 0), "... counted as send errors, nothing arrives")

    # 3: a QP with no receive buffers posted.
    qempty = b("qp empty rq=4")["qpn"]
    a(f"send ua {address(pb, qempty)} qkey={QKEY} size=64 count=3")
    r = b("recv empty count=1 timeout_ms=500")
    c = b("counters empty")
    pc = b("pcounters 1")
    t.note(f"no receive buffer: {r} {c} port {pc}")
    t.eq(r["received"], 0, "nothing is delivered to a QP without receive buffers")

    # 4: a wrong Q_Key.
    a(f"send ua {to_b} qkey=0x1234 size=64 count=3")
    r = b("recv ub count=1 timeout_ms=500 repost=1")
    c = b("counters ub")
    t.note(f"wrong Q_Key: {r} {c}")
    t.eq(r["received"], 0, "a message with the wrong Q_Key is not delivered")

    # The Q_Key "of the QP" (high bit set in the work request): B's QP has 0x0b1b.
    a(f"send ua {to_b} qkey=0x80000000 size=64 count=3")
    r = b("recv ub count=3 timeout_ms=3000 repost=1")
    t.eq((r["received"], r["bad_payload"]), (3, 0), "a send with Q_Key 0x80000000 uses the QP's own Q_Key")

    # Counters agree with the traffic.
    ca, cb = a("counters ua"), b("counters ub")
    t.ok(ca["tx_packets"] >= 50 + 5 + 3 + 5 + 3 + 3 and cb["rx_packets"] == 50 + 5 + 5 + 3,
         "QP counters agree with what was sent and received", (ca, cb))

    # A send CQ smaller than a burst: no completion is dropped. The provider takes no more
    # work requests than it can complete (the rest are posted again after polling).
    a("qp cq16 rq=4 cq=16 sq=16")
    qsink = b("qp sink rq=64")["qpn"]
    b("post sink n=64")
    s = a(f"send cq16 {address(pb, qsink)} qkey={QKEY} size=64 count=64 burst=64")
    t.note(f"64 sends in bursts of 64 on a 16-entry CQ: {s}")
    t.ok(0 <= s["first_post"] <= 16, "a burst of 64 on a 16-entry send CQ: the first post takes at most 16",
         s["first_post"])
    t.eq((s["posted"], s["reaped"], s["statuses"]), (64, 64, {"success": 64}),
         "... and every one of the 64 sends completes exactly once")
    r = b("recv sink count=64 timeout_ms=5000")
    t.eq((r["received"], r["bad_payload"]), (64, 0), "... and all 64 arrive")


# Receive-side scaling as the RSS specification defines it (Microsoft, "Verifying the RSS Hash
# Calculation"): this script's own Toeplitz, not the HCA's.
RSS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c"
                        "6a42b73bbeac01fa")
RSS_KEY2 = bytes(range(7, 7 + 40))  # another key, for set_rss
RSS_IPV4, RSS_IPV4_TCP, RSS_IPV4_UDP = 1 << 0, 1 << 1, 1 << 2
RETA_SIZE = 128
EMPTY_RECV = {"received": 0, "bad_payload": 0, "src_qps": [], "hashed": 0, "hashes": [], "flows": []}


def toeplitz(key, data):
    """For every bit set in the input, XOR in the 32 key bits that start at that bit."""
    k, kbits, h = int.from_bytes(key, "big"), len(key) * 8, 0
    for i in range(len(data) * 8):
        if data[i // 8] >> (7 - i % 8) & 1:
            h ^= (k >> (kbits - 32 - i)) & 0xFFFFFFFF
    return h


def flow_hash(flow, ports=True, key=RSS_KEY):
    """The hash of "SRC,DST,SPORT,DPORT": the addresses, then (ports) the ports, in network order."""
    src, dst, sport, dport = flow.split(",")
    data = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    if ports:
        data += struct.pack(">HH", int(sport), int(dport))
    return toeplitz(key, data)


# The specification's verification values under RSS_KEY: source, destination, their ports,
# the hash of the addresses, the hash with the ports.
SPEC_VECTORS = [
    ("66.9.149.187", "161.142.100.80", 2794, 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", "65.69.140.83", 14230, 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", "12.22.207.184", 12898, 38024, 0xD2D0A5DE, 0x5C2B394A),
    ("38.27.205.30", "209.142.163.6", 48228, 2217, 0x82989176, 0xAFC7327F),
    ("153.39.163.191", "202.188.127.2", 44251, 1303, 0x5D1809C5, 0x10E828A2),
    ("3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794, 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", "ff02::1", 14230, 4739, 0x0F0C461C, 0xDDE51BBF),
]


def refused(peer, line):
    """The error a command is answered with ("" if it succeeded)."""
    try:
        peer(line)
    except RuntimeError as e:
        return str(e)
    return ""


def queues(a, b):
    """Multi-queue QPs, by what each device's caps say it offers."""
    wrong = [(s, d) for s, d, sp, dp, h_addr, h_ports in SPEC_VECTORS
             if (flow_hash(f"{s},{d},{sp},{dp}", False), flow_hash(f"{s},{d},{sp},{dp}")) != (h_addr, h_ports)]
    t.eq(wrong, [], "the test's Toeplitz gives the RSS specification's hashes (IPv4, IPv6; with and without ports)")
    ca, cb = a("caps"), b("caps")
    t.note(f"caps: A {ca}, B {cb}")
    t.ok(all(1 <= c[k] <= 16 for c in (ca, cb) for k in ("max_send_queues", "max_recv_queues")),
         "caps: 1..16 send and receive queues per QP", (ca, cb))
    pb = b("port 1")

    # One queue of each kind, on every provider.
    qa = a(f"qp mqa rq=64 qkey={QKEY}")["qpn"]
    qb = b(f"qp mqb rq=64 qkey={QKEY}")["qpn"]
    e = refused(b, "rss mqb fields=1")
    t.ok("returned -95" in e, "set_rss on a QP with one receive queue is refused (EOPNOTSUPP)", e)
    e = refused(b, "post mqb n=1 queue=1")
    t.ok("returned -22" in e, "post_recv_queue(1) on a QP with one receive queue is refused (EINVAL)", e)
    t.eq(b("post mqb n=64 queue=0")["posted"], 64, "post_recv_queue(0) on a one-queue QP posts its buffers")
    flow = "192.0.2.1,198.51.100.7,5000,6000"
    s = a(f"send mqa {address(pb, qb)} qkey={QKEY} size=200 count=4 queue=0 ipv4udp={flow}")
    r = b("recv mqb count=4 timeout_ms=5000 repost=1 queue=0")
    t.eq((s["statuses"], r["received"], r["bad_payload"], r["ipv4udp"], r["flows"], r["hashed"], r["src_qps"]),
         ({"success": 4}, 4, 0, 4, [flow] * 4, 0, [qa]),
         "IPv4/UDP frames sent by post_send_queue(0) to a one-queue QP arrive intact, without an RSS hash")

    # Several receive queues: RSS.
    # (A QP with more than caps allows of a kind: refused, the message naming the limit.)
    nrq = cb["max_recv_queues"]
    e = refused(b, f"qp rxmax rq=16 qkey={QKEY} rxq={nrq + 1}")
    t.note(f"rxq={nrq + 1}: {e}")
    if nrq > 1:
        t.ok("receive queues" in e and f"1..{nrq}" in e,
             f"{nrq} receive queues per QP (caps): a QP with {nrq + 1} is refused, naming the limit 1..{nrq}", e)
        rss_queues(a, b, pb, qa, nrq)
    else:
        t.ok("receive queues" in e and f"1..{nrq}" in e,
             f"one receive queue per QP (caps): a QP with 2 is refused, naming the limit 1..{nrq}", e)

    # Several send queues: all of them send with the QP's number.
    nsq = ca["max_send_queues"]
    e = refused(a, f"qp txmax rq=4 qkey={QKEY} txq={nsq + 1}")
    t.note(f"txq={nsq + 1}: {e}")
    if nsq > 1:
        t.ok("send queues" in e and f"1..{nsq}" in e,
             f"{nsq} send queues per QP (caps): a QP with {nsq + 1} is refused, naming the limit 1..{nsq}", e)
        qt = a(f"qp tx2 rq=4 qkey={QKEY} txq=2")["qpn"]
        s0 = a(f"send tx2 {address(pb, qb)} qkey={QKEY} size=100 count=5 queue=0")
        s1 = a(f"send tx2 {address(pb, qb)} qkey={QKEY} size=120 count=5 queue=1")
        r = b("recv mqb count=10 timeout_ms=5000 repost=1")
        t.eq((s0["statuses"], s1["statuses"], r["received"], r["bad_payload"], r["src_qps"], r["lens"]),
             ({"success": 5}, {"success": 5}, 10, 0, [qt], [100, 120]),
             f"{nsq} send queues per QP (caps): send queues 0 and 1 both send with the QP's one QPN")
        s = a(f"send tx2 {address(pb, qb)} qkey={QKEY} size=100 count=1 queue=2")
        t.eq(s["statuses"], {"post refused": 1}, "... and a send queue the QP does not have is refused")
    else:
        t.ok("send queues" in e and f"1..{nsq}" in e,
             f"one send queue per QP (caps): a QP with 2 is refused, naming the limit 1..{nsq}", e)


def rss_queues(a, b, pb, qa, nrq):
    """An RSS QP of 4 receive queues on B; A's QP mqa sends it IPv4/UDP flows."""
    n = 4
    qr = b(f"qp rss rq=128 qkey={QKEY} rxq={n} rss_fields={RSS_IPV4 | RSS_IPV4_UDP}")["qpn"]
    t.eq([b(f"post rss n=128 queue={q}")["posted"] for q in range(n)], [128] * n,
         f"{nrq} receive queues per QP (caps): an RSS QP with {n} (128 buffers each)")
    e1, e2 = refused(b, f"post rss n=1 queue={n}"), refused(b, f"rss rss reta=0,1,2,{n}")
    t.note(f"queue {n}: {e1}; reta naming {n}: {e2}")
    t.ok("returned -22" in e1, f"... a receive queue it does not have ({n}) is refused (EINVAL)", e1)
    t.ok("returned -22" in e2, f"... and so is a redirection table naming queue {n}", e2)
    to_rss = address(pb, qr)
    # 64 flows, each from a source address of its own.
    flows = [f"10.{1 + i // 32}.{i % 32 * 7 + 1}.{i * 3 % 250 + 2},10.200.0.1,{1024 + 37 * i},{4000 + i % 5}"
             for i in range(64)]

    def send(fl, per_flow, dest=None):
        st = {}
        for f in fl:
            for k, v in a(f"send mqa {dest or to_rss} qkey={QKEY} size=128 count={per_flow} ipv4udp={f}")[
                    "statuses"].items():
                st[k] = st.get(k, 0) + v
        return st

    def collect(want):
        """Each queue's receive completions, then whatever more arrived on each (none, if right)."""
        got = {q: b(f"recv rss count={want[q]} timeout_ms=5000 repost=1 queue={q}") if want[q] else EMPTY_RECV
               for q in range(n)}
        extra = [b(f"recv rss count=1 timeout_ms=100 repost=1 queue={q}")["received"] for q in range(n)]
        return got, extra

    def spread(fl, per_flow, hashed, table, what, key=RSS_KEY, ports=True, dest=None):
        """Send per_flow messages of each flow; check each arrives on queue table[h % 128] with hash h
        (hashed), or with no hash on queue table[0] (not hashed). Returns the per-queue counts."""
        st = send(fl, per_flow, dest)
        want = [0] * n
        for f in fl:
            want[table[flow_hash(f, ports, key) % RETA_SIZE] if hashed else table[0]] += per_flow
        got, extra = collect(want)
        counts = [got[q]["received"] for q in range(n)]
        t.note(f"{what}: per queue {counts}, expected {want}")
        misplaced = [(q, f) for q in range(n) for f in got[q]["flows"]
                     if f is None or q != (table[flow_hash(f, ports, key) % RETA_SIZE] if hashed else table[0])]
        t.eq((st, counts, extra, misplaced), ({"success": len(fl) * per_flow}, want, [0] * n, []),
             f"{what}: every message arrives on " + ("queue reta[h % 128], h the test's own Toeplitz hash"
                                                     if hashed else "reta[0]'s queue"))
        if hashed:
            wrong = [(f, h, flow_hash(f, ports, key)) for q in range(n)
                     for f, h in zip(got[q]["flows"], got[q]["hashes"]) if f is None or h != flow_hash(f, ports, key)]
            t.eq(([got[q]["hashed"] for q in range(n)], wrong), (want, []),
                 f"{what}: each completion has kWcRssHash with that hash")
        else:
            t.eq([got[q]["hashes"] for q in range(n)], [[None] * w for w in want],
                 f"{what}: no completion has kWcRssHash")
        t.eq((sum(got[q]["bad_payload"] for q in range(n)), sorted({s for q in range(n) for s in got[q]["src_qps"]})),
             (0, [qa]), f"{what}: payloads intact, all from A's QP")
        return counts

    default = [i % n for i in range(RETA_SIZE)]
    counts = spread(flows, 2, True, default, "64 UDP flows x 2 (IPv4 addresses and ports, spec key, reta i % 4)")
    t.ok(sum(1 for c in counts if c) > 1, "... the flows spread over more than one queue", counts)

    # Messages that are not IP: reta[0]'s queue, no hash.
    r = [a(f"send mqa {to_rss} qkey={QKEY} size=256 count=10")["statuses"]]
    got, extra = collect([10, 0, 0, 0])
    t.eq((r, [got[q]["received"] for q in range(n)], extra, got[0]["hashed"], got[0]["bad_payload"]),
         ([{"success": 10}], [10, 0, 0, 0], [0] * n, 0, 0),
         "10 messages that are not IP arrive on reta[0]'s queue (0), without kWcRssHash, intact")

    # set_rss: addresses only, another key, another table; then a table sending everything to 2.
    table = [n - 1 - i % n for i in range(RETA_SIZE)]
    b(f"rss rss fields={RSS_IPV4} key={RSS_KEY2.hex()} reta={','.join(map(str, table[:n]))}")
    spread(flows, 1, True, table, "set_rss (IPv4 addresses only, another key, reta 3,2,1,0)", key=RSS_KEY2,
           ports=False)
    r = [a(f"send mqa {to_rss} qkey={QKEY} size=256 count=10")["statuses"]]
    got, extra = collect([0, 0, 0, 10])
    t.eq((r, [got[q]["received"] for q in range(n)], extra, got[3]["hashed"], got[3]["bad_payload"]),
         ([{"success": 10}], [0, 0, 0, 10], [0] * n, 0, 0),
         "after set_rss, messages that are not IP arrive on the new reta[0]'s queue (3), without kWcRssHash")
    b(f"rss rss fields={RSS_IPV4_TCP} key={RSS_KEY.hex()} reta=2")
    spread(flows[:16], 1, False, [2] * RETA_SIZE,
           "set_rss TCP over IPv4 only, reta all 2: 16 UDP flows (a kind not hashed)")
    b(f"rss rss fields={RSS_IPV4 | RSS_IPV4_UDP} reta={','.join(map(str, default[:n]))}")

    # Multicast (InfiniBand: the broadcast group OpenSM made; RoCE: no LID) is spread the same way.
    mlid = 0 if pb["link_layer"] == "ethernet" else 0xC000
    b(f"attach rss mgid={BCAST_MGID} mlid={mlid}")
    spread(flows[:32], 1, True, default, "32 UDP flows to the broadcast group the RSS QP joined",
           dest=f"dlid={mlid} dqpn=0xffffff mgid={BCAST_MGID}")
    b(f"detach rss mgid={BCAST_MGID} mlid={mlid}")


def injected(a, b, a_ns, a_dev, b_ns, b_dev, xdp_counters):
    """Frames written by a raw socket on B's device to A's QP: the ICRC computed here is accepted
    (A receives the frame, from the QPN it names); frames with a wrong ICRC are not delivered
    (xdp_counters: A, the xdp provider, counts them as bad ICRC). ns: a namespace name or None."""
    def run(ns, *cmd, **kw):
        return subprocess.run((["ip", "netns", "exec", ns] if ns else []) + list(cmd), **kw)

    def mac(ns, dev):
        return bytes.fromhex(run(ns, "cat", f"/sys/class/net/{dev}/address", capture_output=True,
                                 text=True).stdout.strip().replace(":", ""))

    pa = a("port 1")
    qa = a(f"qp inj rq=8 qkey={QKEY}")["qpn"]
    a("post inj n=8")
    sgid = ipaddress.ip_address(b("port 1")["gid"]).packed
    dgid = ipaddress.ip_address(pa["gid"]).packed
    seq = 0x5EED  # hca-peer's pattern (a little-endian sequence number, then (seq + i) & 0xff): recv checks it
    payload = struct.pack("<I", seq) + bytes((seq + i) & 0xFF for i in range(4, 201))
    mac_a, mac_b = mac(a_ns, a_dev), mac(b_ns, b_dev)
    good = roce_frame(mac_b, mac_a, sgid, dgid, qa, 0x123, QKEY, payload)
    bad = roce_frame(mac_b, mac_a, sgid, dgid, qa, 0x123, QKEY, payload, corrupt_icrc=True)
    c0 = a("pcounters 1")
    send_raw(b_ns, b_dev, [bad, good, bad])
    r = a("recv inj count=3 timeout_ms=3000")
    c1 = a("pcounters 1")
    t.note(f"injected: {r['statuses']} lens {r['lens']} src_qps {r['src_qps']}; port {c1}")
    t.eq((r["received"], r["lens"], r["src_qps"], r["bad_payload"]), (1, [201], [0x123], 0),
         "a RoCE v2 frame whose ICRC this test computed itself (zlib) is accepted, from the QPN it names, intact; "
         "the two with a wrong ICRC around it are not delivered")
    if xdp_counters:
        t.eq((c1["rx_bad_icrc"] - c0["rx_bad_icrc"], c1["rx_packets"] - c0["rx_packets"]), (2, 1),
             "the two frames with a wrong ICRC are counted as bad ICRC, not as received")


def shared_device(required):
    """Two processes on each end of a veth pair of 2 queues, each bound to a queue of its own, their
    XDP programs side by side under libxdp's dispatcher (a bpffs of the test's own, LIBXDP_BPFFS):
    A0 and B0 on queue 0, A1 and B1 on queue 1. What Ai sends leaves on queue i and arrives on
    the peer's queue i: Bi receives it, Bj does not. Where the kernel refuses libxdp's dispatcher
    (its freplace programs: this machine's kernel), a second program cannot be attached; the
    provider must then say so, and unless `required` (the guest's Debian kernel) the rest is
    not run."""
    veth = VethPair(tag=f"q{os.getpid() % 10000}", queues=2)
    bpffs = os.path.join(CWD, "bpffs")
    os.makedirs(bpffs, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "bpf", "bpf", bpffs]).returncode == 0
    try:
        env = dict(os.environ, LIBXDP_BPFFS=bpffs)
        a = [Peer(f"A{q}", ["xdp", f"queue={q}", veth.devs[0]], env, veth.names[0]) for q in (0, 1)]
        why = a[1].hello.get("error", "")
        if not required and "libxdp cannot run several side by side here" in why:
            t.note(f"two processes per device: not run, this kernel refuses libxdp's dispatcher: {why}")
            t.ok("another XDP program is on the device" in why and "Device or resource busy" in why,
                 "without libxdp's dispatcher, a second process on the device is refused with the reason", why)
            return
        b = [Peer(f"B{q}", ["xdp", f"queue={q}", veth.devs[1]], env, veth.names[1]) for q in (0, 1)]
        t.ok(mounted and all(p.hello.get("ready") for p in a + b),
             "four processes open the xdp provider, two per device, on queues 0 and 1 (libxdp's dispatcher)",
             [p.hello for p in a + b])
        pb = [p("port 1") for p in b]
        qa = [p(f"qp s rq=64 qkey={QKEY}")["qpn"] for p in a]
        qb = [p(f"qp s rq=64 qkey={QKEY}")["qpn"] for p in b]
        for p in a + b:
            p("post s n=64")
        t.ok(len(set(qa + qb)) == 4, "four distinct QPNs", qa + qb)
        for q in (0, 1):
            s = a[q](f"send s {address(pb[q], qb[q])} qkey={QKEY} size=300 count=20")
            r = b[q]("recv s count=20 timeout_ms=5000 repost=1")
            other = b[1 - q]("recv s count=1 timeout_ms=300 repost=1")
            t.eq((s["statuses"], r["received"], r["bad_payload"], r["src_qps"], other["received"]),
                 ({"success": 20}, 20, 0, [qa[q]], 0),
                 f"A{q} -> B{q} on queue {q}: all 20 arrive, intact, from A{q}; B{1 - q} gets none")
        # A0 to B1's QPN: it arrives on queue 0, where B1 has no socket. B1's program passes it on
        # (its socket map has no queue-0 entry): the kernel's, not B0's, whose QPNs differ.
        a[0](f"send s {address(pb[1], qb[1])} qkey={QKEY} size=100 count=5")
        r1 = b[1]("recv s count=1 timeout_ms=500 repost=1")
        r0 = b[0]("recv s count=1 timeout_ms=300 repost=1")
        t.eq((r1["received"], r0["received"]), (0, 0),
             "a packet for B1's QPN arriving on queue 0 reaches neither (the limit: a process gets what "
             "arrives on its queue)")
        for p in a + b:
            p.kill()
    finally:
        veth.remove()
        if mounted:
            subprocess.run(["umount", bpffs], check=False)


def unprivileged(netns):
    """hca-peer as nobody: opening the device fails and says which capabilities it needs."""
    p = Peer("N", ["xdp", "", netns.devs[0]], dict(os.environ), netns.names[0],
             prefix=["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
    why = p.hello.get("error", "")
    t.ok("CAP_NET_ADMIN" in why and "CAP_BPF" in why and "run as root" in why,
         "as an unprivileged user, opening an xdp device fails naming the capabilities it needs", p.hello)
    p.kill()


def main():
    env = None
    fabric = None
    try:
        if MODE == "soft":
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from fabric_client import Fabric, client_env  # noqa: E402
            fabric = Fabric(os.path.abspath(sys.argv[2]), CWD)
            env = json.loads(fabric("up", "--format", "json", "--hcas", "2", "--owner", str(os.getpid())).stdout)
            a = Peer("A", ["soft"], client_env(env, "Hca1"))
            b = Peer("B", ["soft"], client_env(env, "Hca2"))
        elif MODE == "inproc":
            proc, (a, b) = shared_peers([PEER, "inproc", sys.argv[2]], ["A", "B"], dict(os.environ), CWD)
            peers.append(proc)
        elif MODE == "xdp-rxe":
            # A: the verbs provider on an rxe device; B: the xdp provider on the other end of
            # its netdev's veth pair, in a network namespace (the guest stage sets them up).
            rxe, rxe_netdev, xdp_dev, xdp_ns = sys.argv[2].split(",")
            a = Peer("A", ["verbs", "", rxe], dict(os.environ))
            b = Peer("B", ["xdp", "", xdp_dev], dict(os.environ), xdp_ns)
        elif MODE == "xdp":
            netns = VethPair()
            cleanups.append(netns.remove)
            a = Peer("A", ["xdp", sys.argv[2], netns.devs[0]], dict(os.environ), netns.names[0])
            b = Peer("B", ["xdp", sys.argv[2], netns.devs[1]], dict(os.environ), netns.names[1])
        else:
            a = Peer("A", ["verbs", "", sys.argv[2]], dict(os.environ))
            b = Peer("B", ["verbs", "", sys.argv[2]], dict(os.environ))
        t.run(f"provider {MODE}", suite, a, b)
        t.run(f"provider {MODE}, queues", queues, a, b)
        if MODE == "xdp":
            t.run("provider xdp, frames from a raw socket", injected, a, b, netns.names[0], netns.devs[0],
                  netns.names[1], netns.devs[1], True)
            t.run("provider xdp, two processes per device", shared_device, False)
            t.run("provider xdp, without privileges", unprivileged, netns)
        elif MODE == "xdp-rxe":
            t.run("rxe and xdp, frames from a raw socket to rxe", injected, a, b, None, rxe_netdev, xdp_ns,
                  xdp_dev, False)
            t.run("provider xdp, two processes per device", shared_device, True)
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"set-up for the {MODE} provider", e)
    finally:
        for p in peers:
            p.kill()
        for c in cleanups:
            c()
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
