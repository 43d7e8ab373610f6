// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib offloads: what the port advertises, and the work done for them
// on the fast path: checksums computed in software on transmit (an IPoIB HCA
// in datagram mode does them for Linux) and verified on receive (IPv4
// header always; TCP/UDP when the queue asks), packet types, and TCP
// segmentation (TSO: the headers of each segment; ipoib_tx.cpp sends them).
#pragma once

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ipoib/wire.hpp"

namespace ipoib::pmd {

// Every offload is per queue (a queue's own flags; nothing is port-wide).
inline constexpr std::uint64_t kRxOffloadCapa = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM |
                                                RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_SCATTER;
inline constexpr std::uint64_t kTxOffloadCapa = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM |
                                                RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_MULTI_SEGS |
                                                RTE_ETH_TX_OFFLOAD_TCP_TSO;
inline constexpr std::uint64_t kRxL4Cksum = RTE_ETH_RX_OFFLOAD_UDP_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;

inline constexpr std::uint32_t kSupportedPtypes[] = {
    RTE_PTYPE_L2_ETHER,     RTE_PTYPE_L2_ETHER_ARP, RTE_PTYPE_L3_IPV4, RTE_PTYPE_L3_IPV4_EXT,
    RTE_PTYPE_L3_IPV6,      RTE_PTYPE_L3_IPV6_EXT,  RTE_PTYPE_L4_TCP,  RTE_PTYPE_L4_UDP,
    RTE_PTYPE_L4_ICMP,      RTE_PTYPE_L4_FRAG,      RTE_PTYPE_UNKNOWN};

// Where a TCP or UDP header keeps its checksum.
inline constexpr unsigned kTcpCksumOffset = 16;
inline constexpr unsigned kUdpCksumOffset = 6;
inline constexpr unsigned kTcpHdrMin = 20;
inline constexpr unsigned kUdpHdrLen = 8;

// What the RX step needs of a received IP packet's headers.
struct L3Info {
    std::uint32_t ptype = 0;  // L3 and L4 RTE_PTYPE_* bits (no L2)
    std::uint32_t l4off = 0;  // from the start of the L3 header; 0: no TCP/UDP header to look at
    std::uint32_t l4len = 0;  // TCP/UDP header + payload, as the IP header says
    std::uint8_t proto = 0;
};

inline constexpr std::uint8_t kIpv6HopByHop = 0, kIpv6Routing = 43, kIpv6Fragment = 44, kIpv6DestOpts = 60;
inline constexpr unsigned kIpv6MaxExtHeaders = 8;  // more than this: reported as IPv6_EXT with an unknown L4
inline constexpr std::uint16_t kIpv4FragMask = 0x3fff;  // MF + offset

inline void l4_type(L3Info &i, std::uint8_t proto) noexcept {
    i.proto = proto;
    switch (proto) {
    case IPPROTO_TCP: i.ptype |= RTE_PTYPE_L4_TCP; break;
    case IPPROTO_UDP: i.ptype |= RTE_PTYPE_L4_UDP; break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: i.ptype |= RTE_PTYPE_L4_ICMP; break;
    default: break;
    }
}

// Parse an IPv4 or IPv6 header (and IPv6's extension headers) of a packet
// of `len` bytes, of which the first `avail` (all, by default) are
// contiguous at l3: headers are read there only. Options or extension
// headers: L3_*_EXT. A fragment: L4_FRAG, and no L4 header (only the first
// has one, and not all of it).
inline L3Info parse_l3(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype,
                       std::uint32_t avail = ~0u) noexcept {
    L3Info i;
    const std::uint32_t readable = std::min(len, avail);
    if (ethertype == wire::kEtherTypeIPv4 && readable >= sizeof(rte_ipv4_hdr)) {
        const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(l3);
        const std::uint32_t ihl = (ip->version_ihl & 0xf) * 4u, total = rte_be_to_cpu_16(ip->total_length);
        i.ptype = ihl > sizeof(rte_ipv4_hdr) ? RTE_PTYPE_L3_IPV4_EXT : RTE_PTYPE_L3_IPV4;
        if (rte_be_to_cpu_16(ip->fragment_offset) & kIpv4FragMask) {
            i.ptype |= RTE_PTYPE_L4_FRAG;
            return i;
        }
        l4_type(i, ip->next_proto_id);
        if (ihl >= sizeof(rte_ipv4_hdr) && total >= ihl && total <= len) {
            i.l4off = ihl;
            i.l4len = total - ihl;
        }
        return i;
    }
    if (ethertype == wire::kEtherTypeIPv6 && readable >= sizeof(rte_ipv6_hdr)) {
        const auto *ip = reinterpret_cast<const rte_ipv6_hdr *>(l3);
        const std::uint32_t end = sizeof(rte_ipv6_hdr) + rte_be_to_cpu_16(ip->payload_len);
        std::uint8_t next = ip->proto;
        std::uint32_t off = sizeof(rte_ipv6_hdr);
        i.ptype = RTE_PTYPE_L3_IPV6;
        for (unsigned n = 0;; ++n) {
            if (next != kIpv6HopByHop && next != kIpv6Routing && next != kIpv6Fragment && next != kIpv6DestOpts)
                break;
            i.ptype = RTE_PTYPE_L3_IPV6_EXT;
            if (n == kIpv6MaxExtHeaders || off + 8 > readable)
                return i;
            if (next == kIpv6Fragment) {
                i.ptype |= RTE_PTYPE_L4_FRAG;
                return i;
            }
            next = l3[off];
            off += (l3[off + 1] + 1u) * 8u;
        }
        l4_type(i, next);
        if (end <= len && off <= end) {
            i.l4off = off;
            i.l4len = end - off;
        }
        return i;
    }
    return i;
}

// The packet type of a received frame (Ethernet emulation: with L2_ETHER).
inline std::uint32_t packet_type(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype) noexcept {
    if (ethertype == wire::kEtherTypeArp)
        return RTE_PTYPE_L2_ETHER_ARP;
    return RTE_PTYPE_L2_ETHER | parse_l3(l3, len, ethertype).ptype;
}

// The IPv4 header's checksum verdict (GOOD or BAD), its first `avail` bytes at l3.
inline std::uint64_t ipv4_hdr_cksum_verdict(const std::uint8_t *l3, std::uint32_t avail) noexcept {
    if (avail < sizeof(rte_ipv4_hdr))
        return RTE_MBUF_F_RX_IP_CKSUM_BAD;
    const unsigned ihl = (l3[0] & 0xf) * 4u;
    return ihl >= sizeof(rte_ipv4_hdr) && ihl <= avail && rte_raw_cksum(l3, ihl) == 0xffff
               ? RTE_MBUF_F_RX_IP_CKSUM_GOOD
               : RTE_MBUF_F_RX_IP_CKSUM_BAD;
}

// The TCP/UDP checksum verdict of the packet at l3 (parsed as i; `stored`:
// the checksum field as received): GOOD or BAD, 0 where raw_sum cannot
// give the L4 bytes' one's complement sum (raw_sum(&out) -> bool: over a
// buffer or a chain). UDP/IPv4 without a checksum (0) is GOOD, as hardware
// reports it; UDP/IPv6 must carry one (RFC 8200): 0 is BAD.
template <class RawSum>
inline std::uint64_t l4_cksum_verdict(const std::uint8_t *l3, std::uint16_t ethertype, const L3Info &i,
                                      std::uint16_t stored, RawSum raw_sum) noexcept {
    const bool udp = i.proto == IPPROTO_UDP;
    std::uint32_t sum;
    if (ethertype == wire::kEtherTypeIPv4) {
        if (udp && stored == 0)
            return RTE_MBUF_F_RX_L4_CKSUM_GOOD;
        sum = rte_ipv4_phdr_cksum(reinterpret_cast<const rte_ipv4_hdr *>(l3), 0);
    } else {
        if (udp && stored == 0)
            return RTE_MBUF_F_RX_L4_CKSUM_BAD;
        // The pseudo-header's next header is the upper-layer protocol, not the first extension's.
        rte_ipv6_hdr h = *reinterpret_cast<const rte_ipv6_hdr *>(l3);
        h.proto = i.proto;
        h.payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(i.l4len));
        sum = rte_ipv6_phdr_cksum(&h, 0);
    }
    std::uint16_t raw = 0;
    if (!raw_sum(&raw))
        return 0;
    sum += raw;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff ? RTE_MBUF_F_RX_L4_CKSUM_GOOD : RTE_MBUF_F_RX_L4_CKSUM_BAD;
}

