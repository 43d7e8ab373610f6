// SPDX-License-Identifier: BSD-3-Clause
// Reliable connections and connection management: what IPoIB's connected
// mode (RFC 4755; Linux ipoib_cm.c) needs from a device, shaped after
// libibverbs' RC subset (ibv_srq, RC ibv_qp) and the kernel's ib_cm API
// (ib_send_cm_req/rep/rtu/rej/dreq/drep and its events):
//
//   Srq   ~ ibv_srq      receives shared by every RC QP created with it
//   RcQp  ~ ibv_qp (RC)  one end of a connection; connect() = INIT->RTR->RTS
//   Cm    ~ ib_cm        REQ/REP/RTU/REJ/MRA/DREQ/DREP as real CM MADs
//                        (class 0x07) between the ports' QP1s
//
// The same error convention as hca.hpp (negative errno, Context::last_error()).
// Providers without them return -EOPNOTSUPP / nullptr from Context's
// create_srq, create_rc_qp and open_cm (the defaults there).
//
// Completions of RC work requests arrive in the CQs named at creation, which
// may be the CQs of the thread's UD QP too (a CQ may serve several QPs, as
// in verbs): Wc::qp_num tells them apart. An RC receive completion:
// opcode recv, byte_len = the message's length (no GRH), src_qp = the
// remote QP, slid = the remote port's LID, qp_num = the RC QP it arrived on
// (with an SRQ: whichever of its QPs). A send completion: qp_num = the RC QP.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca {

// ---- queues -----------------------------------------------------------------

// A receive of a reliable connection: the message scattered in order over up
// to kMaxRcRecvSge buffers (no GRH area: RC carries none). Enough for a
// connected-mode IPoIB frame (65520 + 4 bytes) in 2 KB buffers.
inline constexpr std::uint32_t kMaxRcRecvSge = 33;
// A send of a reliable connection gathers up to this many entries (a
// 64 KB frame in 2 KB mbufs, and its header): SendWr::num_sge on RcQp.
inline constexpr std::uint32_t kMaxRcSendSge = 34;
static_assert(DeviceCaps{}.max_rc_send_sge == kMaxRcSendSge && DeviceCaps{}.max_rc_recv_sge == kMaxRcRecvSge);
struct RcRecvWr {
    std::uint64_t wr_id;
    const Sge *sg_list;  // read during the call only
    std::uint32_t num_sge;
};

struct SrqInit {
    // The CQ every RC QP created with this SRQ must name as its recv_cq (the
    // software HCA reads the SRQ's ring through it; -EINVAL otherwise).
    Cq *cq = nullptr;
    std::uint32_t max_wr = 256;
    std::uint32_t max_sge = 1;  // up to kMaxRcRecvSge
};

class Srq {
  public:
    virtual ~Srq() = default;
    // Post n receives; returns how many were accepted (the rest did not
    // fit), <0 on error (a num_sge above max_sge: -EINVAL).
    virtual int post_recv(const RcRecvWr *wr, int n) noexcept = 0;
};

// ibv_qp_state, as far as an RC QP of this interface goes.
enum class RcState : std::uint8_t { init, rtr, rts, error };
const char *to_string(RcState s) noexcept;

struct RcQpInit {
    Cq *send_cq = nullptr;
    Cq *recv_cq = nullptr;
    Srq *srq = nullptr;  // nullptr: the QP has its own receive queue of max_recv_wr
    std::uint8_t port_num = 1;
    std::uint16_t pkey_index = 0;
    std::uint32_t max_send_wr = 256;
    std::uint32_t max_recv_wr = 256;  // without an SRQ
    std::uint32_t max_recv_sge = 1;   // without an SRQ
};

// INIT -> RTR -> RTS toward the remote QP in one call (the attributes of
// ibv_modify_qp that matter here). The PSNs are what the CM exchanged: the
// remote's starting PSN is what this QP expects first, its own what it sends
// first.
struct RcConnect {
    AhAttr path;  // to the remote port (DLID, SL, GRH if global)
    std::uint32_t remote_qpn = 0;
    std::uint32_t remote_psn = 0;  // RTR rq_psn
    std::uint32_t local_psn = 0;   // RTS sq_psn
    Mtu path_mtu = Mtu::mtu2048;   // a message is cut into packets of this size
    // IBA transport timers, as the CM negotiated them: local ACK timeout
    // (4.096 us * 2^timeout, 0 = infinite), retries after a timeout, retries
    // after an RNR NAK (7 = without end), the RNR timer asked of the peer.
    std::uint8_t timeout = 14;
    std::uint8_t retry_cnt = 0;
    std::uint8_t rnr_retry = 0;
    std::uint8_t min_rnr_timer = 12;
};

