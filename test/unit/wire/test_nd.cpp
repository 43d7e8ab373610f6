// SPDX-License-Identifier: BSD-3-Clause
#include <catch2/catch.hpp>

#include "fixtures.hpp"

using namespace wt;

// Captured from Linux on a veth pair (fd00::a = 02:00:00:00:00:0a, fd00::b =
// 02:00:00:00:00:0b), Ethernet header stripped.
static const char *kEthRs =
    "6000000000103afffe80000000000000000000fffe00000aff020000000000000000000000000002"
    "85007b1a00000000 0101 02000000000a";
static const char *kEthNs =
    "6000000000203afffd00000000000000000000000000000aff0200000000000000000001ff00000b"
    "87007d7300000000fd00000000000000000000000000000b 0101 02000000000a";
static const char *kEthNa =
    "6000000000203afffd00000000000000000000000000000bfd00000000000000000000000000000a"
    "88001c7660000000fd00000000000000000000000000000b 0201 02000000000b";
static const char *kEchoRequest =
    "6007f96500403a40fd00000000000000000000000000000afd00000000000000000000000000000b"
    "800068091750000110f6016b000000002ae00a0000000000101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f3031323334353637";

// The same messages in IPoIB form (RFC 4391 9.2: option length 3, two zero
// bytes, 20-byte address). Checksums cross-checked with tshark's ICMPv6 dissector.
static const char *kIbRs =
    "6000000000203afffe80000000000000000000fffe00000aff020000000000000000000000000002"
    "8500785a00000000 0103 0000 80000048fe800000000000000002c903000abcde";
static const char *kIbNs =
    "6000000000303afffd00000000000000000000000000000aff0200000000000000000001ff00000b"
    "87007ab300000000fd00000000000000000000000000000b 0103 0000 80000048fe800000000000000002c903000abcde";
static const char *kIbNa =
    "6000000000303afffd00000000000000000000000000000bfd00000000000000000000000000000a"
    "880052d760000000fd00000000000000000000000000000b 0203 0000 00000405fe800000000000000002c903000b0001";

static bool checksum_ok(const std::vector<std::uint8_t> &pkt) {
    Bytes b(pkt);
    const std::size_t plen = load_be16(&pkt[4]);
    return icmpv6_checksum(b.subspan(8, 16), b.subspan(24, 16), b.subspan(40, plen)) == 0;
}

// Build a packet from a header (payload length filled in) and an ICMPv6 message
// (checksum filled in).
static std::vector<std::uint8_t> ipv6_icmp(const std::string &src_dst_hex, std::vector<std::uint8_t> icmp) {
    auto pkt = hex("60000000 0000 3a ff");
    auto sd = hex(src_dst_hex);
    pkt.insert(pkt.end(), sd.begin(), sd.end());
    store_be16(&pkt[4], static_cast<std::uint16_t>(icmp.size()));
    icmp[2] = icmp[3] = 0;
    std::uint16_t ck = icmpv6_checksum(Bytes(pkt).subspan(8, 16), Bytes(pkt).subspan(24, 16), icmp);
    store_be16(&icmp[2], ck);
    pkt.insert(pkt.end(), icmp.begin(), icmp.end());
    return pkt;
}

static const std::string kLinkLocalPair =
    "fe80000000000000000000fffe00000b ff020000000000000000000000000001";

TEST_CASE("nd: ICMPv6 checksum agrees with Linux", "[nd]") {
    for (const char *p : {kEthRs, kEthNs, kEthNa, kEchoRequest})
        CHECK(checksum_ok(hex(p)));
    auto bad = hex(kEthNs);
    bad[60] ^= 0x01;
    CHECK_FALSE(checksum_ok(bad));
}

TEST_CASE("nd: Ethernet -> IPoIB known answers (RS, NS, NA)", "[nd]") {
    Table t;
    auto map = t.mapper();
    for (auto [in, want] : {std::pair{kEthRs, kIbRs}, std::pair{kEthNs, kIbNs}, std::pair{kEthNa, kIbNa}}) {
        auto pkt = hex(in);
        std::vector<std::uint8_t> out(pkt.size() + nd_max_growth(pkt, NdDirection::eth_to_ib));
        auto r = nd_translate(pkt, out, NdDirection::eth_to_ib, map);
        REQUIRE(r.ok());
        out.resize(r.value);
        CHECK(out == hex(want));
        CHECK(checksum_ok(out));
    }
}

TEST_CASE("nd: IPoIB -> Ethernet restores the Linux packets", "[nd]") {
    Table t;
    auto map = t.mapper();
    for (auto [in, want] : {std::pair{kIbRs, kEthRs}, std::pair{kIbNs, kEthNs}, std::pair{kIbNa, kEthNa}}) {
        auto pkt = hex(in);
        std::vector<std::uint8_t> out(pkt.size());
        auto r = nd_translate(pkt, out, NdDirection::ib_to_eth, map);
        REQUIRE(r.ok());
        out.resize(r.value);
        CHECK(out == hex(want));
    }
}

