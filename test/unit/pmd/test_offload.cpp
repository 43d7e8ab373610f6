// SPDX-License-Identifier: BSD-3-Clause
// Checksum offloads and packet types (ipoib_offload.hpp): the verdicts DPDK
// defines on receive, checksums filled over chained mbufs on transmit, and
// frames whose offload metadata does not describe them refused untouched.
// Expected checksums come from DPDK's own rte_ipv4/ipv6_udptcp_cksum over
// contiguous copies.
#include <rte_ip.h>
#include <rte_mbuf.h>

#include <cstring>

#include "ipoib_offload.hpp"
#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::pmd;
using namespace ipoib::test;

namespace {

constexpr std::uint8_t kProtoTcp = IPPROTO_TCP, kProtoUdp = IPPROTO_UDP;

// An IPv4 packet (header of ihl*4 bytes) carrying TCP or UDP with n payload
// bytes, every checksum right.
std::vector<std::uint8_t> ipv4(std::uint8_t proto, std::size_t n, unsigned ihl = 5) {
    const std::size_t l4h = proto == kProtoTcp ? 20 : 8, hl = ihl * 4u;
    std::vector<std::uint8_t> b(hl + l4h + n, 0);
    auto *ip = reinterpret_cast<rte_ipv4_hdr *>(b.data());
    ip->version_ihl = static_cast<std::uint8_t>(0x40 | ihl);
    ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(b.size()));
    ip->time_to_live = 64;
    ip->next_proto_id = proto;
    ip->src_addr = rte_cpu_to_be_32(0x0a000001);
    ip->dst_addr = rte_cpu_to_be_32(0x0a000002);
    for (std::size_t i = 20; i < hl; ++i)
        b[i] = 1;  // NOP options
    std::uint8_t *l4 = b.data() + hl;
    l4[1] = 7, l4[3] = 9;
    if (proto == kProtoTcp)
        l4[12] = 0x50;
    else
        l4[4] = static_cast<std::uint8_t>((8 + n) >> 8), l4[5] = static_cast<std::uint8_t>(8 + n);
    for (std::size_t i = 0; i < n; ++i)
        l4[l4h + i] = static_cast<std::uint8_t>(i * 7 + 3);
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    const std::uint16_t c = rte_ipv4_udptcp_cksum(ip, l4);
    std::memcpy(l4 + (proto == kProtoTcp ? 16 : 6), &c, 2);
    return b;
}

// An IPv6 packet with UDP, optionally behind a hop-by-hop options header.
std::vector<std::uint8_t> ipv6_udp(std::size_t n, bool hop_by_hop = false) {
    const std::size_t ext = hop_by_hop ? 8 : 0;
    std::vector<std::uint8_t> b(40 + ext + 8 + n, 0);
    auto *ip = reinterpret_cast<rte_ipv6_hdr *>(b.data());
    ip->vtc_flow = rte_cpu_to_be_32(0x60000000);
    ip->payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(ext + 8 + n));
    ip->proto = hop_by_hop ? 0 : kProtoUdp;
    ip->hop_limits = 64;
    ip->src_addr[0] = 0xfe, ip->src_addr[1] = 0x80, ip->src_addr[15] = 1;
    ip->dst_addr[0] = 0xfe, ip->dst_addr[1] = 0x80, ip->dst_addr[15] = 2;
    if (hop_by_hop) {
        b[40] = kProtoUdp;  // next header; length 0 (8 bytes); PadN fills it
        b[42] = 1, b[43] = 4;
    }
    std::uint8_t *l4 = b.data() + 40 + ext;
    l4[1] = 7, l4[3] = 9;
    l4[4] = static_cast<std::uint8_t>((8 + n) >> 8), l4[5] = static_cast<std::uint8_t>(8 + n);
    for (std::size_t i = 0; i < n; ++i)
        l4[8 + i] = static_cast<std::uint8_t>(i * 5 + 1);
    rte_ipv6_hdr h = *ip;  // DPDK's function reads proto and length from the header it is given
    h.proto = kProtoUdp;
    h.payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(8 + n));
    std::vector<std::uint8_t> flat(sizeof h + 8 + n);
    std::memcpy(flat.data(), &h, sizeof h);
    std::memcpy(flat.data() + sizeof h, l4, 8 + n);
    const std::uint16_t c =
        rte_ipv6_udptcp_cksum(reinterpret_cast<const rte_ipv6_hdr *>(flat.data()), flat.data() + sizeof h);
    std::memcpy(l4 + 6, &c, 2);
    return b;
}

