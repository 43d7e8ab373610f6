// SPDX-License-Identifier: BSD-3-Clause
// The software HCA: UD queue pairs over shared memory, identity and port
// state from the managed fabric (SMP through libibumad), enforcement of what
// a real HCA and fabric enforce (P_Key, Q_Key, MTU, port state), multicast
// with loopback, counters, optional pcap capture of every packet sent.
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "../builtin_providers.hpp"
#include "../provider_common.hpp"
#include "../rss_hash.hpp"
#include "capture.hpp"
#include "fabric.hpp"
#include "ipoib/hca/hca.hpp"
#include "rx_slot.hpp"
#include "smp_client.hpp"
#include "soft_context.hpp"
#include "soft_testing.hpp"

namespace ipoib::hca::soft {


// ---------------------------------------------------------------------------
// Context

SoftContext::~SoftContext() {
    if (event_tx_fd_ >= 0)
        close(event_tx_fd_);
    if (!fabric.shm())
        return;
    for (auto idx : port_idx)
        fabric.shm()->ports[idx].refs.fetch_sub(1, std::memory_order_acq_rel);
}

bool SoftContext::open(const std::string &node, const std::string &fabric_name, const std::string &capture_path,
                       std::uint32_t poll, std::string *err) {
    name_ = node;
    poll_ms = poll;
    if (!smp_.open() || !smp_.query_node(&node_)) {
        *err = "soft HCA " + node + ": " + smp_.error();
        return false;
    }
    if (node_.num_ports == 0 || node_.num_ports > kMaxNodePorts) {
        *err = "soft HCA " + node + ": NodeInfo reports " + std::to_string(node_.num_ports) + " ports";
        return false;
    }
    nports_ = node_.num_ports;
    if (!fabric.attach(fabric_name, err))
        return false;
    if (!capture_path.empty()) {
        capture = std::make_unique<Capture>();
        if (!capture->open(capture_path, err))
            return false;
    }
    snap_.resize(node_.num_ports);
    for (std::uint8_t p = 1; p <= node_.num_ports; ++p)
        if (!smp_.query_port(p, node_, &snap_[p - 1])) {
            *err = "soft HCA " + node + " port " + std::to_string(p) + ": " + smp_.error();
            return false;
        }
    // Find or claim the shared port entries, keyed by port GUID.
    FabricShm *shm = fabric.shm();
    for (std::uint8_t p = 1; p <= node_.num_ports; ++p) {
        const std::uint64_t guid = snap_[p - 1].attr.port_guid;
        std::uint32_t found = kMaxPorts;
        for (std::uint32_t i = 0; i < kMaxPorts && found == kMaxPorts; ++i)
            if (shm->ports[i].guid.load(std::memory_order_acquire) == guid)
                found = i;
        for (std::uint32_t i = 0; i < kMaxPorts && found == kMaxPorts; ++i) {
            std::uint64_t expected = 0;
            if (shm->ports[i].guid.compare_exchange_strong(expected, guid, std::memory_order_acq_rel))
                found = i;
            else if (expected == guid)
                found = i;
        }
        if (found == kMaxPorts) {
            *err = "software-HCA fabric has no free port slot";
            return false;
        }
        shm->ports[found].refs.fetch_add(1, std::memory_order_acq_rel);
        port_idx.push_back(found);
        publish(found, snap_[p - 1]);
    }
    last_poll_ = now_ms();
    for (const PortSnapshot &s : snap_)
        if (s.attr.state != PortState::active)
            waiting_until_ = last_poll_ + kWaitingPollWindowMs;  // not up yet: waiting for the SM
    return true;
}

void SoftContext::publish(std::uint32_t idx, const PortSnapshot &s) {
    PortEntry &pe = fabric.shm()->ports[idx];
    for (std::size_t i = 0; i < kMaxPkeys; ++i)
        pe.pkeys[i].store(s.pkeys[i], std::memory_order_relaxed);
    pe.subnet_prefix.store(s.attr.subnet_prefix, std::memory_order_relaxed);
    pe.active_mtu.store(static_cast<std::uint8_t>(s.attr.active_mtu), std::memory_order_relaxed);
    pe.lid.store(s.attr.lid, std::memory_order_relaxed);
    pe.state.store(static_cast<std::uint8_t>(s.attr.state), std::memory_order_release);
}

bool SoftContext::refresh_ports(bool) {
    smp_failures_.resize(node_.num_ports);
    for (std::uint8_t p = 1; p <= node_.num_ports; ++p) {
        PortSnapshot now = snap_[p - 1];  // (what query_port keeps: the port's GUID)
        if (smp_.query_port(p, node_, &now)) {
            smp_failures_[p - 1] = 0;
        } else if (++smp_failures_[p - 1] < kSmpFailuresForDown) {
            continue;  // no answer this time: the port is as last read
        } else {
            // The local SMA always answers in the end; failing in a row means the fabric itself is gone.
            now = snap_[p - 1];
            now.attr.state = PortState::down;
        }
        const PortSnapshot &old = snap_[p - 1];
        const bool was_active = old.attr.state == PortState::active;
        const bool is_active = now.attr.state == PortState::active;
        if (was_active != is_active)
            events_.push_back({is_active ? EventType::port_active : EventType::port_error, p});
        if (was_active && !is_active)
            waiting_until_ = now_ms() + kWaitingPollWindowMs;
        if (is_active && was_active && old.attr.lid != now.attr.lid)
            events_.push_back({EventType::lid_change, p});
        if (is_active && was_active && old.attr.sm_lid != now.attr.sm_lid)
            events_.push_back({EventType::sm_change, p});
        if (std::memcmp(old.pkeys, now.pkeys, sizeof old.pkeys) != 0) {
            events_.push_back({EventType::pkey_change, p});
            refresh_qp_pkeys(port_idx[p - 1], now);
        }
        if (old.attr.subnet_prefix != now.attr.subnet_prefix)
            events_.push_back({EventType::gid_change, p});
        snap_[p - 1] = now;
        publish(port_idx[p - 1], now);
    }
    return true;
}

// As hardware: a QP's P_Key is its port's table entry at the QP's index.
// The table changed: this process's QPs on that port take the new entry (0,
// matching nobody, where the SM emptied it) until they move.
void SoftContext::refresh_qp_pkeys(std::uint32_t pidx, const PortSnapshot &now) {
    FabricShm *shm = fabric.shm();
    for (auto &e : shm->qps) {
        if (e.owner.load(std::memory_order_acquire) != fabric.ident() ||
            e.port_idx.load(std::memory_order_relaxed) != pidx)
            continue;
        const std::uint16_t idx = e.pkey_index.load(std::memory_order_relaxed);
        e.pkey.store(idx < kMaxPkeys ? now.pkeys[idx] : 0, std::memory_order_relaxed);
    }
}

int SoftContext::get_port_event(PortEvent *ev) noexcept {
    const std::uint64_t t = now_ms();
    const std::uint32_t interval = t < waiting_until_ ? std::min(poll_ms, kWaitingPollMs) : poll_ms;
    if (t - last_poll_ >= interval) {
        last_poll_ = t;
        refresh_ports(false);
    }
    if (events_.empty())
        return 0;
    *ev = events_.front();
    events_.pop_front();
    return 1;
}

int SoftContext::query_port(std::uint8_t port, PortAttr *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    if (!smp_.query_port(port, node_, &snap_[port - 1]))
        return fail(-EIO, smp_.error());
    publish(port_idx[port - 1], snap_[port - 1]);
    *out = snap_[port - 1].attr;
    return 0;
}

int SoftContext::query_gid(std::uint8_t port, int index, Gid *out) noexcept {
    if (!valid_port(port) || index != 0)
        return fail(-EINVAL, "GID index " + std::to_string(index) + " of port " + std::to_string(port) +
                                 ": only index 0 exists");
    const PortAttr &a = snap_[port - 1].attr;
    for (int i = 0; i < 8; ++i) {
        out->raw[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a.subnet_prefix >> (56 - 8 * i));
        out->raw[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(a.port_guid >> (56 - 8 * i));
    }
    return 0;
}

int SoftContext::query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept {
    // The P_KeyTable read by SMP always has kMaxPkeys entries (empty ones are 0).
    if (const int r = pkey_index_rule(port, index, static_cast<int>(kMaxPkeys), out); r <= 0)
        return r;
    *out = snap_[port - 1].pkeys[index];
    return 0;
}

void *SoftContext::alloc_dma(std::size_t len) noexcept {
    void *p = fabric.alloc_segment(len, &error_);
    return p;
}

void SoftContext::free_dma(void *p) noexcept { fabric.free_segment(p); }

std::unique_ptr<Mr> SoftContext::reg_mr(void *addr, std::size_t len) noexcept {
    std::uint32_t key;
    std::uint8_t *base;
    if (!fabric.find_local(addr, len, &key, &base)) {
        fail(-EINVAL, "reg_mr: memory not from alloc_dma (the software HCA can only reach shared memory)");
        return nullptr;
    }
    return std::make_unique<common::PlainMr>(addr, len, key);
}

std::unique_ptr<Cq> SoftContext::create_cq(int depth) noexcept {
    if (!check_cq_depth(depth, kMaxCqDepth))
        return nullptr;
    return std::make_unique<SoftCq>(static_cast<std::uint32_t>(depth));
}

sockaddr_un SoftContext::event_address(std::uint32_t ident, std::uint32_t serial, socklen_t *len) const noexcept {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    // Abstract: no file to clean up; gone with the socket (and its process).
    const int n = std::snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ipoibsoft.%s.ev.%x.%x",
                                fabric.name().c_str(), ident, serial);
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 +
                                  std::min<int>(n, static_cast<int>(sizeof a.sun_path) - 2));
    return a;
}

