// SPDX-License-Identifier: BSD-3-Clause
// Two net_ipoib ports in one process over the in-process HCA provider, in
// the style of DPDK's app/test/test_pmd_ring.c: probe by devargs, configure,
// start, link up (static management: the in-process HCA has an Ethernet
// link layer), frames both ways through the ethdev API, stats and xstats,
// stop and close with every mbuf back in its pool.
#include <rte_bus_vdev.h>
#include <rte_epoll.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "inproc/inproc_testing.hpp"
#include "ipoib_ethdev.hpp"
#include "ipoib_mp.hpp"
#include "port_fixture.hpp"

using namespace ipoib;
using namespace ipoib::test;

namespace {

struct EthPort {
    std::uint16_t id = RTE_MAX_ETHPORTS;
    std::string name;
};

EthPort probe(const std::string &name, const std::string &args) {
    ensure_eal();
    INFO(name << "," << args);
    REQUIRE(rte_vdev_init(name.c_str(), args.c_str()) == 0);
    EthPort p;
    p.name = name;
    REQUIRE(rte_eth_dev_get_port_by_name(name.c_str(), &p.id) == 0);
    return p;
}

// RX descriptors per queue. Zero copy (the in-process HCA registers any
// memory, as a verbs device does): each started RX queue lends its HCA
// receive queue this many mbufs of its pool until the port is closed.
constexpr unsigned kRxDesc = 256;

// Configured with conf, nrx RX and ntx TX queues of 256 descriptors, started.
void start(const EthPort &p, rte_mempool *mp, const rte_eth_conf &conf, std::uint16_t nrx = 1,
           std::uint16_t ntx = 1) {
    REQUIRE(rte_eth_dev_configure(p.id, nrx, ntx, &conf) == 0);
    for (std::uint16_t q = 0; q < nrx; ++q)
        REQUIRE(rte_eth_rx_queue_setup(p.id, q, kRxDesc, SOCKET_ID_ANY, nullptr, mp) == 0);
    for (std::uint16_t q = 0; q < ntx; ++q)
        REQUIRE(rte_eth_tx_queue_setup(p.id, q, 256, SOCKET_ID_ANY, nullptr) == 0);
    REQUIRE(rte_eth_dev_start(p.id) == 0);
}

void start(const EthPort &p, rte_mempool *mp, bool lsc = false) {
    rte_eth_conf conf{};
    conf.intr_conf.lsc = lsc;
    start(p, mp, conf);
}

void close(const EthPort &p) {
    rte_eth_dev_stop(p.id);
    REQUIRE(rte_eth_dev_close(p.id) == 0);
    REQUIRE(rte_vdev_uninit(p.name.c_str()) == 0);
}

// Receive and free whatever arrived; returns how many.
unsigned drain(std::uint16_t port) {
    unsigned total = 0;
    rte_mbuf *burst[64];
    for (std::uint16_t n; (n = rte_eth_rx_burst(port, 0, burst, 64)) > 0; total += n)
        rte_pktmbuf_free_bulk(burst, n);
    return total;
}

bool wait_link(std::uint16_t port, int ms) {
    for (int i = 0; i < ms; i += 10) {
        rte_eth_link l{};
        rte_eth_link_get_nowait(port, &l);
        if (l.link_status == RTE_ETH_LINK_UP)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// A probed, started port whose link is up.
EthPort up(const std::string &name, const std::string &args, rte_mempool *mp) {
    const EthPort p = probe(name, args);
    start(p, mp);
    REQUIRE(wait_link(p.id, 3000));
    return p;
}

rte_ether_addr mac_of(std::uint16_t port) {
    rte_ether_addr m{};
    rte_eth_macaddr_get(port, &m);
    return m;
}

const rte_ether_addr kBcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

// Send m from `from` (retrying while held), then poll `to` until a frame arrives.
rte_mbuf *exchange(std::uint16_t from, std::uint16_t to, rte_mbuf *m, int ms = 2000) {
    REQUIRE(rte_eth_tx_burst(from, 0, &m, 1) == 1);
    rte_mbuf *got = nullptr;
    for (int i = 0; i < ms && !got; ++i) {
        rte_mbuf *burst[4];
        const std::uint16_t n = rte_eth_rx_burst(to, 0, burst, 4);
        for (std::uint16_t k = 0; k < n; ++k) {
            if (!got)
                got = burst[k];
            else
                rte_pktmbuf_free(burst[k]);
        }
        rte_mbuf *none[1];
        rte_eth_rx_burst(from, 0, none, 0);  // lets held frames of `from` leave
        if (!got)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return got;
}

std::uint64_t xstat(std::uint16_t port, const char *name) {
    std::uint64_t id = 0, v = 0;
    REQUIRE(rte_eth_xstats_get_id_by_name(port, name, &id) == 0);
    REQUIRE(rte_eth_xstats_get_by_id(port, &id, &v, 1) == 1);
    return v;
}

std::vector<std::uint8_t> eth_frame(const rte_ether_addr &dst, const rte_ether_addr &src,
                                    const std::vector<std::uint8_t> &ip) {
    std::vector<std::uint8_t> f(dst.addr_bytes, dst.addr_bytes + 6);
    f.insert(f.end(), src.addr_bytes, src.addr_bytes + 6);
    f.push_back(0x08);
    f.push_back(0x00);
    f.insert(f.end(), ip.begin(), ip.end());
    return f;
}

} // namespace

TEST_CASE("two ports in one process: link, broadcast, learned unicast reply, stats, clean close") {
    rte_mempool *mp = pool("two_ports", 2048);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_ta", "provider=inproc,dev=unit-a", mp);
    const EthPort b = up("net_ipoib_tb", "provider=inproc,dev=unit-b", mp);
    rte_eth_dev_info info{};
    REQUIRE(rte_eth_dev_info_get(a.id, &info) == 0);
    CHECK(info.max_mtu == 2044);  // the in-process HCA's 2048-byte MTU minus the IPoIB header
    const rte_ether_addr mac_a = mac_of(a.id), mac_b = mac_of(b.id), bcast = kBcast;

    // A broadcast from A reaches B from the MAC A is known by there.
    const auto ip1 = ipv4_udp(0x0affffff, 200);
    rte_mbuf *got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, ip1)));
    REQUIRE(got);
    const auto f1 = bytes_of(got);
    rte_pktmbuf_free(got);
    REQUIRE(f1.size() == RTE_ETHER_HDR_LEN + ip1.size());
    CHECK(std::equal(f1.begin(), f1.begin() + 6, bcast.addr_bytes));
    CHECK(std::vector<std::uint8_t>(f1.begin() + RTE_ETHER_HDR_LEN, f1.end()) == ip1);
    rte_ether_addr a_seen_by_b;
    std::memcpy(a_seen_by_b.addr_bytes, f1.data() + 6, 6);

