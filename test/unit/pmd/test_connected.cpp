// SPDX-License-Identifier: BSD-3-Clause
// Connected mode (RFC 4755) between net_ipoib ports in one process over the
// in-process HCA's reliable connections: each port on a device of its own,
// neighbours learned by ARP (whose 20-byte addresses carry the RC flag of a
// connected port) or given by the neigh devarg. 64 KB frames in chains of
// 2 KB mbufs over connections set up on first use; a datagram peer (UD,
// ICMP "fragmentation needed", IPv4 fragments); "IB CRC as checksum"; a REQ
// rejected (fallback to datagrams); a peer stopped while connected (DREQ,
// reconnect, fallback); every mbuf back in its pool.
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_udp.h>

#include <chrono>
#include <functional>
#include <thread>

#include "inproc/inproc_testing.hpp"
#include "ipoib/hca/rc.hpp"
#include "ipoib_port.hpp"
#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::test;

namespace {

struct EthPort {
    std::uint16_t id = RTE_MAX_ETHPORTS;
    std::string name;
};

constexpr std::uint32_t kCmMtu = 65520;      // a connected-mode port's MTU
constexpr std::uint32_t kUdMtu = 2044;       // the in-process HCA's 2048-byte MTU less the IPoIB header
constexpr std::uint16_t kSegRoom = 2048;     // the mbufs' data room: "2 KB mbufs"
constexpr std::uint64_t kScatter = RTE_ETH_RX_OFFLOAD_SCATTER;
constexpr std::uint64_t kRxCksum = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;

EthPort probe(const std::string &name, const std::string &args) {
    ensure_eal();
    INFO(name << "," << args);
    REQUIRE(rte_vdev_init(name.c_str(), args.c_str()) == 0);
    EthPort p;
    p.name = name;
    REQUIRE(rte_eth_dev_get_port_by_name(name.c_str(), &p.id) == 0);
    return p;
}

bool link_up(std::uint16_t port, int ms) {
    for (int i = 0; i < ms; i += 5) {
        rte_eth_link l{};
        rte_eth_link_get_nowait(port, &l);
        if (l.link_status == RTE_ETH_LINK_UP)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
}

// Probed, configured (MTU: the port's largest; RX offloads as given), started, link up.
EthPort up(const std::string &name, const std::string &args, rte_mempool *mp, std::uint64_t rx_offloads = kScatter) {
    const EthPort p = probe(name, args);
    rte_eth_dev_info info{};
    REQUIRE(rte_eth_dev_info_get(p.id, &info) == 0);
    rte_eth_conf conf{};
    conf.rxmode.mtu = info.max_mtu;
    conf.rxmode.offloads = rx_offloads;
    REQUIRE(rte_eth_dev_configure(p.id, 1, 1, &conf) == 0);
    REQUIRE(rte_eth_rx_queue_setup(p.id, 0, 256, SOCKET_ID_ANY, nullptr, mp) == 0);
    REQUIRE(rte_eth_tx_queue_setup(p.id, 0, 256, SOCKET_ID_ANY, nullptr) == 0);
    REQUIRE(rte_eth_dev_start(p.id) == 0);
    REQUIRE(link_up(p.id, 3000));
    return p;
}

void close(const EthPort &p) {
    rte_eth_dev_stop(p.id);
    REQUIRE(rte_eth_dev_close(p.id) == 0);
    REQUIRE(rte_vdev_uninit(p.name.c_str()) == 0);
}

rte_ether_addr mac_of(std::uint16_t port) {
    rte_ether_addr m{};
    rte_eth_macaddr_get(port, &m);
    return m;
}

std::uint64_t xstat(std::uint16_t port, const char *name) {
    std::uint64_t id = 0, v = 0;
    INFO(name);
    REQUIRE(rte_eth_xstats_get_id_by_name(port, name, &id) == 0);
    REQUIRE(rte_eth_xstats_get_by_id(port, &id, &v, 1) == 1);
    return v;
}

// Wait until a counter reaches want (the control thread moves it); its last value.
std::uint64_t xstat_reaches(std::uint16_t port, const char *name, std::uint64_t want, int ms = 2000) {
    std::uint64_t v = 0;
    for (int i = 0; i < ms && (v = xstat(port, name)) < want; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return v;
}

std::vector<std::uint8_t> eth_frame(const rte_ether_addr &dst, const rte_ether_addr &src, std::uint16_t type,
                                    const std::vector<std::uint8_t> &l3) {
    std::vector<std::uint8_t> f(dst.addr_bytes, dst.addr_bytes + 6);
    f.insert(f.end(), src.addr_bytes, src.addr_bytes + 6);
    f.push_back(static_cast<std::uint8_t>(type >> 8));
    f.push_back(static_cast<std::uint8_t>(type));
    f.insert(f.end(), l3.begin(), l3.end());
    return f;
}

// `data` in a chain of mbufs of up to kSegRoom bytes each.
rte_mbuf *chain_with(rte_mempool *mp, const std::vector<std::uint8_t> &data) {
    rte_mbuf *head = nullptr;
    for (std::size_t off = 0; off < data.size(); off += kSegRoom) {
        const auto n = static_cast<std::uint16_t>(std::min<std::size_t>(kSegRoom, data.size() - off));
        rte_mbuf *s = rte_pktmbuf_alloc(mp);
        REQUIRE(s);
        REQUIRE(rte_pktmbuf_tailroom(s) >= n);
        std::memcpy(rte_pktmbuf_append(s, n), data.data() + off, n);
        if (!head)
            head = s;
        else
            REQUIRE(rte_pktmbuf_chain(head, s) == 0);
    }
    return head;
}

// An IPv4/UDP packet of `total` bytes from 10.0.0.<src> to 10.0.0.<dst>
// (header checksum valid, UDP checksum 0, payload a pattern that changes
// from one 2 KB stretch to the next); DF set if asked.
std::vector<std::uint8_t> ipv4(std::uint8_t src, std::uint8_t dst, std::size_t total, bool df = false,
                               std::uint8_t seed = 0) {
    auto b = ipv4_udp(0x0a000000u | dst, total - 28);
    auto *ip = reinterpret_cast<rte_ipv4_hdr *>(b.data());
    ip->src_addr = rte_cpu_to_be_32(0x0a000000u | src);
    ip->fragment_offset = rte_cpu_to_be_16(df ? RTE_IPV4_HDR_DF_FLAG : 0);
    ip->packet_id = rte_cpu_to_be_16(0x1234);
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    for (std::size_t i = 28; i < b.size(); ++i)
        b[i] = static_cast<std::uint8_t>(seed + i * 13 + (i >> 11));
    return b;
}

// The Internet checksum (RFC 1071) of bytes, computed here, folded, not inverted.
std::uint32_t ones_sum(const std::uint8_t *p, std::size_t n, std::uint32_t sum = 0) {
    for (std::size_t i = 0; i + 1 < n; i += 2)
        sum += std::uint32_t{p[i]} << 8 | p[i + 1];
    if (n & 1)
        sum += std::uint32_t{p[n - 1]} << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}
bool ipv4_header_ok(const std::uint8_t *ip) { return ones_sum(ip, (ip[0] & 0xf) * 4u) == 0xffff; }
// A UDP checksum over the pseudo-header and the datagram (0 = none is not "ok" here).
bool udp_cksum_ok(const std::uint8_t *ip) {
    const std::uint32_t ihl = (ip[0] & 0xf) * 4u, len = (std::uint32_t{ip[2]} << 8 | ip[3]) - ihl;
    const std::uint8_t *udp = ip + ihl;
    if (udp[6] == 0 && udp[7] == 0)
        return false;
    std::uint8_t ph[12];
    std::memcpy(ph, ip + 12, 8);
    ph[8] = 0;
    ph[9] = IPPROTO_UDP;
    ph[10] = static_cast<std::uint8_t>(len >> 8);
    ph[11] = static_cast<std::uint8_t>(len);
    return ones_sum(udp, len, ones_sum(ph, 12)) == 0xffff;
}

// An Ethernet ARP request, broadcast: who has 10.0.0.<target>, tell 10.0.0.<ip> at mac.
std::vector<std::uint8_t> arp_request(const rte_ether_addr &mac, std::uint8_t ip, std::uint8_t target) {
    std::vector<std::uint8_t> a{0, 1, 8, 0, 6, 4, 0, 1};
    a.insert(a.end(), mac.addr_bytes, mac.addr_bytes + 6);
    a.insert(a.end(), {10, 0, 0, ip, 0, 0, 0, 0, 0, 0, 10, 0, 0, target});
    const rte_ether_addr bcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    return eth_frame(bcast, mac, RTE_ETHER_TYPE_ARP, a);
}

// Send `m` from `from`, then poll `to` until a frame `want` accepts arrives
// (others are freed), polling `from` too (held frames leave from its
// rx_burst; what arrives there is freed) and calling `also` each round.
rte_mbuf *send_and_wait(std::uint16_t from, std::uint16_t to, rte_mbuf *m,
                        const std::function<bool(const rte_mbuf *)> &want, int ms = 3000,
                        const std::function<void()> &also = {}) {
    if (m)
        REQUIRE(rte_eth_tx_burst(from, 0, &m, 1) == 1);
    rte_mbuf *got = nullptr;
    for (int i = 0; i < ms && !got; ++i) {
        rte_mbuf *burst[16];
        const std::uint16_t n = rte_eth_rx_burst(to, 0, burst, 16);
        for (std::uint16_t k = 0; k < n; ++k) {
            if (!got && want(burst[k]))
                got = burst[k];
            else
                rte_pktmbuf_free(burst[k]);
        }
        if (from != to) {
            const std::uint16_t nf = rte_eth_rx_burst(from, 0, burst, 16);
            rte_pktmbuf_free_bulk(burst, nf);
        }
        if (also)
            also();
        if (!got)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return got;
}

// Poll `to` until n frames `want` accepts arrived (others freed; `from`'s
// held frames served meanwhile); those frames, in order of arrival.
std::vector<rte_mbuf *> collect(std::uint16_t from, std::uint16_t to, std::size_t n,
                                const std::function<bool(const rte_mbuf *)> &want, int ms = 3000) {
    std::vector<rte_mbuf *> got;
    for (int i = 0; i < ms && got.size() < n; ++i) {
        rte_mbuf *burst[16];
        const std::uint16_t k = rte_eth_rx_burst(to, 0, burst, 16);
        for (std::uint16_t j = 0; j < k; ++j) {
            if (got.size() < n && want(burst[j]))
                got.push_back(burst[j]);
            else
                rte_pktmbuf_free(burst[j]);
        }
        rte_eth_rx_burst(from, 0, burst, 0);  // (held frames of `from` leave)
        if (got.size() < n)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return got;
}

std::uint16_t ethertype_of(const rte_mbuf *m) {
    const auto *eh = rte_pktmbuf_mtod(m, const rte_ether_hdr *);
    return rte_be_to_cpu_16(eh->ether_type);
}
std::function<bool(const rte_mbuf *)> ipv4_of_len(std::uint32_t l3len) {
    return [l3len](const rte_mbuf *m) {
        return ethertype_of(m) == RTE_ETHER_TYPE_IPV4 && m->pkt_len == RTE_ETHER_HDR_LEN + l3len;
    };
}

// Each port announces itself by a broadcast ARP request; the MAC the other
// knows it by (the source of the translated ARP it received). ip: 10.0.0.<ip>.
rte_ether_addr announce(const EthPort &from, std::uint8_t ip, const EthPort &to, rte_mempool *mp) {
    auto is_arp = [](const rte_mbuf *m) { return ethertype_of(m) == RTE_ETHER_TYPE_ARP; };
    rte_mbuf *got = send_and_wait(from.id, to.id, mbuf_with(mp, arp_request(mac_of(from.id), ip, 99)), is_arp);
    REQUIRE(got);
    rte_ether_addr seen;
    std::memcpy(seen.addr_bytes, rte_pktmbuf_mtod_offset(got, const std::uint8_t *, 6), 6);
    rte_pktmbuf_free(got);
    return seen;
}

// Every segment of m from pool mp, none longer than its room, its data in
// the mbuf itself (copied).
bool all_from(const rte_mbuf *m, const rte_mempool *mp) {
    for (const rte_mbuf *s = m; s; s = s->next)
        if (s->pool != mp || s->data_len > kSegRoom || RTE_MBUF_HAS_EXTBUF(s))
            return false;
    return true;
}

// Every segment of m an mbuf of pool mp whose data is a receive buffer of the
// driver's (lent: an external buffer of at most kCmMaxBufSize bytes).
bool all_lent(const rte_mbuf *m, const rte_mempool *mp) {
    for (const rte_mbuf *s = m; s; s = s->next)
        if (s->pool != mp || !RTE_MBUF_HAS_EXTBUF(s) || s->buf_len > ipoib::pmd::kCmMaxBufSize)
            return false;
    return true;
}

std::vector<std::uint8_t> l3_of(const std::vector<std::uint8_t> &frame) {
    return std::vector<std::uint8_t>(frame.begin() + RTE_ETHER_HDR_LEN, frame.end());
}

// Every nonzero xstat of a port (shown when a check fails).
std::string nonzero_xstats(std::uint16_t port) {
    const int n = rte_eth_xstats_get_names(port, nullptr, 0);
    std::vector<rte_eth_xstat_name> names(static_cast<std::size_t>(n));
    std::vector<rte_eth_xstat> vals(static_cast<std::size_t>(n));
    rte_eth_xstats_get_names(port, names.data(), static_cast<unsigned>(n));
    rte_eth_xstats_get(port, vals.data(), static_cast<unsigned>(n));
    std::string out;
    for (int i = 0; i < n; ++i)
        if (vals[static_cast<std::size_t>(i)].value)
            out += std::string(names[static_cast<std::size_t>(vals[static_cast<std::size_t>(i)].id)].name) + "=" +
                   std::to_string(vals[static_cast<std::size_t>(i)].value) + " ";
    return out;
}

std::string args(const std::string &dev, const std::string &more = "") {
    return "provider=inproc,dev=" + dev + (more.empty() ? "" : "," + more);
}

// Drain what is left on a port (frames that came late).
void drain(std::uint16_t port) {
    rte_mbuf *burst[32];
    for (std::uint16_t n; (n = rte_eth_rx_burst(port, 0, burst, 32)) > 0;)
        rte_pktmbuf_free_bulk(burst, n);
}

} // namespace

TEST_CASE("connected mode: 64 KB frames in chains of 2 KB mbufs each way over connections set up on first use") {
    rte_mempool *mpa = pool("cm_big_a", 4096, kSegRoom), *mpb = pool("cm_big_b", 4096, kSegRoom);
    const unsigned avail_a = rte_mempool_avail_count(mpa), avail_b = rte_mempool_avail_count(mpb);
    // B lends its receive buffers (the default); A copies every frame (rx_copy_max=65535).
    const EthPort a = up("net_ipoib_cma", args("cm-a", "mode=connected,rx_copy_max=65535"), mpa);
    const EthPort b = up("net_ipoib_cmb", args("cm-b", "mode=connected"), mpb);
    rte_eth_dev_info info{};
    REQUIRE(rte_eth_dev_info_get(a.id, &info) == 0);
    CHECK(info.max_mtu == kCmMtu);
    const rte_ether_addr mac_a = mac_of(a.id), mac_b = mac_of(b.id);
    const rte_ether_addr a_at_b = announce(a, 1, b, mpa), b_at_a = announce(b, 2, a, mpb);

    // A -> B: the frame waits while A's TX queue connects, then goes over the connection.
    const auto f1 = eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, kCmMtu, false, 1));
    rte_mbuf *out = chain_with(mpa, f1);
    CHECK(out->nb_segs == 32);
    rte_mbuf *got = send_and_wait(a.id, b.id, out, ipv4_of_len(kCmMtu));
    INFO("A: " << nonzero_xstats(a.id));
    INFO("B: " << nonzero_xstats(b.id));
    REQUIRE(got);
    CHECK(got->nb_segs == 32);  // 14 + 65520 bytes in 32 of the receiver's buffers (lent)
    CHECK(all_lent(got, mpb));
    CHECK(xstat(b.id, "rx_lent_frames") == 1);
    CHECK(xstat(b.id, "rx_copied_bytes") == 42);  // (A's ARP only)
    auto bytes = bytes_of(got);
    REQUIRE(bytes.size() == f1.size());
    CHECK(std::equal(bytes.begin(), bytes.begin() + 6, mac_b.addr_bytes));
    CHECK(std::equal(bytes.begin() + 6, bytes.begin() + 12, a_at_b.addr_bytes));  // the MAC B knows A by
    CHECK(l3_of(bytes) == l3_of(f1));
    CHECK((got->packet_type & RTE_PTYPE_L3_MASK) == RTE_PTYPE_L3_IPV4);
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_req_sent") == 1);
    CHECK(xstat(a.id, "tx_unresolved_queued") >= 1);  // held while connecting
    CHECK(xstat(a.id, "tx_cm_packets") == 1);
    CHECK(xstat(a.id, "tx_cm_bytes") >= kCmMtu);
    CHECK(xstat(a.id, "tx_cm_datagram") == 0);
    CHECK(xstat(b.id, "rx_cm_packets") == 1);
    CHECK(xstat(b.id, "cm_req_received") == 1);
    CHECK(xstat(a.id, "cm_established") == 1);
    CHECK(xstat_reaches(b.id, "cm_established", 1) == 1);  // (B counts it at the RTU)

    // B -> A: B's own connection (each TX queue connects for itself).
    const auto f2 = eth_frame(a_at_b, mac_b, RTE_ETHER_TYPE_IPV4, ipv4(2, 1, kCmMtu, false, 2));
    got = send_and_wait(b.id, a.id, chain_with(mpb, f2), ipv4_of_len(kCmMtu));
    REQUIRE(got);
    CHECK(got->nb_segs == 32);  // copied into A's 2 KB mbufs
    CHECK(all_from(got, mpa));
    CHECK(xstat(a.id, "rx_lent_frames") == 0);
    bytes = bytes_of(got);
    CHECK(std::equal(bytes.begin() + 6, bytes.begin() + 12, b_at_a.addr_bytes));
    CHECK(l3_of(bytes) == l3_of(f2));
    rte_pktmbuf_free(got);
    CHECK(xstat(b.id, "tx_cm_packets") == 1);
    CHECK(xstat(a.id, "rx_cm_packets") == 1);
    CHECK(xstat_reaches(a.id, "cm_established", 2) == 2);  // its own and B's

    // Once up, frames go straight over it, in order, without waiting.
    const auto f3 = eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, 30000, false, 3));
    const auto f4 = eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, 100, false, 4));
    rte_mbuf *two[2] = {chain_with(mpa, f3), chain_with(mpa, f4)};
    const std::uint64_t queued = xstat(a.id, "tx_unresolved_queued");
    REQUIRE(rte_eth_tx_burst(a.id, 0, two, 2) == 2);
    std::vector<rte_mbuf *> both = collect(a.id, b.id, 2, [](const rte_mbuf *m) {
        return ethertype_of(m) == RTE_ETHER_TYPE_IPV4;
    });
    REQUIRE(both.size() == 2);
    CHECK(l3_of(bytes_of(both[0])) == l3_of(f3));  // in order
    CHECK(both[1]->nb_segs == 1);
    CHECK(l3_of(bytes_of(both[1])) == l3_of(f4));
    rte_pktmbuf_free_bulk(both.data(), 2);
    CHECK(xstat(a.id, "tx_unresolved_queued") == queued);
    CHECK(xstat(a.id, "tx_cm_packets") == 3);
    CHECK(xstat(a.id, "cm_req_sent") == 1);
    CHECK(xstat(a.id, "tx_hca_errors") == 0);
    CHECK(xstat(b.id, "rx_cm_errors") == 0);

    drain(a.id);
    drain(b.id);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mpa) == avail_a);
    CHECK(rte_mempool_avail_count(mpb) == avail_b);
}