std::unique_ptr<Cq> SoftContext::create_event_cq(int depth) noexcept {
    if (!check_cq_depth(depth, kMaxCqDepth))
        return nullptr;
    const std::uint32_t serial = next_cq_serial_++;
    const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = 0;
    const sockaddr_un a = event_address(fabric.ident(), serial, &len);
    if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr *>(&a), len) != 0) {
        fail(-errno, std::string("create_event_cq: event socket: ") + std::strerror(errno));
        if (fd >= 0)
            close(fd);
        return nullptr;
    }
    return std::make_unique<SoftCq>(static_cast<std::uint32_t>(depth), fd, serial, &a, len);
}

// Fast path, but only toward a receiver that armed its CQ (it sleeps): one
// syscall per event. A name nobody has bound (garbage in the ring entry, a
// CQ gone) is refused by the kernel, and nothing else happens.
void SoftContext::signal_cq(std::uint32_t ident, std::uint32_t serial) noexcept {
    if (serial == 0)
        return;
    if (event_tx_fd_ < 0)
        event_tx_fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = 0;
    const sockaddr_un a = event_address(ident, serial, &len);
    const char one = 1;
    [[maybe_unused]] const auto n =
        sendto(event_tx_fd_, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr *>(&a), len);
}

std::unique_ptr<Qp> SoftContext::create_ud_qp(const QpInit &init) noexcept {
    if (!check_qp_init(init, kRqDepth))
        return nullptr;
    if (init.pkey_index >= kMaxPkeys ||
        !(snap_[init.port_num - 1].pkeys[init.pkey_index] & common::kPkeyPartitionMask)) {
        fail(-EINVAL, "create_ud_qp: P_Key index " + std::to_string(init.pkey_index) + " holds no P_Key");
        return nullptr;
    }
    FabricShm *shm = fabric.shm();
    fabric.collect_dead();
    // Own the entries (by ident: a dead owner's are freed by collect_dead):
    // the QP's, then one per receive queue when it has several. Senders skip
    // them all until the QP's QPN is published, last.
    const std::uint32_t me = fabric.ident();
    const std::uint32_t nrq = init.num_recv_queues > 1 ? init.num_recv_queues : 0;
    std::vector<std::uint32_t> taken;
    for (std::uint32_t s = 0; s < kMaxQps && taken.size() < 1 + nrq; ++s) {
        std::uint32_t expected = 0;
        if (shm->qps[s].owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel))
            taken.push_back(s);
    }
    if (taken.size() < 1 + nrq) {
        for (auto s : taken) {
            std::uint32_t expected = me;
            shm->qps[s].owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
        }
        fail(-ENOSPC, "create_ud_qp: the fabric's QP table (" + std::to_string(kMaxQps) + " entries) has no room for " +
                          std::to_string(1 + nrq) + (nrq ? " (the QP and its receive queues)" : ""));
        return nullptr;
    }
    const std::uint32_t pidx = port_idx[init.port_num - 1];
    for (std::uint32_t i = 0; i < taken.size(); ++i) {
        QpEntry &e = shm->qps[taken[i]];
        e.qpn.store(0, std::memory_order_relaxed);
        e.kind.store(i == 0 ? kQpKindUd : kQpKindRecvQueue, std::memory_order_relaxed);
        e.port_idx.store(pidx, std::memory_order_relaxed);
        e.qkey.store(init.qkey, std::memory_order_relaxed);
        e.pkey.store(snap_[init.port_num - 1].pkeys[init.pkey_index], std::memory_order_relaxed);
        e.pkey_index.store(init.pkey_index, std::memory_order_relaxed);
        e.rq_depth.store(init.max_recv_wr, std::memory_order_relaxed);
        e.nrq.store(0, std::memory_order_relaxed);
        for (auto &c : e.counters)
            c.store(0, std::memory_order_relaxed);
        for (auto &r : e.rq)
            r.state.store(0, std::memory_order_relaxed);
        e.rq_head.store(0, std::memory_order_relaxed);
    }
    const std::uint32_t s = taken[0];
    QpEntry &e = shm->qps[s];
    std::vector<std::uint32_t> rq_slots(taken.begin() + 1, taken.end());
    for (std::uint32_t i = 0; i < nrq; ++i)
        e.rq_slot[i].store(static_cast<std::uint8_t>(rq_slots[i]), std::memory_order_relaxed);
    const std::uint32_t gen = shm->next_qp_gen.fetch_add(1, std::memory_order_relaxed) % kQpnGenerations + 1;
    const std::uint32_t qpn = gen << kQpSlotBits | s;
    auto qp = std::make_unique<SoftQp>(this, &e, s, pidx, init.port_num, init, qpn, rq_slots);
    if (nrq) {
        qp->set_rss(init.rss);  // checked by check_qp_init
        e.nrq.store(nrq, std::memory_order_release);
    }
    e.qpn.store(qpn, std::memory_order_release);
    return qp;
}

