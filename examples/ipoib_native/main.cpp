// SPDX-License-Identifier: BSD-3-Clause
// ipoib_native: an application that speaks IPoIB itself, through net_ipoib's
// native mode (l2=ipoib) and its public header rte_pmd_ipoib.h.
//
//   ipoib_native <EAL args with one --vdev=net_ipoib0,l2=ipoib> -- pong SECONDS
//   ipoib_native <EAL args ...> -- ping COUNT
//
// ping sends COUNT IPv4 frames (4-byte IPoIB header + a small IPv4/UDP
// packet) to the partition's broadcast address, one per millisecond; pong
// answers each frame it receives, unicast to the sender's QPN and LID taken
// from the mbuf's IPoIB address field. Both print what they counted:
//   pong: received N replied N
//   ping: sent N received N from-qpn Q lid L
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "rte_pmd_ipoib.h"

namespace {

using Clock = std::chrono::steady_clock;

int fail(const char *what) {
    std::fprintf(stderr, "ipoib_native: %s\n", what);
    return 1;
}

// The broadcast address of the default partition: flags 0, QPN 0xffffff, MGID ff12:401b:ffff::ffff:ffff.
void broadcast(struct rte_pmd_ipoib_addr *a) {
    static const std::uint8_t hw[20] = {0x00, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff,
                                        0,    0,    0,    0,    0,    0,    0xff, 0xff, 0xff, 0xff};
    std::memcpy(a->hwaddr, hw, 20);
    a->lid = 0;
}

rte_mbuf *make_frame(rte_mempool *mp, std::uint32_t seq) {
    rte_mbuf *m = rte_pktmbuf_alloc(mp);
    if (!m)
        return nullptr;
    const std::uint16_t len = 4 + 20 + 8 + 4;
    auto *p = reinterpret_cast<std::uint8_t *>(rte_pktmbuf_append(m, len));
    if (!p) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    std::memset(p, 0, len);
    p[0] = 0x08;  // EtherType IPv4, reserved 0
    std::uint8_t *ip = p + 4;
    ip[0] = 0x45;
    ip[3] = 20 + 8 + 4;
    ip[8] = 64;
    ip[9] = 17;  // UDP
    ip[12] = 10, ip[15] = 1;
    ip[16] = 255, ip[17] = 255, ip[18] = 255, ip[19] = 255;
    std::memcpy(p + 4 + 28, &seq, 4);
    return m;
}

} // namespace

int main(int argc, char **argv) {
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0)
        return fail("EAL init failed");
    argc -= eal;
    argv += eal;
    if (argc < 3)
        return fail("usage: ipoib_native <EAL args> -- ping COUNT | pong SECONDS");
    const bool ping = std::strcmp(argv[1], "ping") == 0;
    const long n = std::atol(argv[2]);
    if (rte_eth_dev_count_avail() != 1)
        return fail("expects exactly one port (--vdev=net_ipoib0,l2=ipoib)");
    const std::uint16_t port = 0;
    rte_mempool *mp = rte_pktmbuf_pool_create("native", 4096, 128, 0, RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    rte_eth_conf conf{};
    if (!mp || rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(port, 0, 512, rte_socket_id(), nullptr, mp) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 512, rte_socket_id(), nullptr) != 0 || rte_eth_dev_start(port) != 0)
        return fail("port setup failed");
    const int off = rte_pmd_ipoib_dynfield_offset();
    if (off < 0)
        return fail("no IPoIB address field: is the port in native mode (l2=ipoib)?");
    rte_eth_link link{};
    for (int i = 0; i < 200 && !link.link_status; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        rte_eth_link_get_nowait(port, &link);
    }
    if (!link.link_status)
        return fail("link did not come up");
    std::printf("ipoib_native: %s, link up\n", ping ? "ping" : "pong");
    std::fflush(stdout);

    long sent = 0, received = 0, replied = 0;
    std::uint32_t last_qpn = 0;
    std::uint16_t last_lid = 0;
    rte_mbuf *rx[32];
    const auto end = ping ? Clock::now() + std::chrono::seconds(10) : Clock::now() + std::chrono::seconds(n);
    auto next = Clock::now();
    while (Clock::now() < end) {
        if (ping && sent < n && Clock::now() >= next) {
            next += std::chrono::milliseconds(1);
            rte_mbuf *m = make_frame(mp, static_cast<std::uint32_t>(sent));
            if (m) {
                broadcast(rte_pmd_ipoib_addr(m, off));
                sent += rte_eth_tx_burst(port, 0, &m, 1);
            }
        }
        const std::uint16_t k = rte_eth_rx_burst(port, 0, rx, 32);
        for (std::uint16_t i = 0; i < k; ++i) {
            rte_mbuf *m = rx[i];
            const auto *p = rte_pktmbuf_mtod(m, const std::uint8_t *);
            struct rte_pmd_ipoib_addr *a = rte_pmd_ipoib_addr(m, off);
            const bool ipv4 = m->pkt_len >= 4 + 20 && p[0] == 0x08 && p[1] == 0x00;
            if (!ipv4) {
                rte_pktmbuf_free(m);
                continue;
            }
            ++received;
            last_qpn = std::uint32_t{a->hwaddr[1]} << 16 | std::uint32_t{a->hwaddr[2]} << 8 | a->hwaddr[3];
            last_lid = a->lid;
            if (!ping) {
                // Answer the sender: unicast to its QPN and LID (GID unknown: no GRH on unicast).
                std::memset(a->hwaddr + 4, 0, 16);
                a->hwaddr[0] = 0;
                replied += rte_eth_tx_burst(port, 0, &m, 1);
            } else {
                rte_pktmbuf_free(m);
                if (received >= n)
                    break;
            }
        }
        if (ping && received >= n)
            break;
    }
    if (ping)
        std::printf("ping: sent %ld received %ld from-qpn %u lid %u\n", sent, received, last_qpn, last_lid);
    else
        std::printf("pong: received %ld replied %ld\n", received, replied);
    rte_eth_stats st{};
    rte_eth_stats_get(port, &st);
    std::printf("port stats: ipackets %lu opackets %lu oerrors %lu\n", static_cast<unsigned long>(st.ipackets),
                static_cast<unsigned long>(st.opackets), static_cast<unsigned long>(st.oerrors));
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    rte_eal_cleanup();
    return 0;
}