TEST_CASE("connected mode: receive buffers lent while spares last, then copied; held past a port's close, freed after") {
    rte_mempool *mpa = pool("cm_lend_a", 4096, kSegRoom), *mpb = pool("cm_lend_b", 4096, kSegRoom);
    const unsigned avail_a = rte_mempool_avail_count(mpa), avail_b = rte_mempool_avail_count(mpb);
    const EthPort a = up("net_ipoib_cla", args("cl-a", "mode=connected"), mpa);
    EthPort b = up("net_ipoib_clb", args("cl-b", "mode=connected"), mpb);
    const rte_ether_addr mac_a = mac_of(a.id);
    announce(a, 1, b, mpa);
    const rte_ether_addr b_at_a = announce(b, 2, a, mpb);
    INFO("A: " << nonzero_xstats(a.id));
    INFO("B: " << nonzero_xstats(b.id));
    auto frame = [&](std::uint16_t id) { return eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, 20000, false, id)); };
    rte_mbuf *first = send_and_wait(a.id, b.id, chain_with(mpa, frame(1)), ipv4_of_len(20000));  // (connects)
    REQUIRE(first);
    CHECK(all_lent(first, mpb));
    rte_pktmbuf_free(first);

    // B's application holds 65 frames: 64 spare slots are lent, the 65th frame is copied.
    std::vector<std::vector<std::uint8_t>> sent;
    std::vector<rte_mbuf *> held;
    for (std::uint16_t k = 0; k < 65; ++k) {
        sent.push_back(frame(static_cast<std::uint16_t>(100 + k)));
        rte_mbuf *m = chain_with(mpa, sent.back());
        REQUIRE(rte_eth_tx_burst(a.id, 0, &m, 1) == 1);
        auto got = collect(a.id, b.id, 1, ipv4_of_len(20000));
        REQUIRE(got.size() == 1);
        held.push_back(got[0]);
    }
    CHECK(xstat(b.id, "rx_lent_frames") == 1 + 64);
    CHECK(xstat(b.id, "rx_lend_exhausted") == 1);
    for (std::size_t k = 0; k < 64; ++k)
        CHECK(all_lent(held[k], mpb));
    CHECK(all_from(held[64], mpb));
    for (std::size_t k = 0; k < held.size(); ++k)
        CHECK(l3_of(bytes_of(held[k])) == l3_of(sent[k]));  // lent or copied, the data as sent
    // Freed (all but one), the slots come back and the next frame is lent again.
    rte_pktmbuf_free_bulk(held.data() + 1, static_cast<unsigned>(held.size() - 1));
    rte_mbuf *again = send_and_wait(a.id, b.id, chain_with(mpa, frame(300)), ipv4_of_len(20000));
    REQUIRE(again);
    CHECK(all_lent(again, mpb));
    CHECK(xstat(b.id, "rx_lent_frames") == 1 + 64 + 1);
    rte_pktmbuf_free(again);

    // B closed while its application still holds a lent frame: the buffers stay
    // until it is freed (ASan: no use after free), and go at the next release.
    drain(a.id);
    drain(b.id);
    close(b);
    CHECK(l3_of(bytes_of(held[0])) == l3_of(sent[0]));
    rte_pktmbuf_free(held[0]);
    close(a);
    CHECK(rte_mempool_avail_count(mpa) == avail_a);
    CHECK(rte_mempool_avail_count(mpb) == avail_b);
}

