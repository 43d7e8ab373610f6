// SPDX-License-Identifier: BSD-3-Clause
// The in-process HCA (provider "inproc"): devices that live in one process
// and reach each other by memcpy, for fast tests of the driver and the
// examples with no fabric, no root and no other process (what DPDK's
// net_ring is to ethdev).
//
// Each distinct device name is one single-port device of one process-wide
// fabric; opening a name again shares the device. post_send copies the
// message into the destination QP's next posted receive buffer (after the
// 40-byte GRH area) and queues both completions at once. Addressing: on
// Ethernet (the default link) by the address's GID + QPN, on InfiniBand by
// DLID + QPN; multicast by MGID to QPN 0xffffff, to every attached QP of the
// process, the sender's own included (hardware loops multicast back).
// Enforced as the other providers do: port state, P_Key, Q_Key (kUseQpQkey:
// the sending QP's), MTU, posted buffers, buffer size; every drop counted.
//
// Reliable connections (rc.hpp): SRQs and RC QPs, a message delivered
// whole into one receive of the peer (its SRQ's or its own) at post_send,
// scattered over the receive's buffers, both completions queued at once;
// RNR, too long, peer gone and set_error as the software HCA has them
// (soft_rc.cpp), RNR retried on the QP's next post_send and on every poll
// of its send CQ, each such retry one of rnr_retry (no timer).
//
// Not a fast path: one spinlock guards the whole fabric (every post, poll
// and query takes it), so senders and receivers may be on different threads.
// Not modelled: an SM or SA (LIDs are fixed, sm_lid is 0), port events other
// than those of inproc_testing.hpp, LID-routed multicast, SL/VL, CQ overrun
// (a receive that finds the CQ full is dropped as if no buffer were posted; a
// send is accepted only if its completion fits: post_send returns fewer).
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../builtin_providers.hpp"
#include "../cm/cm_engine.hpp"
#include "../provider_common.hpp"
#include "inproc_testing.hpp"
#include "ipoib/wire/hwaddr.hpp"

namespace ipoib::hca::inproc {

namespace {

// The in-process HCA's numbers, in one place.
constexpr std::uint64_t kSubnetPrefix = 0xfe80000000000000ull;  // GID = fe80::<GUID>
constexpr std::uint16_t kMaxUnicastLid = 0xbfff;                // LIDs 1..0xbfff; above: multicast
constexpr std::uint32_t kFirstQpn = 0x100;                      // QPNs below are never handed out
constexpr std::uint32_t kMaxRecvWr = 1u << 16;                  // receive queue depth limit
constexpr int kMaxCqDepth = 1 << 20;                            // create_cq: 1..kMaxCqDepth
constexpr std::size_t kDmaAlign = 4096;                         // alloc_dma: page-aligned
constexpr Mtu kDefaultMtu = Mtu::mtu2048;
constexpr std::uint16_t kDefaultPkey = 0xffff;
constexpr std::uint8_t kPhysLinkUp = 5;
constexpr std::uint32_t kMaxRcRecvWr = 4096;   // an SRQ's or RC QP's receive queue depth limit
constexpr std::uint32_t kMaxRcSendWr = 8192;   // an RC QP's send queue depth limit (as the soft HCA's)
constexpr std::uint8_t kRnrInfinite = 7;       // RcConnect::rnr_retry 7: retried without end
constexpr std::uint32_t kMaxQpn = 0xffffff;

using common::SpinLock;

class InprocContext;
class InprocQp;
class InprocRcQp;
struct GsiPort;

struct Device {
    std::string name;
    std::vector<std::pair<std::string, std::string>> options;  // as first opened
    std::uint64_t guid = 0;
    LinkLayer link = LinkLayer::ethernet;
    std::uint16_t lid = 0;  // 0 on Ethernet
    Mtu mtu = kDefaultMtu;
    std::vector<std::uint16_t> pkeys{kDefaultPkey};
    PortState state = PortState::active;
    PortCounters counters{};
    std::vector<InprocContext *> contexts;  // open on this device (for port events)

    Gid gid() const noexcept {
        Gid g;
        for (std::size_t i = 0; i < 8; ++i) {
            g.raw[i] = static_cast<std::uint8_t>(kSubnetPrefix >> (56 - 8 * i));
            g.raw[8 + i] = static_cast<std::uint8_t>(guid >> (56 - 8 * i));
        }
        return g;
    }
};

// Everything, behind one lock. Never destroyed (a context may outlive static destructors).
struct Fabric {
    SpinLock lock;
    std::vector<std::unique_ptr<Device>> devices;
    std::vector<InprocQp *> qps;
    std::vector<InprocRcQp *> rc_qps;
    std::vector<GsiPort *> gsi_ports;  // the ports with a CM open (one each)
    std::uint32_t next_qpn = kFirstQpn;
    std::uint16_t next_lid = 1;
    std::uint32_t next_lkey = 1;
};
Fabric &fabric() {
    static Fabric *f = new Fabric;
    return *f;
}
using Guard = std::lock_guard<SpinLock>;

// A port's QP1 as far as the CM goes: the MADs sent to it, waiting for its
// CM's get_event(). Bounded, as a QP1 receive queue is.
constexpr std::size_t kMaxGsiQueue = 1024;
struct GsiPort {
    Device *dev = nullptr;  // nullptr once the device closed (every call then fails)
    struct Mad {
        std::array<std::uint8_t, cm::kMadSize> bytes;
        cm::MadAddr from;
    };
    std::deque<Mad> rx;
};

class InprocAh final : public Ah {
  public:
    explicit InprocAh(const AhAttr &a) : attr_(a) {}
    const AhAttr &attr() const noexcept override { return attr_; }

  private:
    AhAttr attr_;
};

class InprocCq final : public Cq {
  public:
    explicit InprocCq(int depth, int efd = -1) : q(static_cast<std::size_t>(depth)), efd_(efd) {}
    ~InprocCq() override {
        if (efd_ >= 0)
            close(efd_);
    }
    // (RC sends waiting behind an RNR of the QPs this is the send CQ of are
    // retried first.)
    int poll(Wc *wc, int n) noexcept override;
    // Completion events: an eventfd, written when a completion is added while armed.
    int notify_fd() const noexcept override { return efd_; }
    int arm_notify() noexcept override {
        if (efd_ < 0)
            return -EOPNOTSUPP;
        Guard g(fabric().lock);
        armed_ = true;
        if (!q.empty())
            signal();  // one is already waiting
        return 0;
    }
    void ack_notify() noexcept override {
        std::uint64_t v;
        if (efd_ >= 0)
            [[maybe_unused]] const auto r = read(efd_, &v, sizeof v);
    }
    // A completion was added (fabric lock held).
    void signal() noexcept {
        if (!armed_)
            return;
        armed_ = false;
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto r = write(efd_, &one, sizeof one);
    }
    common::WcQueue q;  // under the fabric lock
    // RC QPs whose send CQ this is, and how many of them have sends waiting (under the fabric lock).
    std::vector<InprocRcQp *> rc_senders;
    std::uint32_t rc_waiting = 0;