TEST_CASE("nd: RA keeps prefix and MTU options, rewrites the source LLA", "[nd]") {
    Table t;
    auto map = t.mapper();
    auto icmp = hex(
        "86000000 40 00 0708 00000000 00000000"                                      // RA fixed part
        " 0304 40 c0 00278d00 00093a80 00000000 fd000000000000000000000000000000"    // prefix info
        " 0501 0000 000005dc"                                                        // MTU 1500
        " 0101 02000000000b");                                                       // SLLA
    auto ra = ipv6_icmp(kLinkLocalPair, icmp);
    REQUIRE(checksum_ok(ra));
    std::vector<std::uint8_t> ib(ra.size() + nd_max_growth(ra, NdDirection::eth_to_ib));
    auto r = nd_translate(ra, ib, NdDirection::eth_to_ib, map);
    REQUIRE(r.ok());
    ib.resize(r.value);
    CHECK(ib.size() == ra.size() + 16);
    CHECK(load_be16(&ib[4]) == load_be16(&ra[4]) + 16);
    CHECK(checksum_ok(ib));
    // Fixed part, prefix and MTU options unchanged, in order.
    CHECK(std::equal(ra.begin() + 44, ra.begin() + 40 + 16 + 32 + 8, ib.begin() + 44));
    // SLLA now in IPoIB form.
    const std::size_t opt = 40 + 16 + 32 + 8;
    CHECK(ib[opt] == 1);
    CHECK(ib[opt + 1] == 3);
    CHECK(ib[opt + 2] == 0);
    CHECK(ib[opt + 3] == 0);
    CHECK(std::equal(ib.begin() + opt + 4, ib.end(), t.entries[1].hw.raw.begin()));
    // And back.
    std::vector<std::uint8_t> eth(ib.size());
    r = nd_translate(ib, eth, NdDirection::ib_to_eth, map);
    REQUIRE(r.ok());
    eth.resize(r.value);
    CHECK(eth == ra);
}

TEST_CASE("nd: Redirect with target LLA and redirected header round-trips", "[nd]") {
    Table t;
    auto map = t.mapper();
    auto icmp = hex(
        "89000000 00000000"
        " fd00000000000000000000000000000b"                          // target
        " fd00000000000000000000000000000c"                          // destination
        " 0201 02000000000b"                                         // TLLA
        " 0403 000000000000 6000000000083a40 0000000000000000");     // redirected header (truncated copy)
    auto rd = ipv6_icmp(kLinkLocalPair, icmp);
    std::vector<std::uint8_t> ib(rd.size() * 3);
    auto r = nd_translate(rd, ib, NdDirection::eth_to_ib, map);
    REQUIRE(r.ok());
    ib.resize(r.value);
    CHECK(ib.size() == rd.size() + 16);
    CHECK(checksum_ok(ib));
    std::vector<std::uint8_t> eth(ib.size());
    r = nd_translate(ib, eth, NdDirection::ib_to_eth, map);
    REQUIRE(r.ok());
    eth.resize(r.value);
    CHECK(eth == rd);
}

TEST_CASE("nd: ND without link-layer options is copied with its checksum", "[nd]") {
    Table t;
    auto map = t.mapper();
    auto ns = hex(kEthNs);
    ns.resize(40 + 24);
    store_be16(&ns[4], 24);
    ns[42] = ns[43] = 0;
    store_be16(&ns[42], icmpv6_checksum(Bytes(ns).subspan(8, 16), Bytes(ns).subspan(24, 16), Bytes(ns).subspan(40)));
    std::vector<std::uint8_t> out(ns.size());
    auto r = nd_translate(ns, out, NdDirection::eth_to_ib, map);
    REQUIRE(r.ok());
    CHECK(out == ns);
    CHECK(t.lookups == 0);
}

TEST_CASE("nd: trailing Ethernet padding is dropped", "[nd]") {
    Table t;
    auto map = t.mapper();
    auto ns = hex(kIbNs);
    auto padded = ns;
    padded.resize(ns.size() + 6, 0);
    std::vector<std::uint8_t> out(padded.size());
    auto r = nd_translate(padded, out, NdDirection::ib_to_eth, map);
    REQUIRE(r.ok());
    out.resize(r.value);
    CHECK(out == hex(kEthNs));
}

TEST_CASE("nd: packets that are not ND are left alone", "[nd]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(512);
    CHECK(nd_translate(hex(kEchoRequest), out, NdDirection::eth_to_ib, map).err == Error::not_nd);
    auto udp = hex(kEthNs);
    udp[6] = 17;
    CHECK(nd_translate(udp, out, NdDirection::eth_to_ib, map).err == Error::not_nd);
    auto hbh = hex(kEthNs);  // extension header before ICMPv6: not handled here
    hbh[6] = 0;
    CHECK(nd_translate(hbh, out, NdDirection::eth_to_ib, map).err == Error::not_nd);
    auto empty = hex(kEthNs);
    empty.resize(40);
    store_be16(&empty[4], 0);
    CHECK(nd_translate(empty, out, NdDirection::eth_to_ib, map).err == Error::not_nd);
}

