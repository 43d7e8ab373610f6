#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The software HCA against buggy, crashed and stopped peers.

Threat model (doc/soft-hca.md): a peer process that is buggy, crashes or is
stopped, not root. Whatever a peer writes into the fabric's shared memory may
be garbage; a process must neither crash, nor read or write out of bounds,
nor stall for good because of it. Each group of checks runs on a fabric of its
own (ibsim serves 10 clients, and killed ones keep their slot), with hca-peer
processes; the receivers use the test-only "fault" provider (the soft
provider plus the test hooks of lib/hca/src/soft/soft_testing.hpp), which
also writes garbage into shared memory on command (`corrupt`).

usage: test_soft_hca_faults.py PATH-TO-ipoib-fabric PATH-TO-hca-peer
An AddressSanitizer build of hca-peer runs with IPOIB_PEER_PRELOAD=<libasan.so>
(and ASAN_OPTIONS=suppressions=FILE with interceptor_via_lib:libumad2sim.so);
FAULTS_GROUPS="shm senders groups" picks groups of checks.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fabric_client import Fabric, client_env  # noqa: E402
from tap import Tap  # noqa: E402
from hca_peer_client import HcaPeer  # noqa: E402

FABRIC = os.path.abspath(sys.argv[1])
PEER = os.path.abspath(sys.argv[2])
STALL_MS = 300  # receivers' bound on a slot claimed by a live sender (test hook)
t = Tap()
CWD = tempfile.mkdtemp(prefix="soft-hca-faults-")
fabric = Fabric(FABRIC, CWD)
peers = []


class Peer(HcaPeer):
    """An hca-peer on one HCA; defer=True starts it without waiting for its hello."""

    def __init__(self, env, host, options="", provider="fault", defer=False):
        argv = [PEER, provider] + ([options] if options else [])
        self.host = host
        if defer:
            self.name = host
            self.p = subprocess.Popen(argv, env=client_env(env, host), cwd=CWD, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
            self.hello = None
        else:
            super().__init__(host, argv, client_env(env, host), CWD, 10)
        peers.append(self)

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()

    def stderr_tail(self):
        """What the process wrote to stderr (AddressSanitizer/UBSan reports), once it has exited."""
        if self.p.poll() is None:
            return ""
        return self.p.stderr.read()[-3000:]


def on_fabric(name, hcas, fn):
    """Run the checks fn(env) on a fabric of their own; every peer is stopped afterwards."""
    env = None
    try:
        env = json.loads(fabric("up", "--format", "json", "--hcas", str(hcas), "--owner", str(os.getpid())).stdout)
        t.run(name, fn, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"{name}: fabric", e)
    finally:
        for p in peers:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()
            elif p.p.returncode not in (0, None):
                t.note(f"{name}: {p.host} exited {p.p.returncode}:\n{p.stderr_tail()}")
        peers.clear()
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)


def alive(p, what):
    return t.ok(p.p.poll() is None, f"{what}: the process is still running",
                f"exit status {p.p.returncode}\n{p.stderr_tail()}")


# ---------------------------------------------------------------------------
# Finding 5: every field read from shared memory is bounded.

