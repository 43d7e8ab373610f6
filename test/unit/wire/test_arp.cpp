// SPDX-License-Identifier: BSD-3-Clause
#include <catch2/catch.hpp>

#include "fixtures.hpp"

using namespace wt;

// Captured from Linux on a veth pair (tcpdump, Ethernet header stripped):
// 10.9.0.1 (02:00:00:00:00:0a) asks for 10.9.0.2, which answers.
static const char *kEthRequest = "0001 0800 06 04 0001 02000000000a 0a090001 000000000000 0a090002";
static const char *kEthReply = "0001 0800 06 04 0002 02000000000b 0a090002 02000000000a 0a090001";

// The same exchange as IPoIB ARP (RFC 4391 9.1: htype 32, hlen 20).
static const char *kIbRequest =
    "0020 0800 14 04 0001"
    " 80000048fe800000000000000002c903000abcde 0a090001"
    " 0000000000000000000000000000000000000000 0a090002";
static const char *kIbReply =
    "0020 0800 14 04 0002"
    " 00000405fe800000000000000002c903000b0001 0a090002"
    " 80000048fe800000000000000002c903000abcde 0a090001";

TEST_CASE("arp: Ethernet -> IPoIB known answers", "[arp]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(kIbArpLen);
    for (auto [in, want] : {std::pair{kEthRequest, kIbRequest}, std::pair{kEthReply, kIbReply}}) {
        auto r = arp_eth_to_ib(hex(in), out, map);
        REQUIRE(r.ok());
        CHECK(r.value == kIbArpLen);
        CHECK(out == hex(want));
    }
}

TEST_CASE("arp: IPoIB -> Ethernet known answers", "[arp]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(kEthArpLen);
    for (auto [in, want] : {std::pair{kIbRequest, kEthRequest}, std::pair{kIbReply, kEthReply}}) {
        auto r = arp_ib_to_eth(hex(in), out, map);
        REQUIRE(r.ok());
        CHECK(r.value == kEthArpLen);
        CHECK(out == hex(want));
    }
}

TEST_CASE("arp: broadcast target MAC means unknown; Ethernet padding ignored", "[arp]") {
    Table t;
    auto map = t.mapper();
    auto in = hex("0001 0800 06 04 0001 02000000000a 0a090001 ffffffffffff 0a090002");
    in.resize(46, 0);  // minimum Ethernet payload
    std::vector<std::uint8_t> out(kIbArpLen);
    auto r = arp_eth_to_ib(in, out, map);
    REQUIRE(r.ok());
    CHECK(out == hex(kIbRequest));
}

TEST_CASE("arp: RARP opcodes are translated too", "[arp]") {
    Table t;
    auto map = t.mapper();
    auto in = hex("0001 0800 06 04 0003 02000000000a 00000000 02000000000a 00000000");
    std::vector<std::uint8_t> out(kIbArpLen);
    auto r = arp_eth_to_ib(in, out, map);
    REQUIRE(r.ok());
    CHECK(load_be16(&out[6]) == 3);
    CHECK(Bytes(out).subspan(32, 20).front() == 0x80);
}

TEST_CASE("arp: truncated input at every length", "[arp][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> big(128);
    auto eth = hex(kEthRequest);
    for (std::size_t n = 0; n < kEthArpLen; ++n)
        CHECK(arp_eth_to_ib(Bytes(eth.data(), n), big, map).err == Error::truncated);
    auto ib = hex(kIbRequest);
    for (std::size_t n = 0; n < kIbArpLen; ++n)
        CHECK(arp_ib_to_eth(Bytes(ib.data(), n), big, map).err == Error::truncated);
}

TEST_CASE("arp: output too small is refused and untouched", "[arp][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(kIbArpLen - 1, 0xee);
    CHECK(arp_eth_to_ib(hex(kEthRequest), out, map).err == Error::no_space);
    for (auto b : out)
        CHECK(b == 0xee);
    std::vector<std::uint8_t> out2(kEthArpLen - 1, 0xee);
    CHECK(arp_ib_to_eth(hex(kIbRequest), out2, map).err == Error::no_space);
}

TEST_CASE("arp: wrong flavour, lengths and opcodes", "[arp][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(128);
    // An IPoIB ARP given to the Ethernet parser and vice versa.
    CHECK(arp_eth_to_ib(hex(kIbRequest), out, map).err == Error::bad_arp_format);
    auto eth_padded = hex(kEthRequest);
    eth_padded.resize(64, 0);
    CHECK(arp_ib_to_eth(eth_padded, out, map).err == Error::bad_arp_format);
    // ptype IPv6, hlen 8, plen 16.
    CHECK(arp_eth_to_ib(hex("0001 86dd 06 04 0001 02000000000a 0a090001 000000000000 0a090002"), out, map).err ==
          Error::bad_arp_format);
    CHECK(arp_eth_to_ib(hex("0001 0800 08 04 0001 02000000000a 0a090001 000000000000 0a090002 00000000"), out,
                        map).err == Error::bad_arp_format);
    CHECK(arp_eth_to_ib(hex("0001 0800 06 10 0001 02000000000a 0a090001 000000000000 0a090002 "
                            "00000000000000000000000000000000000000000000"),
                        out, map)
              .err == Error::bad_arp_format);
    // Opcodes 0, 5 and InARP (8) are not translated.
    for (const char *op : {"0000", "0005", "0008", "ffff"}) {
        std::string s = std::string("0001 0800 06 04 ") + op + " 02000000000a 0a090001 000000000000 0a090002";
        CHECK(arp_eth_to_ib(hex(s), out, map).err == Error::bad_arp_op);
    }
}

TEST_CASE("arp: unknown addresses are reported, not invented", "[arp][malformed]") {
    Table t;
    auto map = t.mapper();
    std::vector<std::uint8_t> out(128);
    // Unknown sender MAC.
    CHECK(arp_eth_to_ib(hex("0001 0800 06 04 0001 02000000000c 0a090001 000000000000 0a090002"), out, map).err ==
          Error::unmapped_address);
    // Unknown target MAC in a reply.
    CHECK(arp_eth_to_ib(hex("0001 0800 06 04 0002 02000000000a 0a090001 02000000000c 0a090002"), out, map).err ==
          Error::unmapped_address);
    // Unknown IPoIB sender.
    auto ib = hex(kIbReply);
    ib[10] ^= 0x01;
    CHECK(arp_ib_to_eth(ib, out, map).err == Error::unmapped_address);
    // A mapper without callbacks maps nothing.
    CHECK(arp_eth_to_ib(hex(kEthRequest), out, AddrMapper{}).err == Error::unmapped_address);
}