    // B answers that MAC: resolved by the control thread (the sender was learned), delivered to A.
    const auto ip2 = ipv4_udp(0x0a000001, 300);
    got = exchange(b.id, a.id, mbuf_with(mp, eth_frame(a_seen_by_b, mac_b, ip2)));
    REQUIRE(got);
    const auto f2 = bytes_of(got);
    rte_pktmbuf_free(got);
    CHECK(std::equal(f2.begin(), f2.begin() + 6, mac_a.addr_bytes));
    CHECK(std::vector<std::uint8_t>(f2.begin() + RTE_ETHER_HDR_LEN, f2.end()) == ip2);

    rte_eth_stats sa{}, sb{};
    REQUIRE(rte_eth_stats_get(a.id, &sa) == 0);
    REQUIRE(rte_eth_stats_get(b.id, &sb) == 0);
    CHECK(sa.opackets == 1);
    CHECK(sb.ipackets == 1);
    CHECK(sb.opackets == 1);
    CHECK(sa.ipackets == 1);
    CHECK(sa.oerrors == 0);
    CHECK(sb.oerrors == 0);
    CHECK(xstat(a.id, "rx_loopback_discards") == 1);  // A's own broadcast, dropped
    CHECK(xstat(b.id, "tx_unresolved_queued") <= 1);

    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);  // every mbuf back
}

TEST_CASE("two ports in one process: a bad devarg or a second port on the same partition is refused") {
    ensure_eal();
    CHECK(rte_vdev_init("net_ipoib_tbad", "provider=inproc,dev=unit-c,port=2") != 0);  // one port only
    CHECK(rte_vdev_init("net_ipoib_tbad", "provider=inproc,dev=unit-g,gid_index=5") != 0);  // no such GID
    const EthPort c = probe("net_ipoib_tc", "provider=inproc,dev=unit-c");
    CHECK(rte_vdev_init("net_ipoib_tc2", "provider=inproc,dev=unit-c") != 0);  // same port and P_Key
    close(c);
}