  private:
    int efd_;
    bool armed_ = false;  // under the fabric lock
};

class InprocContext final : public common::ContextBase {
  public:
    ~InprocContext() override;
    bool open(const std::string &name, const ProviderOptions &opts, std::string *err);
    // A receive may put the GRH area apart from the message (RecvWr::num_sge 2).
    DeviceCaps caps() const noexcept override { return DeviceCaps{.max_recv_sge = kMaxRecvSge}; }
    int query_port(std::uint8_t port, PortAttr *out) noexcept override;
    int query_gid(std::uint8_t port, int index, Gid *out) noexcept override;
    int query_gid_type(std::uint8_t port, int index, GidType *out) noexcept override;
    int query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept override;
    void *alloc_dma(std::size_t len) noexcept override;
    void free_dma(void *p) noexcept override { std::free(p); }
    std::unique_ptr<Mr> reg_mr(void *addr, std::size_t len) noexcept override;
    std::unique_ptr<Cq> create_cq(int depth) noexcept override;
    std::unique_ptr<Cq> create_event_cq(int depth) noexcept override;
    std::unique_ptr<Qp> create_ud_qp(const QpInit &init) noexcept override;
    std::unique_ptr<Ah> create_ah(const AhAttr &attr) noexcept override;
    int get_port_event(PortEvent *ev) noexcept override;
    int port_counters(std::uint8_t port, PortCounters *out) noexcept override;
    std::unique_ptr<Cm> open_cm(std::uint8_t port) noexcept override;
    std::unique_ptr<Srq> create_srq(const SrqInit &init) noexcept override;
    std::unique_ptr<RcQp> create_rc_qp(const RcQpInit &init) noexcept override;

    Device *dev = nullptr;
    std::deque<PortEvent> events;  // under the fabric lock
};

class InprocQp final : public Qp {
  public:
    InprocQp(InprocContext *ctx, std::uint32_t qpn, const QpInit &init)
        : ctx_(ctx), dev_(ctx->dev), qpn_(qpn), qkey_(init.qkey), pkey_index_(init.pkey_index),
          max_recv_(init.max_recv_wr),
          send_cq_(static_cast<InprocCq *>(init.send_cq)), recv_cq_(static_cast<InprocCq *>(init.recv_cq)) {}
    ~InprocQp() override {
        Guard g(fabric().lock);
        std::erase(fabric().qps, this);
    }
    std::uint32_t qp_num() const noexcept override { return qpn_; }
    int post_recv(const RecvWr *wr, int n) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int set_qkey(std::uint32_t qkey) noexcept override {
        Guard g(fabric().lock);
        qkey_ = qkey;
        return 0;
    }
    int set_pkey_index(std::uint16_t index) noexcept override {
        Guard g(fabric().lock);
        if (index >= dev_->pkeys.size())
            return ctx_->fail(-EINVAL, "set_pkey_index: index " + std::to_string(index) + " is beyond the P_Key table");
        pkey_index_ = index;
        return 0;
    }
    int attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    int detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    QpCounters counters() const noexcept override {
        Guard g(fabric().lock);
        return c_;
    }

  private:
    void send_one(const SendWr &wr) noexcept;
    void deliver(InprocQp &d, const SendWr &wr, std::uint32_t len, std::uint32_t qkey, const AhAttr &ah) noexcept;
    bool attached(const Gid &g) const noexcept { return std::find(groups_.begin(), groups_.end(), g) != groups_.end(); }
    // As hardware: the table's entry at the QP's index, read per message (0 once the index is emptied).
    std::uint16_t pkey() const noexcept { return pkey_index_ < dev_->pkeys.size() ? dev_->pkeys[pkey_index_] : 0; }