TEST_CASE("connected mode: a datagram-mode peer gets UD; too big with DF: ICMP fragmentation needed; without: "
          "fragments") {
    rte_mempool *mp = pool("cm_ud_peer", 4096, kSegRoom);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_cmc", args("cm-c", "mode=connected"), mp);
    const EthPort c = up("net_ipoib_cmd", args("cm-d"), mp);  // datagram mode: its address without 0x80
    const rte_ether_addr mac_a = mac_of(a.id);
    announce(a, 1, c, mp);
    const rte_ether_addr c_at_a = announce(c, 3, a, mp);

    // Within the datagram MTU: UD, no connection asked for.
    const auto small = eth_frame(c_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 3, kUdMtu));
    rte_mbuf *got = send_and_wait(a.id, c.id, chain_with(mp, small), ipv4_of_len(kUdMtu));
    REQUIRE(got);
    CHECK(l3_of(bytes_of(got)) == l3_of(small));
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_req_sent") == 0);
    CHECK(xstat(a.id, "tx_cm_packets") == 0);

    // 3000 bytes with DF: not sent; an ICMP "fragmentation needed" with MTU 2044 comes back on A's RX.
    const auto big_df = ipv4(1, 3, 3000, true, 5);
    const auto df_frame = eth_frame(c_at_a, mac_a, RTE_ETHER_TYPE_IPV4, big_df);
    auto is_icmp = [](const rte_mbuf *m) {
        return ethertype_of(m) == RTE_ETHER_TYPE_IPV4 &&
               rte_pktmbuf_mtod_offset(m, const std::uint8_t *, RTE_ETHER_HDR_LEN)[9] == IPPROTO_ICMP;
    };
    got = send_and_wait(a.id, a.id, chain_with(mp, df_frame), is_icmp);
    REQUIRE(got);
    const auto icmp_frame = bytes_of(got);
    rte_pktmbuf_free(got);
    REQUIRE(icmp_frame.size() == RTE_ETHER_HDR_LEN + 20 + 8 + 548);  // the offending packet quoted up to 576 bytes
    CHECK(std::equal(icmp_frame.begin(), icmp_frame.begin() + 6, mac_a.addr_bytes));  // to the sender
    CHECK(std::equal(icmp_frame.begin() + 6, icmp_frame.begin() + 12, c_at_a.addr_bytes));
    const std::uint8_t *ip = icmp_frame.data() + RTE_ETHER_HDR_LEN;
    CHECK(ip[0] == 0x45);
    CHECK((std::uint32_t{ip[2]} << 8 | ip[3]) == 20 + 8 + 548);
    CHECK(ip[8] > 0);  // TTL
    CHECK(ipv4_header_ok(ip));
    CHECK(std::equal(ip + 12, ip + 16, big_df.begin() + 16));  // from the destination
    CHECK(std::equal(ip + 16, ip + 20, big_df.begin() + 12));  // to the source
    const std::uint8_t *icmp = ip + 20;
    CHECK(icmp[0] == 3);  // destination unreachable
    CHECK(icmp[1] == 4);  // fragmentation needed and DF set
    CHECK((std::uint32_t{icmp[6]} << 8 | icmp[7]) == kUdMtu);
    CHECK(ones_sum(icmp, 8 + 548) == 0xffff);
    CHECK(std::equal(icmp + 8, icmp + 8 + 548, big_df.begin()));
    CHECK(xstat(a.id, "tx_pmtu_icmp") == 1);
    CHECK(xstat(a.id, "rx_local_frames") == 1);

    // Without DF: two fragments of at most 2044 bytes, which C receives.
    const auto big = ipv4(1, 3, 3000, false, 6);
    rte_mbuf *whole = chain_with(mp, eth_frame(c_at_a, mac_a, RTE_ETHER_TYPE_IPV4, big));
    REQUIRE(rte_eth_tx_burst(a.id, 0, &whole, 1) == 1);
    const auto frags = collect(a.id, c.id, 2, [](const rte_mbuf *m) { return ethertype_of(m) == RTE_ETHER_TYPE_IPV4; });
    REQUIRE(frags.size() == 2);
    CHECK(xstat(a.id, "tx_frag_datagrams") == 1);
    CHECK(xstat(a.id, "tx_frag_fragments") == 2);
    std::vector<std::uint8_t> payload(big.size() - 20);
    std::size_t covered = 0;
    bool last_seen = false;
    for (rte_mbuf *f : frags) {
        const auto fb = l3_of(bytes_of(f));
        rte_pktmbuf_free(f);
        REQUIRE(fb.size() >= 20);
        CHECK(fb.size() <= kUdMtu);
        CHECK(ipv4_header_ok(fb.data()));
        CHECK((std::uint32_t{fb[2]} << 8 | fb[3]) == fb.size());
        CHECK((fb[4] << 8 | fb[5]) == 0x1234);  // the datagram's identification
        const std::uint16_t fo = static_cast<std::uint16_t>(fb[6] << 8 | fb[7]);
        const std::size_t off = (fo & RTE_IPV4_HDR_OFFSET_MASK) * 8u;
        last_seen |= !(fo & RTE_IPV4_HDR_MF_FLAG);
        REQUIRE(off + fb.size() - 20 <= payload.size());
        std::copy(fb.begin() + 20, fb.end(), payload.begin() + static_cast<std::ptrdiff_t>(off));
        covered += fb.size() - 20;
    }
    CHECK(last_seen);
    CHECK(covered == payload.size());
    CHECK(payload == std::vector<std::uint8_t>(big.begin() + 20, big.end()));

    drain(a.id);
    drain(c.id);
    close(a);
    close(c);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

