// SPDX-License-Identifier: BSD-3-Clause
// The transmit step on crafted mbufs: encapsulation and gather lists,
// destinations (broadcast, neighbours, groups), frames held for resolution,
// ARP/ND translation, checksum offload, multi-segment frames, drops counted.
#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::pmd;
using namespace ipoib::test;

namespace {

struct TxFixture {
    TestPort tp;
    std::unique_ptr<TxQueue> q;
    TxBatch b;
    rte_mempool *mp = pool("tx_pool");
    FakeAh peer_ah{kPeerLid};
    wire::Mac peer_mac{{0x02, 0x02, 0xc9, 0x0a, 0xbc, 0x02}};

    explicit TxFixture(L2Mode l2 = L2Mode::eth) : tp(l2) { q.reset(tx_queue_create(&tp.fp, 0, 64)); }
    ~TxFixture() {
        for (auto *m : q->inflight)
            rte_pktmbuf_free(m);
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
    }
    TxResult tx(rte_mbuf *m, bool retry = false, std::uint64_t now = 0) { return tx_frame(q.get(), b, m, now, retry); }

    void resolve_peer(NeighState st = NeighState::resolved, std::uint64_t retry_ms = ~0ull) {
        Neigh *n = tp.fp.neigh.find_or_add(peer_mac);
        tp.fp.neigh.write(n, [&](Neigh &e) {
            e.state = st;
            e.retry_ms = retry_ms;
            e.dlid = kPeerLid;
            e.qpn = kPeerQpn;
            e.gid = gid_of(2);
            e.ah = st == NeighState::resolved ? &peer_ah : nullptr;
        });
    }
    // An Ethernet frame to `dst` from our MAC.
    rte_mbuf *frame(const wire::Mac &dst, std::uint16_t et, const std::vector<std::uint8_t> &l3) {
        std::vector<std::uint8_t> f(dst.raw.begin(), dst.raw.end());
        f.insert(f.end(), tp.fp.mac.addr_bytes, tp.fp.mac.addr_bytes + 6);
        f.push_back(static_cast<std::uint8_t>(et >> 8));
        f.push_back(static_cast<std::uint8_t>(et));
        f.insert(f.end(), l3.begin(), l3.end());
        return mbuf_with(mp, f);
    }
    // The message the last WR sends: its gather list, concatenated.
    std::vector<std::uint8_t> message(int k) const {
        std::vector<std::uint8_t> out;
        const hca::SendWr &w = b.wr[k];
        for (std::uint32_t i = 0; i < w.num_sge; ++i) {
            const auto *p = reinterpret_cast<const std::uint8_t *>(w.sg_list[i].addr);
            out.insert(out.end(), p, p + w.sg_list[i].length);
        }
        return out;
    }
};

const wire::Mac kBroadcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

std::vector<std::uint8_t> with_header(std::uint16_t et, const std::vector<std::uint8_t> &l3) {
    std::vector<std::uint8_t> v = {static_cast<std::uint8_t>(et >> 8), static_cast<std::uint8_t>(et), 0, 0};
    v.insert(v.end(), l3.begin(), l3.end());
    return v;
}

} // namespace

TEST_CASE("tx: unicast to a resolved neighbour: the IPoIB header, then the mbuf's payload, no copy") {
    TxFixture f;
    f.resolve_peer();
    const auto ip = ipv4_udp(0x0a000002, 100);
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ip);
    REQUIRE(f.tx(m) == TxResult::sent);
    REQUIRE(f.b.n == 1);
    const hca::SendWr &w = f.b.wr[0];
    CHECK(w.ah == &f.peer_ah);
    CHECK(w.remote_qpn == kPeerQpn);
    CHECK(w.remote_qkey == hca::kUseQpQkey);
    REQUIRE(w.num_sge == 2);
    CHECK(w.sg_list[1].addr == rte_pktmbuf_mtod_offset(m, std::uintptr_t, RTE_ETHER_HDR_LEN));
    CHECK(f.message(0) == with_header(wire::kEtherTypeIPv4, ip));
    CHECK(f.q->inflight[w.wr_id] == m);  // owned until its completion
    CHECK(f.q->st.packets == 1);
}