    InprocContext *ctx_;
    Device *dev_;
    std::uint32_t qpn_, qkey_;
    std::uint16_t pkey_index_;
    std::uint32_t max_recv_;
    InprocCq *send_cq_, *recv_cq_;
    std::deque<RecvWr> rq_;    // posted receive buffers, in order
    std::vector<Gid> groups_;  // attached multicast GIDs
    QpCounters c_{};
};

// ---------------------------------------------------------------------------
// QP: everything under the fabric lock

int InprocQp::post_recv(const RecvWr *wr, int n) noexcept {
    Guard g(fabric().lock);
    int i = 0;
    for (; i < n && rq_.size() < max_recv_; ++i) {
        if (wr[i].num_sge < 1 || wr[i].num_sge > kMaxRecvSge || wr[i].sge.length < kGrhLen ||
            (wr[i].num_sge == 2 && wr[i].sge.length != kGrhLen))
            return i ? i : ctx_->fail(-EINVAL, "post_recv: buffer shorter than the 40-byte GRH area, or 2 entries "
                                               "whose first is not exactly the GRH area");
        rq_.push_back(wr[i]);
    }
    return i;
}

// A work request is accepted only if its completion has a place in the send
// CQ (reserved here, used or given back by send_one): a full CQ stops the
// burst, and the count accepted is returned, as ibv_post_send stops at a full
// send queue (ENOMEM). No completion is ever dropped.
int InprocQp::post_send(const SendWr *wr, int n) noexcept {
    Guard g(fabric().lock);
    int i = 0;
    for (; i < n && send_cq_->q.reserve(); ++i)
        send_one(wr[i]);
    return i;
}

void InprocQp::send_one(const SendWr &wr) noexcept {
    Wc c = common::send_wc(wr.wr_id, WcStatus::success, qpn_);
    const std::uint32_t len = common::send_length(wr);
    if (!wr.ah || wr.num_sge > kMaxSendSge) {
        c.status = WcStatus::general_err;
    } else if (dev_->state != PortState::active) {
        c.status = WcStatus::loc_qp_op_err;
        ++dev_->counters.tx_port_down;
    } else if (common::exceeds_mtu(len, mtu_bytes(dev_->mtu))) {
        c.status = WcStatus::loc_len_err;
        ++dev_->counters.tx_mtu_exceeded;
    }
    if (c.status != WcStatus::success) {
        ++c_.tx_errors;
        send_cq_->q.push_reserved(c);  // errors complete even when unsignaled, as in verbs
        send_cq_->signal();
        return;
    }
    const AhAttr &ah = wr.ah->attr();
    const std::uint32_t qkey = common::send_qkey(wr.remote_qkey, qkey_);
    if (wr.remote_qpn == kMulticastQpn && ah.is_global && ah.dgid.is_multicast()) {
        for (InprocQp *q : fabric().qps)  // a delivery never changes the list
            if (q->attached(ah.dgid))
                deliver(*q, wr, len, qkey, ah);
    } else {
        // Ethernet: by GID; InfiniBand: by LID (0 is no LID).
        Device *dd = nullptr;
        for (auto &d : fabric().devices)
            if (dev_->link == LinkLayer::ethernet ? ah.is_global && d->gid() == ah.dgid
                                                  : ah.dlid != 0 && d->lid == ah.dlid)
                dd = d.get();
        auto it = std::find_if(fabric().qps.begin(), fabric().qps.end(),
                               [&](InprocQp *x) { return dd && x->dev_ == dd && x->qpn_ == wr.remote_qpn; });
        if (it != fabric().qps.end())
            deliver(**it, wr, len, qkey, ah);
        else
            ++(dd ? dd : dev_)->counters.drop_no_qp;  // no such QP there, or no such port at all
    }
    ++dev_->counters.tx_packets;
    dev_->counters.tx_bytes += len;
    ++c_.tx_packets;
    c_.tx_bytes += len;
    if (wr.signaled) {
        send_cq_->q.push_reserved(c);
        send_cq_->signal();
    } else {
        send_cq_->q.unreserve();
    }
}

void InprocQp::deliver(InprocQp &d, const SendWr &wr, std::uint32_t len, std::uint32_t qkey,
                       const AhAttr &ah) noexcept {
    PortCounters &pc = d.dev_->counters;
    QpCounters &qc = d.c_;
    if (d.dev_->state != PortState::active) {
        ++pc.drop_port_down, ++qc.drop_port_down;
    } else if (!common::pkey_match(pkey(), d.pkey())) {
        ++pc.drop_pkey, ++qc.drop_pkey;
    } else if (qkey != d.qkey_) {
        ++pc.drop_qkey, ++qc.drop_qkey;
    } else if (d.rq_.empty() || d.recv_cq_->q.full()) {
        ++pc.drop_no_buffer, ++qc.drop_no_buffer;
    } else {
        const RecvWr r = d.rq_.front();
        d.rq_.pop_front();
        // wr_id, status, opcode, flags, SL, byte_len, QPN, source QPN, SLID (0 on Ethernet), P_Key index, RSS hash
        Wc w{r.wr_id, WcStatus::success, WcOpcode::recv, 0, ah.sl, kGrhLen + len,
             d.qpn_, qpn_, dev_->lid, d.pkey_index_, 0};
        // One buffer: the GRH area, then the message. Two entries: each in its own.
        auto *buf = reinterpret_cast<std::uint8_t *>(static_cast<std::uintptr_t>(r.sge.addr));
        const bool apart = r.num_sge == 2;
        const std::uint32_t room = apart ? r.sge2.length : r.sge.length - kGrhLen;
        if (len > room) {
            w.status = WcStatus::loc_len_err;
            ++pc.drop_too_long, ++qc.drop_too_long;
        } else {
            if (ah.is_global) {  // as every multicast address is (its DGID is the group)
                common::write_grh(buf, ah, dev_->gid(), len);
                w.wc_flags = kWcGrh;
            }
            std::uint8_t *dst = apart ? reinterpret_cast<std::uint8_t *>(static_cast<std::uintptr_t>(r.sge2.addr))
                                      : buf + kGrhLen;
            for (std::uint32_t i = 0; i < wr.num_sge; dst += wr.sg_list[i++].length)
                std::memcpy(dst, reinterpret_cast<const void *>(static_cast<std::uintptr_t>(wr.sg_list[i].addr)),
                            wr.sg_list[i].length);
            ++pc.rx_packets, ++qc.rx_packets;
            pc.rx_bytes += len, qc.rx_bytes += len;
        }
        d.recv_cq_->q.push(w);
        d.recv_cq_->signal();
    }
}

int InprocQp::attach_mcast(const Gid &mgid, std::uint16_t) noexcept {
    if (!mgid.is_multicast())
        return ctx_->fail(-EINVAL, "attach_mcast: " + wire::to_string(mgid) + " is not a multicast GID");
    Guard g(fabric().lock);
    if (!attached(mgid))
        groups_.push_back(mgid);
    return 0;
}

int InprocQp::detach_mcast(const Gid &mgid, std::uint16_t) noexcept {
    Guard g(fabric().lock);
    if (!attached(mgid))
        return ctx_->fail(-ENOENT, "detach_mcast: " + wire::to_string(mgid) + " is not attached");
    std::erase(groups_, mgid);
    return 0;
}

// ---------------------------------------------------------------------------
// Context

InprocContext::~InprocContext() {
    if (!dev)
        return;
    Guard g(fabric().lock);
    std::erase(dev->contexts, this);
    if (dev->contexts.empty()) {  // the last context closes the device
        for (GsiPort *p : fabric().gsi_ports)
            if (p->dev == dev)
                p->dev = nullptr;  // a CM left open fails from now on
        std::erase_if(fabric().devices, [&](const auto &d) { return d.get() == dev; });
    }
}

// Device options: link, lid, mtu, pkeys (defaults: eth, assigned at open, 2048, 0xffff).
bool parse_options(const ProviderOptions &opts, Device *d, std::string *err) {
    const std::string link = opts.get("link", "eth");
    if (link != "eth" && link != "ib") {
        *err = "inproc provider: option link=" + link + ": expected ib or eth";
        return false;
    }
    std::uint32_t lid = 0, mtu = 0;
    if (!common::option_uint(opts, "lid", 1, kMaxUnicastLid, 0, &lid, err) ||
        !common::option_uint(opts, "mtu", 256, 4096, mtu_bytes(kDefaultMtu), &mtu, err))
        return false;
    d->link = link == "ib" ? LinkLayer::infiniband : LinkLayer::ethernet;
    d->lid = static_cast<std::uint16_t>(lid);
    if (lid && d->link != LinkLayer::infiniband) {
        *err = "inproc provider: option lid needs link=ib (an Ethernet port has no LID)";
        return false;
    }
    for (auto m : {Mtu::mtu256, Mtu::mtu512, Mtu::mtu1024, Mtu::mtu2048, Mtu::mtu4096})
        if (mtu_bytes(m) == mtu)
            d->mtu = m;
    if (mtu_bytes(d->mtu) != mtu) {
        *err = "inproc provider: option mtu=" + std::to_string(mtu) + ": expected 256, 512, 1024, 2048 or 4096";
        return false;
    }
    if (const std::string *pk = opts.find("pkeys")) {
        d->pkeys.clear();
        for (std::size_t pos = 0; pos <= pk->size();) {  // 0xffff:0x8001:...
            const std::size_t end = std::min(pk->find(':', pos), pk->size());
            const std::string item = pk->substr(pos, end - pos);
            char *e = nullptr;
            const unsigned long k = std::strtoul(item.c_str(), &e, 0);
            if (item.empty() || *e || k > 0xffff || !(k & common::kPkeyPartitionMask) || d->pkeys.size() == kMaxPkeys) {
                *err = "inproc provider: option pkeys=" + *pk + ": expected up to 64 P_Keys like 0xffff:0x8001";
                return false;
            }
            d->pkeys.push_back(static_cast<std::uint16_t>(k));
            pos = end + 1;
        }
    }
    return true;
}

bool InprocContext::open(const std::string &name, const ProviderOptions &opts, std::string *err) {
    if (name.empty()) {
        *err = "inproc provider: a device name is required (any name; one name, one device)";
        return false;
    }
    auto nd = std::make_unique<Device>();
    nd->name = name;
    nd->options = opts.items();
    nd->guid = 0xcbf29ce484222325ull;  // the GUID: FNV-1a of the name, so the same name has the same GID
    for (unsigned char c : name)
        nd->guid = (nd->guid ^ c) * 0x100000001b3ull;
    if (!parse_options(opts, nd.get(), err))
        return false;
    Fabric &f = fabric();
    Guard g(f.lock);
    auto taken = [&](std::uint16_t lid) {
        return std::any_of(f.devices.begin(), f.devices.end(), [&](auto &d) { return d->lid == lid; });
    };
    for (auto &d : f.devices) {
        if (d->name == name) {
            if (!opts.items().empty() && opts.items() != d->options) {
                *err = "inproc provider: device " + name + " is already open with other options";
                return false;
            }
            dev = d.get();  // the same device
        } else if (d->guid == nd->guid || (nd->lid && d->lid == nd->lid)) {
            *err = "inproc provider: device " + name + " would have the GUID or LID of device " + d->name;
            return false;
        }
    }
    if (!dev) {
        while (nd->link == LinkLayer::infiniband && !nd->lid) {  // the next LID nobody has
            if (!taken(f.next_lid))
                nd->lid = f.next_lid;
            f.next_lid = static_cast<std::uint16_t>(f.next_lid % kMaxUnicastLid + 1);
        }
        f.devices.push_back(std::move(nd));
        dev = f.devices.back().get();
    }
    dev->contexts.push_back(this);
    name_ = name;
    nports_ = 1;
    return true;
}

int InprocContext::query_port(std::uint8_t port, PortAttr *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    Guard g(fabric().lock);
    PortAttr a;
    a.state = dev->state;
    a.link_layer = dev->link;
    a.phys_state = kPhysLinkUp;
    a.lid = dev->lid;
    a.max_mtu = Mtu::mtu4096;
    a.active_mtu = dev->mtu;
    a.active_width = 2;  // 4x EDR, as a ConnectX-4 port
    a.active_speed = 32;
    a.subnet_prefix = kSubnetPrefix;
    a.port_guid = dev->guid;
    a.pkey_tbl_len = static_cast<std::uint16_t>(dev->pkeys.size());
    a.port_num = port;
    *out = a;
    return 0;
}

int InprocContext::query_gid(std::uint8_t port, int index, Gid *out) noexcept {
    if (!valid_port(port) || index != 0)
        return fail(-EINVAL, "GID index " + std::to_string(index) + " of port " + std::to_string(port) +
                                 ": only index 0 exists");
    *out = dev->gid();
    return 0;
}

int InprocContext::query_gid_type(std::uint8_t port, int index, GidType *out) noexcept {
    Gid g;
    if (const int r = query_gid(port, index, &g); r != 0)
        return r;
    *out = dev->link == LinkLayer::ethernet ? GidType::roce_v2 : GidType::ib;
    return 0;
}

int InprocContext::query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept {
    Guard g(fabric().lock);  // set_pkeys may replace the table
    if (const int r = pkey_index_rule(port, index, static_cast<int>(dev->pkeys.size()), out); r <= 0)
        return r;
    *out = dev->pkeys[static_cast<std::size_t>(index)];
    return 0;
}

void *InprocContext::alloc_dma(std::size_t len) noexcept {
    void *p = std::aligned_alloc(kDmaAlign, (std::max<std::size_t>(len, 1) + kDmaAlign - 1) / kDmaAlign * kDmaAlign);
    if (!p)
        fail(-ENOMEM, "alloc_dma: " + std::to_string(len) + " bytes: out of memory");
    return p;
}

std::unique_ptr<Mr> InprocContext::reg_mr(void *addr, std::size_t len) noexcept {
    Guard g(fabric().lock);
    return std::make_unique<common::PlainMr>(addr, len, fabric().next_lkey++ | 1);  // any range; lkey nonzero
}

std::unique_ptr<Cq> InprocContext::create_cq(int depth) noexcept {
    return check_cq_depth(depth, kMaxCqDepth) ? std::make_unique<InprocCq>(depth) : nullptr;
}

std::unique_ptr<Cq> InprocContext::create_event_cq(int depth) noexcept {
    if (!check_cq_depth(depth, kMaxCqDepth))
        return nullptr;
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        fail(-errno, std::string("create_event_cq: eventfd: ") + std::strerror(errno));
        return nullptr;
    }
    return std::make_unique<InprocCq>(depth, efd);
}

std::unique_ptr<Qp> InprocContext::create_ud_qp(const QpInit &init) noexcept {
    if (!check_qp_init(init, kMaxRecvWr))
        return nullptr;
    if (init.pkey_index >= dev->pkeys.size()) {
        fail(-EINVAL, "create_ud_qp: P_Key index " + std::to_string(init.pkey_index) + " holds no P_Key");
        return nullptr;
    }
    Guard g(fabric().lock);
    auto q = std::make_unique<InprocQp>(this, fabric().next_qpn++, init);
    fabric().qps.push_back(q.get());
    return q;
}

std::unique_ptr<Ah> InprocContext::create_ah(const AhAttr &attr) noexcept {
    if (!valid_port(attr.port_num))
        fail(-EINVAL, "create_ah: no port " + std::to_string(attr.port_num));
    else if (!attr.is_global && dev->link == LinkLayer::ethernet)
        fail(-EINVAL, "create_ah: port 1 is Ethernet: an address needs a GRH (GID)");
    else if (!attr.is_global && (attr.dlid == 0 || attr.dlid > kMaxUnicastLid))
        fail(-EINVAL, "create_ah: DLID " + std::to_string(attr.dlid) + " is not routable without a GRH");
    else
        return std::make_unique<InprocAh>(attr);
    return nullptr;
}

int InprocContext::get_port_event(PortEvent *ev) noexcept {
    Guard g(fabric().lock);
    if (events.empty())
        return 0;
    *ev = events.front();
    events.pop_front();
    return 1;
}

int InprocContext::port_counters(std::uint8_t port, PortCounters *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    Guard g(fabric().lock);
    *out = dev->counters;
    return 0;
}

// ---------------------------------------------------------------------------
// Reliable connections (rc.hpp), after the software HCA's (soft_rc.cpp):
// everything under the fabric lock, a message delivered at post_send.

// The device a path leads to, as a UD send finds it: on Ethernet by the
// GRH's DGID, on InfiniBand by the DLID (fabric lock held).
Device *device_at(const Device &from, const AhAttr &a) noexcept {
    for (auto &d : fabric().devices)
        if (from.link == LinkLayer::ethernet ? a.is_global && d->gid() == a.dgid : a.dlid != 0 && d->lid == a.dlid)
            return d.get();
    return nullptr;
}

// A receive of an SRQ or of an RC QP's own queue, as posted.
struct RcRecv {
    std::uint64_t wr_id = 0;
    std::uint32_t num_sge = 0;
    std::uint64_t capacity = 0;  // the buffers' bytes together
    Sge sg[kMaxRcRecvSge];
};

// Posted receives in order: a ring made at creation (nothing allocated per post).
class RcRecvQueue {
  public:
    RcRecvQueue(std::uint32_t depth, std::uint32_t max_sge) : slots_(depth), max_sge_(max_sge) {}
    // Fabric lock held. How many were taken (the rest did not fit), or <0 (ctx.fail).
    int post(InprocContext &ctx, const RcRecvWr *wr, int n) noexcept {
        int i = 0;
        for (; i < n && count_ < slots_.size(); ++i) {
            if (wr[i].num_sge == 0 || wr[i].num_sge > max_sge_ || !wr[i].sg_list)
                return i ? i : ctx.fail(-EINVAL, "post_recv: " + std::to_string(wr[i].num_sge) +
                                                     " scatter entries (1.." + std::to_string(max_sge_) + ")");
            RcRecv &r = slots_[(head_ + count_) % slots_.size()];
            r.wr_id = wr[i].wr_id;
            r.num_sge = wr[i].num_sge;
            r.capacity = 0;
            for (std::uint32_t k = 0; k < r.num_sge; ++k) {
                r.sg[k] = wr[i].sg_list[k];
                r.capacity += r.sg[k].length;
            }
            ++count_;
        }
        return i;
    }
    bool empty() const noexcept { return count_ == 0; }
    const RcRecv &front() const noexcept { return slots_[head_]; }
    void pop() noexcept {
        head_ = head_ + 1 == slots_.size() ? 0 : head_ + 1;
        --count_;
    }

