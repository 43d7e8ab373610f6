// SPDX-License-Identifier: BSD-3-Clause
// The verbs provider: the HCA interface over rdma-core's libibverbs, for
// real HCAs (InfiniBand) and RoCE devices (rxe, ConnectX in Ethernet mode).
//
// libibverbs is reached only through the glue table (verbs_glue.hpp), which
// is dlopen()ed when a device is opened; the data path uses the inline
// ibv_post_send/ibv_post_recv/ibv_poll_cq, which call the device's ops.
//
// Per burst: one ibv_post_send / ibv_post_recv of a linked WR chain, one
// ibv_poll_cq of up to 64 completions. A send that fits the QP's inline size
// goes inline; a longer one whose entries all carry an lkey (memory the
// caller registered: net_ipoib registers DPDK's memory, ipoib_mr.cpp) is
// posted as its gather list, read by the device where it lies; one with
// unregistered memory (lkey 0), or more entries than the QP gathers, is
// copied into a registered bounce ring owned by the QP (no allocation per
// packet), its bytes counted (QpCounters::tx_bounce_bytes). A receive may
// have two scatter entries (the GRH area apart from the message), as
// Linux's ipoib posts them.
//
// On an Ethernet (RoCE) port, attaching a QP to a multicast GID also joins
// the matching IP multicast group on the port's netdev (IPV6_JOIN_GROUP, or
// IP_ADD_MEMBERSHIP for IPv4-mapped GIDs): RoCE multicast travels as IP
// multicast, and the kernel only lets it in for groups joined on the netdev.
//
// Connected mode (rc.hpp): SRQs, RC QPs and, for their CM, librdmacm
// (verbs_cm.cpp). An RC send is posted as its gather list (every entry
// registered; up to the device's max_sge) and signaled as asked; a QP whose
// work request failed for good (retries exhausted) is in ERR on the device,
// which state() asks (ibv_query_qp, at most every 100 ms, control path).
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "../builtin_providers.hpp"
#include "../provider_common.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/hca/rc.hpp"
#include "verbs_cm.hpp"
#include "verbs_glue.hpp"

#ifndef IPOIB_VERBS_GLUE_BUILD_PATH
#define IPOIB_VERBS_GLUE_BUILD_PATH ""
#endif

namespace ipoib::hca::verbs {

namespace {

// The verbs provider's numbers, in one place.
constexpr int kChunk = 32;                        // WRs per ibv_post_* call
constexpr std::uint64_t kRcStateQueryMs = 100;    // an RC QP's state asked of the device at most this often

std::uint64_t mono_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}
constexpr int kPollBatch = 64;                    // completions per ibv_poll_cq call
constexpr std::uint32_t kWantInline = 256;        // inline size asked for (the device may give less)
constexpr std::uint32_t kBounceSlot = 4096 + 64;  // the largest UD message (4096 MTU) plus slack
// Receive WRs carry this bit in the wr_id the device sees: a completion in
// error has no valid opcode, and a CQ may serve both queues of a QP.
constexpr std::uint64_t kRecvTag = 1ull << 63;
constexpr std::size_t kSoftWcRing = 256;          // completions the provider itself produces, per CQ
constexpr std::uint8_t kDefaultHopLimit = 1;      // an AH's GRH hop limit when the caller gives 0
constexpr const char *kGlueEnv = "IPOIB_VERBS_GLUE";  // where to load the glue from (ignored if set-uid)

// The glue: from $IPOIB_VERBS_GLUE, DIR-glue/ then DIR/ (DIR holding this code's object), the build
// tree (only from code run there), the search path: common::load_glue.
void *load_glue(const Glue **glue, std::string *err) {
    static constexpr common::GlueSpec kSpec{
        .env = kGlueEnv,
        .file = kGlueFile,
        .build_path = IPOIB_VERBS_GLUE_BUILD_PATH,
        .build_root = IPOIB_BUILD_ROOT,
        .symbol = kGlueSymbol,
        .abi = kGlueAbi,
        .size = sizeof(Glue),
        .entries = kGlueEntries,
        .what = "the rdma-core glue",
        .hint = " (is rdma-core's libibverbs1 installed?)",
    };
    const void *table = nullptr;
    void *h = common::load_glue(kSpec, &table, err);
    *glue = static_cast<const Glue *>(table);
    return h;
}

ibv_gid to_ibv(const Gid &g) {
    ibv_gid o;
    std::memcpy(o.raw, g.raw.data(), 16);
    return o;
}

WcStatus map_status(ibv_wc_status s) {
    switch (s) {
    case IBV_WC_SUCCESS: return WcStatus::success;
    case IBV_WC_LOC_LEN_ERR: return WcStatus::loc_len_err;
    case IBV_WC_LOC_QP_OP_ERR: return WcStatus::loc_qp_op_err;
    case IBV_WC_WR_FLUSH_ERR: return WcStatus::wr_flush_err;
    case IBV_WC_RETRY_EXC_ERR: return WcStatus::retry_exc_err;
    case IBV_WC_RNR_RETRY_EXC_ERR: return WcStatus::rnr_retry_exc_err;
    default: return WcStatus::general_err;
    }
}

// Per-QP counters, kept by the QP (sends) and its CQs (completions); read on the control path.
// Each counter has one writer (the thread posting, or the one polling that
// queue's CQ) and is read from the control path: relaxed atomics, no RMW.
struct Counter {
    std::atomic<std::uint64_t> v{0};
    void add(std::uint64_t n = 1) noexcept { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    std::uint64_t get() const noexcept { return v.load(std::memory_order_relaxed); }
};
struct QpStats {
    std::uint32_t qpn = 0;
    Counter tx_packets, tx_bytes, tx_errors, rx_packets, rx_bytes, drop_too_long, rx_errors;
    Counter tx_bounce_bytes;  // copied into the bounce ring (unregistered memory, too long for inline)
    QpCounters counters() const noexcept {
        QpCounters c{};
        c.tx_packets = tx_packets.get();
        c.tx_bytes = tx_bytes.get();
        c.tx_errors = tx_errors.get();
        c.rx_packets = rx_packets.get();
        c.rx_bytes = rx_bytes.get();
        c.drop_too_long = drop_too_long.get();
        c.rx_errors = rx_errors.get();
        c.tx_bounce_bytes = tx_bounce_bytes.get();
        return c;  // the rest (no buffer, Q_Key, P_Key drops) the device does not report per QP
    }
};

class VerbsContext;

class VerbsMr final : public Mr {
  public:
    VerbsMr(const Glue *g, ibv_mr *mr) : g_(g), mr_(mr) {}
    ~VerbsMr() override { g_->dereg_mr(mr_); }
    std::uint32_t lkey() const noexcept override { return mr_->lkey; }
    void *addr() const noexcept override { return mr_->addr; }
    std::size_t length() const noexcept override { return mr_->length; }

