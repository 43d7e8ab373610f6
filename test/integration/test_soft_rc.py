#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Reliable connections in the software HCA (rc.hpp: SRQ, RC QPs) and its
GSI mailboxes for CM MADs, between hca-peer processes on OpenSM + ibsim.

RC QPs are connected by hand here (QPNs and PSNs exchanged through the test,
as the CM would): messages of 1, 2044 and 65524 bytes both ways with their
payloads verified, in order; an SRQ shared by two RC QPs; RNR with
rnr_retry 0 and 7; a receive too short; a peer killed; set_error. The
capture is decoded with tshark: RC SEND FIRST/MIDDLE/LAST/ONLY cut at the
path MTU with PSNs from connect()'s, and a CM REQ carried as a UD SEND to
QP1; ICRC/VCRC recomputed here.

usage: test_soft_rc.py PATH-TO-ipoib-fabric PATH-TO-hca-peer
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fabric_client import Fabric, client_env  # noqa: E402
from tap import Tap  # noqa: E402
from hca_peer_client import HcaPeer  # noqa: E402

FABRIC = os.path.abspath(sys.argv[1])
PEER = os.path.abspath(sys.argv[2])
t = Tap()
CWD = tempfile.mkdtemp(prefix="soft-rc-test-")
CAPTURE = os.path.join(CWD, "rc.pcap")
TSHARK_DLT = 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""'

peers = []


def eq(got, want, name, detail=""):
    """Tap.eq with what else explains a failure."""
    return t.ok(got == want, name, f"got:  {got!r}\nwant: {want!r}\n{detail}")


class Peer(HcaPeer):
    def __init__(self, env, host, options=""):
        super().__init__(host, [PEER, "soft"] + ([options] if options else []), client_env(env, host), CWD, 10)

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


def peer(env, host, options=""):
    p = Peer(env, host, options)
    peers.append(p)
    return p


fabric = Fabric(FABRIC, CWD)


def connect(x, xname, xlid, xqpn, y, yname, ylid, yqpn, psn_x=0x1000, psn_y=0x2000, **kw):
    extra = " ".join(f"{k}={v}" for k, v in kw.items())
    x(f"rcconnect {xname} dlid={ylid} dqpn={yqpn} lpsn={psn_x} rpsn={psn_y} {extra}")
    y(f"rcconnect {yname} dlid={xlid} dqpn={xqpn} lpsn={psn_y} rpsn={psn_x} {extra}")