std::uint64_t l4_verdict(const std::vector<std::uint8_t> &p, std::uint16_t et) {
    return rx_cksum_flags(p.data(), static_cast<std::uint32_t>(p.size()), et, true) & RTE_MBUF_F_RX_L4_CKSUM_MASK;
}

// An Ethernet frame split into a chain whose segments hold `cuts` bytes each (the last the rest).
rte_mbuf *chain(rte_mempool *mp, const std::vector<std::uint8_t> &frame, std::initializer_list<std::size_t> cuts) {
    rte_mbuf *head = nullptr;
    std::size_t off = 0;
    auto piece = [&](std::size_t n) {
        rte_mbuf *s = mbuf_with(mp, std::vector<std::uint8_t>(frame.begin() + off, frame.begin() + off + n));
        off += n;
        if (!head)
            head = s;
        else
            REQUIRE(rte_pktmbuf_chain(head, s) == 0);
    };
    for (std::size_t c : cuts)
        if (off + c < frame.size())
            piece(c);
    piece(frame.size() - off);
    return head;
}

std::vector<std::uint8_t> eth(const std::vector<std::uint8_t> &l3, std::uint16_t et) {
    std::vector<std::uint8_t> f(12, 0x02);
    f.push_back(static_cast<std::uint8_t>(et >> 8));
    f.push_back(static_cast<std::uint8_t>(et));
    f.insert(f.end(), l3.begin(), l3.end());
    return f;
}

std::vector<std::uint8_t> flat(const rte_mbuf *m) {
    std::vector<std::uint8_t> v(m->pkt_len);
    const void *p = rte_pktmbuf_read(m, 0, m->pkt_len, v.data());
    if (p != v.data())
        std::memcpy(v.data(), p, m->pkt_len);
    return v;
}

} // namespace

TEST_CASE("offload: packet types: IPv4 options, IPv6 extension headers, fragments") {
    const auto plain = ipv4(kProtoTcp, 10), opts = ipv4(kProtoUdp, 10, 7);
    CHECK(parse_l3(plain.data(), plain.size(), wire::kEtherTypeIPv4).ptype == (RTE_PTYPE_L3_IPV4 | RTE_PTYPE_L4_TCP));
    CHECK(parse_l3(opts.data(), opts.size(), wire::kEtherTypeIPv4).ptype == (RTE_PTYPE_L3_IPV4_EXT | RTE_PTYPE_L4_UDP));
    auto frag = ipv4(kProtoUdp, 10);
    frag[6] = 0x20;  // more fragments
    frag[10] = frag[11] = 0;
    CHECK(parse_l3(frag.data(), frag.size(), wire::kEtherTypeIPv4).ptype == (RTE_PTYPE_L3_IPV4 | RTE_PTYPE_L4_FRAG));
    const auto v6 = ipv6_udp(10), v6ext = ipv6_udp(10, true);
    CHECK(parse_l3(v6.data(), v6.size(), wire::kEtherTypeIPv6).ptype == (RTE_PTYPE_L3_IPV6 | RTE_PTYPE_L4_UDP));
    const L3Info e = parse_l3(v6ext.data(), v6ext.size(), wire::kEtherTypeIPv6);
    CHECK(e.ptype == (RTE_PTYPE_L3_IPV6_EXT | RTE_PTYPE_L4_UDP));
    CHECK(e.l4off == 48);
    auto v6frag = ipv6_udp(10);
    v6frag[6] = 44;  // a fragment header first
    CHECK(parse_l3(v6frag.data(), v6frag.size(), wire::kEtherTypeIPv6).ptype ==
          (RTE_PTYPE_L3_IPV6_EXT | RTE_PTYPE_L4_FRAG));
    // An extension header running past the packet: no L4 claimed.
    auto cut = ipv6_udp(0, true);
    cut.resize(44);
    CHECK(parse_l3(cut.data(), cut.size(), wire::kEtherTypeIPv6).ptype == RTE_PTYPE_L3_IPV6_EXT);
    // What l3fwd's EM and LPM modes look for is advertised.
    for (std::uint32_t want : {RTE_PTYPE_L3_IPV4, RTE_PTYPE_L3_IPV4_EXT, RTE_PTYPE_L3_IPV6, RTE_PTYPE_L3_IPV6_EXT,
                               RTE_PTYPE_L4_TCP, RTE_PTYPE_L4_UDP, RTE_PTYPE_L4_FRAG})
        CHECK(std::find(std::begin(kSupportedPtypes), std::end(kSupportedPtypes), want) != std::end(kSupportedPtypes));
}

