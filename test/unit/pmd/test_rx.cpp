// SPDX-License-Identifier: BSD-3-Clause
// The receive step on crafted receive buffers: encapsulation, source MACs,
// learning, ARP translation, multicast destinations, checksum status,
// scatter, native mode, and every drop counted.
#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::pmd;
using namespace ipoib::test;

namespace {

// A receive buffer: the 40-byte GRH area (a GRH with sgid/dgid if given), the IPoIB header, the payload.
struct RxBuf {
    std::vector<std::uint8_t> buf;
    hca::Wc wc{};
    RxBuf(std::uint16_t ethertype, const std::vector<std::uint8_t> &payload, std::uint16_t slid = kPeerLid,
          std::uint32_t src_qp = kPeerQpn, const wire::Gid *sgid = nullptr, const wire::Gid *dgid = nullptr) {
        buf.assign(hca::kGrhLen + 4, 0);
        buf[hca::kGrhLen] = static_cast<std::uint8_t>(ethertype >> 8);
        buf[hca::kGrhLen + 1] = static_cast<std::uint8_t>(ethertype);
        buf.insert(buf.end(), payload.begin(), payload.end());
        wc.status = hca::WcStatus::success;
        wc.opcode = hca::WcOpcode::recv;
        wc.byte_len = static_cast<std::uint32_t>(buf.size());
        wc.slid = slid;
        wc.src_qp = src_qp;
        if (sgid || dgid) {
            wc.wc_flags = hca::kWcGrh;
            buf[0] = 0x60;
            if (sgid)
                std::memcpy(&buf[kGrhSgidOffset], sgid->raw.data(), 16);
            if (dgid)
                std::memcpy(&buf[kGrhDgidOffset], dgid->raw.data(), 16);
        }
    }
};

struct RxFixture {
    TestPort tp;
    std::unique_ptr<RxQueue> q;
    explicit RxFixture(L2Mode l2 = L2Mode::eth, rte_mempool *mp = nullptr, bool scatter = true) : tp(l2) {
        q.reset(rx_queue_create(tp.port.get(), 0, mp ? mp : pool("rx_pool"), scatter));
    }
    rte_mbuf *rx(const RxBuf &b) { return rx_frame(q.get(), b.wc, b.buf.data()); }
};

rte_ether_hdr eth_of(const rte_mbuf *m) {
    rte_ether_hdr h;
    std::memcpy(&h, rte_pktmbuf_mtod(m, const void *), sizeof h);
    return h;
}

wire::Mac mac_of(const rte_ether_addr &a) {
    wire::Mac m;
    std::memcpy(m.raw.data(), a.addr_bytes, 6);
    return m;
}

// An IPoIB ARP request (hardware type 32, 20-byte addresses) from `sender`.
std::vector<std::uint8_t> ib_arp(const wire::HwAddr &sender, std::uint32_t spa, std::uint32_t tpa) {
    std::vector<std::uint8_t> a(8 + 2 * (20 + 4));
    const std::uint8_t head[8] = {0x00, 0x20, 0x08, 0x00, 20, 4, 0x00, 0x01};
    std::memcpy(a.data(), head, 8);
    std::memcpy(a.data() + 8, sender.raw.data(), 20);
    a.resize(28);
    for (int i = 3; i >= 0; --i)
        a.push_back(static_cast<std::uint8_t>(spa >> (8 * i)));
    a.insert(a.end(), 20, 0);
    for (int i = 3; i >= 0; --i)
        a.push_back(static_cast<std::uint8_t>(tpa >> (8 * i)));
    return a;
}

} // namespace