TEST_CASE("connected mode: IB CRC as checksum skips offloaded checksums only where both sides agreed") {
    rte_mempool *mp = pool("cm_icrc", 8192, kSegRoom);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_cme", args("cm-e", "mode=connected,icrc_csum=1"), mp);
    // Receivers: agreeing with checksum offloads; agreeing without them; not agreeing (icrc_csum=0).
    const EthPort r_off = up("net_ipoib_cmf", args("cm-f", "mode=connected,icrc_csum=1"), mp, kScatter | kRxCksum);
    const EthPort r_plain = up("net_ipoib_cmg", args("cm-g", "mode=connected,icrc_csum=1"), mp, kScatter);
    const EthPort r_no = up("net_ipoib_cmh", args("cm-h", "mode=connected,icrc_csum=0"), mp, kScatter | kRxCksum);
    const rte_ether_addr mac_a = mac_of(a.id);
    std::uint8_t ip_no = 10;
    // A 5000-byte UDP frame in 2 KB mbufs asking for IPv4 and UDP checksum offload, both fields zero.
    auto offloaded = [&](const rte_ether_addr &to, std::uint8_t dst, std::vector<std::uint8_t> *l3) {
        auto p = ipv4(1, dst, 5000, false, dst);
        p[10] = p[11] = 0;
        *l3 = p;
        rte_mbuf *m = chain_with(mp, eth_frame(to, mac_a, RTE_ETHER_TYPE_IPV4, p));
        m->l2_len = RTE_ETHER_HDR_LEN;
        m->l3_len = 20;
        m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
        return m;
    };
    for (const EthPort *r : {&r_off, &r_plain, &r_no}) {
        INFO("receiver " << r->name);
        const std::uint8_t ip_r = ip_no++;
        announce(a, 1, *r, mp);
        const rte_ether_addr r_at_a = announce(*r, ip_r, a, mp);
        const std::uint64_t skipped = xstat(a.id, "tx_cm_cksum_skipped");
        std::vector<std::uint8_t> sent;
        rte_mbuf *got = send_and_wait(a.id, r->id, offloaded(r_at_a, ip_r, &sent), ipv4_of_len(5000));
        REQUIRE(got);
        CHECK(xstat(a.id, "tx_cm_packets") == static_cast<std::uint64_t>(ip_r - 9));  // over the connection
        const auto l3 = l3_of(bytes_of(got));
        const std::uint64_t ip_flags = got->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
        const std::uint64_t l4_flags = got->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
        rte_pktmbuf_free(got);
        REQUIRE(l3.size() == sent.size());
        // The payload (past the checksum fields) as sent.
        CHECK(std::equal(l3.begin() + 28, l3.end(), sent.begin() + 28));
        if (r == &r_off) {
            CHECK(xstat(a.id, "tx_cm_cksum_skipped") == skipped + 1);
            CHECK(ip_flags == RTE_MBUF_F_RX_IP_CKSUM_NONE);
            CHECK(l4_flags == RTE_MBUF_F_RX_L4_CKSUM_NONE);
            CHECK(xstat(r->id, "rx_cm_cksum_none") == 1);
        } else if (r == &r_plain) {
            CHECK(xstat(a.id, "tx_cm_cksum_skipped") == skipped + 1);  // skipped by A, filled in by the receiver
            CHECK(ipv4_header_ok(l3.data()));
            CHECK(udp_cksum_ok(l3.data()));
            CHECK(xstat(r->id, "rx_cm_cksum_none") == 0);
        } else {
            CHECK(xstat(a.id, "tx_cm_cksum_skipped") == skipped);  // not agreed: A computes them
            CHECK(ipv4_header_ok(l3.data()));
            CHECK(udp_cksum_ok(l3.data()));
            CHECK(ip_flags == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
            CHECK(l4_flags == RTE_MBUF_F_RX_L4_CKSUM_GOOD);
        }
    }
    for (const EthPort *p : {&a, &r_off, &r_plain, &r_no}) {
        drain(p->id);
        close(*p);
    }
    CHECK(rte_mempool_avail_count(mp) == avail);
}

TEST_CASE("connected mode: a peer that claims connected mode but has no listener rejects the REQ: datagrams") {
    rte_mempool *mp = pool("cm_rej", 2048, kSegRoom);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort c = up("net_ipoib_cmi", args("cm-i"), mp);  // datagram mode
    // Its address as a static neighbour of A, with the RC flag it does not have.
    const pmd::Port *pc = pmd::port_of(&rte_eth_devices[c.id]);
    const auto claimed = wire::make_hwaddr(wire::kHwFlagRc, pc->fp.hwaddr.qpn(), pc->fp.hwaddr.gid()).value;
    const std::string mac_c = "02:00:00:00:00:c1";
    const EthPort a = up("net_ipoib_cmj", args("cm-j", "mode=connected,neigh=" + mac_c + "/" + wire::to_string(claimed)),
                         mp);
    // The CM of C's host (as a kernel's ib_cm is there whatever IPoIB's mode): nobody listens on it.
    auto host = hca::open_device("inproc", "cm-i", "");
    REQUIRE(host.ctx);
    auto cm = host.ctx->open_cm(1);
    REQUIRE(cm);
    int events = 0;
    auto run_cm = [&] {
        hca::CmEvent ev;
        while (cm->get_event(&ev) == 1)
            ++events;
    };
    rte_ether_addr to;
    REQUIRE(rte_ether_unformat_addr(mac_c.c_str(), &to) == 0);
    const auto f = eth_frame(to, mac_of(a.id), RTE_ETHER_TYPE_IPV4, ipv4(1, 3, 1500, false, 7));
    rte_mbuf *got = send_and_wait(a.id, c.id, chain_with(mp, f), ipv4_of_len(1500), 3000, run_cm);
    REQUIRE(got);  // held while connecting, then sent as a datagram
    CHECK(l3_of(bytes_of(got)) == l3_of(f));
    rte_pktmbuf_free(got);
    CHECK(events == 0);  // the engine answered the REQ itself
    CHECK(xstat(a.id, "cm_req_sent") == 1);
    CHECK(xstat(a.id, "cm_rejected") == 1);
    CHECK(xstat(a.id, "cm_fallbacks") == 1);
    CHECK(xstat(a.id, "cm_established") == 0);
    CHECK(xstat(a.id, "tx_cm_datagram") >= 1);
    CHECK(xstat(a.id, "tx_cm_packets") == 0);
    // The next frames go as datagrams at once (no second REQ for a while).
    got = send_and_wait(a.id, c.id, chain_with(mp, f), ipv4_of_len(1500), 3000, run_cm);
    REQUIRE(got);
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_req_sent") == 1);
    CHECK(xstat(a.id, "tx_cm_datagram") >= 2);

    cm.reset();
    host.ctx.reset();
    drain(a.id);
    drain(c.id);
    close(a);
    close(c);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

TEST_CASE("connected mode: the peer stopped while connected sends a DREQ; the next frames reconnect, or fall back") {
    rte_mempool *mpa = pool("cm_stop_a", 4096, kSegRoom), *mpb = pool("cm_stop_b", 4096, kSegRoom);
    const unsigned avail_a = rte_mempool_avail_count(mpa), avail_b = rte_mempool_avail_count(mpb);
    const EthPort a = up("net_ipoib_cmk", args("cm-k", "mode=connected"), mpa);
    const EthPort b = up("net_ipoib_cml", args("cm-l", "mode=connected"), mpb);
    const rte_ether_addr mac_a = mac_of(a.id);
    announce(a, 1, b, mpa);
    const rte_ether_addr b_at_a = announce(b, 2, a, mpb);
    const auto f = eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, 20000, false, 8));
    rte_mbuf *got = send_and_wait(a.id, b.id, chain_with(mpa, f), ipv4_of_len(20000));
    REQUIRE(got);
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "tx_cm_packets") == 1);
    CHECK(xstat(a.id, "cm_established") == 1);
    // (B's side is established once its control thread saw the RTU; stopped before, B would
    // reject the connection instead of disconnecting it: the driver has no COMM_EST yet.)
    CHECK(xstat_reaches(b.id, "cm_established", 1) == 1);

    // B stops: it closes the connection A opened to it (DREQ); A's entry goes.
    REQUIRE(rte_eth_dev_stop(b.id) == 0);
    CHECK(xstat_reaches(a.id, "cm_dreq_received", 1) == 1);
    // B starts again: A's next frame connects anew and goes over the new connection.
    REQUIRE(rte_eth_dev_start(b.id) == 0);
    REQUIRE(link_up(b.id, 3000));
    got = send_and_wait(a.id, b.id, chain_with(mpa, f), ipv4_of_len(20000));
    REQUIRE(got);
    CHECK(l3_of(bytes_of(got)) == l3_of(f));
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_req_sent") == 2);
    CHECK(xstat(a.id, "cm_established") == 2);
    CHECK(xstat(a.id, "tx_cm_packets") == 2);

    // B stops again and stays stopped: A's REQ finds no listener (REJ): datagrams.
    REQUIRE(rte_eth_dev_stop(b.id) == 0);
    CHECK(xstat_reaches(a.id, "cm_dreq_received", 2) == 2);
    rte_mbuf *m = chain_with(mpa, f);
    REQUIRE(rte_eth_tx_burst(a.id, 0, &m, 1) == 1);
    CHECK(xstat_reaches(a.id, "cm_fallbacks", 1) == 1);
    CHECK(xstat(a.id, "cm_req_sent") == 3);
    CHECK(xstat(a.id, "cm_rejected") == 1);
    // (The held frame leaves as a datagram from A's next burst: 20000 bytes exceed the datagram MTU, so it is fragmented.)
    for (int i = 0; i < 1000 && xstat(a.id, "tx_cm_datagram") < 1; ++i) {
        drain(a.id);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(xstat(a.id, "tx_cm_datagram") >= 1);
    CHECK(xstat(a.id, "tx_cm_packets") == 2);

    drain(a.id);
    close(a);
    REQUIRE(rte_eth_dev_close(b.id) == 0);  // (stopped already)
    REQUIRE(rte_vdev_uninit(b.name.c_str()) == 0);
    CHECK(rte_mempool_avail_count(mpa) == avail_a);
    CHECK(rte_mempool_avail_count(mpb) == avail_b);
}

