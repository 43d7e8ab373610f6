// SPDX-License-Identifier: BSD-3-Clause
// tap_bridge: a small DPDK application joining a Linux tap interface and one
// ethdev (net_ipoib), for connected mode's tests with the Linux stack at
// MTU 65520, which Debian's DPDK 22.11 cannot give through its own kernel
// ports (net_tap caps frames at 1522 bytes, net_pcap's capture at ~16 KB).
//
// Frames from the kernel (read whole, up to 64 KB) become chains of 2 KB
// mbufs; with --offload the tap hands over TCP/UDP whose checksums the
// kernel left to the device (virtio-net header, NEEDS_CSUM), and the bridge
// asks the port to compute them (RTE_MBUF_F_TX_*_CKSUM), as a vhost/virtio
// backend does. Frames from the port are written to the tap from their
// chains; a checksum the port reports NONE ("not in the data, integrity
// verified": a connection that agreed on IB CRC as checksum) is passed to the
// kernel as a partial checksum (L4: NEEDS_CSUM, which the kernel's receive
// path counts as verified), or computed here (the IPv4 header, which the
// kernel always checks), and BAD ones are dropped and counted.
//
// usage: tap_bridge EAL-ARGS -- --tap NAME [--offload]
// Runs until SIGTERM/SIGINT; then prints one line of counters and whether
// every mbuf came back to its pool after the port was closed.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

// The virtio-net header a tap with IFF_VNET_HDR puts before each frame
// (linux/virtio_net.h, which C++ cannot include: a field is named `class`).
struct virtio_net_hdr {
    std::uint8_t flags;
    std::uint8_t gso_type;
    std::uint16_t hdr_len, gso_size, csum_start, csum_offset;
};
static_assert(sizeof(virtio_net_hdr) == 10);
constexpr std::uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1, VIRTIO_NET_HDR_F_DATA_VALID = 2;

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr unsigned kMbufs = 8192, kRoom = 2048, kBurst = 32, kMaxFrame = 65550;

struct Counters {
    unsigned long to_port = 0, to_kernel = 0, to_port_dropped = 0, bad_cksum = 0, cksum_none = 0, offloaded = 0;
};

int open_tap(const char *name, bool offload) {
    const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (fd < 0)
        return -1;
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    int hdr = sizeof(virtio_net_hdr);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, offload ? TUN_F_CSUM : 0) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// A frame read from the tap (after its virtio-net header) into a chain of 2 KB mbufs.
rte_mbuf *to_chain(rte_mempool *mp, const std::uint8_t *f, std::size_t len) {
    rte_mbuf *head = nullptr, *last = nullptr;
    for (std::size_t off = 0; off < len;) {
        rte_mbuf *m = rte_pktmbuf_alloc(mp);
        if (!m) {
            rte_pktmbuf_free(head);
            return nullptr;
        }
        const std::size_t n = std::min<std::size_t>(len - off, rte_pktmbuf_tailroom(m));
        std::memcpy(rte_pktmbuf_append(m, static_cast<std::uint16_t>(n)), f + off, n);
        off += n;
        if (!head) {
            head = last = m;
        } else {
            last->next = m;
            last = m;
            ++head->nb_segs;
            head->pkt_len += static_cast<std::uint32_t>(n);
        }
    }
    return head;
}

// The kernel left the L4 checksum to the device: ask the port for it.
void offload_flags(rte_mbuf *m, const virtio_net_hdr &h, Counters &c) {
    if (!(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) || m->data_len < 14 + 20)
        return;
    const std::uint8_t *f = rte_pktmbuf_mtod(m, const std::uint8_t *);
    const std::uint16_t et = static_cast<std::uint16_t>(f[12] << 8 | f[13]);
    m->l2_len = 14;
    m->l3_len = h.csum_start - 14;
    // (IPv4: the header checksum too, which the kernel did: the port may skip it as well.)
    m->ol_flags |= et == 0x0800 ? RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM : RTE_MBUF_F_TX_IPV6;
    m->ol_flags |= h.csum_offset == 16 ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM;
    ++c.offloaded;
}

// A frame from the port to the kernel: verdicts turned into the virtio-net header.
bool to_kernel(int fd, rte_mbuf *m, Counters &c) {
    const std::uint64_t ip = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK, l4 = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    if (ip == RTE_MBUF_F_RX_IP_CKSUM_BAD || l4 == RTE_MBUF_F_RX_L4_CKSUM_BAD) {
        ++c.bad_cksum;
        return false;
    }
    virtio_net_hdr h{};
    if (ip == RTE_MBUF_F_RX_IP_CKSUM_NONE && m->data_len >= 14 + 20) {
        auto *iph = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr *, 14);
        iph->hdr_checksum = 0;
        iph->hdr_checksum = rte_ipv4_cksum(iph);
    }
    // L4 NONE: the field holds what the sender's stack left for its device
    // (the pseudo-header's sum); the kernel takes the frame as a partial
    // checksum it may complete (CHECKSUM_PARTIAL counts as verified on
    // receive), as from a virtio guest. (tun ignores DATA_VALID.)
    const std::uint8_t *f = rte_pktmbuf_mtod(m, const std::uint8_t *);
    const std::uint16_t et = static_cast<std::uint16_t>(f[12] << 8 | f[13]);
    if (l4 == RTE_MBUF_F_RX_L4_CKSUM_NONE && m->data_len >= 14 + 40) {
        const bool v4 = et == 0x0800;
        const unsigned l3 = v4 ? (f[14] & 0xf) * 4u : 40u;
        const std::uint8_t proto = v4 ? f[14 + 9] : f[14 + 6];
        h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h.csum_start = static_cast<std::uint16_t>(14 + l3);
        h.csum_offset = proto == 6 ? 16 : 6;
    }
    c.cksum_none += ip == RTE_MBUF_F_RX_IP_CKSUM_NONE || l4 == RTE_MBUF_F_RX_L4_CKSUM_NONE;
    std::vector<iovec> iov{{&h, sizeof h}};
    for (rte_mbuf *s = m; s; s = s->next)
        iov.push_back({rte_pktmbuf_mtod(s, void *), s->data_len});
    return writev(fd, iov.data(), static_cast<int>(iov.size())) > 0;
}

} // namespace