  private:
    const Glue *g_;
    ibv_mr *mr_;
};

class VerbsCq final : public Cq {
  public:
    VerbsCq(common::ContextBase *ctx, const Glue *g, ibv_cq *cq, int depth, ibv_comp_channel *ch = nullptr)
        : ctx_(ctx), g_(g), cq_(cq), ch_(ch), soft_(kSoftWcRing), depth_(std::min(depth, cq->cqe)) {}
    ~VerbsCq() override {
        if (unacked_)
            g_->ack_cq_events(cq_, unacked_);  // (ibv_destroy_cq waits for every event to be acknowledged)
        g_->destroy_cq(cq_);
        if (ch_)
            g_->destroy_comp_channel(ch_);
    }
    int poll(Wc *wc, int n) noexcept override;
    // Completion events: the CQ's own completion channel (non-blocking fd).
    int notify_fd() const noexcept override { return ch_ ? ch_->fd : -1; }
    int arm_notify() noexcept override;
    void ack_notify() noexcept override;
    ibv_cq *raw() const { return cq_; }
    void add_owner(QpStats *s) { owners_.push_back(s); }
    // A completion the device never saw (a send the provider refused): returned by the next poll.
    bool push_soft(const Wc &wc) noexcept { return soft_.push(wc); }
    void remove_owner(QpStats *s) { owners_.erase(std::remove(owners_.begin(), owners_.end(), s), owners_.end()); }
    // Room for the completions of signaled sends: a CQ that overflows loses
    // completions (and on most devices errors), so sends never outrun it. The
    // depth asked for counts, even where the device granted more (rxe: 16 -> 31).
    // One poster and poller per CQ, as the provider interface has it; a CQ
    // that also takes receives must be sized for those too.
    int send_room() const noexcept { return std::max(0, depth_ - static_cast<int>(sends_outstanding_)); }
    void sends_posted(int n) noexcept { sends_outstanding_ += static_cast<std::uint32_t>(n); }

  private:
    QpStats *owner(std::uint32_t qpn) const {
        for (QpStats *s : owners_)
            if (s->qpn == qpn)
                return s;
        return nullptr;
    }
    common::ContextBase *ctx_;  // for last_error()
    const Glue *g_;
    ibv_cq *cq_;
    ibv_comp_channel *ch_;
    unsigned unacked_ = 0;  // events taken, acknowledged in batches (ibv_ack_cq_events takes a mutex)
    bool armed_ = false;
    std::vector<QpStats *> owners_;  // the QPs using this CQ (usually one)
    common::WcQueue soft_;
    int depth_;                            // completions the CQ is known to hold
    std::uint32_t sends_outstanding_ = 0;  // signaled sends posted whose completion was not polled yet
};

// ibv_req_notify_cq: an event for the next completion. Completions already
// in the CQ (or in the provider's own queue) raise none: the fd is made
// readable by the caller's next poll finding them, so look first.
int VerbsCq::arm_notify() noexcept {
    if (!ch_)
        return -EOPNOTSUPP;
    if (!armed_) {
        if (const int r = ibv_req_notify_cq(cq_, 0); r != 0)
            return ctx_->fail(-r, std::string("ibv_req_notify_cq: ") + std::strerror(r));
        armed_ = true;
    }
    return 0;
}

void VerbsCq::ack_notify() noexcept {
    ibv_cq *ev_cq = nullptr;
    void *ev_ctx = nullptr;
    while (ch_ && g_->get_cq_event(ch_, &ev_cq, &ev_ctx) == 0) {  // non-blocking channel: until EAGAIN
        armed_ = false;
        if (++unacked_ >= 64) {
            g_->ack_cq_events(cq_, unacked_);
            unacked_ = 0;
        }
    }
}

int VerbsCq::poll(Wc *wc, int n) noexcept {
    ibv_wc iw[kPollBatch];
    int total = soft_.pop(wc, n);
    while (total < n) {
        const int want = std::min(n - total, kPollBatch);
        const int got = ibv_poll_cq(cq_, want, iw);
        if (got < 0)
            return total ? total : ctx_->fail(-EIO, "ibv_poll_cq: " + std::to_string(got));
        for (int i = 0; i < got; ++i) {
            const ibv_wc &s = iw[i];
            Wc &d = wc[total + i];
            const bool recv = s.wr_id & kRecvTag;
            if (!recv && sends_outstanding_)
                --sends_outstanding_;
            d.wr_id = s.wr_id & ~kRecvTag;
            d.status = map_status(s.status);
            d.opcode = recv ? WcOpcode::recv : WcOpcode::send;
            d.wc_flags = (s.wc_flags & IBV_WC_GRH) ? kWcGrh : 0;
            d.sl = s.sl;
            d.byte_len = s.byte_len;
            d.qp_num = s.qp_num;
            d.src_qp = s.src_qp;
            d.slid = s.slid;
            d.pkey_index = s.pkey_index;
            // (A CQ of a UD QP may carry the completions of RC QPs too, counted by the driver.)
            QpStats *o = owners_.size() == 1 && owners_[0]->qpn == s.qp_num ? owners_[0] : owner(s.qp_num);
            if (!o)
                continue;
            if (s.status != IBV_WC_SUCCESS) {
                // Flushes are the QP going away, not traffic.
                if (s.status == IBV_WC_WR_FLUSH_ERR)
                    continue;
                if (!recv)
                    o->tx_errors.add();
                else if (s.status == IBV_WC_LOC_LEN_ERR)
                    o->drop_too_long.add();
                else
                    o->rx_errors.add();  // rxe reports a too-long receive as a local QP operation error
            } else if (recv) {
                o->rx_packets.add();
                o->rx_bytes.add(s.byte_len >= kGrhLen ? s.byte_len - kGrhLen : s.byte_len);
            }
        }
        total += got;
        if (got < want)
            break;
    }
    return total;
}

class VerbsAh final : public Ah {
  public:
    VerbsAh(const Glue *g, ibv_ah *ah, const AhAttr &a) : g_(g), ah_(ah), attr_(a) {}
    ~VerbsAh() override { g_->destroy_ah(ah_); }
    const AhAttr &attr() const noexcept override { return attr_; }
    ibv_ah *raw() const { return ah_; }

  private:
    const Glue *g_;
    ibv_ah *ah_;
    AhAttr attr_;
};

class VerbsQp final : public Qp {
  public:
    VerbsQp(VerbsContext *ctx, ibv_qp *qp, VerbsCq *scq, VerbsCq *rcq, std::uint8_t port, std::uint32_t depth,
            std::uint32_t max_inline, std::uint32_t max_send_sge, std::uint32_t mtu)
        : ctx_(ctx), qp_(qp), scq_(scq), rcq_(rcq), port_(port), depth_(depth), max_inline_(max_inline),
          max_send_sge_(max_send_sge), mtu_(mtu) {
        stats_.qpn = qp->qp_num;
        scq_->add_owner(&stats_);
        if (rcq_ != scq_)
            rcq_->add_owner(&stats_);
    }
    ~VerbsQp() override;
    bool init_bounce();
    void max_recv_sge(std::uint32_t n) { max_recv_sge_ = n; }
    void qkey(std::uint32_t k) { qkey_ = k; }
    std::uint32_t qp_num() const noexcept override { return qp_->qp_num; }
    int post_recv(const RecvWr *wr, int n) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int set_qkey(std::uint32_t qkey) noexcept override;
    int set_pkey_index(std::uint16_t index) noexcept override;
    int attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    int detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    QpCounters counters() const noexcept override { return stats_.counters(); }

