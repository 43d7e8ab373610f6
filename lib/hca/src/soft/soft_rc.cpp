// SPDX-License-Identifier: BSD-3-Clause
// Reliable connections in the software HCA (rc.hpp): shared receive queues
// and RC QPs over the fabric's shared memory (shm_layout.hpp, layout 8).
//
// A receive of an RC ring (an SRQ's, or an RC QP's own) is a slot of up to
// kMaxRcSge buffer descriptors. A sender delivers a whole message at once,
// synchronously in post_send, as the UD path does: it checks the connection
// (the remote QP entry still the one connected to, connected back to it, in
// RTS, on an active port, its process alive), takes one posted slot of the
// remote's ring with a CAS on the ring head, scatters the gathered message
// over the slot's buffers (one copy, no staging) and marks it done. What
// hardware's transport would answer, the sender decides itself:
//
//   no posted receive     RNR: the send waits (and every later one of the QP
//                         behind it, in order) and is retried on the next
//                         post_send of the QP and on every poll of its send
//                         CQ, for rnr_retry x the peer's RNR timer (7:
//                         without end); then rnr_retry_exc_err, QP to ERR
//   message too long      the receive completes loc_len_err, the send
//                         general_err (IBA: remote operation error), QP ERR
//   peer gone             retry_exc_err at once, QP ERR: its QP destroyed or
//                         not connected back, its port down, its process dead
//                         (checked at most every kPeerCheckUs of the coarse
//                         clock, by syscalls)
//
// Sends are in order per QP; an SRQ shared by several QPs completes in the
// order senders took its slots. No locks, syscalls (but the throttled peer
// check), allocations or virtual calls per message.
#include <algorithm>
#include <cstring>

#include "soft_context.hpp"

namespace ipoib::hca::soft {

namespace {

// IBA Table 45: the RNR NAK timer field, in microseconds.
constexpr std::uint32_t kRnrTimerUs[32] = {
    655360, 10,    20,    30,    40,    60,    80,     120,    160,    240,    320,
    480,    640,   960,   1280,  1920,  2560,  3840,   5120,   7680,   10240,  15360,
    20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520};
constexpr std::uint8_t kRnrInfinite = 7;  // rnr_retry 7: retry without end
// How often a sender checks that its peer's process is alive (syscalls).
constexpr std::uint64_t kPeerCheckUs = 1000;
constexpr std::uint32_t kMaxRcSendWr = 8192;

std::uint64_t now_us(clockid_t clock = CLOCK_MONOTONIC) noexcept {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}
// What a send burst reads for the peer check: the kernel's coarse clock
// (a few ms of resolution, read from the vDSO page without touching the
// clock source, which on some VMs costs more than delivering a message).
// The RNR deadlines, on the slow path, read the precise one.
std::uint64_t coarse_now_us() noexcept { return now_us(CLOCK_MONOTONIC_COARSE); }

// Take a free RC ring entry for this process and set it up for depth receives.
std::unique_ptr<RcRecvRing> alloc_ring(SoftContext &ctx, std::uint32_t depth, std::uint32_t max_sge, SoftCq *cq,
                                       std::uint32_t port_idx) {
    FabricShm *shm = ctx.fabric.shm();
    const std::uint32_t me = ctx.fabric.ident();
    for (std::uint32_t i = 0; i < kMaxRcRings; ++i) {
        RcRingEntry &e = shm->rc_rings[i];
        std::uint32_t expected = 0;
        if (!e.owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel))
            continue;
        for (std::uint32_t k = 0; k < depth; ++k)
            e.slots[k].state.store(0, std::memory_order_relaxed);
        e.head.store(0, std::memory_order_relaxed);
        e.notify_armed.store(0, std::memory_order_relaxed);
        e.notify_cq.store(cq->serial(), std::memory_order_relaxed);
        e.depth.store(depth, std::memory_order_release);
        auto r = std::make_unique<RcRecvRing>();
        r->ctx = &ctx;
        r->e = &e;
        r->idx = i;
        r->depth = depth;
        r->max_sge = max_sge;
        r->cq = cq;
        r->port_idx = port_idx;
        r->wr_ids.resize(depth);
        r->lens.resize(depth);
        cq->rc_rings.push_back(r.get());
        return r;
    }
    return nullptr;
}

void free_ring(SoftContext &ctx, std::unique_ptr<RcRecvRing> &r) noexcept {
    if (!r)
        return;
    auto &v = r->cq->rc_rings;
    v.erase(std::remove(v.begin(), v.end(), r.get()), v.end());
    std::uint32_t expected = ctx.fabric.ident();  // unless a collector took it
    r->e->owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
    r.reset();
}

// Post receives into an RC ring: each up to r.max_sge buffers of alloc_dma memory.
int post_ring(RcRecvRing &r, const RcRecvWr *wr, int n) noexcept {
    SoftContext &ctx = *r.ctx;
    int i = 0;
    for (; i < n; ++i) {
        if (r.flushing)
            return i ? i : ctx.fail(-EINVAL, "post_recv: the QP is in the error state");
        if (r.tail - r.cursor >= r.depth)
            break;  // ring full
        if (wr[i].num_sge == 0 || wr[i].num_sge > r.max_sge || !wr[i].sg_list)
            return i ? i : ctx.fail(-EINVAL, "post_recv: " + std::to_string(wr[i].num_sge) +
                                                 " scatter entries (1.." + std::to_string(r.max_sge) + ")");
        const std::uint64_t idx = r.tail;
        RcSlot &s = r.e->slots[idx % r.depth];
        std::uint64_t total = 0;
        for (std::uint32_t k = 0; k < wr[i].num_sge; ++k) {
            const Sge &g = wr[i].sg_list[k];
            const auto *addr = reinterpret_cast<const std::uint8_t *>(static_cast<std::uintptr_t>(g.addr));
            if (g.lkey != r.seg_key || addr < r.seg_base || addr + g.length > r.seg_end || addr + g.length < addr) {
                std::uint32_t key;
                std::uint8_t *base;
                std::size_t size = 0;
                if (g.length == 0 || !ctx.fabric.find_local(addr, g.length, &key, &base, &size) || key != g.lkey)
                    return i ? i : ctx.fail(-EINVAL, "post_recv: buffer not in a registered alloc_dma region");
                r.seg_key = key;
                r.seg_base = base;
                r.seg_end = base + size;
            }
            s.sge[k] = RcBufDesc{r.seg_key, static_cast<std::uint32_t>(addr - r.seg_base), g.length};
            total += g.length;
        }
        s.num_sge = wr[i].num_sge;
        r.wr_ids[idx % r.depth] = wr[i].wr_id;
        r.lens[idx % r.depth] = static_cast<std::uint32_t>(std::min<std::uint64_t>(total, 0xffffffffu));
        ++r.tail;
        s.state.store(slot_word(lap_of(idx, r.depth), 0, kPosted), std::memory_order_release);
    }
    return i;
}

class SoftSrq final : public Srq {
  public:
    SoftSrq(SoftContext *ctx, std::unique_ptr<RcRecvRing> ring) : ctx_(ctx), ring_(std::move(ring)) {}
    ~SoftSrq() override { free_ring(*ctx_, ring_); }
    int post_recv(const RcRecvWr *wr, int n) noexcept override { return post_ring(*ring_, wr, n); }
    RcRecvRing &ring() noexcept { return *ring_; }
    SoftCq *cq() const noexcept { return ring_->cq; }