  private:
    std::vector<RcRecv> slots_;
    std::size_t head_ = 0, count_ = 0;
    std::uint32_t max_sge_;
};

class InprocSrq final : public Srq {
  public:
    InprocSrq(InprocContext *ctx, const SrqInit &init)
        : ctx_(ctx), cq_(static_cast<InprocCq *>(init.cq)), rq_(init.max_wr, init.max_sge) {}
    int post_recv(const RcRecvWr *wr, int n) noexcept override {
        Guard g(fabric().lock);
        return rq_.post(*ctx_, wr, n);
    }
    InprocCq *cq() const noexcept { return cq_; }
    RcRecvQueue &rq() noexcept { return rq_; }

  private:
    InprocContext *ctx_;
    InprocCq *cq_;
    RcRecvQueue rq_;
};

class InprocRcQp final : public RcQp {
  public:
    // Registered in the fabric and its send CQ by create_rc_qp (fabric lock held).
    InprocRcQp(InprocContext *ctx, std::uint32_t qpn, const RcQpInit &init, InprocSrq *srq)
        : ctx_(ctx), dev_(ctx->dev), qpn_(qpn), pkey_index_(init.pkey_index),
          send_cq_(static_cast<InprocCq *>(init.send_cq)), recv_cq_(static_cast<InprocCq *>(init.recv_cq)), srq_(srq),
          own_(srq ? 0 : init.max_recv_wr, init.max_recv_sge), pending_(init.max_send_wr) {}
    ~InprocRcQp() override {
        Guard g(fabric().lock);
        set_waiting(false);
        std::erase(fabric().rc_qps, this);
        std::erase(send_cq_->rc_senders, this);
        for (InprocRcQp *q : fabric().rc_qps)  // connected to this one: its peer is gone for good
            if (q->peer_ == this) {
                q->peer_ = nullptr;
                q->peer_gone_ = true;
            }
    }
    std::uint32_t qp_num() const noexcept override { return qpn_; }
    int connect(const RcConnect &c) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int post_recv(const RcRecvWr *wr, int n) noexcept override {
        Guard g(fabric().lock);
        if (srq_)
            return ctx_->fail(-EINVAL, "post_recv: RC QP " + std::to_string(qpn_) + " receives through its SRQ");
        if (state_ == RcState::error)
            return ctx_->fail(-EINVAL, "post_recv: RC QP " + std::to_string(qpn_) + " is in the error state");
        return own_.post(*ctx_, wr, n);
    }
    int set_error() noexcept override {
        Guard g(fabric().lock);
        if (state_ != RcState::error)
            to_error();
        return 0;
    }
    RcState state() const noexcept override {
        Guard g(fabric().lock);
        return state_;
    }
    QpCounters counters() const noexcept override {
        Guard g(fabric().lock);
        return c_;
    }
    // Retry the sends waiting behind an RNR (fabric lock held).
    void progress() noexcept;