  private:
    VerbsContext *ctx_;
    ibv_qp *qp_;
    VerbsCq *scq_, *rcq_;
    std::uint8_t port_;
    std::uint32_t depth_, max_inline_;
    std::uint32_t max_recv_sge_ = 1;  // scatter entries per receive the QP was created with (1 or 2)
    std::uint32_t max_send_sge_;  // gather entries the QP was created with (the device's limit, at most kMaxSendSge)
    std::uint32_t mtu_;  // the port's active MTU: a UD message must fit one packet
    std::uint32_t qkey_ = 0;  // the QP's Q_Key (for sends with kUseQpQkey)
    QpStats stats_;
    std::uint8_t *bounce_ = nullptr;
    std::size_t bounce_len_ = 0;
    std::unique_ptr<Mr> bounce_mr_;
    std::uint64_t posted_ = 0;  // sends accepted so far: picks the bounce slot
    std::vector<Gid> attached_;
};

ibv_ah_attr to_ibv_ah(const AhAttr &attr) {
    ibv_ah_attr a{};
    a.dlid = attr.dlid;
    a.sl = attr.sl;
    a.port_num = attr.port_num;
    a.is_global = attr.is_global;
    if (attr.is_global) {
        a.grh.dgid = to_ibv(attr.dgid);
        a.grh.sgid_index = attr.sgid_index;
        a.grh.hop_limit = attr.hop_limit ? attr.hop_limit : kDefaultHopLimit;
        a.grh.traffic_class = attr.traffic_class;
        a.grh.flow_label = attr.flow_label;
    }
    return a;
}

class VerbsSrq final : public Srq {
  public:
    VerbsSrq(const Glue *g, ibv_srq *srq, std::uint32_t max_sge) : g_(g), srq_(srq), max_sge_(max_sge) {}
    ~VerbsSrq() override { g_->destroy_srq(srq_); }
    ibv_srq *raw() const { return srq_; }
    int post_recv(const RcRecvWr *wr, int n) noexcept override {
        int done = 0;
        while (done < n) {
            ibv_recv_wr w[kChunk];
            ibv_sge s[kChunk][kMaxRcRecvSge];
            int built = 0;
            for (; built < kChunk && done + built < n; ++built) {
                const RcRecvWr &r = wr[done + built];
                if (r.num_sge == 0 || r.num_sge > max_sge_)
                    return done ? done : -EINVAL;
                for (std::uint32_t j = 0; j < r.num_sge; ++j)
                    s[built][j] = ibv_sge{r.sg_list[j].addr, r.sg_list[j].length, r.sg_list[j].lkey};
                w[built] = ibv_recv_wr{};
                w[built].wr_id = r.wr_id | kRecvTag;
                w[built].sg_list = s[built];
                w[built].num_sge = static_cast<int>(r.num_sge);
                if (built)
                    w[built - 1].next = &w[built];
            }
            ibv_recv_wr *bad = nullptr;
            if (ibv_post_srq_recv(srq_, w, &bad) != 0)
                return done + (bad ? static_cast<int>(bad - w) : 0);
            done += built;
        }
        return done;
    }

  private:
    const Glue *g_;
    ibv_srq *srq_;
    std::uint32_t max_sge_;
};

class VerbsRcQp final : public RcQp {
  public:
    VerbsRcQp(VerbsContext *ctx, ibv_qp *qp, VerbsCq *scq, bool srq, std::uint32_t max_send_sge);
    ~VerbsRcQp() override;
    std::uint32_t qp_num() const noexcept override { return qp_->qp_num; }
    int connect(const RcConnect &c) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int post_recv(const RcRecvWr *wr, int n) noexcept override;
    int set_error() noexcept override;
    // The device's view (ibv_query_qp: an RC QP whose send failed for good is
    // in ERR), asked at most every kRcStateQueryMs (control path only).
    RcState state() const noexcept override;
    QpCounters counters() const noexcept override { return stats_.counters(); }

  private:
    VerbsContext *ctx_;
    ibv_qp *qp_;
    bool srq_;
    std::uint32_t max_send_sge_;
    VerbsCq *scq_;                   // (not its owner: the CQs' owner lists belong to the UD QPs,
                                     // made before the fast path polls; RC QPs come and go under it)
    std::atomic<RcState> state_{RcState::init};
    mutable std::uint64_t queried_ms_ = 0;
    QpStats stats_;                  // sends, counted by post_send
};

class VerbsContext final : public common::ContextBase {
  public:
    ~VerbsContext() override;
    bool open(const std::string &device, std::string *err);

    // Two-entry receives when the device scatters to two entries (every
    // verbs device does; ibv_device_attr::max_sge says).
    DeviceCaps caps() const noexcept override {
        return DeviceCaps{.max_recv_sge = std::min<std::uint32_t>(kMaxRecvSge, max_sge_),
                          .max_rc_send_sge = std::min<std::uint32_t>(kMaxRcSendSge, max_sge_),
                          .max_rc_recv_sge = std::min<std::uint32_t>(kMaxRcRecvSge, max_srq_sge_),
                          .lkey_required = true};
    }
    int query_port(std::uint8_t port, PortAttr *out) noexcept override;
    int query_gid(std::uint8_t port, int index, Gid *out) noexcept override;
    int query_gid_type(std::uint8_t port, int index, GidType *out) noexcept override;
    int query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept override;
    void *alloc_dma(std::size_t len) noexcept override;
    void free_dma(void *p) noexcept override;
    std::unique_ptr<Mr> reg_mr(void *addr, std::size_t len) noexcept override;
    std::unique_ptr<Cq> create_cq(int depth) noexcept override;
    std::unique_ptr<Cq> create_event_cq(int depth) noexcept override;
    std::unique_ptr<Qp> create_ud_qp(const QpInit &init) noexcept override;
    std::unique_ptr<Ah> create_ah(const AhAttr &attr) noexcept override;
    std::unique_ptr<Srq> create_srq(const SrqInit &init) noexcept override;
    std::unique_ptr<RcQp> create_rc_qp(const RcQpInit &init) noexcept override;
    std::unique_ptr<Cm> open_cm(std::uint8_t port) noexcept override;
    int get_port_event(PortEvent *ev) noexcept override;
    int port_counters(std::uint8_t port, PortCounters *out) noexcept override;

    const Glue *glue() const { return g_; }
    ibv_pd *pd() const { return pd_; }
    bool ethernet(std::uint8_t port) const {
        return valid_port(port) && link_layer_[port - 1] == IBV_LINK_LAYER_ETHERNET;
    }
    int gid_entry(std::uint8_t port, int index, ibv_gid_entry *e) noexcept;
    // RoCE: the IP multicast membership behind a multicast GID (refcounted per port's netdev).
    int ip_group(std::uint8_t port, const Gid &mgid, bool join);