  private:
    SoftContext *ctx_;
    std::unique_ptr<RcRecvRing> ring_;
};

} // namespace

// ---------------------------------------------------------------------------
// Receives

bool rc_ring_ready(const RcRecvRing &r) noexcept {
    if (r.cursor >= r.tail)
        return false;
    if (r.flushing && r.cursor >= r.flush_from)
        return true;
    const std::uint64_t w = r.e->slots[r.cursor % r.depth].state.load(std::memory_order_seq_cst);
    return classify_rx_slot(w, lap_of(r.cursor, r.depth)) != RxVerdict::wait;
}

// In order from the cursor, each slot read as rx_slot.hpp reads a UD one: a
// done slot's fields bounded (status known, byte_len within what was posted,
// 24-bit QPNs), a claimed one held by a dead or stalled sender taken back
// (aborted), anything else completed in error (general_err, rx_bad_slot).
int rc_poll_ring(RcRecvRing &r, Wc *wc, int n) noexcept {
    int got = 0, retries = 0;
    FabricShm *shm = r.ctx->fabric.shm();
    while (got < n && r.cursor < r.tail) {
        const std::uint32_t lap = lap_of(r.cursor, r.depth);
        const std::uint32_t i = static_cast<std::uint32_t>(r.cursor % r.depth);
        RcSlot &s = r.e->slots[i];
        Wc &c = wc[got];
        c = Wc{};
        c.opcode = WcOpcode::recv;
        c.wr_id = r.wr_ids[i];
        if (r.flushing && r.cursor >= r.flush_from) {
            // Never taken by a sender (the head was moved past it first).
            s.state.store(slot_word(lap, 0, kConsumed), std::memory_order_release);
            c.status = WcStatus::wr_flush_err;
            ++r.cursor;
            ++got;
            continue;
        }
        const std::uint64_t w = s.state.load(std::memory_order_acquire);
        RxVerdict v = classify_rx_slot(w, lap);
        if (v == RxVerdict::wait && r.e->head.load(std::memory_order_acquire) > r.cursor &&
            r.e->head.load(std::memory_order_relaxed) <= r.tail)
            v = RxVerdict::claimed;  // taken (head CAS) but not marked yet
        if (v == RxVerdict::wait)
            break;
        if (v == RxVerdict::done) {
            const std::uint8_t st = load_once(s.status);
            const std::uint32_t len = load_once(s.byte_len), src = load_once(s.src_qp), dst = load_once(s.dst_qp);
            if (st == kRxOk && len <= r.lens[i] && src <= kMaxQpn && dst <= kMaxQpn) {
                c.status = WcStatus::success;
                c.byte_len = len;
                c.src_qp = src;
                c.qp_num = dst;
                c.slid = load_once(s.slid);
            } else if (st == kRxTooLong && dst <= kMaxQpn) {
                c.status = WcStatus::loc_len_err;
                c.qp_num = dst;
            } else {
                v = RxVerdict::bad;
            }
        }
        if (v == RxVerdict::claimed) {
            if (w != r.stuck_word) {
                r.stuck_word = w;
                r.stuck_polls = 0;
                r.stuck_since = 0;
            }
            if (++r.stuck_polls % kStuckPollsPerClock != 0)
                break;
            const std::uint64_t now = now_ms();
            if (!r.stuck_since) {
                r.stuck_since = r.stuck_checked = now ? now : 1;
                break;
            }
            bool give_up = now - r.stuck_since >= r.ctx->stall_ms;
            if (!give_up && now - r.stuck_checked >= kDeadCheckMs) {
                r.stuck_checked = now;
                give_up = slot_owner(w) != 0 && !r.ctx->fabric.ident_alive(slot_owner(w));
            }
            if (!give_up)
                break;
            std::uint64_t expected = w;
            if (!s.state.compare_exchange_strong(expected, slot_word(lap, 0, kConsumed), std::memory_order_acq_rel)) {
                if (++retries > kSlotRetriesPerPoll)
                    break;
                continue;  // it finished after all
            }
            c.status = WcStatus::aborted;
        } else if (v == RxVerdict::bad) {
            std::uint64_t expected = w;
            if (!s.state.compare_exchange_strong(expected, slot_word(lap, 0, kConsumed), std::memory_order_acq_rel)) {
                if (++retries > kSlotRetriesPerPoll)
                    break;
                continue;
            }
            count(shm->ports[r.port_idx].counters[kPortRxBadSlot]);
            c = Wc{};
            c.opcode = WcOpcode::recv;
            c.wr_id = r.wr_ids[i];
            c.status = WcStatus::general_err;
        } else {
            s.state.store(slot_word(lap, 0, kConsumed), std::memory_order_release);
        }
        r.stuck_word = 0;
        ++r.cursor;
        ++got;
    }
    return got;
}

