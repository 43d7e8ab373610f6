// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib offloads: what the port advertises, and the work done for them
// on the fast path. Today: checksums, computed in software on transmit (an
// IPoIB HCA in datagram mode does them for Linux) and the IPv4 header
// checksum verified on receive, plus packet types. TSO and others go here.
#pragma once

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include <cstdint>

#include "ipoib/wire.hpp"

namespace ipoib::pmd {

inline constexpr std::uint64_t kRxOffloadCapa = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_SCATTER;
inline constexpr std::uint64_t kTxOffloadCapa = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM |
                                                RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;

inline constexpr std::uint32_t kSupportedPtypes[] = {
    RTE_PTYPE_L2_ETHER, RTE_PTYPE_L2_ETHER_ARP, RTE_PTYPE_L3_IPV4, RTE_PTYPE_L3_IPV6,
    RTE_PTYPE_L4_TCP,   RTE_PTYPE_L4_UDP,       RTE_PTYPE_L4_ICMP, RTE_PTYPE_UNKNOWN};

// Where a TCP or UDP header keeps its checksum.
inline constexpr unsigned kTcpCksumOffset = 16;
inline constexpr unsigned kUdpCksumOffset = 6;

// The packet type of a received frame from its EtherType and L3 header.
inline std::uint32_t packet_type(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype) noexcept {
    std::uint32_t t = RTE_PTYPE_L2_ETHER;
    std::uint8_t proto = 0;
    if (ethertype == wire::kEtherTypeIPv4 && len >= sizeof(rte_ipv4_hdr)) {
        t |= RTE_PTYPE_L3_IPV4;
        proto = l3[9];
    } else if (ethertype == wire::kEtherTypeIPv6 && len >= sizeof(rte_ipv6_hdr)) {
        t |= RTE_PTYPE_L3_IPV6;
        proto = l3[6];
    } else if (ethertype == wire::kEtherTypeArp) {
        return RTE_PTYPE_L2_ETHER_ARP;
    }
    switch (proto) {
    case IPPROTO_TCP: t |= RTE_PTYPE_L4_TCP; break;
    case IPPROTO_UDP: t |= RTE_PTYPE_L4_UDP; break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: t |= RTE_PTYPE_L4_ICMP; break;
    default: break;
    }
    return t;
}

// RX: the IPv4 header checksum's verdict as mbuf flags (0 for other frames).
inline std::uint64_t rx_cksum_flags(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype) noexcept {
    if (ethertype != wire::kEtherTypeIPv4 || len < sizeof(rte_ipv4_hdr))
        return 0;
    const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(l3);
    const unsigned ihl = (ip->version_ihl & 0xf) * 4u;
    return ihl >= sizeof(rte_ipv4_hdr) && ihl <= len && rte_raw_cksum(ip, ihl) == 0xffff
               ? RTE_MBUF_F_RX_IP_CKSUM_GOOD
               : RTE_MBUF_F_RX_IP_CKSUM_BAD;
}

// TX: fill the checksums the mbuf's offload flags ask for (l2_len 0 taken
// as an Ethernet header). The headers must be in the first segment.
inline void tx_cksum(rte_mbuf *m) noexcept {
    const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_TX_L4_MASK;
    if (!(m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) && !l4)
        return;
    if (m->l2_len == 0)
        m->l2_len = RTE_ETHER_HDR_LEN;
    const bool tcp = l4 == RTE_MBUF_F_TX_TCP_CKSUM, udp = l4 == RTE_MBUF_F_TX_UDP_CKSUM;
    if (m->ol_flags & RTE_MBUF_F_TX_IPV4) {
        auto *ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr *, m->l2_len);
        if (m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) {
            ip->hdr_checksum = 0;
            ip->hdr_checksum = rte_ipv4_cksum(ip);
        }
        if (tcp || udp) {
            std::uint8_t *l4h = reinterpret_cast<std::uint8_t *>(ip) + m->l3_len;
            auto *ck = reinterpret_cast<std::uint16_t *>(l4h + (tcp ? kTcpCksumOffset : kUdpCksumOffset));
            *ck = 0;
            *ck = rte_ipv4_udptcp_cksum(ip, l4h);
        }
    } else if ((m->ol_flags & RTE_MBUF_F_TX_IPV6) && (tcp || udp)) {
        auto *ip = rte_pktmbuf_mtod_offset(m, rte_ipv6_hdr *, m->l2_len);
        std::uint8_t *l4h = reinterpret_cast<std::uint8_t *>(ip) + m->l3_len;
        auto *ck = reinterpret_cast<std::uint16_t *>(l4h + (tcp ? kTcpCksumOffset : kUdpCksumOffset));
        *ck = 0;
        *ck = rte_ipv6_udptcp_cksum(ip, l4h);
    }
}

} // namespace ipoib::pmd