TEST_CASE("tx: a three-segment frame is a four-piece gather list") {
    TxFixture f;
    f.resolve_peer();
    const auto ip = ipv4_udp(0x0a000002, 300);
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, std::vector<std::uint8_t>(ip.begin(), ip.begin() + 100));
    rte_mbuf *s2 = mbuf_with(f.mp, std::vector<std::uint8_t>(ip.begin() + 100, ip.begin() + 200));
    rte_mbuf *s3 = mbuf_with(f.mp, std::vector<std::uint8_t>(ip.begin() + 200, ip.end()));
    REQUIRE(rte_pktmbuf_chain(m, s2) == 0);
    REQUIRE(rte_pktmbuf_chain(m, s3) == 0);
    REQUIRE(f.tx(m) == TxResult::sent);
    CHECK(f.b.wr[0].num_sge == 4);
    CHECK(f.message(0) == with_header(wire::kEtherTypeIPv4, ip));
}

TEST_CASE("tx: more segments than a gather list holds are linearised") {
    TxFixture f;
    f.resolve_peer();
    const auto ip = ipv4_udp(0x0a000002, 400);
    const std::size_t piece = ip.size() / hca::kMaxSendSge + 1;
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, std::vector<std::uint8_t>(ip.begin(), ip.begin() + piece));
    for (std::size_t at = piece; at < ip.size(); at += piece)
        REQUIRE(rte_pktmbuf_chain(m, mbuf_with(f.mp, std::vector<std::uint8_t>(
                                                         ip.begin() + at, ip.begin() + std::min(at + piece, ip.size())))) == 0);
    REQUIRE(m->nb_segs + 1u > hca::kMaxSendSge);
    REQUIRE(f.tx(m) == TxResult::sent);
    CHECK(f.b.wr[0].num_sge == 2);
    CHECK(f.message(0) == with_header(wire::kEtherTypeIPv4, ip));
    CHECK(f.q->st.linearized == 1);  // counted (tx_linearized)
}

TEST_CASE("tx: a payload already contiguous behind empty segments is sent from where it is") {
    TxFixture f;
    f.resolve_peer();
    const auto ip = ipv4_udp(0x0a000002, 200);
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ip);
    for (std::uint32_t i = 0; i < hca::kMaxSendSge; ++i)  // more segments than a gather list holds, all empty
        REQUIRE(rte_pktmbuf_chain(m, mbuf_with(f.mp, {})) == 0);
    REQUIRE(f.tx(m) == TxResult::sent);
    CHECK(f.message(0) == with_header(wire::kEtherTypeIPv4, ip));
    CHECK(f.q->st.linearized == 0);  // not copied: not counted
}

TEST_CASE("tx: broadcast without the broadcast group's address handle is dropped and counted") {
    TxFixture f;
    f.tp.fp.bcast_ah = nullptr;  // its creation failed
    rte_mbuf *m = f.frame(kBroadcast, wire::kEtherTypeIPv4, ipv4_udp(0x0affffff, 10));
    CHECK(f.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    CHECK(f.q->st.mcast_unjoined == 1);
    CHECK(f.b.n == 0);
}

TEST_CASE("tx: an unknown neighbour holds three frames, asks once, drops the fourth") {
    TxFixture f;
    for (int i = 0; i < 3; ++i)
        CHECK(f.tx(f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 10))) == TxResult::queued);
    rte_mbuf *fourth = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 10));
    CHECK(f.tx(fourth) == TxResult::dropped);
    rte_pktmbuf_free(fourth);
    CHECK(f.q->npending == 3);
    CHECK(f.q->st.unresolved_queued == 3);
    CHECK(f.q->st.unresolved_drop == 1);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].kind == RequestKind::resolve);
    CHECK(std::memcmp(reqs[0].mac, f.peer_mac.raw.data(), 6) == 0);
    // Resolved: a retry of a held frame is sent.
    f.resolve_peer();
    CHECK(f.tx(f.q->pending[0].m, true) == TxResult::sent);
    f.q->pending[0] = f.q->pending[--f.q->npending];
}