TEST_CASE("connected mode: the port's link going down closes its connections; up again, the next frame reconnects") {
    rte_mempool *mpa = pool("cm_down_a", 4096, kSegRoom), *mpb = pool("cm_down_b", 4096, kSegRoom);
    const unsigned avail_a = rte_mempool_avail_count(mpa), avail_b = rte_mempool_avail_count(mpb);
    const EthPort a = up("net_ipoib_cmm", args("cm-m", "mode=connected"), mpa);
    const EthPort b = up("net_ipoib_cmn", args("cm-n", "mode=connected"), mpb);
    const rte_ether_addr mac_a = mac_of(a.id);
    announce(a, 1, b, mpa);
    const rte_ether_addr b_at_a = announce(b, 2, a, mpb);
    const auto f = eth_frame(b_at_a, mac_a, RTE_ETHER_TYPE_IPV4, ipv4(1, 2, 20000, false, 8));
    rte_mbuf *got = send_and_wait(a.id, b.id, chain_with(mpa, f), ipv4_of_len(20000));
    REQUIRE(got);
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_established") == 1);

    // A's port leaves ACTIVE (a cable pulled): its link goes down and its connection is closed.
    hca::Context &ctx = *pmd::port_of(&rte_eth_devices[a.id])->hca->ctx;
    REQUIRE(hca::inproc::set_port_state(ctx, hca::PortState::down) == 0);
    bool down = false;
    for (int i = 0; i < 600 && !down; ++i) {
        rte_eth_link l{};
        rte_eth_link_get_nowait(a.id, &l);
        down = l.link_status == RTE_ETH_LINK_DOWN;
        if (!down)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE(down);
    REQUIRE(hca::inproc::set_port_state(ctx, hca::PortState::active) == 0);
    REQUIRE(link_up(a.id, 5000));
    // Up again: the next frame connects anew (a new REQ) and goes over the new connection.
    got = send_and_wait(a.id, b.id, chain_with(mpa, f), ipv4_of_len(20000));
    REQUIRE(got);
    CHECK(l3_of(bytes_of(got)) == l3_of(f));
    rte_pktmbuf_free(got);
    CHECK(xstat(a.id, "cm_req_sent") == 2);
    CHECK(xstat(a.id, "cm_established") == 2);
    CHECK(xstat(a.id, "tx_cm_packets") == 2);

    drain(a.id);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mpa) == avail_a);
    CHECK(rte_mempool_avail_count(mpb) == avail_b);
}