// RX: checksum verdicts as DPDK defines them. IPv4 header, when `ip` (the
// queue enabled IPV4_CKSUM): GOOD or BAD (IPv6 has none: UNKNOWN). TCP/UDP,
// when `l4` (the queue enabled UDP/TCP_CKSUM): GOOD or BAD; UNKNOWN where it cannot be checked (a
// fragment, a length the IP header gets wrong, another protocol). A UDP/IPv4
// datagram without a checksum (0) is GOOD, as hardware reports it; UDP/IPv6
// must carry one (RFC 8200): 0 is BAD.
inline std::uint64_t rx_cksum_flags(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype, bool l4,
                                    bool ip = true) noexcept {
    if (!ip && !l4)
        return 0;
    const std::uint64_t ip_mask = ip ? ~std::uint64_t{0} : ~RTE_MBUF_F_RX_IP_CKSUM_MASK;
    std::uint64_t f = 0;
    if (ethertype == wire::kEtherTypeIPv4 && len >= sizeof(rte_ipv4_hdr)) {
        f = ipv4_hdr_cksum_verdict(l3, len);
        if (f == RTE_MBUF_F_RX_IP_CKSUM_BAD)
            return f & ip_mask;  // nothing in it to trust
    } else if (ethertype != wire::kEtherTypeIPv6) {
        return 0;
    }
    f &= ip_mask;
    if (!l4)
        return f;
    const L3Info i = parse_l3(l3, len, ethertype);
    const bool tcp = i.proto == IPPROTO_TCP, udp = i.proto == IPPROTO_UDP;
    if (!i.l4off || (!tcp && !udp) || i.l4len < (tcp ? kTcpHdrMin : kUdpHdrLen))
        return f;
    const std::uint8_t *l4h = l3 + i.l4off;
    const std::uint16_t stored = wire::load_be16(l4h + (tcp ? kTcpCksumOffset : kUdpCksumOffset));
    return f | l4_cksum_verdict(l3, ethertype, i, stored, [&](std::uint16_t *raw) {
               *raw = rte_raw_cksum(l4h, i.l4len);
               return true;
           });
}

