// SPDX-License-Identifier: BSD-3-Clause
// The in-process HCA (provider "inproc"): two devices of this process, UD
// both ways, and what it enforces. No fabric, no root.
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cm/cm_engine.hpp"
#include "inproc/inproc_testing.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/rc.hpp"
#include "ipoib/wire/hwaddr.hpp"

using namespace ipoib;
using namespace ipoib::hca;

namespace {

constexpr std::uint32_t kQkey = 0x0b1b;
constexpr std::uint32_t kBuf = kGrhLen + 4096;
const Gid kMgid = wire::parse_gid_text("ff12:401b:ffff::1").value;

// One device with one UD QP, a shared CQ and n receive buffers.
struct Host {
    std::unique_ptr<Context> ctx;
    std::unique_ptr<Cq> cq;
    std::unique_ptr<Qp> qp;
    std::uint8_t *pool = nullptr;
    std::unique_ptr<Mr> mr;
    std::uint32_t nbuf = 0;

    explicit Host(const std::string &name, const std::string &opts = "", std::uint32_t n = 16,
                  std::uint32_t qkey = kQkey, int cq_depth = 256) {
        auto o = open_device("inproc", name, opts);
        INFO(o.error);
        REQUIRE(o.ctx);
        ctx = std::move(o.ctx);
        cq = ctx->create_cq(cq_depth);
        REQUIRE(cq);
        QpInit init;
        init.send_cq = cq.get();
        init.recv_cq = cq.get();
        init.qkey = qkey;
        init.max_recv_wr = n;
        qp = ctx->create_ud_qp(init);
        REQUIRE(qp);
        nbuf = n;
        pool = static_cast<std::uint8_t *>(ctx->alloc_dma(std::size_t{n} * kBuf));
        REQUIRE(pool);
        mr = ctx->reg_mr(pool, std::size_t{n} * kBuf);
        REQUIRE(mr);
        REQUIRE(mr->lkey() != 0);
    }
    ~Host() {
        qp.reset();
        mr.reset();
        ctx->free_dma(pool);
    }
    void post(std::uint32_t n, std::uint32_t size = kBuf) {
        for (std::uint32_t i = 0; i < n; ++i) {
            RecvWr wr{i, {reinterpret_cast<std::uintptr_t>(pool + std::size_t{i} * kBuf), size, mr->lkey()}};
            REQUIRE(qp->post_recv(&wr, 1) == 1);
        }
    }
    Gid gid() {
        Gid g;
        REQUIRE(ctx->query_gid(1, 0, &g) == 0);
        return g;
    }
    PortAttr port() {
        PortAttr a;
        REQUIRE(ctx->query_port(1, &a) == 0);
        return a;
    }
    // An address of `to` (by GID on Ethernet, by LID on InfiniBand).
    std::unique_ptr<Ah> ah_to(Host &to) {
        AhAttr a;
        const PortAttr p = to.port();
        if (p.link_layer == LinkLayer::ethernet) {
            a.is_global = true;
            a.dgid = to.gid();
            a.hop_limit = 64;
        } else {
            a.dlid = p.lid;
        }
        auto ah = ctx->create_ah(a);
        REQUIRE(ah);
        return ah;
    }
    std::unique_ptr<Ah> ah_mcast() {
        AhAttr a;
        a.is_global = true;
        a.dgid = kMgid;
        a.hop_limit = 1;
        auto ah = ctx->create_ah(a);
        REQUIRE(ah);
        return ah;
    }
    // Send `payload` (split into `pieces` SGEs); returns the send completion.
    Wc send(Ah *ah, std::uint32_t dqpn, const std::vector<std::uint8_t> &payload, std::uint32_t qkey = kQkey,
            std::uint32_t pieces = 1) {
        Sge sg[kMaxSendSge];
        const auto size = static_cast<std::uint32_t>(payload.size());
        std::uint32_t off = 0;
        for (std::uint32_t i = 0; i < pieces; ++i) {
            const std::uint32_t l = i + 1 == pieces ? size - off : size / pieces;
            sg[i] = {reinterpret_cast<std::uintptr_t>(payload.data() + off), l, 0};
            off += l;
        }
        SendWr wr{77, sg, pieces, ah, dqpn, qkey, true};
        REQUIRE(qp->post_send(&wr, 1) == 1);
        Wc wc[4];
        for (int tries = 0; tries < 4; ++tries) {
            const int n = cq->poll(wc, 1);
            REQUIRE(n >= 0);
            if (n == 1 && wc[0].opcode == WcOpcode::send)
                return wc[0];
            if (n == 1)
                pending.push_back(wc[0]);
        }
        FAIL("no send completion");
        return Wc{};
    }
    // The receive completions now in the CQ (delivery is synchronous).
    std::vector<Wc> recvs() {
        std::vector<Wc> out;
        out.swap(pending);
        Wc wc[16];
        for (int n; (n = cq->poll(wc, 16)) > 0;)
            for (int i = 0; i < n; ++i)
                if (wc[i].opcode == WcOpcode::recv)
                    out.push_back(wc[i]);
        return out;
    }
    const std::uint8_t *buf(const Wc &wc) const { return pool + wc.wr_id * kBuf; }
    std::vector<Wc> pending;
};

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::uint8_t>(seed + i * 7);
    return v;
}

bool payload_is(const Host &h, const Wc &wc, const std::vector<std::uint8_t> &p) {
    return wc.byte_len == kGrhLen + p.size() && std::memcmp(h.buf(wc) + kGrhLen, p.data(), p.size()) == 0;
}

} // namespace

