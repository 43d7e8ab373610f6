// SPDX-License-Identifier: BSD-3-Clause
// The shared CM engine: rc.hpp's Cm over a MadTransport, after the kernel's
// ib_cm (drivers/infiniband/core/cm.c) in its states and timers.
//
// Each communication ID is in one of ib_cm's states:
//   active side   idle -> REQ sent -> REP received -> established
//   passive side  REQ received (MRA sent or not) -> REP sent -> established
//   disconnect    established -> DREQ sent | DREQ received -> time-wait -> gone
// Retransmission: a REQ is re-sent every 2 * packet life time + the remote
// CM response timeout (4.096 us * 2^x each, as ib_cm's cm_convert_to_ms adds
// them), at most max_cm_retries times, then req_error; a REP likewise (with
// the requester's local CM response timeout) until the RTU, then rep_error;
// a DREQ until the DREP, then dreq_error. An MRA pushes the pending timeout
// out by its service timeout + that interval. Duplicates: a REQ seen again
// (same remote communication ID and CA GUID) gets the REP (or MRA, or REJ)
// again and no second event; a REP seen again once established gets the RTU
// again; a DREQ seen again in time-wait gets the DREP again. Time-wait lasts
// one retransmission interval; the ID is then forgotten.
//
// Answered by the engine itself: a REQ nobody listens to (REJ
// invalid_service_id, local comm ID 0 as ib_cm's cm_issue_rej), a DREQ for
// an unknown ID (DREP). Every MAD that is not a well-formed CM MAD is dropped
// and counted (CmCounters).
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>
#include <vector>

#include "cm_engine.hpp"
#include "cm_mad.hpp"

