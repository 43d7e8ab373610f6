// SPDX-License-Identifier: BSD-3-Clause
// The xdp provider: a RoCE v2 HCA in user space over an AF_XDP socket, on
// any Linux network device, speaking the wire protocol itself (UD only).
//
//   device  the network device's name (ip link); one port, link layer Ethernet
//   queue=N the device's receive queue the socket binds to (default 0)
//   xdp_mode=auto|native|skb  how the XDP program attaches (default auto:
//           the driver's own XDP where it has one, else the generic one)
//
// Opening a device attaches the XDP program (roce_steer.bpf.c, through
// libxdp: beside other programs when bpffs is mounted) and binds one AF_XDP
// socket with its own UMEM to the queue: zero-copy where the driver allows
// it, copy mode otherwise. The program sends this process's RoCE packets
// (UDP port 4791 to one of its QPNs, or to a multicast group one of its QPs
// joined) to the socket and everything else on to the kernel. libxdp and
// libbpf are reached through a dlopen()ed glue (xdp_glue.hpp).
//
// The HCA's work, done by this process: a send builds the packet (headers,
// payload gathered from the work request, ICRC: roce_packet.hpp) in a UMEM
// frame and puts it on the socket's TX ring; it completes when it is on the
// ring (UD is unreliable). Polling any CQ of the device first reads the RX
// ring: each packet's ICRC is checked, its QP found by QPN (or its group's
// QPs for multicast), P_Key and Q_Key checked, and it is copied into the
// QP's next posted receive (GRH area first, as rxe fills it: an IPv6 GRH, or
// an IPv4 header in its last 20 bytes), whose completion goes to the QP's
// receive CQ. Every packet dropped is counted by reason (QP and port counters).
// A packet to one of the device's own GIDs does not leave it (loopback, as
// an HCA does); multicast goes out and to the device's own attached QPs.
//
// GIDs: index 0 is fe80::/64 with the EUI-64 of the device's MAC (rdma_rxe's
// default GID), then the device's IPv6 and IPv4 (::ffff:a.b.c.d) addresses,
// all RoCE v2. An address handle's destination MAC: a multicast GID's group
// MAC; a link-local EUI-64 GID's MAC (as rdma_rxe does); else the kernel's
// neighbour table (asking the kernel to resolve it, waiting up to a second).
// Active MTU: the largest IB MTU that fits the device's MTU with RoCE's
// headers, as the kernel's RoCE drivers compute it, at most 2048 (a UMEM
// frame is 4096 bytes). Port state: ACTIVE while the device is up and running.
// P_Key table: 0xffff alone (RoCE). No LIDs, no SM, no reliable connections.
//
// Threads: the socket's rings are one producer and one consumer each, so
// the device's data path (post_send, post_recv, CQ polls) runs under one
// spinlock taken once per call (per burst, never per packet); a poll that
// finds another thread reading the RX ring does not wait for it. Control
// calls (create/destroy, attach, port events) take it too.
//
// Limits: one process per (device, queue): AF_XDP binds one socket to a
// queue. UD only: RC over this provider would need a reliable transport in
// software (doc/xdp-provider.md).
#include <linux/if_xdp.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../builtin_providers.hpp"
#include "../provider_common.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "roce_packet.hpp"
#include "xdp_glue.hpp"
#include "xdp_netdev.hpp"

#ifndef IPOIB_XDP_GLUE_BUILD_PATH
#define IPOIB_XDP_GLUE_BUILD_PATH ""
#endif

