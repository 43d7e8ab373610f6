// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's objects (internal to lib/hca/src/soft): the context, its
// CQs, UD QPs and address handles, and the numbers they share. soft_hca.cpp
// defines the UD side, soft_rc.cpp the reliable connections (SRQ, RC QPs)
// and gsi.cpp the CM MADs' mailboxes.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "../provider_common.hpp"
#include "../rss_hash.hpp"
#include "capture.hpp"
#include "fabric.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/rc.hpp"
#include "rx_slot.hpp"
#include "smp_client.hpp"

namespace ipoib::hca::soft {

// The software HCA's numbers, in one place (the sizes of the shared tables
// are in shm_layout.hpp).
constexpr std::uint32_t kDefaultPollMs = 100;    // port re-read interval (option poll_ms)
constexpr std::uint32_t kMaxPollMs = 60000;      // option poll_ms: 1..kMaxPollMs
// After a port stops being active (a flap, a ReLink, the SM gone), and at
// open while one is not active yet, ports are re-read this often for
// kWaitingPollWindowMs, so its return is seen within milliseconds of the SM
// making it active (nothing tells the HCA: ibsim sends clients no traps or
// reports); then at poll_ms again. No spinning: an SMP every few ms.
constexpr std::uint32_t kWaitingPollMs = 5;
constexpr std::uint32_t kWaitingPollWindowMs = 10000;
// PortInfo reads that fail in a row before a port counts as down: one read
// that times out (ibsim late on a loaded machine) is no news, not a port down.
constexpr std::uint32_t kSmpFailuresForDown = 3;
constexpr std::uint8_t kMaxNodePorts = 2;        // ports of one HCA node
constexpr int kMaxCqDepth = 1 << 20;             // create_cq: 1..kMaxCqDepth
// QPN = generation << kQpSlotBits | slot, generation 1..kQpnGenerations: QPNs
// of a slot change across reuse, and stay below the multicast QPN 0xffffff.
constexpr std::uint32_t kQpnGenerations = (1u << 17) - 2;
constexpr std::uint32_t kQpnReserved = 1;        // never a data QPN (generations start at 1)
// A receive slot claimed by a sender that does not finish: the receiver reads
// the clock every kStuckPollsPerClock polls of it (never per message); once
// it has been held kDeadCheckMs it checks, at most that often, whether the
// sender's incarnation is alive (syscalls: slow path only) and completes the
// slot as aborted if not (drop_aborted); a live sender holding it
// kStalledSlotMs (a stopped or stuck process) loses it too (drop_stalled).
constexpr std::uint32_t kStuckPollsPerClock = 16;
constexpr std::uint64_t kDeadCheckMs = 2;
constexpr std::uint32_t kStalledSlotMs = 1000;
// Polls of an idle receive queue (a buffer posted, nothing arriving) between
// two checks of its ring head, a hint in shared memory senders start from.
constexpr std::uint32_t kIdlePollsBeforeHeadCheck = 1024;
// Slots a poll may find changed under it (a CAS lost) before it gives up
// until the next poll: a peer flipping a state word cannot keep it spinning.
constexpr int kSlotRetriesPerPoll = 4;

inline std::uint64_t now_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

using common::pkey_match;

inline std::string qpn_text(std::uint32_t qpn) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%06x", qpn);
    return b;
}

inline void count(std::atomic<std::uint64_t> &c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
}

class SoftContext;
class SoftQp;
class SoftCq;
class SoftRcQp;