TEST_CASE("nd: truncated and malformed packets", "[nd][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(512);
    auto ns = hex(kEthNs);
    for (std::size_t n = 0; n < ns.size(); ++n) {
        INFO("length " << n);
        auto r = nd_translate(Bytes(ns.data(), n), out, NdDirection::eth_to_ib, map);
        CHECK(r.err == Error::truncated);
    }
    auto v4 = hex(kEthNs);
    v4[0] = 0x45;
    CHECK(nd_translate(v4, out, NdDirection::eth_to_ib, map).err == Error::bad_ipv6);

    // Fixed part shorter than the message type needs (NS claims 16 bytes).
    auto short_fixed = hex(kEthNs);
    short_fixed.resize(40 + 16);
    store_be16(&short_fixed[4], 16);
    CHECK(nd_translate(short_fixed, out, NdDirection::eth_to_ib, map).err == Error::truncated);

    auto bad_ck = hex(kEthNs);
    bad_ck[43] ^= 0xff;
    CHECK(nd_translate(bad_ck, out, NdDirection::eth_to_ib, map).err == Error::bad_icmp_checksum);
}

TEST_CASE("nd: malformed options", "[nd][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(512);
    const std::string ns_fixed = "87000000 00000000 fd00000000000000000000000000000b";
    const std::string pair = "fd00000000000000000000000000000a ff0200000000000000000001ff00000b";
    // Zero-length option (RFC 4861: must be discarded).
    CHECK(nd_translate(ipv6_icmp(pair, hex(ns_fixed + " 0100 02000000000a")), out, NdDirection::eth_to_ib, map)
              .err == Error::bad_nd_option);
    // Option claiming more bytes than remain.
    CHECK(nd_translate(ipv6_icmp(pair, hex(ns_fixed + " 0102 02000000000a")), out, NdDirection::eth_to_ib, map)
              .err == Error::bad_nd_option);
    // A lone option type byte.
    CHECK(nd_translate(ipv6_icmp(pair, hex(ns_fixed + " 01")), out, NdDirection::eth_to_ib, map).err ==
          Error::bad_nd_option);
    // Source LLA in IPoIB form handed to the Ethernet side and vice versa.
    CHECK(nd_translate(hex(kIbNs), out, NdDirection::eth_to_ib, map).err == Error::bad_nd_option);
    CHECK(nd_translate(hex(kEthNs), out, NdDirection::ib_to_eth, map).err == Error::bad_nd_option);
    // Unknown MAC / IPoIB address.
    CHECK(nd_translate(ipv6_icmp(pair, hex(ns_fixed + " 0101 02000000000c")), out, NdDirection::eth_to_ib, map)
              .err == Error::unmapped_address);
    auto ib = hex(kIbNs);
    ib[ib.size() - 1] ^= 0x01;
    ib[42] = ib[43] = 0;
    store_be16(&ib[42], icmpv6_checksum(Bytes(ib).subspan(8, 16), Bytes(ib).subspan(24, 16), Bytes(ib).subspan(40)));
    CHECK(nd_translate(ib, out, NdDirection::ib_to_eth, map).err == Error::unmapped_address);
}

TEST_CASE("nd: output too small at every size", "[nd][malformed]") {
    Table t;
    auto map = t.mapper();
    auto ns = hex(kEthNs);
    const std::size_t need = hex(kIbNs).size();
    for (std::size_t n = 0; n < need; ++n) {
        std::vector<std::uint8_t> out(n);
        INFO("capacity " << n);
        CHECK(nd_translate(ns, out, NdDirection::eth_to_ib, map).err == Error::no_space);
    }
    auto ib = hex(kIbNs);
    for (std::size_t n = 0; n < ns.size(); ++n) {
        std::vector<std::uint8_t> out(n);
        CHECK(nd_translate(ib, out, NdDirection::ib_to_eth, map).err == Error::no_space);
    }
}

TEST_CASE("nd: growth past the IPv6 payload length field is refused", "[nd][malformed]") {
    Table t;
    auto map = t.mapper();
    auto icmp = hex("87000000 00000000 fd00000000000000000000000000000b");
    const auto slla = hex("0101 02000000000a");
    while (icmp.size() + slla.size() <= 0xffff)
        icmp.insert(icmp.end(), slla.begin(), slla.end());
    auto pkt = ipv6_icmp("fd00000000000000000000000000000a ff0200000000000000000001ff00000b", icmp);
    std::vector<std::uint8_t> out(pkt.size() + nd_max_growth(pkt, NdDirection::eth_to_ib));
    CHECK(nd_translate(pkt, out, NdDirection::eth_to_ib, map).err == Error::too_long);
}