namespace ipoib::hca::xdp {

namespace {

// The xdp provider's numbers, in one place.
constexpr std::uint32_t kFrameSize = XSK_UMEM__DEFAULT_FRAME_SIZE;  // 4096: one packet per frame
constexpr std::uint32_t kRxFrames = 2048;   // frames lent to the kernel (fill ring) for receiving
constexpr std::uint32_t kTxFrames = 2048;   // frames for sending
constexpr std::uint32_t kRingSize = 2048;   // each of the four rings
constexpr int kRxBurst = 64;                // packets read from the RX ring per pass
constexpr Mtu kMaxMtu = Mtu::mtu2048;       // a frame holds a 2048-byte message with every header
constexpr std::uint32_t kRoceMtuOverhead = 96;  // the kernel's RoCE MTU rule: GRH 40, UDP 8, BTH 12, ext. 32, ICRC 4
constexpr std::uint32_t kMaxRecvWr = 1u << 14;
constexpr int kMaxCqDepth = 1 << 16;
constexpr std::uint16_t kPkey = 0xffff;     // RoCE's one partition
constexpr std::uint8_t kDefaultHopLimit = 64;
constexpr std::uint16_t kRoceSportBase = 0xc000;  // RoCE v2 UDP source ports: 0xC000..0xFFFF
constexpr int kResolveMs = 1000;            // create_ah waits this long for a neighbour
constexpr std::uint64_t kPortPollMs = 100;  // the device's state is read at most this often
constexpr std::uint32_t kQpnsPerProcess = 256;  // QPNs start at a place of their own per process
constexpr std::uint8_t kPhysLinkUp = 5, kPhysDisabled = 3;
constexpr const char *kGlueEnv = "IPOIB_XDP_GLUE";

using common::SpinLock;
using Guard = std::lock_guard<SpinLock>;

std::uint64_t mono_ms() noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

// A counter written by one thread (under the device's lock) and read by any.
struct Counter {
    std::atomic<std::uint64_t> v{0};
    void add(std::uint64_t n = 1) noexcept { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    std::uint64_t get() const noexcept { return v.load(std::memory_order_relaxed); }
};

// What opening a device needs: CAP_NET_ADMIN (attach an XDP program),
// CAP_NET_RAW (an AF_XDP socket) and CAP_BPF or CAP_SYS_ADMIN (load it).
// "" if the process has them (its effective set, /proc/self/status), else
// the ones missing.
std::string missing_capabilities() {
    constexpr int kNetAdmin = 12, kNetRaw = 13, kSysAdmin = 21, kBpf = 39;
    FILE *f = std::fopen("/proc/self/status", "r");
    if (!f)
        return "";  // cannot tell: let the kernel say
    unsigned long long eff = 0;
    bool found = false;
    char line[256];
    while (!found && std::fgets(line, sizeof line, f))
        found = std::sscanf(line, "CapEff: %llx", &eff) == 1;
    std::fclose(f);
    if (!found)
        return "";
    const auto has = [&](int cap) { return (eff >> cap) & 1; };
    std::string miss;
    const auto add = [&](const char *name) { miss += (miss.empty() ? "" : ", ") + std::string(name); };
    if (!has(kNetAdmin))
        add("CAP_NET_ADMIN");
    if (!has(kNetRaw))
        add("CAP_NET_RAW");
    if (!has(kBpf) && !has(kSysAdmin))
        add("CAP_BPF");
    return miss;
}

void *load_glue(const Glue **glue, std::string *err) {
    static constexpr common::GlueSpec kSpec{
        .env = kGlueEnv,
        .file = kGlueFile,
        .build_path = IPOIB_XDP_GLUE_BUILD_PATH,
        .build_root = IPOIB_BUILD_ROOT,
        .symbol = kGlueSymbol,
        .abi = kGlueAbi,
        .size = sizeof(Glue),
        .entries = kGlueEntries,
        .what = "the AF_XDP glue",
        .hint = " (are Debian's libxdp1 and libbpf1 installed?)",
    };
    const void *table = nullptr;
    void *h = common::load_glue(kSpec, &table, err);
    *glue = static_cast<const Glue *>(table);
    return h;
}

// The IB MTU of a RoCE port on a device of this MTU (ib_verbs.h's iboe_get_mtu), capped at kMaxMtu.
Mtu roce_mtu(std::uint32_t netdev_mtu) noexcept {
    const std::uint32_t room = netdev_mtu > kRoceMtuOverhead ? netdev_mtu - kRoceMtuOverhead : 0;
    Mtu m = Mtu::mtu256;
    for (Mtu c : {Mtu::mtu512, Mtu::mtu1024, Mtu::mtu2048, Mtu::mtu4096})
        if (room >= mtu_bytes(c) && c <= kMaxMtu)
            m = c;
    return m;
}

class XdpContext;
class XdpQp;

class XdpCq final : public Cq {
  public:
    XdpCq(XdpContext *ctx, int depth) : ctx_(ctx), q(static_cast<std::size_t>(depth)) {}
    ~XdpCq() override;
    int poll(Wc *wc, int n) noexcept override;
    XdpContext *ctx_;
    common::WcQueue q;  // under the device's lock
};

class XdpAh final : public Ah {
  public:
    const AhAttr &attr() const noexcept override { return attr_; }
    AhAttr attr_;
    std::uint8_t dmac[6] = {};
    bool ipv4 = false;
    bool multicast = false;
    bool local = false;  // one of the device's own GIDs: delivered without leaving it
    Gid sgid{};
};

// A QP's posted receives: a ring of the work requests.
struct RecvRing {
    std::vector<RecvWr> wr;
    std::uint32_t head = 0, count = 0;
    bool full() const noexcept { return count == wr.size(); }
    void push(const RecvWr &r) noexcept {
        std::uint32_t i = head + count;
        if (i >= wr.size())
            i -= static_cast<std::uint32_t>(wr.size());
        wr[i] = r;
        ++count;
    }
    RecvWr pop() noexcept {
        RecvWr r = wr[head];
        head = head + 1 == wr.size() ? 0 : head + 1;
        --count;
        return r;
    }
};

struct QpStats {
    Counter tx_packets, tx_bytes, tx_errors, rx_packets, rx_bytes;
    Counter drop_no_buffer, drop_qkey, drop_pkey, drop_too_long, drop_port_down, rx_errors;
};

class XdpQp final : public Qp {
  public:
    XdpQp(XdpContext *ctx, const QpInit &init, std::uint32_t qpn);
    ~XdpQp() override;
    std::uint32_t qp_num() const noexcept override { return qpn_; }
    int post_recv(const RecvWr *wr, int n) noexcept override;
    int post_send(const SendWr *wr, int n) noexcept override;
    int set_qkey(std::uint32_t qkey) noexcept override;
    int set_pkey_index(std::uint16_t index) noexcept override;
    int attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    int detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept override;
    QpCounters counters() const noexcept override;

    XdpContext *ctx_;
    std::uint32_t qpn_;
    XdpCq *scq_, *rcq_;
    std::uint32_t qkey_;
    std::uint16_t sport_;  // UDP source port of its packets
    std::uint32_t psn_ = 0;
    RecvRing rq_;
    std::vector<Gid> groups_;
    QpStats st_;
};

struct PortStats {
    Counter tx_packets, tx_bytes, rx_packets, rx_bytes;
    Counter drop_no_qp, drop_pkey, drop_port_down, drop_no_buffer, drop_qkey, drop_too_long;
    Counter tx_mtu_exceeded, tx_port_down, rx_bad_icrc, rx_malformed, rx_not_ud_send;
};

class XdpContext final : public common::ContextBase {
  public:
    ~XdpContext() override;
    bool open(const std::string &dev, const ProviderOptions &opts, std::string *err);