// One RC receive ring (soft_rc.cpp): an SRQ's, or an RC QP's own receive
// queue; the entry rc_rings[idx] of the fabric and what this process posted
// in it. Its completions are read by the CQ it was created with.
struct RcRecvRing {
    SoftContext *ctx;
    RcRingEntry *e;
    std::uint32_t idx;
    std::uint32_t depth;
    std::uint32_t max_sge;
    SoftCq *cq;
    std::uint32_t port_idx;  // for counting bad slots
    // Per ring index: the work request and the receive's total length (the
    // slot's own descriptors are shared memory).
    std::vector<std::uint64_t> wr_ids;
    std::vector<std::uint32_t> lens;
    std::uint64_t tail = 0, cursor = 0;
    // The segment of the last buffer posted.
    std::uint32_t seg_key = 0;
    const std::uint8_t *seg_base = nullptr, *seg_end = nullptr;
    // A claimed slot at the cursor that stays so (a dead or stopped sender).
    std::uint64_t stuck_word = 0;
    std::uint32_t stuck_polls = 0;
    std::uint64_t stuck_since = 0, stuck_checked = 0;
    // Flushed (its QP went to ERR; never an SRQ): indexes from flush_from on
    // were never taken by a sender and complete as wr_flush_err.
    bool flushing = false;
    std::uint64_t flush_from = 0;
};
// Complete up to n receives of the ring in order; how many.
int rc_poll_ring(RcRecvRing &r, Wc *wc, int n) noexcept;
// Retry an RC QP's sends waiting for a receive (RNR); nothing if none wait.
void rc_progress(SoftRcQp &qp) noexcept;
bool rc_ring_ready(const RcRecvRing &r) noexcept;

class SoftAh final : public Ah {
  public:
    explicit SoftAh(const AhAttr &a) : attr_(a) {}
    const AhAttr &attr() const noexcept override { return attr_; }
    AhAttr attr_;
    // Port (unicast) or group (multicast) slot, revalidated on use; written
    // by whichever send queue uses the handle (several threads may).
    std::atomic<std::uint32_t> cached_idx{~0u};
};

// One receive queue: the ring of a QP-table entry (the QP's own, or one of
// its receive queues' when it has several) and what this process posted in
// it. Its completions are read by the CQ it was created with.
struct RecvRing {
    SoftQp *qp;
    QpEntry *e;
    std::uint32_t slot;
    std::uint32_t depth;
    class SoftCq *cq;
    // Per ring index, what this process posted: the work request and the
    // buffer's length (the slot's own copy is shared memory).
    std::vector<std::uint64_t> wr_ids;
    std::vector<std::uint32_t> lens;
    std::uint64_t tail = 0, cursor = 0;
    std::uint32_t idle_polls = 0;
    // The local segment the last buffer posted lies in (seg_key 0: none yet).
    std::uint32_t seg_key = 0;
    const std::uint8_t *seg_base = nullptr, *seg_end = nullptr;
    // The claimed slot at the cursor, while it stays claimed: its state word,
    // polls, since when (ms) and when its sender was last checked.
    std::uint64_t stuck_word = 0;
    std::uint32_t stuck_polls = 0;
    std::uint64_t stuck_since = 0, stuck_checked = 0;
    // The sender whose slot was last taken back (dead or stalled; owner 0: a
    // run taken and never marked, below gone_head): its other slots go at once.
    bool gone_valid = false, gone_dead = false;
    std::uint32_t gone_owner = 0;
    std::uint64_t gone_head = 0;
};

// Send completions are made by the sender itself (delivery is synchronous);
// receive completions are read from the receive rings in shared memory.
class SoftCq final : public Cq {
  public:
    explicit SoftCq(std::uint32_t depth, int fd = -1, std::uint32_t serial = 0, const sockaddr_un *self = nullptr,
                    socklen_t self_len = 0)
        : sends_(depth), fd_(fd), serial_(serial), self_len_(self_len) {
        if (self)
            self_ = *self;
    }
    ~SoftCq() override {
        if (fd_ >= 0)
            close(fd_);
    }
    int poll(Wc *wc, int n) noexcept override;
    // Completion events: a datagram socket bound to an abstract name
    // (event_address); senders write to it when they complete a slot of an
    // armed ring, this process when a send completes while armed.
    int notify_fd() const noexcept override { return fd_; }
    int arm_notify() noexcept override;
    void ack_notify() noexcept override;
    std::uint32_t serial() const noexcept { return serial_; }