std::unique_ptr<Ah> SoftContext::create_ah(const AhAttr &attr) noexcept {
    if (attr.dlid == 0 || attr.dlid == 0xffff) {
        fail(-EINVAL, "create_ah: DLID " + std::to_string(attr.dlid) + " is not routable");
        return nullptr;
    }
    if (!valid_port(attr.port_num)) {
        fail(-EINVAL, "create_ah: no port " + std::to_string(attr.port_num));
        return nullptr;
    }
    return std::make_unique<SoftAh>(attr);
}

int SoftContext::port_counters(std::uint8_t port, PortCounters *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    const auto &c = fabric.shm()->ports[port_idx[port - 1]].counters;
    auto g = [&](PortCounter i) { return c[i].load(std::memory_order_relaxed); };
    *out = PortCounters{g(kPortTxPackets),    g(kPortTxBytes),       g(kPortRxPackets),   g(kPortRxBytes),
                        g(kPortDropNoQp),     g(kPortDropPkey),      g(kPortDropPortDown), g(kPortDropNoBuffer),
                        g(kPortDropQkey),     g(kPortDropTooLong),   g(kPortTxMtuExceeded), g(kPortTxPortDown),
                        g(kPortRxBadSlot),     0,                     0};
    return 0;
}

// ---------------------------------------------------------------------------
// CQ

int SoftCq::poll(Wc *wc, int n) noexcept {
    if (rc_waiting) [[unlikely]]  // RC sends waiting for a receive (RNR) are retried on every poll
        for (SoftRcQp *q : rc_senders)
            rc_progress(*q);
    int got = sends_.pop(wc, n);
    for (RecvRing *r : rings) {
        if (got == n)
            break;
        got += r->qp->poll_recv(*r, wc + got, n - got);
    }
    for (RcRecvRing *r : rc_rings) {
        if (got == n)
            break;
        got += rc_poll_ring(*r, wc + got, n - got);
    }
    return got;
}

// Armed: every ring of the CQ asks its senders for an event (seq_cst, as
// the senders' completion and their look at the flag: either they see it
// armed, or this sees their completion). One already waiting: at once.
int SoftCq::arm_notify() noexcept {
    if (fd_ < 0)
        return -EOPNOTSUPP;
    armed_ = true;
    for (RecvRing *r : rings)
        r->e->notify_armed.store(1, std::memory_order_seq_cst);
    for (RcRecvRing *r : rc_rings)
        r->e->notify_armed.store(1, std::memory_order_seq_cst);
    bool ready = !sends_.empty();
    for (RecvRing *r : rings)
        ready = ready || r->qp->ring_ready(*r);
    for (RcRecvRing *r : rc_rings)
        ready = ready || rc_ring_ready(*r);
    if (ready)
        signal_self();
    return 0;
}

void SoftCq::ack_notify() noexcept {
    char b[64];
    while (fd_ >= 0 && recv(fd_, b, sizeof b, MSG_DONTWAIT) >= 0) {
    }
}

void SoftCq::signal_self() noexcept {
    armed_ = false;
    for (RecvRing *r : rings)
        r->e->notify_armed.store(0, std::memory_order_relaxed);
    for (RcRecvRing *r : rc_rings)
        r->e->notify_armed.store(0, std::memory_order_relaxed);
    const char one = 1;
    [[maybe_unused]] const auto n = sendto(fd_, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                                           reinterpret_cast<const sockaddr *>(&self_), self_len_);
}

// ---------------------------------------------------------------------------
// QP

SoftQp::SoftQp(SoftContext *ctx, QpEntry *e, std::uint32_t slot, std::uint32_t port_idx, std::uint8_t port_num,
               const QpInit &init, std::uint32_t qpn, const std::vector<std::uint32_t> &rq_slots)
    : ctx_(ctx), e_(e), slot_(slot), port_idx_(port_idx), port_num_(port_num), qpn_(qpn) {
    for (std::uint32_t i = 0; i < init.num_send_queues; ++i)
        sqs_.push_back(SendQueue{static_cast<SoftCq *>(init.num_send_queues > 1 ? init.send_cqs[i] : init.send_cq)});
    // One ring: the QP's own entry's. Several: the receive-queue entries'.
    const FabricShm *shm = ctx_->fabric.shm();
    for (std::uint32_t i = 0; i < init.num_recv_queues; ++i) {
        auto r = std::make_unique<RecvRing>();
        r->qp = this;
        r->slot = rq_slots.empty() ? slot : rq_slots[i];
        r->e = const_cast<QpEntry *>(&shm->qps[r->slot]);
        r->depth = init.max_recv_wr;
        r->cq = static_cast<SoftCq *>(init.num_recv_queues > 1 ? init.recv_cqs[i] : init.recv_cq);
        r->wr_ids.resize(init.max_recv_wr);
        r->lens.resize(init.max_recv_wr);
        r->e->notify_armed.store(0, std::memory_order_relaxed);
        r->e->notify_cq.store(r->cq->serial(), std::memory_order_relaxed);
        r->cq->rings.push_back(r.get());
        rings_.push_back(std::move(r));
    }
}