    DeviceCaps caps() const noexcept override { return DeviceCaps{.max_recv_sge = kMaxRecvSge}; }
    int query_port(std::uint8_t port, PortAttr *out) noexcept override;
    int query_gid(std::uint8_t port, int index, Gid *out) noexcept override;
    int query_gid_type(std::uint8_t port, int index, GidType *out) noexcept override;
    int query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept override;
    void *alloc_dma(std::size_t len) noexcept override;
    void free_dma(void *p) noexcept override;
    std::unique_ptr<Mr> reg_mr(void *addr, std::size_t len) noexcept override;
    std::unique_ptr<Cq> create_cq(int depth) noexcept override;
    std::unique_ptr<Qp> create_ud_qp(const QpInit &init) noexcept override;
    std::unique_ptr<Ah> create_ah(const AhAttr &attr) noexcept override;
    int get_port_event(PortEvent *ev) noexcept override;
    int port_counters(std::uint8_t port, PortCounters *out) noexcept override;

    // The data path (the device's lock held).
    // Reclaim sent frames, read the RX ring; kick: in copy mode, also ask the
    // kernel to send frames still on the TX ring (send() kicks after its burst anyway).
    void pump(bool kick = true) noexcept;
    int send(XdpQp *qp, const SendWr *wr, int n) noexcept;
    void deliver(const std::uint8_t *frame, std::size_t len) noexcept;
    void deliver_to(XdpQp *qp, const RoceRecv &r) noexcept;
    void kick_tx() noexcept;

    // Control (the device's lock held where it says so).
    int attach(XdpQp *qp, const Gid &mgid, bool join);
    void remove_qp(XdpQp *qp);
    void remove_cq(XdpCq *cq);

    SpinLock lock_;
    std::atomic<bool> port_up_{false};
    std::atomic<std::uint32_t> mtu_bytes_{0};
    PortStats pst_;

  private:
    bool setup_socket(const std::string &dev, std::uint32_t queue, AttachMode mode, std::string *err);
    XdpQp *find_qp(std::uint32_t qpn) const noexcept {
        for (XdpQp *q : qps_)
            if (q->qpn_ == qpn)
                return q;
        return nullptr;
    }
    bool own_gid(const Gid &g) const noexcept { return std::find(gids_.begin(), gids_.end(), g) != gids_.end(); }
    void refresh_port(bool events) noexcept;

    void *dl_ = nullptr;
    const Glue *g_ = nullptr;
    SteerProgram *prog_ = nullptr;
    int xsks_fd_ = -1, qpns_fd_ = -1, groups_fd_ = -1;
    std::uint8_t *umem_area_ = nullptr;
    std::size_t umem_len_ = 0;
    xsk_umem *umem_ = nullptr;
    xsk_socket *xsk_ = nullptr;
    int xsk_fd_ = -1;
    xsk_ring_prod fill_{}, tx_{};
    xsk_ring_cons comp_{}, rx_{};
    std::vector<std::uint64_t> tx_free_;  // UMEM addresses of frames free for sending
    std::uint32_t tx_pending_ = 0;        // descriptors put on the TX ring, not yet kicked
    bool zero_copy_ = false;

    std::string ifname_;
    std::uint32_t queue_ = 0;
    NetdevState nd_;
    std::vector<Gid> gids_;  // the GID table (under lock_ when it changes)
    std::uint64_t next_poll_ms_ = 0;
    std::vector<PortEvent> events_;
    std::uint16_t ip_id_ = 0;