// ---------------------------------------------------------------------------
// RC QP

class SoftRcQp final : public RcQp {
  public:
    SoftRcQp(SoftContext *ctx, QpEntry *e, std::uint32_t qpn, std::uint32_t port_idx, const RcQpInit &init,
             SoftSrq * /*srq: its ring is named in the QP entry*/, std::unique_ptr<RcRecvRing> own)
        : ctx_(ctx), e_(e), qpn_(qpn), port_idx_(port_idx), port_num_(init.port_num),
          scq_(static_cast<SoftCq *>(init.send_cq)), own_(std::move(own)), pending_(init.max_send_wr) {
        scq_->rc_senders.push_back(this);
    }
    ~SoftRcQp() override {
        set_waiting(false);
        auto &v = scq_->rc_senders;
        v.erase(std::remove(v.begin(), v.end(), this), v.end());
        e_->rc_state.store(kRcStateErr, std::memory_order_release);
        e_->qpn.store(0, std::memory_order_release);
        free_ring(*ctx_, own_);
        std::uint32_t expected = ctx_->fabric.ident();
        e_->owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
    }
    std::uint32_t qp_num() const noexcept override { return qpn_; }
    int connect(const RcConnect &c) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int post_recv(const RcRecvWr *wr, int n) noexcept override {
        if (!own_)
            return ctx_->fail(-EINVAL, "post_recv: RC QP " + qpn_text(qpn_) + " receives through its SRQ");
        return post_ring(*own_, wr, n);
    }
    int set_error() noexcept override;
    RcState state() const noexcept override { return state_; }
    QpCounters counters() const noexcept override;

    void progress() noexcept;

  private:
    // A send accepted and not yet delivered (waiting behind an RNR): a copy
    // of its work request, gather list included, in a ring made at creation.
    struct Pending {
        std::uint64_t wr_id;
        std::uint32_t num_sge, len;
        bool signaled;
        Sge sg[kMaxRcSendSge];
    };
    enum class Outcome : std::uint8_t { delivered, rnr, failed };
    struct Tally {
        std::uint64_t packets = 0, bytes = 0, errors = 0;
        std::uint64_t rx_packets = 0, rx_bytes = 0, rx_too_long = 0, rnr = 0;
    };
    Outcome deliver(const Sge *sg, std::uint32_t nsge, std::uint32_t len, std::uint64_t now, Tally &t,
                    WcStatus *status) noexcept;
    bool peer_ok(std::uint64_t now) noexcept;
    void complete(std::uint64_t wr_id, bool signaled, WcStatus st) noexcept;
    void to_error() noexcept;
    void flush_pending() noexcept;
    void add(const Tally &t) noexcept;
    void capture(const Sge *sg, std::uint32_t nsge, std::uint32_t len) noexcept;
    void push_pending(const SendWr &wr, std::uint32_t len) noexcept;
    // Counted in the send CQ's rc_waiting while sends wait (its polls retry them).
    void set_waiting(bool w) noexcept {
        if (w != waiting_) {
            waiting_ = w;
            scq_->rc_waiting += w ? 1 : -1u;
        }
    }

