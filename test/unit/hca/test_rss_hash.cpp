// SPDX-License-Identifier: BSD-3-Clause
// Receive-side scaling's hash (lib/hca/src/rss_hash.hpp) against the
// verification suite of Microsoft's RSS specification (the values every
// NIC's Toeplitz is checked with), and the flow an IPoIB payload yields.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <vector>

#include "rss_hash.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::common;

namespace {

constexpr std::uint8_t kMsKey[kRssKeyLen] = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

// An IPoIB payload: encapsulation header, IP header, L4 header start.
std::vector<std::uint8_t> ipv4_frame(const char *src, const char *dst, std::uint16_t sport, std::uint16_t dport,
                                     std::uint8_t proto = 6, std::uint16_t frag = 0, std::uint8_t ihl = 5) {
    std::vector<std::uint8_t> f(4 + ihl * 4u + 20, 0);
    f[0] = 0x08;
    std::uint8_t *ip = f.data() + 4;
    ip[0] = static_cast<std::uint8_t>(0x40 | ihl);
    ip[6] = static_cast<std::uint8_t>(frag >> 8);
    ip[7] = static_cast<std::uint8_t>(frag);
    ip[9] = proto;
    inet_pton(AF_INET, src, ip + 12);
    inet_pton(AF_INET, dst, ip + 16);
    std::uint8_t *l4 = ip + ihl * 4;
    l4[0] = static_cast<std::uint8_t>(sport >> 8);
    l4[1] = static_cast<std::uint8_t>(sport);
    l4[2] = static_cast<std::uint8_t>(dport >> 8);
    l4[3] = static_cast<std::uint8_t>(dport);
    return f;
}

std::vector<std::uint8_t> ipv6_frame(const char *src, const char *dst, std::uint16_t sport, std::uint16_t dport,
                                     std::uint8_t next = 6) {
    std::vector<std::uint8_t> f(4 + 40 + 20, 0);
    f[0] = 0x86;
    f[1] = 0xdd;
    std::uint8_t *ip = f.data() + 4;
    ip[0] = 0x60;
    ip[6] = next;
    inet_pton(AF_INET6, src, ip + 8);
    inet_pton(AF_INET6, dst, ip + 24);
    ip[40] = static_cast<std::uint8_t>(sport >> 8);
    ip[41] = static_cast<std::uint8_t>(sport);
    ip[42] = static_cast<std::uint8_t>(dport >> 8);
    ip[43] = static_cast<std::uint8_t>(dport);
    return f;
}

std::uint32_t hash_of(const std::vector<std::uint8_t> &f, std::uint32_t fields) {
    std::uint32_t h = 0;
    REQUIRE(rss_hash(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())), fields, kMsKey, &h));
    return h;
}

struct Vector {
    const char *src, *dst;
    std::uint16_t sport, dport;
    std::uint32_t addrs_only, with_ports;
};

} // namespace

TEST_CASE("rss: IPv4 hashes are the RSS specification's verification values") {
    const Vector v[] = {
        {"66.9.149.187", "161.142.100.80", 2794, 1766, 0x323e8fc2, 0x51ccc178},
        {"199.92.111.2", "65.69.140.83", 14230, 4739, 0xd718262a, 0xc626b0ea},
        {"24.19.198.95", "12.22.207.184", 12898, 38024, 0xd2d0a5de, 0x5c2b394a},
        {"38.27.205.30", "209.142.163.6", 48228, 2217, 0x82989176, 0xafc7327f},
        {"153.39.163.191", "202.188.127.2", 44251, 1303, 0x5d1809c5, 0x10e828a2},
    };
    for (const auto &x : v) {
        const auto f = ipv4_frame(x.src, x.dst, x.sport, x.dport);
        CHECK(hash_of(f, kRssIpv4) == x.addrs_only);
        CHECK(hash_of(f, kRssIpv4 | kRssIpv4Tcp) == x.with_ports);
        CHECK(hash_of(f, kRssIpv4Tcp) == x.with_ports);
        // UDP with the UDP field: the same 4-tuple, the same hash; with only the TCP field: addresses.
        const auto u = ipv4_frame(x.src, x.dst, x.sport, x.dport, 17);
        CHECK(hash_of(u, kRssIpv4Udp) == x.with_ports);
        CHECK(hash_of(u, kRssIpv4 | kRssIpv4Tcp) == x.addrs_only);
    }
}

