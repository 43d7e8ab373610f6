// SPDX-License-Identifier: BSD-3-Clause
// Receive-side scaling as an IPoIB-aware HCA computes it (a ConnectX in
// enhanced IPoIB mode): the flow of a UD message's payload (the 4-byte IPoIB
// encapsulation header, then IPv4 or IPv6, then TCP or UDP) and its Toeplitz
// hash under a 40-byte key, as Microsoft's RSS specification defines it
// (addresses, then ports, in network byte order). Pure functions: the
// software HCA's delivery path and the unit tests call the same code.
// Internal to lib/hca.
#pragma once

#include <cstdint>
#include <cstring>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::common {

enum class FlowKind : std::uint8_t { none, ipv4, ipv4_tcp, ipv4_udp, ipv6, ipv6_tcp, ipv6_udp };

// The hash input of a message: source and destination addresses, then the
// ports when the kind has them (12 or 36 bytes; 8 or 32 without ports).
struct FlowTuple {
    FlowKind kind = FlowKind::none;
    std::uint8_t len = 0;       // bytes of `in` hashed with the ports
    std::uint8_t addr_len = 0;  // bytes of `in` that are the addresses
    std::uint8_t in[36] = {};
};

// The bytes of a message needed to find its flow: encapsulation header, the
// longest IPv4 header (60), the ports.
inline constexpr std::uint32_t kFlowPeekLen = 4 + 60 + 4;

// The flow of a payload (its first `len` bytes at p; at most kFlowPeekLen
// are read). Not IP, or too short for what its header says: kind none.
inline FlowTuple flow_tuple(const std::uint8_t *p, std::uint32_t len) noexcept {
    FlowTuple t;
    if (len < 4)
        return t;
    const std::uint16_t et = static_cast<std::uint16_t>(p[0] << 8 | p[1]);
    const std::uint8_t *ip = p + 4;
    const std::uint32_t iplen = len - 4;
    constexpr std::uint8_t kTcp = 6, kUdp = 17;
    if (et == 0x0800) {
        if (iplen < 20 || (ip[0] >> 4) != 4)
            return t;
        const std::uint32_t ihl = (ip[0] & 0x0fu) * 4u;
        if (ihl < 20 || ihl > iplen)
            return t;
        std::memcpy(t.in, ip + 12, 8);
        t.addr_len = t.len = 8;
        t.kind = FlowKind::ipv4;
        const bool fragment = (ip[6] & 0x3f) != 0 || ip[7] != 0;  // MF or an offset
        if (!fragment && (ip[9] == kTcp || ip[9] == kUdp) && iplen >= ihl + 4) {
            std::memcpy(t.in + 8, ip + ihl, 4);
            t.len = 12;
            t.kind = ip[9] == kTcp ? FlowKind::ipv4_tcp : FlowKind::ipv4_udp;
        }
    } else if (et == 0x86dd) {
        if (iplen < 40 || (ip[0] >> 4) != 6)
            return t;
        std::memcpy(t.in, ip + 8, 32);
        t.addr_len = t.len = 32;
        t.kind = FlowKind::ipv6;
        if ((ip[6] == kTcp || ip[6] == kUdp) && iplen >= 44) {
            std::memcpy(t.in + 32, ip + 40, 4);
            t.len = 36;
            t.kind = ip[6] == kTcp ? FlowKind::ipv6_tcp : FlowKind::ipv6_udp;
        }
    }
    return t;
}

// Toeplitz: for every bit set in the input, XOR in the 32 key bits that
// start at that bit's position.
inline std::uint32_t toeplitz(const std::uint8_t (&key)[kRssKeyLen], const std::uint8_t *in,
                              std::uint32_t len) noexcept {
    std::uint32_t hash = 0;
    // The key window: key bits [i, i + 32) for the input bit i, shifted in one key bit at a time.
    std::uint32_t window = static_cast<std::uint32_t>(key[0]) << 24 | static_cast<std::uint32_t>(key[1]) << 16 |
                           static_cast<std::uint32_t>(key[2]) << 8 | key[3];
    for (std::uint32_t i = 0; i < len; ++i) {
        const std::uint8_t next = i + 4 < kRssKeyLen ? key[i + 4] : 0;
        for (int b = 7; b >= 0; --b) {
            if (in[i] & (1u << b))
                hash ^= window;
            window = window << 1 | ((next >> b) & 1u);
        }
    }
    return hash;
}

// The hash of a flow under the enabled fields (hca.hpp kRss*): true and
// *hash if it is hashed; false if no enabled field covers it.
inline bool rss_hash(const FlowTuple &t, std::uint32_t fields, const std::uint8_t (&key)[kRssKeyLen],
                     std::uint32_t *hash) noexcept {
    bool ports = false, addrs = false;
    switch (t.kind) {
    case FlowKind::ipv4_tcp: ports = fields & kRssIpv4Tcp; addrs = fields & kRssIpv4; break;
    case FlowKind::ipv4_udp: ports = fields & kRssIpv4Udp; addrs = fields & kRssIpv4; break;
    case FlowKind::ipv4: addrs = fields & kRssIpv4; break;
    case FlowKind::ipv6_tcp: ports = fields & kRssIpv6Tcp; addrs = fields & kRssIpv6; break;
    case FlowKind::ipv6_udp: ports = fields & kRssIpv6Udp; addrs = fields & kRssIpv6; break;
    case FlowKind::ipv6: addrs = fields & kRssIpv6; break;
    case FlowKind::none: break;
    }
    if (!ports && !addrs)
        return false;
    *hash = toeplitz(key, t.in, ports ? t.len : t.addr_len);
    return true;
}

} // namespace ipoib::hca::common