TEST_CASE("inproc: port attributes, GID from the name, RoCE v2 GID at index 0") {
    Host a("port-a");
    const PortAttr p = a.port();
    CHECK(p.state == PortState::active);
    CHECK(p.link_layer == LinkLayer::ethernet);
    CHECK(p.lid == 0);
    CHECK(p.active_mtu == Mtu::mtu2048);
    CHECK(p.pkey_tbl_len == 1);
    const Gid g = a.gid();
    CHECK(wire::to_string(g).rfind("fe80::", 0) == 0);
    CHECK(p.port_guid != 0);
    GidType t;
    REQUIRE(a.ctx->query_gid_type(1, 0, &t) == 0);
    CHECK(t == GidType::roce_v2);
    CHECK(ipoib_gid_index(*a.ctx, 1) == 0);
    std::uint16_t k = 0;
    REQUIRE(a.ctx->query_pkey(1, 0, &k) == 0);
    CHECK(k == 0xffff);
    REQUIRE(a.ctx->query_pkey(1, 1, &k) == 0);
    CHECK(k == 0);  // past the table: empty
    CHECK(a.ctx->query_pkey(1, 64, &k) == -EINVAL);
    CHECK(a.ctx->query_port(2, nullptr) == -EINVAL);
    CHECK(!a.ctx->last_error().empty());
    // The same name: the same device (and GID); another name: another GID.
    auto again = open_device("inproc", "port-a", "");
    REQUIRE(again.ctx);
    Gid g2;
    REQUIRE(again.ctx->query_gid(1, 0, &g2) == 0);
    CHECK(g2 == g);
    Host b("port-b");
    CHECK(!(b.gid() == g));
    // Options.
    Host c("port-c", "link=ib,lid=7,mtu=1024,pkeys=0xffff:0x8001");
    const PortAttr pc = c.port();
    CHECK((pc.link_layer == LinkLayer::infiniband && pc.lid == 7 && pc.active_mtu == Mtu::mtu1024));
    REQUIRE(c.ctx->query_pkey(1, 1, &k) == 0);
    CHECK(k == 0x8001);
    REQUIRE(c.ctx->query_gid_type(1, 0, &t) == 0);
    CHECK(t == GidType::ib);
    CHECK(open_device("inproc", "port-d", "lid=3").error.find("lid needs link=ib") != std::string::npos);
    CHECK(open_device("inproc", "port-d", "mtu=1500").error.find("mtu=1500") != std::string::npos);
    CHECK(open_device("inproc", "port-d", "link=ib,lid=7").error.find("LID") != std::string::npos);
    CHECK(open_device("inproc", "port-c", "mtu=4096").error.find("other options") != std::string::npos);
    CHECK(open_device("inproc", "", "").error.find("device name") != std::string::npos);
}

TEST_CASE("inproc: UD both ways, payloads, GRH and source fields") {
    Host a("ud-a"), b("ud-b");
    a.post(8);
    b.post(8);
    auto to_b = a.ah_to(b), to_a = b.ah_to(a);

    const auto p1 = pattern(300, 1);
    Wc s = a.send(to_b.get(), b.qp->qp_num(), p1);
    CHECK(s.status == WcStatus::success);
    CHECK(s.wr_id == 77);
    auto r = b.recvs();
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == WcStatus::success);
    CHECK(payload_is(b, r[0], p1));
    CHECK(r[0].src_qp == a.qp->qp_num());
    CHECK(r[0].qp_num == b.qp->qp_num());
    CHECK(r[0].slid == 0);  // Ethernet: no LIDs
    CHECK((r[0].wc_flags & kWcGrh));
    Gid sgid, dgid;
    std::memcpy(sgid.raw.data(), b.buf(r[0]) + 8, 16);
    std::memcpy(dgid.raw.data(), b.buf(r[0]) + 24, 16);
    CHECK(sgid == a.gid());
    CHECK(dgid == b.gid());
    CHECK(b.buf(r[0])[0] >> 4 == 6);  // IPVer 6
    CHECK(b.buf(r[0])[6] == 0x1b);     // next header: BTH

    const auto p2 = pattern(1000, 9);
    CHECK(b.send(to_a.get(), a.qp->qp_num(), p2).status == WcStatus::success);
    r = a.recvs();
    REQUIRE(r.size() == 1);
    CHECK(payload_is(a, r[0], p2));
    CHECK(r[0].src_qp == b.qp->qp_num());

    // InfiniBand: LID-routed, no GRH; the source LID is the sender's.
    Host c("ud-c", "link=ib"), d("ud-d", "link=ib");
    d.post(2);
    auto to_d = c.ah_to(d);
    CHECK(c.send(to_d.get(), d.qp->qp_num(), p1).status == WcStatus::success);
    r = d.recvs();
    REQUIRE(r.size() == 1);
    CHECK(payload_is(d, r[0], p1));
    CHECK(r[0].slid == c.port().lid);
    CHECK(r[0].slid != 0);
    CHECK(!(r[0].wc_flags & kWcGrh));

    const QpCounters ca = a.qp->counters(), cb = b.qp->counters();
    CHECK((ca.tx_packets == 1 && ca.tx_bytes == 300 && ca.rx_packets == 1 && ca.rx_bytes == 1000));
    CHECK((cb.tx_packets == 1 && cb.rx_packets == 1 && cb.rx_bytes == 300));
    PortCounters pa;
    REQUIRE(a.ctx->port_counters(1, &pa) == 0);
    CHECK((pa.tx_packets == 1 && pa.rx_packets == 1));
}

TEST_CASE("inproc: a 3-piece gather list arrives as one message") {
    Host a("sge-a"), b("sge-b");
    b.post(1);
    auto ah = a.ah_to(b);
    const auto p = pattern(1500, 3);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p, kQkey, 3).status == WcStatus::success);
    auto r = b.recvs();
    REQUIRE(r.size() == 1);
    CHECK(payload_is(b, r[0], p));
}

TEST_CASE("inproc: Q_Key mismatch is not delivered; the QP's own Q_Key is used with the high bit") {
    Host a("qk-a"), b("qk-b");
    b.post(4);
    auto ah = a.ah_to(b);
    const auto p = pattern(64, 5);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p, 0x1234).status == WcStatus::success);  // UD: sent anyway
    CHECK(b.recvs().empty());
    CHECK(b.qp->counters().drop_qkey == 1);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p, kUseQpQkey).status == WcStatus::success);
    CHECK(b.recvs().size() == 1);
    // A changed Q_Key takes effect on both sides.
    REQUIRE(b.qp->set_qkey(0x42) == 0);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p, kUseQpQkey).status == WcStatus::success);
    CHECK(b.recvs().empty());
    REQUIRE(a.qp->set_qkey(0x42) == 0);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p, kUseQpQkey).status == WcStatus::success);
    CHECK(b.recvs().size() == 1);
}

TEST_CASE("inproc: P_Key: another partition, and two limited members, are not delivered") {
    Host a("pk-a", "pkeys=0xffff:0x8001:0x0002"), b("pk-b", "pkeys=0xffff:0x0003:0x0002");
    auto qp_on = [](Host &h, std::uint16_t idx) {
        QpInit init;
        init.send_cq = h.cq.get();
        init.recv_cq = h.cq.get();
        init.qkey = kQkey;
        init.pkey_index = idx;
        auto q = h.ctx->create_ud_qp(init);
        REQUIRE(q);
        return q;
    };
    auto b3 = qp_on(b, 1);  // 0x0003: nobody else has it
    auto b2 = qp_on(b, 2);  // 0x0002, limited
    auto a2 = qp_on(a, 2);  // 0x0002, limited
    RecvWr wr{0, {reinterpret_cast<std::uintptr_t>(b.pool), kBuf, b.mr->lkey()}};
    REQUIRE(b3->post_recv(&wr, 1) == 1);
    wr.sge.addr += kBuf;
    REQUIRE(b2->post_recv(&wr, 1) == 1);
    auto ah = a.ah_to(b);
    const auto p = pattern(64, 1);
    Sge sg{reinterpret_cast<std::uintptr_t>(p.data()), 64, 0};
    SendWr s1{1, &sg, 1, ah.get(), b3->qp_num(), kQkey, true};
    SendWr s2{2, &sg, 1, ah.get(), b2->qp_num(), kQkey, true};
    REQUIRE(a.qp->post_send(&s1, 1) == 1);
    REQUIRE(a2->post_send(&s2, 1) == 1);
    CHECK(b.recvs().empty());
    CHECK(b3->counters().drop_pkey == 1);
    CHECK(b2->counters().drop_pkey == 1);
    CHECK(b.ctx->create_ud_qp(QpInit{b.cq.get(), b.cq.get(), 1, 3, kQkey, 16, 16}) == nullptr);  // no index 3
}