def shm_fields(env):
    b = Peer(env, "Hca2")
    b("qp s rq=4")

    def case(name, fn):
        """One corruption on a receiver of its own (a crash must not hide the next case)."""
        a = Peer(env, "Hca1", f"stall_ms={STALL_MS}")
        pa = a("port 1")

        def to(qpn, n=1, size=100):
            return b(f"send s dlid={pa['lid']} dqpn={qpn} size={size} count={n}")

        t.run(f"5: {name}", fn, a, to)
        a.close()

    def low_byte_len(a, to):  # a consumer computing byte_len - 40 underflows
        q = a("qp r rq=8")["qpn"]
        a("post r n=8")
        to(q)
        a("corrupt r what=done_byte_len value=10")
        r = a("recv r count=1 timeout_ms=1000")
        t.eq(r["statuses"], {"general error": 1}, "5: byte_len 10 (< 40) in a done slot completes in error")
        t.eq(a("counters r").get("rx_bad_slot"), 1, "5: ... and is counted in rx_bad_slot")
        to(q, 2)
        r = a("recv r count=2 timeout_ms=1000")
        t.eq((r["statuses"], r["bad_payload"]), ({"success": 2}, 0), "5: the next messages arrive intact")

    def high_byte_len(a, to):  # a consumer reads past the buffer, into its neighbours or off the mapping
        q = a("qp r rq=1 bufsize=240")["qpn"]
        a("post r n=1")
        to(q)
        a("corrupt r what=done_byte_len value=1000000")
        r = a("recv r count=1 timeout_ms=1000")
        t.eq((r["statuses"], r["lens"]), ({"general error": 1}, []),
             "5: byte_len 1000000 (> the 240-byte buffer) completes in error, no length reported")

    def bad_status(a, to):
        q = a("qp r rq=4")["qpn"]
        a("post r n=4")
        to(q)
        a("corrupt r what=done_status value=77")
        r = a("recv r count=1 timeout_ms=1000")
        t.eq(r["statuses"], {"general error": 1}, "5: an unknown receive status completes in error")

    def bad_state(a, to):  # on every posted slot: neither the senders nor the receiver may wedge
        q = a("qp r rq=4")["qpn"]
        a("post r n=4")
        a("corrupt r what=posted_kind value=9")
        to(q)
        r = a("recv r count=4 timeout_ms=1000 repost=1")
        t.eq(r["statuses"], {"general error": 4}, "5: 4 slots with an unknown state word complete in error")
        to(q, 3)
        r = a("recv r count=3 timeout_ms=1000 repost=1")
        t.eq(r["statuses"], {"success": 3}, "5: ... and the reposted slots receive again")

    def bad_head(a, to):  # senders would find no buffer for good
        q = a("qp r rq=8")["qpn"]
        a("post r n=8")
        a(f"corrupt r what=rq_head value={1 << 40}")
        to(q)
        a("recv r count=1 timeout_ms=300")  # an idle receiver puts its head right
        to(q, 3)
        r = a("recv r count=3 timeout_ms=1000")
        t.eq(r["statuses"], {"success": 3}, "5: a garbage ring head (2^40) is repaired by the receiver")

    def bad_depth(a, to):  # the sender must not index past the ring
        q = a("qp r rq=8")["qpn"]
        a("post r n=8")
        a("corrupt r what=qp_rq_depth value=4294967295")
        to(q, 2)
        alive(b, "5: sending to a QP whose depth reads 0xffffffff")
        t.eq(a("counters r").get("rx_bad_slot"), 2, "5: ... the two messages are counted as bad on that QP")

    def bad_port_idx(a, to):  # out-of-bounds atomics in the sender
        mgid = "ff12:401b:ffff::1:5"
        a("qp r rq=8")
        a("post r n=8")
        a(f"attach r mgid={mgid} mlid=0xc005")
        a("corrupt r what=qp_port_idx value=100000")
        b.send(f"send s dlid=0xc005 dqpn=0xffffff size=64 count=1 mgid={mgid}")
        try:
            r = b.read(10)
        except RuntimeError as e:
            r = {"error": str(e)}
        t.eq(r.get("statuses"), {"success": 1}, "5: a multicast send to a member whose port index is 100000 completes")
        alive(b, "5: multicast to a member with a garbage port index")
        t.eq(a("counters r").get("rx_bad_slot"), 1, "5: ... and the message is counted as bad on that member")

    for name, fn in (("low byte_len", low_byte_len), ("high byte_len", high_byte_len), ("status", bad_status),
                     ("state word", bad_state), ("ring head", bad_head), ("ring depth", bad_depth),
                     ("multicast port index", bad_port_idx)):
        case(name, fn)
    b.close()


# ---------------------------------------------------------------------------
# Finding 6: dead, restarted, slow and stopped senders.