// More sends outstanding than the QP's send queue and its completion queue
// hold (txq_size=16, 256 descriptors asked): nothing may be lost or stall.
TEST_CASE("two ports in one process: txq_size smaller than the descriptors asked, bursts of 64") {
    rte_mempool *mp = pool("ring_sizes", 4096);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_tr", "provider=inproc,dev=unit-r,txq_size=16", mp);
    const EthPort b = up("net_ipoib_ts", "provider=inproc,dev=unit-s", mp);
    const auto frame = eth_frame(kBcast, mac_of(a.id), ipv4_udp(0x0affffff, 64));
    constexpr unsigned kFrames = 640;
    unsigned sent = 0, received = 0;
    for (int spin = 0; spin < 20000 && sent < kFrames; ++spin) {
        rte_mbuf *burst[64];
        const unsigned n = std::min(64u, kFrames - sent);
        for (unsigned i = 0; i < n; ++i)
            burst[i] = mbuf_with(mp, frame);
        const std::uint16_t took = rte_eth_tx_burst(a.id, 0, burst, static_cast<std::uint16_t>(n));
        rte_pktmbuf_free_bulk(burst + took, n - took);
        sent += took;
        received += drain(b.id);
        drain(a.id);  // A's own copies of its broadcasts
    }
    for (int i = 0; i < 100 && received < kFrames; ++i) {
        received += drain(b.id);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(sent == kFrames);  // the TX queue never stalls
    rte_eth_stats st{};
    REQUIRE(rte_eth_stats_get(a.id, &st) == 0);
    CHECK(st.opackets == kFrames);
    CHECK(st.oerrors == 0);
    CHECK(received + xstat(b.id, "hca_drop_no_buffer") == kFrames);  // each frame received or counted
    // Every send completed and its mbuf freed: none stuck waiting for a completion that was lost.
    REQUIRE(rte_eth_tx_burst(a.id, 0, nullptr, 0) == 0);  // reaps completions
    drain(a.id);
    drain(b.id);
    CHECK(rte_mempool_avail_count(mp) == avail - 2 * kRxDesc);  // (the receive queues hold theirs)
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

namespace {
struct LscSeen {
    std::atomic<int> calls{0};
    std::atomic<bool> stopped{false};
    bool stop_from_callback = false;
};
int on_lsc(std::uint16_t port, rte_eth_event_type, void *arg, void *) {
    auto *s = static_cast<LscSeen *>(arg);
    ++s->calls;
    if (s->stop_from_callback && !s->stopped.exchange(true))
        rte_eth_dev_stop(port);  // an ethdev op from the callback: must not deadlock
    return 0;
}
} // namespace

TEST_CASE("two ports in one process: the LSC callback may call ethdev ops, and only fires when asked for") {
    rte_mempool *mp = pool("lsc", 1024);
    const EthPort quiet = probe("net_ipoib_tq", "provider=inproc,dev=unit-q");
    LscSeen q;
    REQUIRE(rte_eth_dev_callback_register(quiet.id, RTE_ETH_EVENT_INTR_LSC, on_lsc, &q) == 0);
    start(quiet, mp, false);  // intr_conf.lsc off
    REQUIRE(wait_link(quiet.id, 3000));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(q.calls == 0);

    const EthPort loud = probe("net_ipoib_tl", "provider=inproc,dev=unit-l");
    LscSeen l;
    l.stop_from_callback = true;
    REQUIRE(rte_eth_dev_callback_register(loud.id, RTE_ETH_EVENT_INTR_LSC, on_lsc, &l) == 0);
    start(loud, mp, true);
    for (int i = 0; i < 300 && !l.stopped; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(l.calls >= 1);
    REQUIRE(l.stopped);
    for (int i = 0; i < 300; ++i) {  // the callback's dev_stop returned: the port is down
        rte_eth_link lk{};
        rte_eth_link_get_nowait(loud.id, &lk);
        if (lk.link_status == RTE_ETH_LINK_DOWN)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    rte_eth_link lk{};
    rte_eth_link_get_nowait(loud.id, &lk);
    CHECK(lk.link_status == RTE_ETH_LINK_DOWN);
    rte_eth_dev_callback_unregister(quiet.id, RTE_ETH_EVENT_INTR_LSC, on_lsc, &q);
    rte_eth_dev_callback_unregister(loud.id, RTE_ETH_EVENT_INTR_LSC, on_lsc, &l);
    close(quiet);
    close(loud);
}

// White box: frames that arrived for a port whose link then went down (its
// partition removed, its port down) must not reach the application.
TEST_CASE("two ports in one process: nothing is delivered while the link is down") {
    rte_mempool *mp = pool("link_down", 1024);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_tda", "provider=inproc,dev=unit-da", mp);
    const EthPort b = up("net_ipoib_tdb", "provider=inproc,dev=unit-db", mp);
    rte_mbuf *burst[8];
    for (auto &m : burst)
        m = mbuf_with(mp, eth_frame(kBcast, mac_of(a.id), ipv4_udp(0x0affffff, 32)));
    REQUIRE(rte_eth_tx_burst(a.id, 0, burst, 8) == 8);
    pmd::Port *pb = pmd::port_of(&rte_eth_devices[b.id]);
    pb->fp.link_up.store(false);  // what a flush that takes the link down does
    CHECK(drain(b.id) == 0);
    CHECK(xstat(b.id, "rx_link_down_drops") == 8);
    pb->fp.link_up.store(true);
    drain(a.id);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

// What Debian's l3fwd asks of a port: RX IPv4/UDP/TCP checksum offloads on
// the port and again on each queue ("must be within per-queue offload
// capabilities"); the verdicts then arrive in the mbufs.
TEST_CASE("two ports in one process: l3fwd's checksum offloads configure per port and per queue") {
    rte_mempool *mp = pool("l3fwd_offloads", 1024);
    const EthPort a = up("net_ipoib_toa", "provider=inproc,dev=unit-oa", mp);
    const EthPort b = probe("net_ipoib_tob", "provider=inproc,dev=unit-ob");
    rte_eth_dev_info info{};
    REQUIRE(rte_eth_dev_info_get(b.id, &info) == 0);
    const std::uint64_t want = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM |
                               RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    CHECK((info.rx_queue_offload_capa & want) == want);
    CHECK(info.tx_queue_offload_capa == info.tx_offload_capa);
    CHECK(info.max_mtu == 2044);  // before any start: the in-process port's 2048 less the 4-byte header
    CHECK(info.default_rxportconf.burst_size == 64);
    CHECK(info.default_rxportconf.ring_size > 0);
    CHECK(info.speed_capa == RTE_ETH_LINK_SPEED_100G);  // the in-process port: 4x EDR
    rte_eth_link link{};
    REQUIRE(rte_eth_link_get_nowait(a.id, &link) == 0);
    CHECK(link.link_speed == RTE_ETH_SPEED_NUM_100G);
    rte_eth_conf conf{};
    conf.rxmode.offloads = want;
    REQUIRE(rte_eth_dev_configure(b.id, 1, 1, &conf) == 0);
    rte_eth_rxconf rxc = info.default_rxconf;
    rxc.offloads = want;
    REQUIRE(rte_eth_rx_queue_setup(b.id, 0, 256, SOCKET_ID_ANY, &rxc, mp) == 0);
    REQUIRE(rte_eth_tx_queue_setup(b.id, 0, 256, SOCKET_ID_ANY, nullptr) == 0);
    REQUIRE(rte_eth_dev_start(b.id) == 0);
    REQUIRE(wait_link(b.id, 3000));
    auto ip = ipv4_udp(0x0affffff, 32);
    const std::uint16_t c = rte_ipv4_udptcp_cksum(reinterpret_cast<rte_ipv4_hdr *>(ip.data()), ip.data() + 20);
    std::memcpy(&ip[26], &c, 2);
    rte_mbuf *good = mbuf_with(mp, eth_frame(kBcast, mac_of(a.id), ip));
    ip.back() ^= 1;
    rte_mbuf *bad = mbuf_with(mp, eth_frame(kBcast, mac_of(a.id), ip));
    rte_mbuf *two[2] = {good, bad};
    REQUIRE(rte_eth_tx_burst(a.id, 0, two, 2) == 2);
    rte_mbuf *got[4];
    std::uint16_t n = 0;
    for (int i = 0; i < 1000 && n < 2; ++i)
        n = static_cast<std::uint16_t>(n + rte_eth_rx_burst(b.id, 0, got + n, static_cast<std::uint16_t>(4 - n)));
    REQUIRE(n == 2);
    CHECK(got[0]->ol_flags == (RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD));
    CHECK(got[1]->ol_flags == (RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_BAD));
    rte_pktmbuf_free_bulk(got, n);
    close(a);
    close(b);
}

// An IGMPv2 message (type 0x16 report, 0x17 leave) for `group`, in an IPv4 packet to `dst`.
std::vector<std::uint8_t> igmp_v2(std::uint8_t type, std::uint32_t group, std::uint32_t dst) {
    std::vector<std::uint8_t> b(20 + 8, 0);
    auto *ip = reinterpret_cast<rte_ipv4_hdr *>(b.data());
    ip->version_ihl = 0x45;
    ip->total_length = rte_cpu_to_be_16(28);
    ip->time_to_live = 1;
    ip->next_proto_id = 2;
    ip->src_addr = rte_cpu_to_be_32(0x0a000002);
    ip->dst_addr = rte_cpu_to_be_32(dst);
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    b[20] = type;
    for (int i = 0; i < 4; ++i)
        b[24 + i] = static_cast<std::uint8_t>(group >> (24 - 8 * i));
    const std::uint16_t c = static_cast<std::uint16_t>(~rte_raw_cksum(b.data() + 20, 8));
    std::memcpy(&b[22], &c, 2);
    return b;
}

rte_ether_addr ipv4_mcast_mac(std::uint32_t group) {
    return rte_ether_addr{{0x01, 0x00, 0x5e, static_cast<std::uint8_t>((group >> 16) & 0x7f),
                           static_cast<std::uint8_t>(group >> 8), static_cast<std::uint8_t>(group)}};
}

// Receiving an IP multicast group takes a full-member join of its MGID
// (RFC 4391; a send-only member is not attached): the driver joins the groups
// the application's IGMP/MLD reports name, and leaves them on its leaves.
TEST_CASE("two ports in one process: an IGMP report makes the port receive its group, a leave stops it") {
    rte_mempool *mp = pool("igmp", 1024);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_tga", "provider=inproc,dev=unit-ga", mp);
    const EthPort b = up("net_ipoib_tgb", "provider=inproc,dev=unit-gb", mp);
    constexpr std::uint32_t kGroup = 0xef010203;  // 239.1.2.3
    auto to_group = [&] {
        rte_mbuf *m = mbuf_with(mp, eth_frame(ipv4_mcast_mac(kGroup), mac_of(a.id), ipv4_udp(kGroup, 20)));
        return exchange(a.id, b.id, m, 300);
    };
    auto from_b = [&](std::uint8_t type, std::uint32_t dst) {
        rte_mbuf *m = mbuf_with(mp, eth_frame(ipv4_mcast_mac(dst), mac_of(b.id), igmp_v2(type, kGroup, dst)));
        REQUIRE(rte_eth_tx_burst(b.id, 0, &m, 1) == 1);
        for (int i = 0; i < 100; ++i) {  // the control thread joins or leaves
            drain(b.id);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    };
    rte_mbuf *got = to_group();
    CHECK(got == nullptr);  // a sends as a send-only member; b is no member
    rte_pktmbuf_free(got);
    from_b(0x16, kGroup);  // IGMPv2 report
    CHECK(xstat(b.id, "tx_mcast_reports") == 1);
    got = to_group();
    REQUIRE(got);
    const auto h = *rte_pktmbuf_mtod(got, const rte_ether_hdr *);
    CHECK(std::memcmp(h.dst_addr.addr_bytes, ipv4_mcast_mac(kGroup).addr_bytes, 6) == 0);
    rte_pktmbuf_free(got);
    from_b(0x16, kGroup);  // a repeated report changes nothing
    from_b(0x17, 0xe0000002);  // leave, to all-routers
    CHECK(xstat(b.id, "tx_mcast_reports") == 3);
    got = to_group();
    CHECK(got == nullptr);
    rte_pktmbuf_free(got);
    drain(a.id);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

// Heavy flush: the SM moves the port's partition to another index of its
// P_Key table. The QP moves there (same QPN: the port's address is
// unchanged), the link comes back, traffic flows again.
TEST_CASE("two ports in one process: a P_Key that moves in the table takes the QP with it") {
    rte_mempool *mp = pool("pkey_move", 1024);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_tpa", "provider=inproc,dev=unit-pa,pkey=0xffff", mp);
    const EthPort b = up("net_ipoib_tpb", "provider=inproc,dev=unit-pb,pkey=0xffff", mp);
    const rte_ether_addr mac_b = mac_of(b.id);
    auto send_bcast = [&](unsigned n) {
        std::vector<rte_mbuf *> burst(n);
        for (auto &m : burst)
            m = mbuf_with(mp, eth_frame(kBcast, mac_of(a.id), ipv4_udp(0x0affffff, 32)));
        REQUIRE(rte_eth_tx_burst(a.id, 0, burst.data(), static_cast<std::uint16_t>(n)) == n);
    };
    send_bcast(4);
    CHECK(drain(b.id) == 4);
    pmd::Port *pb = pmd::port_of(&rte_eth_devices[b.id]);
    const std::uint32_t qpn = pb->fp.qpn;
    REQUIRE(hca::inproc::set_pkeys(*pb->hca->ctx, {0x8001, 0xffff}) == 0);
    bool seen_up = false;
    for (int i = 0; i < 300 && !seen_up; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        seen_up = xstat(b.id, "pkey_moves") == 1 && wait_link(b.id, 10);
    }
    REQUIRE(seen_up);
    CHECK(xstat(b.id, "mcast_flushes") >= 1);
    CHECK(xstat(b.id, "pkey_move_failed") == 0);
    CHECK(pb->fp.qpn == qpn);
    CHECK(std::memcmp(mac_of(b.id).addr_bytes, mac_b.addr_bytes, 6) == 0);
    drain(b.id);
    const std::uint64_t pkey_drops = xstat(b.id, "hca_drop_pkey");
    send_bcast(4);
    CHECK(drain(b.id) == 4);
    CHECK(xstat(b.id, "hca_drop_pkey") == pkey_drops);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

// A destination nobody answers for fails; it is asked for again after a
// backoff (1 s, doubling) instead of being dropped until restart.
TEST_CASE("two ports in one process: a neighbour that failed to resolve is retried after its backoff") {
    rte_mempool *mp = pool("retry", 1024);
    const EthPort a = up("net_ipoib_tf", "provider=inproc,dev=unit-f", mp);
    const rte_ether_addr mac_a = mac_of(a.id);
    rte_ether_addr nobody{};
    const std::uint8_t unknown[6] = {0x02, 0, 0, 0, 0, 0x99};
    std::memcpy(nobody.addr_bytes, unknown, 6);
    auto send = [&] {
        rte_mbuf *m = mbuf_with(mp, eth_frame(nobody, mac_a, ipv4_udp(0x0a000099, 10)));
        REQUIRE(rte_eth_tx_burst(a.id, 0, &m, 1) == 1);
    };
    auto settle = [&](int ms) {
        for (int i = 0; i < ms; ++i) {
            drain(a.id);  // lets held frames leave or be dropped
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    };
    send();
    settle(100);
    CHECK(xstat(a.id, "tx_unresolved_queued") == 1);
    CHECK(xstat(a.id, "tx_unresolved_drops") == 1);  // it failed: the held frame is dropped
    send();
    CHECK(xstat(a.id, "tx_unresolved_drops") == 2);  // within the backoff: dropped at once
    settle(1100);
    send();
    CHECK(xstat(a.id, "tx_unresolved_queued") == 2);  // asked for again
    settle(100);
    close(a);
}

// White box: address handles of neighbours that went away are freed (after
// their sends completed), not kept until close.
TEST_CASE("two ports in one process: address handles of forgotten neighbours are freed") {
    rte_mempool *mp = pool("dead_ahs", 2048);
    const EthPort a = up("net_ipoib_tha", "provider=inproc,dev=unit-ha,neigh_timeout=1", mp);
    std::vector<EthPort> peers;
    for (int i = 0; i < 4; ++i)
        peers.push_back(up("net_ipoib_thp" + std::to_string(i), "provider=inproc,dev=unit-hp" + std::to_string(i), mp));
    pmd::Port *pa = pmd::port_of(&rte_eth_devices[a.id]);
    auto handles = [&] {
        std::lock_guard<std::mutex> lk(pa->hca->mu);
        return pa->ahs.size() + pa->dead_ahs.size();
    };
    const std::size_t base = handles();  // the broadcast group's
    for (const EthPort &p : peers) {  // each peer's broadcast teaches A a neighbour (RoCE: from its GRH)
        rte_mbuf *m = mbuf_with(mp, eth_frame(kBcast, mac_of(p.id), ipv4_udp(0x0affffff, 16)));
        REQUIRE(rte_eth_tx_burst(p.id, 0, &m, 1) == 1);
    }
    for (int i = 0; i < 200 && handles() < base + peers.size(); ++i) {
        drain(a.id);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(handles() == base + peers.size());  // one per learned neighbour
    for (int i = 0; i < 400 && handles() > base; ++i) {  // aged out after 1 s unused
        drain(a.id);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(handles() == base);
    for (const EthPort &p : peers) {
        drain(p.id);
        close(p);
    }
    close(a);
}

// An HCA with one send queue per QP (the in-process HCA, as rxe): the
// application's TX queues share it, one lock per burst, and each completion
// goes back to the queue that posted it. Two threads send at once through
// their own TX queues; every frame is sent and every mbuf comes back.
TEST_CASE("two ports in one process: TX queues sharing the HCA's one send queue, from two threads") {
    rte_mempool *mp = pool("shared_sq", 8192);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = probe("net_ipoib_tq", "provider=inproc,dev=unit-q,txq_size=16");
    const EthPort b = up("net_ipoib_tw", "provider=inproc,dev=unit-w", mp);
    rte_eth_dev_info info{};
    REQUIRE(rte_eth_dev_info_get(a.id, &info) == 0);
    CHECK(info.max_rx_queues == 1);  // no RSS on this HCA: said, not pretended
    CHECK(info.reta_size == 0);
    CHECK(info.flow_type_rss_offloads == 0);
    CHECK(info.max_tx_queues == 16);
    rte_eth_conf conf{};
    CHECK(rte_eth_dev_configure(a.id, 2, 2, &conf) != 0);  // two RX queues: refused
    start(a, mp, conf, 1, 2);
    REQUIRE(wait_link(a.id, 3000));

    const auto frame = eth_frame(kBcast, mac_of(a.id), ipv4_udp(0x0affffff, 64));
    constexpr unsigned kPerQueue = 2000;
    std::atomic<unsigned> sent[2] = {0, 0};
    std::atomic<unsigned> alloc_failed{0};
    auto sender = [&](std::uint16_t q) {  // no Catch2 assertions off the main thread
        for (int spin = 0; spin < 200000 && sent[q] < kPerQueue; ++spin) {
            rte_mbuf *burst[32];
            const unsigned n = std::min(32u, kPerQueue - sent[q]);
            if (rte_pktmbuf_alloc_bulk(mp, burst, n) != 0) {
                ++alloc_failed;
                continue;
            }
            for (unsigned i = 0; i < n; ++i)
                std::memcpy(rte_pktmbuf_append(burst[i], static_cast<std::uint16_t>(frame.size())), frame.data(),
                            frame.size());
            const std::uint16_t took = rte_eth_tx_burst(a.id, q, burst, static_cast<std::uint16_t>(n));
            rte_pktmbuf_free_bulk(burst + took, n - took);
            sent[q] += took;
        }
    };
    std::thread t0(sender, 0), t1(sender, 1);
    t0.join();
    t1.join();
    INFO("bursts that found no mbufs: " << alloc_failed.load());
    CHECK(sent[0] == kPerQueue);
    CHECK(sent[1] == kPerQueue);
    for (std::uint16_t q = 0; q < 2; ++q)
        REQUIRE(rte_eth_tx_burst(a.id, q, nullptr, 0) == 0);  // reaps what is left
    rte_eth_stats st{};
    REQUIRE(rte_eth_stats_get(a.id, &st) == 0);
    CHECK(st.q_opackets[0] == kPerQueue);
    CHECK(st.q_opackets[1] == kPerQueue);
    CHECK(st.oerrors == 0);
    const unsigned received = drain(b.id);
    CHECK(received + xstat(b.id, "hca_drop_no_buffer") == 2 * kPerQueue);  // each frame received or counted
    drain(a.id);
    // Every completion found its queue's mbuf (the receive queues hold theirs).
    CHECK(rte_mempool_avail_count(mp) == avail - 2 * kRxDesc);
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

// RX interrupts (intr_conf.rxq), as l3fwd-power uses them: the queue's fd
// registered in the thread's epoll set, armed, nothing while idle, an event
// once a frame arrives, and at once when one is already waiting.
TEST_CASE("two ports in one process: an RX interrupt wakes the waiter when a frame arrives, not before") {
    rte_mempool *mp = pool("rx_intr", 2048);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = probe("net_ipoib_ti", "provider=inproc,dev=unit-i");
    const EthPort b = up("net_ipoib_tj", "provider=inproc,dev=unit-j", mp);
    rte_eth_conf conf{};
    conf.intr_conf.rxq = 1;
    start(a, mp, conf);
    REQUIRE(wait_link(a.id, 3000));
    void *const tag = reinterpret_cast<void *>(std::uintptr_t{0x1234});
    REQUIRE(rte_eth_dev_rx_intr_ctl_q(a.id, 0, RTE_EPOLL_PER_THREAD, RTE_INTR_EVENT_ADD, tag) == 0);
    drain(a.id);
    rte_epoll_event ev[2];

    REQUIRE(rte_eth_dev_rx_intr_enable(a.id, 0) == 0);
    CHECK(rte_epoll_wait(RTE_EPOLL_PER_THREAD, ev, 2, 100) == 0);  // idle: no event
    const auto frame = eth_frame(kBcast, mac_of(b.id), ipv4_udp(0x0affffff, 32));
    rte_mbuf *m = mbuf_with(mp, frame);
    REQUIRE(rte_eth_tx_burst(b.id, 0, &m, 1) == 1);
    REQUIRE(rte_epoll_wait(RTE_EPOLL_PER_THREAD, ev, 2, 2000) == 1);  // the frame's arrival
    CHECK(ev[0].epdata.data == tag);
    REQUIRE(rte_eth_dev_rx_intr_disable(a.id, 0) == 0);
    CHECK(drain(a.id) == 1);

    // Armed while a frame already waits: the event comes at once.
    m = mbuf_with(mp, frame);
    REQUIRE(rte_eth_tx_burst(b.id, 0, &m, 1) == 1);
    REQUIRE(rte_eth_dev_rx_intr_enable(a.id, 0) == 0);
    CHECK(rte_epoll_wait(RTE_EPOLL_PER_THREAD, ev, 2, 500) == 1);
    REQUIRE(rte_eth_dev_rx_intr_disable(a.id, 0) == 0);
    CHECK(drain(a.id) == 1);
    // Disabled: consumed, no event left behind.
    CHECK(rte_epoll_wait(RTE_EPOLL_PER_THREAD, ev, 2, 50) == 0);
    REQUIRE(rte_eth_dev_rx_intr_ctl_q(a.id, 0, RTE_EPOLL_PER_THREAD, RTE_INTR_EVENT_DEL, tag) == 0);
    drain(b.id);  // B's own broadcasts
    close(a);
    close(b);
    CHECK(rte_mempool_avail_count(mp) == avail);
}

TEST_CASE("two ports in one process: without intr_conf.rxq a queue has no interrupt to register") {
    rte_mempool *mp = pool("rx_nointr", 1024);
    const EthPort a = up("net_ipoib_tn", "provider=inproc,dev=unit-n", mp);
    CHECK(rte_eth_dev_rx_intr_ctl_q(a.id, 0, RTE_EPOLL_PER_THREAD, RTE_INTR_EVENT_ADD, nullptr) != 0);
    close(a);
}

// Ethernet emulation: the MAC is the application's (a bond sets its own on
// the active member); received unicast frames carry it. Native mode has none.
TEST_CASE("two ports in one process: the application sets the MAC; unicast arrives addressed to it") {
    rte_mempool *mp = pool("mac_set", 1024);
    const EthPort a = up("net_ipoib_tm", "provider=inproc,dev=unit-m", mp);
    const EthPort b = up("net_ipoib_to", "provider=inproc,dev=unit-o", mp);
    rte_ether_addr mine{{0x02, 0xbd, 0, 0, 0, 0x01}};
    REQUIRE(rte_eth_dev_default_mac_addr_set(a.id, &mine) == 0);
    const rte_ether_addr now = mac_of(a.id);
    CHECK(rte_is_same_ether_addr(&mine, &now));
    rte_ether_addr multicast{{0x01, 0, 0x5e, 0, 0, 1}};
    CHECK(rte_eth_dev_default_mac_addr_set(a.id, &multicast) != 0);
    // A broadcasts (B learns it), B answers the MAC A is known by: A receives it addressed to A's MAC.
    rte_mbuf *got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(kBcast, mine, ipv4_udp(0x0affffff, 20))));
    REQUIRE(got);
    rte_ether_addr a_seen_by_b;
    std::memcpy(a_seen_by_b.addr_bytes, rte_pktmbuf_mtod(got, std::uint8_t *) + 6, 6);
    rte_pktmbuf_free(got);
    got = exchange(b.id, a.id, mbuf_with(mp, eth_frame(a_seen_by_b, mac_of(b.id), ipv4_udp(0x0a000001, 20))));
    REQUIRE(got);
    CHECK(std::memcmp(rte_pktmbuf_mtod(got, std::uint8_t *), mine.addr_bytes, 6) == 0);
    rte_pktmbuf_free(got);
    drain(a.id);
    drain(b.id);
    close(a);
    close(b);
    const EthPort n = probe("net_ipoib_tv", "provider=inproc,dev=unit-v,l2=ipoib");
    CHECK(rte_eth_dev_default_mac_addr_set(n.id, &mine) == -ENOTSUP);
    close(n);
}

TEST_CASE("two ports in one process: frames longer than rx_copy_max arrive in the HCA's buffer, which comes back "
          "when freed; with every spare held, frames are copied") {
    rte_mempool *mp = pool("lend", 512);
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_la", "provider=inproc,dev=lend-a", mp);
    const EthPort b = up("net_ipoib_lb", "provider=inproc,dev=lend-b,rxq_size=16,zero_copy=0", mp);
    const rte_ether_addr mac_a = mac_of(a.id), bcast = kBcast;

    // Long: lent (an external buffer, the usual headroom, the bytes as sent, nothing copied).
    const auto big = ipv4_udp(0x0affffff, 1000);
    rte_mbuf *got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, big)));
    REQUIRE(got);
    CHECK(RTE_MBUF_HAS_EXTBUF(got));
    CHECK(rte_pktmbuf_headroom(got) == RTE_PKTMBUF_HEADROOM);
    auto f = bytes_of(got);
    REQUIRE(f.size() == RTE_ETHER_HDR_LEN + big.size());
    CHECK(std::equal(f.begin(), f.begin() + 6, bcast.addr_bytes));
    CHECK(std::vector<std::uint8_t>(f.begin() + RTE_ETHER_HDR_LEN, f.end()) == big);
    CHECK(xstat(b.id, "rx_lent_frames") == 1);
    CHECK(xstat(b.id, "rx_copied_bytes") == 0);
    rte_pktmbuf_free(got);

    // Short (up to rx_copy_max, 128 by default): copied into the application's mbuf.
    const auto small = ipv4_udp(0x0affffff, 20);
    got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, small)));
    REQUIRE(got);
    CHECK(!RTE_MBUF_HAS_EXTBUF(got));
    CHECK(xstat(b.id, "rx_copied_bytes") == RTE_ETHER_HDR_LEN + small.size());
    rte_pktmbuf_free(got);

    // The application keeps 40 long frames: 16 buffers posted + 16 spare per
    // queue, so some are copied once the spares are gone; all arrive intact.
    std::vector<rte_mbuf *> kept;
    for (int i = 0; i < 40; ++i) {
        auto ip = ipv4_udp(0x0affffff, 600 + static_cast<std::size_t>(i));
        got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, ip)));
        REQUIRE(got);
        f = bytes_of(got);
        CHECK(std::vector<std::uint8_t>(f.begin() + RTE_ETHER_HDR_LEN, f.end()) == ip);
        kept.push_back(got);
    }
    const std::uint64_t exhausted = xstat(b.id, "rx_lend_exhausted");
    CHECK(exhausted > 0);
    CHECK(xstat(b.id, "rx_lent_frames") + exhausted == 1 + 40);
    for (rte_mbuf *m : kept)
        rte_pktmbuf_free(m);
    kept.clear();
    // Freed, the buffers are spares again: long frames are lent once more.
    const std::uint64_t lent = xstat(b.id, "rx_lent_frames");
    got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, big)));
    REQUIRE(got);
    CHECK(RTE_MBUF_HAS_EXTBUF(got));
    CHECK(xstat(b.id, "rx_lent_frames") == lent + 1);

    // Closed while the application still holds one: the pool stays until it is freed.
    close(b);
    f = bytes_of(got);
    CHECK(std::vector<std::uint8_t>(f.begin() + RTE_ETHER_HDR_LEN, f.end()) == big);
    rte_pktmbuf_free(got);
    close(a);
    CHECK(rte_mempool_avail_count(mp) == avail);  // every mbuf back
}