TEST_CASE("inproc: no posted buffer drops and counts; a short buffer completes in error") {
    Host a("nb-a"), b("nb-b");
    auto ah = a.ah_to(b);
    const auto p = pattern(200, 2);
    for (int i = 0; i < 3; ++i)
        CHECK(a.send(ah.get(), b.qp->qp_num(), p).status == WcStatus::success);
    CHECK(b.recvs().empty());
    CHECK(b.qp->counters().drop_no_buffer == 3);
    PortCounters pc;
    REQUIRE(b.ctx->port_counters(1, &pc) == 0);
    CHECK(pc.drop_no_buffer == 3);
    b.post(1, kGrhLen + 100);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p).status == WcStatus::success);
    auto r = b.recvs();
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == WcStatus::loc_len_err);
    CHECK(b.qp->counters().drop_too_long == 1);
    CHECK(b.qp->counters().rx_packets == 0);
    // An unknown QPN: nothing delivered, counted on the destination port.
    b.post(1);
    CHECK(a.send(ah.get(), b.qp->qp_num() + 1000, p).status == WcStatus::success);
    CHECK(b.recvs().empty());
    REQUIRE(b.ctx->port_counters(1, &pc) == 0);
    CHECK(pc.drop_no_qp == 1);
}

TEST_CASE("inproc: multicast only after attach, to every member and the sender, not after detach") {
    Host a("mc-a"), b("mc-b"), c("mc-c");
    a.post(8);
    b.post(8);
    c.post(8);
    auto ah = a.ah_mcast();
    const auto p = pattern(128, 4);
    CHECK(a.send(ah.get(), kMulticastQpn, p).status == WcStatus::success);
    CHECK((a.recvs().empty() && b.recvs().empty() && c.recvs().empty()));
    REQUIRE(a.qp->attach_mcast(kMgid, 0) == 0);
    REQUIRE(b.qp->attach_mcast(kMgid, 0) == 0);
    CHECK(a.send(ah.get(), kMulticastQpn, p).status == WcStatus::success);
    auto rb = b.recvs(), ra = a.recvs();
    REQUIRE(rb.size() == 1);
    CHECK(payload_is(b, rb[0], p));
    CHECK((rb[0].wc_flags & kWcGrh));
    Gid sgid, dgid;
    std::memcpy(sgid.raw.data(), b.buf(rb[0]) + 8, 16);
    std::memcpy(dgid.raw.data(), b.buf(rb[0]) + 24, 16);
    CHECK(sgid == a.gid());
    CHECK(dgid == kMgid);
    REQUIRE(ra.size() == 1);  // the sender's own copy (loopback)
    CHECK(ra[0].src_qp == a.qp->qp_num());
    CHECK(c.recvs().empty());
    REQUIRE(b.qp->detach_mcast(kMgid, 0) == 0);
    CHECK(b.qp->detach_mcast(kMgid, 0) == -ENOENT);
    CHECK(a.send(ah.get(), kMulticastQpn, p).status == WcStatus::success);
    CHECK(b.recvs().empty());
    CHECK(a.recvs().size() == 1);
    CHECK(a.qp->attach_mcast(a.gid(), 0) == -EINVAL);  // not a multicast GID
}

TEST_CASE("inproc: a send longer than the MTU completes with a local length error") {
    Host a("mtu-a", "mtu=1024"), b("mtu-b", "mtu=1024");
    b.post(2);
    auto ah = a.ah_to(b);
    CHECK(a.send(ah.get(), b.qp->qp_num(), pattern(1024, 0)).status == WcStatus::success);
    Wc s = a.send(ah.get(), b.qp->qp_num(), pattern(1025, 0));
    CHECK(s.status == WcStatus::loc_len_err);
    CHECK(b.recvs().size() == 1);
    CHECK(a.qp->counters().tx_errors == 1);
    PortCounters pc;
    REQUIRE(a.ctx->port_counters(1, &pc) == 0);
    CHECK(pc.tx_mtu_exceeded == 1);
}

TEST_CASE("inproc: port down and up: events, refused sends, dropped receives") {
    Host a("ev-a"), b("ev-b");
    b.post(2);
    auto ah = a.ah_to(b);
    PortEvent ev;
    CHECK(b.ctx->get_port_event(&ev) == 0);
    REQUIRE(inproc::set_port_state(*b.ctx, PortState::down) == 0);
    REQUIRE(b.ctx->get_port_event(&ev) == 1);
    CHECK((ev.type == EventType::port_error && ev.port_num == 1));
    CHECK(a.ctx->get_port_event(&ev) == 0);  // another device
    CHECK(a.send(ah.get(), b.qp->qp_num(), pattern(64, 0)).status == WcStatus::success);
    CHECK(b.qp->counters().drop_port_down == 1);
    auto to_a = b.ah_to(a);
    CHECK(b.send(to_a.get(), a.qp->qp_num(), pattern(64, 0)).status == WcStatus::loc_qp_op_err);
    REQUIRE(inproc::set_port_state(*b.ctx, PortState::active) == 0);
    REQUIRE(b.ctx->get_port_event(&ev) == 1);
    CHECK(ev.type == EventType::port_active);
    CHECK(a.send(ah.get(), b.qp->qp_num(), pattern(64, 0)).status == WcStatus::success);
    CHECK(b.recvs().size() == 1);
}

// As hardware: a QP's P_Key is the table's entry at its index. The SM moves
// the partition; the QP's entry now holds another P_Key (nothing matches);
// set_pkey_index moves it, keeping its number and posted receives.
TEST_CASE("inproc: P_Key table change: the QP follows its index, then moves with set_pkey_index") {
    Host a("pk-a"), b("pk-b");
    b.post(4);
    auto ah = a.ah_to(b);
    const std::uint32_t qpn = b.qp->qp_num();
    REQUIRE(inproc::set_pkeys(*b.ctx, {0x8001, 0xffff}) == 0);
    PortEvent ev;
    REQUIRE(b.ctx->get_port_event(&ev) == 1);
    CHECK(ev.type == EventType::pkey_change);
    std::uint16_t k = 0;
    REQUIRE(b.ctx->query_pkey(1, 1, &k) == 0);
    CHECK(k == 0xffff);
    CHECK(a.send(ah.get(), qpn, pattern(64, 1)).status == WcStatus::success);
    CHECK(b.qp->counters().drop_pkey == 1);  // b's index 0 now holds 0x8001
    CHECK(b.qp->set_pkey_index(5) == -EINVAL);
    REQUIRE(b.qp->set_pkey_index(1) == 0);
    CHECK(b.qp->qp_num() == qpn);
    CHECK(a.send(ah.get(), qpn, pattern(64, 2)).status == WcStatus::success);
    const auto got = b.recvs();
    REQUIRE(got.size() == 1);  // a receive posted before the move
    CHECK(got[0].pkey_index == 1);
    CHECK(inproc::set_pkeys(*b.ctx, {}) == -EINVAL);
}

