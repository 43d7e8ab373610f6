#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Integration test of the software HCA (lib/hca, provider "soft").

OpenSM on ibsim manages the fabric (app/ipoib-fabric); one hca-peer process
per simulated HCA, each under umad2sim, exchanges UD messages through the
software HCA's shared memory. Identity and port state are cross-checked with
infiniband-diags; the capture is decoded with tshark and its CRCs recomputed
here with Python's zlib, independently of the C++ code that wrote them.

usage: test_soft_hca.py PATH-TO-ipoib-fabric PATH-TO-hca-peer
"""
import json
import os
import re
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
BCAST_MGID = "ff12:401b:ffff::ffff:ffff"
t = Tap()
CWD = tempfile.mkdtemp(prefix="soft-hca-test-")
CAPTURE = os.path.join(CWD, "fabric.pcap")
# ibsim numbers GUIDs in topology order: SmHca port 0x100001, then Hca1 0x100003, Hca2 0x100005, Hca3 0x100007.
GUID = {"Hca1": 0x100003, "Hca2": 0x100005, "Hca3": 0x100007}
PARTITIONS = [
    "p1=0x8001, ipoib, mtu=4 : ALL=full;",
    "p2=0x0002, ipoib, mtu=4 : ALL=limited;",  # everyone limited: nobody may talk
    f"p3=0x8003, ipoib, mtu=4 : 0x{GUID['Hca1']:016x}=full;",  # only Hca1
]


class Peer(HcaPeer):
    def __init__(self, env, host, options="", provider="soft"):
        super().__init__(host, [PEER, provider] + ([options] if options else []), client_env(env, host), CWD, 10)
        self.host = host

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


peers = []


def peer(env, host, options="", provider="soft"):
    p = Peer(env, host, options, provider)
    peers.append(p)
    return p


fabric = Fabric(FABRIC, CWD)
diag = fabric.diag


def pkey_index(port, pkey):
    for idx, key in port["pkeys"]:
        if key == pkey:
            return idx
    raise RuntimeError(f"P_Key {pkey:#x} not in table {port['pkeys']}")


# ---------------------------------------------------------------------------

def run(env):
    a = peer(env, "Hca1", f"capture={CAPTURE}")
    b = peer(env, "Hca2", f"capture={CAPTURE}")
    c = peer(env, "Hca3")
    t.ok(a.hello.get("ready") and b.hello.get("ready"), "peers open the soft HCA on Hca1 and Hca2", a.hello)

    # Identity from the managed fabric, as the diags see it.
    pa, pb, pc = a("port 1"), b("port 1"), c("port 1")
    st = diag(env, "Hca1", "ibstat")
    lid = int(re.search(r"Base lid: (\d+)", st).group(1))
    sm_lid = int(re.search(r"SM lid: (\d+)", st).group(1))
    t.eq(pa["state"], "ACTIVE", "Hca1 port is ACTIVE")
    t.eq(pa["lid"], lid, "Hca1 LID is the one ibstat shows")
    t.eq(pa["sm_lid"], sm_lid, "Hca1 SM LID is the one ibstat shows")
    t.eq(pa["guid"], GUID["Hca1"], "Hca1 port GUID read by SMP")
    t.eq(pa["gid"], "fe80::10:3", "Hca1 GID is subnet prefix + port GUID")
    t.eq(pa["mtu"], 2048, "active MTU 2048 from PortInfo")
    keys_a = {k for _, k in pa["pkeys"]}
    keys_b = {k for _, k in pb["pkeys"]}
    t.ok({0xffff, 0x8001, 0x0002, 0x8003} <= keys_a, "Hca1 P_Key table from OpenSM", pa["pkeys"])
    t.ok(0x8003 not in keys_b and 0x0002 in keys_b, "Hca2 lacks p3 and is a limited member of p2", pb["pkeys"])

    # Unicast both ways.
    qa = a("qp ua rq=256")["qpn"]
    qb = b("qp ub rq=256")["qpn"]
    a("post ua n=256")
    b("post ub n=256")
    r = b(f"send ub dlid={pa['lid']} dqpn={qa} size=100 count=20")
    t.eq(r["statuses"], {"success": 20}, "20 sends B->A complete")
    r = a("recv ua count=20 timeout_ms=2000")
    t.eq(r["received"], 20, "A receives 20 messages")
    t.eq(r["bad_payload"], 0, "payloads arrive intact")
    t.eq((r["src_qps"], r["slids"], r["lens"]), ([qb], [pb["lid"]], [100]),
         "completions carry source QPN, SLID and length")
    t.eq(r["grh"], 0, "unicast without GRH has no GRH flag")
    a(f"send ua dlid={pb['lid']} dqpn={qb} size=1500 count=20 sge=3")
    r = b("recv ub count=20 timeout_ms=2000")
    t.eq((r["received"], r["bad_payload"], r["lens"]), (20, 0, [1500]), "A->B with 3-entry gather lists")

    # MTU: 2048 goes, 2049 is refused at send.
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=2048 count=1")
    r = a("recv ua count=1 timeout_ms=1000")
    t.eq((r["received"], r["lens"]), (1, [2048]), "a 2048-byte message (the MTU) arrives")
    before = b("pcounters 1")["tx_mtu_exceeded"]
    r = b(f"send ub dlid={pa['lid']} dqpn={qa} size=2049 count=1")
    t.eq(r["statuses"], {"local length error": 1}, "2049 bytes: local length error at send")
    t.eq(b("pcounters 1")["tx_mtu_exceeded"], before + 1, "MTU refusal counted on the sending port")
    t.eq(a("recv ua count=1 timeout_ms=200")["received"], 0, "nothing oversized arrives")

    # Q_Key mismatch.
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=64 count=3 qkey=0x1234")
    t.eq(a("recv ua count=1 timeout_ms=200")["received"], 0, "wrong Q_Key: nothing received")
    t.eq(a("counters ua")["drop_qkey"], 3, "wrong Q_Key: 3 drops counted on the QP")
    t.eq(a("pcounters 1")["drop_qkey"], 3, "wrong Q_Key: 3 drops counted on the port")

    # Unknown destination QPN.
    before = a("pcounters 1")["drop_no_qp"]
    b(f"send ub dlid={pa['lid']} dqpn={qa ^ 0x80} size=64 count=2")
    t.eq(a("pcounters 1")["drop_no_qp"], before + 2, "unknown QPN: drops counted on the port")

    # P_Key: a partition the receiving port lacks, and two limited members.
    q3 = a(f"qp p3 rq=8 pkey_index={pkey_index(pa, 0x8003)}")["qpn"]
    a("post p3 n=8")
    b(f"send ub dlid={pa['lid']} dqpn={q3} size=64 count=2")
    t.eq(a("recv p3 count=1 timeout_ms=200")["received"], 0, "default-partition sender cannot reach a p3 QP")
    t.eq(a("counters p3")["drop_pkey"], 2, "P_Key mismatch counted")
    qla = a(f"qp lim rq=8 pkey_index={pkey_index(pa, 0x0002)}")["qpn"]
    a("post lim n=8")
    b(f"qp limb rq=8 pkey_index={pkey_index(pb, 0x0002)}")
    b(f"send limb dlid={pa['lid']} dqpn={qla} size=64 count=2")
    t.eq(a("recv lim count=1 timeout_ms=200")["received"], 0, "two limited members cannot talk")
    t.eq(a("counters lim")["drop_pkey"], 2, "limited-limited drops counted")
    qfa = a(f"qp p1 rq=8 pkey_index={pkey_index(pa, 0x8001)}")["qpn"]
    a("post p1 n=8")
    b(f"qp p1b rq=8 pkey_index={pkey_index(pb, 0x8001)}")
    b(f"send p1b dlid={pa['lid']} dqpn={qfa} size=64 count=2")
    t.eq(a("recv p1 count=2 timeout_ms=1000")["received"], 2, "two full members of p1 talk")

    # No receive buffer posted, and a buffer too small.
    qn = a("qp nobuf rq=4")["qpn"]
    b(f"send ub dlid={pa['lid']} dqpn={qn} size=64 count=3")
    t.eq(a("counters nobuf")["drop_no_buffer"], 3, "no posted buffer: 3 drops counted")
    a("post nobuf n=1 size=90")
    b(f"send ub dlid={pa['lid']} dqpn={qn} size=100 count=1")
    r = a("recv nobuf count=1 timeout_ms=1000")
    t.eq(r["statuses"], {"local length error": 1}, "buffer shorter than GRH + message: length error completion")
    t.eq(a("counters nobuf")["drop_too_long"], 1, "short buffer counted")

    # Multicast on the broadcast group: not before attach, then everyone, sender included.
    qc = c("qp mc rq=64")["qpn"]
    c("post mc n=64")
    a(f"attach ua mgid={BCAST_MGID} mlid=0xc000")
    b(f"attach ub mgid={BCAST_MGID} mlid=0xc000")
    b(f"send ub dlid=0xc000 dqpn=0xffffff size=200 count=5 mgid={BCAST_MGID}")
    t.eq(c("recv mc count=1 timeout_ms=300")["received"], 0, "Hca3 receives no multicast before attaching")
    r = a("recv ua count=5 timeout_ms=1000")
    t.eq((r["received"], r["grh"], r["sgids"]), (5, 5, [pb["gid"]]), "attached Hca1 receives 5, with GRH from B")
    r = b("recv ub count=5 timeout_ms=1000")
    t.eq((r["received"], r["src_qps"]), (5, [qb]), "the sender's own QP receives its multicast (loopback)")
    c(f"attach mc mgid={BCAST_MGID} mlid=0xc000")
    b(f"send ub dlid=0xc000 dqpn=0xffffff size=200 count=5 mgid={BCAST_MGID}")
    r = c("recv mc count=5 timeout_ms=1000")
    t.eq((r["received"], r["bad_payload"]), (5, 0), "after attaching, Hca3 receives the multicast")
    a("recv ua count=5 timeout_ms=1000")
    b("recv ub count=5 timeout_ms=1000")
    c(f"detach mc mgid={BCAST_MGID} mlid=0xc000")
    b(f"send ub dlid=0xc000 dqpn=0xffffff size=200 count=2 mgid={BCAST_MGID}")
    t.eq(c("recv mc count=1 timeout_ms=300")["received"], 0, "after detaching, Hca3 receives none")
    a("recv ua count=2 timeout_ms=1000")
    b("recv ub count=2 timeout_ms=1000")

    # Many senders, one receiver, at once.
    c("qp uc rq=64")
    n_each = 3000
    b.send(f"send ub dlid={pa['lid']} dqpn={qa} size=256 count={n_each}")
    c.send(f"send uc dlid={pa['lid']} dqpn={qa} size=256 count={n_each}")
    r = a(f"recv ua count={2 * n_each} timeout_ms=20000 repost=1", timeout=30)
    rb, rc = b.read(), c.read()
    drops = a("counters ua")["drop_no_buffer"]
    t.eq(rb["statuses"], {"success": n_each}, "sender 1 completes all sends")
    t.eq(rc["statuses"], {"success": n_each}, "sender 2 completes all sends")
    t.eq(r["bad_payload"], 0, "two concurrent senders: no corrupted message")
    t.ok(r["received"] + drops == 2 * n_each, "two concurrent senders: every message received or counted "
         "as dropped for lack of a buffer", f"received {r['received']}, no-buffer drops {drops}")
    t.note(f"concurrent senders: {r['received']} received, {drops} dropped (no buffer)")

    # Port down in ibsim -> down here, with events; and back.
    a("events timeout_ms=300")  # drain
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "down", "--wait", "5")
    ev = a("events timeout_ms=1500")["events"]
    t.ok(["PORT_ERR", 1] in ev, "unlinking Hca1 in ibsim raises PORT_ERR", ev)
    t.eq(a("port 1")["state"], "DOWN", "Hca1 port reads DOWN")
    before = a("pcounters 1")["drop_port_down"]
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=64 count=4")
    t.eq(a("pcounters 1")["drop_port_down"], before + 4, "packets to a down port are dropped and counted")
    r = a(f"send ua dlid={pb['lid']} dqpn={qb} size=64 count=2")
    t.eq(r["statuses"], {"local QP operation error": 2}, "a down port sends nothing")
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "up", "--wait", "15")
    ev = a("events timeout_ms=1500")["events"]
    t.ok(["PORT_ACTIVE", 1] in ev, "relinking raises PORT_ACTIVE", ev)
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=64 count=3")
    t.eq(a("recv ua count=3 timeout_ms=1000 repost=1")["received"], 3, "traffic flows again after relink")

    # A sender killed while writing into the receiver's buffer: hca-peer's test-only
    # "fault" provider is the soft provider with its stall-after-claim hook armed.
    d = peer(env, "Hca3", "fault=stall_after_claim", provider="fault")
    d("qp ud rq=4")
    d.send(f"send ud dlid={pa['lid']} dqpn={qa} size=64 count=1")
    time.sleep(0.3)
    d.p.send_signal(signal.SIGKILL)
    d.p.wait()
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=64 count=5")
    r = a("recv ua count=6 timeout_ms=3000 repost=1")
    t.eq(r["statuses"], {"aborted (sender died or stalled)": 1, "success": 5},
         "slot held by a killed sender completes as aborted; later messages arrive")
    t.eq(a("counters ua")["drop_aborted"], 1, "the aborted message is counted")
    # And a sender killed at a random point of a long burst.
    e = peer(env, "Hca3")
    e("qp ue rq=4")
    e.send(f"sendloop ue dlid={pa['lid']} dqpn={qa} size=512")
    e.read()
    time.sleep(0.2)
    e.p.send_signal(signal.SIGKILL)
    e.p.wait()
    a("recv ua count=100000 timeout_ms=500 repost=1")  # drain what it sent
    b(f"send ub dlid={pa['lid']} dqpn={qa} size=64 count=10")
    r = a("recv ua count=10 timeout_ms=3000 repost=1")
    t.eq((r["received"], r["src_qps"]), (10, [qb]), "receiver keeps working after a sender dies mid-burst")

    for p in (a, b, c):
        p.close()
    check_capture(pa, pb, qa, qb)


def check_capture(pa, pb, qa, qb):
    out = subprocess.run(["tshark", "-o", 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""',
                          "-r", CAPTURE, "-T", "fields", "-e", "infiniband.lrh.dlid", "-e", "infiniband.lrh.slid",
                          "-e", "infiniband.bth.destqp", "-e", "infiniband.bth.p_key", "-e", "infiniband.deth.q_key",
                          "-e", "infiniband.deth.srcqp", "-e", "infiniband.bth.opcode", "-e", "infiniband.grh.dgid"],
                         capture_output=True, text=True, timeout=60)
    rows = [r.split("\t") for r in out.stdout.strip().splitlines()]
    t.ok(len(rows) > 100, "tshark decodes the capture", out.stderr[-500:])

    def find(pred):
        return next((r for r in rows if pred(r)), None)

    uni = find(lambda r: int(r[0]) == pa["lid"] and int(r[1]) == pb["lid"] and int(r[2], 0) == qa)
    t.ok(uni is not None, "B->A UD SEND decoded with the right LIDs and QPNs", rows[:3])
    if uni:
        t.eq((int(uni[3], 0), int(uni[4], 0), int(uni[5], 0), int(uni[6])), (0xffff, 0x0b1b, qb, 100),
             "P_Key 0xffff, Q_Key 0x0b1b, source QPN, opcode 100 (UD SEND only)")
    bad_qkey = find(lambda r: int(r[4], 0) == 0x1234)
    t.ok(bad_qkey is not None, "the wrong-Q_Key packets are on the wire as sent")
    p3 = find(lambda r: int(r[3], 0) == 0x8001)
    t.ok(p3 is not None, "p1 traffic carries P_Key 0x8001")
    mc = find(lambda r: int(r[0], 0) == 0xc000)
    t.ok(mc is not None and mc[2] and int(mc[2], 0) == 0xffffff and mc[7] == BCAST_MGID,
         "multicast: DLID 0xc000, QPN 0xffffff, GRH DGID = broadcast MGID", mc)

    # CRCs, recomputed here with zlib (ICRC) and a bitwise CRC-16 (VCRC).
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
        icrc = (zlib.crc32(bytes(masked)) & 0xffffffff).to_bytes(4, "little")
        if icrc != pkt[-6:-2]:
            bad_i += 1
        crc = 0xffff
        for byte in pkt[:-2]:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xd008 if crc & 1 else crc >> 1
        if ((~crc) & 0xffff).to_bytes(2, "little") != pkt[-2:]:
            bad_v += 1
    t.ok(n == len(rows), "every pcap record is one decoded packet", f"{n} records, {len(rows)} rows")
    t.eq(bad_i, 0, f"ICRC correct in all {n} captured packets")
    t.eq(bad_v, 0, f"VCRC correct in all {n} captured packets")


def main():
    env = None
    try:
        args = ["up", "--format", "json", "--hcas", "3", "--owner", str(os.getpid())]
        for p in PARTITIONS:
            args += ["--partition", p]
        env = json.loads(fabric(*args).stdout)
        t.run("software HCA", run, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "fabric for the software HCA test", e)
    finally:
        for p in peers:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()
        if env:
            sock = env["IBSIM_SOCKNAME"]
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
            left = [n for n in os.listdir("/dev/shm") if n.startswith("ipoibsoft." + sock)]
            t.eq(left, [], "no shared memory of the fabric is left after teardown")
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