  private:
    // A send accepted and not delivered yet (behind an RNR): its work request, gather list included.
    struct Pending {
        std::uint64_t wr_id;
        std::uint32_t num_sge, len;
        bool signaled;
        Sge sg[kMaxRcSendSge];
    };
    enum class Outcome : std::uint8_t { delivered, rnr, failed };
    Outcome deliver(const Sge *sg, std::uint32_t nsge, std::uint32_t len, WcStatus *status) noexcept;
    InprocRcQp *peer() noexcept;
    InprocRcQp *live_peer() noexcept;
    std::uint16_t pkey() const noexcept { return pkey_index_ < dev_->pkeys.size() ? dev_->pkeys[pkey_index_] : 0; }
    void complete(std::uint64_t wr_id, bool signaled, WcStatus st) noexcept {
        if (signaled || st != WcStatus::success) {  // errors complete even when unsignaled
            send_cq_->q.push_reserved(common::send_wc(wr_id, st, qpn_));
            send_cq_->signal();
        } else {
            send_cq_->q.unreserve();
        }
    }
    void fail_send(std::uint64_t wr_id, WcStatus st) noexcept {
        ++c_.tx_errors;
        complete(wr_id, true, st);
        to_error();
    }
    void push_pending(const SendWr &wr, std::uint32_t len) noexcept {
        Pending &p = pending_[p_tail_++ % pending_.size()];
        p.wr_id = wr.wr_id;
        p.num_sge = std::min(wr.num_sge, kMaxRcSendSge + 1);  // (more than kMaxRcSendSge fails at delivery)
        p.len = len;
        p.signaled = wr.signaled;
        std::memcpy(p.sg, wr.sg_list, std::min(wr.num_sge, kMaxRcSendSge) * sizeof(Sge));
        set_waiting(true);
    }
    void to_error() noexcept;
    // Counted in the send CQ's rc_waiting while sends wait (its polls retry them).
    void set_waiting(bool w) noexcept {
        if (w != waiting_) {
            waiting_ = w;
            send_cq_->rc_waiting += w ? 1 : -1u;
        }
    }