// RX over a chain (a connection's frames): rx_cksum_flags for the L3 packet
// at byte `off` of m, its headers in m's first segment. `skipped`
// (kEncap*CksumSkipped, the sender's mark on a connection that agreed on
// "IB CRC as checksum"): those checksums are reported NONE, which DPDK
// defines as "not correct in the packet data, but integrity is valid".
inline std::uint64_t rx_cksum_flags_chain(const rte_mbuf *m, std::uint32_t off, std::uint16_t ethertype, bool l4,
                                          bool ip, bool ip_skipped, bool l4_skipped) noexcept;

// The one's complement sum of `len` bytes of a chain from `off`. (Not
// DPDK 22.11's rte_raw_cksum_mbuf: it truncates a segment's unreduced sum
// before swapping it after an odd-length segment, and gets such chains wrong.)
inline bool raw_cksum_chain(const rte_mbuf *m, std::uint32_t off, std::uint32_t len, std::uint16_t *out) noexcept {
    if (std::uint64_t{off} + len > m->pkt_len)
        return false;
    std::uint32_t sum = 0, done = 0;
    for (const rte_mbuf *s = m; s && done < len; s = s->next) {
        if (off >= s->data_len) {
            off -= s->data_len;
            continue;
        }
        const std::uint32_t n = std::min<std::uint32_t>(s->data_len - off, len - done);
        std::uint16_t part = rte_raw_cksum(rte_pktmbuf_mtod_offset(s, const std::uint8_t *, off), n);
        if (done & 1)  // this piece's bytes sit in the other halves of the 16-bit words
            part = rte_bswap16(part);
        sum += part;
        done += n;
        off = 0;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    *out = static_cast<std::uint16_t>(sum);
    return done == len;
}

// The TCP/UDP checksum field's value over a chain: `len` bytes from `off`
// and the pseudo-header's sum (0 stays 0xffff for UDP).
inline bool l4_cksum_chain(const rte_mbuf *m, std::uint32_t off, std::uint32_t len, std::uint32_t phdr, bool udp,
                           std::uint16_t *out) noexcept {
    std::uint16_t raw = 0;
    if (!raw_cksum_chain(m, off, len, &raw))
        return false;
    std::uint32_t sum = phdr + raw;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    std::uint16_t c = static_cast<std::uint16_t>(~sum);
    if (c == 0 && udp)
        c = 0xffff;
    *out = c;
    return true;
}

// TX: fill the checksums the mbuf's offload flags ask for, over the whole
// chain (the payload may span segments). The application's l2_len (the
// frame's own header: 14 in Ethernet emulation, the 4-byte IPoIB header in
// native mode; `l2_hdr`) and l3_len must be set and the headers up to the
// checksum field in the first segment, and the IP header's length must fit
// the frame: else false (nothing written; the caller drops and counts it).
inline bool tx_cksum(rte_mbuf *m, std::uint32_t l2_hdr = RTE_ETHER_HDR_LEN) noexcept {
    const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_TX_L4_MASK;
    const bool ip4 = m->ol_flags & RTE_MBUF_F_TX_IPV4, ip6 = m->ol_flags & RTE_MBUF_F_TX_IPV6;
    const bool ipck = m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM;
    if (!ipck && !l4)
        return true;
    const bool tcp = l4 == RTE_MBUF_F_TX_TCP_CKSUM, udp = l4 == RTE_MBUF_F_TX_UDP_CKSUM;
    if ((l4 && !tcp && !udp) || ip4 == ip6 || (ipck && !ip4) || m->l2_len != l2_hdr)
        return false;
    const std::uint32_t l3off = m->l2_len, l4off = l3off + m->l3_len;
    const std::uint32_t need = l4 ? l4off + (tcp ? kTcpCksumOffset : kUdpCksumOffset) + 2 : l4off;
    if (m->l3_len < (ip4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)) || need > m->data_len)
        return false;
    std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, std::uint8_t *, l3off);
    std::uint32_t l4len = 0, phdr = 0;
    if (ip4) {
        auto *ip = reinterpret_cast<rte_ipv4_hdr *>(l3);
        const std::uint32_t total = rte_be_to_cpu_16(ip->total_length);
        if ((ip->version_ihl & 0xf) * 4u != m->l3_len || total < m->l3_len || l3off + total > m->pkt_len)
            return false;
        l4len = total - m->l3_len;
        if (ipck) {
            ip->hdr_checksum = 0;
            ip->hdr_checksum = rte_ipv4_cksum(ip);
        }
        if (l4)
            phdr = rte_ipv4_phdr_cksum(ip, 0);
    } else {
        const auto *ip = reinterpret_cast<const rte_ipv6_hdr *>(l3);
        const std::uint32_t end = sizeof(rte_ipv6_hdr) + rte_be_to_cpu_16(ip->payload_len);
        if (end < m->l3_len || l3off + end > m->pkt_len)
            return false;
        l4len = end - m->l3_len;
        rte_ipv6_hdr h = *ip;  // the pseudo-header names the upper layer, past any extension header
        h.proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
        h.payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(l4len));
        phdr = rte_ipv6_phdr_cksum(&h, 0);
    }
    if (!l4)
        return true;
    if (l4len < (tcp ? kTcpHdrMin : kUdpHdrLen))
        return false;
    auto *ck = reinterpret_cast<std::uint16_t *>(l3 + m->l3_len + (tcp ? kTcpCksumOffset : kUdpCksumOffset));
    *ck = 0;
    std::uint16_t c = 0;
    if (!l4_cksum_chain(m, l4off, l4len, phdr, udp, &c))
        return false;
    *ck = c;  // the sums are of 16-bit words as they lie in memory: stored as computed
    return true;
}

