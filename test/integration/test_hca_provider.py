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

What differs between an InfiniBand port and a RoCE port is read from the
port, never assumed: on Ethernet every address carries a GRH and there are
no LIDs. Checked: port attributes, UD both ways with payloads verified,
gather lists, messages of the full MTU, multicast delivered only after
attach (and no more after detach), and drops counted: a message longer than
the receive buffer, a message longer than the MTU, sends to a QP with no
receive buffers posted, a wrong Q_Key; the "QP's own" Q_Key (high bit); and
no send completion lost when a burst is larger than the send CQ.
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Tap  # noqa: E402
from hca_peer_client import HcaPeer, shared_peers  # noqa: E402

MODE = sys.argv[1]
PEER = os.path.abspath(sys.argv[3])
BCAST_MGID = "ff12:401b:ffff::ffff:ffff"
QKEY = 0x0B1B
t = Tap()
CWD = tempfile.mkdtemp(prefix="hca-provider-test-")
peers = []


def Peer(name, args, env):
    p = HcaPeer(name, [PEER, *args], env, CWD)
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
        else:
            a = Peer("A", ["verbs", "", sys.argv[2]], dict(os.environ))
            b = Peer("B", ["verbs", "", sys.argv[2]], dict(os.environ))
        t.run(f"provider {MODE}", suite, a, b)
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"set-up for the {MODE} provider", e)
    finally:
        for p in peers:
            p.kill()
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