    InprocContext *ctx_;
    Device *dev_;
    std::uint32_t qpn_;
    std::uint16_t pkey_index_;
    InprocCq *send_cq_, *recv_cq_;
    InprocSrq *srq_;
    RcRecvQueue own_;  // without an SRQ
    RcState state_ = RcState::init;
    RcConnect conn_{};
    InprocRcQp *peer_ = nullptr;  // found on first use, cleared when it is destroyed
    bool peer_gone_ = false;
    std::vector<Pending> pending_;  // ring of max_send_wr, made at creation
    std::uint64_t p_head_ = 0, p_tail_ = 0;
    std::uint32_t rnr_tries_ = 0;  // retries of the first waiting send that found no receive
    bool waiting_ = false;
    QpCounters c_{};
};

int InprocRcQp::connect(const RcConnect &c) noexcept {
    Guard g(fabric().lock);
    if (state_ != RcState::init)
        return ctx_->fail(-EINVAL, "connect: RC QP " + std::to_string(qpn_) + " is " + to_string(state_) +
                                       ", not INIT");
    if (c.remote_qpn < kFirstQpn || c.remote_qpn > kMaxQpn)
        return ctx_->fail(-EINVAL, "connect: remote QPN " + std::to_string(c.remote_qpn) + " is never handed out");
    if (c.path_mtu < Mtu::mtu256 || c.path_mtu > Mtu::mtu4096)
        return ctx_->fail(-EINVAL, "connect: path MTU code " + std::to_string(static_cast<int>(c.path_mtu)));
    if (!device_at(*dev_, c.path))
        return ctx_->fail(-EINVAL, dev_->link == LinkLayer::ethernet
                                       ? "connect: no device has the path's DGID (an Ethernet port needs a GRH)"
                                       : "connect: no device has LID " + std::to_string(c.path.dlid));
    conn_ = c;
    peer_ = nullptr;
    peer_gone_ = false;
    rnr_tries_ = 0;
    state_ = RcState::rts;
    return 0;
}

// The QP connected to (found by the path's device and the remote QPN once it exists).
InprocRcQp *InprocRcQp::peer() noexcept {
    if (peer_ || peer_gone_)
        return peer_;
    if (Device *d = device_at(*dev_, conn_.path))
        for (InprocRcQp *q : fabric().rc_qps)
            if (q->dev_ == d && q->qpn_ == conn_.remote_qpn)
                return peer_ = q;
    return nullptr;
}

// The peer if the connection stands: both ports active, the peer in RTS and
// connected back to this QP, in a matching partition. Else nullptr: what
// hardware learns when its retries are exhausted.
InprocRcQp *InprocRcQp::live_peer() noexcept {
    if (dev_->state != PortState::active)
        return nullptr;
    InprocRcQp *p = peer();
    if (!p || p->dev_->state != PortState::active || p->state_ != RcState::rts || p->conn_.remote_qpn != qpn_ ||
        p->peer() != this || !common::pkey_match(pkey(), p->pkey()))
        return nullptr;
    return p;
}

// One message into the peer's next receive, scattered over its buffers.
InprocRcQp::Outcome InprocRcQp::deliver(const Sge *sg, std::uint32_t nsge, std::uint32_t len,
                                        WcStatus *status) noexcept {
    if (nsge > kMaxRcSendSge) {
        *status = WcStatus::general_err;
        return Outcome::failed;
    }
    InprocRcQp *p = live_peer();
    if (!p) {
        *status = WcStatus::retry_exc_err;
        return Outcome::failed;
    }
    RcRecvQueue &rq = p->srq_ ? p->srq_->rq() : p->own_;
    PortCounters &pc = p->dev_->counters;
    if (rq.empty() || p->recv_cq_->q.full()) {  // an RNR NAK
        ++pc.drop_no_buffer, ++p->c_.drop_no_buffer;
        return Outcome::rnr;
    }
    const RcRecv &r = rq.front();
    // wr_id, status, opcode, flags, SL, byte_len, QPN, source QPN, SLID (0 on Ethernet), P_Key index, RSS hash
    Wc w{r.wr_id, WcStatus::success, WcOpcode::recv, 0, conn_.path.sl, len, p->qpn_, qpn_, dev_->lid,
         p->pkey_index_, 0};
    if (len > r.capacity) {
        w.status = WcStatus::loc_len_err;
        w.byte_len = 0;
        ++pc.drop_too_long, ++p->c_.drop_too_long;
        *status = WcStatus::general_err;  // IBA: remote operation error
    } else {
        // Gather list -> scatter list, in order, filling each buffer before the next.
        std::uint32_t k = 0, used = 0;
        for (std::uint32_t i = 0; i < nsge; ++i) {
            const auto *src = reinterpret_cast<const std::uint8_t *>(static_cast<std::uintptr_t>(sg[i].addr));
            for (std::uint32_t left = sg[i].length; left;) {
                while (used == r.sg[k].length) {
                    ++k;
                    used = 0;
                }
                const std::uint32_t take = std::min(left, r.sg[k].length - used);
                std::memcpy(reinterpret_cast<std::uint8_t *>(static_cast<std::uintptr_t>(r.sg[k].addr)) + used, src,
                            take);
                used += take;
                src += take;
                left -= take;
            }
        }
        ++pc.rx_packets, ++p->c_.rx_packets;
        pc.rx_bytes += len, p->c_.rx_bytes += len;
        ++dev_->counters.tx_packets, ++c_.tx_packets;
        dev_->counters.tx_bytes += len, c_.tx_bytes += len;
    }
    rq.pop();
    p->recv_cq_->q.push(w);  // (room checked above)
    p->recv_cq_->signal();
    return w.status == WcStatus::success ? Outcome::delivered : Outcome::failed;
}

// Accepted: as many as the send CQ has room for (completions reserved) and
// the send queue holds. Delivered at once, in order; from the first that
// finds no receive (RNR) on, queued and retried (progress()).
int InprocRcQp::post_send(const SendWr *wr, int n) noexcept {
    Guard g(fabric().lock);
    if (state_ == RcState::init || state_ == RcState::rtr)
        return ctx_->fail(-EINVAL, "post_send: RC QP " + std::to_string(qpn_) + " is not connected (" +
                                       to_string(state_) + ")");
    if (n <= 0)
        return 0;
    const std::uint64_t room = pending_.size() - (p_tail_ - p_head_);
    const int accepted = send_cq_->q.reserve_n(static_cast<int>(std::min<std::uint64_t>(static_cast<unsigned>(n), room)));
    progress();
    int i = 0;
    for (; i < accepted && state_ == RcState::rts; ++i) {
        const std::uint32_t len = common::send_length(wr[i], kMaxRcSendSge);
        if (p_head_ != p_tail_) {  // behind a waiting send
            push_pending(wr[i], len);
            continue;
        }
        WcStatus st = WcStatus::success;
        const Outcome o = deliver(wr[i].sg_list, wr[i].num_sge, len, &st);
        if (o == Outcome::delivered) {
            complete(wr[i].wr_id, wr[i].signaled, WcStatus::success);
        } else if (o == Outcome::failed) {
            fail_send(wr[i].wr_id, st);
        } else if (conn_.rnr_retry == 0) {
            fail_send(wr[i].wr_id, WcStatus::rnr_retry_exc_err);
        } else {
            rnr_tries_ = 0;
            push_pending(wr[i], len);
        }
    }
    for (; i < accepted; ++i)  // the QP is in ERR: flushed
        complete(wr[i].wr_id, true, WcStatus::wr_flush_err);
    return accepted;
}

// The sends waiting behind an RNR, in order, until one finds no receive
// again. Each call that finds none is one retry of rnr_retry (7: without end).
void InprocRcQp::progress() noexcept {
    if (p_head_ == p_tail_ || state_ != RcState::rts)
        return;
    while (p_head_ < p_tail_) {
        const Pending &p = pending_[p_head_ % pending_.size()];
        WcStatus st = WcStatus::success;
        const Outcome o = deliver(p.sg, p.num_sge, p.len, &st);
        if (o == Outcome::rnr) {
            if (conn_.rnr_retry != kRnrInfinite && ++rnr_tries_ >= conn_.rnr_retry) {
                ++p_head_;
                fail_send(p.wr_id, WcStatus::rnr_retry_exc_err);
            }
            break;
        }
        rnr_tries_ = 0;
        ++p_head_;
        if (o == Outcome::failed) {
            fail_send(p.wr_id, st);
            break;
        }
        complete(p.wr_id, p.signaled, WcStatus::success);
    }
    if (p_head_ == p_tail_)
        set_waiting(false);
}

// To ERR: waiting sends and the own queue's receives complete flushed (a
// flushed receive that finds the receive CQ full is lost: CQ overrun is not
// modelled). An SRQ's receives stay (they belong to the SRQ).
void InprocRcQp::to_error() noexcept {
    state_ = RcState::error;
    for (; p_head_ < p_tail_; ++p_head_)
        complete(pending_[p_head_ % pending_.size()].wr_id, true, WcStatus::wr_flush_err);
    set_waiting(false);
    for (; !own_.empty(); own_.pop())
        recv_cq_->q.push(Wc{own_.front().wr_id, WcStatus::wr_flush_err, WcOpcode::recv, 0, 0, 0, qpn_, 0, 0,
                            pkey_index_, 0});
    recv_cq_->signal();
}

int InprocCq::poll(Wc *wc, int n) noexcept {
    Guard g(fabric().lock);
    if (rc_waiting)
        for (InprocRcQp *qp : rc_senders)
            qp->progress();
    return q.pop(wc, n);
}

std::unique_ptr<Srq> InprocContext::create_srq(const SrqInit &init) noexcept {
    if (!init.cq) {
        fail(-EINVAL, "create_srq: no CQ");
        return nullptr;
    }
    if (init.max_wr == 0 || init.max_wr > kMaxRcRecvWr || init.max_sge == 0 || init.max_sge > kMaxRcRecvSge) {
        fail(-EINVAL, "create_srq: max_wr 1.." + std::to_string(kMaxRcRecvWr) + ", max_sge 1.." +
                          std::to_string(kMaxRcRecvSge));
        return nullptr;
    }
    return std::make_unique<InprocSrq>(this, init);
}

std::unique_ptr<RcQp> InprocContext::create_rc_qp(const RcQpInit &init) noexcept {
    auto *srq = static_cast<InprocSrq *>(init.srq);
    if (!check_rc_qp_init(init, srq ? srq->cq() : nullptr, kMaxRcSendWr, kMaxRcRecvWr))
        return nullptr;
    Guard g(fabric().lock);
    if (init.pkey_index >= dev->pkeys.size()) {
        fail(-EINVAL, "create_rc_qp: P_Key index " + std::to_string(init.pkey_index) + " holds no P_Key");
        return nullptr;
    }
    auto q = std::make_unique<InprocRcQp>(this, fabric().next_qpn++, init, srq);
    fabric().rc_qps.push_back(q.get());
    static_cast<InprocCq *>(init.send_cq)->rc_senders.push_back(q.get());
    return q;
}

// ---------------------------------------------------------------------------
// Connection management: the shared CM engine over the ports' QP1s

// MADs between the QP1s of this process's devices: to the port with the
// address's LID (InfiniBand) or, with a GRH, its GID (Ethernet has no LIDs).
// Counted in the port counters as packets are: tx on the sender, rx or a
// drop (no CM open there: drop_no_qp; port down: drop_port_down; its queue
// full: drop_no_buffer) on the receiver.
class InprocMadTransport final : public cm::MadTransport {
  public:
    explicit InprocMadTransport(Device *dev) {
        port_.dev = dev;
        fabric().gsi_ports.push_back(&port_);  // (fabric lock held by open_cm)
    }
    ~InprocMadTransport() override {
        Guard g(fabric().lock);
        std::erase(fabric().gsi_ports, &port_);
    }