namespace ipoib::hca::cm {

namespace {

std::uint64_t monotonic_us() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

// 4.096 us * 2^x in microseconds (x <= 31).
std::uint64_t iba_time_us(std::uint8_t x) noexcept { return (4096ull << std::min<std::uint8_t>(x, 31)) / 1000u; }

// How many MADs one get_event() takes from the transport at most.
constexpr int kRecvBudget = 64;

enum class IdState : std::uint8_t {
    req_sent,     // waiting for REP (or REJ, MRA); REQ retransmitted
    req_rcvd,     // waiting for the consumer's REP or REJ (mra_sent: it asked for time)
    rep_sent,     // waiting for RTU; REP retransmitted
    rep_rcvd,     // waiting for the consumer's RTU
    established,  //
    dreq_sent,    // waiting for DREP; DREQ retransmitted
    dreq_rcvd,    // waiting for the consumer's DREP
    timewait,     // gone for the consumer; answers duplicates with what it sent last
};

struct CmId {
    IdState state = IdState::req_sent;
    std::uint32_t local_id = 0;
    std::uint32_t remote_id = 0;
    std::uint64_t remote_ca_guid = 0;  // passive side: the REQ's (duplicate detection)
    std::uint64_t service_id = 0;
    std::uint32_t local_qpn = 0, remote_qpn = 0;
    MadAddr peer;
    std::uint8_t packet_life_time = 0;
    std::uint64_t interval_us = 0;  // retransmission interval of REQ/REP/DREQ, the time-wait
    std::uint8_t max_cm_retries = 0;
    std::uint8_t retries_left = 0;
    std::uint64_t deadline_us = 0;  // 0: no timer
    bool mra_sent = false;
    std::uint64_t tid = 0;
    std::uint8_t last_sent[kMadSize]{};  // what a duplicate or a timeout re-sends
    bool have_last_sent = false;
};

std::uint32_t mask24(std::uint32_t v) { return v & 0xffffffu; }

class CmEngine final : public Cm {
  public:
    CmEngine(std::unique_ptr<MadTransport> transport, const LocalPort &port, ClockUs clock)
        : transport_(std::move(transport)), port_(port), clock_(clock ? clock : monotonic_us) {
        // Random-ish: different in every process and every engine, so a
        // restarted peer's IDs do not meet its old ones at the other side.
        rng_ = clock_() ^ (static_cast<std::uint64_t>(getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(this) ^
               port_.ca_guid;
        if (rng_ == 0)
            rng_ = 0x9e3779b97f4a7c15ull;
    }

    const CmCounters &counters() const noexcept { return counters_; }

    int listen(std::uint64_t service_id, std::uint64_t mask) noexcept override {
        for (const auto &l : listens_)
            if (l.service_id == service_id)
                return -EADDRINUSE;
        listens_.push_back({service_id, mask});
        return 0;
    }

    int unlisten(std::uint64_t service_id) noexcept override {
        auto it = std::find_if(listens_.begin(), listens_.end(),
                               [&](const Listen &l) { return l.service_id == service_id; });
        if (it == listens_.end())
            return -ENOENT;
        listens_.erase(it);
        return 0;
    }

    int send_req(const CmReqParam &p, std::uint32_t *id) noexcept override {
        if (!id || p.private_data_len > kCmReqPrivateData || (p.private_data_len && !p.private_data) ||
            (p.path.dlid == 0 && !p.path.global))  // RoCE: no LIDs, the GID routes
            return -EINVAL;
        CmId c;
        c.state = IdState::req_sent;
        c.local_id = new_local_id();
        c.service_id = p.service_id;
        c.local_qpn = mask24(p.local_qpn);
        c.peer = MadAddr{.lid = p.path.dlid,
                         .qpn = 1,
                         .pkey_index = 0,
                         .sl = p.path.sl,
                         .global = p.path.global,
                         .gid = p.path.dgid};
        c.packet_life_time = p.path.packet_life_time;
        c.interval_us = 2 * iba_time_us(p.path.packet_life_time) + iba_time_us(p.remote_cm_response_timeout);
        c.max_cm_retries = std::min<std::uint8_t>(p.max_cm_retries, 15);
        c.retries_left = c.max_cm_retries;
        c.tid = next_tid(c.local_id);

        ReqMsg m;
        m.local_comm_id = c.local_id;
        m.service_id = p.service_id;
        m.local_ca_guid = port_.ca_guid;
        m.local_qkey = p.qkey;
        m.local_qpn = c.local_qpn;
        m.responder_resources = p.responder_resources;
        m.initiator_depth = p.initiator_depth;
        m.remote_cm_response_timeout = p.remote_cm_response_timeout & 0x1f;
        m.transport = CmTransport::rc;
        m.starting_psn = mask24(p.starting_psn);
        m.local_cm_response_timeout = p.local_cm_response_timeout & 0x1f;
        m.retry_count = p.retry_count & 7;
        m.pkey = p.path.pkey;
        m.path_mtu = static_cast<std::uint8_t>(p.path.mtu);
        m.rnr_retry_count = p.rnr_retry_count & 7;
        m.max_cm_retries = c.max_cm_retries;
        m.srq = p.srq;
        m.primary = CmPathFields{
            .local_lid = p.path.slid ? p.path.slid : port_.lid,
            .remote_lid = p.path.dlid,
            .local_gid = p.path.sgid == Gid{} ? port_.gid : p.path.sgid,
            .remote_gid = p.path.dgid,
            .flow_label = p.path.flow_label & 0xfffffu,
            .packet_rate = 0,  // no static rate (the port's current rate)
            .traffic_class = p.path.traffic_class,
            .hop_limit = p.path.hop_limit,
            .sl = static_cast<std::uint8_t>(p.path.sl & 0xf),
            .subnet_local = !p.path.global,
            // ib_cm's local ACK timeout for a path: its packet life time + 1.
            .local_ack_timeout = static_cast<std::uint8_t>(std::min(p.path.packet_life_time + 1, 31)),
        };
        m.alternate.subnet_local = false;  // no alternate path: all zero
        if (p.private_data_len)
            std::memcpy(m.private_data.data(), p.private_data, p.private_data_len);
        encode(m, c.tid, c.last_sent);
        c.have_last_sent = true;
        c.deadline_us = clock_() + c.interval_us;
        send(c.peer, c.last_sent);
        *id = c.local_id;
        ids_.emplace(c.local_id, c);
        note_deadline(c.deadline_us);
        return 0;
    }

    int send_rep(std::uint32_t id, const CmRepParam &p) noexcept override {
        CmId *c = find(id);
        if (!c || c->state != IdState::req_rcvd || p.private_data_len > kCmRepPrivateData ||
            (p.private_data_len && !p.private_data))
            return -EINVAL;
        RepMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        m.local_qpn = mask24(p.local_qpn);
        m.starting_psn = mask24(p.starting_psn);
        m.responder_resources = p.responder_resources;
        m.initiator_depth = p.initiator_depth;
        m.rnr_retry_count = p.rnr_retry_count & 7;
        m.srq = p.srq;
        m.local_ca_guid = port_.ca_guid;
        if (p.private_data_len)
            std::memcpy(m.private_data.data(), p.private_data, p.private_data_len);
        c->local_qpn = m.local_qpn;
        c->state = IdState::rep_sent;
        c->tid = next_tid(c->local_id);
        encode(m, c->tid, c->last_sent);
        c->have_last_sent = true;
        c->retries_left = c->max_cm_retries;
        arm(*c, c->interval_us);
        send(c->peer, c->last_sent);
        return 0;
    }

    int send_rtu(std::uint32_t id, const std::uint8_t *pd, std::uint8_t len) noexcept override {
        CmId *c = find(id);
        if (!c || c->state != IdState::rep_rcvd || len > kCmRtuPrivateData || (len && !pd))
            return -EINVAL;
        RtuMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        if (len)
            std::memcpy(m.private_data.data(), pd, len);
        c->state = IdState::established;
        encode(m, next_tid(c->local_id), c->last_sent);  // kept: a duplicate REP gets it again
        c->have_last_sent = true;
        c->deadline_us = 0;
        send(c->peer, c->last_sent);
        return 0;
    }

    int send_rej(std::uint32_t id, CmRejReason reason, const std::uint8_t *pd, std::uint8_t len) noexcept override {
        CmId *c = find(id);
        if (!c || (c->state != IdState::req_rcvd && c->state != IdState::rep_rcvd) || len > kCmRejPrivateData ||
            (len && !pd))
            return -EINVAL;
        RejMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        m.message_rejected = c->state == IdState::req_rcvd ? CmMsgKind::req : CmMsgKind::rep;
        m.reason = static_cast<std::uint16_t>(reason);
        if (len)
            std::memcpy(m.private_data.data(), pd, len);
        encode(m, next_tid(c->local_id), c->last_sent);  // a duplicate REQ gets the REJ again
        c->have_last_sent = true;
        send(c->peer, c->last_sent);
        enter_timewait(*c);
        return 0;
    }

    int send_mra(std::uint32_t id, std::uint8_t service_timeout) noexcept override {
        CmId *c = find(id);
        if (!c || (c->state != IdState::req_rcvd && c->state != IdState::rep_rcvd))
            return -EINVAL;
        MraMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        m.message_mraed = c->state == IdState::req_rcvd ? CmMsgKind::req : CmMsgKind::rep;
        m.service_timeout = service_timeout & 0x1f;
        encode(m, next_tid(c->local_id), c->last_sent);  // a duplicate REQ/REP gets the MRA again
        c->have_last_sent = true;
        c->mra_sent = true;
        send(c->peer, c->last_sent);
        return 0;
    }

    int send_dreq(std::uint32_t id, const std::uint8_t *pd, std::uint8_t len) noexcept override {
        CmId *c = find(id);
        if (!c || c->state != IdState::established || len > kCmDreqPrivateData || (len && !pd))
            return -EINVAL;
        DreqMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        m.remote_qpn_eecn = c->remote_qpn;
        if (len)
            std::memcpy(m.private_data.data(), pd, len);
        c->state = IdState::dreq_sent;
        c->tid = next_tid(c->local_id);
        encode(m, c->tid, c->last_sent);
        c->have_last_sent = true;
        c->retries_left = c->max_cm_retries;
        arm(*c, c->interval_us);
        send(c->peer, c->last_sent);
        return 0;
    }

    int send_drep(std::uint32_t id, const std::uint8_t *pd, std::uint8_t len) noexcept override {
        CmId *c = find(id);
        if (!c || c->state != IdState::dreq_rcvd || len > kCmDrepPrivateData || (len && !pd))
            return -EINVAL;
        DrepMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        if (len)
            std::memcpy(m.private_data.data(), pd, len);
        encode(m, next_tid(c->local_id), c->last_sent);  // a duplicate DREQ gets the DREP again
        c->have_last_sent = true;
        send(c->peer, c->last_sent);
        enter_timewait(*c);
        return 0;
    }

    void destroy_id(std::uint32_t id) noexcept override {
        CmId *c = find(id);
        if (!c)
            return;
        // As ib_destroy_cm_id: a connection being set up is rejected so the
        // peer does not wait for it (an established one goes silently, as
        // rc.hpp promises; its peer's DREQ is answered as for an unknown ID).
        RejMsg m;
        m.local_comm_id = c->local_id;
        m.remote_comm_id = c->remote_id;
        switch (c->state) {
        // REQ sent: the peer's ID is not known yet; its REP will go
        // unconfirmed (rep_error there).
        case IdState::req_rcvd:
        case IdState::rep_sent: m.reason = static_cast<std::uint16_t>(CmRejReason::consumer); break;
        case IdState::rep_rcvd:
            m.message_rejected = CmMsgKind::rep;
            m.reason = static_cast<std::uint16_t>(CmRejReason::consumer);
            break;
        default: m.reason = 0; break;
        }
        if (m.reason) {
            std::uint8_t mad[kMadSize];
            encode(m, next_tid(c->local_id), mad);
            send(c->peer, mad);
        }
        erase(id);
    }

    int get_event(CmEvent *ev) noexcept override {
        if (!ev)
            return -EINVAL;
        for (int i = 0; i < kRecvBudget; ++i) {
            MadAddr from;
            const int n = transport_->recv(rx_, &from);
            if (n <= 0)
                break;
            ++counters_.mads_received;
            handle(rx_, static_cast<std::size_t>(n), from);
        }
        run_timers();
        if (events_.empty())
            return 0;
        *ev = events_.front();
        events_.pop_front();
        return 1;
    }

  private:
    struct Listen {
        std::uint64_t service_id, mask;
    };

    // ---- ids ----------------------------------------------------------------

    std::uint32_t new_local_id() noexcept {
        for (;;) {
            // xorshift64*: the high half, never 0, never one in use (time-wait included).
            rng_ ^= rng_ >> 12;
            rng_ ^= rng_ << 25;
            rng_ ^= rng_ >> 27;
            const auto v = static_cast<std::uint32_t>((rng_ * 0x2545f4914f6cdd1dull) >> 32);
            if (v != 0 && !ids_.contains(v))
                return v;
        }
    }
    std::uint64_t next_tid(std::uint32_t local_id) noexcept { return (std::uint64_t{local_id} << 32) | ++tid_seq_; }

    // A live ID (time-wait ones are gone for the consumer).
    CmId *find(std::uint32_t id) noexcept {
        auto it = ids_.find(id);
        return it == ids_.end() || it->second.state == IdState::timewait ? nullptr : &it->second;
    }
    CmId *find_any(std::uint32_t id) noexcept {
        auto it = ids_.find(id);
        return it == ids_.end() ? nullptr : &it->second;
    }
    void erase(std::uint32_t id) noexcept {
        auto it = ids_.find(id);
        if (it == ids_.end())
            return;
        const auto r = by_remote_.find({it->second.remote_id, it->second.remote_ca_guid});
        if (r != by_remote_.end() && r->second == id)
            by_remote_.erase(r);
        ids_.erase(it);
    }
    void arm(CmId &c, std::uint64_t after_us) noexcept {
        c.deadline_us = clock_() + after_us;
        note_deadline(c.deadline_us);
    }
    void note_deadline(std::uint64_t t) noexcept {
        if (next_deadline_ == 0 || t < next_deadline_)
            next_deadline_ = t;
    }
    void enter_timewait(CmId &c) noexcept {
        c.state = IdState::timewait;
        arm(c, c.interval_us);
    }

    // The attribute of the MAD kept for re-sending (none: 0).
    static CmAttr last_attr(const CmId &c) noexcept {
        return c.have_last_sent ? static_cast<CmAttr>((c.last_sent[16] << 8) | c.last_sent[17]) : CmAttr{};
    }

    void send(const MadAddr &to, const std::uint8_t *mad) noexcept {
        if (transport_->send(to, mad) == 0)
            ++counters_.mads_sent;
        else
            ++counters_.send_errors;
    }

    CmEvent &push_event(CmEventType t, const CmId &c) noexcept {
        CmEvent &e = events_.emplace_back();
        e = CmEvent{};
        e.type = t;
        e.id = c.local_id;
        e.service_id = c.service_id;
        return e;
    }
    template <std::size_t N> static void copy_pd(CmEvent &e, const std::array<std::uint8_t, N> &pd) noexcept {
        static_assert(N <= kCmMaxPrivateData);
        std::memcpy(e.private_data, pd.data(), N);
        e.private_data_len = static_cast<std::uint8_t>(N);
    }

    // ---- receiving ----------------------------------------------------------

    void handle(const std::uint8_t *mad, std::size_t len, const MadAddr &from) noexcept {
        MadHeader h;
        switch (check_header(mad, len, &h)) {
        case MadCheck::ok: break;
        case MadCheck::short_mad: ++counters_.dropped_short; return;
        case MadCheck::bad_base_version:
        case MadCheck::bad_class_version: ++counters_.dropped_bad_version; return;
        case MadCheck::bad_class: ++counters_.dropped_bad_class; return;
        case MadCheck::bad_method: ++counters_.dropped_bad_method; return;
        case MadCheck::unknown_attr: ++counters_.dropped_unknown_attr; return;
        }
        switch (static_cast<CmAttr>(h.attr_id)) {
        case CmAttr::req: on_req(mad, h, from); break;
        case CmAttr::mra: on_mra(mad); break;
        case CmAttr::rej: on_rej(mad); break;
        case CmAttr::rep: on_rep(mad); break;
        case CmAttr::rtu: on_rtu(mad); break;
        case CmAttr::dreq: on_dreq(mad, h, from); break;
        case CmAttr::drep: on_drep(mad); break;
        }
    }

    void on_req(const std::uint8_t *mad, const MadHeader &h, const MadAddr &from) noexcept {
        ReqMsg m;
        decode(mad, &m);
        if (auto it = by_remote_.find({m.local_comm_id, m.local_ca_guid}); it != by_remote_.end()) {
            CmId *c = find_any(it->second);
            ++counters_.duplicates;
            // The REP (REP sent), MRA (the consumer asked for time) or REJ
            // (time-wait after a reject) again; while the consumer decides
            // without an MRA, or once established, nothing.
            const auto last = last_attr(*c);
            if ((c->state == IdState::rep_sent && last == CmAttr::rep) ||
                (c->state == IdState::req_rcvd && last == CmAttr::mra) ||
                (c->state == IdState::timewait && last == CmAttr::rej))
                send(c->peer, c->last_sent);
            return;
        }
        const auto listening = std::any_of(listens_.begin(), listens_.end(), [&](const Listen &l) {
            return (m.service_id & l.mask) == (l.service_id & l.mask);
        });
        if (!listening) {
            RejMsg r;
            r.local_comm_id = 0;
            r.remote_comm_id = m.local_comm_id;
            r.message_rejected = CmMsgKind::req;
            r.reason = static_cast<std::uint16_t>(CmRejReason::invalid_service_id);
            std::uint8_t out[kMadSize];
            encode(r, h.tid, out);
            send(from, out);
            ++counters_.rej_no_listener;
            return;
        }
        CmId c;
        c.state = IdState::req_rcvd;
        c.local_id = new_local_id();
        c.remote_id = m.local_comm_id;
        c.remote_ca_guid = m.local_ca_guid;
        c.service_id = m.service_id;
        c.remote_qpn = m.local_qpn;
        c.peer = from;
        c.peer.qpn = 1;
        // The requester's view, turned round (ib_cm's cm_format_path_from_req):
        // packet life time = local ACK timeout - 1.
        c.packet_life_time = m.primary.local_ack_timeout ? m.primary.local_ack_timeout - 1 : 0;
        c.interval_us = 2 * iba_time_us(c.packet_life_time) + iba_time_us(m.local_cm_response_timeout);
        c.max_cm_retries = m.max_cm_retries;
        c.tid = h.tid;
        by_remote_[{c.remote_id, c.remote_ca_guid}] = c.local_id;
        auto [it, inserted] = ids_.emplace(c.local_id, c);
        (void)inserted;

        CmEvent &e = push_event(CmEventType::req_received, it->second);
        e.remote_qpn = m.local_qpn;
        e.starting_psn = m.starting_psn;
        e.responder_resources = m.responder_resources;
        e.initiator_depth = m.initiator_depth;
        e.rnr_retry_count = m.rnr_retry_count;
        e.path = CmPath{
            .slid = m.primary.remote_lid,
            .dlid = m.primary.local_lid,
            .sgid = m.primary.remote_gid,
            .dgid = m.primary.local_gid,
            .pkey = m.pkey,
            .sl = m.primary.sl,
            .mtu = static_cast<Mtu>(m.path_mtu),
            .packet_life_time = c.packet_life_time,
            .hop_limit = m.primary.hop_limit,
            .traffic_class = m.primary.traffic_class,
            .flow_label = m.primary.flow_label,
            .global = !m.primary.subnet_local || m.primary.hop_limit > 1,
        };
        copy_pd(e, m.private_data);
    }

    void on_rep(const std::uint8_t *mad) noexcept {
        RepMsg m;
        decode(mad, &m);
        CmId *c = find_any(m.remote_comm_id);
        if (!c) {
            ++counters_.dropped_unmatched;
            return;
        }
        if (c->state == IdState::req_sent) {
            c->state = IdState::rep_rcvd;
            c->remote_id = m.local_comm_id;
            c->remote_qpn = m.local_qpn;
            c->deadline_us = 0;
            c->have_last_sent = false;
            CmEvent &e = push_event(CmEventType::rep_received, *c);
            e.remote_qpn = m.local_qpn;
            e.starting_psn = m.starting_psn;
            e.responder_resources = m.responder_resources;
            e.initiator_depth = m.initiator_depth;
            e.rnr_retry_count = m.rnr_retry_count;
            copy_pd(e, m.private_data);
            return;
        }
        if (m.local_comm_id != c->remote_id) {
            ++counters_.dropped_unmatched;
            return;
        }
        ++counters_.duplicates;
        // Established: our RTU was lost, send it again; REP received: the
        // consumer has not answered (an MRA it sent goes again).
        if (c->state == IdState::established || (c->state == IdState::rep_rcvd && c->mra_sent))
            send(c->peer, c->last_sent);
    }

    void on_rtu(const std::uint8_t *mad) noexcept {
        RtuMsg m;
        decode(mad, &m);
        CmId *c = find(m.remote_comm_id);
        if (!c || c->state != IdState::rep_sent || m.local_comm_id != c->remote_id) {
            ++counters_.dropped_unmatched;
            return;
        }
        c->state = IdState::established;
        c->deadline_us = 0;
        c->have_last_sent = false;
        CmEvent &e = push_event(CmEventType::rtu_received, *c);
        e.remote_qpn = c->remote_qpn;
        copy_pd(e, m.private_data);
    }

    void on_rej(const std::uint8_t *mad) noexcept {
        RejMsg m;
        decode(mad, &m);
        CmId *c = find(m.remote_comm_id);
        const bool expected = c && (c->state == IdState::req_sent || c->state == IdState::rep_sent ||
                                    c->state == IdState::rep_rcvd || c->state == IdState::req_rcvd);
        // Before a REP the requester does not know the peer's ID: a REJ of
        // our REQ carries its local ID or 0 (ib_cm's cm_issue_rej).
        if (!expected || (c->state != IdState::req_sent && m.local_comm_id != c->remote_id)) {
            ++counters_.dropped_unmatched;
            return;
        }
        CmEvent &e = push_event(CmEventType::rej_received, *c);
        e.rej_reason = m.reason;
        copy_pd(e, m.private_data);
        erase(c->local_id);
    }

    void on_mra(const std::uint8_t *mad) noexcept {
        MraMsg m;
        decode(mad, &m);
        CmId *c = find(m.remote_comm_id);
        const bool expected = c && ((c->state == IdState::req_sent && m.message_mraed == CmMsgKind::req) ||
                                    (c->state == IdState::rep_sent && m.message_mraed == CmMsgKind::rep));
        if (!expected) {
            ++counters_.dropped_unmatched;
            return;
        }
        // The peer needs its service timeout: wait that long (plus one
        // interval, as ib_cm adds the path's time) before the next resend.
        arm(*c, iba_time_us(m.service_timeout) + c->interval_us);
        push_event(CmEventType::mra_received, *c);
    }

    void on_dreq(const std::uint8_t *mad, const MadHeader &h, const MadAddr &from) noexcept {
        DreqMsg m;
        decode(mad, &m);
        CmId *c = find_any(m.remote_comm_id);
        if (c && m.local_comm_id == c->remote_id) {
            if (c->state == IdState::timewait || c->state == IdState::dreq_rcvd) {
                ++counters_.duplicates;
                if (c->state == IdState::timewait && c->have_last_sent)
                    send(c->peer, c->last_sent);  // our DREP again
                return;
            }
            if (m.remote_qpn_eecn != c->local_qpn) {  // as ib_cm: not this connection's QP
                ++counters_.dropped_unmatched;
                return;
            }
            if (c->state == IdState::established || c->state == IdState::dreq_sent ||
                c->state == IdState::rep_sent || c->state == IdState::rep_rcvd) {
                c->state = IdState::dreq_rcvd;  // a DREQ of ours crossing it is dropped
                c->deadline_us = 0;
                CmEvent &e = push_event(CmEventType::dreq_received, *c);
                e.remote_qpn = c->remote_qpn;
                copy_pd(e, m.private_data);
                return;
            }
        }
        // Not known (destroyed, or never): answer anyway, so the peer's
        // DREQ does not retry in vain (ib_cm's cm_issue_drep).
        DrepMsg r;
        r.local_comm_id = m.remote_comm_id;
        r.remote_comm_id = m.local_comm_id;
        std::uint8_t out[kMadSize];
        encode(r, h.tid, out);
        send(from, out);
        ++counters_.drep_for_unknown;
    }

    void on_drep(const std::uint8_t *mad) noexcept {
        DrepMsg m;
        decode(mad, &m);
        CmId *c = find(m.remote_comm_id);
        if (!c || c->state != IdState::dreq_sent || m.local_comm_id != c->remote_id) {
            ++counters_.dropped_unmatched;
            return;
        }
        CmEvent &e = push_event(CmEventType::drep_received, *c);
        copy_pd(e, m.private_data);
        c->have_last_sent = false;
        enter_timewait(*c);
    }

    // ---- timers -------------------------------------------------------------

    void run_timers() noexcept {
        const std::uint64_t now = clock_();
        if (next_deadline_ == 0 || now < next_deadline_)
            return;
        next_deadline_ = 0;
        expired_.clear();
        for (auto &[id, c] : ids_) {
            if (c.deadline_us == 0)
                continue;
            if (c.deadline_us > now) {
                note_deadline(c.deadline_us);
                continue;
            }
            expired_.push_back(id);
        }
        for (std::uint32_t id : expired_)
            expire(ids_.at(id), now);
    }

    void expire(CmId &c, std::uint64_t now) noexcept {
        c.deadline_us = 0;
        CmEventType error;
        switch (c.state) {
        case IdState::req_sent: error = CmEventType::req_error; break;
        case IdState::rep_sent: error = CmEventType::rep_error; break;
        case IdState::dreq_sent: error = CmEventType::dreq_error; break;
        case IdState::timewait: erase(c.local_id); return;
        default: return;
        }
        if (c.retries_left > 0) {
            --c.retries_left;
            ++counters_.retransmits;
            send(c.peer, c.last_sent);
            c.deadline_us = now + c.interval_us;
            note_deadline(c.deadline_us);
            return;
        }
        ++counters_.timeouts;
        push_event(error, c);
        if (error == CmEventType::dreq_error) {
            c.have_last_sent = false;
            enter_timewait(c);
        } else {
            erase(c.local_id);
        }
    }

    std::unique_ptr<MadTransport> transport_;
    LocalPort port_;
    ClockUs clock_;
    std::uint64_t rng_ = 0;
    std::uint32_t tid_seq_ = 0;
    std::vector<Listen> listens_;
    std::unordered_map<std::uint32_t, CmId> ids_;
    std::map<std::pair<std::uint32_t, std::uint64_t>, std::uint32_t> by_remote_;  // (remote ID, CA GUID) -> local ID
    std::deque<CmEvent> events_;
    std::vector<std::uint32_t> expired_;
    std::uint64_t next_deadline_ = 0;  // earliest timer (0: none)
    CmCounters counters_;
    std::uint8_t rx_[kMadSize]{};
};

} // namespace

int cm_counters(const Cm &cm, CmCounters *out) noexcept {
    const auto *e = dynamic_cast<const CmEngine *>(&cm);
    if (!e || !out)
        return -EINVAL;
    *out = e->counters();
    return 0;
}

std::unique_ptr<Cm> make_cm_engine(std::unique_ptr<MadTransport> transport, const LocalPort &port, ClockUs clock) {
    if (!transport)
        return nullptr;
    return std::make_unique<CmEngine>(std::move(transport), port, clock);
}

} // namespace ipoib::hca::cm
