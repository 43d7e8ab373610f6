// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib connected mode, path MTU: a port of MTU 65520 whose frame goes to
// a destination reached by datagrams (a peer without connected mode, a
// multicast group: 2044 bytes here) must not lose it silently. As Linux's
// ipoib_cm does for its own stack, the driver answers the application the
// way a router would: ICMP "fragmentation needed" (IPv4 with DF) or ICMPv6
// "packet too big", from the destination's address to the sender's, with
// the datagram MTU; the application's stack (the kernel behind a tap, a
// DPDK stack) lowers its path MTU and sends again. IPv4 without DF is
// fragmented instead (ipoib_tx.cpp, DPDK's ip_frag). The messages reach
// the application through rx_burst (local_rx), counted as received frames.
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "ipoib_port.hpp"

namespace ipoib::pmd {

namespace {

constexpr std::uint32_t kEthHdr = RTE_ETHER_HDR_LEN;
constexpr std::uint32_t kLocalRxRing = 256;
constexpr std::uint32_t kFragDirectMbufs = 2048, kFragIndirectMbufs = 4096;
constexpr std::uint32_t kFragDirectRoom = 1024;  // a fragment's header; an ICMP message with the offending packet
constexpr std::uint32_t kIcmp4Quote = 548;       // of the packet that was too big (576 - IPv4 - ICMP headers)
constexpr std::uint32_t kIcmp6Quote = 900;       // (fits kFragDirectRoom; RFC 4443: as much as fits 1280)

// Not answered: ICMP errors (no error about an error), and packets from
// nobody (unspecified, multicast sources).
bool answerable_v4(const std::uint8_t *ip, std::uint32_t len) {
    if (len < sizeof(rte_ipv4_hdr))
        return false;
    const std::uint32_t src = wire::load_be32(ip + 12);
    if (src == 0 || (src >> 28) == 0xe)
        return false;
    const std::uint32_t ihl = (ip[0] & 0xf) * 4u;
    if (ip[9] == IPPROTO_ICMP && len >= ihl + 1) {
        const std::uint8_t type = ip[ihl];
        return type == 0 || type == 8 || type == 13 || type == 14;  // echo, timestamp: queries and replies
    }
    return true;
}
bool answerable_v6(const std::uint8_t *ip, std::uint32_t len) {
    if (len < sizeof(rte_ipv6_hdr))
        return false;
    static constexpr std::uint8_t kZero[16] = {};
    if (std::memcmp(ip + 8, kZero, 16) == 0 || ip[8] == 0xff)
        return false;
    if (ip[6] == IPPROTO_ICMPV6 && len >= sizeof(rte_ipv6_hdr) + 1)
        return ip[40] >= 128;  // informational (echo, ND), not an error
    return true;
}

} // namespace

void pmtu_report(TxQueue *q, const rte_mbuf *m, std::uint16_t et, std::uint32_t mtu) noexcept {
    PortData *fp = q->fp;
    if (!fp->local_rx || !fp->frag_direct)
        return;
    const std::uint8_t *frame = rte_pktmbuf_mtod(m, const std::uint8_t *);
    const std::uint8_t *l3 = frame + kEthHdr;
    const std::uint32_t avail = m->data_len - kEthHdr, l3len = m->pkt_len - kEthHdr;
    const bool v4 = et == wire::kEtherTypeIPv4;
    if (v4 ? !answerable_v4(l3, avail) : (et != wire::kEtherTypeIPv6 || !answerable_v6(l3, avail)))
        return;
    rte_mbuf *r = rte_pktmbuf_alloc(fp->frag_direct);
    if (!r) {
        ++q->st.pmtu_icmp_lost;
        return;
    }
    const std::uint32_t quote = std::min(l3len, v4 ? kIcmp4Quote : kIcmp6Quote);
    const std::uint32_t iph = v4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr), icmph = 8;
    const std::uint32_t total = kEthHdr + iph + icmph + quote;
    auto *out = reinterpret_cast<std::uint8_t *>(rte_pktmbuf_append(r, static_cast<std::uint16_t>(total)));
    if (!out) {
        rte_pktmbuf_free(r);
        ++q->st.pmtu_icmp_lost;
        return;
    }
    // From the destination back to the sender, as its router would.
    std::memcpy(out, frame + 6, 6);
    std::memcpy(out + 6, frame, 6);
    wire::store_be16(out + 12, et);
    std::uint8_t *ip = out + kEthHdr, *icmp = ip + iph;
    std::memset(ip, 0, iph + icmph);
    const void *orig = rte_pktmbuf_read(m, kEthHdr, quote, icmp + icmph);
    if (orig != icmp + icmph)
        std::memcpy(icmp + icmph, orig, quote);
    if (v4) {
        auto *h = reinterpret_cast<rte_ipv4_hdr *>(ip);
        h->version_ihl = 0x45;
        h->type_of_service = 0xc0;  // internetwork control, as ICMP errors go
        h->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(iph + icmph + quote));
        h->time_to_live = 64;
        h->next_proto_id = IPPROTO_ICMP;
        std::memcpy(&h->src_addr, l3 + 16, 4);
        std::memcpy(&h->dst_addr, l3 + 12, 4);
        h->hdr_checksum = rte_ipv4_cksum(h);
        icmp[0] = 3;  // destination unreachable
        icmp[1] = 4;  // fragmentation needed and DF set (RFC 1191: the next hop's MTU in bytes 6-7)
        wire::store_be16(icmp + 6, static_cast<std::uint16_t>(mtu));
        const std::uint16_t c = static_cast<std::uint16_t>(~rte_raw_cksum(icmp, icmph + quote));
        std::memcpy(icmp + 2, &c, 2);
    } else {
        auto *h = reinterpret_cast<rte_ipv6_hdr *>(ip);
        h->vtc_flow = rte_cpu_to_be_32(0x60000000);
        h->payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(icmph + quote));
        h->proto = IPPROTO_ICMPV6;
        h->hop_limits = 255;
        std::memcpy(h->src_addr, l3 + 24, 16);
        std::memcpy(h->dst_addr, l3 + 8, 16);
        icmp[0] = 2;  // packet too big (RFC 4443), the MTU in bytes 4-7
        wire::store_be32(icmp + 4, mtu);
        const std::uint16_t c = rte_ipv6_udptcp_cksum(h, icmp);
        std::memcpy(icmp + 2, &c, 2);
    }
    r->port = fp->port_id;
    r->packet_type = RTE_PTYPE_L2_ETHER | (v4 ? RTE_PTYPE_L3_IPV4 : RTE_PTYPE_L3_IPV6) | RTE_PTYPE_L4_ICMP;
    if (rte_ring_mp_enqueue(fp->local_rx, r) != 0) {
        rte_pktmbuf_free(r);
        ++q->st.pmtu_icmp_lost;
        return;
    }
    ++q->st.pmtu_icmp;
}