    int send(const cm::MadAddr &to, const std::uint8_t *mad) noexcept override {
        Guard g(fabric().lock);
        Device *src = port_.dev;
        if (!src)
            return -ENODEV;
        if (src->state != PortState::active) {
            ++src->counters.tx_port_down;
            return -ENETDOWN;
        }
        ++src->counters.tx_packets;
        src->counters.tx_bytes += cm::kMadSize;
        const bool by_gid = to.global || to.lid == 0;
        auto it = std::find_if(fabric().devices.begin(), fabric().devices.end(), [&](const auto &d) {
            return by_gid ? d->gid() == to.gid : d->lid == to.lid;
        });
        if (it == fabric().devices.end() || to.qpn != 1)
            return 0;  // nobody there: lost on the wire
        Device *dst = it->get();
        if (dst->state != PortState::active) {
            ++dst->counters.drop_port_down;
            return 0;
        }
        auto gsi = std::find_if(fabric().gsi_ports.begin(), fabric().gsi_ports.end(),
                                [&](const GsiPort *p) { return p->dev == dst; });
        if (gsi == fabric().gsi_ports.end()) {
            ++dst->counters.drop_no_qp;
            return 0;
        }
        if ((*gsi)->rx.size() >= kMaxGsiQueue) {
            ++dst->counters.drop_no_buffer;
            return 0;
        }
        auto &m = (*gsi)->rx.emplace_back();
        std::memcpy(m.bytes.data(), mad, cm::kMadSize);
        m.from = cm::MadAddr{.lid = src->lid,
                             .qpn = 1,
                             .pkey_index = to.pkey_index,
                             .sl = to.sl,
                             .global = by_gid,
                             .gid = src->gid()};
        ++dst->counters.rx_packets;
        dst->counters.rx_bytes += cm::kMadSize;
        return 0;
    }