TEST_CASE("tx: a LID/QPN MAC asks with the LID and QPN it encodes") {
    TxFixture f;
    CHECK(f.tx(f.frame(lidqpn_mac(0x1234, 0xabcdef), wire::kEtherTypeIPv4, ipv4_udp(1, 10))) == TxResult::queued);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].lid == 0x1234);
    CHECK(reqs[0].qpn == 0xabcdef);
}

// l3fwd --eth-dest with a LID/QPN MAC: its first burst of 32 waits for the
// address handle (no SA involved) instead of losing all but 3.
TEST_CASE("tx: a first burst to a LID/QPN MAC is held whole; other destinations hold 3") {
    TxFixture f;
    const wire::Mac dst = lidqpn_mac(0x1234, 0xabcdef);
    for (int i = 0; i < 32; ++i)
        CHECK(f.tx(f.frame(dst, wire::kEtherTypeIPv4, ipv4_udp(1, 10))) == TxResult::queued);
    CHECK(f.q->npending == 32);
    CHECK(f.q->st.unresolved_drop == 0);
    CHECK(f.tp.requests().size() == 1);  // asked once
    for (std::uint32_t i = 0; i < f.q->npending; ++i)
        rte_pktmbuf_free(f.q->pending[i].m);
    f.q->npending = 0;
    for (int i = 0; i < 4; ++i) {
        rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(1, 10));
        if (f.tx(m) == TxResult::dropped)
            rte_pktmbuf_free(m);
    }
    CHECK(f.q->npending == 3);
    for (std::uint32_t i = 0; i < f.q->npending; ++i)
        rte_pktmbuf_free(f.q->pending[i].m);
    f.q->npending = 0;
}

TEST_CASE("tx: a neighbour whose resolution failed is dropped at once") {
    TxFixture f;
    f.resolve_peer(NeighState::failed);
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(1, 10));
    CHECK(f.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    CHECK(f.q->st.unresolved_drop == 1);
    CHECK(f.tp.requests().empty());
}

TEST_CASE("tx: a failed neighbour is asked for again once its backoff has passed") {
    TxFixture f;
    f.resolve_peer(NeighState::failed, 1000);
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(1, 10));
    CHECK(f.tx(m, false, 999) == TxResult::dropped);
    rte_pktmbuf_free(m);
    CHECK(f.tp.requests().empty());
    CHECK(f.tx(f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(1, 10)), false, 1000) == TxResult::queued);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].kind == RequestKind::resolve);
}

TEST_CASE("tx: broadcast ARP goes to the broadcast group as an IPoIB ARP from this port") {
    TxFixture f;
    // Ethernet ARP request 10.0.0.1 -> who has 10.0.0.2, from some other MAC (a tap's).
    std::vector<std::uint8_t> arp = {0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, 0x0a, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
                                     10,   0,    0,    1,    0, 0, 0,    0,    0,    0,    10,   0,    0,    2};
    rte_mbuf *m = f.frame(kBroadcast, wire::kEtherTypeArp, arp);
    REQUIRE(f.tx(m) == TxResult::sent);
    const hca::SendWr &w = f.b.wr[0];
    CHECK(w.ah == f.tp.fp.bcast_ah);
    CHECK(w.remote_qpn == hca::kMulticastQpn);
    const auto msg = f.message(0);
    REQUIRE(msg.size() == 4 + 8 + 2 * (20 + 4));
    CHECK(msg[0] == 0x08);
    CHECK(msg[1] == 0x06);
    CHECK(msg[4 + 1] == 0x20);  // hardware type 32 (InfiniBand)
    CHECK(msg[4 + 4] == 20);
    CHECK(std::equal(f.tp.fp.hwaddr.raw.begin(), f.tp.fp.hwaddr.raw.end(), msg.begin() + 12));  // our address
    CHECK(f.q->st.arp_translated == 1);
}

