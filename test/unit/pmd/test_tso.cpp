// SPDX-License-Identifier: BSD-3-Clause
// TCP segmentation on transmit (RTE_MBUF_F_TX_TCP_SEG): a TCP frame larger
// than the MTU leaves as MTU-sized segments, each with its own IP and TCP
// headers (lengths, IPv4 identification, sequence numbers, flags, checksums
// that verify) and its slice of the payload; chained mbufs, IPv6, the
// segment size bounded by the MTU, bad metadata refused, no partial frames.
#include <rte_tcp.h>

#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::pmd;
using namespace ipoib::test;

namespace {

constexpr std::uint32_t kSeq = 0x01020304;

// IPv4 (or IPv6) + TCP (20 bytes, ACK|PSH|FIN) + n payload bytes (i * 7).
std::vector<std::uint8_t> tcp_packet(bool v6, std::size_t n) {
    const std::size_t l3 = v6 ? 40 : 20;
    std::vector<std::uint8_t> b(l3 + 20 + n);
    if (v6) {
        auto *ip = reinterpret_cast<rte_ipv6_hdr *>(b.data());
        ip->vtc_flow = rte_cpu_to_be_32(6u << 28);
        ip->payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(20 + n));
        ip->proto = IPPROTO_TCP;
        ip->hop_limits = 64;
        ip->src_addr[15] = 1;
        ip->dst_addr[15] = 2;
    } else {
        auto *ip = reinterpret_cast<rte_ipv4_hdr *>(b.data());
        ip->version_ihl = 0x45;
        ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(b.size() > 0xffff ? 0 : b.size()));
        ip->packet_id = rte_cpu_to_be_16(100);
        ip->time_to_live = 64;
        ip->next_proto_id = IPPROTO_TCP;
        ip->src_addr = rte_cpu_to_be_32(0x0a000001);
        ip->dst_addr = rte_cpu_to_be_32(0x0a000002);
    }
    auto *tcp = reinterpret_cast<rte_tcp_hdr *>(b.data() + l3);
    tcp->src_port = rte_cpu_to_be_16(5000);
    tcp->dst_port = rte_cpu_to_be_16(80);
    tcp->sent_seq = rte_cpu_to_be_32(kSeq);
    tcp->data_off = 5 << 4;
    tcp->tcp_flags = RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG | RTE_TCP_FIN_FLAG | RTE_TCP_CWR_FLAG;
    tcp->rx_win = rte_cpu_to_be_16(1000);
    for (std::size_t i = 0; i < n; ++i)
        b[l3 + 20 + i] = static_cast<std::uint8_t>(i * 7);
    return b;
}

struct Tso {
    TestPort tp;
    std::unique_ptr<TxQueue> q;
    TxBatch b;
    rte_mempool *mp = pool("tso_pool", 1024);
    FakeAh peer_ah{kPeerLid};
    wire::Mac peer_mac{{0x02, 0x02, 0xc9, 0x0a, 0xbc, 0x02}};

    Tso() {
        q.reset(tx_queue_create(&tp.fp, 0, 256));
        Neigh *n = tp.fp.neigh.find_or_add(peer_mac);
        tp.fp.neigh.write(n, [&](Neigh &e) {
            e.state = NeighState::resolved;
            e.dlid = kPeerLid;
            e.qpn = kPeerQpn;
            e.ah = &peer_ah;
        });
    }
    ~Tso() {
        for (auto *m : q->inflight)
            rte_pktmbuf_free(m);
    }
    // An Ethernet frame carrying `l3` in mbufs of `seg` bytes each (0: 2000, a data room's).
    rte_mbuf *frame(const std::vector<std::uint8_t> &l3, bool v6, std::uint16_t mss, std::size_t seg = 0) {
        std::vector<std::uint8_t> f(peer_mac.raw.begin(), peer_mac.raw.end());
        f.insert(f.end(), tp.fp.mac.addr_bytes, tp.fp.mac.addr_bytes + 6);
        f.push_back(v6 ? 0x86 : 0x08);
        f.push_back(v6 ? 0xdd : 0x00);
        f.insert(f.end(), l3.begin(), l3.end());
        rte_mbuf *head = nullptr;
        for (std::size_t off = 0; off < f.size();) {
            const std::size_t n = seg ? std::min(seg, f.size() - off) : std::min<std::size_t>(f.size() - off, 2000);
            rte_mbuf *m = mbuf_with(mp, std::vector<std::uint8_t>(f.begin() + off, f.begin() + off + n));
            if (!head)
                head = m;
            else
                REQUIRE(rte_pktmbuf_chain(head, m) == 0);
            off += n;
        }
        head->ol_flags = RTE_MBUF_F_TX_TCP_SEG | (v6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM);
        head->l2_len = RTE_ETHER_HDR_LEN;
        head->l3_len = v6 ? 40 : 20;
        head->l4_len = 20;
        head->tso_segsz = mss;
        return head;
    }
    TxResult tx(rte_mbuf *m) { return tx_frame(q.get(), b, m, 0, false); }
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

// Every segment a valid TCP packet carrying its slice of `orig`'s payload, in order.
void check_segments(const Tso &t, bool v6, const std::vector<std::uint8_t> &orig, std::uint32_t mss) {
    const std::size_t l3 = v6 ? 40 : 20, payload = orig.size() - l3 - 20;
    const std::size_t nseg = (payload + mss - 1) / mss;
    REQUIRE(t.b.n == static_cast<int>(nseg));
    for (std::size_t k = 0; k < nseg; ++k) {
        INFO("segment " << k);
        const auto msg = t.message(static_cast<int>(k));
        const std::size_t len = std::min<std::size_t>(mss, payload - k * mss);
        REQUIRE(msg.size() == 4 + l3 + 20 + len);
        CHECK(msg[0] == (v6 ? 0x86 : 0x08));
        const std::uint8_t *ipp = msg.data() + 4;
        const auto *tcp = reinterpret_cast<const rte_tcp_hdr *>(ipp + l3);
        if (v6) {
            const auto *ip = reinterpret_cast<const rte_ipv6_hdr *>(ipp);
            CHECK(rte_be_to_cpu_16(ip->payload_len) == 20 + len);
            CHECK(rte_ipv6_udptcp_cksum_verify(ip, tcp) == 0);
        } else {
            const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(ipp);
            CHECK(rte_be_to_cpu_16(ip->total_length) == 20 + 20 + len);
            CHECK(rte_be_to_cpu_16(ip->packet_id) == 100 + k);
            CHECK(rte_raw_cksum(ip, 20) == 0xffff);
            CHECK(rte_ipv4_udptcp_cksum_verify(ip, tcp) == 0);
        }
        CHECK(rte_be_to_cpu_32(tcp->sent_seq) == kSeq + k * mss);
        const bool last = k + 1 == nseg;
        CHECK(((tcp->tcp_flags & RTE_TCP_FIN_FLAG) != 0) == last);
        CHECK(((tcp->tcp_flags & RTE_TCP_PSH_FLAG) != 0) == last);
        CHECK(((tcp->tcp_flags & RTE_TCP_CWR_FLAG) != 0) == (k == 0));
        CHECK((tcp->tcp_flags & RTE_TCP_ACK_FLAG) != 0);
        CHECK(std::equal(msg.begin() + 4 + l3 + 20, msg.end(), orig.begin() + l3 + 20 + k * mss));
    }
}

} // namespace