TEST_CASE("two ports in one process: rx_copy_max=0 lends every frame; small mbufs get chains instead") {
    rte_mempool *mp = pool("lend0", 256);
    rte_mempool *small_mp = pool("lend0_small", 256, RTE_PKTMBUF_HEADROOM + 256);
    const EthPort a = up("net_ipoib_l0a", "provider=inproc,dev=lend0-a", mp);
    const EthPort b = probe("net_ipoib_l0b", "provider=inproc,dev=lend0-b,rx_copy_max=0,zero_copy=0");
    rte_eth_conf conf{};
    conf.rxmode.offloads = RTE_ETH_RX_OFFLOAD_SCATTER;
    start(b, small_mp, conf);
    REQUIRE(wait_link(b.id, 3000));
    const rte_ether_addr mac_a = mac_of(a.id), bcast = kBcast;
    // 20 bytes of payload: lent even so (rx_copy_max=0).
    const auto tiny = ipv4_udp(0x0affffff, 20);
    rte_mbuf *got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, tiny)));
    REQUIRE(got);
    CHECK(RTE_MBUF_HAS_EXTBUF(got));
    rte_pktmbuf_free(got);
    // Longer than the application's 256-byte mbufs: a chain of them, copied.
    const auto big = ipv4_udp(0x0affffff, 1000);
    got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(bcast, mac_a, big)));
    REQUIRE(got);
    CHECK(!RTE_MBUF_HAS_EXTBUF(got));
    CHECK(got->nb_segs > 1);
    const auto f = bytes_of(got);
    CHECK(std::vector<std::uint8_t>(f.begin() + RTE_ETHER_HDR_LEN, f.end()) == big);
    rte_pktmbuf_free(got);
    close(a);
    close(b);
}