TEST_CASE("rss: IPv6 hashes are the RSS specification's verification values") {
    const Vector v[] = {
        {"3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794, 1766, 0x2cc18cd5, 0x40207d3d},
        {"3ffe:501:8::260:97ff:fe40:efab", "ff02::1", 14230, 4739, 0x0f0c461c, 0xdde51bbf},
        {"3ffe:1900:4545:3:200:f8ff:fe21:67cf", "fe80::200:f8ff:fe21:67cf", 44251, 38024, 0x4b61e985, 0x02d1feef},
    };
    for (const auto &x : v) {
        const auto f = ipv6_frame(x.src, x.dst, x.sport, x.dport);
        CHECK(hash_of(f, kRssIpv6) == x.addrs_only);
        CHECK(hash_of(f, kRssIpv6 | kRssIpv6Tcp) == x.with_ports);
    }
}

TEST_CASE("rss: fragments, options, other protocols and other families") {
    // A fragment has no ports to hash (the first one would, the others not: all by addresses).
    auto f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766, 6, 0x2000 /* MF */);
    CHECK(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())).kind == FlowKind::ipv4);
    CHECK(hash_of(f, kRssAllFields) == 0x323e8fc2);
    f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766, 6, 0x0010 /* offset */);
    CHECK(hash_of(f, kRssAllFields) == 0x323e8fc2);
    // Options: the ports are found after them.
    f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766, 6, 0, 7);
    CHECK(hash_of(f, kRssAllFields) == 0x51ccc178);
    // ICMP: addresses.
    f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766, 1);
    CHECK(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())).kind == FlowKind::ipv4);
    // A family not enabled is not hashed.
    std::uint32_t h = 0;
    f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766);
    CHECK_FALSE(rss_hash(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())), kRssIpv6 | kRssIpv6Tcp, kMsKey, &h));
    // ARP, and an IPv6 extension header before TCP (addresses only).
    std::vector<std::uint8_t> arp(4 + 28, 0);
    arp[0] = 0x08;
    arp[1] = 0x06;
    CHECK(flow_tuple(arp.data(), static_cast<std::uint32_t>(arp.size())).kind == FlowKind::none);
    auto g = ipv6_frame("3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794, 1766, 0 /* hop-by-hop */);
    CHECK(flow_tuple(g.data(), static_cast<std::uint32_t>(g.size())).kind == FlowKind::ipv6);
    CHECK(hash_of(g, kRssAllFields) == 0x2cc18cd5);
}

TEST_CASE("rss: truncated or malformed headers yield no flow and are never read past") {
    auto f = ipv4_frame("66.9.149.187", "161.142.100.80", 2794, 1766);
    for (std::uint32_t len = 0; len < 4 + 20; ++len)
        CHECK(flow_tuple(f.data(), len).kind == FlowKind::none);
    // Header but no ports: by addresses.
    CHECK(flow_tuple(f.data(), 4 + 20 + 3).kind == FlowKind::ipv4);
    f[4] = 0x44;  // IHL 4: shorter than a header
    CHECK(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())).kind == FlowKind::none);
    f[4] = 0x4f;  // IHL 15: longer than what is there
    CHECK(flow_tuple(f.data(), 4 + 40).kind == FlowKind::none);
    f[4] = 0x65;  // version 6 behind an IPv4 ethertype
    CHECK(flow_tuple(f.data(), static_cast<std::uint32_t>(f.size())).kind == FlowKind::none);
    auto g = ipv6_frame("::1", "::2", 1, 2);
    CHECK(flow_tuple(g.data(), 4 + 39).kind == FlowKind::none);
    CHECK(flow_tuple(g.data(), 4 + 40).kind == FlowKind::ipv6);
}