// --- TSO ---

inline constexpr std::uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpCwr = 0x80;
inline constexpr unsigned kTcpSeqOffset = 4, kTcpFlagsOffset = 13;

// How a TCP frame marked RTE_MBUF_F_TX_TCP_SEG is cut: segments of `mss`
// payload bytes (the last one shorter), each with a copy of the frame's
// IP + TCP headers (`hdr` bytes from `l3off`) fixed for it.
struct TsoPlan {
    std::uint32_t l3off;    // the IP header's offset in the frame (l2_len)
    std::uint32_t hdr;      // IP + TCP header bytes (l3_len + l4_len)
    std::uint32_t payload;  // TCP payload bytes of the whole frame
    std::uint32_t mss;      // payload bytes per segment
    std::uint32_t nseg;
    bool ip4;
};

// The plan for m, whose frame has an l2_hdr-byte link header (14, or the
// 4-byte IPoIB header in native mode), for a port of this MTU (the IP
// packet's largest size). The segment size is the application's tso_segsz,
// made smaller if a segment would exceed the MTU. False if the metadata does
// not describe the frame (l2_len, l3_len, l4_len, IP version and protocol,
// headers in the first segment, lengths).
inline bool tso_plan(const rte_mbuf *m, std::uint32_t l2_hdr, std::uint32_t mtu, TsoPlan *out) noexcept {
    const bool ip4 = m->ol_flags & RTE_MBUF_F_TX_IPV4, ip6 = m->ol_flags & RTE_MBUF_F_TX_IPV6;
    if (ip4 == ip6 || m->l2_len != l2_hdr || m->tso_segsz == 0 || m->l4_len < kTcpHdrMin || m->l4_len > 60 ||
        m->l3_len < (ip4 ? sizeof(rte_ipv4_hdr) : sizeof(rte_ipv6_hdr)))
        return false;
    const std::uint32_t hdr = m->l3_len + m->l4_len;
    if (m->l2_len + hdr > m->data_len || m->l2_len + hdr > m->pkt_len || hdr >= mtu)
        return false;
    const std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, m->l2_len);
    if (ip4) {
        const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(l3);
        if ((ip->version_ihl >> 4) != 4 || (ip->version_ihl & 0xf) * 4u != m->l3_len ||
            ip->next_proto_id != IPPROTO_TCP || (rte_be_to_cpu_16(ip->fragment_offset) & kIpv4FragMask))
            return false;
    } else {
        const auto *ip = reinterpret_cast<const rte_ipv6_hdr *>(l3);
        if ((ip->vtc_flow >> 4 & 0xf) != 6 || (m->l3_len == sizeof(rte_ipv6_hdr) && ip->proto != IPPROTO_TCP))
            return false;
    }
    const std::uint32_t l4hdr = (l3[m->l3_len + 12] >> 4) * 4u;  // the TCP header's data offset
    if (l4hdr != m->l4_len)
        return false;
    out->l3off = m->l2_len;
    out->hdr = hdr;
    out->payload = m->pkt_len - m->l2_len - hdr;
    out->mss = std::min<std::uint32_t>(m->tso_segsz, mtu - hdr);
    out->nseg = out->payload ? (out->payload + out->mss - 1) / out->mss : 1;
    out->ip4 = ip4;
    return true;
}