namespace {

// Post `total` signaled sends from h to (ah, dqpn), bursts of up to `burst` per
// post_send, polling h's CQ in between; what a post does not take is posted
// again. Returns the number of send completions per wr_id and fills the
// receive completions h's own CQ gave, and the first post's count.
std::map<std::uint64_t, int> send_all(Host &h, Ah *ah, std::uint32_t dqpn, int total, int burst, int *first,
                                      std::vector<Wc> *recvs) {
    const auto p = pattern(64, 1);
    Sge sg{reinterpret_cast<std::uintptr_t>(p.data()), 64, 0};
    std::vector<SendWr> wrs;
    for (int i = 0; i < total; ++i)
        wrs.push_back(SendWr{static_cast<std::uint64_t>(i), &sg, 1, ah, dqpn, kQkey, true});
    std::map<std::uint64_t, int> done;
    int next = 0;
    *first = -1;
    for (int idle = 0; idle < 1000 && (next < total || static_cast<int>(done.size()) < total);) {
        if (next < total) {
            const int r = h.qp->post_send(&wrs[static_cast<std::size_t>(next)], std::min(burst, total - next));
            REQUIRE(r >= 0);
            if (*first < 0)
                *first = r;
            next += r;
        }
        Wc wc[8];
        const int n = h.cq->poll(wc, 8);
        REQUIRE(n >= 0);
        for (int i = 0; i < n; ++i) {
            if (wc[i].opcode == WcOpcode::send)
                ++done[wc[i].wr_id];
            else
                recvs->push_back(wc[i]);
        }
        idle = n ? 0 : idle + 1;
    }
    return done;
}

} // namespace

TEST_CASE("inproc: a burst larger than the send CQ loses no completion") {
    Host a("cq16-a", "", 16, kQkey, 16), b("cq16-b", "", 64);
    b.post(64);
    auto ah = a.ah_to(b);
    int first = 0;
    std::vector<Wc> own;
    const auto done = send_all(a, ah.get(), b.qp->qp_num(), 64, 64, &first, &own);
    CHECK(first == 16);  // as many as the CQ can complete; the rest did not fit
    CHECK(done.size() == 64);
    bool once = true;
    for (auto &[id, n] : done)
        once &= n == 1;
    CHECK(once);
    CHECK(b.recvs().size() == 64);
    CHECK(a.qp->counters().tx_packets == 64);
}

TEST_CASE("inproc: a CQ shared by sends and loopback receives loses no send completion") {
    Host a("cq16-self", "", 64, kQkey, 16);
    a.post(64);
    auto ah = a.ah_to(a);
    int first = 0;
    std::vector<Wc> recvs;
    const auto done = send_all(a, ah.get(), a.qp->qp_num(), 64, 64, &first, &recvs);
    CHECK(first >= 1);
    CHECK(first <= 16);
    CHECK(done.size() == 64);  // every send completes, exactly once
    const QpCounters c = a.qp->counters();
    INFO("received " << recvs.size() << ", dropped for want of CQ room " << c.drop_no_buffer);
    CHECK(recvs.size() + c.drop_no_buffer == 64);  // every message received or counted as dropped
    CHECK(c.rx_packets == recvs.size());
}

TEST_CASE("inproc: a receive in two scatter entries puts the GRH area apart from the message") {
    Host a("sg2-a"), b("sg2-b", "", 16);
    CHECK(b.ctx->caps().max_recv_sge == 2);
    auto ah = a.ah_to(b);
    // The GRH area in buffer 0, the message at an offset of buffer 1, and only 300 bytes of room there.
    std::uint8_t *grh = b.pool, *msg = b.pool + kBuf + 100;
    RecvWr wr{7, {reinterpret_cast<std::uintptr_t>(grh), kGrhLen, b.mr->lkey()},
              {reinterpret_cast<std::uintptr_t>(msg), 300, b.mr->lkey()}, 2};
    REQUIRE(b.qp->post_recv(&wr, 1) == 1);
    std::memset(msg - 1, 0xee, 1);
    const auto p = pattern(300, 3);
    CHECK(a.send(ah.get(), b.qp->qp_num(), p).status == WcStatus::success);
    auto r = b.recvs();
    REQUIRE(r.size() == 1);
    CHECK(r[0].wr_id == 7);
    CHECK(r[0].status == WcStatus::success);
    CHECK(r[0].byte_len == kGrhLen + 300);
    CHECK(std::memcmp(msg, p.data(), 300) == 0);
    CHECK(msg[-1] == 0xee);                                       // nothing before the message's entry
    CHECK(std::memcmp(grh + 8, a.gid().raw.data(), 16) == 0);   // the GRH in its own entry: source GID A's,
    CHECK(std::memcmp(grh + 24, b.gid().raw.data(), 16) == 0);  // destination GID B's

    // A message longer than the second entry: a length error, as with one buffer.
    REQUIRE(b.qp->post_recv(&wr, 1) == 1);
    CHECK(a.send(ah.get(), b.qp->qp_num(), pattern(301, 4)).status == WcStatus::success);
    r = b.recvs();
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == WcStatus::loc_len_err);

    // Refused: a first entry that is not exactly the GRH area, more entries than two, none.
    RecvWr bad = wr;
    bad.sge.length = kGrhLen + 4;
    CHECK(b.qp->post_recv(&bad, 1) == -EINVAL);
    bad = wr;
    bad.num_sge = 3;
    CHECK(b.qp->post_recv(&bad, 1) == -EINVAL);
    bad.num_sge = 0;
    CHECK(b.qp->post_recv(&bad, 1) == -EINVAL);
}

// ---- connection management (the shared CM engine over the devices' QP1s) ----

namespace {

// The next event of cm (MADs between inproc ports arrive at once).
bool next_cm_event(Cm &cm, CmEvent *ev) {
    for (int i = 0; i < 100; ++i)
        if (cm.get_event(ev) == 1)
            return true;
    return false;
}

CmReqParam cm_req_to(const PortAttr &from, const Gid &from_gid, const PortAttr &to, const Gid &to_gid, bool global) {
    CmReqParam p;
    p.service_id = 0x1000000000000000ull | 0x123;
    p.path = CmPath{.slid = from.lid, .dlid = to.lid, .sgid = from_gid, .dgid = to_gid, .global = global};
    p.local_qpn = 0x123;
    p.starting_psn = 0x777;
    return p;
}

} // namespace