  private:
    void *dl_ = nullptr;
    const Glue *g_ = nullptr;
    ibv_context *ctx_ = nullptr;
    ibv_pd *pd_ = nullptr;
    std::vector<std::uint8_t> link_layer_;
    std::vector<int> pkey_tbl_len_;
    std::uint32_t max_sge_ = 1;  // ibv_device_attr::max_sge: scatter/gather entries per WR
    std::uint32_t max_srq_sge_ = 0;  // ibv_device_attr::max_srq_sge: scatter entries per SRQ receive
    std::map<void *, std::size_t> dma_;
    common::IpGroups ip_groups_;
};

// ---------------------------------------------------------------------------
// QP

VerbsQp::~VerbsQp() {
    for (auto &g : attached_) {
        ibv_gid ig = to_ibv(g);
        ctx_->glue()->detach_mcast(qp_, &ig, 0);
        if (ctx_->ethernet(port_))
            ctx_->ip_group(port_, g, false);
    }
    ctx_->glue()->destroy_qp(qp_);
    scq_->remove_owner(&stats_);
    rcq_->remove_owner(&stats_);
    bounce_mr_.reset();
    if (bounce_)
        ctx_->free_dma(bounce_);
}

bool VerbsQp::init_bounce() {
    bounce_len_ = std::size_t{depth_} * kBounceSlot;
    bounce_ = static_cast<std::uint8_t *>(ctx_->alloc_dma(bounce_len_));
    if (!bounce_)
        return false;
    bounce_mr_ = ctx_->reg_mr(bounce_, bounce_len_);
    return bounce_mr_ != nullptr;
}

int VerbsQp::post_recv(const RecvWr *wr, int n) noexcept {
    int done = 0;
    while (done < n) {
        int k = std::min(n - done, kChunk);
        ibv_recv_wr w[kChunk];
        ibv_sge s[kChunk][kMaxRecvSge];
        bool refused = false;  // wr[done + k] has a scatter list the QP does not take
        for (int i = 0; i < k; ++i) {
            const RecvWr &r = wr[done + i];
            if (r.num_sge < 1 || r.num_sge > max_recv_sge_ || (r.num_sge == 2 && r.sge.length != kGrhLen)) {
                k = i;
                refused = true;
                break;
            }
            s[i][0] = ibv_sge{r.sge.addr, r.sge.length, r.sge.lkey};
            s[i][1] = ibv_sge{r.sge2.addr, r.sge2.length, r.sge2.lkey};
            w[i].wr_id = r.wr_id | kRecvTag;
            w[i].sg_list = s[i];
            w[i].num_sge = static_cast<int>(r.num_sge);
            w[i].next = &w[i + 1];
        }
        if (k > 0) {
            w[k - 1].next = nullptr;
            ibv_recv_wr *bad = nullptr;
            const int rc = ibv_post_recv(qp_, w, &bad);
            if (rc != 0) {
                const int ok = bad ? static_cast<int>(bad - w) : 0;
                ctx_->fail(-rc, std::string("ibv_post_recv: ") + std::strerror(rc));
                return done + ok ? done + ok : -rc;
            }
        }
        done += k;
        if (refused) {
            ctx_->fail(-EINVAL, "post_recv: " + std::to_string(wr[done].num_sge) + " scatter entries (the QP takes 1" +
                                    (max_recv_sge_ > 1 ? " or 2, the first the 40-byte GRH area)" : ")"));
            return done ? done : -EINVAL;
        }
    }
    return done;
}

// Whether any of a send is unregistered memory (lkey 0).
bool unregistered(const SendWr &r) {
    for (std::uint32_t j = 0; j < std::min(r.num_sge, kMaxSendSge); ++j)
        if (r.sg_list[j].lkey == 0)
            return true;
    return false;
}

int VerbsQp::post_send(const SendWr *wr, int n) noexcept {
    int done = 0;  // WRs taken: posted, or completed in error by the provider
    while (done < n) {
        // A run of postable WRs, linked, one ibv_post_send; it ends before a WR too long to send.
        ibv_send_wr w[kChunk];
        ibv_sge s[kChunk][kMaxSendSge];
        std::uint32_t lens[kChunk];
        bool bounced[kChunk] = {};
        int built = 0, signaled = 0;
        const int room = scq_->send_room();
        bool too_long = false, cq_full = false;
        while (built < kChunk && done + built < n) {
            const SendWr &r = wr[done + built];
            if (r.signaled && signaled == room) {
                cq_full = true;  // its completion would not fit the send CQ: not taken (as ENOMEM)
                break;
            }
            const std::uint32_t total = common::send_length(r);
            // mtu_ <= 4096: whatever fits the MTU fits a bounce slot.
            if (common::exceeds_mtu(total, mtu_)) {
                too_long = true;
                break;
            }
            ibv_send_wr &x = w[built];
            std::memset(&x, 0, sizeof x);
            const std::uint32_t nsge = std::min(r.num_sge, kMaxSendSge);
            // Small: inline (the device copies it into the WQE, registered or
            // not). Registered and gatherable: the entries as they are. Else
            // the bounce ring.
            const bool inline_send = total <= max_inline_;
            if (inline_send || (nsge <= max_send_sge_ && !unregistered(r))) {
                for (std::uint32_t j = 0; j < nsge; ++j)
                    s[built][j] = ibv_sge{r.sg_list[j].addr, r.sg_list[j].length, r.sg_list[j].lkey};
                x.num_sge = static_cast<int>(nsge);
                if (inline_send)
                    x.send_flags |= IBV_SEND_INLINE;
            } else {
                // The slot of the send posted depth_ sends ago: the send queue had room, so it is done.
                std::uint8_t *slot = bounce_ + ((posted_ + static_cast<std::uint64_t>(built)) % depth_) * kBounceSlot;
                std::uint32_t off = 0;
                for (std::uint32_t j = 0; j < nsge; ++j) {
                    std::memcpy(slot + off, reinterpret_cast<const void *>(r.sg_list[j].addr), r.sg_list[j].length);
                    off += r.sg_list[j].length;
                }
                s[built][0] = ibv_sge{reinterpret_cast<std::uintptr_t>(slot), total, bounce_mr_->lkey()};
                x.num_sge = 1;
                bounced[built] = true;
            }
            x.wr_id = r.wr_id;
            x.sg_list = s[built];
            x.opcode = IBV_WR_SEND;
            if (r.signaled) {
                x.send_flags |= IBV_SEND_SIGNALED;
                ++signaled;
            }
            x.wr.ud.ah = static_cast<VerbsAh *>(r.ah)->raw();
            x.wr.ud.remote_qpn = r.remote_qpn;
            // IBA: a Q_Key with the high bit set means "the QP's own". rxe sends it
            // literally (and the receiver drops it): resolve it here, same result on hardware.
            x.wr.ud.remote_qkey = common::send_qkey(r.remote_qkey, qkey_);
            if (built)
                w[built - 1].next = &x;
            lens[built++] = total;
        }
        int posted = built;
        int rc = 0;
        if (built) {
            ibv_send_wr *bad = nullptr;
            rc = ibv_post_send(qp_, w, &bad);
            if (rc != 0)
                posted = bad ? static_cast<int>(bad - w) : 0;
        }
        for (int i = 0; i < posted; ++i) {
            stats_.tx_bytes.add(lens[i]);
            if (bounced[i])
                stats_.tx_bounce_bytes.add(lens[i]);
            if (w[i].send_flags & IBV_SEND_SIGNALED)
                scq_->sends_posted(1);
        }
        posted_ += static_cast<std::uint64_t>(posted);
        stats_.tx_packets.add(static_cast<std::uint64_t>(posted));
        done += posted;
        if (posted < built) {
            if (rc == ENOMEM)  // the send queue is full: the rest did not fit
                return done;
            ctx_->fail(-rc, std::string("ibv_post_send: ") + std::strerror(rc));
            return done ? done : -rc;
        }
        if (cq_full)
            return done;
        if (too_long) {
            // IBA: a UD message longer than the path MTU completes with a local
            // length error. Not every device checks (rxe sends it and the
            // receiver drops it silently): the provider does, before posting.
            // Its completion is never dropped: with no room for it, it is not accepted.
            const SendWr &r = wr[done];
            if (r.signaled && !scq_->push_soft(common::send_wc(r.wr_id, WcStatus::loc_len_err, qp_->qp_num)))
                return done;
            stats_.tx_errors.add();
            ++done;
        }
    }
    return done;
}

int VerbsQp::set_qkey(std::uint32_t qkey) noexcept {
    ibv_qp_attr a{};
    a.qkey = qkey;
    const int rc = ctx_->glue()->modify_qp(qp_, &a, IBV_QP_QKEY);
    if (rc)
        return ctx_->fail(-rc, std::string("ibv_modify_qp(QKEY): ") + std::strerror(rc));
    qkey_ = qkey;
    return 0;
}

// IBA's way of changing a live UD QP's P_Key index without losing its number
// or posted receives: drain the send queue (RTS -> SQD), change the index
// (SQD -> SQD), resume (SQD -> RTS). A device that does not implement SQD
// (not every provider does) refuses a step: the QP is put back to RTS if it
// can be and the error returned; the caller then keeps the interface down.
int VerbsQp::set_pkey_index(std::uint16_t index) noexcept {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_SQD;
    int rc = ctx_->glue()->modify_qp(qp_, &a, IBV_QP_STATE);
    const char *step = "RTS -> SQD";
    if (!rc) {
        a = ibv_qp_attr{};
        a.pkey_index = index;
        rc = ctx_->glue()->modify_qp(qp_, &a, IBV_QP_PKEY_INDEX);
        step = "SQD: P_Key index";
    }
    ibv_qp_attr back{};
    back.qp_state = IBV_QPS_RTS;
    const int rc_back = ctx_->glue()->modify_qp(qp_, &back, IBV_QP_STATE);
    if (!rc && rc_back) {
        rc = rc_back;
        step = "SQD -> RTS";
    }
    if (rc)
        return ctx_->fail(-rc, std::string("ibv_modify_qp(") + step + ", index " + std::to_string(index) +
                                   "): " + std::strerror(rc));
    return 0;
}

int VerbsQp::attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept {
    ibv_gid g = to_ibv(mgid);
    if (const int rc = ctx_->glue()->attach_mcast(qp_, &g, mlid))
        return ctx_->fail(-rc, "ibv_attach_mcast(" + wire::to_string(mgid) + "): " + std::strerror(rc));
    if (ctx_->ethernet(port_)) {
        if (const int rc = ctx_->ip_group(port_, mgid, true); rc != 0) {
            ctx_->glue()->detach_mcast(qp_, &g, mlid);
            return rc;
        }
    }
    attached_.push_back(mgid);
    return 0;
}

int VerbsQp::detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept {
    auto it = std::find(attached_.begin(), attached_.end(), mgid);
    if (it == attached_.end())
        return ctx_->fail(-ENOENT, "detach: " + wire::to_string(mgid) + " is not attached");
    attached_.erase(it);
    ibv_gid g = to_ibv(mgid);
    const int rc = ctx_->glue()->detach_mcast(qp_, &g, mlid);
    if (ctx_->ethernet(port_))
        ctx_->ip_group(port_, mgid, false);
    return rc ? ctx_->fail(-rc, "ibv_detach_mcast(" + wire::to_string(mgid) + "): " + std::strerror(rc)) : 0;
}

// ---------------------------------------------------------------------------
// Context

VerbsContext::~VerbsContext() {
    if (pd_)
        g_->dealloc_pd(pd_);
    if (ctx_)
        g_->close_device(ctx_);
    for (auto &[p, len] : dma_)
        munmap(p, len);
    if (dl_)
        dlclose(dl_);
}

bool VerbsContext::open(const std::string &device, std::string *err) {
    dl_ = load_glue(&g_, err);
    if (!dl_)
        return false;
    int n = 0;
    ibv_device **list = g_->get_device_list(&n);
    if (!list) {
        *err = std::string("no RDMA devices (ibv_get_device_list: ") + std::strerror(errno) +
               "; does this kernel have RDMA support and ib_uverbs loaded?)";
        return false;
    }
    ibv_device *dev = nullptr;
    std::string names;
    for (int i = 0; i < n; ++i) {
        const char *nm = g_->get_device_name(list[i]);
        names += (names.empty() ? "" : ", ") + std::string(nm);
        if (!dev && (device.empty() || device == nm))
            dev = list[i];
    }
    if (dev) {
        name_ = g_->get_device_name(dev);
        ctx_ = g_->open_device(dev);
    }
    const int open_errno = errno;
    g_->free_device_list(list);
    if (!dev) {
        *err = n == 0 ? "no RDMA devices (ibv_get_device_list found none)"
                      : "no RDMA device '" + device + "' (found: " + names + ")";
        return false;
    }
    if (!ctx_) {
        *err = "ibv_open_device(" + name_ + "): " + std::strerror(open_errno);
        return false;
    }
    ibv_device_attr da{};
    if (const int rc = g_->query_device(ctx_, &da)) {
        *err = "ibv_query_device(" + name_ + "): " + std::strerror(rc);
        return false;
    }
    nports_ = da.phys_port_cnt;
    max_sge_ = static_cast<std::uint32_t>(std::max(da.max_sge, 1));
    max_srq_sge_ = da.max_srq ? static_cast<std::uint32_t>(std::max(da.max_srq_sge, 0)) : 0;
    for (std::uint8_t p = 1; p <= nports_; ++p) {
        ibv_port_attr pa{};
        g_->query_port(ctx_, p, &pa);
        link_layer_.push_back(pa.link_layer);
        pkey_tbl_len_.push_back(pa.pkey_tbl_len);
    }
    pd_ = g_->alloc_pd(ctx_);
    if (!pd_) {
        *err = "ibv_alloc_pd(" + name_ + "): " + std::strerror(errno);
        return false;
    }
    // Async events are read on the control thread without blocking it.
    const int fl = fcntl(ctx_->async_fd, F_GETFL);
    if (fl < 0 || fcntl(ctx_->async_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        *err = std::string("async event fd: ") + std::strerror(errno);
        return false;
    }
    return true;
}

int VerbsContext::query_port(std::uint8_t port, PortAttr *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    ibv_port_attr a{};
    if (const int rc = g_->query_port(ctx_, port, &a))
        return fail(-rc, "ibv_query_port: " + std::string(std::strerror(rc)));
    PortAttr o;
    o.state = static_cast<PortState>(a.state <= IBV_PORT_ACTIVE ? a.state : 0);
    o.link_layer = a.link_layer == IBV_LINK_LAYER_ETHERNET ? LinkLayer::ethernet : LinkLayer::infiniband;
    o.phys_state = a.phys_state;
    o.lid = a.lid;
    o.sm_lid = a.sm_lid;
    o.sm_sl = a.sm_sl;
    o.lmc = a.lmc;
    o.max_mtu = static_cast<Mtu>(a.max_mtu);
    o.active_mtu = static_cast<Mtu>(a.active_mtu);
    o.active_width = a.active_width;
    o.active_speed = a.active_speed;
    o.pkey_tbl_len = static_cast<std::uint16_t>(a.pkey_tbl_len);
    o.gid_tbl_len = static_cast<std::uint16_t>(a.gid_tbl_len);
    o.port_num = port;
    Gid g;
    if (query_gid(port, 0, &g) == 0)
        for (int i = 0; i < 8; ++i) {
            o.subnet_prefix = o.subnet_prefix << 8 | g.raw[static_cast<std::size_t>(i)];
            o.port_guid = o.port_guid << 8 | g.raw[static_cast<std::size_t>(8 + i)];
        }
    link_layer_[port - 1] = a.link_layer;
    *out = o;
    return 0;
}

int VerbsContext::gid_entry(std::uint8_t port, int index, ibv_gid_entry *e) noexcept {
    if (!valid_port(port) || index < 0)
        return fail(-EINVAL, "GID index " + std::to_string(index) + " of port " + std::to_string(port));
    if (const int rc = g_->query_gid_ex(ctx_, port, static_cast<std::uint32_t>(index), e))
        return fail(-rc, "GID index " + std::to_string(index) + " of " + name_ + " port " + std::to_string(port) +
                             ": " + std::strerror(rc));
    return 0;
}

int VerbsContext::query_gid(std::uint8_t port, int index, Gid *out) noexcept {
    ibv_gid_entry e{};
    if (const int rc = gid_entry(port, index, &e))
        return rc;
    std::memcpy(out->raw.data(), e.gid.raw, 16);
    return 0;
}

int VerbsContext::query_gid_type(std::uint8_t port, int index, GidType *out) noexcept {
    ibv_gid_entry e{};
    if (const int rc = gid_entry(port, index, &e))
        return rc;
    *out = e.gid_type == IBV_GID_TYPE_ROCE_V2   ? GidType::roce_v2
           : e.gid_type == IBV_GID_TYPE_ROCE_V1 ? GidType::roce_v1
                                                : GidType::ib;
    return 0;
}

int VerbsContext::query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept {
    // Bounded by the table: rxe answers 0xffff past its one entry.
    if (const int r = pkey_index_rule(port, index, valid_port(port) ? pkey_tbl_len_[port - 1] : 0, out); r <= 0)
        return r;
    std::uint16_t be = 0;
    if (const int rc = g_->query_pkey(ctx_, port, index, &be))
        return fail(-rc, "ibv_query_pkey: " + std::string(std::strerror(rc)));
    *out = ntohs(be);
    return 0;
}

void *VerbsContext::alloc_dma(std::size_t len) noexcept {
    const std::size_t pg = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    len = (len + pg - 1) / pg * pg;
    void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fail(-errno, std::string("alloc_dma: ") + std::strerror(errno));
        return nullptr;
    }
    dma_[p] = len;
    return p;
}

void VerbsContext::free_dma(void *p) noexcept {
    auto it = dma_.find(p);
    if (it == dma_.end())
        return;
    munmap(it->first, it->second);
    dma_.erase(it);
}

std::unique_ptr<Mr> VerbsContext::reg_mr(void *addr, std::size_t len) noexcept {
    ibv_mr *mr = g_->reg_mr(pd_, addr, len, IBV_ACCESS_LOCAL_WRITE);
    if (!mr) {
        fail(-errno, std::string("ibv_reg_mr: ") + std::strerror(errno));
        return nullptr;
    }
    return std::make_unique<VerbsMr>(g_, mr);
}

std::unique_ptr<Cq> VerbsContext::create_cq(int depth) noexcept {
    ibv_cq *cq = g_->create_cq(ctx_, depth, nullptr);
    if (!cq) {
        fail(-errno, "ibv_create_cq(" + std::to_string(depth) + "): " + std::strerror(errno));
        return nullptr;
    }
    return std::make_unique<VerbsCq>(this, g_, cq, depth);
}

std::unique_ptr<Cq> VerbsContext::create_event_cq(int depth) noexcept {
    ibv_comp_channel *ch = g_->create_comp_channel(ctx_);
    if (!ch) {
        fail(-errno, std::string("ibv_create_comp_channel: ") + std::strerror(errno));
        return nullptr;
    }
    const int fl = fcntl(ch->fd, F_GETFL);
    ibv_cq *cq = fl >= 0 && fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) == 0 ? g_->create_cq(ctx_, depth, ch) : nullptr;
    if (!cq) {
        fail(-errno, "ibv_create_cq(" + std::to_string(depth) + ", channel): " + std::strerror(errno));
        g_->destroy_comp_channel(ch);
        return nullptr;
    }
    return std::make_unique<VerbsCq>(this, g_, cq, depth, ch);
}

std::unique_ptr<Qp> VerbsContext::create_ud_qp(const QpInit &init) noexcept {
    if (!init.send_cq || !init.recv_cq) {
        fail(-EINVAL, "create_ud_qp: send and receive CQs needed");
        return nullptr;
    }
    if (!check_qp_queues(init))  // one queue of each kind (DeviceCaps 1/1): more are refused, naming the limit
        return nullptr;
    auto *scq = static_cast<VerbsCq *>(init.send_cq), *rcq = static_cast<VerbsCq *>(init.recv_cq);
    ibv_qp_init_attr a{};
    a.send_cq = scq->raw();
    a.recv_cq = rcq->raw();
    a.qp_type = IBV_QPT_UD;
    a.cap.max_send_wr = init.max_send_wr;
    a.cap.max_recv_wr = init.max_recv_wr;
    a.cap.max_send_sge = std::min(kMaxSendSge, max_sge_);
    a.cap.max_recv_sge = std::min(kMaxRecvSge, max_sge_);
    a.cap.max_inline_data = kWantInline;
    ibv_qp *qp = g_->create_qp(pd_, &a);
    if (!qp) {  // the device may not do inline sends, or not that many
        a.cap.max_inline_data = 0;
        qp = g_->create_qp(pd_, &a);
    }
    if (!qp) {
        fail(-errno, "ibv_create_qp(UD, " + std::to_string(init.max_send_wr) + "/" +
                         std::to_string(init.max_recv_wr) + " WRs): " + std::strerror(errno));
        return nullptr;
    }
    ibv_port_attr pa{};
    g_->query_port(ctx_, init.port_num, &pa);
    auto q = std::make_unique<VerbsQp>(this, qp, scq, rcq, init.port_num, init.max_send_wr, a.cap.max_inline_data,
                                       std::min(a.cap.max_send_sge, kMaxSendSge),
                                       128u << (pa.active_mtu ? pa.active_mtu : IBV_MTU_4096));
    ibv_qp_attr m{};
    m.qp_state = IBV_QPS_INIT;
    m.pkey_index = init.pkey_index;
    m.port_num = init.port_num;
    m.qkey = init.qkey;
    int rc = g_->modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY);
    const char *step = "INIT";
    if (!rc) {
        m = ibv_qp_attr{};
        m.qp_state = IBV_QPS_RTR;
        rc = g_->modify_qp(qp, &m, IBV_QP_STATE);
        step = "RTR";
    }
    if (!rc) {
        m = ibv_qp_attr{};
        m.qp_state = IBV_QPS_RTS;
        m.sq_psn = 0;
        rc = g_->modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_SQ_PSN);
        step = "RTS";
    }
    if (rc) {
        fail(-rc, std::string("ibv_modify_qp(UD -> ") + step + ", P_Key index " + std::to_string(init.pkey_index) +
                      ", port " + std::to_string(init.port_num) + "): " + std::strerror(rc));
        return nullptr;
    }
    if (!q->init_bounce())
        return nullptr;
    q->max_recv_sge(std::min(a.cap.max_recv_sge, kMaxRecvSge));
    q->qkey(init.qkey);
    return q;
}