    SoftContext *ctx_;
    QpEntry *e_;
    std::uint32_t qpn_;
    std::uint32_t port_idx_;
    std::uint8_t port_num_;
    SoftCq *scq_;
    std::unique_ptr<RcRecvRing> own_;
    RcState state_ = RcState::init;
    // The connection.
    RcConnect conn_{};
    std::uint32_t remote_port_ = kMaxPorts;  // port slot of the path's DLID
    QpEntry *re_ = nullptr;                  // the remote QP's entry
    std::uint32_t remote_owner_ = 0;
    std::uint32_t psn_ = 0;  // next packet's PSN
    std::uint64_t peer_checked_us_ = 0;
    // Sends waiting, in order.
    std::vector<Pending> pending_;
    std::uint64_t p_head_ = 0, p_tail_ = 0;
    bool rnr_waiting_ = false;
    bool waiting_ = false;  // sends wait: counted in scq_->rc_waiting
    std::uint64_t rnr_deadline_us_ = 0;
};

void rc_progress(SoftRcQp &qp) noexcept { qp.progress(); }

int SoftRcQp::connect(const RcConnect &c) noexcept {
    if (state_ != RcState::init)
        return ctx_->fail(-EINVAL, "connect: RC QP " + qpn_text(qpn_) + " is " + to_string(state_) + ", not INIT");
    if (c.remote_qpn <= kQpnReserved || c.remote_qpn > kMaxQpn)
        return ctx_->fail(-EINVAL, "connect: remote QPN " + qpn_text(c.remote_qpn));
    if (c.path_mtu < Mtu::mtu256 || c.path_mtu > Mtu::mtu4096)
        return ctx_->fail(-EINVAL, "connect: path MTU code " + std::to_string(static_cast<int>(c.path_mtu)));
    FabricShm *shm = ctx_->fabric.shm();
    std::uint32_t pi = kMaxPorts;
    for (std::uint32_t i = 0; i < kMaxPorts; ++i)
        if (shm->ports[i].guid.load(std::memory_order_acquire) &&
            shm->ports[i].lid.load(std::memory_order_relaxed) == c.path.dlid) {
            pi = i;
            break;
        }
    if (pi == kMaxPorts)
        return ctx_->fail(-EINVAL, "connect: no port of the fabric has LID " + std::to_string(c.path.dlid));
    conn_ = c;
    remote_port_ = pi;
    re_ = &shm->qps[qpn_slot(c.remote_qpn)];
    remote_owner_ = re_->owner.load(std::memory_order_acquire);
    psn_ = c.local_psn & 0xffffff;
    peer_checked_us_ = coarse_now_us();
    e_->rc_remote_qpn.store(c.remote_qpn, std::memory_order_relaxed);
    e_->rc_min_rnr.store(c.min_rnr_timer & 31u, std::memory_order_relaxed);
    e_->rc_state.store(kRcStateRts, std::memory_order_release);
    state_ = RcState::rts;
    return 0;
}

// Is the connection still there? The remote entry must be the QP connected
// to (QPN, owner, kind), connected back to this QP and in RTS, on the port
// of the path's DLID, which must be active; this QP's port too. Its owner's
// process is checked alive at most every kPeerCheckUs (syscalls).
bool SoftRcQp::peer_ok(std::uint64_t now) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    const auto active = static_cast<std::uint8_t>(PortState::active);
    if (shm->ports[port_idx_].state.load(std::memory_order_acquire) != active)
        return false;
    const PortEntry &rp = shm->ports[remote_port_];
    if (rp.state.load(std::memory_order_acquire) != active || rp.lid.load(std::memory_order_relaxed) != conn_.path.dlid)
        return false;
    if (re_->qpn.load(std::memory_order_acquire) != conn_.remote_qpn ||
        re_->owner.load(std::memory_order_relaxed) != remote_owner_ ||
        re_->kind.load(std::memory_order_relaxed) != kQpKindRc ||
        re_->port_idx.load(std::memory_order_relaxed) != remote_port_ ||
        re_->rc_state.load(std::memory_order_acquire) != kRcStateRts ||
        re_->rc_remote_qpn.load(std::memory_order_relaxed) != qpn_)
        return false;
    if (!common::pkey_match(e_->pkey.load(std::memory_order_relaxed), re_->pkey.load(std::memory_order_relaxed)))
        return false;
    if (now - peer_checked_us_ >= kPeerCheckUs) [[unlikely]] {
        peer_checked_us_ = now;
        if (!ctx_->fabric.ident_alive(remote_owner_))
            return false;
    }
    return true;
}