TEST_CASE("inproc: the CM connects and disconnects two InfiniBand ports by LID") {
    auto a = open_device("inproc", "cm-ib-a", "link=ib");
    auto b = open_device("inproc", "cm-ib-b", "link=ib");
    REQUIRE(a.ctx);
    REQUIRE(b.ctx);
    PortAttr pa, pb;
    Gid ga, gb;
    REQUIRE(a.ctx->query_port(1, &pa) == 0);
    REQUIRE(b.ctx->query_port(1, &pb) == 0);
    REQUIRE(a.ctx->query_gid(1, 0, &ga) == 0);
    REQUIRE(b.ctx->query_gid(1, 0, &gb) == 0);
    auto cma = a.ctx->open_cm(1);
    auto cmb = b.ctx->open_cm(1);
    REQUIRE(cma);
    REQUIRE(cmb);
    PortCounters before;
    REQUIRE(b.ctx->port_counters(1, &before) == 0);

    REQUIRE(cmb->listen(0x1000000000000000ull, ~0xffffffull) == 0);
    std::uint32_t ida = 0;
    REQUIRE(cma->send_req(cm_req_to(pa, ga, pb, gb, false), &ida) == 0);
    CmEvent ev;
    REQUIRE(next_cm_event(*cmb, &ev));
    REQUIRE(ev.type == CmEventType::req_received);
    CHECK(ev.remote_qpn == 0x123);
    CHECK(ev.starting_psn == 0x777);
    CHECK(ev.path.slid == pb.lid);  // B's view
    CHECK(ev.path.dlid == pa.lid);
    CHECK(ev.path.dgid == ga);
    const std::uint32_t idb = ev.id;
    REQUIRE(cmb->send_rep(idb, CmRepParam{.local_qpn = 0x456, .starting_psn = 0x888}) == 0);
    REQUIRE(next_cm_event(*cma, &ev));
    REQUIRE(ev.type == CmEventType::rep_received);
    CHECK(ev.remote_qpn == 0x456);
    CHECK(ev.starting_psn == 0x888);
    REQUIRE(cma->send_rtu(ida) == 0);
    REQUIRE(next_cm_event(*cmb, &ev));
    CHECK(ev.type == CmEventType::rtu_received);
    REQUIRE(cmb->send_dreq(idb) == 0);
    REQUIRE(next_cm_event(*cma, &ev));
    REQUIRE(ev.type == CmEventType::dreq_received);
    REQUIRE(cma->send_drep(ida) == 0);
    REQUIRE(next_cm_event(*cmb, &ev));
    CHECK(ev.type == CmEventType::drep_received);

    PortCounters after;
    REQUIRE(b.ctx->port_counters(1, &after) == 0);
    CHECK(after.rx_packets - before.rx_packets == 3);  // REQ, RTU, DREP
    CHECK(after.tx_packets - before.tx_packets == 2);  // REP, DREQ
}

TEST_CASE("inproc: the CM on Ethernet ports by GID; one CM per port; MADs to a port without one are dropped") {
    auto a = open_device("inproc", "cm-eth-a", "");
    auto b = open_device("inproc", "cm-eth-b", "");
    REQUIRE(a.ctx);
    REQUIRE(b.ctx);
    PortAttr pa, pb;
    Gid ga, gb;
    REQUIRE(a.ctx->query_port(1, &pa) == 0);
    REQUIRE(b.ctx->query_port(1, &pb) == 0);
    REQUIRE(a.ctx->query_gid(1, 0, &ga) == 0);
    REQUIRE(b.ctx->query_gid(1, 0, &gb) == 0);
    auto cma = a.ctx->open_cm(1);
    REQUIRE(cma);
    CHECK_FALSE(a.ctx->open_cm(1));
    CHECK(a.ctx->last_error().find("already has a connection manager") != std::string::npos);
    CHECK_FALSE(a.ctx->open_cm(2));

    {
        auto cmb = b.ctx->open_cm(1);
        REQUIRE(cmb);
        REQUIRE(cmb->listen(0x1000000000000123ull) == 0);
        std::uint32_t ida = 0;
        REQUIRE(cma->send_req(cm_req_to(pa, ga, pb, gb, true), &ida) == 0);
        CmEvent ev;
        REQUIRE(next_cm_event(*cmb, &ev));
        REQUIRE(ev.type == CmEventType::req_received);
        CHECK(ev.path.global);
        CHECK(ev.path.dgid == ga);
        CHECK(ev.path.sgid == gb);
        REQUIRE(cmb->send_rej(ev.id, CmRejReason::consumer) == 0);
        REQUIRE(next_cm_event(*cma, &ev));
        CHECK(ev.type == CmEventType::rej_received);
        CHECK(ev.rej_reason == 28);
    }
    // B's CM is gone: the REQ is dropped at its port (no QP1 user), nothing comes back.
    PortCounters before, after;
    REQUIRE(b.ctx->port_counters(1, &before) == 0);
    std::uint32_t id = 0;
    REQUIRE(cma->send_req(cm_req_to(pa, ga, pb, gb, true), &id) == 0);
    CmEvent ev;
    CHECK_FALSE(next_cm_event(*cma, &ev));
    REQUIRE(b.ctx->port_counters(1, &after) == 0);
    CHECK(after.drop_no_qp - before.drop_no_qp == 1);
    // A port that is down sends no MAD.
    auto cmb = b.ctx->open_cm(1);  // the port is free again
    REQUIRE(cmb);
    REQUIRE(inproc::set_port_state(*a.ctx, PortState::down) == 0);
    REQUIRE(cma->send_req(cm_req_to(pa, ga, pb, gb, true), &id) == 0);
    CHECK_FALSE(next_cm_event(*cmb, &ev));
    PortCounters a_counters;
    REQUIRE(a.ctx->port_counters(1, &a_counters) == 0);
    CHECK(a_counters.tx_port_down == 1);
    cm::CmCounters cc;
    REQUIRE(cm::cm_counters(*cma, &cc) == 0);
    CHECK(cc.send_errors == 1);
    REQUIRE(inproc::set_port_state(*a.ctx, PortState::active) == 0);
}

// ---------------------------------------------------------------------------
// Reliable connections (rc.hpp): SRQs and RC QPs between two devices.