TEST_CASE("tso: an IPv4 TCP frame of 10000 payload bytes leaves as segments of the MSS") {
    Tso t;
    const auto l3 = tcp_packet(false, 10000);
    rte_mbuf *m = t.frame(l3, false, 1400);
    REQUIRE(t.tx(m) == TxResult::sent);
    check_segments(t, false, l3, 1400);
    CHECK(t.q->st.tso_frames == 1);
    CHECK(t.q->st.tso_segments == 8);
    CHECK(t.q->st.packets == 8);
    // The mbuf goes with the last segment's work request only.
    int holders = 0;
    for (auto *x : t.q->inflight)
        holders += x == m;
    CHECK(holders == 1);
    CHECK(t.q->inflight[static_cast<std::uint32_t>(t.b.wr[7].wr_id)] == m);
}

TEST_CASE("tso: IPv6, and a payload spread over a chain of small mbufs") {
    Tso t;
    const auto l3 = tcp_packet(true, 7000);
    REQUIRE(t.tx(t.frame(l3, true, 1000, 300)) == TxResult::sent);  // 300-byte mbufs: pieces per segment > 7
    check_segments(t, true, l3, 1000);
    Tso u;
    const auto l4 = tcp_packet(false, 5000);
    REQUIRE(u.tx(u.frame(l4, false, 1200, 777)) == TxResult::sent);  // odd piece sizes: sums realigned
    check_segments(u, false, l4, 1200);
}

TEST_CASE("tso: a segment size the MTU cannot carry is made smaller") {
    Tso t;
    const auto l3 = tcp_packet(false, 9000);
    REQUIRE(t.tx(t.frame(l3, false, 9000)) == TxResult::sent);
    check_segments(t, false, l3, 2044 - 40);  // the port's MTU 2044 minus IP and TCP headers
}

TEST_CASE("tso: metadata that does not describe the frame is refused, counted, nothing sent") {
    Tso t;
    const auto l3 = tcp_packet(false, 4000);
    rte_mbuf *m = t.frame(l3, false, 1000);
    m->l4_len = 32;  // the TCP header says 20
    CHECK(t.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    m = t.frame(l3, false, 0);  // no segment size
    CHECK(t.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    m = t.frame(l3, false, 1000);
    m->ol_flags = RTE_MBUF_F_TX_TCP_SEG;  // neither IPv4 nor IPv6
    CHECK(t.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    m = t.frame(tcp_packet(false, 4000), false, 50);  // 80 segments: more than a burst
    CHECK(t.tx(m) == TxResult::dropped);
    rte_pktmbuf_free(m);
    CHECK(t.q->st.tso_bad == 4);
    CHECK(t.b.n == 0);
    CHECK(t.q->free_ids.size() == 256);
}

TEST_CASE("tso: segments that do not fit the rest of the burst leave the frame untaken") {
    Tso t;
    const auto l3 = tcp_packet(false, 60000);  // 43 segments of 1400
    REQUIRE(t.tx(t.frame(l3, false, 1400)) == TxResult::sent);
    REQUIRE(t.b.n == 43);
    rte_mbuf *m = t.frame(l3, false, 1400);
    CHECK(t.tx(m) == TxResult::no_room);  // 43 more do not fit the 64 of a burst
    CHECK(t.b.n == 43);                   // nothing of it added
    rte_pktmbuf_free(m);
}
