#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The CM engine's MADs on the wire, judged by tshark's InfiniBand dissector.

cm-capture (cm_capture.cpp) writes a pcap of a REQ, MRA, REP, RTU, DREQ,
DREP and a REJ (REQ to a service nobody listens to) as UD packets to QP1;
tshark decodes LRH/BTH/DETH, the MAD header and the CM attributes, and this
script checks them against what cm-capture was told to send: service ID
0x1000000000000000 | QPN, QPNs, PSNs, Linux's private data (QPN, 65524),
the communication IDs matching across messages, REJ reason 8.

usage: test_cm_tshark.py CM_CAPTURE
"""
import os
import subprocess
import sys
import tempfile

USER_DLT = 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""'
FIELDS = [
    "frame.number", "infiniband.lrh.slid", "infiniband.lrh.dlid", "infiniband.bth.opcode",
    "infiniband.bth.destqp", "infiniband.deth.q_key", "infiniband.deth.srcqp",
    "infiniband.mad.baseversion", "infiniband.mad.mgmtclass", "infiniband.mad.classversion",
    "infiniband.mad.method", "infiniband.mad.attributeid", "infiniband.mad.transactionid",
    "infiniband.cm.req", "infiniband.cm.req.serviceid", "infiniband.cm.req.localcaguid",
    "infiniband.cm.req.localqpn", "infiniband.cm.req.startpsn", "infiniband.cm.req.pkey",
    "infiniband.cm.req.prim_locallid", "infiniband.cm.req.prim_remotelid", "infiniband.cm.req.prim_sl",
    "infiniband.cm.req.prim_localacktout", "infiniband.cm.req.maxcmretr", "infiniband.cm.req.transpsvctype",
    "infiniband.cm.req.private",
    "infiniband.cm.rep", "infiniband.cm.rep.remotecommid", "infiniband.cm.rep.localqpn",
    "infiniband.cm.rep.startpsn", "infiniband.cm.rep.localcaguid", "infiniband.cm.rep.private",
    "infiniband.cm.rtu.localcommid", "infiniband.cm.rtu.remotecommid",
    "infiniband.cm.rej.localcommid", "infiniband.cm.rej.remotecommid", "infiniband.cm.rej.msgrej",
    "infiniband.cm.rej.reason",
    "infiniband.cm.dreq.localcommid", "infiniband.cm.dreq.remotecommid", "infiniband.cm.req.remoteqpneecn",
    "infiniband.cm.drsp.localcommid", "infiniband.cm.drsp.remotecommid",
]


class Tap:
    def __init__(self):
        self.count = self.failed = 0

    def ok(self, cond, name, detail=""):
        self.count += 1
        print(f"{'ok' if cond else 'not ok'} {self.count} - {name}", flush=True)
        if not cond:
            self.failed += 1
            for line in str(detail).splitlines():
                print(f"#   {line}", flush=True)

    def eq(self, got, want, name):
        self.ok(got == want, name, f"got:  {got!r}\nwant: {want!r}")


def num(s):
    """A tshark number field (decimal or 0x hex) as int; None if empty."""
    if s == "":
        return None
    return int(s, 0)


def hexbytes(s):
    return s.replace(":", "").lower()


def main():
    tool = sys.argv[1]
    t = Tap()
    with tempfile.TemporaryDirectory(prefix="cm-tshark-") as tmp:
        pcap = os.path.join(tmp, "cm.pcap")
        run = subprocess.run([tool, pcap], capture_output=True, text=True, timeout=60)
        t.ok(run.returncode == 0, "cm-capture ran the exchange", run.stdout + run.stderr)
        print(f"# {run.stdout.strip()}", flush=True)
        args = ["tshark", "-o", USER_DLT, "-r", pcap, "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
        for f in FIELDS:
            args += ["-e", f]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        t.ok(out.returncode == 0, "tshark read the capture", out.stderr[-1000:])
    rows = [dict(zip(FIELDS, line.split("|"))) for line in out.stdout.splitlines() if line]
    t.eq(len(rows), 8, "8 packets decoded")
    if len(rows) != 8:
        print(f"1..{t.count}")
        sys.exit(1)

    # Every packet: UD SEND only (opcode 0x64) from QP1 to QP1 with the GSI Q_Key, a CM MAD (class 7, version 2, SEND).
    names = {0x10: "REQ", 0x11: "MRA", 0x12: "REJ", 0x13: "REP", 0x14: "RTU", 0x15: "DREQ", 0x16: "DREP"}
    seq = [names.get(num(r["infiniband.mad.attributeid"]), "?") for r in rows]
    t.eq(seq, ["REQ", "MRA", "REP", "RTU", "DREQ", "DREP", "REQ", "REJ"], "the messages in order")
    for i, r in enumerate(rows):
        hdr = (num(r["infiniband.bth.opcode"]), num(r["infiniband.bth.destqp"]), num(r["infiniband.deth.q_key"]),
               num(r["infiniband.deth.srcqp"]), num(r["infiniband.mad.baseversion"]),
               num(r["infiniband.mad.mgmtclass"]), num(r["infiniband.mad.classversion"]),
               num(r["infiniband.mad.method"]))
        t.eq(hdr, (0x64, 1, 0x80010000, 1, 1, 7, 2, 3), f"packet {i + 1} ({seq[i]}): UD SEND QP1->QP1, Q_Key, CM MAD SEND")
        want_lids = (1, 2) if i in (0, 3, 4, 6) else (2, 1)
        t.eq((num(r["infiniband.lrh.slid"]), num(r["infiniband.lrh.dlid"])), want_lids, f"packet {i + 1} ({seq[i]}): LIDs")

    req, _mra, rep, rtu, dreq, drep, req2, rej = rows
    a_id = num(req["infiniband.cm.req"])
    t.eq(num(req["infiniband.cm.req.serviceid"]), 0x1000000000000123, "REQ: service ID 0x1000000000000000 | QPN")
    t.eq(num(req["infiniband.cm.req.localqpn"]), 0x000123, "REQ: local QPN")
    t.eq(num(req["infiniband.cm.req.startpsn"]), 0xabcdef, "REQ: starting PSN")
    t.eq(num(req["infiniband.cm.req.localcaguid"]), 0x0002c9030000000a, "REQ: local CA GUID")
    t.eq(num(req["infiniband.cm.req.pkey"]), 0xffff, "REQ: P_Key")
    t.eq(num(req["infiniband.cm.req.transpsvctype"]), 0, "REQ: transport RC")
    t.eq((num(req["infiniband.cm.req.prim_locallid"]), num(req["infiniband.cm.req.prim_remotelid"])), (1, 2),
         "REQ: primary path LIDs")
    t.eq(num(req["infiniband.cm.req.prim_localacktout"]), 15, "REQ: local ACK timeout = packet life time 14 + 1")
    t.eq(num(req["infiniband.cm.req.maxcmretr"]), 15, "REQ: max CM retries")
    t.eq(hexbytes(req["infiniband.cm.req.private"]), "00000123" + "0000fff4" + "00" * 84,
         "REQ: private data (QPN, 65524, zeros to 92 bytes)")

    b_id = num(rep["infiniband.cm.rep"])
    t.ok(a_id not in (None, 0) and b_id not in (None, 0) and a_id != b_id, "communication IDs non-zero and distinct",
         f"A {a_id} B {b_id}")
    t.eq(num(rep["infiniband.cm.rep.remotecommid"]), a_id, "REP: remote comm ID = the REQ's local one")
    t.eq(num(rep["infiniband.cm.rep.localqpn"]), 0x000456, "REP: local QPN")
    t.eq(num(rep["infiniband.cm.rep.startpsn"]), 0x654321, "REP: starting PSN")
    t.eq(num(rep["infiniband.cm.rep.localcaguid"]), 0x0002c9030000000b, "REP: local CA GUID")
    t.eq(hexbytes(rep["infiniband.cm.rep.private"]), "00000456" + "0000fff4" + "00" * 188, "REP: private data")

    t.eq((num(rtu["infiniband.cm.rtu.localcommid"]), num(rtu["infiniband.cm.rtu.remotecommid"])), (a_id, b_id),
         "RTU: comm IDs")
    t.eq((num(dreq["infiniband.cm.dreq.localcommid"]), num(dreq["infiniband.cm.dreq.remotecommid"])), (a_id, b_id),
         "DREQ: comm IDs")
    t.eq(num(dreq["infiniband.cm.req.remoteqpneecn"]), 0x000456, "DREQ: remote QPN")
    t.eq((num(drep["infiniband.cm.drsp.localcommid"]), num(drep["infiniband.cm.drsp.remotecommid"])), (b_id, a_id),
         "DREP: comm IDs")

    a_id2 = num(req2["infiniband.cm.req"])
    t.eq(num(req2["infiniband.cm.req.serviceid"]), 0x2000000000000001, "second REQ: the unlistened service ID")
    t.eq(num(rej["infiniband.cm.rej.reason"]), 8, "REJ: reason 8 (invalid service ID)")
    t.eq(num(rej["infiniband.cm.rej.remotecommid"]), a_id2, "REJ: remote comm ID = the second REQ's")
    t.eq(num(rej["infiniband.cm.rej.localcommid"]), 0, "REJ: local comm ID 0 (no ID on B)")
    t.eq(num(rej["infiniband.cm.rej.msgrej"]), 0, "REJ: message rejected = REQ")
    t.eq(num(rej["infiniband.mad.transactionid"]), num(req2["infiniband.mad.transactionid"]), "REJ: the REQ's TID")

    print(f"1..{t.count}", flush=True)
    sys.exit(1 if t.failed else 0)


if __name__ == "__main__":
    main()