SoftQp::~SoftQp() {
    const std::uint32_t me = ctx_->fabric.ident();
    for (auto &r : rings_) {
        auto &v = r->cq->rings;
        v.erase(std::remove(v.begin(), v.end(), r.get()), v.end());
    }
    ctx_->fabric.group_drop_member(slot_);
    e_->qpn.store(0, std::memory_order_release);  // no sender finds the QP any more, then its queues go
    for (auto &r : rings_) {
        if (r->e == e_)
            continue;
        std::uint32_t expected = me;  // unless a collector took it (then it is not ours to free)
        r->e->owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
    }
    std::uint32_t expected = me;
    e_->owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

QpCounters SoftQp::counters() const noexcept {
    auto g = [&](QpCounter i) { return e_->counters[i].load(std::memory_order_relaxed); };
    return QpCounters{g(kQpTxPackets),     g(kQpTxBytes),    g(kQpTxErrors),   g(kQpRxPackets),
                      g(kQpRxBytes),       g(kQpDropNoBuffer), g(kQpDropQkey), g(kQpDropPkey),
                      g(kQpDropTooLong),   g(kQpDropPortDown), g(kQpDropAborted),
                      g(kQpRxBadSlot) /* rx_errors: the completions in error for a bad slot */,
                      g(kQpRxBadSlot),     g(kQpDropStalled),  g(kQpTxLate),
                      0 /* tx_bounce_bytes: it reaches all memory */};
}

int SoftQp::post_recv_queue(std::uint32_t q, const RecvWr *wr, int n) noexcept {
    if (q >= rings_.size())
        return ctx_->fail(-EINVAL, "post_recv_queue: QP " + qpn_text(qpn_) + " has no receive queue " +
                                       std::to_string(q));
    RecvRing &r = *rings_[q];
    int i = 0;
    for (; i < n; ++i) {
        if (r.tail - r.cursor >= r.depth)
            break;  // ring full
        const auto *addr = reinterpret_cast<const std::uint8_t *>(static_cast<std::uintptr_t>(wr[i].sge.addr));
        // The segment of the last buffer posted, else looked up.
        if (wr[i].sge.lkey != r.seg_key || addr < r.seg_base || addr + wr[i].sge.length > r.seg_end ||
            addr + wr[i].sge.length < addr) {
            std::uint32_t key;
            std::uint8_t *base;
            std::size_t size = 0;
            if (wr[i].sge.length < kGrhLen || !ctx_->fabric.find_local(addr, wr[i].sge.length, &key, &base, &size) ||
                key != wr[i].sge.lkey)
                return i ? i : ctx_->fail(-EINVAL, "post_recv: buffer not in a registered alloc_dma region, or "
                                                   "shorter than the 40-byte GRH area");
            r.seg_key = key;
            r.seg_base = base;
            r.seg_end = base + size;
        }
        if (wr[i].sge.length < kGrhLen)
            return i ? i : ctx_->fail(-EINVAL, "post_recv: buffer shorter than the 40-byte GRH area");
        if (wr[i].num_sge != 1)
            return i ? i : ctx_->fail(-EINVAL, "post_recv: one buffer per receive (max_recv_sge 1)");
        const std::uint32_t key = r.seg_key;
        const std::uint8_t *const base = r.seg_base;
        const std::uint64_t idx = r.tail++;
        RqSlot &s = r.e->rq[idx % r.depth];
        s.seg_key = key;
        s.offset = static_cast<std::uint32_t>(addr - base);
        s.length = wr[i].sge.length;
        r.wr_ids[idx % r.depth] = wr[i].wr_id;
        r.lens[idx % r.depth] = wr[i].sge.length;
        s.state.store(slot_word(lap_of(idx, r.depth), 0, kPosted), std::memory_order_release);
    }
    return i;
}

int SoftQp::set_rss(const RssConf &rss) noexcept {
    const auto nrq = static_cast<std::uint32_t>(rings_.size());
    if (nrq < 2)
        return ctx_->fail(-EOPNOTSUPP, "set_rss: the QP has one receive queue");
    if (!ctx_->check_rss(rss, nrq))
        return -EINVAL;
    for (std::uint32_t i = 0; i < kRssKeyLen / 8; ++i) {
        std::uint64_t w;
        std::memcpy(&w, rss.key + 8 * i, 8);
        e_->rss_key[i].store(w, std::memory_order_relaxed);
    }
    for (std::uint32_t i = 0; i < kRssRetaSize; ++i)
        e_->reta[i].store(static_cast<std::uint8_t>(rss.reta[i]), std::memory_order_relaxed);
    e_->rss_fields.store(rss.fields, std::memory_order_release);
    return 0;
}

// Completes the slots at the ring's cursor, in order. Every slot is read
// through rx_slot.hpp (the state word, then a done slot's fields): a value no
// correct process writes completes the slot in error (general_err) and is
// counted in rx_bad_slot.
int SoftQp::poll_recv(RecvRing &r, Wc *wc, int n) noexcept {
    int got = 0, retries = 0;
    while (got < n && r.cursor < r.tail) {
        const std::uint32_t lap = lap_of(r.cursor, r.depth);
        const std::uint32_t i = static_cast<std::uint32_t>(r.cursor % r.depth);
        RqSlot &s = r.e->rq[i];
        const std::uint64_t w = s.state.load(std::memory_order_acquire);
        __builtin_prefetch(&r.e->rq[(r.cursor + 1) % r.depth]);  // a sender's run fills slots in order
        Wc &c = wc[got];
        RxVerdict v = classify_rx_slot(w, lap);
        if (v == RxVerdict::done)
            v = parse_rx_fields(read_rx_slot(s, w), r.lens[i], &c);
        // Posted, but the ring's head is past it: a sender took it in a run
        // and has not marked it claimed yet (or died in between: it is held
        // like a claimed slot of an unknown sender, taken back after stall_ms).
        if (v == RxVerdict::wait && r.e->rq_head.load(std::memory_order_acquire) > r.cursor &&
            r.e->rq_head.load(std::memory_order_relaxed) <= r.tail)
            v = RxVerdict::claimed;
        if (v == RxVerdict::wait) {
            if (++r.idle_polls >= kIdlePollsBeforeHeadCheck)
                check_head(r);
            break;
        }
        r.idle_polls = 0;
        if (v == RxVerdict::claimed) {
            // A sender is writing. If it stays that way: has it died, or stalled?
            // A sender holds a run of slots: once one of them was taken back,
            // the rest of what it took before then goes at once (else a run
            // would block the ring for a second per slot). Only what it took
            // before then (below gone_head): a stalled sender that resumes
            // claims new runs, which it is writing as any live sender does.
            const std::uint32_t owner = slot_owner(w);
            bool dead = false;
            if (r.gone_valid && owner == r.gone_owner && r.cursor < r.gone_head) {
                dead = r.gone_dead;
            } else {
                if (w != r.stuck_word) {
                    r.stuck_word = w;
                    r.stuck_polls = 0;
                    r.stuck_since = 0;
                }
                if (++r.stuck_polls % kStuckPollsPerClock != 0)
                    break;
                if (!give_up_stuck(r, w, now_ms(), &dead))
                    break;
                r.gone_valid = true;
                r.gone_owner = owner;
                r.gone_dead = dead;
                r.gone_head = r.e->rq_head.load(std::memory_order_acquire);
            }
            std::uint64_t expected = w;
            if (!s.state.compare_exchange_strong(expected, slot_word(lap, 0, kConsumed), std::memory_order_acq_rel)) {
                if (++retries > kSlotRetriesPerPoll)
                    break;
                continue;  // it finished after all
            }
            count(e_->counters[dead ? kQpDropAborted : kQpDropStalled]);
            c = Wc{};
            c.status = WcStatus::aborted;
        } else if (v == RxVerdict::bad) {
            // Take it from whoever might still think it theirs, then complete it in error.
            std::uint64_t expected = w;
            if (!s.state.compare_exchange_strong(expected, slot_word(lap, 0, kConsumed), std::memory_order_acq_rel)) {
                if (++retries > kSlotRetriesPerPoll)
                    break;
                continue;
            }
            count(e_->counters[kQpRxBadSlot]);
            count(ctx_->fabric.shm()->ports[port_idx_].counters[kPortRxBadSlot]);
            c = Wc{};
            c.status = WcStatus::general_err;
        } else {
            if (r.gone_valid && slot_owner(w) == r.gone_owner) [[unlikely]]
                r.gone_valid = false;  // the stalled sender is back
            s.state.store(slot_word(lap, 0, kConsumed), std::memory_order_release);
        }
        r.stuck_word = 0;
        c.wr_id = r.wr_ids[i];
        c.opcode = WcOpcode::recv;
        c.qp_num = qpn_;
        c.pkey_index = e_->pkey_index.load(std::memory_order_relaxed);
        ++r.cursor;
        ++got;
    }
    return got;
}

// Should the receiver take back the slot (state word w) a sender has held
// since it was first seen (the clock now reads now, in ms)? Yes if the
// sender's incarnation is dead (*dead), or alive but holding it for
// stall_ms or more: a stopped or stuck process blocks its receive queue for
// that long at most.
bool SoftQp::give_up_stuck(RecvRing &r, std::uint64_t w, std::uint64_t now, bool *dead) noexcept {
    if (!r.stuck_since) {
        r.stuck_since = now ? now : 1;
        r.stuck_checked = r.stuck_since;
        return false;
    }
    if (now - r.stuck_checked >= kDeadCheckMs) {
        r.stuck_checked = now;
        if (slot_owner(w) != 0 && !ctx_->fabric.ident_alive(slot_owner(w))) {  // 0: taken in a run, not marked yet
            *dead = true;
            return true;
        }
    }
    return now - r.stuck_since >= ctx_->stall_ms;
}

// The ring head is where senders take slots from (claim_run): garbage past
// what this process posted would have them find no buffer for good (and one
// behind the cursor would have them search). An idle receiver puts it back
// at the cursor; a CAS, so a sender's own progress is never undone.
void SoftQp::check_head(RecvRing &r) noexcept {
    r.idle_polls = 0;
    std::uint64_t h = r.e->rq_head.load(std::memory_order_relaxed);
    if (h < r.cursor || h > r.tail)
        r.e->rq_head.compare_exchange_strong(h, r.cursor, std::memory_order_acq_rel);
}

int SoftQp::set_pkey_index(std::uint16_t index) noexcept {
    std::uint16_t k = 0;
    if (const int r = ctx_->query_pkey(port_num_, index, &k); r != 0)
        return r;
    e_->pkey_index.store(index, std::memory_order_relaxed);
    e_->pkey.store(k, std::memory_order_release);
    return 0;
}

int SoftQp::attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept {
    if (!mgid.is_multicast() || mlid < kMulticastLidBase || mlid == 0xffff)
        return ctx_->fail(-EINVAL, "attach_mcast: not a multicast GID/LID");
    std::string err;
    const int r = ctx_->fabric.group_attach(mgid.raw.data(), mlid, slot_, &err);
    return r ? ctx_->fail(r, "attach_mcast: " + err) : 0;
}

int SoftQp::detach_mcast(const Gid &mgid, std::uint16_t) noexcept {
    std::string err;
    const int r = ctx_->fabric.group_detach(mgid.raw.data(), slot_, &err);
    return r ? ctx_->fail(r, "detach_mcast: " + err) : 0;
}

// A run of up to `want` posted slots of ring d from its head, taken with one
// CAS on the head (the only way a sender takes a slot, so a head CAS that
// succeeds makes the run this sender's alone), then marked claimed by this
// process with plain stores to lines the sender writes next anyway. Returns
// how many it took (0: no buffer posted) and the first ring index in *first.
std::uint32_t SoftQp::claim_run(QpEntry &d, std::uint32_t depth, std::uint32_t want, std::uint64_t *first) noexcept {
    const std::uint32_t me = ctx_->fabric.ident();
    std::uint64_t seen = d.rq_head.load(std::memory_order_acquire);
    std::uint64_t h = seen;
    for (std::uint32_t tries = 0; tries < 2 * depth + 2; ++tries) {
        const std::uint32_t lap = lap_of(h, depth);
        const std::uint64_t w = d.rq[h % depth].state.load(std::memory_order_acquire);
        const std::int32_t ahead = lap_diff(slot_lap(w), lap);
        if (ahead == 0 && w == slot_word(lap, 0, kPosted)) {
            // How many posted slots follow (ring position and lap stepped, not divided).
            const std::uint32_t pos0 = static_cast<std::uint32_t>(h % depth);
            std::uint32_t k = 1, pos = pos0 + 1, l = lap;
            for (; k < want && k < depth; ++k, ++pos) {
                if (pos == depth) {
                    pos = 0;
                    ++l;
                }
                if (d.rq[pos].state.load(std::memory_order_acquire) != slot_word(l, 0, kPosted))
                    break;
            }
            if (!d.rq_head.compare_exchange_strong(seen, h + k, std::memory_order_acq_rel)) {
                h = seen;  // another sender (or the receiver's head check) moved it: look again from there
                continue;
            }
            pos = pos0;
            l = lap;
            for (std::uint32_t i = 0; i < k; ++i, ++pos) {
                if (pos == depth) {
                    pos = 0;
                    ++l;
                }
                d.rq[pos].state.store(slot_word(l, me, kClaimed), std::memory_order_relaxed);
            }
            *first = h;
            return k;
        }
        if (ahead == 0)  // claimed, done or consumed in this lap (or garbage): the head is behind
            ++h;
        else if (ahead > 0) {  // our view of the head is a lap behind
            seen = d.rq_head.load(std::memory_order_acquire);
            h = std::max(h + 1, seen);
        } else
            return 0;  // not posted yet: no buffer
    }
    return 0;
}

// The ring a message for QP entry d goes to: d's own, or with RSS the
// receive queue its redirection table names for the message's hash. nullptr:
// d's RSS state holds what its owner never writes (counted by the caller).
QpEntry *SoftQp::pick_ring(QpEntry &d, const SendWr &wr, SendFlow &flow, std::uint32_t *hash,
                           bool *hashed) noexcept {
    const std::uint32_t nrq = d.nrq.load(std::memory_order_acquire);
    *hashed = false;
    if (nrq == 0)
        return &d;
    if (!valid_nrq(nrq)) [[unlikely]]
        return nullptr;
    const std::uint32_t fields = d.rss_fields.load(std::memory_order_acquire);
    if (!flow.parsed) {
        // The headers, gathered from the message's pieces.
        std::uint8_t peek[common::kFlowPeekLen];
        std::uint32_t got = 0;
        for (std::uint32_t i = 0; i < wr.num_sge && got < sizeof peek; ++i) {
            const std::uint32_t take = std::min<std::uint32_t>(wr.sg_list[i].length, sizeof peek - got);
            std::memcpy(peek + got, reinterpret_cast<const void *>(static_cast<std::uintptr_t>(wr.sg_list[i].addr)),
                        take);
            got += take;
        }
        flow.tuple = common::flow_tuple(peek, got);
        flow.parsed = true;
    }
    std::uint32_t entry = 0;
    if (fields && flow.tuple.kind != common::FlowKind::none) {
        std::uint8_t key[kRssKeyLen];
        for (std::uint32_t i = 0; i < kRssKeyLen / 8; ++i) {
            const std::uint64_t w = d.rss_key[i].load(std::memory_order_relaxed);
            std::memcpy(key + 8 * i, &w, 8);
        }
        if (common::rss_hash(flow.tuple, fields, key, hash)) {
            *hashed = true;
            entry = *hash % kRssRetaSize;
        }
    }
    const std::uint32_t q = d.reta[entry].load(std::memory_order_relaxed);
    if (q >= nrq) [[unlikely]]
        return nullptr;
    const std::uint32_t rs = d.rq_slot[q].load(std::memory_order_relaxed);
    if (rs >= kMaxQps) [[unlikely]]
        return nullptr;
    QpEntry &r = ctx_->fabric.shm()->qps[rs];
    if (r.kind.load(std::memory_order_acquire) != kQpKindRecvQueue ||
        r.owner.load(std::memory_order_acquire) != d.owner.load(std::memory_order_relaxed)) [[unlikely]]
        return nullptr;
    return &r;
}

// What a burst adds to shared counters, once per burst or run (never per message).
struct SoftQp::Tally {
    std::uint64_t packets = 0, bytes = 0;
};

// The destination QP entry of a unicast run, or why there is none (counted
// here, once per run, n messages). Every value read from shared memory is
// bounded before it indexes anything (rx_slot.hpp).
QpEntry *SoftQp::check_dest(std::uint32_t dst_slot, std::uint32_t dst_port, std::uint32_t qkey,
                            std::uint64_t n) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    QpEntry &d = shm->qps[dst_slot];
    if (!valid_port_idx(dst_port)) [[unlikely]] {
        count(d.counters[kQpRxBadSlot], n);
        return nullptr;
    }
    PortEntry &dp = shm->ports[dst_port];
    if (dp.state.load(std::memory_order_acquire) != static_cast<std::uint8_t>(PortState::active)) {
        count(dp.counters[kPortDropPortDown], n);
        count(d.counters[kQpDropPortDown], n);
        return nullptr;
    }
    if (!pkey_match(e_->pkey.load(std::memory_order_relaxed), d.pkey.load(std::memory_order_relaxed))) {
        count(dp.counters[kPortDropPkey], n);
        count(d.counters[kQpDropPkey], n);
        return nullptr;
    }
    if (qkey != d.qkey.load(std::memory_order_relaxed)) {
        count(dp.counters[kPortDropQkey], n);
        count(d.counters[kQpDropQkey], n);
        return nullptr;
    }
    return &d;
}