class RcQp {
  public:
    virtual ~RcQp() = default;
    virtual std::uint32_t qp_num() const noexcept = 0;
    // To RTS; 0, or <0 with last_error() (the QP stays where it was).
    virtual int connect(const RcConnect &c) noexcept = 0;
    // Post n sends (SendWr's ah, remote_qpn and remote_qkey are not used: the
    // connection decides); returns how many were accepted, <0 on error (not
    // in RTS: -EINVAL). A message may be as long as the peer's receive takes
    // (the provider cuts it into path_mtu packets). Completions in order.
    virtual int post_send(const SendWr *wr, int n) noexcept = 0;
    // A QP with its own receive queue; with an SRQ: -EINVAL.
    virtual int post_recv(const RcRecvWr *wr, int n) noexcept = 0;
    // To ERR (ibv_modify_qp IBV_QPS_ERR): every outstanding work request
    // completes as flushed; the peer's next sends fail. Idempotent.
    virtual int set_error() noexcept = 0;
    // RTS until a send fails for good (retries or RNR retries exhausted: the
    // peer died, its port went down, its receives stayed empty) or set_error():
    // then error, and every later post completes flushed.
    virtual RcState state() const noexcept = 0;
    virtual QpCounters counters() const noexcept = 0;
};

// ---- connection management (ib_cm) ------------------------------------------

// IBA 12.6 private data sizes.
inline constexpr std::size_t kCmReqPrivateData = 92;
inline constexpr std::size_t kCmRepPrivateData = 196;
inline constexpr std::size_t kCmRejPrivateData = 148;
inline constexpr std::size_t kCmRtuPrivateData = 224;
inline constexpr std::size_t kCmDreqPrivateData = 220;
inline constexpr std::size_t kCmDrepPrivateData = 224;
inline constexpr std::size_t kCmMaxPrivateData = 224;

// The REJ reasons of IBA Table 112 the users of this interface meet.
enum class CmRejReason : std::uint16_t {
    no_qp = 1,
    no_resources = 3,
    timeout = 4,
    invalid_comm_id = 6,
    invalid_service_id = 8,
    stale_conn = 10,
    invalid_mtu = 26,
    consumer = 28,
};

// The path a REQ describes (the primary path of IBA 12.6.5).
struct CmPath {
    std::uint16_t slid = 0, dlid = 0;
    Gid sgid{}, dgid{};
    std::uint16_t pkey = 0xffff;
    std::uint8_t sl = 0;
    Mtu mtu = Mtu::mtu2048;
    std::uint8_t packet_life_time = 0;  // 4.096 us * 2^x
    std::uint8_t hop_limit = 0;         // > 1 or a GRH needed: the path is global
    std::uint8_t traffic_class = 0;
    std::uint32_t flow_label = 0;
    bool global = false;
};

struct CmReqParam {
    std::uint64_t service_id = 0;
    CmPath path;
    std::uint32_t local_qpn = 0;
    std::uint32_t starting_psn = 0;
    std::uint32_t qkey = 0;  // UD only; 0 for RC
    const std::uint8_t *private_data = nullptr;
    std::uint8_t private_data_len = 0;  // <= kCmReqPrivateData
    std::uint8_t responder_resources = 4;
    std::uint8_t initiator_depth = 0;
    std::uint8_t remote_cm_response_timeout = 20;  // 4.096 us * 2^x
    std::uint8_t local_cm_response_timeout = 20;
    std::uint8_t retry_count = 0;
    std::uint8_t rnr_retry_count = 0;
    std::uint8_t max_cm_retries = 15;
    bool srq = true;
};

struct CmRepParam {
    std::uint32_t local_qpn = 0;
    std::uint32_t starting_psn = 0;
    const std::uint8_t *private_data = nullptr;
    std::uint8_t private_data_len = 0;  // <= kCmRepPrivateData
    std::uint8_t responder_resources = 4;
    std::uint8_t initiator_depth = 0;
    std::uint8_t rnr_retry_count = 0;
    bool srq = true;
};