TEST_CASE("tx: an IPv4 multicast frame waits for a send-only join, then goes to the group") {
    TxFixture f;
    const wire::Mac group_mac{{0x01, 0x00, 0x5e, 0x01, 0x02, 0x03}};
    CHECK(f.tx(f.frame(group_mac, wire::kEtherTypeIPv4, ipv4_udp(0xe0010203, 10))) == TxResult::queued);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].kind == RequestKind::sendonly_join);
    const wire::Gid mgid =
        wire::ipv4_mcast_mgid(wire::Bytes(std::array<std::uint8_t, 4>{224, 1, 2, 3}.data(), 4), f.tp.fp.bcast_mgid)
            .value;
    CHECK(std::memcmp(reqs[0].gid, mgid.raw.data(), 16) == 0);
    FakeAh gah{0xc001};
    REQUIRE(f.tp.fp.groups.add(mgid, 0xc001, &gah));
    REQUIRE(f.tx(f.q->pending[0].m, true) == TxResult::sent);
    f.q->npending = 0;
    CHECK(f.b.wr[0].ah == &gah);
    CHECK(f.b.wr[0].remote_qpn == hca::kMulticastQpn);
}

TEST_CASE("tx: checksum offload fills the IPv4 header and UDP checksums") {
    TxFixture f;
    f.resolve_peer();
    auto ip = ipv4_udp(0x0a000002, 64);
    ip[10] = ip[11] = 0;  // checksums left to the driver
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ip);
    m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
    m->l2_len = RTE_ETHER_HDR_LEN;
    m->l3_len = 20;
    REQUIRE(f.tx(m) == TxResult::sent);
    const auto msg = f.message(0);
    const auto *h = reinterpret_cast<const rte_ipv4_hdr *>(msg.data() + 4);
    CHECK(rte_raw_cksum(h, 20) == 0xffff);
    CHECK(rte_ipv4_udptcp_cksum_verify(h, msg.data() + 4 + 20) == 0);
    CHECK((msg[4 + 26] | msg[4 + 27]) != 0);
}

TEST_CASE("tx: a checksum asked with offload fields that do not describe the frame is dropped and counted") {
    TxFixture f;
    f.resolve_peer();
    rte_mbuf *m = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 64));
    m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM;
    m->l2_len = RTE_ETHER_HDR_LEN;  // l3_len left 0
    CHECK(f.tx(m) == TxResult::dropped);
    CHECK(f.q->st.bad_offload == 1);
    CHECK(f.b.n == 0);
    rte_pktmbuf_free(m);
}

TEST_CASE("tx: too big, unsupported EtherType and runt frames are counted") {
    TxFixture f;
    f.resolve_peer();
    rte_mbuf *big = f.frame(f.peer_mac, wire::kEtherTypeIPv4, ipv4_udp(1, 2044));
    CHECK(f.tx(big) == TxResult::dropped);
    CHECK(f.q->st.too_big == 1);
    rte_mbuf *lldp = f.frame(f.peer_mac, 0x88cc, std::vector<std::uint8_t>(50, 0));
    CHECK(f.tx(lldp) == TxResult::dropped);
    CHECK(f.q->st.unsupported_ethertype == 1);
    rte_mbuf *runt = mbuf_with(f.mp, std::vector<std::uint8_t>(10, 0));
    CHECK(f.tx(runt) == TxResult::dropped);
    CHECK(f.q->st.errors == 1);
    CHECK(f.b.n == 0);
    CHECK(f.q->free_ids.size() == 64);  // no work-request id taken
    for (rte_mbuf *m : {big, lldp, runt})
        rte_pktmbuf_free(m);
}