    // Completion places for up to n sends, reserved before they are accepted
    // (never dropped): how many there were room for.
    int reserve_sends(int n) noexcept { return sends_.reserve_n(n); }
    void push_send(const Wc &w) noexcept {
        sends_.push_reserved(w);
        if (armed_) [[unlikely]]
            signal_self();
    }
    void unreserve_send() noexcept { sends_.unreserve(); }
    std::vector<RecvRing *> rings;
    std::vector<RcRecvRing *> rc_rings;   // SRQs and RC QPs' own receive queues
    std::vector<SoftRcQp *> rc_senders;   // RC QPs whose sends complete here (RNR retries)
    std::uint32_t rc_waiting = 0;         // how many of them have sends waiting (poll skips them all at 0)

  private:
    void signal_self() noexcept;
    common::WcQueue sends_;
    int fd_;
    std::uint32_t serial_;
    sockaddr_un self_{};  // the socket's own name (an unconnected socket: every sender may write)
    socklen_t self_len_ = 0;
    bool armed_ = false;  // for this process's send completions
};

// One send queue of a QP: its CQ and packet sequence. All of a QP's send
// queues send with its QPN (as mlx5's IBV_QP_CREATE_SOURCE_QPN QPs do).
struct SendQueue {
    SoftCq *cq;
    std::uint32_t psn = 0;
};

// The flow of the message being sent, found once per send when a
// destination spreads by RSS (rss_hash.hpp).
struct SendFlow {
    bool parsed = false;
    common::FlowTuple tuple;
};

class SoftQp final : public Qp {
  public:
    SoftQp(SoftContext *ctx, QpEntry *e, std::uint32_t slot, std::uint32_t port_idx, std::uint8_t port_num,
           const QpInit &init, std::uint32_t qpn, const std::vector<std::uint32_t> &rq_slots);
    ~SoftQp() override;
    std::uint32_t qp_num() const noexcept override { return qpn_; }
    int post_recv(const RecvWr *wr, int n) noexcept override { return post_recv_queue(0, wr, n); }
    int post_send(const SendWr *wr, int n) noexcept override { return post_send_queue(0, wr, n); }
    int post_send_queue(std::uint32_t q, const SendWr *wr, int n) noexcept override;
    int post_recv_queue(std::uint32_t q, const RecvWr *wr, int n) noexcept override;
    int set_rss(const RssConf &rss) noexcept override;
    int set_pkey_index(std::uint16_t index) noexcept override;
    int set_qkey(std::uint32_t qkey) noexcept override {
        e_->qkey.store(qkey, std::memory_order_release);
        return 0;
    }
    int attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    int detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    QpCounters counters() const noexcept override;

    int poll_recv(RecvRing &r, Wc *wc, int n) noexcept;
    // A completion is waiting at the ring's cursor (a done, bad or stuck slot).
    bool ring_ready(const RecvRing &r) const noexcept {
        if (r.cursor >= r.tail)
            return false;
        const std::uint64_t w = r.e->rq[r.cursor % r.depth].state.load(std::memory_order_seq_cst);
        return classify_rx_slot(w, lap_of(r.cursor, r.depth)) != RxVerdict::wait;
    }

  private:
    // Sends (a burst is cut into runs of at most kRunMax to one destination).
    static constexpr std::uint32_t kRunMax = 64;
    struct Tally;
    void send_run(SendQueue &sq, const SendWr *wr, std::uint32_t n, Tally &sent) noexcept;
    std::uint32_t find_port(SoftAh &ah, std::uint16_t dlid) noexcept;
    std::uint32_t find_group(SoftAh &ah, std::uint16_t dlid) noexcept;
    QpEntry *check_dest(std::uint32_t dst_slot, std::uint32_t dst_port, std::uint32_t qkey, std::uint64_t n) noexcept;
    QpEntry *pick_ring(QpEntry &d, const SendWr &wr, SendFlow &flow, std::uint32_t *hash, bool *hashed) noexcept;
    std::uint32_t claim_run(QpEntry &d, std::uint32_t depth, std::uint32_t want, std::uint64_t *first) noexcept;
    void deliver_run(QpEntry &d, std::uint32_t dst_port, const SendWr *wr, const std::uint32_t *len, const bool *ok,
                     std::uint32_t n, const SoftAh &ah) noexcept;
    std::uint32_t qkey_of(const SendWr &wr) const noexcept;
    void capture(const SendQueue &sq, const SendWr &wr, std::uint32_t len, std::uint32_t qkey) noexcept;
    // Receives.
    void check_head(RecvRing &r) noexcept;
    bool give_up_stuck(RecvRing &r, std::uint64_t w, std::uint64_t now, bool *dead) noexcept;