// n messages (all to QP entry d on port dst_port, each ok[i]) into d's receive
// rings: consecutive messages for the same ring take their slots as one run
// (claim_run), are copied into the receiver's buffers and published one by
// one; the destination's counters are added once at the end.
void SoftQp::deliver_run(QpEntry &d, std::uint32_t dst_port, const SendWr *wr, const std::uint32_t *len,
                         const bool *ok, std::uint32_t n, const SoftAh &ah) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    PortEntry &dp = shm->ports[dst_port];
    QpEntry *ring[kRunMax];
    std::uint32_t hash[kRunMax];
    bool hashed[kRunMax];
    std::uint64_t bad = 0, no_buffer = 0, too_long = 0;
    Tally rx;
    // The ring of each message: d's own without RSS, else by its hash.
    const bool rss = d.nrq.load(std::memory_order_acquire) != 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        hash[i] = 0;
        hashed[i] = false;
        ring[i] = ok[i] ? &d : nullptr;
        if (!ok[i] || !rss)
            continue;
        SendFlow flow;
        ring[i] = pick_ring(d, wr[i], flow, &hash[i], &hashed[i]);
        if (!ring[i]) [[unlikely]]
            ++bad;
    }
    Gid sgid{};
    if (ah.attr_.is_global)
        ctx_->query_gid(port_num_, 0, &sgid);
    const std::uint32_t me = ctx_->fabric.ident();
    const std::uint16_t slid = shm->ports[port_idx_].lid.load(std::memory_order_relaxed);
    std::uint32_t seg_key = 0, seg_size = 0;
    std::uint8_t *seg_base = nullptr;
    std::uint32_t i = 0;
    while (i < n) {
        if (!ring[i]) {
            ++i;
            continue;
        }
        QpEntry *r = ring[i];
        std::uint32_t j = i + 1;
        while (j < n && ring[j] == r)
            ++j;
        const std::uint32_t depth = r->rq_depth.load(std::memory_order_relaxed);
        if (!valid_rq_depth(depth)) [[unlikely]] {
            bad += j - i;
            i = j;
            continue;
        }
        std::uint64_t idx = 0;
        const std::uint32_t got = claim_run(*r, depth, j - i, &idx);
        no_buffer += (j - i) - got;
        if (got && ctx_->fault_stall_after_claim) [[unlikely]] {
            if (!ctx_->fault_stall_ms)
                for (;;)
                    pause();  // die here, holding claimed slots, when the test kills us
            usleep(ctx_->fault_stall_ms * 1000);  // or come back late
        }
        std::uint32_t pos = got ? static_cast<std::uint32_t>(idx % depth) : 0;
        std::uint32_t lap = got ? lap_of(idx, depth) : 0;
        for (std::uint32_t k = 0; k < got; ++k, ++pos) {
            const std::uint32_t m = i + k;
            if (pos == depth) {
                pos = 0;
                ++lap;
            }
            RqSlot *s = &r->rq[pos];
            if (k + 1 < got)
                __builtin_prefetch(&r->rq[pos + 1 < depth ? pos + 1 : 0], 1);
            // The receiver's buffer descriptor, each field read once and bounded by the segment it names.
            const std::uint32_t key = load_once(s->seg_key), offset = load_once(s->offset),
                                length = load_once(s->length);
            // The receiver posts its buffers from one segment or few: the last one's mapping is kept.
            if (key != seg_key || !seg_base) {
                seg_key = key;
                seg_base = ctx_->fabric.segment_base(key, &seg_size);
            }
            std::uint8_t *base = seg_base;
            const RxStatus st = check_rx_buffer(offset, length, base ? seg_size : 0, len[m]);
            if (st == kRxOk) {
                std::uint8_t *buf = base + offset;
                if (ah.attr_.is_global)
                    common::write_grh(buf, ah.attr_, sgid, len[m]);
                std::uint8_t *dst = buf + kGrhLen;
                for (std::uint32_t g = 0; g < wr[m].num_sge; ++g) {
                    const auto *src = reinterpret_cast<const std::uint8_t *>(
                        static_cast<std::uintptr_t>(wr[m].sg_list[g].addr));
                    const std::uint32_t l = wr[m].sg_list[g].length;
                    if (l == 4)
                        std::memcpy(dst, src, 4);  // an IPoIB header: no call
                    else
                        std::memcpy(dst, src, l);
                    dst += l;
                }
                ++rx.packets;
                rx.bytes += len[m];
            } else if (st == kRxTooLong) {
                ++too_long;
            }  // kRxBadBuffer: the receiver counts it when it completes the slot
            // Finish only a slot still ours: a receiver that judged this process
            // dead or stalled has taken it back, and may have posted it again.
            const std::uint64_t claimed = slot_word(lap, me, kClaimed);
            if (s->state.load(std::memory_order_acquire) != claimed) [[unlikely]] {
                count(e_->counters[kQpTxLate]);
                continue;
            }
            s->status = st;
            s->byte_len = kGrhLen + len[m];
            s->src_qp = qpn_;
            s->slid = slid;
            s->sl = ah.attr_.sl & kMaxSl;
            s->rss_hash = hash[m];
            s->flags = static_cast<std::uint8_t>((ah.attr_.is_global ? kWcGrh : 0) | (hashed[m] ? kWcRssHash : 0));
            s->state.store(slot_word(lap, me, kDone), std::memory_order_release);
        }
        // A receiver waiting for an event on this ring: one datagram, by whoever clears the flag.
        if (got) {
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (r->notify_armed.load(std::memory_order_relaxed) &&
                r->notify_armed.exchange(0, std::memory_order_seq_cst))
                ctx_->signal_cq(r->owner.load(std::memory_order_relaxed),
                                r->notify_cq.load(std::memory_order_relaxed));
        }
        i = j;
    }
    if (rx.packets) {
        count(dp.counters[kPortRxPackets], rx.packets);
        count(dp.counters[kPortRxBytes], rx.bytes);
        count(d.counters[kQpRxPackets], rx.packets);
        count(d.counters[kQpRxBytes], rx.bytes);
    }
    if (no_buffer) {
        count(dp.counters[kPortDropNoBuffer], no_buffer);
        count(d.counters[kQpDropNoBuffer], no_buffer);
    }
    if (too_long) {
        count(dp.counters[kPortDropTooLong], too_long);
        count(d.counters[kQpDropTooLong], too_long);
    }
    if (bad) [[unlikely]] {
        count(dp.counters[kPortRxBadSlot], bad);
        count(d.counters[kQpRxBadSlot], bad);
    }
}