namespace {

constexpr std::uint32_t kRcBuf = 2048, kRcBufs = 32;  // a receive: 32 x 2 KB, as net_ipoib's shared receives
constexpr std::uint32_t kCmFrame = 65524;             // a connected-mode IPoIB frame, its header included

// One end of a connection: a device, one CQ for sends and receives, an RC QP
// receiving through an SRQ or its own queue, `depth` receives of `bufs`
// buffers of `buf_size` bytes (ordinary memory: the in-process HCA reaches
// any address).
struct RcEnd {
    std::unique_ptr<Context> ctx;
    std::unique_ptr<Cq> cq;
    std::unique_ptr<Srq> srq;
    std::unique_ptr<RcQp> qp;
    std::uint32_t depth, bufs, buf_size;
    std::vector<std::uint8_t> mem;
    std::vector<Wc> recvs, sends;

    RcEnd(const std::string &name, const std::string &opts, bool use_srq, std::uint32_t depth_ = 4,
          std::uint32_t bufs_ = kRcBufs, std::uint32_t buf_size_ = kRcBuf, int cq_depth = 256)
        : depth(depth_), bufs(bufs_), buf_size(buf_size_), mem(std::size_t{depth_} * bufs_ * buf_size_) {
        auto o = open_device("inproc", name, opts);
        INFO(o.error);
        REQUIRE(o.ctx);
        ctx = std::move(o.ctx);
        cq = ctx->create_cq(cq_depth);
        REQUIRE(cq);
        if (use_srq) {
            srq = ctx->create_srq(SrqInit{.cq = cq.get(), .max_wr = depth, .max_sge = bufs});
            INFO(ctx->last_error());
            REQUIRE(srq);
        }
        RcQpInit init;
        init.send_cq = cq.get();
        init.recv_cq = cq.get();
        init.srq = srq.get();
        init.max_send_wr = 64;
        init.max_recv_wr = depth;
        init.max_recv_sge = bufs;
        qp = ctx->create_rc_qp(init);
        INFO(ctx->last_error());
        REQUIRE(qp);
        CHECK(qp->state() == RcState::init);
    }
    ~RcEnd() {
        qp.reset();
        srq.reset();
    }
    std::uint8_t *buf(std::uint64_t wr, std::uint32_t j) { return mem.data() + (wr * bufs + j) * buf_size; }
    // Post receive `wr` (its buffers); returns what post_recv returned.
    int post(std::uint32_t wr) {
        Sge sg[kMaxRcRecvSge];
        for (std::uint32_t j = 0; j < bufs; ++j)
            sg[j] = Sge{reinterpret_cast<std::uintptr_t>(buf(wr, j)), buf_size, 1};
        const RcRecvWr r{wr, sg, bufs};
        return srq ? srq->post_recv(&r, 1) : qp->post_recv(&r, 1);
    }
    void post_all() {
        for (std::uint32_t w = 0; w < depth; ++w)
            REQUIRE(post(w) == 1);
    }
    PortAttr port() {
        PortAttr a;
        REQUIRE(ctx->query_port(1, &a) == 0);
        return a;
    }
    Gid gid() {
        Gid g;
        REQUIRE(ctx->query_gid(1, 0, &g) == 0);
        return g;
    }
    // Connect to `to`'s QP: by GID on Ethernet, by LID on InfiniBand.
    int connect(RcEnd &to, std::uint8_t rnr_retry = 7) {
        RcConnect c;
        if (to.port().link_layer == LinkLayer::ethernet) {
            c.path.is_global = true;
            c.path.dgid = to.gid();
            c.path.hop_limit = 64;
        } else {
            c.path.dlid = to.port().lid;
        }
        c.path.sl = 3;
        c.remote_qpn = to.qp->qp_num();
        c.remote_psn = 0x100;
        c.local_psn = 0x200;
        c.rnr_retry = rnr_retry;
        return qp->connect(c);
    }
    // Send `msg` gathered from `pieces` entries of unequal length (the first 4
    // bytes alone, as an IPoIB header, the rest cut across buffer boundaries).
    int send(const std::vector<std::uint8_t> &msg, std::uint32_t pieces, std::uint64_t wr_id, bool signaled = true) {
        Sge sg[kMaxRcSendSge + 1];
        const auto size = static_cast<std::uint32_t>(msg.size());
        std::uint32_t off = 0;
        for (std::uint32_t i = 0; i < pieces; ++i) {
            std::uint32_t l = i == 0 ? std::min<std::uint32_t>(4, size) : (size - 4) / (pieces - 1);
            if (i + 1 == pieces)
                l = size - off;
            sg[i] = Sge{reinterpret_cast<std::uintptr_t>(msg.data() + off), l, 0};
            off += l;
        }
        const SendWr wr{wr_id, sg, pieces, nullptr, 0, 0, signaled};
        return qp->post_send(&wr, 1);
    }
    // Poll once: completions sorted into recvs and sends.
    int poll() {
        Wc wc[16];
        const int n = cq->poll(wc, 16);
        REQUIRE(n >= 0);
        for (int i = 0; i < n; ++i)
            (wc[i].opcode == WcOpcode::recv ? recvs : sends).push_back(wc[i]);
        return n;
    }
    // The bytes of a receive completion, gathered from its buffers.
    std::vector<std::uint8_t> message(const Wc &wc) {
        std::vector<std::uint8_t> out;
        for (std::uint32_t j = 0; out.size() < wc.byte_len; ++j) {
            REQUIRE(j < bufs);
            const std::uint32_t n = std::min<std::uint32_t>(buf_size, wc.byte_len - static_cast<std::uint32_t>(out.size()));
            out.insert(out.end(), buf(wc.wr_id, j), buf(wc.wr_id, j) + n);
        }
        return out;
    }
};

// Bytes that differ from one 2 KB buffer to the next (a buffer out of place shows).
std::vector<std::uint8_t> rc_pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::uint8_t>(seed + i * 7 + (i >> 11));
    return v;
}

void connect_both(RcEnd &a, RcEnd &b, std::uint8_t rnr_retry = 7) {
    REQUIRE(a.connect(b, rnr_retry) == 0);
    REQUIRE(b.connect(a, rnr_retry) == 0);
    CHECK(a.qp->state() == RcState::rts);
    CHECK(b.qp->state() == RcState::rts);
}

} // namespace