    int recv(std::uint8_t *mad, cm::MadAddr *from) noexcept override {
        Guard g(fabric().lock);
        if (!port_.dev)
            return -ENODEV;
        if (port_.rx.empty())
            return 0;
        std::memcpy(mad, port_.rx.front().bytes.data(), cm::kMadSize);
        *from = port_.rx.front().from;
        port_.rx.pop_front();
        return static_cast<int>(cm::kMadSize);
    }

  private:
    GsiPort port_;
};

// One CM per port, as the kernel's ib_cm is the one user of a port's CM
// class: a second open_cm on the port fails with -EBUSY until the first is
// destroyed. Destroy the Cm before the last context of its device.
std::unique_ptr<Cm> InprocContext::open_cm(std::uint8_t port) noexcept {
    if (!valid_port(port)) {
        no_port(port);
        return nullptr;
    }
    std::unique_ptr<InprocMadTransport> transport;
    cm::LocalPort local;
    {
        Guard g(fabric().lock);
        const auto &ports = fabric().gsi_ports;
        if (std::any_of(ports.begin(), ports.end(), [&](const GsiPort *p) { return p->dev == dev; })) {
            fail(-EBUSY, "open_cm: port 1 of " + name_ + " already has a connection manager");
            return nullptr;
        }
        transport = std::make_unique<InprocMadTransport>(dev);
        local = cm::LocalPort{.lid = dev->lid, .gid = dev->gid(), .ca_guid = dev->guid};
    }
    return cm::make_cm_engine(std::move(transport), local);
}

// ---------------------------------------------------------------------------
// The provider

constexpr ProviderOption kOptions[] = {
    {"link", "ib or eth: the link layer the port reports (default eth: no SA needed)"},
    {"lid", "link=ib only: the port's LID, 1..49151 (default: 1, 2, 3... in open order)"},
    {"mtu", "the active MTU: 256, 512, 1024, 2048 or 4096 (default 2048)"},
    {"pkeys", "the P_Key table, ':'-separated (default 0xffff)"},
};

std::unique_ptr<Context> open_provider(const std::string &device, const ProviderOptions &opts, std::string *err) {
    auto ctx = std::make_unique<InprocContext>();
    if (!ctx->open(device, opts, err))
        return nullptr;
    return ctx;
}

} // namespace

int set_port_state(Context &ctx, PortState state) noexcept {
    auto *c = dynamic_cast<InprocContext *>(&ctx);
    if (!c)
        return -EINVAL;
    Guard g(fabric().lock);
    const bool was = c->dev->state == PortState::active, is = state == PortState::active;
    c->dev->state = state;
    if (was != is)
        for (InprocContext *x : c->dev->contexts)
            x->events.push_back({is ? EventType::port_active : EventType::port_error, 1});
    return 0;
}

int set_pkeys(Context &ctx, const std::vector<std::uint16_t> &pkeys) noexcept {
    auto *c = dynamic_cast<InprocContext *>(&ctx);
    if (!c || pkeys.empty() || pkeys.size() > kMaxPkeys)
        return -EINVAL;
    Guard g(fabric().lock);
    if (c->dev->pkeys == pkeys)
        return 0;
    c->dev->pkeys = pkeys;
    for (InprocContext *x : c->dev->contexts)
        x->events.push_back({EventType::pkey_change, 1});
    return 0;
}

} // namespace ipoib::hca::inproc

IPOIB_HCA_PROVIDER(inproc, "the in-process HCA: devices of one process reach each other by memcpy (tests, examples)",
                   ipoib::hca::inproc::kOptions, ipoib::hca::inproc::open_provider)