    std::vector<XdpQp *> qps_;
    std::vector<XdpCq *> cqs_;
    struct Group {
        Gid mgid;
        std::vector<XdpQp *> qps;
    };
    std::vector<Group> groups_;
    common::IpGroups ip_groups_;
    std::uint32_t next_qpn_ = 0;
    std::vector<std::pair<void *, std::size_t>> dma_;
};

// ---------------------------------------------------------------------------
// CQ

XdpCq::~XdpCq() { ctx_->remove_cq(this); }

int XdpCq::poll(Wc *wc, int n) noexcept {
    if (n <= 0)
        return 0;
    if (!ctx_->lock_.try_lock())
        return 0;  // another thread is at the rings: its completions arrive on a later poll
    ctx_->pump();
    const int got = q.pop(wc, n);
    ctx_->lock_.unlock();
    return got;
}

// ---------------------------------------------------------------------------
// QP

XdpQp::XdpQp(XdpContext *ctx, const QpInit &init, std::uint32_t qpn)
    : ctx_(ctx), qpn_(qpn), scq_(static_cast<XdpCq *>(init.send_cq)),  // one queue of each kind (caps)
      rcq_(static_cast<XdpCq *>(init.recv_cq)),
      qkey_(init.qkey),
      sport_(static_cast<std::uint16_t>(kRoceSportBase | ((qpn * 2654435761u) >> 18 & 0x3fff))) {
    rq_.wr.resize(init.max_recv_wr);
}

XdpQp::~XdpQp() { ctx_->remove_qp(this); }

int XdpQp::post_recv(const RecvWr *wr, int n) noexcept {
    Guard g(ctx_->lock_);
    int i = 0;
    for (; i < n && !rq_.full(); ++i) {
        const RecvWr &r = wr[i];
        if (r.num_sge < 1 || r.num_sge > kMaxRecvSge || (r.num_sge == 2 && r.sge.length != kGrhLen))
            return i ? i : ctx_->fail(-EINVAL, "post_recv: num_sge must be 1, or 2 with a 40-byte GRH area first");
        rq_.push(r);
    }
    return i;
}

int XdpQp::post_send(const SendWr *wr, int n) noexcept {
    Guard g(ctx_->lock_);
    return ctx_->send(this, wr, n);
}

int XdpQp::set_qkey(std::uint32_t qkey) noexcept {
    Guard g(ctx_->lock_);
    qkey_ = qkey;
    return 0;
}

int XdpQp::set_pkey_index(std::uint16_t index) noexcept {
    return index == 0 ? 0 : ctx_->fail(-EINVAL, "set_pkey_index: a RoCE port has one P_Key (index 0)");
}

int XdpQp::attach_mcast(const Gid &mgid, std::uint16_t) noexcept { return ctx_->attach(this, mgid, true); }
int XdpQp::detach_mcast(const Gid &mgid, std::uint16_t) noexcept { return ctx_->attach(this, mgid, false); }

QpCounters XdpQp::counters() const noexcept {
    QpCounters c{};
    c.tx_packets = st_.tx_packets.get();
    c.tx_bytes = st_.tx_bytes.get();
    c.tx_errors = st_.tx_errors.get();
    c.rx_packets = st_.rx_packets.get();
    c.rx_bytes = st_.rx_bytes.get();
    c.drop_no_buffer = st_.drop_no_buffer.get();
    c.drop_qkey = st_.drop_qkey.get();
    c.drop_pkey = st_.drop_pkey.get();
    c.drop_too_long = st_.drop_too_long.get();
    c.drop_port_down = st_.drop_port_down.get();
    c.rx_errors = st_.rx_errors.get();
    return c;
}

// ---------------------------------------------------------------------------
// The data path

void XdpContext::pump(bool kick) noexcept {
    std::uint32_t idx = 0;
    // Frames the kernel has sent: free again.
    if (const std::uint32_t done = xsk_ring_cons__peek(&comp_, kRingSize, &idx)) {
        for (std::uint32_t i = 0; i < done; ++i)
            tx_free_.push_back(*xsk_ring_cons__comp_addr(&comp_, idx + i));
        xsk_ring_cons__release(&comp_, done);
    }
    // In copy mode the kernel sends only in sendto(), a batch at a time: kick
    // it while frames are still out, or the last ones would wait for the next send.
    if (kick && !zero_copy_ && tx_free_.size() < kTxFrames)
        sendto(xsk_fd_, nullptr, 0, MSG_DONTWAIT, nullptr, 0);
    const std::uint32_t n = xsk_ring_cons__peek(&rx_, kRxBurst, &idx);
    if (n == 0) {
        if (xsk_ring_prod__needs_wakeup(&fill_))
            recvfrom(xsk_fd_, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
        return;
    }
    std::uint64_t addrs[kRxBurst];
    for (std::uint32_t i = 0; i < n; ++i) {
        const xdp_desc *d = xsk_ring_cons__rx_desc(&rx_, idx + i);
        addrs[i] = xsk_umem__extract_addr(d->addr);
        deliver(static_cast<const std::uint8_t *>(xsk_umem__get_data(umem_area_, d->addr)), d->len);
    }
    xsk_ring_cons__release(&rx_, n);
    // Every frame read goes back to the fill ring (it holds all of them, so it has room).
    std::uint32_t fidx = 0;
    const std::uint32_t k = xsk_ring_prod__reserve(&fill_, n, &fidx);
    for (std::uint32_t i = 0; i < k; ++i)
        *xsk_ring_prod__fill_addr(&fill_, fidx + i) = addrs[i];
    xsk_ring_prod__submit(&fill_, k);
}

void XdpContext::deliver(const std::uint8_t *frame, std::size_t len) noexcept {
    RoceRecv r;
    switch (roce_parse(frame, len, &r)) {
    case RoceParse::ok:
        break;
    case RoceParse::bad_icrc:
        pst_.rx_bad_icrc.add();
        return;
    case RoceParse::not_ud_send:
        pst_.rx_not_ud_send.add();
        return;
    case RoceParse::not_roce:
    case RoceParse::malformed:
        pst_.rx_malformed.add();
        return;
    }
    if (!port_up_.load(std::memory_order_relaxed)) {
        pst_.drop_port_down.add();
        return;
    }
    if (r.dest_qp == kMulticastQpn) {
        for (const Group &gr : groups_)
            if (gr.mgid == r.dgid) {
                for (XdpQp *q : gr.qps)
                    deliver_to(q, r);
                return;
            }
        pst_.drop_no_qp.add();
        return;
    }
    if (XdpQp *q = find_qp(r.dest_qp))
        deliver_to(q, r);
    else
        pst_.drop_no_qp.add();
}

void XdpContext::deliver_to(XdpQp *qp, const RoceRecv &r) noexcept {
    if (!common::pkey_match(r.pkey, kPkey)) {
        qp->st_.drop_pkey.add();
        pst_.drop_pkey.add();
        return;
    }
    if (r.qkey != qp->qkey_) {
        qp->st_.drop_qkey.add();
        pst_.drop_qkey.add();
        return;
    }
    if (qp->rq_.count == 0 || qp->rcq_->q.full()) {  // a full CQ: as if no buffer were posted
        qp->st_.drop_no_buffer.add();
        pst_.drop_no_buffer.add();
        return;
    }
    const RecvWr w = qp->rq_.pop();
    const std::uint32_t room = w.num_sge == 2 ? w.sge2.length : (w.sge.length > kGrhLen ? w.sge.length - kGrhLen : 0);
    Wc wc{w.wr_id, WcStatus::success, WcOpcode::recv, kWcGrh, 0, kGrhLen + r.payload_len, qp->qpn_, r.src_qp, 0, 0, 0};
    if (w.sge.length < kGrhLen || r.payload_len > room) {
        wc.status = WcStatus::loc_len_err;
        wc.wc_flags = 0;
        qp->st_.drop_too_long.add();
        pst_.drop_too_long.add();
        qp->rcq_->q.push(wc);
        return;
    }
    auto *grh = reinterpret_cast<std::uint8_t *>(w.sge.addr);
    if (r.ipv4) {  // rxe's layout: the IPv4 header in the GRH area's last 20 bytes
        std::memset(grh, 0, kGrhLen - kIpv4Len);
        std::memcpy(grh + kGrhLen - kIpv4Len, r.l3, kIpv4Len);
    } else {
        std::memcpy(grh, r.l3, kIpv6Len);
    }
    auto *dst = w.num_sge == 2 ? reinterpret_cast<std::uint8_t *>(w.sge2.addr) : grh + kGrhLen;
    std::memcpy(dst, r.payload, r.payload_len);
    qp->rcq_->q.push(wc);
    qp->st_.rx_packets.add();
    qp->st_.rx_bytes.add(r.payload_len);
    pst_.rx_packets.add();
    pst_.rx_bytes.add(r.payload_len);
}

void XdpContext::kick_tx() noexcept {
    if (tx_pending_ == 0)
        return;
    xsk_ring_prod__submit(&tx_, tx_pending_);
    tx_pending_ = 0;
    if (!zero_copy_ || xsk_ring_prod__needs_wakeup(&tx_))
        sendto(xsk_fd_, nullptr, 0, MSG_DONTWAIT, nullptr, 0);  // EAGAIN/EBUSY: the kernel is at it already
}

int XdpContext::send(XdpQp *qp, const SendWr *wrs, int n) noexcept {
    pump(false);  // frees sent frames; keeps receiving while only sending
    const std::uint32_t mtu = mtu_bytes_.load(std::memory_order_relaxed);
    const bool up = port_up_.load(std::memory_order_relaxed);
    int i = 0;
    for (; i < n; ++i) {
        const SendWr &wr = wrs[i];
        if (wr.num_sge > kMaxSendSge || !wr.ah)
            return i ? i : fail(-EINVAL, "post_send: a UD send needs an address handle and at most 8 entries");
        if (!qp->scq_->q.reserve())
            break;  // its completion would not fit the CQ
        const std::uint32_t len = common::send_length(wr);
        auto *ah = static_cast<XdpAh *>(wr.ah);
        WcStatus status = WcStatus::success;
        if (!up) {
            status = WcStatus::loc_qp_op_err;
            pst_.tx_port_down.add();
        } else if (common::exceeds_mtu(len, mtu)) {
            status = WcStatus::loc_len_err;
            pst_.tx_mtu_exceeded.add();
        } else {
            if (tx_free_.empty()) {
                kick_tx();
                pump(false);
                if (tx_free_.empty()) {
                    qp->scq_->q.unreserve();
                    break;  // every frame is on its way out: the caller posts the rest again
                }
            }
            std::uint32_t tidx = 0;
            if (!ah->local && xsk_ring_prod__reserve(&tx_, 1, &tidx) != 1) {
                qp->scq_->q.unreserve();
                break;
            }
            const std::uint64_t addr = tx_free_.back();
            tx_free_.pop_back();
            auto *f = static_cast<std::uint8_t *>(xsk_umem__get_data(umem_area_, addr));
            const AhAttr &a = ah->attr_;
            RoceSend s{};
            std::memcpy(s.dmac, ah->dmac, 6);
            std::memcpy(s.smac, nd_.mac, 6);
            s.ipv4 = ah->ipv4;
            s.sgid = ah->sgid;
            s.dgid = a.dgid;
            s.traffic_class = a.traffic_class;
            s.hop_limit = a.hop_limit ? a.hop_limit : kDefaultHopLimit;
            s.flow_label = a.flow_label;
            s.udp_sport = qp->sport_;
            s.ip_id = ip_id_++;
            s.pkey = kPkey;
            s.dest_qp = wr.remote_qpn;
            s.src_qp = qp->qpn_;
            s.qkey = common::send_qkey(wr.remote_qkey, qp->qkey_);
            s.psn = qp->psn_++ & 0xffffff;
            std::uint8_t *p = f + roce_write_headers(s, len, f);
            for (std::uint32_t k = 0; k < wr.num_sge; ++k) {
                std::memcpy(p, reinterpret_cast<const void *>(wr.sg_list[k].addr), wr.sg_list[k].length);
                p += wr.sg_list[k].length;
            }
            const std::size_t flen = roce_finish(f, s.ipv4, len);
            if (ah->local || ah->multicast)
                deliver(f, flen);  // to this device's own QPs (multicast: and out on the wire)
            if (ah->local) {
                tx_free_.push_back(addr);
            } else {
                xdp_desc *d = xsk_ring_prod__tx_desc(&tx_, tidx);
                d->addr = addr;
                d->len = static_cast<std::uint32_t>(flen);
                d->options = 0;
                ++tx_pending_;  // descriptors reserved one by one are contiguous: submitted together
            }
            pst_.tx_packets.add();
            pst_.tx_bytes.add(len);
            qp->st_.tx_packets.add();
            qp->st_.tx_bytes.add(len);
        }
        if (status != WcStatus::success)
            qp->st_.tx_errors.add();
        if (wr.signaled || status != WcStatus::success)
            qp->scq_->q.push_reserved(common::send_wc(wr.wr_id, status, qp->qpn_));
        else
            qp->scq_->q.unreserve();
    }
    kick_tx();
    return i;
}

// ---------------------------------------------------------------------------
// Context

XdpContext::~XdpContext() {
    if (xsk_)
        g_->socket_delete(xsk_);
    if (umem_)
        g_->umem_delete(umem_);
    if (prog_)
        g_->detach_program(prog_);
    if (umem_area_)
        munmap(umem_area_, umem_len_);
    for (auto &[p, len] : dma_)
        munmap(p, len);
    if (dl_)
        dlclose(dl_);
}

bool XdpContext::open(const std::string &dev, const ProviderOptions &opts, std::string *err) {
    if (dev.empty()) {
        *err = "xdp provider: name the network device (dev=<netdev>)";
        return false;
    }
    ifname_ = dev;
    name_ = "xdp:" + dev;
    nports_ = 1;
    if (!common::option_uint(opts, "queue", 0, 63, 0, &queue_, err))
        return false;
    AttachMode mode = AttachMode::automatic;
    if (const std::string *m = opts.find("xdp_mode")) {
        if (*m == "native")
            mode = AttachMode::native;
        else if (*m == "skb")
            mode = AttachMode::skb;
        else if (*m != "auto") {
            *err = "option xdp_mode=" + *m + ": expected auto, native or skb";
            return false;
        }
    }
    if (!netdev_read(dev, &nd_, err))
        return false;
    if (const std::string miss = missing_capabilities(); !miss.empty()) {
        *err = "xdp provider: " + dev + ": attaching an XDP program and opening an AF_XDP socket need " + miss +
               ", which this process lacks (run as root, or grant them: setcap cap_net_admin,cap_net_raw,cap_bpf+ep)";
        return false;
    }
    dl_ = load_glue(&g_, err);
    if (!dl_)
        return false;
    if (!setup_socket(dev, queue_, mode, err))
        return false;
    next_qpn_ = (static_cast<std::uint32_t>(getpid()) % (kMulticastQpn / kQpnsPerProcess - 1) + 1) * kQpnsPerProcess;
    refresh_port(false);
    return true;
}

bool XdpContext::setup_socket(const std::string &dev, std::uint32_t queue, AttachMode mode, std::string *err) {
    char why[256] = "";
    if (const int rc = g_->attach_program(nd_.ifindex, mode, &prog_, why, sizeof why)) {
        *err = dev + ": " + why + (rc == -EPERM ? " (needs CAP_NET_ADMIN and CAP_BPF: run as root)" : "");
        return false;
    }
    xsks_fd_ = g_->program_map_fd(prog_, "xsks");
    qpns_fd_ = g_->program_map_fd(prog_, "qpns");
    groups_fd_ = g_->program_map_fd(prog_, "groups");
    if (xsks_fd_ < 0 || qpns_fd_ < 0 || groups_fd_ < 0) {
        *err = dev + ": the XDP program has no xsks/qpns/groups maps";
        return false;
    }
    umem_len_ = std::size_t{kRxFrames + kTxFrames} * kFrameSize;
    void *area = mmap(nullptr, umem_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (area == MAP_FAILED) {
        *err = dev + ": cannot map " + std::to_string(umem_len_ >> 20) + " MB for the UMEM: " + std::strerror(errno);
        return false;
    }
    umem_area_ = static_cast<std::uint8_t *>(area);
    const xsk_umem_config ucfg{.fill_size = kRingSize,
                               .comp_size = kRingSize,
                               .frame_size = kFrameSize,
                               .frame_headroom = 0,
                               .flags = 0};
    if (const int rc = g_->umem_create(&umem_, umem_area_, umem_len_, &fill_, &comp_, &ucfg)) {
        umem_ = nullptr;
        *err = dev + ": cannot register the UMEM: " + std::strerror(-rc) +
               (rc == -EPERM ? " (run as root, or raise RLIMIT_MEMLOCK)" : "");
        return false;
    }
    xsk_socket_config scfg{};
    scfg.rx_size = kRingSize;
    scfg.tx_size = kRingSize;
    scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // our program, not libxdp's default one
    int rc = -EINVAL;
    for (const std::uint16_t bind : {std::uint16_t(XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP),
                                     std::uint16_t(XDP_COPY | XDP_USE_NEED_WAKEUP)}) {
        scfg.bind_flags = bind;
        rc = g_->socket_create(&xsk_, dev.c_str(), queue, umem_, &rx_, &tx_, &scfg);
        if (rc == 0) {
            zero_copy_ = bind & XDP_ZEROCOPY;
            break;
        }
        xsk_ = nullptr;
    }
    if (rc) {
        *err = dev + ": cannot bind an AF_XDP socket to queue " + std::to_string(queue) + ": " + std::strerror(-rc) +
               (rc == -EBUSY ? " (another process has a socket on that queue: give queue=N)" : "") +
               (rc == -EINVAL ? " (does the device have that queue? ethtool -l " + dev + ")" : "");
        return false;
    }
    xsk_fd_ = g_->socket_fd(xsk_);
    if (const int r2 = g_->update_xskmap(xsk_, xsks_fd_)) {
        *err = dev + ": cannot add the socket to the XDP program's map: " + std::strerror(-r2);
        return false;
    }
    std::uint32_t idx = 0;
    if (xsk_ring_prod__reserve(&fill_, kRxFrames, &idx) != kRxFrames) {
        *err = dev + ": the fill ring is smaller than " + std::to_string(kRxFrames);
        return false;
    }
    for (std::uint32_t i = 0; i < kRxFrames; ++i)
        *xsk_ring_prod__fill_addr(&fill_, idx + i) = std::uint64_t{i} * kFrameSize;
    xsk_ring_prod__submit(&fill_, kRxFrames);
    for (std::uint32_t i = 0; i < kTxFrames; ++i)
        tx_free_.push_back(std::uint64_t{kRxFrames + i} * kFrameSize);
    return true;
}

void XdpContext::refresh_port(bool events) noexcept {
    NetdevState st;
    std::string err;
    if (!netdev_read(ifname_, &st, &err)) {
        st = nd_;
        st.up = false;  // the device went away
    }
    std::vector<Gid> gids{eui64_link_local(st.mac)};
    for (const Gid &ip : st.ips)
        if (ip != gids[0])
            gids.push_back(ip);
    const bool was_up = port_up_.load(std::memory_order_relaxed);
    bool gids_changed;
    {
        Guard g(lock_);
        gids_changed = gids != gids_;
        gids_ = std::move(gids);
        nd_ = st;
    }
    mtu_bytes_.store(mtu_bytes(roce_mtu(st.mtu)), std::memory_order_relaxed);
    port_up_.store(st.up, std::memory_order_relaxed);
    if (!events)
        return;
    if (st.up != was_up)
        events_.push_back({st.up ? EventType::port_active : EventType::port_error, 1});
    if (gids_changed)
        events_.push_back({EventType::gid_change, 1});
}

int XdpContext::get_port_event(PortEvent *ev) noexcept {
    const std::uint64_t now = mono_ms();
    if (now >= next_poll_ms_) {
        next_poll_ms_ = now + kPortPollMs;
        refresh_port(true);
    }
    if (events_.empty())
        return 0;
    *ev = events_.front();
    events_.erase(events_.begin());
    return 1;
}

int XdpContext::query_port(std::uint8_t port, PortAttr *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    PortAttr a;
    const bool up = port_up_.load(std::memory_order_relaxed);
    a.state = up ? PortState::active : PortState::down;
    a.link_layer = LinkLayer::ethernet;
    a.phys_state = up ? kPhysLinkUp : kPhysDisabled;
    a.max_mtu = kMaxMtu;
    {
        Guard g(lock_);
        a.active_mtu = roce_mtu(nd_.mtu);
        a.gid_tbl_len = static_cast<std::uint16_t>(gids_.size());
        a.subnet_prefix = 0xfe80000000000000ull;
        for (int i = 0; i < 8; ++i)
            a.port_guid = a.port_guid << 8 | gids_[0].raw[static_cast<std::size_t>(8 + i)];
    }
    a.pkey_tbl_len = 1;
    a.port_num = port;
    *out = a;
    return 0;
}

int XdpContext::query_gid(std::uint8_t port, int index, Gid *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    Guard g(lock_);
    if (index < 0 || static_cast<std::size_t>(index) >= gids_.size())
        return fail(-EINVAL, "GID index " + std::to_string(index) + " out of range (" + std::to_string(gids_.size()) +
                                 " GIDs on " + ifname_ + ")");
    *out = gids_[static_cast<std::size_t>(index)];
    return 0;
}

int XdpContext::query_gid_type(std::uint8_t port, int index, GidType *out) noexcept {
    Gid g;
    if (const int rc = query_gid(port, index, &g))
        return rc;
    *out = GidType::roce_v2;
    return 0;
}

int XdpContext::query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept {
    const int r = pkey_index_rule(port, index, 1, out);
    if (r <= 0)
        return r;
    *out = kPkey;
    return 0;
}

void *XdpContext::alloc_dma(std::size_t len) noexcept {
    void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fail(-ENOMEM, "alloc_dma(" + std::to_string(len) + "): " + std::strerror(errno));
        return nullptr;
    }
    dma_.emplace_back(p, len);
    return p;
}

void XdpContext::free_dma(void *p) noexcept {
    for (auto it = dma_.begin(); it != dma_.end(); ++it)
        if (it->first == p) {
            munmap(p, it->second);
            dma_.erase(it);
            return;
        }
}

std::unique_ptr<Mr> XdpContext::reg_mr(void *addr, std::size_t len) noexcept {
    // The device is this process: it reaches any of its memory (sends are copied into UMEM frames).
    return std::make_unique<common::PlainMr>(addr, len, 1);
}

std::unique_ptr<Cq> XdpContext::create_cq(int depth) noexcept {
    if (!check_cq_depth(depth, kMaxCqDepth))
        return nullptr;
    auto cq = std::make_unique<XdpCq>(this, depth);
    Guard g(lock_);
    cqs_.push_back(cq.get());
    return cq;
}

void XdpContext::remove_cq(XdpCq *cq) {
    Guard g(lock_);
    std::erase(cqs_, cq);
}

std::unique_ptr<Qp> XdpContext::create_ud_qp(const QpInit &init) noexcept {
    if (!check_qp_init(init, kMaxRecvWr))  // (CQs, port, depth, one queue of each kind)
        return nullptr;
    if (init.pkey_index != 0) {
        fail(-EINVAL, "create_ud_qp: a RoCE port has one P_Key (index 0)");
        return nullptr;
    }
    std::uint32_t qpn = 0;
    {
        Guard g(lock_);
        for (int tries = 0; tries < static_cast<int>(kQpnsPerProcess) && !qpn; ++tries) {
            const std::uint32_t c = next_qpn_++;
            if (c == 0 || c >= kMulticastQpn) {
                next_qpn_ = kQpnsPerProcess;
                continue;
            }
            if (!find_qp(c))
                qpn = c;
        }
    }
    const std::uint32_t one = 1;
    if (!qpn || g_->map_update(qpns_fd_, &qpn, &one, 0) != 0) {
        fail(-ENOSPC, "create_ud_qp: no QP number free (or the XDP program's QPN map is full)");
        return nullptr;
    }
    auto qp = std::make_unique<XdpQp>(this, init, qpn);
    Guard g(lock_);
    qps_.push_back(qp.get());
    return qp;
}

void XdpContext::remove_qp(XdpQp *qp) {
    for (const Gid &m : std::vector<Gid>(qp->groups_))
        attach(qp, m, false);
    g_->map_delete(qpns_fd_, &qp->qpn_);
    Guard g(lock_);
    std::erase(qps_, qp);
}

int XdpContext::attach(XdpQp *qp, const Gid &mgid, bool join) {
    if (!is_multicast_gid(mgid))
        return fail(-EINVAL, (join ? "attach_mcast: " : "detach_mcast: ") + wire::to_string(mgid) +
                                 " is not a multicast GID");
    const bool has = std::find(qp->groups_.begin(), qp->groups_.end(), mgid) != qp->groups_.end();
    if (join == has)
        return 0;  // attached twice / detached without attaching: nothing changes, as on verbs
    std::lock_guard<SpinLock> g(lock_);
    auto it = std::find_if(groups_.begin(), groups_.end(), [&](const Group &gr) { return gr.mgid == mgid; });
    if (join) {
        if (it == groups_.end()) {
            std::string err;
            const std::uint32_t one = 1;
            if (const int rc = ip_groups_.change(mgid, static_cast<unsigned>(nd_.ifindex), true, &err))
                return fail(rc, err);
            if (g_->map_update(groups_fd_, mgid.raw.data(), &one, 0) != 0) {
                ip_groups_.change(mgid, static_cast<unsigned>(nd_.ifindex), false, &err);
                return fail(-ENOSPC, "attach_mcast: the XDP program's group map is full");
            }
            groups_.push_back({mgid, {}});
            it = groups_.end() - 1;
        }
        it->qps.push_back(qp);
        qp->groups_.push_back(mgid);
        return 0;
    }
    std::erase(qp->groups_, mgid);
    if (it != groups_.end()) {
        std::erase(it->qps, qp);
        if (it->qps.empty()) {
            std::string err;
            g_->map_delete(groups_fd_, mgid.raw.data());
            ip_groups_.change(mgid, static_cast<unsigned>(nd_.ifindex), false, &err);
            groups_.erase(it);
        }
    }
    return 0;
}

std::unique_ptr<Ah> XdpContext::create_ah(const AhAttr &attr) noexcept {
    if (!attr.is_global) {
        fail(-EINVAL, "create_ah: port 1 is RoCE: an address needs a GRH (GID)");
        return nullptr;
    }
    auto ah = std::make_unique<XdpAh>();
    ah->attr_ = attr;
    {
        Guard g(lock_);
        if (attr.sgid_index >= gids_.size()) {
            fail(-EINVAL, "create_ah: source GID index " + std::to_string(attr.sgid_index) + " out of range");
            return nullptr;
        }
        ah->sgid = gids_[attr.sgid_index];
        ah->local = own_gid(attr.dgid);
    }
    ah->ipv4 = is_ipv4_mapped(ah->sgid);
    if (ah->ipv4 != is_ipv4_mapped(attr.dgid)) {
        fail(-EINVAL, "create_ah: source " + wire::to_string(ah->sgid) + " and destination " +
                          wire::to_string(attr.dgid) + " are of different IP families");
        return nullptr;
    }
    ah->multicast = is_multicast_gid(attr.dgid);
    std::string err;
    if (ah->multicast)
        multicast_mac(attr.dgid, ah->dmac);
    else if (ah->local)
        std::memcpy(ah->dmac, nd_.mac, 6);
    else if (!mac_from_eui64(attr.dgid, ah->dmac) &&
             !neigh_resolve(ifname_, nd_.ifindex, attr.dgid, kResolveMs, ah->dmac, &err)) {
        fail(-EHOSTUNREACH, "create_ah: " + err);
        return nullptr;
    }
    return ah;
}

int XdpContext::port_counters(std::uint8_t port, PortCounters *out) noexcept {
    if (!valid_port(port))
        return no_port(port);
    PortCounters c{};
    c.tx_packets = pst_.tx_packets.get();
    c.tx_bytes = pst_.tx_bytes.get();
    c.rx_packets = pst_.rx_packets.get();
    c.rx_bytes = pst_.rx_bytes.get();
    c.drop_no_qp = pst_.drop_no_qp.get();
    c.drop_pkey = pst_.drop_pkey.get();
    c.drop_port_down = pst_.drop_port_down.get();
    c.drop_no_buffer = pst_.drop_no_buffer.get();
    c.drop_qkey = pst_.drop_qkey.get();
    c.drop_too_long = pst_.drop_too_long.get();
    c.tx_mtu_exceeded = pst_.tx_mtu_exceeded.get();
    c.tx_port_down = pst_.tx_port_down.get();
    c.rx_bad_icrc = pst_.rx_bad_icrc.get();
    c.rx_malformed = pst_.rx_malformed.get() + pst_.rx_not_ud_send.get();
    *out = c;
    return 0;
}

std::unique_ptr<Context> open_provider(const std::string &device, const ProviderOptions &opts, std::string *err) {
    auto ctx = std::make_unique<XdpContext>();
    if (!ctx->open(device, opts, err))
        return nullptr;
    return ctx;
}

constexpr ProviderOption kOptions[] = {
    {"queue", "the network device's receive queue the AF_XDP socket binds to (default 0)"},
    {"xdp_mode", "auto|native|skb: how the XDP program attaches (default auto: native, else skb)"},
};

} // namespace

} // namespace ipoib::hca::xdp

IPOIB_HCA_PROVIDER(xdp, "RoCE v2 in user space over an AF_XDP socket on any network device (UD)",
                   ipoib::hca::xdp::kOptions, ipoib::hca::xdp::open_provider)