TEST_CASE("two ports in one process: native mode lends long frames from their IPoIB header on, the sender in the "
          "dynamic field") {
    rte_mempool *mp = pool("lendn", 256);
    const EthPort a = up("net_ipoib_lna", "provider=inproc,dev=lendn-a,l2=ipoib", mp);
    const EthPort b = up("net_ipoib_lnb", "provider=inproc,dev=lendn-b,l2=ipoib,zero_copy=0", mp);
    const int off = rte_pmd_ipoib_dynfield_offset();
    REQUIRE(off >= 0);
    // The IPoIB header (IPv4), then the datagram; to the partition's broadcast address.
    const auto ip = ipv4_udp(0x0affffff, 900);
    std::vector<std::uint8_t> frame{0x08, 0x00, 0x00, 0x00};
    frame.insert(frame.end(), ip.begin(), ip.end());
    rte_mbuf *m = mbuf_with(mp, frame);
    static const std::uint8_t kBcastHw[20] = {0x00, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff,
                                              0,    0,    0,    0,    0,    0,    0xff, 0xff, 0xff, 0xff};
    std::memcpy(rte_pmd_ipoib_addr(m, off)->hwaddr, kBcastHw, 20);
    rte_pmd_ipoib_addr(m, off)->lid = 0;
    rte_mbuf *got = exchange(a.id, b.id, m);
    REQUIRE(got);
    CHECK(RTE_MBUF_HAS_EXTBUF(got));
    CHECK(bytes_of(got) == frame);
    const auto *from = rte_pmd_ipoib_addr(got, off);
    const std::uint32_t qpn = std::uint32_t{from->hwaddr[1]} << 16 | std::uint32_t{from->hwaddr[2]} << 8 | from->hwaddr[3];
    CHECK(qpn != 0);  // A's QPN (the sender), not zero
    CHECK(xstat(b.id, "rx_lent_frames") == 1);
    rte_pktmbuf_free(got);
    close(a);
    close(b);
}