// The group slot of a multicast LID (the handle's cached one if still right).
std::uint32_t SoftQp::find_group(SoftAh &ah, std::uint16_t dlid) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    std::uint32_t gi = ah.cached_idx.load(std::memory_order_relaxed);
    if (gi < kMaxGroups && shm->groups[gi].mlid.load(std::memory_order_relaxed) == dlid &&
        shm->groups[gi].state.load(std::memory_order_acquire) == kGroupLive)
        return gi;
    gi = kMaxGroups;
    for (std::uint32_t i = 0; i < kMaxGroups; ++i)
        if (shm->groups[i].state.load(std::memory_order_acquire) == kGroupLive &&
            shm->groups[i].mlid.load(std::memory_order_relaxed) == dlid) {
            gi = i;
            break;
        }
    ah.cached_idx.store(gi, std::memory_order_relaxed);
    return gi;
}

// The port slot of a unicast LID (the handle's cached one if still right).
std::uint32_t SoftQp::find_port(SoftAh &ah, std::uint16_t dlid) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    std::uint32_t pi = ah.cached_idx.load(std::memory_order_relaxed);
    if (pi < kMaxPorts && shm->ports[pi].lid.load(std::memory_order_relaxed) == dlid)
        return pi;
    pi = kMaxPorts;
    for (std::uint32_t i = 0; i < kMaxPorts; ++i)
        if (shm->ports[i].guid.load(std::memory_order_relaxed) && shm->ports[i].lid.load(std::memory_order_relaxed) == dlid) {
            pi = i;
            break;
        }
    ah.cached_idx.store(pi, std::memory_order_relaxed);
    return pi;
}