// One message to the peer: into one receive of its ring, scattered over the
// receive's buffers. failed: *status says how the send completes.
SoftRcQp::Outcome SoftRcQp::deliver(const Sge *sg, std::uint32_t nsge, std::uint32_t len, std::uint64_t now,
                                    Tally &t, WcStatus *status) noexcept {
    if (nsge > kMaxRcSendSge) {
        *status = WcStatus::general_err;
        return Outcome::failed;
    }
    if (!peer_ok(now)) {
        *status = WcStatus::retry_exc_err;
        return Outcome::failed;
    }
    FabricShm *shm = ctx_->fabric.shm();
    const std::uint32_t ri = re_->rc_ring.load(std::memory_order_relaxed);
    if (ri >= kMaxRcRings) [[unlikely]] {
        count(re_->counters[kQpRxBadSlot]);
        *status = WcStatus::retry_exc_err;  // garbage in its entry: nothing would answer
        return Outcome::failed;
    }
    RcRingEntry &ring = shm->rc_rings[ri];
    const std::uint32_t depth = ring.depth.load(std::memory_order_acquire);
    if (ring.owner.load(std::memory_order_relaxed) != remote_owner_ || depth == 0 || depth > kRcRqDepth)
        [[unlikely]] {
        count(re_->counters[kQpRxBadSlot]);
        *status = WcStatus::retry_exc_err;
        return Outcome::failed;
    }
    // One posted slot from the head, by CAS (as the UD claim, a run of one).
    std::uint64_t h = ring.head.load(std::memory_order_acquire);
    std::uint32_t lap = 0;
    bool claimed = false;
    for (std::uint32_t tries = 0; tries < 2 * depth + 2; ++tries) {
        lap = lap_of(h, depth);
        const std::uint64_t w = ring.slots[h % depth].state.load(std::memory_order_acquire);
        const std::int32_t ahead = lap_diff(slot_lap(w), lap);
        if (ahead == 0 && w == slot_word(lap, 0, kPosted)) {
            std::uint64_t seen = h;
            if (ring.head.compare_exchange_strong(seen, h + 1, std::memory_order_acq_rel)) {
                claimed = true;
                break;
            }
            h = seen;
            continue;
        }
        if (ahead == 0)
            ++h;
        else if (ahead > 0)
            h = std::max(h + 1, ring.head.load(std::memory_order_acquire));
        else
            break;  // not posted yet
    }
    if (!claimed) {
        ++t.rnr;
        return Outcome::rnr;
    }
    const std::uint32_t me = ctx_->fabric.ident();
    RcSlot &s = ring.slots[h % depth];
    s.state.store(slot_word(lap, me, kClaimed), std::memory_order_relaxed);
    // The receive's buffers, each read once and bounded by the segment it names.
    const std::uint32_t nbuf = load_once(s.num_sge);
    RxStatus st = nbuf >= 1 && nbuf <= kMaxRcSge ? kRxOk : kRxBadBuffer;
    std::uint8_t *dst[kMaxRcSge];
    std::uint32_t room[kMaxRcSge];
    std::uint64_t capacity = 0;
    std::uint32_t seg_key = 0, seg_size = 0;
    std::uint8_t *seg_base = nullptr;
    for (std::uint32_t k = 0; st == kRxOk && k < nbuf; ++k) {
        const std::uint32_t key = load_once(s.sge[k].seg_key), off = load_once(s.sge[k].offset),
                            l = load_once(s.sge[k].length);
        if (key != seg_key || !seg_base) {
            seg_key = key;
            seg_base = ctx_->fabric.segment_base(key, &seg_size);
        }
        if (!seg_base || std::uint64_t{off} + l > seg_size) {
            st = kRxBadBuffer;
            break;
        }
        dst[k] = seg_base + off;
        room[k] = l;
        capacity += l;
    }
    if (st == kRxOk && len > capacity)
        st = kRxTooLong;
    if (st == kRxOk) {
        // Gather list -> scatter list, in order, one copy.
        std::uint32_t k = 0, used = 0;
        for (std::uint32_t g = 0; g < nsge; ++g) {
            const auto *src = reinterpret_cast<const std::uint8_t *>(static_cast<std::uintptr_t>(sg[g].addr));
            std::uint32_t left = sg[g].length;
            while (left) {
                while (room[k] == used) {
                    ++k;
                    used = 0;
                }
                const std::uint32_t take = std::min(left, room[k] - used);
                std::memcpy(dst[k] + used, src, take);
                used += take;
                src += take;
                left -= take;
            }
        }
        ++t.rx_packets;
        t.rx_bytes += len;
    } else if (st == kRxTooLong) {
        ++t.rx_too_long;
    }
    if (ctx_->capture)
        capture(sg, nsge, len);
    const std::uint32_t mtu = mtu_bytes(conn_.path_mtu);
    psn_ = (psn_ + (len ? (len + mtu - 1) / mtu : 1)) & 0xffffff;
    // Finish only a slot still ours (a receiver may have judged us stalled).
    if (s.state.load(std::memory_order_acquire) != slot_word(lap, me, kClaimed)) [[unlikely]] {
        count(e_->counters[kQpTxLate]);
    } else {
        s.status = st;
        s.byte_len = st == kRxOk ? len : 0;
        s.src_qp = qpn_;
        s.dst_qp = conn_.remote_qpn;
        s.slid = shm->ports[port_idx_].lid.load(std::memory_order_relaxed);
        s.state.store(slot_word(lap, me, kDone), std::memory_order_release);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (ring.notify_armed.load(std::memory_order_relaxed) && ring.notify_armed.exchange(0))
            ctx_->signal_cq(remote_owner_, ring.notify_cq.load(std::memory_order_relaxed));
    }
    if (st != kRxOk) {
        *status = WcStatus::general_err;  // IBA: remote operation error (the responder's too-short receive)
        return Outcome::failed;
    }
    return Outcome::delivered;
}