TEST_CASE("rx: an IPv4 frame becomes an Ethernet frame from the sender's LID/QPN MAC") {
    RxFixture f;
    const auto ip = ipv4_udp(0x0a000002, 100);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ip));
    REQUIRE(m);
    const auto h = eth_of(m);
    CHECK(mac_of(h.dst_addr) == mac_of(f.tp.fp.mac));
    CHECK(mac_of(h.src_addr) == lidqpn_mac(kPeerLid, kPeerQpn));
    CHECK(rte_be_to_cpu_16(h.ether_type) == RTE_ETHER_TYPE_IPV4);
    const auto got = bytes_of(m);
    CHECK(std::vector<std::uint8_t>(got.begin() + RTE_ETHER_HDR_LEN, got.end()) == ip);
    CHECK(m->pkt_len == RTE_ETHER_HDR_LEN + ip.size());
    CHECK(m->packet_type == (RTE_PTYPE_L2_ETHER | RTE_PTYPE_L3_IPV4 | RTE_PTYPE_L4_UDP));
    CHECK(m->ol_flags == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
    CHECK(f.q->st.packets == 1);
    CHECK(f.q->st.bytes == m->pkt_len);
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: a bad IPv4 header checksum is flagged, not dropped") {
    RxFixture f;
    auto ip = ipv4_udp(0x0a000002, 10);
    ip[10] ^= 0xff;
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ip));
    REQUIRE(m);
    CHECK(m->ol_flags == RTE_MBUF_F_RX_IP_CKSUM_BAD);
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: a known sender's MAC comes from the receive index") {
    RxFixture f;
    const wire::Mac known{{0x02, 0x02, 0xc9, 0x0a, 0xbc, 0x02}};
    f.tp.fp.neigh.index(kPeerLid, kPeerQpn, known);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 10)));
    REQUIRE(m);
    CHECK(mac_of(eth_of(m).src_addr) == known);
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: drops are counted: own loopback, bad EtherType, short frame, HCA error") {
    RxFixture f;
    CHECK(f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(1, 10), kOurLid, kOurQpn)) == nullptr);
    CHECK(f.q->st.loopback_discard == 1);
    CHECK(f.rx(RxBuf(0x88cc, std::vector<std::uint8_t>(60, 0))) == nullptr);
    CHECK(f.q->st.unsupported_ethertype == 1);
    RxBuf shortb(wire::kEtherTypeIPv4, {});
    shortb.wc.byte_len = hca::kGrhLen + 2;  // half an IPoIB header
    CHECK(f.rx(shortb) == nullptr);
    CHECK(f.q->st.bad_frames == 1);
    RxBuf err(wire::kEtherTypeIPv4, ipv4_udp(1, 10));
    err.wc.status = hca::WcStatus::loc_len_err;
    CHECK(f.rx(err) == nullptr);
    CHECK(f.q->st.errors == 1);
    CHECK(f.q->st.packets == 0);
}

TEST_CASE("rx: an IPoIB ARP becomes an Ethernet ARP and its sender is learned") {
    RxFixture f;
    const wire::HwAddr sender = wire::make_hwaddr(0, kPeerQpn, gid_of(2)).value;
    const wire::Mac sender_mac = wire::mac_from_guid(wire::guid_from_gid(gid_of(2)));
    const wire::Gid bcast = f.tp.fp.bcast_mgid;
    const wire::Gid sgid = gid_of(2);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeArp, ib_arp(sender, 0x0a000002, 0x0a000001), kPeerLid, kPeerQpn,
                             &sgid, &bcast));
    REQUIRE(m);
    CHECK(f.q->st.arp_translated == 1);
    const auto h = eth_of(m);
    CHECK(mac_of(h.dst_addr) == wire::Mac{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}});  // the broadcast group
    CHECK(mac_of(h.src_addr) == sender_mac);
    CHECK(rte_be_to_cpu_16(h.ether_type) == RTE_ETHER_TYPE_ARP);
    const auto b = bytes_of(m);
    REQUIRE(b.size() == RTE_ETHER_HDR_LEN + 28u);
    const std::uint8_t *arp = b.data() + RTE_ETHER_HDR_LEN;
    CHECK(arp[1] == 1);  // hardware type Ethernet
    CHECK(arp[4] == 6);
    CHECK(std::memcmp(arp + 8, sender_mac.raw.data(), 6) == 0);
    CHECK(m->packet_type == RTE_PTYPE_L2_ETHER_ARP);
    rte_pktmbuf_free(m);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].kind == RequestKind::learn);
    CHECK(reqs[0].lid == kPeerLid);
    CHECK(reqs[0].qpn == kPeerQpn);
    CHECK(std::memcmp(reqs[0].mac, sender_mac.raw.data(), 6) == 0);
    CHECK(std::memcmp(reqs[0].gid, gid_of(2).raw.data(), 16) == 0);
}

TEST_CASE("rx: an ARP whose sender claims a GID other than its GRH's source is not learned") {
    RxFixture f;
    const wire::HwAddr claimed = wire::make_hwaddr(0, kPeerQpn, gid_of(7)).value;  // someone else's GID
    const wire::Gid real = gid_of(2), bcast = f.tp.fp.bcast_mgid;
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeArp, ib_arp(claimed, 0x0a000002, 0x0a000001), kPeerLid, kPeerQpn,
                             &real, &bcast));
    REQUIRE(m);  // still delivered: the stack may decide; the driver does not bind the MAC
    rte_pktmbuf_free(m);
    CHECK(f.q->st.learn_refused == 1);
    CHECK(f.tp.requests().empty());
}

