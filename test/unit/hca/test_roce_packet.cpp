// SPDX-License-Identifier: BSD-3-Clause
// RoCE v2 packets of the xdp provider (xdp/roce_packet.hpp): built, parsed
// back, and the ICRC checked against a bit-at-a-time CRC-32 over a copy
// with the variant fields set to ones by hand (Annex A17.3.3). The proof
// that rdma_rxe agrees is the guest stage's interop; this keeps the
// builder and the parser honest between runs of it.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "ipoib/wire/nd.hpp"
#include "xdp/roce_packet.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::xdp;

namespace {

std::uint32_t crc32_bitwise(const std::vector<std::uint8_t> &b) {
    std::uint32_t c = 0xffffffffu;
    for (std::uint8_t x : b) {
        c ^= x;
        for (int k = 0; k < 8; ++k)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

Gid gid(std::initializer_list<int> tail, bool v4) {
    Gid g{};
    if (v4)
        g.raw[10] = g.raw[11] = 0xff;
    else
        g.raw[0] = 0xfe, g.raw[1] = 0x80;
    std::size_t i = 16 - tail.size();
    for (int t : tail)
        g.raw[i++] = static_cast<std::uint8_t>(t);
    return g;
}

RoceSend sample(bool v4) {
    RoceSend s{};
    const std::uint8_t d[6] = {0x02, 0, 0, 0, 0, 2}, m[6] = {0x02, 0, 0, 0, 0, 1};
    std::memcpy(s.dmac, d, 6);
    std::memcpy(s.smac, m, 6);
    s.ipv4 = v4;
    s.sgid = gid({10, 1, 0, 1}, v4);
    s.dgid = gid({10, 1, 0, 2}, v4);
    s.traffic_class = 0x28;
    s.hop_limit = 64;
    s.flow_label = 0x12345;
    s.udp_sport = 0xc123;
    s.ip_id = 7;
    s.pkey = 0xffff;
    s.dest_qp = 0x11;
    s.src_qp = 0x4200;
    s.qkey = 0x0b1b;
    s.psn = 99;
    return s;
}

std::vector<std::uint8_t> build(const RoceSend &s, std::uint32_t len) {
    std::vector<std::uint8_t> f(roce_header_len(s.ipv4) + len + 8, 0);
    std::uint8_t *p = f.data() + roce_write_headers(s, len, f.data());
    for (std::uint32_t i = 0; i < len; ++i)
        p[i] = static_cast<std::uint8_t>(i * 7 + 3);
    f.resize(roce_finish(f.data(), s.ipv4, len));
    return f;
}

} // namespace

TEST_CASE("roce packet: built and parsed back, IPv4 and IPv6, every pad length") {
    for (bool v4 : {true, false})
        for (std::uint32_t len : {0u, 1u, 2u, 3u, 4u, 257u, 2048u}) {
            const RoceSend s = sample(v4);
            const auto f = build(s, len);
            const std::uint32_t pad = (4 - (len & 3)) & 3;
            CHECK(f.size() == roce_header_len(v4) + len + pad + kIcrcLen);
            RoceRecv r{};
            REQUIRE(roce_parse(f.data(), f.size(), &r) == RoceParse::ok);
            CHECK(r.ipv4 == v4);
            CHECK(r.sgid == s.sgid);
            CHECK(r.dgid == s.dgid);
            CHECK((r.dest_qp == 0x11 && r.src_qp == 0x4200 && r.qkey == 0x0b1b && r.psn == 99 && r.pkey == 0xffff));
            CHECK(r.payload_len == len);
            bool same = true;
            for (std::uint32_t i = 0; i < len; ++i)
                same = same && r.payload[i] == static_cast<std::uint8_t>(i * 7 + 3);
            CHECK(same);
            CHECK(r.hop_limit == 64);
            CHECK(r.traffic_class == 0x28);
            // UDP to 4791 from the given source port; the IP checksums right.
            const std::size_t l3 = kEthLen, l4 = l3 + (v4 ? kIpv4Len : kIpv6Len);
            CHECK((f[l4] << 8 | f[l4 + 1]) == 0xc123);
            CHECK((f[l4 + 2] << 8 | f[l4 + 3]) == 4791);
            if (v4) {
                std::uint32_t acc = 0;
                for (std::size_t i = 0; i < kIpv4Len; i += 2)
                    acc += static_cast<std::uint32_t>(f[l3 + i] << 8 | f[l3 + i + 1]);
                while (acc >> 16)
                    acc = (acc & 0xffff) + (acc >> 16);
                CHECK(acc == 0xffff);
                CHECK((f[l4 + 6] | f[l4 + 7]) == 0);  // no UDP checksum over IPv4
            } else {
                const std::size_t ulen = f.size() - l4;
                CHECK(ipoib::wire::ipv6_upper_checksum({&f[l3 + 8], 16}, {&f[l3 + 24], 16}, 17, {&f[l4], ulen}) == 0);
            }
        }
}

TEST_CASE("roce packet: the ICRC is CRC-32 over ones and the masked headers, least significant byte first") {
    for (bool v4 : {true, false}) {
        const auto f = build(sample(v4), 37);
        std::vector<std::uint8_t> m(8 + f.size() - kEthLen - kIcrcLen, 0xff);
        std::memcpy(m.data() + 8, f.data() + kEthLen, f.size() - kEthLen - kIcrcLen);
        const std::size_t l4 = 8 + (v4 ? kIpv4Len : kIpv6Len);
        if (v4) {
            m[8 + 1] = 0xff;                // TOS
            m[8 + 8] = 0xff;                // TTL
            m[8 + 10] = m[8 + 11] = 0xff;   // header checksum
        } else {
            m[8 + 0] |= 0x0f;               // traffic class, flow label
            m[8 + 1] = m[8 + 2] = m[8 + 3] = 0xff;
            m[8 + 7] = 0xff;                // hop limit
        }
        m[l4 + 6] = m[l4 + 7] = 0xff;       // UDP checksum
        m[l4 + 8 + 4] = 0xff;               // BTH Resv8a
        const std::uint32_t want = crc32_bitwise(m);
        const std::uint8_t *ic = f.data() + f.size() - kIcrcLen;
        CHECK((ic[0] | ic[1] << 8 | ic[2] << 16 | static_cast<std::uint32_t>(ic[3]) << 24) == want);
    }
}

TEST_CASE("roce packet: a changed byte fails the ICRC; bad lengths, other opcodes and non-RoCE are told apart") {
    auto f = build(sample(false), 100);
    RoceRecv r{};
    auto g = f;
    g[g.size() - 20] ^= 1;  // payload
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::bad_icrc);
    g = f;
    g[kEthLen + 7] = 1;  // hop limit: variant, not covered
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::ok);
    g = f;
    g[kEthLen + kIpv6Len + 5] ^= 4;  // UDP length disagrees with IP's
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::malformed);
    CHECK(roce_parse(f.data(), f.size() - 10, &r) == RoceParse::malformed);  // cut short
    g = f;
    g[kEthLen + kIpv6Len + kUdpLen] = kOpUdSendOnlyImm;  // covered by the ICRC: redo it
    g.resize(roce_finish(g.data(), false, 100));
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::not_ud_send);
    g = f;
    g[kEthLen + kIpv6Len + 3] = 0x35;  // UDP port 4661
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::not_roce);
    g = f;
    g[12] = 0x08, g[13] = 0x06;  // ARP
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::not_roce);
    // One 802.1Q tag is read past.
    g = f;
    const std::uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
    g.insert(g.begin() + 12, tag, tag + 4);
    CHECK(roce_parse(g.data(), g.size(), &r) == RoceParse::ok);
    CHECK(r.payload_len == 100);
}