namespace {

// An Ethernet ARP request from mac for 10.0.0.2, broadcast.
std::vector<std::uint8_t> arp_request(const rte_ether_addr &mac) {
    std::vector<std::uint8_t> f(kBcast.addr_bytes, kBcast.addr_bytes + 6);
    f.insert(f.end(), mac.addr_bytes, mac.addr_bytes + 6);
    const std::uint8_t arp[] = {0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1};
    f.insert(f.end(), arp, arp + sizeof arp);
    f.insert(f.end(), mac.addr_bytes, mac.addr_bytes + 6);
    const std::uint8_t rest[] = {10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2};
    f.insert(f.end(), rest, rest + sizeof rest);
    return f;
}

// m as two segments (the first `first` bytes, then the rest).
rte_mbuf *two_segments(rte_mempool *mp, const std::vector<std::uint8_t> &f, std::size_t first) {
    rte_mbuf *h = mbuf_with(mp, std::vector<std::uint8_t>(f.begin(), f.begin() + static_cast<long>(first)));
    rte_mbuf *t = mbuf_with(mp, std::vector<std::uint8_t>(f.begin() + static_cast<long>(first), f.end()));
    REQUIRE(rte_pktmbuf_chain(h, t) == 0);
    return h;
}

// Poll port until one frame arrives (others are freed).
rte_mbuf *receive_one(std::uint16_t port, int ms = 2000) {
    for (int i = 0; i < ms; ++i) {
        rte_mbuf *burst[8];
        const std::uint16_t n = rte_eth_rx_burst(port, 0, burst, 8);
        if (n) {
            rte_pktmbuf_free_bulk(burst + 1, n - 1u);
            return burst[0];
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return nullptr;
}

} // namespace

// The in-process HCA registers any memory and scatters a receive to two
// entries, as a verbs device does: the driver receives into the RX queue's
// own mbufs (zero copy) unless told not to (zero_copy=0).
TEST_CASE("two ports in one process: zero copy receives into the queue's mbufs; zero_copy=0 copies") {
    rte_mempool *mp = pool("two_ports", 2048);  // (the EAL has 128 MB: pools are shared by name)
    const unsigned avail = rte_mempool_avail_count(mp);
    const EthPort a = up("net_ipoib_tza", "provider=inproc,dev=unit-za", mp);
    const EthPort b = up("net_ipoib_tzb", "provider=inproc,dev=unit-zb", mp);
    const EthPort c = up("net_ipoib_tzc", "provider=inproc,dev=unit-zc,zero_copy=0,rx_copy_max=65535", mp);
    // The receive queues of A and B hold kRxDesc of the pool's mbufs each; C's its own buffers.
    CHECK(avail - rte_mempool_avail_count(mp) == 2 * kRxDesc);
    const rte_ether_addr mac_a = mac_of(a.id);

    // Broadcasts of several sizes, one of them in two segments: each arrives
    // intact at B in place (the Ethernet header right in front of the L3
    // header at the usual data offset, in an mbuf of the queue's pool) and at
    // C copied into a fresh mbuf.
    std::uint64_t c_bytes = 0;
    const std::size_t sizes[] = {1, 100, 1000, 2044 - 28};
    for (std::size_t n : sizes) {
        for (bool chained : {false, true}) {
            INFO("UDP payload " << n << (chained ? ", two segments" : ""));
            const auto f = eth_frame(kBcast, mac_a, ipv4_udp(0x0affffff, n, IPPROTO_UDP));
            rte_mbuf *m = chained ? two_segments(mp, f, 14 + 20) : mbuf_with(mp, f);
            REQUIRE(rte_eth_tx_burst(a.id, 0, &m, 1) == 1);
            rte_mbuf *at_b = receive_one(b.id), *at_c = receive_one(c.id);
            drain(a.id);  // A's own copy, discarded
            REQUIRE(at_b);
            REQUIRE(at_c);
            for (rte_mbuf *got : {at_b, at_c}) {
                const auto g = bytes_of(got);
                REQUIRE(g.size() == f.size());
                CHECK(std::equal(g.begin(), g.begin() + 6, f.begin()));     // broadcast
                CHECK(std::equal(g.begin() + 12, g.end(), f.begin() + 12));  // EtherType and the IPv4 packet
                CHECK(got->nb_segs == 1);
                CHECK(got->pool == mp);
            }
            CHECK(at_b->data_off == RTE_PKTMBUF_HEADROOM - RTE_ETHER_HDR_LEN);  // received where it lies
            CHECK(at_c->data_off == RTE_PKTMBUF_HEADROOM);                      // appended into a new mbuf
            c_bytes += f.size();
            rte_pktmbuf_free(at_b);
            rte_pktmbuf_free(at_c);
        }
    }
    CHECK(xstat(b.id, "rx_copied_bytes") == 0);
    CHECK(xstat(c.id, "rx_copied_bytes") == c_bytes);

    // ARP is rewritten (20-byte IPoIB addresses to MACs) by copying, even with zero copy.
    rte_mbuf *m = mbuf_with(mp, arp_request(mac_a));
    REQUIRE(rte_eth_tx_burst(a.id, 0, &m, 1) == 1);
    rte_mbuf *arp = receive_one(b.id);
    drain(a.id);
    drain(c.id);
    REQUIRE(arp);
    CHECK(arp->pkt_len == RTE_ETHER_HDR_LEN + 28);
    CHECK(xstat(b.id, "rx_arp_translated") == 1);
    CHECK(xstat(b.id, "rx_copied_bytes") == arp->pkt_len);
    rte_pktmbuf_free(arp);

    // The pool empty: B cannot refill the slot, so the frame is dropped
    // (rx_nombuf) and the slot keeps its mbuf, which takes the next frame.
    const auto f = eth_frame(kBcast, mac_a, ipv4_udp(0x0affffff, 300, IPPROTO_UDP));
    rte_mbuf *first = mbuf_with(mp, f), *second = mbuf_with(mp, f);
    REQUIRE(rte_eth_tx_burst(a.id, 0, &first, 1) == 1);  // (in B's receive queue at once: the HCA is in-process)
    std::vector<rte_mbuf *> hoard;  // after the send: its completion gave its mbuf back
    while (rte_mbuf *x = rte_pktmbuf_alloc(mp))
        hoard.push_back(x);
    rte_eth_stats sb{};
    for (int i = 0; i < 2000 && sb.rx_nombuf == 0; ++i) {
        CHECK(drain(b.id) == 0);
        REQUIRE(rte_eth_stats_get(b.id, &sb) == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(sb.rx_nombuf == 1);
    rte_pktmbuf_free_bulk(hoard.data(), static_cast<unsigned>(hoard.size()));
    drain(a.id);
    drain(c.id);
    REQUIRE(rte_eth_tx_burst(a.id, 0, &second, 1) == 1);
    rte_mbuf *after = receive_one(b.id);
    REQUIRE(after);
    CHECK(bytes_of(after).size() == f.size());
    rte_pktmbuf_free(after);
    drain(a.id);
    drain(c.id);

    // Sends completed and freed: what the pool misses is what the receive queues hold.
    // (and each RX queue's cache of at most a burst of fresh mbufs, for frames it copies).
    REQUIRE(rte_eth_tx_burst(a.id, 0, nullptr, 0) == 0);
    const auto held = [&] { return avail - rte_mempool_avail_count(mp); };
    CHECK(held() >= 2 * kRxDesc);
    CHECK(held() <= 2 * kRxDesc + 3 * ipoib::pmd::kBurstMax);
    // Stopped and started again: the same QP keeps its mbufs posted.
    rte_eth_dev_stop(b.id);
    REQUIRE(rte_eth_dev_start(b.id) == 0);
    CHECK(held() >= 2 * kRxDesc);
    CHECK(held() <= 2 * kRxDesc + 3 * ipoib::pmd::kBurstMax);
    close(a);
    close(b);
    close(c);
    CHECK(rte_mempool_avail_count(mp) == avail);  // every mbuf back, the posted ones too
}

// What the primary answers a secondary process (ipoib_mp.cpp): the requests
// are built here as a secondary builds them and handed to the handler the
// primary's rte_mp action calls.
TEST_CASE("multi-process: the primary answers stats, xstats and dev_info as its ethdev API; bad requests are "
          "refused and counted") {
    using namespace ipoib::pmd;
    rte_mempool *mp = pool("mp_answers", 2048);
    const EthPort a = up("net_ipoib_ma", "provider=inproc,dev=unit-ma", mp);
    const EthPort b = up("net_ipoib_mb", "provider=inproc,dev=unit-mb", mp);
    const auto ip = ipv4_udp(0x0affffff, 100);
    rte_mbuf *got = exchange(a.id, b.id, mbuf_with(mp, eth_frame(kBcast, mac_of(a.id), ip)));
    REQUIRE(got);
    rte_pktmbuf_free(got);

    constexpr std::size_t kLen = 64 * 1024;
    auto *buf = static_cast<unsigned char *>(rte_zmalloc("mp_test", kLen, 64));
    REQUIRE(buf);
    auto ask = [&](MpOp op, const char *name, void *at, std::uint32_t len) {
        MpRequest r{.op = op, .len = len, .buf = reinterpret_cast<std::uintptr_t>(at), .name = {}};
        std::snprintf(r.name, sizeof r.name, "%s", name);
        return mp_answer(&r, sizeof r);
    };
    REQUIRE(ask(MpOp::stats, "net_ipoib_mb", buf, kLen) == 0);
    rte_eth_stats direct{};
    REQUIRE(rte_eth_stats_get(b.id, &direct) == 0);
    const auto *answered = reinterpret_cast<const rte_eth_stats *>(buf);
    CHECK(answered->ipackets == 1);
    CHECK(answered->ipackets == direct.ipackets);
    CHECK(answered->ibytes == direct.ibytes);
    CHECK(answered->opackets == direct.opackets);

    const int n = ask(MpOp::xstats, "net_ipoib_ma", buf, kLen);
    const int names = rte_eth_xstats_get_names_by_id(a.id, nullptr, 0, nullptr);
    CHECK(n > 10);
    CHECK(n < names);  // the driver's own; ethdev adds the basic and per-queue ones
    // The driver's values are the last n of what the ethdev API gives.
    const auto *x = reinterpret_cast<const rte_eth_xstat *>(buf);
    std::vector<rte_eth_xstat> all(static_cast<std::size_t>(names));
    REQUIRE(rte_eth_xstats_get(a.id, all.data(), static_cast<unsigned>(names)) == names);
    int same = 0;
    for (int i = 0; i < n; ++i)
        same += x[i].value == all[static_cast<std::size_t>(names - n + i)].value;
    CHECK(same == n);
    CHECK(xstat(a.id, "tx_good_packets") == 1);

    REQUIRE(ask(MpOp::dev_info, "net_ipoib_ma", buf, kLen) == 0);
    CHECK(reinterpret_cast<const rte_eth_dev_info *>(buf)->max_mtu == 2044);

    // Refused, each counted.
    const std::uint64_t bad0 = mp_bad_requests();
    unsigned char on_stack[256];
    CHECK(ask(MpOp::stats, "net_ipoib_ma", on_stack, sizeof on_stack) == -EFAULT);  // not DPDK memory
    CHECK(ask(MpOp::stats, "net_ipoib_ma", nullptr, kLen) == -EFAULT);
    CHECK(ask(MpOp::stats, "net_ipoib_ma", buf, 16) == -EINVAL);                     // too short for stats
    CHECK(ask(static_cast<MpOp>(99), "net_ipoib_ma", buf, kLen) == -EINVAL);        // no such op
    CHECK(mp_answer(buf, 3) == -EINVAL);                                               // not a request
    CHECK(mp_bad_requests() == bad0 + 5);
    CHECK(xstat(a.id, "mp_bad_requests") == bad0 + 5);
    CHECK(ask(MpOp::stats, "net_ipoib_nosuch", buf, kLen) == -ENODEV);  // no such port (not malformed)
    CHECK(mp_bad_requests() == bad0 + 5);

    rte_free(buf);
    close(a);
    close(b);
    // After its close, a port is not found.
    buf = static_cast<unsigned char *>(rte_zmalloc("mp_test", kLen, 64));
    MpRequest r{.op = MpOp::stats, .len = static_cast<std::uint32_t>(kLen), .buf = reinterpret_cast<std::uintptr_t>(buf),
                .name = "net_ipoib_ma"};
    CHECK(mp_answer(&r, sizeof r) == -ENODEV);
    rte_free(buf);
}