    SoftContext *ctx_;
    QpEntry *e_;
    std::uint32_t slot_;
    std::uint32_t port_idx_;
    std::uint8_t port_num_;
    std::uint32_t qpn_;
    std::vector<SendQueue> sqs_;
    std::vector<std::unique_ptr<RecvRing>> rings_;  // one, or one per receive queue
};

class SoftContext final : public common::ContextBase {
  public:
    ~SoftContext() override;
    bool open(const std::string &node, const std::string &fabric, const std::string &capture,
              std::uint32_t poll_ms, std::string *err);

    int query_port(std::uint8_t port, PortAttr *out) noexcept override;
    int query_gid(std::uint8_t port, int index, Gid *out) noexcept override;
    int query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept override;
    void *alloc_dma(std::size_t len) noexcept override;
    void free_dma(void *p) noexcept override;
    std::unique_ptr<Mr> reg_mr(void *addr, std::size_t len) noexcept override;
    std::unique_ptr<Cq> create_cq(int depth) noexcept override;
    std::unique_ptr<Qp> create_ud_qp(const QpInit &init) noexcept override;
    std::unique_ptr<Ah> create_ah(const AhAttr &attr) noexcept override;
    int get_port_event(PortEvent *ev) noexcept override;
    int port_counters(std::uint8_t port, PortCounters *out) noexcept override;
    DeviceCaps caps() const noexcept override { return DeviceCaps{kMaxQueues, kMaxQueues}; }
    // Reliable connections (soft_rc.cpp) and the CM over the GSI mailboxes (gsi.cpp).
    std::unique_ptr<Srq> create_srq(const SrqInit &init) noexcept override;
    std::unique_ptr<RcQp> create_rc_qp(const RcQpInit &init) noexcept override;
    std::unique_ptr<Cm> open_cm(std::uint8_t port) noexcept override;
    std::uint64_t node_guid() const noexcept { return node_.node_guid; }
    // A port's P_Key at an index (0 if none), from the last SMP read.
    std::uint16_t pkey_at(std::uint8_t port, std::uint16_t index) const noexcept {
        return index < kMaxPkeys && port >= 1 && port <= snap_.size() ? snap_[port - 1].pkeys[index] : 0;
    }

    Fabric fabric;
    std::vector<std::uint32_t> port_idx;  // shm port slot per local port (index port_num - 1)
    std::unique_ptr<Capture> capture;
    std::uint32_t poll_ms = kDefaultPollMs;
    bool fault_stall_after_claim = false;  // test-only fault hook (soft_testing.hpp)
    std::uint32_t fault_stall_ms = 0;       // 0: stall forever
    std::uint32_t stall_ms = kStalledSlotMs;  // bound on a slot a live sender holds (test hook)

    std::unique_ptr<Cq> create_event_cq(int depth) noexcept override;
    // The completion-event datagram to the CQ `serial` of the process `ident`.
    void signal_cq(std::uint32_t ident, std::uint32_t serial) noexcept;
    sockaddr_un event_address(std::uint32_t ident, std::uint32_t serial, socklen_t *len) const noexcept;

  private:
    bool refresh_ports(bool initial);
    void refresh_qp_pkeys(std::uint32_t pidx, const PortSnapshot &now);
    void publish(std::uint32_t idx, const PortSnapshot &s);

    SmpClient smp_;
    NodeIdentity node_;
    std::vector<PortSnapshot> snap_;
    std::vector<std::uint32_t> smp_failures_;  // PortInfo reads failed in a row, per port
    std::deque<PortEvent> events_;
    std::uint64_t last_poll_ = 0;
    std::uint64_t waiting_until_ = 0;  // re-read every kWaitingPollMs until then (a port left active)
    int event_tx_fd_ = -1;  // unbound datagram socket the events are sent from
    std::uint32_t next_cq_serial_ = 1;
};

} // namespace ipoib::hca::soft