std::unique_ptr<Ah> VerbsContext::create_ah(const AhAttr &attr) noexcept {
    if (ethernet(attr.port_num) && !attr.is_global) {
        fail(-EINVAL, "create_ah: port " + std::to_string(attr.port_num) + " is RoCE: an address needs a GRH (GID)");
        return nullptr;
    }
    ibv_ah_attr a = to_ibv_ah(attr);
    ibv_ah *ah = g_->create_ah(pd_, &a);
    if (!ah) {
        fail(-errno, "ibv_create_ah(" + (attr.is_global ? wire::to_string(attr.dgid) : "LID " + std::to_string(attr.dlid)) +
                         "): " + std::strerror(errno));
        return nullptr;
    }
    return std::make_unique<VerbsAh>(g_, ah, attr);
}

int VerbsContext::get_port_event(PortEvent *ev) noexcept {
    for (;;) {
        ibv_async_event e{};
        if (g_->get_async_event(ctx_, &e) != 0)
            return 0;  // EAGAIN: nothing pending
        const ibv_event_type t = e.event_type;
        const std::uint8_t port = static_cast<std::uint8_t>(e.element.port_num);
        g_->ack_async_event(&e);
        EventType mapped;
        switch (t) {
        case IBV_EVENT_PORT_ACTIVE: mapped = EventType::port_active; break;
        case IBV_EVENT_PORT_ERR: mapped = EventType::port_error; break;
        case IBV_EVENT_LID_CHANGE: mapped = EventType::lid_change; break;
        case IBV_EVENT_PKEY_CHANGE: mapped = EventType::pkey_change; break;
        case IBV_EVENT_SM_CHANGE:
        case IBV_EVENT_CLIENT_REREGISTER: mapped = EventType::sm_change; break;
        case IBV_EVENT_GID_CHANGE: mapped = EventType::gid_change; break;
        default:
            // QP/CQ/device errors: kept for last_error(); not a port event.
            error_ = std::string("async event: ") + g_->event_type_str(t);
            continue;
        }
        *ev = PortEvent{mapped, port};
        return 1;
    }
}