TEST_CASE("offload: RX checksum verdicts as DPDK defines them") {
    for (std::uint8_t proto : {kProtoTcp, kProtoUdp}) {
        auto p = ipv4(proto, 33);
        INFO("proto " << int(proto));
        CHECK(rx_cksum_flags(p.data(), p.size(), wire::kEtherTypeIPv4, true) ==
              (RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD));
        CHECK(rx_cksum_flags(p.data(), p.size(), wire::kEtherTypeIPv4, false) == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
        // A queue that did not enable IPV4_CKSUM gets no IP verdict (and pays nothing without L4 either).
        CHECK(rx_cksum_flags(p.data(), p.size(), wire::kEtherTypeIPv4, true, false) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
        CHECK(rx_cksum_flags(p.data(), p.size(), wire::kEtherTypeIPv4, false, false) == 0);
        p.back() ^= 0x40;  // payload corrupted
        CHECK(l4_verdict(p, wire::kEtherTypeIPv4) == RTE_MBUF_F_RX_L4_CKSUM_BAD);
        p = ipv4(proto, 33, 6);  // with options: the L4 header is further in
        CHECK(l4_verdict(p, wire::kEtherTypeIPv4) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
    }
    auto nocsum = ipv4(kProtoUdp, 5);
    nocsum[26] = nocsum[27] = 0;  // UDP/IPv4 without a checksum
    CHECK(l4_verdict(nocsum, wire::kEtherTypeIPv4) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
    auto frag = ipv4(kProtoUdp, 5);
    frag[6] = 0x20;
    frag[10] = frag[11] = 0;
    const auto *fh = reinterpret_cast<rte_ipv4_hdr *>(frag.data());
    const std::uint16_t fc = rte_ipv4_cksum(fh);
    std::memcpy(&frag[10], &fc, 2);
    CHECK(rx_cksum_flags(frag.data(), frag.size(), wire::kEtherTypeIPv4, true) == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
    auto lying = ipv4(kProtoTcp, 5);
    lying[3] = static_cast<std::uint8_t>(lying.size() + 10);  // total length beyond the frame
    lying[10] = lying[11] = 0;
    const std::uint16_t lc = rte_ipv4_cksum(reinterpret_cast<rte_ipv4_hdr *>(lying.data()));
    std::memcpy(&lying[10], &lc, 2);
    CHECK(l4_verdict(lying, wire::kEtherTypeIPv4) == RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN);
    auto badip = ipv4(kProtoUdp, 5);
    badip[8] ^= 1;  // TTL changed: the header checksum is wrong
    CHECK(rx_cksum_flags(badip.data(), badip.size(), wire::kEtherTypeIPv4, true) == RTE_MBUF_F_RX_IP_CKSUM_BAD);

    auto v6 = ipv6_udp(21), v6ext = ipv6_udp(21, true);
    CHECK(rx_cksum_flags(v6.data(), v6.size(), wire::kEtherTypeIPv6, true) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
    CHECK(l4_verdict(v6ext, wire::kEtherTypeIPv6) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
    v6ext[60] ^= 1;
    CHECK(l4_verdict(v6ext, wire::kEtherTypeIPv6) == RTE_MBUF_F_RX_L4_CKSUM_BAD);
    v6[46] = v6[47] = 0;  // UDP/IPv6 must carry a checksum
    CHECK(l4_verdict(v6, wire::kEtherTypeIPv6) == RTE_MBUF_F_RX_L4_CKSUM_BAD);
}

TEST_CASE("offload: TX checksums over a chain whose payload spans segments") {
    rte_mempool *mp = pool("offload_tx");
    const unsigned avail = rte_mempool_avail_count(mp);
    for (std::uint8_t proto : {kProtoTcp, kProtoUdp}) {
        const auto want = eth(ipv4(proto, 300), wire::kEtherTypeIPv4);
        auto zeroed = want;
        const std::size_t ck = 14 + 20 + (proto == kProtoTcp ? 16 : 6);
        zeroed[14 + 10] = zeroed[14 + 11] = zeroed[ck] = zeroed[ck + 1] = 0;
        rte_mbuf *m = chain(mp, zeroed, {64, 100, 7});  // headers in the first segment, payload in four
        m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM |
                      (proto == kProtoTcp ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM);
        m->l2_len = 14;
        m->l3_len = 20;
        REQUIRE(m->nb_segs == 4);
        REQUIRE(tx_cksum(m));
        const auto got = flat(m);
        for (std::size_t i = 0; i < got.size(); ++i)
            if (got[i] != want[i])
                FAIL_CHECK("byte " << i << ": " << int(got[i]) << " != " << int(want[i]));
        CHECK(got == want);
        rte_pktmbuf_free(m);
    }
    const auto want6 = eth(ipv6_udp(500, true), wire::kEtherTypeIPv6);
    auto zeroed6 = want6;
    zeroed6[14 + 48 + 6] = zeroed6[14 + 48 + 7] = 0;
    rte_mbuf *m = chain(mp, zeroed6, {70, 200});
    m->ol_flags = RTE_MBUF_F_TX_IPV6 | RTE_MBUF_F_TX_UDP_CKSUM;
    m->l2_len = 14;
    m->l3_len = 48;  // the IPv6 header and its hop-by-hop header
    REQUIRE(tx_cksum(m));
    CHECK(flat(m) == want6);
    rte_pktmbuf_free(m);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

TEST_CASE("offload: TX refuses offload metadata that does not describe the frame, writing nothing") {
    rte_mempool *mp = pool("offload_bad");
    const auto frame = eth(ipv4(kProtoUdp, 40), wire::kEtherTypeIPv4);
    struct Case {
        const char *what;
        std::uint64_t flags;
        std::uint8_t l2, l3;
        std::size_t first;  // bytes in the first segment
    } cases[] = {
        {"l2_len unset", RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM, 0, 20, 200},
        {"l3_len unset", RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM, 14, 0, 200},
        {"l3_len not the header's", RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM, 14, 24, 200},
        {"neither IPv4 nor IPv6", RTE_MBUF_F_TX_UDP_CKSUM, 14, 20, 200},
        {"IP checksum of IPv6", RTE_MBUF_F_TX_IPV6 | RTE_MBUF_F_TX_IP_CKSUM, 14, 40, 200},
        {"SCTP", RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_SCTP_CKSUM, 14, 20, 200},
        {"UDP header split across segments", RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM, 14, 20, 38},
    };
    for (const Case &c : cases) {
        INFO(c.what);
        rte_mbuf *m = chain(mp, frame, {c.first});
        m->ol_flags = c.flags;
        m->l2_len = c.l2;
        m->l3_len = c.l3;
        CHECK_FALSE(tx_cksum(m));
        CHECK(flat(m) == frame);
        rte_pktmbuf_free(m);
    }
    rte_mbuf *none = mbuf_with(mp, frame);  // nothing asked: nothing to check
    CHECK(tx_cksum(none));
    rte_pktmbuf_free(none);
}

// Native mode (l2=ipoib): the frame's own header is IPoIB's 4 bytes.
TEST_CASE("offload: TX checksums of a native-mode frame (l2_len 4)") {
    rte_mempool *mp = pool("offload_native");
    std::vector<std::uint8_t> want{0x08, 0x00, 0, 0};
    const auto ip = ipv4(kProtoUdp, 90);
    want.insert(want.end(), ip.begin(), ip.end());
    auto zeroed = want;
    zeroed[4 + 10] = zeroed[4 + 11] = zeroed[4 + 26] = zeroed[4 + 27] = 0;
    rte_mbuf *m = chain(mp, zeroed, {40});
    m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
    m->l2_len = 4;
    m->l3_len = 20;
    CHECK_FALSE(tx_cksum(m));  // taken as an Ethernet frame: l2_len 4 describes none
    REQUIRE(tx_cksum(m, 4));
    CHECK(flat(m) == want);
    rte_pktmbuf_free(m);
}

TEST_CASE("offload: RX verdicts over a chain (connected mode), odd cuts, and NONE for what the sender skipped") {
    rte_mempool *mp = pool("offload_rxc");
    const unsigned avail = rte_mempool_avail_count(mp);
    const std::uint64_t ipm = RTE_MBUF_F_RX_IP_CKSUM_MASK, l4m = RTE_MBUF_F_RX_L4_CKSUM_MASK;
    for (std::uint8_t proto : {kProtoTcp, kProtoUdp}) {
        const auto good = eth(ipv4(proto, 3001), wire::kEtherTypeIPv4);
        rte_mbuf *m = chain(mp, good, {61, 1001, 333});  // odd-length segments: halves of words swap
        REQUIRE(m->nb_segs == 4);
        std::uint64_t f = rx_cksum_flags_chain(m, 14, wire::kEtherTypeIPv4, true, true, false, false);
        CHECK((f & ipm) == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
        CHECK((f & l4m) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
        f = rx_cksum_flags_chain(m, 14, wire::kEtherTypeIPv4, true, true, true, true);
        CHECK((f & ipm) == RTE_MBUF_F_RX_IP_CKSUM_NONE);
        CHECK((f & l4m) == RTE_MBUF_F_RX_L4_CKSUM_NONE);
        CHECK(rx_cksum_flags_chain(m, 14, wire::kEtherTypeIPv4, false, false, true, true) == 0);
        rte_pktmbuf_free(m);
        auto bad = good;
        bad[good.size() - 5] ^= 0x40;  // a payload byte in the last segment
        m = chain(mp, bad, {61, 1001, 333});
        f = rx_cksum_flags_chain(m, 14, wire::kEtherTypeIPv4, true, true, false, false);
        CHECK((f & ipm) == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
        CHECK((f & l4m) == RTE_MBUF_F_RX_L4_CKSUM_BAD);
        rte_pktmbuf_free(m);
        // A sender that skipped both (zeros in the fields): filled in for a queue that takes no NONE.
        auto zeroed = good;
        const std::size_t ck = 14 + 20 + (proto == kProtoTcp ? 16 : 6);
        zeroed[14 + 10] = zeroed[14 + 11] = zeroed[ck] = zeroed[ck + 1] = 0;
        m = chain(mp, zeroed, {61, 1001, 333});
        rx_cksum_fill_chain(m, 14, wire::kEtherTypeIPv4, true, true);
        CHECK(flat(m) == good);
        CHECK((m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK) == 0);
        rte_pktmbuf_free(m);
    }
    const auto good6 = eth(ipv6_udp(2500, true), wire::kEtherTypeIPv6);
    rte_mbuf *m = chain(mp, good6, {71, 999});
    std::uint64_t f = rx_cksum_flags_chain(m, 14, wire::kEtherTypeIPv6, true, true, false, false);
    CHECK((f & l4m) == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
    CHECK((f & ipm) == 0);  // IPv6 has no header checksum
    rte_pktmbuf_free(m);
    auto zeroed6 = good6;
    zeroed6[14 + 48 + 6] = zeroed6[14 + 48 + 7] = 0;
    m = chain(mp, zeroed6, {71, 999});
    rx_cksum_fill_chain(m, 14, wire::kEtherTypeIPv6, false, true);
    CHECK(flat(m) == good6);
    rte_pktmbuf_free(m);
    CHECK(rte_mempool_avail_count(mp) == avail);
}