// Segment k's headers, written over a copy of the frame's (h: IP header,
// then TCP header, p.hdr bytes): lengths, IPv4 identification + k and header
// checksum, sequence number + k * mss, FIN and PSH on the last segment only,
// CWR on the first only, and the TCP checksum over the segment's payload
// (`seglen` bytes of m from its offset). False if m is shorter than that.
inline bool tso_segment_header(std::uint8_t *h, const TsoPlan &p, std::uint32_t k, std::uint32_t seglen,
                               const rte_mbuf *m, std::uint32_t l3_len) noexcept {
    std::uint8_t *tcp = h + l3_len;
    const std::uint32_t l4_len = p.hdr - l3_len;
    std::uint32_t phdr = 0;
    if (p.ip4) {
        auto *ip = reinterpret_cast<rte_ipv4_hdr *>(h);
        ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(p.hdr + seglen));
        ip->packet_id = rte_cpu_to_be_16(static_cast<std::uint16_t>(rte_be_to_cpu_16(ip->packet_id) + k));
        ip->hdr_checksum = 0;
        ip->hdr_checksum = rte_ipv4_cksum(ip);
        phdr = rte_ipv4_phdr_cksum(ip, 0);
    } else {
        auto *ip = reinterpret_cast<rte_ipv6_hdr *>(h);
        ip->payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(l3_len - sizeof(rte_ipv6_hdr) + l4_len + seglen));
        rte_ipv6_hdr ph = *ip;  // the pseudo-header: TCP and its length, past any extension header
        ph.proto = IPPROTO_TCP;
        ph.payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(l4_len + seglen));
        phdr = rte_ipv6_phdr_cksum(&ph, 0);
    }
    std::uint32_t seq;
    std::memcpy(&seq, tcp + kTcpSeqOffset, 4);
    seq = rte_cpu_to_be_32(rte_be_to_cpu_32(seq) + k * p.mss);
    std::memcpy(tcp + kTcpSeqOffset, &seq, 4);
    if (k + 1 < p.nseg)
        tcp[kTcpFlagsOffset] &= static_cast<std::uint8_t>(~(kTcpFin | kTcpPsh));
    if (k > 0)
        tcp[kTcpFlagsOffset] &= static_cast<std::uint8_t>(~kTcpCwr);
    tcp[kTcpCksumOffset] = tcp[kTcpCksumOffset + 1] = 0;
    std::uint16_t body = 0;
    if (!raw_cksum_chain(m, p.l3off + p.hdr + k * p.mss, seglen, &body))
        return false;
    // The TCP header's length is a multiple of 4: the payload's words line up with it.
    std::uint32_t sum = phdr + rte_raw_cksum(tcp, l4_len) + body;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    const auto c = static_cast<std::uint16_t>(~sum);
    std::memcpy(tcp + kTcpCksumOffset, &c, 2);
    return true;
}