// Port counters from sysfs: the IBA PortCounters where the device keeps
// them, else the driver's own (rxe: hw_counters/sent_pkts, rcvd_pkts).
int VerbsContext::port_counters(std::uint8_t port, PortCounters *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    const std::string base = "/sys/class/infiniband/" + name_ + "/ports/" + std::to_string(port) + "/";
    auto rd = [&](const char *rel, std::uint64_t *v) {
        std::ifstream f(base + rel);
        return static_cast<bool>(f >> *v);
    };
    PortCounters c{};
    std::uint64_t v = 0;
    if (rd("counters/port_xmit_packets", &v) && v)
        c.tx_packets = v;
    else if (rd("hw_counters/sent_pkts", &v))
        c.tx_packets = v;
    if (rd("counters/port_rcv_packets", &v) && v)
        c.rx_packets = v;
    else if (rd("hw_counters/rcvd_pkts", &v))
        c.rx_packets = v;
    if (rd("counters/port_xmit_data", &v))
        c.tx_bytes = v * 4;  // in 32-bit words
    if (rd("counters/port_rcv_data", &v))
        c.rx_bytes = v * 4;
    if (rd("counters/port_rcv_constraint_errors", &v))
        c.drop_pkey = v;
    if (rd("counters/port_xmit_discards", &v))
        c.tx_port_down = v;
    *out = c;
    return 0;
}