enum class CmEventType : std::uint8_t {
    req_received,   // a REQ for a listened service ID: answer with send_rep or send_rej
    rep_received,   // our REQ was accepted: connect the QP, then send_rtu
    rtu_received,   // our REP was confirmed: the passive side is established
    rej_received,   // our REQ (or REP) was rejected; the id is gone
    mra_received,   // the peer needs longer (timeouts stretched by the CM itself)
    dreq_received,  // the peer disconnects: send_drep (the QP should go to ERR)
    drep_received,  // our DREQ was answered; the id is gone
    req_error,      // our REQ went unanswered max_cm_retries times; the id is gone
    rep_error,      // our REP went unconfirmed max_cm_retries times; the id is gone
    dreq_error,     // our DREQ went unanswered; the id is gone
};
const char *to_string(CmEventType t) noexcept;

struct CmEvent {
    CmEventType type;
    std::uint32_t id;  // the local communication ID (what send_* take)
    std::uint64_t service_id;
    std::uint32_t remote_qpn;    // REQ, REP
    std::uint32_t starting_psn;  // REQ, REP: the sender's
    CmPath path;                 // REQ: the path from this port's view (slid ours, dlid the requester's)
    std::uint16_t rej_reason;    // REJ
    std::uint8_t responder_resources, initiator_depth, rnr_retry_count;
    std::uint8_t private_data_len;
    std::uint8_t private_data[kCmMaxPrivateData];
};

// One port's connection manager. Single-threaded (the control thread).
class Cm {
  public:
    virtual ~Cm() = default;
    // Receive REQs whose service ID matches (id & mask) == (service_id & mask).
    virtual int listen(std::uint64_t service_id, std::uint64_t mask = ~0ull) noexcept = 0;
    virtual int unlisten(std::uint64_t service_id) noexcept = 0;
    // Send a REQ; *id receives the new communication ID. Retransmitted by the
    // CM until a REP, REJ or MRA arrives or max_cm_retries is spent (req_error).
    virtual int send_req(const CmReqParam &p, std::uint32_t *id) noexcept = 0;
    virtual int send_rep(std::uint32_t id, const CmRepParam &p) noexcept = 0;
    virtual int send_rtu(std::uint32_t id, const std::uint8_t *pd = nullptr, std::uint8_t len = 0) noexcept = 0;
    // Reject a REQ received (or the REP of our REQ); the id is gone after it.
    virtual int send_rej(std::uint32_t id, CmRejReason reason, const std::uint8_t *pd = nullptr,
                         std::uint8_t len = 0) noexcept = 0;
    // Ask the peer for more time before answering (service timeout 4.096 us * 2^x).
    virtual int send_mra(std::uint32_t id, std::uint8_t service_timeout) noexcept = 0;
    virtual int send_dreq(std::uint32_t id, const std::uint8_t *pd = nullptr, std::uint8_t len = 0) noexcept = 0;
    // Answer a DREQ; the id is gone after it.
    virtual int send_drep(std::uint32_t id, const std::uint8_t *pd = nullptr, std::uint8_t len = 0) noexcept = 0;
    // Forget an id in any state (an established connection's id is dropped
    // silently; a DREQ for it later is answered by the CM with a DREP).
    virtual void destroy_id(std::uint32_t id) noexcept = 0;
    // What to connect the RC QP of id with (ib_cm_init_qp_attr,
    // rdma_init_qp_attr), after req_received (passive, before send_rep) or
    // rep_received (active, before send_rtu): overwrites the fields of *c that
    // this CM decides. A CM that sends what it is given (the engine of the
    // software and in-process HCAs) leaves *c as the caller built it from the
    // event; one that resolves the route and picks the PSNs itself
    // (librdmacm) fills path, remote_qpn, both PSNs, path_mtu and the timers.
    // The passive side then sends c->local_psn as its REP's starting PSN.
    virtual int init_qp_attr(std::uint32_t id, RcConnect *c) noexcept {
        (void)id;
        (void)c;
        return 0;
    }
    // Non-blocking: 1 and *ev if an event is waiting, else 0. Also receives
    // MADs and runs the CM's timers (retransmissions), so call it from the
    // control thread regularly (every few ms while connections are being set up).
    virtual int get_event(CmEvent *ev) noexcept = 0;
};

} // namespace ipoib::hca