// The message cut into path-MTU packets as IBA's RC SENDs: ONLY, or FIRST,
// MIDDLE..., LAST, PSNs from psn_, AckReq on the last.
void SoftRcQp::capture(const Sge *sg, std::uint32_t nsge, std::uint32_t len) noexcept {
    const PortEntry &mp = ctx_->fabric.shm()->ports[port_idx_];
    UdPacketMeta m;
    m.sl = conn_.path.sl;
    m.dlid = conn_.path.dlid;
    m.slid = mp.lid.load(std::memory_order_relaxed);
    m.pkey = e_->pkey.load(std::memory_order_relaxed);
    m.dest_qp = conn_.remote_qpn;
    m.src_qp = qpn_;
    m.grh = conn_.path.is_global;
    m.traffic_class = conn_.path.traffic_class;
    m.flow_label = conn_.path.flow_label;
    m.hop_limit = conn_.path.hop_limit;
    ctx_->query_gid(port_num_, 0, &m.sgid);
    m.dgid = conn_.path.dgid;
    const std::uint32_t mtu = mtu_bytes(conn_.path_mtu);
    const std::uint32_t npkt = len ? (len + mtu - 1) / mtu : 1;
    std::uint32_t g = 0, goff = 0;  // position in the gather list
    for (std::uint32_t p = 0; p < npkt; ++p) {
        const std::uint32_t plen = std::min(mtu, len - p * mtu);
        m.opcode = npkt == 1 ? kOpRcSendOnly : p == 0 ? kOpRcSendFirst : p + 1 == npkt ? kOpRcSendLast : kOpRcSendMiddle;
        m.ack_req = p + 1 == npkt;
        m.psn = (psn_ + p) & 0xffffff;
        Sge part[kMaxRcSendSge + 1];
        std::uint32_t np = 0, need = plen;
        while (need && g < nsge) {
            const std::uint32_t take = std::min(need, sg[g].length - goff);
            part[np++] = Sge{sg[g].addr + goff, take, 0};
            need -= take;
            goff += take;
            if (goff == sg[g].length) {
                ++g;
                goff = 0;
            }
        }
        ctx_->capture->record(m, part, np, plen);
    }
}

void SoftRcQp::complete(std::uint64_t wr_id, bool signaled, WcStatus st) noexcept {
    if (signaled || st != WcStatus::success)
        scq_->push_send(common::send_wc(wr_id, st, qpn_));  // errors complete even when unsignaled
    else
        scq_->unreserve_send();
}

void SoftRcQp::push_pending(const SendWr &wr, std::uint32_t len) noexcept {
    Pending &p = pending_[p_tail_++ % pending_.size()];
    p.wr_id = wr.wr_id;
    p.num_sge = std::min(wr.num_sge, kMaxRcSendSge);
    p.len = len;
    p.signaled = wr.signaled;
    std::memcpy(p.sg, wr.sg_list, p.num_sge * sizeof(Sge));
    set_waiting(true);
}

void SoftRcQp::flush_pending() noexcept {
    for (; p_head_ < p_tail_; ++p_head_) {
        const Pending &p = pending_[p_head_ % pending_.size()];
        complete(p.wr_id, true, WcStatus::wr_flush_err);
    }
    rnr_waiting_ = false;
    set_waiting(false);
}

void SoftRcQp::to_error() noexcept {
    state_ = RcState::error;
    e_->rc_state.store(kRcStateErr, std::memory_order_release);
    flush_pending();
    if (own_ && !own_->flushing) {
        // Receives no sender has taken yet complete flushed: move the head
        // past them (a CAS: a sender's claim in between is respected).
        std::uint64_t h = own_->e->head.load(std::memory_order_acquire);
        while (h < own_->tail &&
               !own_->e->head.compare_exchange_weak(h, own_->tail, std::memory_order_acq_rel)) {
        }
        own_->flush_from = std::max(h, own_->cursor);
        own_->flushing = true;
    }
}

int SoftRcQp::set_error() noexcept {
    if (state_ != RcState::error)
        to_error();
    return 0;
}