int VerbsContext::ip_group(std::uint8_t port, const Gid &mgid, bool join) {
    ibv_gid_entry e{};
    if (const int rc = g_->query_gid_ex(ctx_, port, 0, &e))
        return fail(-rc, "RoCE multicast: no netdev for port " + std::to_string(port) + ": " + std::strerror(rc));
    std::string err;
    if (const int rc = ip_groups_.change(mgid, e.ndev_ifindex, join, &err))
        return fail(rc, err);
    return 0;
}

// The provider: no options (the device is the rdma-core device name, empty for the first).
std::unique_ptr<Context> open_provider(const std::string &device, const ProviderOptions &, std::string *err) {
    auto ctx = std::make_unique<VerbsContext>();
    if (!ctx->open(device, err))
        return nullptr;
    return ctx;
}

// ---- connected mode -----------------------------------------------------------

VerbsRcQp::VerbsRcQp(VerbsContext *ctx, ibv_qp *qp, VerbsCq *scq, bool srq, std::uint32_t max_send_sge)
    : ctx_(ctx), qp_(qp), srq_(srq), max_send_sge_(max_send_sge), scq_(scq) {
    stats_.qpn = qp->qp_num;
}

VerbsRcQp::~VerbsRcQp() { ctx_->glue()->destroy_qp(qp_); }

RcState VerbsRcQp::state() const noexcept {
    const RcState st = state_.load(std::memory_order_relaxed);
    if (st != RcState::rts)
        return st;
    const std::uint64_t now = mono_ms();
    if (now - queried_ms_ < kRcStateQueryMs)
        return st;
    queried_ms_ = now;
    ibv_qp_attr a{};
    ibv_qp_init_attr init{};
    if (ctx_->glue()->query_qp(qp_, &a, IBV_QP_STATE, &init) == 0 && (a.qp_state == IBV_QPS_ERR ||
                                                                       a.qp_state == IBV_QPS_SQE)) {
        const_cast<VerbsRcQp *>(this)->state_.store(RcState::error, std::memory_order_relaxed);
        return RcState::error;
    }
    return st;
}

int VerbsRcQp::connect(const RcConnect &c) noexcept {
    if (state_.load() != RcState::init)
        return ctx_->fail(-EINVAL, "RC QP " + std::to_string(qp_->qp_num) + ": connect in state " +
                                       to_string(state_.load()));
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.ah_attr = to_ibv_ah(c.path);
    a.path_mtu = static_cast<ibv_mtu>(c.path_mtu);
    a.dest_qp_num = c.remote_qpn;
    a.rq_psn = c.remote_psn & 0xffffff;
    a.max_dest_rd_atomic = 0;
    a.min_rnr_timer = c.min_rnr_timer;
    int rc = ctx_->glue()->modify_qp(qp_, &a,
                                     IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc)
        return ctx_->fail(-rc, "ibv_modify_qp(RC " + std::to_string(qp_->qp_num) + " -> RTR, remote QP " +
                                   std::to_string(c.remote_qpn) + "): " + std::strerror(rc));
    a = ibv_qp_attr{};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = c.timeout;
    a.retry_cnt = c.retry_cnt & 7;
    a.rnr_retry = c.rnr_retry & 7;
    a.sq_psn = c.local_psn & 0xffffff;
    a.max_rd_atomic = 0;
    rc = ctx_->glue()->modify_qp(qp_, &a,
                                 IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                     IBV_QP_MAX_QP_RD_ATOMIC);
    if (rc) {
        set_error();
        return ctx_->fail(-rc, "ibv_modify_qp(RC " + std::to_string(qp_->qp_num) + " -> RTS): " + std::strerror(rc));
    }
    state_ = RcState::rts;
    return 0;
}