std::uint16_t local_rx(RxQueue *q, rte_mbuf **pkts, std::uint16_t n) noexcept {
    const auto got = static_cast<std::uint16_t>(
        rte_ring_mc_dequeue_burst(q->fp->local_rx, reinterpret_cast<void **>(pkts), n, nullptr));
    for (std::uint16_t k = 0; k < got; ++k) {
        ++q->st.packets;
        q->st.bytes += pkts[k]->pkt_len;
    }
    q->st.local += got;
    return got;
}

bool pmtu_resources(PortData *fp, const char *name, int socket) noexcept {
    const std::string id = std::to_string(fp->port_id);
    fp->local_rx = rte_ring_create(("ipoib_lrx_" + id).c_str(), kLocalRxRing, socket, 0);
    fp->frag_direct = rte_pktmbuf_pool_create(("ipoib_frd_" + id).c_str(), kFragDirectMbufs, 64, 0,
                                              RTE_PKTMBUF_HEADROOM + kFragDirectRoom, socket);
    fp->frag_indirect = rte_pktmbuf_pool_create(("ipoib_fri_" + id).c_str(), kFragIndirectMbufs, 64, 0, 0, socket);
    if (fp->local_rx && fp->frag_direct && fp->frag_indirect)
        return true;
    IPOIB_LOG(ERR, "%s: connected mode: cannot make its ICMP ring and fragment pools: %s", name,
              rte_strerror(rte_errno));
    pmtu_release(fp);
    return false;
}

void pmtu_release(PortData *fp) noexcept {
    if (fp->local_rx) {
        void *m;
        while (rte_ring_dequeue(fp->local_rx, &m) == 0)
            rte_pktmbuf_free(static_cast<rte_mbuf *>(m));
        rte_ring_free(fp->local_rx);
    }
    rte_mempool_free(fp->frag_direct);
    rte_mempool_free(fp->frag_indirect);
    fp->local_rx = nullptr;
    fp->frag_direct = fp->frag_indirect = nullptr;
}

} // namespace ipoib::pmd