int main(int argc, char **argv) {
    const int used = rte_eal_init(argc, argv);
    if (used < 0)
        return 1;
    argc -= used;
    argv += used;
    std::string tap;
    bool offload = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--tap") == 0 && i + 1 < argc)
            tap = argv[++i];
        else if (std::strcmp(argv[i], "--offload") == 0)
            offload = true;
    }
    if (tap.empty() || rte_eth_dev_count_avail() != 1) {
        std::fprintf(stderr, "usage: tap_bridge EAL-ARGS -- --tap NAME [--offload] (one ethdev)\n");
        return 2;
    }
    const int fd = open_tap(tap.c_str(), offload);
    if (fd < 0) {
        std::perror("tap");
        return 1;
    }
    rte_mempool *mp = rte_pktmbuf_pool_create("bridge", kMbufs, 256, 0, RTE_PKTMBUF_HEADROOM + kRoom, rte_socket_id());
    const std::uint16_t port = 0;
    rte_eth_conf conf{};
    conf.rxmode.offloads = RTE_ETH_RX_OFFLOAD_SCATTER | RTE_ETH_RX_OFFLOAD_IPV4_CKSUM |
                           RTE_ETH_RX_OFFLOAD_UDP_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    conf.txmode.offloads = RTE_ETH_TX_OFFLOAD_MULTI_SEGS | RTE_ETH_TX_OFFLOAD_IPV4_CKSUM |
                           RTE_ETH_TX_OFFLOAD_UDP_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    rte_eth_dev_info info;
    if (!mp || rte_eth_dev_info_get(port, &info) != 0) {
        std::fprintf(stderr, "tap_bridge: no mbuf pool or port\n");
        return 1;
    }
    conf.rxmode.mtu = info.max_mtu;
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 || rte_eth_rx_queue_setup(port, 0, 512, 0, nullptr, mp) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 512, 0, nullptr) != 0 || rte_eth_dev_start(port) != 0) {
        std::fprintf(stderr, "tap_bridge: port setup failed\n");
        return 1;
    }
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    std::printf("tap_bridge: %s <-> port %u (MTU %u)%s\n", tap.c_str(), port, info.max_mtu,
                offload ? ", kernel checksums offloaded" : "");
    std::fflush(stdout);
    Counters c;
    std::vector<std::uint8_t> buf(sizeof(virtio_net_hdr) + kMaxFrame);
    while (!g_stop) {
        bool idle = true;
        for (unsigned k = 0; k < kBurst; ++k) {  // kernel -> port
            const ssize_t n = read(fd, buf.data(), buf.size());
            if (n <= static_cast<ssize_t>(sizeof(virtio_net_hdr)))
                break;
            idle = false;
            virtio_net_hdr h;
            std::memcpy(&h, buf.data(), sizeof h);
            rte_mbuf *m = to_chain(mp, buf.data() + sizeof h, static_cast<std::size_t>(n) - sizeof h);
            if (!m) {
                ++c.to_port_dropped;
                continue;
            }
            offload_flags(m, h, c);
            if (rte_eth_tx_burst(port, 0, &m, 1) == 1) {
                ++c.to_port;
            } else {
                rte_pktmbuf_free(m);
                ++c.to_port_dropped;
            }
        }
        rte_mbuf *rx[kBurst];
        const std::uint16_t got = rte_eth_rx_burst(port, 0, rx, kBurst);  // port -> kernel
        for (std::uint16_t k = 0; k < got; ++k) {
            c.to_kernel += to_kernel(fd, rx[k], c);
            rte_pktmbuf_free(rx[k]);
        }
        if (idle && !got) {
            pollfd p{fd, POLLIN, 0};
            poll(&p, 1, 1);  // (1 ms: the port is polled too)
        }
    }
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    const bool back = rte_mempool_avail_count(mp) == kMbufs;
    std::printf("tap_bridge: to_port %lu to_kernel %lu to_port_dropped %lu bad_cksum %lu cksum_none %lu offloaded %lu "
                "mbufs_back %s\n", c.to_port, c.to_kernel, c.to_port_dropped, c.bad_cksum, c.cksum_none, c.offloaded,
                back ? "yes" : "no");
    std::fflush(stdout);
    close(fd);
    rte_mempool_free(mp);
    rte_eal_cleanup();
    return 0;
}