// As the UD post_send, without inline or bounce: a connection's message is
// its gather list (registered memory, at most max_send_sge_ entries); a WR
// that is not ends the run (what was accepted is returned; the first: -EINVAL).
int VerbsRcQp::post_send(const SendWr *wr, int n) noexcept {
    if (const RcState st = state_.load(std::memory_order_relaxed); st != RcState::rts)  // (no query on the fast path)
        return ctx_->fail(-EINVAL, "RC QP " + std::to_string(qp_->qp_num) + ": post_send in state " + to_string(st));
    int done = 0;
    while (done < n) {
        ibv_send_wr w[kChunk];
        ibv_sge s[kChunk][kMaxRcSendSge];
        std::uint32_t lens[kChunk];
        int built = 0, signaled = 0;
        const int room = scq_->send_room();
        bool stop = false;
        while (built < kChunk && done + built < n) {
            const SendWr &r = wr[done + built];
            if (r.signaled && signaled == room) {
                stop = true;
                break;
            }
            if (r.num_sge == 0 || r.num_sge > max_send_sge_ || unregistered(r)) {
                if (done + built == 0)
                    return ctx_->fail(-EINVAL, "RC post_send: " + std::to_string(r.num_sge) + " entries (the QP "
                                      "gathers " + std::to_string(max_send_sge_) + "), or unregistered memory");
                stop = true;
                break;
            }
            ibv_send_wr &x = w[built];
            x = ibv_send_wr{};
            for (std::uint32_t j = 0; j < r.num_sge; ++j)
                s[built][j] = ibv_sge{r.sg_list[j].addr, r.sg_list[j].length, r.sg_list[j].lkey};
            x.wr_id = r.wr_id;
            x.sg_list = s[built];
            x.num_sge = static_cast<int>(r.num_sge);
            x.opcode = IBV_WR_SEND;
            if (r.signaled) {
                x.send_flags = IBV_SEND_SIGNALED;
                ++signaled;
            }
            if (built)
                w[built - 1].next = &x;
            lens[built++] = common::send_length(r, kMaxRcSendSge);
        }
        int posted = built;
        if (built) {
            ibv_send_wr *bad = nullptr;
            if (ibv_post_send(qp_, w, &bad) != 0)
                posted = bad ? static_cast<int>(bad - w) : 0;
        }
        int sig = 0;
        for (int i = 0; i < posted; ++i) {
            stats_.tx_packets.add();
            stats_.tx_bytes.add(lens[i]);
            sig += (w[i].send_flags & IBV_SEND_SIGNALED) != 0;
        }
        scq_->sends_posted(sig);
        done += posted;
        if (stop || posted < built || !built)
            break;
    }
    return done;
}

int VerbsRcQp::post_recv(const RcRecvWr *wr, int n) noexcept {
    if (srq_)
        return ctx_->fail(-EINVAL, "RC QP " + std::to_string(qp_->qp_num) + " receives through its SRQ");
    int done = 0;
    for (; done < n; ++done) {
        ibv_sge s[kMaxRcRecvSge];
        const RcRecvWr &r = wr[done];
        if (r.num_sge == 0 || r.num_sge > kMaxRcRecvSge)
            return done ? done : -EINVAL;
        for (std::uint32_t j = 0; j < r.num_sge; ++j)
            s[j] = ibv_sge{r.sg_list[j].addr, r.sg_list[j].length, r.sg_list[j].lkey};
        ibv_recv_wr w{};
        w.wr_id = r.wr_id | kRecvTag;
        w.sg_list = s;
        w.num_sge = static_cast<int>(r.num_sge);
        ibv_recv_wr *bad = nullptr;
        if (ibv_post_recv(qp_, &w, &bad) != 0)
            break;
    }
    return done;
}

int VerbsRcQp::set_error() noexcept {
    if (state_ == RcState::error)
        return 0;
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_ERR;
    if (const int rc = ctx_->glue()->modify_qp(qp_, &a, IBV_QP_STATE))
        return ctx_->fail(-rc, "ibv_modify_qp(RC " + std::to_string(qp_->qp_num) + " -> ERR): " + std::strerror(rc));
    state_ = RcState::error;
    return 0;
}

std::unique_ptr<Srq> VerbsContext::create_srq(const SrqInit &init) noexcept {
    if (!init.max_sge || init.max_sge > std::min(max_srq_sge_, kMaxRcRecvSge)) {
        fail(-EINVAL, "create_srq: " + std::to_string(init.max_sge) + " scatter entries (" + name_ + " takes " +
                          std::to_string(max_srq_sge_) + ")");
        return nullptr;
    }
    ibv_srq_init_attr a{};
    a.attr.max_wr = init.max_wr;
    a.attr.max_sge = init.max_sge;
    ibv_srq *srq = g_->create_srq(pd_, &a);
    if (!srq) {
        fail(-errno, "ibv_create_srq(" + std::to_string(init.max_wr) + " x " + std::to_string(init.max_sge) +
                         "): " + std::strerror(errno));
        return nullptr;
    }
    return std::make_unique<VerbsSrq>(g_, srq, init.max_sge);
}

std::unique_ptr<RcQp> VerbsContext::create_rc_qp(const RcQpInit &init) noexcept {
    if (!init.send_cq || !init.recv_cq || !valid_port(init.port_num)) {
        fail(-EINVAL, "create_rc_qp: send and receive CQs and a port needed");
        return nullptr;
    }
    auto *scq = static_cast<VerbsCq *>(init.send_cq), *rcq = static_cast<VerbsCq *>(init.recv_cq);
    ibv_qp_init_attr a{};
    a.send_cq = scq->raw();
    a.recv_cq = rcq->raw();
    a.srq = init.srq ? static_cast<VerbsSrq *>(init.srq)->raw() : nullptr;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = init.max_send_wr;
    a.cap.max_recv_wr = init.srq ? 0 : init.max_recv_wr;
    a.cap.max_send_sge = std::min(kMaxRcSendSge, max_sge_);
    a.cap.max_recv_sge = init.srq ? 0 : std::min(init.max_recv_sge, max_sge_);
    ibv_qp *qp = g_->create_qp(pd_, &a);
    if (!qp) {
        fail(-errno, "ibv_create_qp(RC, " + std::to_string(init.max_send_wr) + " sends of " +
                         std::to_string(a.cap.max_send_sge) + " entries): " + std::strerror(errno));
        return nullptr;
    }
    auto q = std::make_unique<VerbsRcQp>(this, qp, scq, init.srq != nullptr,
                                         std::min(a.cap.max_send_sge, kMaxRcSendSge));
    ibv_qp_attr m{};
    m.qp_state = IBV_QPS_INIT;
    m.pkey_index = init.pkey_index;
    m.port_num = init.port_num;
    m.qp_access_flags = 0;  // (SENDs only)
    if (const int rc = g_->modify_qp(qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
        fail(-rc, "ibv_modify_qp(RC -> INIT, P_Key index " + std::to_string(init.pkey_index) + "): " +
                      std::strerror(rc));
        return nullptr;
    }
    return q;
}

std::unique_ptr<Cm> VerbsContext::open_cm(std::uint8_t port) noexcept {
    if (!valid_port(port)) {
        fail(-EINVAL, "open_cm: no port " + std::to_string(port));
        return nullptr;
    }
    CmPortInfo info;
    info.device = name_;
    info.port = port;
    info.ethernet = ethernet(port);
    ibv_gid_entry e{};
    if (info.ethernet && g_->query_gid_ex(ctx_, port, 0, &e) == 0)
        info.ifindex = e.ndev_ifindex;
    g_->query_pkey(ctx_, port, 0, &info.pkey);
    info.pkey = ntohs(info.pkey);
    std::string err;
    auto cm = make_rdma_cm(g_, info, &err);
    if (!cm)
        fail(-ENODEV, name_ + " port " + std::to_string(port) + ": no connection manager: " + err);
    return cm;
}

} // namespace

} // namespace ipoib::hca::verbs

IPOIB_HCA_PROVIDER(verbs, "rdma-core's libibverbs (InfiniBand and RoCE devices), loaded through a dlopen()ed glue",
                   std::span<const ProviderOption>(), ipoib::hca::verbs::open_provider)