def dead_senders(env):
    a = Peer(env, "Hca1", f"stall_ms={STALL_MS}")
    b = Peer(env, "Hca2")
    pa = a("port 1")
    qb = b("qp s rq=4")["qpn"]

    def from_b(qpn, n):
        return b(f"send s dlid={pa['lid']} dqpn={qpn} size=64 count={n}")

    # 6a: the sender dies holding a slot; a new process takes its process slot before the receiver looks.
    q = a("qp ra rq=8")["qpn"]
    a("post ra n=8")
    d = Peer(env, "Hca3", "fault=stall_after_claim")
    dead_proc = d("fabric")["proc"]
    d("qp x rq=4")
    d.send(f"send x dlid={pa['lid']} dqpn={q} size=64 count=1")
    time.sleep(0.3)
    d.kill()
    n = Peer(env, "Hca3")
    n("qp y rq=4")
    t.eq(n("fabric")["proc"], dead_proc, "6a: (set-up) a new process takes the dead sender's process slot")
    from_b(q, 5)
    r = a("recv ra count=6 timeout_ms=3000 repost=1")
    t.eq(r["statuses"], {"aborted (sender died or stalled)": 1, "success": 5},
         "6a: the dead sender's slot completes as aborted although its process slot is in use again")
    c = a("counters ra")
    t.eq((c["drop_aborted"], c.get("drop_stalled")), (1, 0), "6a: ... counted as a dead sender's (drop_aborted)")
    n.close()

    # 6b: a process still starting (slot claimed, identity not yet published) is not judged dead.
    x = Peer(env, "Hca3")
    slot = x("fabric")["proc"]
    x.close()  # leaves its start time behind in that slot
    s = Peer(env, "Hca3", "fault=slow_attach,fault_ms=2000", defer=True)
    time.sleep(0.7)  # s has claimed the slot and pauses
    p2 = Peer(env, "Hca2")
    p2_slot = p2("fabric")["proc"]
    s.hello = s.read(10)
    s_slot = s("fabric")["proc"]
    t.note(f"6b: freed slot {slot}, slow starter in {s_slot}, the process started meanwhile in {p2_slot}")
    t.ok(s_slot != p2_slot, "6b: a starting process keeps its slot: no other process is given it",
         f"both in slot {s_slot}")
    s.close()
    p2.close()

    # 6d: a stopped sender holds a slot: the queue is blocked for at most the bound, then skips it.
    q = a("qp rd rq=8")["qpn"]
    a("post rd n=8")
    d2 = Peer(env, "Hca3", "fault=stall_after_claim")
    d2("qp x rq=4")
    d2.send(f"send x dlid={pa['lid']} dqpn={q} size=64 count=1")
    time.sleep(0.3)
    d2.p.send_signal(signal.SIGSTOP)
    from_b(q, 5)
    t0 = time.monotonic()
    r = a("recv rd count=6 timeout_ms=3000 repost=1")
    took = time.monotonic() - t0
    t.eq(r["statuses"], {"aborted (sender died or stalled)": 1, "success": 5},
         "6d: a slot held by a stopped sender is skipped; the messages behind it arrive")
    t.ok(took < 2.0, f"6d: ... within the bound ({STALL_MS} ms, took {took:.2f} s)")
    t.eq(a("counters rd").get("drop_stalled"), 1, "6d: ... counted in drop_stalled")
    d2.kill()

    # 6c: a sender judged dead (its entry says another process) that finishes later must not
    # write DONE into a slot the receiver has reposted.
    q = a("qp rc rq=4")["qpn"]
    a("post rc n=4")
    d3 = Peer(env, "Hca3", "fault=stall_after_claim,fault_ms=3000")
    d3("qp x rq=4")
    d3("corrupt x what=proc_start_time value=1")  # the receiver will judge it dead
    d3.send(f"send x dlid={pa['lid']} dqpn={q} size=64 count=1")
    time.sleep(0.2)
    r = a("recv rc count=1 timeout_ms=2500 repost=1")
    t.eq(r["statuses"], {"aborted (sender died or stalled)": 1}, "6c: (set-up) the receiver gives up on the slot")
    d3.read(10)  # its send completes after the stall
    t.eq(d3("counters x").get("tx_late"), 1, "6c: the late sender finds its slot taken and counts tx_late")
    before = a("counters rc")["drop_no_buffer"]
    got, srcs = {}, set()
    for _ in range(3):  # three laps of the 4-slot ring
        from_b(q, 4)
        r = a("recv rc count=4 timeout_ms=1000 repost=1")
        for k, v in r["statuses"].items():
            got[k] = got.get(k, 0) + v
        srcs |= set(r["src_qps"])
    t.eq((got, sorted(srcs)), ({"success": 12}, [qb]),
         "6c: no phantom completion from the late sender; every later message arrives")
    t.eq(a("counters rc")["drop_no_buffer"], before, "6c: ... and none is dropped for want of a buffer")

    # 6c, through the stall bound: a live sender skipped as stalled comes back and finishes.
    q = a("qp rs rq=4")["qpn"]
    a("post rs n=4")
    d4 = Peer(env, "Hca3", f"fault=stall_after_claim,fault_ms={3 * STALL_MS}")
    d4("qp x rq=4")
    d4.send(f"send x dlid={pa['lid']} dqpn={q} size=64 count=1")
    time.sleep(0.1)
    r = a("recv rs count=1 timeout_ms=2000 repost=1")
    t.eq(r["statuses"], {"aborted (sender died or stalled)": 1}, "6c: (set-up) a slow sender's slot is skipped")
    d4.read(10)
    t.eq((d4("counters x").get("tx_late"), a("counters rs").get("drop_stalled")), (1, 1),
         "6c: the slow sender finds its slot taken (tx_late); the receiver counted it stalled")
    got, srcs = {}, set()
    for _ in range(3):
        from_b(q, 4)
        r = a("recv rs count=4 timeout_ms=1000 repost=1")
        for k, v in r["statuses"].items():
            got[k] = got.get(k, 0) + v
        srcs |= set(r["src_qps"])
    t.eq((got, sorted(srcs)), ({"success": 12}, [qb]), "6c: ... and later messages arrive, none from it")
    for p in (a, b, d3, d4):
        p.close()