TEST_CASE("roce packet: every truncation of a tagged or untagged frame is refused without reading past it") {
    // Each prefix is parsed from a heap copy of exactly its length, so the
    // sanitizer build sees any read past the end. The fuzzer found the
    // 802.1Q-tagged IPv4 frame of 42-45 bytes read its UDP ports past the end.
    const std::uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
    for (bool v4 : {true, false})
        for (bool tagged : {false, true}) {
            auto f = build(sample(v4), 20);
            if (tagged)
                f.insert(f.begin() + 12, tag, tag + 4);
            for (std::size_t n = 0; n < f.size(); ++n) {
                auto *cut = new std::uint8_t[n ? n : 1];
                std::memcpy(cut, f.data(), n);
                RoceRecv r{};
                const RoceParse res = roce_parse(cut, n, &r);
                delete[] cut;
                INFO("v4 " << v4 << " tagged " << tagged << " length " << n);
                CHECK(res != RoceParse::ok);
            }
            RoceRecv r{};
            CHECK(roce_parse(f.data(), f.size(), &r) == RoceParse::ok);
        }
}

TEST_CASE("roce packet: multicast GIDs and their Ethernet addresses") {
    Gid bcast{};
    const std::uint8_t b[16] = {0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    std::memcpy(bcast.raw.data(), b, 16);
    std::uint8_t mac[6];
    CHECK(is_multicast_gid(bcast));
    multicast_mac(bcast, mac);
    const std::uint8_t want6[6] = {0x33, 0x33, 0xff, 0xff, 0xff, 0xff};
    CHECK(std::memcmp(mac, want6, 6) == 0);
    const Gid v4m = gid({239, 129, 2, 3}, true);
    CHECK(is_multicast_gid(v4m));
    multicast_mac(v4m, mac);
    const std::uint8_t want4[6] = {0x01, 0x00, 0x5e, 0x01, 0x02, 0x03};
    CHECK(std::memcmp(mac, want4, 6) == 0);
    CHECK(!is_multicast_gid(gid({10, 1, 0, 1}, true)));
    CHECK(!is_multicast_gid(gid({1}, false)));
}