def run(env):
    a = peer(env, "Hca1", f"capture={CAPTURE}")
    b = peer(env, "Hca2", f"capture={CAPTURE}")
    la, lb = a("port 1")["lid"], b("port 1")["lid"]

    # ---- a connection, each QP with its own receive queue of 33 x 2 KB buffers ----
    qa = a("rcqp ra n=16 sge=33 size=2048")["qpn"]
    qb = b("rcqp rb n=16 sge=33 size=2048")["qpn"]
    a.send("rcsend ra size=1 count=1")
    r = a.read()
    t.ok("not connected" in r.get("error", ""), "post_send before connect() is refused (-EINVAL)", r)
    connect(a, "ra", la, qa, b, "rb", lb, qb, psn_x=0x123456, psn_y=0xfffff0, mtu=2048)
    eq(a("rcstate ra")["state"], "RTS", "connect() takes the QP to RTS")
    for size in (1, 2044, 65524):
        for (x, xn, y, yn, xq, xl) in ((a, "ra", b, "rb", qa, la), (b, "rb", a, "ra", qb, lb)):
            r = x(f"rcsend {xn} size={size} count=8 sge=3")
            eq(r["statuses"], {"success": 8}, f"{size} B x 8 {xn}->{yn}: sends complete", r)
            got = y(f"rcrecv {yn} count=8 timeout_ms=3000 repost=1")
            eq((got["received"], got["bad_payload"], got["lens"], got["statuses"]),
                 (8, 0, [size], {"success": 8}), f"{size} B {xn}->{yn}: 8 received, payloads intact", got)
            if size >= 4:
                s = got["seqs"]
                t.ok(s == sorted(s) and len(set(s)) == 8 and s[-1] - s[0] == 7, f"{size} B {xn}->{yn}: in order", s)
            eq((got["src_qps"], got["qp_nums"], got["slids"]), ([xq], [qa if yn == "ra" else qb], [xl]),
                 f"{size} B {xn}->{yn}: src_qp, slid the sender's; qp_num the receiving QP")
    c = a("rccounters ra")
    eq((c["tx_packets"], c["rx_packets"]), (24, 24), "QP counters: 24 messages each way", c)
    eq(c["tx_bytes"], 8 * (1 + 2044 + 65524), "QP counters: bytes sent")

    # Too long: 33 x 2048 = 67584 bytes of receive; 67585 is one too many.
    r = a("rcsend ra size=67585 count=2")
    eq((r["statuses"], r["state"]), ({"general error": 1, "flushed": 1}, "ERR"),
         "a message longer than the receive: the send fails (remote operation error), the next is flushed, QP ERR", r)
    got = b("rcrecv rb count=1 timeout_ms=2000 repost=1")
    eq(got["statuses"], {"local length error": 1}, "the receiver gets a local length error", got)
    eq(b("rccounters rb")["drop_too_long"], 1, "counted as drop_too_long on the receiving QP")
    r = a("rcsend ra size=64 count=3")
    eq(r["statuses"], {"flushed": 3}, "posts to a QP in ERR complete flushed", r)
    r = b("rcsend rb size=64 count=1")
    eq((r["statuses"], r["state"]), ({"transport retries exceeded (peer gone)": 1}, "ERR"),
         "the peer of a QP in ERR: retry_exc_err, to ERR", r)

    # ---- an SRQ shared by two RC QPs (A side), two senders on B ----
    a("srq sa n=64 sge=2 size=2048")
    q1 = a("rcqp s1 srq=sa")["qpn"]
    q2 = a("rcqp s2 srq=sa")["qpn"]
    p1 = b("rcqp t1 n=4")["qpn"]
    p2 = b("rcqp t2 n=4")["qpn"]
    connect(a, "s1", la, q1, b, "t1", lb, p1)
    connect(a, "s2", la, q2, b, "t2", lb, p2)
    r1 = b("rcsend t1 size=3000 count=10")
    r2 = b("rcsend t2 size=4000 count=10 sge=2")
    eq((r1["statuses"], r2["statuses"]), ({"success": 10}, {"success": 10}), "both QPs send 10 through the SRQ")
    got = a("rcrecv sa count=20 timeout_ms=3000 repost=1")
    eq((got["received"], got["bad_payload"], got["lens"], sorted(got["src_qps"]), sorted(got["qp_nums"])),
         (20, 0, [3000, 4000], sorted([p1, p2]), sorted([q1, q2])),
         "the SRQ's CQ: 20 messages, each from its sender to its QP", got)

    # ---- RNR ----
    # rnr_retry 0: the first message without a receive fails at once.
    n0 = b("rcqp n0 n=1")["qpn"]
    m0 = a("rcqp m0 n=1")["qpn"]
    connect(a, "m0", la, m0, b, "n0", lb, n0, rnr_retry=0, min_rnr=1)
    r = a("rcsend m0 size=100 count=3")
    eq((r["statuses"], r["state"]), ({"success": 1, "RNR retries exceeded (peer has no receive posted)": 1, "flushed": 1}, "ERR"),
         "rnr_retry 0: one receive posted, the second message is rnr_retry_exc_err, QP ERR", r)
    eq(b("rccounters n0")["drop_no_buffer"], 1, "the RNR counted as drop_no_buffer at the receiver")
    # rnr_retry 3 with the peer's timer 14 (1.28 ms): gives up after about 4 ms.
    n3 = b("rcqp n3 n=1")["qpn"]
    m3 = a("rcqp m3 n=1")["qpn"]
    connect(a, "m3", la, m3, b, "n3", lb, n3, rnr_retry=3, min_rnr=14)
    start = time.monotonic()
    r = a("rcsend m3 size=100 count=2 timeout_ms=3000")
    eq((r["statuses"], r["state"]), ({"success": 1, "RNR retries exceeded (peer has no receive posted)": 1}, "ERR"),
         "rnr_retry 3: retried while polling, then rnr_retry_exc_err", r)
    t.ok(time.monotonic() - start < 2.5, "... within the retry time, not the test's timeout")
    # rnr_retry 7: waits for good, delivered once the receiver posts again, in order.
    n7 = b("rcqp n7 n=2")["qpn"]
    m7 = a("rcqp m7 n=2")["qpn"]
    connect(a, "m7", la, m7, b, "n7", lb, n7, rnr_retry=7, min_rnr=1)
    r = a("rcsend m7 size=500 count=6 timeout_ms=300")
    eq((r["completed"], r["statuses"], r["state"]), (2, {"success": 2}, "RTS"),
         "rnr_retry 7: two delivered, four wait (RTS)", r)
    # The receiver reposts each buffer it reaps (two at a time); the sender's
    # polls retry the waiting sends: alternate until all six are through.
    seqs, done, bad = [], {}, 0
    for _ in range(6):
        got = b("rcrecv n7 count=6 timeout_ms=200 repost=1")
        seqs += got["seqs"]
        bad += got["bad_payload"]
        r = a("rcpoll m7 count=4 timeout_ms=200")
        for k, v in r["statuses"].items():
            done[k] = done.get(k, 0) + v
        if len(seqs) == 6:
            break
    eq((done, len(seqs), bad), ({"success": 4}, 6, 0), "... the waiting four complete as the receiver reposts")
    t.ok(seqs == sorted(seqs) and seqs[-1] - seqs[0] == 5, "... all six in order", seqs)

    # ---- set_error ----
    e1 = a("rcqp e1 n=8")["qpn"]
    f1 = b("rcqp f1 n=8")["qpn"]
    connect(a, "e1", la, e1, b, "f1", lb, f1)
    eq(a("rcerror e1")["state"], "ERR", "set_error: ERR")
    got = a("rcrecv e1 count=8 timeout_ms=1000")
    eq(got["statuses"], {"flushed": 8}, "set_error: the 8 posted receives complete flushed", got)
    eq(a("rcsend e1 size=10 count=2")["statuses"], {"flushed": 2}, "set_error: later sends flushed")
    r = b("rcsend f1 size=10 count=1")
    eq((r["statuses"], r["state"]), ({"transport retries exceeded (peer gone)": 1}, "ERR"),
         "the peer of a QP set to ERR: retry_exc_err", r)

    # ---- CM MADs through the GSI mailboxes, captured as UD to QP1 ----
    r = a(f"madsend dlid={lb} service_id=0x1000000000000048")
    eq(r["sent"], 1, "a CM REQ MAD goes into Hca2's mailbox", r)
    got = b("madrecv timeout_ms=2000")
    eq((got.get("got"), got.get("slid"), got.get("qpn"), got.get("class"), got.get("attr"), got.get("service_id")),
         (1, la, 1, 7, 0x10, 0x1000000000000048), "Hca2 takes it: from Hca1's LID and QP1, CM REQ, service ID", got)
    eq(b("madrecv timeout_ms=50")["got"], 0, "one MAD sent, one taken")
    eq(a("madsend dlid=999")["rc"], -113, "a LID no port has: EHOSTUNREACH")

    # ---- the CM engine over the GSI mailboxes: a connection set up by REQ/REP/RTU, torn down by DREQ/DREP ----
    sid = 0x1000000000000000 | qb
    a("cm open")
    b("cm open")
    a.send("cm open")
    r = a.read()
    t.ok("already has a connection manager" in r.get("error", ""), "open_cm: one CM per port", r)
    b(f"cm listen sid={sid}")
    ca = a("rcqp ca n=8 sge=32 size=2048")["qpn"]
    rid = a(f"cm req ca dlid={lb} sid={sid} psn=0x111")["id"]
    ev = b("cm event timeout_ms=3000")
    eq((ev["type"], ev["service_id"], ev["remote_qpn"], ev["psn"], ev["dlid"], ev["pd"][:8]),
       ("REQ received", sid, ca, 0x111, la, "deadbeef"),
       "Hca2's CM: REQ received with the service ID, Hca1's QPN, PSN, LID and private data", ev)
    cb = b("rcqp cb n=8 sge=32 size=2048")["qpn"]
    b(f"rcconnect cb dlid={la} dqpn={ca} rpsn=0x111 lpsn=0x222")
    b(f"cm rep cb id={ev['id']} psn=0x222")
    ev2 = a("cm event timeout_ms=3000")
    eq((ev2["type"], ev2["id"], ev2["remote_qpn"], ev2["psn"]), ("REP received", rid, cb, 0x222),
       "Hca1's CM: REP received with Hca2's QPN and PSN", ev2)
    a(f"rcconnect ca dlid={lb} dqpn={cb} rpsn=0x222 lpsn=0x111")
    a(f"cm rtu id={rid}")
    ev3 = b("cm event timeout_ms=3000")
    eq(ev3["type"], "RTU received", "Hca2's CM: RTU received (established)", ev3)
    r = a("rcsend ca size=65524 count=4 sge=34")
    got = b("rcrecv cb count=4 timeout_ms=3000 repost=1")
    eq((r["statuses"], got["received"], got["bad_payload"], got["lens"]), ({"success": 4}, 4, 0, [65524]),
       "over the connection the CM set up: 4 x 65524 B gathered from 34 pieces each, intact", (r, got))
    a(f"cm dreq id={rid}")
    ev4 = b("cm event timeout_ms=3000")
    eq(ev4["type"], "DREQ received", "Hca2's CM: DREQ received", ev4)
    b("rcerror cb")
    b(f"cm drep id={ev4['id']}")
    ev5 = a("cm event timeout_ms=3000")
    eq(ev5["type"], "DREP received", "Hca1's CM: DREP received", ev5)
    r = a("rcsend ca size=10 count=1")
    eq((r["statuses"], r["state"]), ({"transport retries exceeded (peer gone)": 1}, "ERR"),
       "after the disconnect (peer QP in ERR): retry_exc_err", r)
    c = a("cm counters")
    t.ok(c["mads_sent"] >= 3 and c["send_errors"] == 0, "Hca1's CM sent REQ, RTU, DREQ without transport errors", c)

    # ---- a peer killed: retry_exc_err and ERR ----
    c = peer(env, "Hca3")
    lc = c("port 1")["lid"]
    k1 = c("rcqp k1 n=8")["qpn"]
    g1 = a("rcqp g1 n=8")["qpn"]
    connect(a, "g1", la, g1, c, "k1", lc, k1)
    eq(a("rcsend g1 size=100 count=2")["statuses"], {"success": 2}, "to Hca3 while it lives")
    c.p.send_signal(signal.SIGKILL)
    c.p.wait()
    time.sleep(0.01)
    r = a("rcsend g1 size=100 count=3")
    eq((r["statuses"], r["state"]), ({"transport retries exceeded (peer gone)": 1, "flushed": 2}, "ERR"),
         "peer process killed: retry_exc_err, the rest flushed, QP ERR", r)

    for p in (a, b):
        p.close()
    check_capture(la, lb, qa, qb)