TEST_CASE("tx: native mode sends the frame as it is to the address in the dynamic field") {
    TxFixture f(L2Mode::ipoib);
    f.resolve_peer();  // known by its GUID-derived MAC
    Neigh *n = f.tp.fp.neigh.find(f.peer_mac);
    f.tp.fp.neigh.remove(n);
    const wire::Mac key = wire::mac_from_guid(wire::guid_from_gid(gid_of(2)));
    Neigh *k = f.tp.fp.neigh.find_or_add(key);
    f.tp.fp.neigh.write(k, [&](Neigh &e) {
        e.state = NeighState::resolved;
        e.qpn = kPeerQpn;
        e.ah = &f.peer_ah;
    });
    const auto frame = with_header(wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 30));
    rte_mbuf *m = mbuf_with(f.mp, frame);
    auto *a = rte_pmd_ipoib_addr(m, f.tp.fp.dynfield);
    const wire::HwAddr dst = wire::make_hwaddr(0, kPeerQpn, gid_of(2)).value;
    std::memcpy(a->hwaddr, dst.raw.data(), 20);
    a->lid = 0;
    REQUIRE(f.tx(m) == TxResult::sent);
    CHECK(f.b.wr[0].ah == &f.peer_ah);
    CHECK(f.b.wr[0].remote_qpn == kPeerQpn);
    CHECK(f.message(0) == frame);
}

namespace {
// A CQ that returns the completions it was given (an HCA completing later, as rxe does).
class FakeCq : public hca::Cq {
  public:
    std::vector<hca::Wc> pending;
    int poll(hca::Wc *wc, int n) noexcept override {
        const int k = std::min<int>(n, static_cast<int>(pending.size()));
        std::copy(pending.begin(), pending.begin() + k, wc);
        pending.erase(pending.begin(), pending.begin() + k);
        return k;
    }
};
} // namespace

TEST_CASE("tx: completions of a send queue shared by two TX queues go back to the queue that posted them") {
    TestPort tp;
    rte_mempool *mp = pool("tx_shared_pool");
    const unsigned avail = rte_mempool_avail_count(mp);
    FakeCq cq;
    tp.fp.tx_cqs[0] = &cq;
    std::unique_ptr<TxQueue> q0(tx_queue_create(&tp.fp, 0, 16)), q1(tx_queue_create(&tp.fp, 1, 16));
    for (TxQueue *q : {q0.get(), q1.get()}) {
        q->sq = 0;
        q->lock = &tp.fp.sq_lock[0];
        tp.fp.txqs[q->queue_id] = q;
    }
    // Queue 1 posted a frame in slot 5; queue 0 reaps the send queue's completions.
    rte_mbuf *m = mbuf_with(mp, std::vector<std::uint8_t>(64, 1));
    q1->inflight[5] = m;
    q1->free_ids.erase(std::find(q1->free_ids.begin(), q1->free_ids.end(), 5u));
    hca::Wc ok{};
    ok.wr_id = std::uint64_t{1} << 32 | 5;
    ok.status = hca::WcStatus::success;
    hca::Wc stray = ok;
    stray.wr_id = std::uint64_t{7} << 32 | 3;  // a queue that does not exist: nothing to give back
    cq.pending = {ok, stray};
    tx_flush_completions(q0.get());
    CHECK(cq.pending.empty());
    CHECK(q1->inflight[5] == nullptr);
    CHECK(std::count(q1->free_ids.begin(), q1->free_ids.end(), 5u) == 1);
    CHECK(q1->free_ids.size() == 16);
    CHECK(q1->completed.load() == 1);
    CHECK(q0->completed.load() == 0);
    CHECK(q0->free_ids.size() == 16);
    CHECK(rte_mempool_avail_count(mp) == avail);  // the mbuf is freed once, by its completion
}