TEST_CASE("rx: a second endpoint on the same port GID is known by its LID and QPN, not the GID's MAC") {
    RxFixture f;
    const wire::Mac guid_mac = wire::mac_from_guid(wire::guid_from_gid(gid_of(2)));
    Neigh *n = f.tp.fp.neigh.find_or_add(guid_mac);  // the first endpoint: QPN 0x49 on gid_of(2)
    f.tp.fp.neigh.write(n, [&](Neigh &e) {
        e.state = NeighState::resolved;
        e.qpn = kPeerQpn;
        e.gid = gid_of(2);
    });
    constexpr std::uint32_t kOtherQpn = 0x77;  // e.g. the kernel's ipoib on the same port
    const wire::HwAddr other = wire::make_hwaddr(0, kOtherQpn, gid_of(2)).value;
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeArp, ib_arp(other, 0x0a000003, 0x0a000001), kPeerLid, kOtherQpn));
    REQUIRE(m);
    CHECK(mac_of(eth_of(m).src_addr) == lidqpn_mac(kPeerLid, kOtherQpn));
    const auto b = bytes_of(m);
    CHECK(std::memcmp(b.data() + RTE_ETHER_HDR_LEN + 8, lidqpn_mac(kPeerLid, kOtherQpn).raw.data(), 6) == 0);
    rte_pktmbuf_free(m);
    const auto reqs = f.tp.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(std::memcmp(reqs[0].mac, lidqpn_mac(kPeerLid, kOtherQpn).raw.data(), 6) == 0);
    CHECK(reqs[0].qpn == kOtherQpn);
}

TEST_CASE("rx: a frame to an IPv4 group gets the group's multicast MAC") {
    RxFixture f;
    const wire::Gid mgid = wire::ipv4_mcast_mgid(wire::Bytes(std::array<std::uint8_t, 4>{224, 1, 2, 3}.data(), 4),
                                                 f.tp.fp.bcast_mgid)
                               .value;
    const wire::Gid sgid = gid_of(2);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(0xe0010203, 10), kPeerLid, kPeerQpn, &sgid, &mgid));
    REQUIRE(m);
    CHECK(mac_of(eth_of(m).dst_addr) == wire::Mac{{0x01, 0x00, 0x5e, 0x01, 0x02, 0x03}});
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: a frame larger than one mbuf is chained") {
    RxFixture f(L2Mode::eth, pool("rx_small", 256, 512));
    const auto ip = ipv4_udp(0x0a000002, 1400);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ip));
    REQUIRE(m);
    CHECK(m->nb_segs == 3);
    CHECK(m->pkt_len == RTE_ETHER_HDR_LEN + ip.size());
    const auto got = bytes_of(m);
    CHECK(std::vector<std::uint8_t>(got.begin() + RTE_ETHER_HDR_LEN, got.end()) == ip);
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: without scatter a frame longer than one mbuf is dropped and counted, not chained") {
    RxFixture f(L2Mode::eth, pool("rx_small", 256, 512), false);
    CHECK(f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 1400))) == nullptr);
    CHECK(f.q->st.too_long == 1);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(0x0a000002, 400)));  // fits: delivered
    REQUIRE(m);
    CHECK(m->nb_segs == 1);
    rte_pktmbuf_free(m);
}

TEST_CASE("rx: no mbuf for the frame is counted") {
    rte_mempool *mp = pool("rx_tiny", 64, 512);
    RxFixture f(L2Mode::eth, mp);
    std::vector<rte_mbuf *> all;
    while (rte_mbuf *m = rte_pktmbuf_alloc(mp))
        all.push_back(m);
    CHECK(f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(1, 10))) == nullptr);
    CHECK(f.q->st.nombuf == 1);
    rte_pktmbuf_free(all.back());  // one mbuf, but the frame needs three: the chain fails and is freed
    all.pop_back();
    CHECK(f.rx(RxBuf(wire::kEtherTypeIPv4, ipv4_udp(1, 1400))) == nullptr);
    CHECK(f.q->st.nombuf == 2);
    CHECK(rte_mempool_avail_count(mp) == 1);  // nothing leaked
    for (rte_mbuf *m : all)
        rte_pktmbuf_free(m);
}

TEST_CASE("rx: native mode keeps the IPoIB frame and puts the sender in the dynamic field") {
    RxFixture f(L2Mode::ipoib);
    const wire::Gid sgid = gid_of(2);
    const auto ip = ipv4_udp(0x0a000002, 20);
    rte_mbuf *m = f.rx(RxBuf(wire::kEtherTypeIPv4, ip, kPeerLid, kPeerQpn, &sgid));
    REQUIRE(m);
    const auto b = bytes_of(m);
    REQUIRE(b.size() == 4 + ip.size());
    CHECK(b[0] == 0x08);
    CHECK(b[1] == 0x00);
    CHECK(std::vector<std::uint8_t>(b.begin() + 4, b.end()) == ip);
    const auto *a = rte_pmd_ipoib_addr(m, f.tp.fp.dynfield);
    const wire::HwAddr hw = wire::parse_hwaddr(wire::Bytes(a->hwaddr, 20)).value;
    CHECK(hw.qpn() == kPeerQpn);
    CHECK(hw.gid() == sgid);
    CHECK(a->lid == kPeerLid);
    CHECK(m->packet_type == (RTE_PTYPE_L3_IPV4 | RTE_PTYPE_L4_UDP));
    rte_pktmbuf_free(m);
}