// A run of n (<= kRunMax) sends with one address handle, destination QPN and
// Q_Key: each checked (handle, gather list, port, MTU), the good ones
// delivered (unicast: to one QP entry as a run; multicast: to every member),
// then completed in order.
void SoftQp::send_run(SendQueue &sq, const SendWr *wr, std::uint32_t n, Tally &sent) noexcept {
    FabricShm *shm = ctx_->fabric.shm();
    PortEntry &mp = shm->ports[port_idx_];
    auto *ah = static_cast<SoftAh *>(wr[0].ah);
    const std::uint8_t mtu_code = mp.active_mtu.load(std::memory_order_relaxed);
    const bool active = mp.state.load(std::memory_order_acquire) == static_cast<std::uint8_t>(PortState::active);
    WcStatus status[kRunMax];
    std::uint32_t len[kRunMax];
    bool ok[kRunMax];
    std::uint32_t good = 0;
    std::uint64_t port_down = 0, mtu_exceeded = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        len[i] = common::send_length(wr[i]);
        status[i] = WcStatus::success;
        if (!ah || wr[i].num_sge > kMaxSendSge || !valid_mtu_code(mtu_code)) {
            status[i] = WcStatus::general_err;  // (an MTU code no process writes: the port entry is garbage)
        } else if (!active) {
            status[i] = WcStatus::loc_qp_op_err;
            ++port_down;
        } else if (common::exceeds_mtu(len[i], mtu_bytes(static_cast<Mtu>(mtu_code)))) {
            status[i] = WcStatus::loc_len_err;
            ++mtu_exceeded;
        }
        ok[i] = status[i] == WcStatus::success;
        good += ok[i];
    }
    if (port_down)
        count(mp.counters[kPortTxPortDown], port_down);
    if (mtu_exceeded)
        count(mp.counters[kPortTxMtuExceeded], mtu_exceeded);
    if (good) {
        const std::uint32_t qkey = common::send_qkey(wr[0].remote_qkey, e_->qkey.load(std::memory_order_relaxed));
        const std::uint16_t dlid = ah->attr_.dlid;
        if (dlid >= kMulticastLidBase) {
            // Multicast: every QP attached to the group, the sender's own port included.
            const std::uint32_t gi = find_group(*ah, dlid);
            if (gi < kMaxGroups) {
                GroupEntry &g = shm->groups[gi];
                for (std::uint32_t w = 0; w < kMaxQps / 64; ++w) {
                    std::uint64_t bits = g.members[w].load(std::memory_order_acquire);
                    while (bits) {
                        const std::uint32_t q = w * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits));
                        bits &= bits - 1;
                        const QpEntry &d = shm->qps[q];
                        if (d.qpn.load(std::memory_order_acquire) <= kQpnReserved)
                            continue;
                        const std::uint32_t dport = d.port_idx.load(std::memory_order_relaxed);
                        if (QpEntry *e = check_dest(q, dport, qkey, good))
                            deliver_run(*e, dport, wr, len, ok, n, *ah);
                    }
                }
            }
        } else {
            const std::uint32_t pi = find_port(*ah, dlid);
            const std::uint32_t rq = wr[0].remote_qpn;
            const std::uint32_t q = qpn_slot(rq);
            if (pi < kMaxPorts && rq > kQpnReserved && shm->qps[q].qpn.load(std::memory_order_acquire) == rq &&
                shm->qps[q].port_idx.load(std::memory_order_relaxed) == pi &&
                shm->qps[q].kind.load(std::memory_order_relaxed) == kQpKindUd) {  // an RC QP takes no datagrams
                if (QpEntry *e = check_dest(q, pi, qkey, good))
                    deliver_run(*e, pi, wr, len, ok, n, *ah);
            } else {
                count(pi < kMaxPorts ? shm->ports[pi].counters[kPortDropNoQp] : mp.counters[kPortDropNoQp],
                      good);  // no port with that LID: lost in the fabric
            }
        }
    }
    std::uint64_t errors = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        if (!ok[i]) {
            ++errors;
            sq.cq->push_send(common::send_wc(wr[i].wr_id, status[i], qpn_));  // errors complete even when unsignaled
            continue;
        }
        if (ctx_->capture)
            capture(sq, wr[i], len[i], qkey_of(wr[i]));
        sq.psn = (sq.psn + 1) & 0xffffff;
        ++sent.packets;
        sent.bytes += len[i];
        if (wr[i].signaled)
            sq.cq->push_send(common::send_wc(wr[i].wr_id, WcStatus::success, qpn_));
        else
            sq.cq->unreserve_send();
    }
    if (errors)
        count(e_->counters[kQpTxErrors], errors);
}