void SoftRcQp::add(const Tally &t) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    PortEntry &mp = shm->ports[port_idx_];
    if (t.packets) {
        count(mp.counters[kPortTxPackets], t.packets);
        count(mp.counters[kPortTxBytes], t.bytes);
        count(e_->counters[kQpTxPackets], t.packets);
        count(e_->counters[kQpTxBytes], t.bytes);
    }
    if (t.errors)
        count(e_->counters[kQpTxErrors], t.errors);
    if (t.rx_packets | t.rx_too_long | t.rnr) {
        PortEntry &dp = shm->ports[remote_port_];
        if (t.rx_packets) {
            count(dp.counters[kPortRxPackets], t.rx_packets);
            count(dp.counters[kPortRxBytes], t.rx_bytes);
            count(re_->counters[kQpRxPackets], t.rx_packets);
            count(re_->counters[kQpRxBytes], t.rx_bytes);
        }
        if (t.rx_too_long) {
            count(dp.counters[kPortDropTooLong], t.rx_too_long);
            count(re_->counters[kQpDropTooLong], t.rx_too_long);
        }
        if (t.rnr) {  // an RNR NAK: no receive posted when a message came
            count(dp.counters[kPortDropNoBuffer], t.rnr);
            count(re_->counters[kQpDropNoBuffer], t.rnr);
        }
    }
}

// The sends waiting behind an RNR, in order, until one finds no receive again.
void SoftRcQp::progress() noexcept {
    if (p_head_ == p_tail_ || state_ != RcState::rts)
        return;
    const std::uint64_t now = coarse_now_us();
    Tally t;
    while (p_head_ < p_tail_) {
        const Pending &p = pending_[p_head_ % pending_.size()];
        WcStatus st = WcStatus::success;
        const Outcome o = deliver(p.sg, p.num_sge, p.len, now, t, &st);
        if (o == Outcome::rnr) {
            if (conn_.rnr_retry != kRnrInfinite && now_us() >= rnr_deadline_us_) {
                ++p_head_;
                ++t.errors;
                complete(p.wr_id, true, WcStatus::rnr_retry_exc_err);
                to_error();
            }
            break;
        }
        rnr_waiting_ = false;
        ++p_head_;
        if (o == Outcome::failed) {
            ++t.errors;
            complete(p.wr_id, true, st);
            to_error();
            break;
        }
        ++t.packets;
        t.bytes += p.len;
        complete(p.wr_id, p.signaled, WcStatus::success);
    }
    if (p_head_ == p_tail_)
        set_waiting(false);
    add(t);
}

// Accepted: as many as the send CQ has room for (completions reserved) and
// the send queue holds. Delivered at once in order; from the first that
// finds no receive (RNR), queued and retried (progress()).
int SoftRcQp::post_send(const SendWr *wr, int n) noexcept {
    if (state_ == RcState::init || state_ == RcState::rtr)
        return ctx_->fail(-EINVAL, "post_send: RC QP " + qpn_text(qpn_) + " is not connected (" +
                                       to_string(state_) + ")");
    if (n <= 0)
        return 0;
    const std::uint64_t room = pending_.size() - (p_tail_ - p_head_);
    int accepted = scq_->reserve_sends(static_cast<int>(std::min<std::uint64_t>(static_cast<std::uint64_t>(n), room)));
    if (state_ == RcState::error) {
        for (int i = 0; i < accepted; ++i)
            complete(wr[i].wr_id, true, WcStatus::wr_flush_err);
        return accepted;
    }
    progress();
    const std::uint64_t now = coarse_now_us();
    Tally t;
    int i = 0;
    for (; i < accepted && state_ == RcState::rts; ++i) {
        const std::uint32_t len = common::send_length(wr[i], kMaxRcSendSge);
        if (p_head_ != p_tail_) {  // behind a waiting send
            push_pending(wr[i], len);
            continue;
        }
        WcStatus st = WcStatus::success;
        const Outcome o = deliver(wr[i].sg_list, wr[i].num_sge, len, now, t, &st);
        if (o == Outcome::delivered) {
            ++t.packets;
            t.bytes += len;
            complete(wr[i].wr_id, wr[i].signaled, WcStatus::success);
        } else if (o == Outcome::rnr) {
            if (conn_.rnr_retry == 0) {
                ++t.errors;
                complete(wr[i].wr_id, true, WcStatus::rnr_retry_exc_err);
                to_error();
            } else {
                rnr_waiting_ = true;
                rnr_deadline_us_ = now_us() + std::uint64_t{conn_.rnr_retry} *
                                             kRnrTimerUs[re_->rc_min_rnr.load(std::memory_order_relaxed) & 31];
                push_pending(wr[i], len);
            }
        } else {
            ++t.errors;
            complete(wr[i].wr_id, true, st);
            to_error();
        }
    }
    for (; i < accepted; ++i)  // after an error: flushed
        complete(wr[i].wr_id, true, WcStatus::wr_flush_err);
    add(t);
    return accepted;
}

