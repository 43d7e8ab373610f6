// SPDX-License-Identifier: BSD-3-Clause
#include <catch2/catch.hpp>

#include "fixtures.hpp"

using namespace wt;

TEST_CASE("encap: allowed EtherTypes", "[encap]") {
    CHECK(ethertype_allowed(0x0800));
    CHECK(ethertype_allowed(0x86dd));
    CHECK(ethertype_allowed(0x0806));
    CHECK(ethertype_allowed(0x8035));
    CHECK_FALSE(ethertype_allowed(0x8100));  // VLAN
    CHECK_FALSE(ethertype_allowed(0x88cc));  // LLDP
    CHECK_FALSE(ethertype_allowed(0x8915));  // RoCE
    CHECK_FALSE(ethertype_allowed(0x0000));
}

TEST_CASE("encap: parse known headers, reserved ignored", "[encap]") {
    auto ip4 = hex("0800 0000");
    auto r = parse_encap(ip4);
    REQUIRE(r.ok());
    CHECK(r.value == 0x0800);
    auto ip6 = hex("86dd abcd");  // reserved non-zero: ignored on receive
    r = parse_encap(ip6);
    REQUIRE(r.ok());
    CHECK(r.value == 0x86dd);
}

TEST_CASE("encap: malformed and unsupported", "[encap][malformed]") {
    auto h = hex("0800 0000");
    for (std::size_t n = 0; n < kEncapLen; ++n)
        CHECK(parse_encap(Bytes(h.data(), n)).err == Error::truncated);
    auto vlan = hex("8100 0000");
    auto r = parse_encap(vlan);
    CHECK(r.err == Error::unsupported_ethertype);
    CHECK(r.value == 0x8100);  // still reported, for counters
}

TEST_CASE("encap: write", "[encap]") {
    std::vector<std::uint8_t> out(4, 0xee);
    CHECK(write_encap(out, kEtherTypeArp) == Error::ok);
    CHECK(out == hex("0806 0000"));
    CHECK(write_encap(out, 0x88cc) == Error::unsupported_ethertype);
    std::vector<std::uint8_t> small(3, 0xee);
    CHECK(write_encap(small, kEtherTypeIPv4) == Error::no_space);
    CHECK(small == hex("eeeeee"));
}

TEST_CASE("mgid: broadcast group of a P_Key", "[mgid]") {
    auto b = broadcast_mgid(0xffff);
    REQUIRE(b.ok());
    CHECK(to_string(b.value) == "ff12:401b:ffff::ffff:ffff");
    // Limited-member P_Key: the full-membership bit is set in the group.
    b = broadcast_mgid(0x7fff);
    REQUIRE(b.ok());
    CHECK(to_string(b.value) == "ff12:401b:ffff::ffff:ffff");
    b = broadcast_mgid(0x0001);
    REQUIRE(b.ok());
    CHECK(to_string(b.value) == "ff12:401b:8001::ffff:ffff");
    b = broadcast_mgid(0x8001, 0x5);
    REQUIRE(b.ok());
    CHECK(to_string(b.value) == "ff15:401b:8001::ffff:ffff");
    b = broadcast_mgid(0x8001, 0xe);
    REQUIRE(b.ok());
    CHECK(to_string(b.value) == "ff1e:401b:8001::ffff:ffff");
}

TEST_CASE("mgid: invalid P_Keys and scopes are refused", "[mgid][malformed]") {
    CHECK(broadcast_mgid(0x0000).err == Error::bad_pkey);
    CHECK(broadcast_mgid(0x8000).err == Error::bad_pkey);
    CHECK(broadcast_mgid(0x8001, 0x0).err == Error::bad_scope);
    CHECK(broadcast_mgid(0x8001, 0xf).err == Error::bad_scope);
    CHECK(broadcast_mgid(0x8001, 0x12).err == Error::bad_scope);
    CHECK(broadcast_hwaddr(0x8000).err == Error::bad_pkey);
}

TEST_CASE("mgid: broadcast hardware address as Linux shows it", "[mgid]") {
    auto a = broadcast_hwaddr(0x7fff);
    REQUIRE(a.ok());
    // Linux ib0 "brd" for the default partition.
    CHECK(to_string(a.value) == "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff");
    CHECK(a.value.qpn() == kMulticastQpn);
    CHECK(a.value.flags() == 0);
}