inline std::uint64_t rx_cksum_flags_chain(const rte_mbuf *m, std::uint32_t off, std::uint16_t ethertype, bool l4,
                                          bool ip, bool ip_skipped, bool l4_skipped) noexcept {
    if ((!ip && !l4) || m->data_len <= off || (ethertype != wire::kEtherTypeIPv4 && ethertype != wire::kEtherTypeIPv6))
        return 0;
    const std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, off);
    const std::uint32_t avail = m->data_len - off, len = m->pkt_len - off;
    std::uint64_t f = 0;
    if (ethertype == wire::kEtherTypeIPv4 && ip) {
        if (ip_skipped) {
            f = RTE_MBUF_F_RX_IP_CKSUM_NONE;
        } else {
            f = ipv4_hdr_cksum_verdict(l3, avail);
            if (f == RTE_MBUF_F_RX_IP_CKSUM_BAD)
                return f;
        }
    }
    if (!l4)
        return f;
    const L3Info i = parse_l3(l3, len, ethertype, avail);
    const bool tcp = i.proto == IPPROTO_TCP, udp = i.proto == IPPROTO_UDP;
    if (!i.l4off || (!tcp && !udp) || i.l4len < (tcp ? kTcpHdrMin : kUdpHdrLen) ||
        i.l4off + (tcp ? kTcpCksumOffset : kUdpCksumOffset) + 2 > avail)
        return f;
    if (l4_skipped)
        return f | RTE_MBUF_F_RX_L4_CKSUM_NONE;
    const std::uint16_t stored = wire::load_be16(l3 + i.l4off + (tcp ? kTcpCksumOffset : kUdpCksumOffset));
    return f | l4_cksum_verdict(l3, ethertype, i, stored,
                                [&](std::uint16_t *raw) { return raw_cksum_chain(m, off + i.l4off, i.l4len, raw); });
}

// A connection's frame whose sender left checksums to the IB CRC, for a
// queue that did not enable their RX offload (it could not be told NONE,
// and expects the packet as a sender would have made it): the IPv4 header
// (`ip`) and TCP/UDP (`l4`) checksums computed into the chain here.
inline void rx_cksum_fill_chain(rte_mbuf *m, std::uint32_t off, std::uint16_t ethertype, bool ip, bool l4) noexcept {
    if (m->data_len <= off || (ethertype != wire::kEtherTypeIPv4 && ethertype != wire::kEtherTypeIPv6))
        return;
    const std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, off);
    const std::uint32_t avail = m->data_len - off;
    const L3Info i = parse_l3(l3, m->pkt_len - off, ethertype, avail);
    const bool v4 = ethertype == wire::kEtherTypeIPv4;
    if (!v4)
        ip = false;
    if (v4 && avail < sizeof(rte_ipv4_hdr))
        return;
    if (!i.l4off || (i.proto != IPPROTO_TCP && i.proto != IPPROTO_UDP))
        l4 = false;
    if (!ip && !l4)
        return;
    std::uint64_t flags = v4 ? RTE_MBUF_F_TX_IPV4 : RTE_MBUF_F_TX_IPV6;
    if (ip)
        flags |= RTE_MBUF_F_TX_IP_CKSUM;
    if (l4)
        flags |= i.proto == IPPROTO_TCP ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM;
    const std::uint64_t saved = m->ol_flags;
    m->ol_flags = (saved & ~RTE_MBUF_F_TX_OFFLOAD_MASK) | flags;
    m->l2_len = off;
    m->l3_len = v4 ? (l3[0] & 0xf) * 4u : i.l4off;
    tx_cksum(m, off);
    m->ol_flags = saved;
    m->l2_len = 0;
    m->l3_len = 0;
}

} // namespace ipoib::pmd