QpCounters SoftRcQp::counters() const noexcept {
    auto g = [&](QpCounter i) { return e_->counters[i].load(std::memory_order_relaxed); };
    return QpCounters{g(kQpTxPackets),   g(kQpTxBytes),      g(kQpTxErrors),  g(kQpRxPackets),   g(kQpRxBytes),
                      g(kQpDropNoBuffer), g(kQpDropQkey),    g(kQpDropPkey),  g(kQpDropTooLong), g(kQpDropPortDown),
                      g(kQpDropAborted), g(kQpRxBadSlot),    g(kQpRxBadSlot), g(kQpDropStalled), g(kQpTxLate),
                      0};
}

// ---------------------------------------------------------------------------
// Context

std::unique_ptr<Srq> SoftContext::create_srq(const SrqInit &init) noexcept {
    if (!init.cq) {
        fail(-EINVAL, "create_srq: no CQ");
        return nullptr;
    }
    if (init.max_wr == 0 || init.max_wr > kRcRqDepth || init.max_sge == 0 || init.max_sge > kMaxRcRecvSge) {
        fail(-EINVAL, "create_srq: max_wr 1.." + std::to_string(kRcRqDepth) + ", max_sge 1.." +
                          std::to_string(kMaxRcRecvSge));
        return nullptr;
    }
    fabric.collect_dead();
    auto ring = alloc_ring(*this, init.max_wr, init.max_sge, static_cast<SoftCq *>(init.cq), port_idx[0]);
    if (!ring) {
        fail(-ENOSPC, "create_srq: the fabric's RC ring table (" + std::to_string(kMaxRcRings) + ") is full");
        return nullptr;
    }
    return std::make_unique<SoftSrq>(this, std::move(ring));
}

std::unique_ptr<RcQp> SoftContext::create_rc_qp(const RcQpInit &init) noexcept {
    auto *srq = static_cast<SoftSrq *>(init.srq);
    if (!check_rc_qp_init(init, srq ? srq->cq() : nullptr, kMaxRcSendWr, kRcRqDepth))
        return nullptr;
    const std::uint16_t pkey = pkey_at(init.port_num, init.pkey_index);
    if (!(pkey & common::kPkeyPartitionMask)) {
        fail(-EINVAL, "create_rc_qp: P_Key index " + std::to_string(init.pkey_index) + " holds no P_Key");
        return nullptr;
    }
    fabric.collect_dead();
    FabricShm *shm = fabric.shm();
    const std::uint32_t me = fabric.ident();
    const std::uint32_t pidx = port_idx[init.port_num - 1];
    std::uint32_t s = kMaxQps;
    for (std::uint32_t i = 0; i < kMaxQps && s == kMaxQps; ++i) {
        std::uint32_t expected = 0;
        if (shm->qps[i].owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel))
            s = i;
    }
    if (s == kMaxQps) {
        fail(-ENOSPC, "create_rc_qp: the fabric's QP table (" + std::to_string(kMaxQps) + " entries) is full");
        return nullptr;
    }
    QpEntry &e = shm->qps[s];
    std::unique_ptr<RcRecvRing> own;
    if (!srq) {
        own = alloc_ring(*this, init.max_recv_wr, init.max_recv_sge, static_cast<SoftCq *>(init.recv_cq), pidx);
        if (!own) {
            std::uint32_t expected = me;
            e.owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
            fail(-ENOSPC, "create_rc_qp: the fabric's RC ring table (" + std::to_string(kMaxRcRings) + ") is full");
            return nullptr;
        }
    }
    e.qpn.store(0, std::memory_order_relaxed);
    e.kind.store(kQpKindRc, std::memory_order_relaxed);
    e.port_idx.store(pidx, std::memory_order_relaxed);
    e.qkey.store(0, std::memory_order_relaxed);
    e.pkey.store(pkey, std::memory_order_relaxed);
    e.pkey_index.store(init.pkey_index, std::memory_order_relaxed);
    e.rq_depth.store(0, std::memory_order_relaxed);  // no UD ring: a UD sender finds no buffer
    e.nrq.store(0, std::memory_order_relaxed);
    e.rc_state.store(kRcStateInit, std::memory_order_relaxed);
    e.rc_ring.store(srq ? srq->ring().idx : own->idx, std::memory_order_relaxed);
    e.rc_remote_qpn.store(0, std::memory_order_relaxed);
    e.rc_min_rnr.store(0, std::memory_order_relaxed);
    for (auto &c : e.counters)
        c.store(0, std::memory_order_relaxed);
    e.rq_head.store(0, std::memory_order_relaxed);
    const std::uint32_t gen = shm->next_qp_gen.fetch_add(1, std::memory_order_relaxed) % kQpnGenerations + 1;
    const std::uint32_t qpn = gen << kQpSlotBits | s;
    auto qp = std::make_unique<SoftRcQp>(this, &e, qpn, pidx, init, srq, std::move(own));
    e.qpn.store(qpn, std::memory_order_release);
    return qp;
}

} // namespace ipoib::hca::soft