def check_capture(la, lb, qa, qb):
    out = subprocess.run(["tshark", "-o", TSHARK_DLT, "-r", CAPTURE, "-T", "fields",
                          "-e", "infiniband.lrh.dlid", "-e", "infiniband.lrh.slid", "-e", "infiniband.bth.opcode",
                          "-e", "infiniband.bth.destqp", "-e", "infiniband.bth.psn", "-e", "infiniband.bth.a",
                          "-e", "infiniband.deth.q_key", "-e", "infiniband.mad.mgmtclass",
                          "-e", "infiniband.cm.req.serviceid", "-e", "frame.len", "-e", "infiniband.mad.attributeid"],
                         capture_output=True, text=True, timeout=60)
    rows = [r.split("\t") for r in out.stdout.strip().splitlines()]
    t.ok(len(rows) > 100, "tshark decodes the capture", out.stderr[-500:])
    # A->B: 8 x 1 B (ONLY), 8 x 2044 (ONLY), 8 x 65524 (FIRST, 30 MIDDLE, LAST at MTU 2048), PSNs from 0x123456.
    ab = [r for r in rows if r[2] in ("0", "1", "2", "4") and int(r[3], 0) == qb and int(r[1]) == la]
    ops = [int(r[2]) for r in ab]
    psns = [int(r[4]) for r in ab]
    want_ops = [4] * 16 + ([0] + [1] * 30 + [2]) * 8
    eq(ops[:len(want_ops)], want_ops, "A->B: RC SEND ONLY for 1 B and 2044 B, FIRST/MIDDLE x30/LAST for 65524 B")
    eq(psns[:len(want_ops)], [(0x123456 + i) & 0xffffff for i in range(len(want_ops))],
         "A->B: PSNs increment from connect()'s local PSN, one per packet")
    ba = [r for r in rows if r[2] in ("0", "1", "2", "4") and int(r[3], 0) == qa and int(r[1]) == lb]
    eq([int(r[4]) for r in ba[:3]], [0xfffff0, 0xfffff1, 0xfffff2], "B->A: PSNs from B's local PSN")
    t.ok(all(r[5] in ("1", "True") for r in ab[:16]), "AckReq set on ONLY packets", ab[:2])
    t.ok(all(int(r[9]) <= 8 + 12 + 2048 + 6 for r in ab), "no packet longer than the path MTU plus headers")
    mad = [r for r in rows if r[2] == "100" and int(r[3], 0) == 1]
    t.ok(mad and int(mad[0][6], 0) == 0x80010000 and mad[0][7] in ("7", "0x07") and
         mad[0][8] and int(mad[0][8], 0) == 0x1000000000000048,
         "the CM REQ: UD SEND to QP1, Q_Key 0x80010000, class 7, service ID decoded", mad[:1])
    attrs = {int(r[10], 0) for r in mad if len(r) > 10 and r[10]}
    eq(attrs >= {0x10, 0x13, 0x14, 0x15, 0x16}, True,
       "the CM engine's REQ, REP, RTU, DREQ, DREP are on the capture as MADs to QP1", sorted(attrs))
    # The CRCs, recomputed independently (zlib for the ICRC, a bitwise CRC-16 for the VCRC).
    with open(CAPTURE, "rb") as f:
        data = f.read()
    off, n, bad_i, bad_v = 24, 0, 0, 0
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        n += 1
        body = bytearray(pkt[:-6])
        grh = (body[1] & 3) == 3
        masked = bytearray(b"\xff" * 8) + body[8:]
        if grh:
            masked[8] |= 0x0f
            masked[9:12] = b"\xff\xff\xff"
            masked[15] = 0xff
        masked[8 + (40 if grh else 0) + 4] = 0xff
        if (zlib.crc32(bytes(masked)) & 0xffffffff).to_bytes(4, "little") != pkt[-6:-2]:
            bad_i += 1
        crc = 0xffff
        for byte in pkt[:-2]:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xd008 if crc & 1 else crc >> 1
        if ((~crc) & 0xffff).to_bytes(2, "little") != pkt[-2:]:
            bad_v += 1
    t.ok(n == len(rows), "every pcap record is one decoded packet", f"{n} records, {len(rows)} rows")
    eq((bad_i, bad_v), (0, 0), f"ICRC and VCRC correct in all {n} captured packets")


def main():
    env = None
    try:
        args = ["up", "--format", "json", "--hcas", "3", "--owner", str(os.getpid())]
        env = json.loads(fabric(*args).stdout)
        t.run("software HCA reliable connections", run, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "fabric for the RC test", e)
    finally:
        for p in peers:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()
        if env:
            sock = env["IBSIM_SOCKNAME"]
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
            left = [n for n in os.listdir("/dev/shm") if n.startswith("ipoibsoft." + sock)]
            eq(left, [], "no shared memory of the fabric is left after teardown")
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