TEST_CASE("mgid: IPv4 multicast to MGID", "[mgid]") {
    auto addr = hex("e0010203");  // 224.1.2.3
    auto g = ipv4_mcast_mgid(addr, 0x8001);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:401b:8001::1:203");
    // Only the low 28 bits are kept: 239.129.2.3 -> 0xf810203 -> 0f81:0203.
    auto addr2 = hex("ef810203");
    g = ipv4_mcast_mgid(addr2, 0xffff);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:401b:ffff::f81:203");
    // All-hosts 224.0.0.1 on the default partition.
    auto allhosts = hex("e0000001");
    g = ipv4_mcast_mgid(allhosts, 0x7fff);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:401b:ffff::1");
    // Limited broadcast is the broadcast group.
    auto bcast = hex("ffffffff");
    g = ipv4_mcast_mgid(bcast, 0x8001);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:401b:8001::ffff:ffff");
}

TEST_CASE("mgid: scope and P_Key are taken from the broadcast GID", "[mgid]") {
    auto bcast = parse_gid_text("ff15:401b:8002::ffff:ffff");
    REQUIRE(bcast.ok());
    auto addr = hex("e0010203");
    auto g = ipv4_mcast_mgid(addr, bcast.value);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff15:401b:8002::1:203");
    auto a6 = parse_gid_text("ff02::1:ff00:b");
    g = ipv6_mcast_mgid(a6.value.raw, bcast.value);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff15:601b:8002::1:ff00:b");
    CHECK(mgid_scope(g.value).value == 0x5);
    CHECK(mgid_pkey(g.value).value == 0x8002);
    CHECK(is_ipoib_mgid(g.value));
}

TEST_CASE("mgid: IPv6 multicast to MGID", "[mgid]") {
    // Solicited-node group of fd00::b, all-nodes and all-routers.
    auto sn = parse_gid_text("ff02::1:ff00:b");
    auto g = ipv6_mcast_mgid(sn.value.raw, 0xffff);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:601b:ffff::1:ff00:b");
    auto all = parse_gid_text("ff02::1");
    g = ipv6_mcast_mgid(all.value.raw, 0x8001);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:601b:8001::1");
    // The last 80 bits are copied whole.
    auto wide = parse_gid_text("ff0e:1234:5678:9abc:def0:1122:3344:5566");
    g = ipv6_mcast_mgid(wide.value.raw, 0x8001);
    REQUIRE(g.ok());
    CHECK(to_string(g.value) == "ff12:601b:8001:9abc:def0:1122:3344:5566");
}

TEST_CASE("mgid: non-multicast and malformed input", "[mgid][malformed]") {
    auto uni4 = hex("0a000001");
    CHECK(ipv4_mcast_mgid(uni4, 0x8001).err == Error::not_multicast);
    auto e240 = hex("f0000001");  // 240.0.0.1: class E, not multicast
    CHECK(ipv4_mcast_mgid(e240, 0x8001).err == Error::not_multicast);
    auto uni6 = parse_gid_text("fd00::b");
    CHECK(ipv6_mcast_mgid(uni6.value.raw, 0x8001).err == Error::not_multicast);
    auto short4 = hex("e00102");
    CHECK(ipv4_mcast_mgid(short4, 0x8001).err == Error::truncated);
    auto short6 = hex("ff02000000000000000000000000ff");
    CHECK(ipv6_mcast_mgid(short6, 0x8001).err == Error::truncated);
    auto addr = hex("e0010203");
    CHECK(ipv4_mcast_mgid(addr, 0x8000).err == Error::bad_pkey);
    CHECK(ipv4_mcast_mgid(addr, Gid{}).err == Error::not_multicast);
    auto bad_scope = parse_gid_text("ff10:401b:8001::ffff:ffff");
    CHECK(ipv4_mcast_mgid(addr, bad_scope.value).err == Error::bad_scope);
    auto bad_pkey = parse_gid_text("ff12:401b:8000::ffff:ffff");
    CHECK(ipv4_mcast_mgid(addr, bad_pkey.value).err == Error::bad_pkey);
    CHECK(mgid_scope(Gid{}).err == Error::not_multicast);
    CHECK(mgid_pkey(Gid{}).err == Error::not_multicast);
    auto other = parse_gid_text("ff12:1234:8001::1");
    CHECK_FALSE(is_ipoib_mgid(other.value));
}