# ---------------------------------------------------------------------------
# Finding 7: the multicast group table and the shared segments.

def groups_and_segments(env):
    a = Peer(env, "Hca1")
    b = Peer(env, "Hca2")
    pa = a("port 1")
    a("qp ra rq=16")
    a("post ra n=16")
    b("qp s rq=4")

    # 7c: an MLID changed by the SM: detach, attach again with the new one.
    mgid = "ff12:401b:ffff::7:c"
    a(f"attach ra mgid={mgid} mlid=0xc030")
    a(f"detach ra mgid={mgid} mlid=0xc030")
    r = a.send(f"attach ra mgid={mgid} mlid=0xc031") or a.read()
    t.eq(r, {"ok": True}, "7c: re-attaching a group with the MLID the SM changed works")
    b(f"send s dlid=0xc031 dqpn=0xffffff size=64 count=2 mgid={mgid}")
    t.eq(a("recv ra count=2 timeout_ms=1000")["received"], 2, "7c: ... and the group's traffic arrives on the new MLID")

    # 7b: groups are freed when their last member leaves: 1000 distinct groups one after the other.
    failed = None
    for i in range(1000):
        g = f"ff12:401b:ffff::{i // 256 + 16:x}:{i % 256:x}"
        r = a.send(f"attach ra mgid={g} mlid={0xc100 + i}") or a.read()
        if r != {"ok": True}:
            failed = (i, r)
            break
        a(f"detach ra mgid={g} mlid={0xc100 + i}")
    t.eq(failed, None, "7b: attach and detach 1000 distinct MGIDs, one after the other")

    # 7e: a segment freed and allocated again must not be written through a sender's old mapping.
    q = a("qp re rq=1")["qpn"]
    a("post re n=1")
    b(f"send s dlid={pa['lid']} dqpn={q} size=300 count=1")  # b maps a's segment
    t.eq(a("recv re count=1 timeout_ms=1000")["bad_payload"], 0, "7e: (set-up) first message intact")
    a("realloc re")
    a("post re n=1")
    b(f"send s dlid={pa['lid']} dqpn={q} size=300 count=1")
    r = a("recv re count=1 timeout_ms=1000")
    t.eq((r["received"], r["bad_payload"]), (1, 0),
         "7e: after the receiver reallocates its buffers, a message lands in the new ones")

    # 7d: the segments of a process that crashed are removed by the next process on the fabric.
    sock = env["IBSIM_SOCKNAME"]

    def segments():
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"ipoibsoft.{sock}.")}

    before = segments()
    k = Peer(env, "Hca3")
    k("qp x rq=64")
    mine = segments() - before
    t.ok(len(mine) >= 1, "7d: (set-up) the process has segments", mine)
    k.kill()
    n = Peer(env, "Hca3")
    n("qp y rq=4")
    left = mine & segments()
    t.eq(sorted(left), [], "7d: a crashed process's segments are removed by the next process that attaches")
    for p in (a, b, n):
        p.close()


def main():
    only = os.environ.get("FAULTS_GROUPS", "").split()  # e.g. FAULTS_GROUPS=shm: only that group
    for key, name, hcas, fn in (("shm", "shared-memory fields", 2, shm_fields),
                                ("senders", "dead and stopped senders", 3, dead_senders),
                                ("groups", "multicast groups and segments", 3, groups_and_segments)):
        if not only or key in only:
            on_fabric(name, hcas, fn)
    shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