TEST_CASE("inproc RC: 65524 bytes in 34 gather pieces over 32 x 2 KB receives of an SRQ, both ways, in order") {
    const std::string opts = GENERATE(as<std::string>{}, "link=ib", "");
    INFO("options: " << opts);
    RcEnd a("rc-a", opts, true), b("rc-b", opts, false);  // A receives through an SRQ, B through its own queue
    a.post_all();
    b.post_all();
    connect_both(a, b);

    // A -> B: three messages of different lengths, each into one receive, in order.
    const std::vector<std::vector<std::uint8_t>> to_b{rc_pattern(kCmFrame, 1), rc_pattern(1, 2), rc_pattern(2044, 3)};
    REQUIRE(a.send(to_b[0], kMaxRcSendSge, 10) == 1);
    REQUIRE(a.send(to_b[1], 1, 11) == 1);
    REQUIRE(a.send(to_b[2], 5, 12) == 1);
    a.poll();
    b.poll();
    REQUIRE(a.sends.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(a.sends[i].status == WcStatus::success);
        CHECK(a.sends[i].wr_id == 10 + i);
        CHECK(a.sends[i].qp_num == a.qp->qp_num());
    }
    REQUIRE(b.recvs.size() == 3);
    const std::uint16_t lid_a = a.port().lid;
    for (std::size_t i = 0; i < 3; ++i) {
        const Wc &w = b.recvs[i];
        CHECK(w.status == WcStatus::success);
        CHECK(w.wr_id == i);  // in the order posted
        CHECK(w.byte_len == to_b[i].size());  // no GRH area
        CHECK(w.wc_flags == 0);
        CHECK(w.qp_num == b.qp->qp_num());
        CHECK(w.src_qp == a.qp->qp_num());
        CHECK(w.slid == lid_a);  // 0 on Ethernet
        CHECK(w.sl == 3);
        CHECK(b.message(w) == to_b[i]);
    }

    // B -> A into the SRQ: the completion names the RC QP it arrived on.
    const auto to_a = rc_pattern(kCmFrame, 9);
    REQUIRE(b.send(to_a, kMaxRcSendSge, 20) == 1);
    a.poll();
    b.poll();
    REQUIRE(b.sends.size() == 1);
    CHECK(b.sends[0].status == WcStatus::success);
    REQUIRE(a.recvs.size() == 1);
    CHECK(a.recvs[0].qp_num == a.qp->qp_num());
    CHECK(a.recvs[0].src_qp == b.qp->qp_num());
    CHECK(a.message(a.recvs[0]) == to_a);

    // An unsignaled send that succeeds completes nothing.
    REQUIRE(b.post(0) == 1);
    REQUIRE(a.send(to_b[1], 1, 13, false) == 1);
    a.sends.clear();
    a.poll();
    b.poll();
    CHECK(a.sends.empty());
    CHECK(b.recvs.size() == 4);

    const QpCounters ca = a.qp->counters(), cb = b.qp->counters();
    CHECK(ca.tx_packets == 4);
    CHECK(ca.tx_bytes == kCmFrame + 1 + 2044 + 1);
    CHECK(ca.rx_packets == 1);
    CHECK(ca.rx_bytes == kCmFrame);
    CHECK(cb.rx_packets == 4);
    CHECK(cb.tx_packets == 1);
    CHECK(ca.tx_errors == 0);
    PortCounters pb;
    REQUIRE(b.ctx->port_counters(1, &pb) == 0);
    CHECK(pb.rx_packets == 4);
    CHECK(pb.tx_bytes == kCmFrame);
}

TEST_CASE("inproc RC: what creation and connect refuse; UD cannot reach an RC QP") {
    RcEnd a("rc-c", "", false), b("rc-d", "", true);
    auto other_cq = a.ctx->create_cq(16);
    CHECK_FALSE(a.ctx->create_srq(SrqInit{.cq = nullptr}));
    CHECK_FALSE(a.ctx->create_srq(SrqInit{.cq = other_cq.get(), .max_sge = kMaxRcRecvSge + 1}));
    {
        RcQpInit init;
        init.send_cq = a.cq.get();
        init.recv_cq = other_cq.get();
        init.srq = b.srq.get();  // its CQ is b's
        CHECK_FALSE(a.ctx->create_rc_qp(init));
        CHECK(a.ctx->last_error().find("SRQ's CQ") != std::string::npos);
        init.srq = nullptr;
        init.pkey_index = 5;
        CHECK_FALSE(a.ctx->create_rc_qp(init));
    }
    // Not connected: no sends; the SRQ's QP posts no receives of its own.
    std::vector<std::uint8_t> msg(16);
    CHECK(a.send(msg, 1, 1) == -EINVAL);
    CHECK(b.qp->post_recv(nullptr, 0) == -EINVAL);
    // A path to nowhere.
    RcConnect nowhere;
    nowhere.path.is_global = true;
    nowhere.path.dgid = kMgid;
    nowhere.remote_qpn = b.qp->qp_num();
    CHECK(a.qp->connect(nowhere) == -EINVAL);
    CHECK(a.qp->state() == RcState::init);
    connect_both(a, b);
    CHECK(a.connect(b) == -EINVAL);  // twice
    // 35 gather entries: more than a connection's send takes.
    b.post_all();
    std::vector<std::uint8_t> big(35 * 8);
    REQUIRE(a.send(big, kMaxRcSendSge + 1, 2) == 1);
    a.poll();
    REQUIRE(a.sends.size() == 1);
    CHECK(a.sends[0].status == WcStatus::general_err);
    CHECK(a.qp->state() == RcState::error);

    // A UD datagram to the RC QP's number finds no QP.
    Host h("rc-ud", "");
    PortCounters before, after;
    REQUIRE(b.ctx->port_counters(1, &before) == 0);
    AhAttr to_b;
    to_b.is_global = true;
    to_b.dgid = b.gid();
    auto ah_b = h.ctx->create_ah(to_b);
    REQUIRE(ah_b);
    CHECK(h.send(ah_b.get(), b.qp->qp_num(), std::vector<std::uint8_t>(8)).status == WcStatus::success);
    REQUIRE(b.ctx->port_counters(1, &after) == 0);
    CHECK(after.drop_no_qp - before.drop_no_qp == 1);
}

TEST_CASE("inproc RC: a message longer than the receive: loc_len_err there, general_err and ERR here") {
    RcEnd a("rc-e", "", false), b("rc-f", "", false, 2, 2, 1024);  // B's receives: 2 x 1 KB
    a.post_all();
    b.post_all();
    connect_both(a, b);
    REQUIRE(a.send(rc_pattern(2048, 1), 2, 1) == 1);  // fits exactly
    REQUIRE(a.send(rc_pattern(2049, 2), 3, 2) == 1);  // one byte too many
    REQUIRE(a.send(rc_pattern(10, 3), 1, 3) == 1);    // after the error: flushed
    a.poll();
    b.poll();
    REQUIRE(a.sends.size() == 3);
    CHECK(a.sends[0].status == WcStatus::success);
    CHECK(a.sends[1].status == WcStatus::general_err);
    CHECK(a.sends[2].status == WcStatus::wr_flush_err);
    CHECK(a.qp->state() == RcState::error);
    REQUIRE(b.recvs.size() == 2);
    CHECK(b.recvs[0].status == WcStatus::success);
    CHECK(b.message(b.recvs[0]) == rc_pattern(2048, 1));
    CHECK(b.recvs[1].status == WcStatus::loc_len_err);
    CHECK(b.qp->state() == RcState::rts);
    CHECK(b.qp->counters().drop_too_long == 1);
    CHECK(a.qp->counters().tx_errors == 1);
    PortCounters pb;
    REQUIRE(b.ctx->port_counters(1, &pb) == 0);
    CHECK(pb.drop_too_long == 1);
    // Later posts of the QP in ERR complete flushed; its own receives were flushed.
    REQUIRE(a.send(rc_pattern(10, 4), 1, 4) == 1);
    a.poll();
    CHECK(a.sends.back().status == WcStatus::wr_flush_err);
    REQUIRE(a.recvs.size() == a.depth);
    for (const Wc &w : a.recvs)
        CHECK(w.status == WcStatus::wr_flush_err);
}