std::uint32_t SoftQp::qkey_of(const SendWr &wr) const noexcept {
    return common::send_qkey(wr.remote_qkey, e_->qkey.load(std::memory_order_relaxed));
}

void SoftQp::capture(const SendQueue &sq, const SendWr &wr, std::uint32_t len, std::uint32_t qkey) noexcept {
    const PortEntry &mp = ctx_->fabric.shm()->ports[port_idx_];
    const auto *ah = static_cast<const SoftAh *>(wr.ah);
    UdPacketMeta m;
    m.sl = ah->attr_.sl;
    m.dlid = ah->attr_.dlid;
    m.slid = mp.lid.load(std::memory_order_relaxed);
    m.pkey = e_->pkey.load(std::memory_order_relaxed);
    m.dest_qp = wr.remote_qpn;
    m.src_qp = qpn_;
    m.qkey = qkey;
    m.psn = sq.psn;
    m.grh = ah->attr_.is_global;
    m.traffic_class = ah->attr_.traffic_class;
    m.flow_label = ah->attr_.flow_label;
    m.hop_limit = ah->attr_.hop_limit;
    ctx_->query_gid(port_num_, 0, &m.sgid);
    m.dgid = ah->attr_.dgid;
    ctx_->capture->record(m, wr.sg_list, wr.num_sge, len);
}

// A work request is accepted only if its completion has a place in the send
// CQ (reserved here, for the whole burst at once; send_run uses each place
// or gives it back): a full CQ stops the burst and the count accepted is
// returned, as ibv_post_send stops at a full send queue (ENOMEM). No
// completion is ever dropped. Consecutive requests to one destination go as
// a run (one claim of the receiver's slots, counters added once).
int SoftQp::post_send_queue(std::uint32_t q, const SendWr *wr, int n) noexcept {
    if (q >= sqs_.size())
        return ctx_->fail(-EINVAL, "post_send_queue: QP " + qpn_text(qpn_) + " has no send queue " +
                                       std::to_string(q));
    SendQueue &sq = sqs_[q];
    const auto accepted = static_cast<std::uint32_t>(sq.cq->reserve_sends(n < 0 ? 0 : n));
    Tally sent;
    std::uint32_t i = 0;
    while (i < accepted) {
        std::uint32_t j = i + 1;
        while (j < accepted && j - i < kRunMax && wr[j].ah == wr[i].ah && wr[j].remote_qpn == wr[i].remote_qpn &&
               wr[j].remote_qkey == wr[i].remote_qkey)
            ++j;
        send_run(sq, wr + i, j - i, sent);
        i = j;
    }
    if (sent.packets) {
        PortEntry &mp = ctx_->fabric.shm()->ports[port_idx_];
        count(mp.counters[kPortTxPackets], sent.packets);
        count(mp.counters[kPortTxBytes], sent.bytes);
        count(e_->counters[kQpTxPackets], sent.packets);
        count(e_->counters[kQpTxBytes], sent.bytes);
    }
    return static_cast<int>(accepted);
}

namespace {

// The provider: options, defaults from the environment umad2sim uses.
constexpr ProviderOption kOptions[] = {
    {"fabric", "the fabric's name (default $IBSIM_SOCKNAME): letters, digits, '_', '-'"},
    {"capture", "append every packet sent to this pcap file (IB link packets, DLT 147)"},
    {"poll_ms", "port re-read interval in ms, 1..60000 (default 100)"},
};

std::unique_ptr<Context> open_provider(const std::string &device, const ProviderOptions &opts, std::string *err) {
    std::uint32_t poll_ms = 0;
    if (!common::option_uint(opts, "poll_ms", 1, kMaxPollMs, kDefaultPollMs, &poll_ms, err))
        return nullptr;
    std::string node = device, fabric = opts.get("fabric");
    if (node.empty()) {
        const char *h = std::getenv("SIM_HOST");
        node = h ? h : "";
    }
    if (fabric.empty()) {
        const char *s = std::getenv("IBSIM_SOCKNAME");
        fabric = s ? s : "";
    }
    if (fabric.empty()) {
        *err = "soft provider: no fabric name (option fabric=, or IBSIM_SOCKNAME)";
        return nullptr;
    }
    for (char c : fabric)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
            *err = "soft provider: fabric name '" + fabric + "' may only hold letters, digits, '_', '-'";
            return nullptr;
        }
    auto ctx = std::make_unique<SoftContext>();
    if (!ctx->open(node, fabric, opts.get("capture"), poll_ms, err))
        return nullptr;
    return ctx;
}

} // namespace

bool arm_stall_after_claim(Context &ctx, std::uint32_t ms) noexcept {
    auto *soft = dynamic_cast<SoftContext *>(&ctx);
    if (!soft)
        return false;
    soft->fault_stall_after_claim = true;
    soft->fault_stall_ms = ms;
    return true;
}

bool set_stall_ms(Context &ctx, std::uint32_t ms) noexcept {
    auto *soft = dynamic_cast<SoftContext *>(&ctx);
    if (!soft)
        return false;
    soft->stall_ms = ms;
    return true;
}

FabricShm *fabric_shm(Context &ctx) noexcept {
    auto *soft = dynamic_cast<SoftContext *>(&ctx);
    return soft ? soft->fabric.shm() : nullptr;
}

bool fabric_proc(Context &ctx, std::uint32_t *proc, std::uint32_t *gen) noexcept {
    auto *soft = dynamic_cast<SoftContext *>(&ctx);
    if (!soft)
        return false;
    *proc = soft->fabric.proc();
    *gen = soft->fabric.gen();
    return true;
}

} // namespace ipoib::hca::soft

IPOIB_HCA_PROVIDER(soft, "the software HCA: UD over shared memory, identity and port state from OpenSM on ibsim",
                   ipoib::hca::soft::kOptions, ipoib::hca::soft::open_provider)