TEST_CASE("inproc RC: RNR with rnr_retry 7 waits, in order, until receives are posted") {
    RcEnd a("rc-g", "", false), b("rc-h", "", true);
    connect_both(a, b, 7);
    // (A waiting send's buffers are read when it goes: they stay valid until it completes.)
    const auto m1 = rc_pattern(3000, 1), m2 = rc_pattern(5, 2), m3 = rc_pattern(7, 3);
    REQUIRE(a.send(m1, 3, 1) == 1);  // no receive at B: waits
    REQUIRE(a.send(m2, 1, 2) == 1);  // behind it, though a receive may come first
    for (int i = 0; i < 100; ++i)
        a.poll();
    CHECK(a.sends.empty());
    CHECK(a.qp->state() == RcState::rts);
    CHECK(b.qp->counters().drop_no_buffer >= 100);  // every retry an RNR NAK
    REQUIRE(b.post(0) == 1);
    a.poll();  // the first goes; the second finds no receive again
    b.poll();
    REQUIRE(a.sends.size() == 1);
    CHECK(a.sends[0].wr_id == 1);
    REQUIRE(b.recvs.size() == 1);
    CHECK(b.message(b.recvs[0]) == m1);
    REQUIRE(b.post(1) == 1);
    REQUIRE(a.send(m3, 1, 3) == 1);  // a post retries too: 2 goes, 3 waits
    a.poll();
    REQUIRE(a.sends.size() == 2);
    CHECK(a.sends[1].wr_id == 2);
    b.poll();
    REQUIRE(b.recvs.size() == 2);
    CHECK(b.message(b.recvs[1]) == m2);
    REQUIRE(b.post(2) == 1);
    a.poll();
    b.poll();
    REQUIRE(a.sends.size() == 3);
    CHECK(a.sends[2].status == WcStatus::success);
    CHECK(b.message(b.recvs.at(2)) == m3);
}

TEST_CASE("inproc RC: RNR with rnr_retry 3 fails on the third retry, 0 at once; the rest flushed") {
    RcEnd a("rc-i", "", false), b("rc-j", "", false);
    connect_both(a, b, 3);
    REQUIRE(a.send(rc_pattern(100, 1), 1, 1) == 1);  // the first try
    REQUIRE(a.send(rc_pattern(100, 2), 1, 2) == 1);  // (a post retries the first: retry 1)
    a.poll();                                     // retry 2
    CHECK(a.sends.empty());
    CHECK(a.qp->state() == RcState::rts);
    a.poll();  // retry 3: exhausted
    REQUIRE(a.sends.size() == 2);
    CHECK(a.sends[0].wr_id == 1);
    CHECK(a.sends[0].status == WcStatus::rnr_retry_exc_err);
    CHECK(a.sends[1].status == WcStatus::wr_flush_err);
    CHECK(a.qp->state() == RcState::error);
    CHECK(b.qp->counters().drop_no_buffer == 4);  // the try and its three retries

    RcEnd c("rc-k", "", false), d("rc-l", "", false);
    connect_both(c, d, 0);
    REQUIRE(c.send(rc_pattern(100, 1), 1, 1) == 1);
    c.poll();
    REQUIRE(c.sends.size() == 1);
    CHECK(c.sends[0].status == WcStatus::rnr_retry_exc_err);
    CHECK(c.qp->state() == RcState::error);
}

TEST_CASE("inproc RC: peer destroyed, in ERR or its port down: retry_exc_err and ERR; set_error flushes") {
    SECTION("peer destroyed") {
        RcEnd a("rc-m", "link=ib", false), b("rc-n", "link=ib", true);
        b.post_all();
        connect_both(a, b);
        REQUIRE(a.send(rc_pattern(64, 1), 1, 1) == 1);
        b.qp.reset();
        REQUIRE(a.send(rc_pattern(64, 2), 1, 2) == 1);
        REQUIRE(a.send(rc_pattern(64, 3), 1, 3) == 1);
        a.poll();
        REQUIRE(a.sends.size() == 3);
        CHECK(a.sends[0].status == WcStatus::success);
        CHECK(a.sends[1].status == WcStatus::retry_exc_err);
        CHECK(a.sends[2].status == WcStatus::wr_flush_err);
        CHECK(a.qp->state() == RcState::error);
    }
    SECTION("peer in ERR (set_error), then set_error here flushes what waits") {
        RcEnd a("rc-o", "", false), b("rc-p", "", false);
        connect_both(a, b);
        REQUIRE(b.qp->set_error() == 0);
        REQUIRE(b.qp->set_error() == 0);  // idempotent
        CHECK(b.qp->state() == RcState::error);
        CHECK(b.post(0) == -EINVAL);  // no receives into a QP in ERR
        REQUIRE(a.send(rc_pattern(64, 1), 1, 1) == 1);
        a.poll();
        REQUIRE(a.sends.size() == 1);
        CHECK(a.sends[0].status == WcStatus::retry_exc_err);

        RcEnd c("rc-q", "", false), d("rc-r", "", false);
        c.post_all();
        connect_both(c, d);
        REQUIRE(c.send(rc_pattern(64, 1), 1, 1) == 1);  // RNR: waits
        REQUIRE(c.send(rc_pattern(64, 2), 1, 2) == 1);
        c.poll();
        CHECK(c.sends.empty());
        REQUIRE(c.qp->set_error() == 0);
        c.poll();
        REQUIRE(c.sends.size() == 2);
        CHECK(c.sends[0].status == WcStatus::wr_flush_err);
        CHECK(c.sends[1].status == WcStatus::wr_flush_err);
        REQUIRE(c.recvs.size() == c.depth);  // its own receives too
        for (const Wc &w : c.recvs)
            CHECK(w.status == WcStatus::wr_flush_err);
    }
    SECTION("the peer's port down") {
        RcEnd a("rc-s", "", false), b("rc-t", "", false);
        b.post_all();
        connect_both(a, b);
        REQUIRE(inproc::set_port_state(*b.ctx, PortState::down) == 0);
        REQUIRE(a.send(rc_pattern(64, 1), 1, 1) == 1);
        a.poll();
        REQUIRE(a.sends.size() == 1);
        CHECK(a.sends[0].status == WcStatus::retry_exc_err);
        CHECK(a.qp->state() == RcState::error);
        b.poll();
        CHECK(b.recvs.empty());
        REQUIRE(inproc::set_port_state(*b.ctx, PortState::active) == 0);
    }
}
