// SPDX-License-Identifier: BSD-3-Clause
#include <catch2/catch.hpp>

#include "fixtures.hpp"

using namespace wt;

TEST_CASE("identity: GUID byte order", "[identity]") {
    auto g = guid_from_u64(0x0002c903000abcdeULL);
    CHECK(g == Guid{0x00, 0x02, 0xc9, 0x03, 0x00, 0x0a, 0xbc, 0xde});
    CHECK(guid_to_u64(g) == 0x0002c903000abcdeULL);
}

TEST_CASE("identity: IPv6 interface identifier inverts the U/L bit", "[identity]") {
    // Linux: ib0 with port GUID 0002:c903:000a:bcde gets fe80::202:c903:a:bcde.
    auto g = guid_from_u64(0x0002c903000abcdeULL);
    auto iid = ipv6_iid_from_guid(g);
    CHECK(iid == std::array<std::uint8_t, 8>{0x02, 0x02, 0xc9, 0x03, 0x00, 0x0a, 0xbc, 0xde});
    auto ll = ipv6_link_local_from_guid(g);
    Gid as_gid;
    as_gid.raw = ll;
    CHECK(to_string(as_gid) == "fe80::202:c903:a:bcde");
    // A GUID with the bit already set (a locally administered one) clears it.
    auto local = guid_from_u64(0x0200000000100003ULL);
    CHECK(ipv6_iid_from_guid(local)[0] == 0x00);
}

TEST_CASE("identity: GUID from a port GID", "[identity]") {
    auto gid = parse_gid_text("fe80::2:c903:a:bcde");
    REQUIRE(gid.ok());
    CHECK(guid_to_u64(guid_from_gid(gid.value)) == 0x0002c903000abcdeULL);
    // The simulator's GUIDs (ibsim numbers them from 0x100000).
    auto sim = parse_gid_text("fe80::10:3");
    CHECK(guid_to_u64(guid_from_gid(sim.value)) == 0x0000000000100003ULL);
}

TEST_CASE("identity: MAC from GUID is unicast, local, folded EUI-64", "[identity]") {
    auto m = mac_from_guid(guid_from_u64(0x0002c903000abcdeULL));
    CHECK(m == mac("02:02:c9:0a:bc:de"));
    CHECK_FALSE(m.is_multicast());
    CHECK((m.raw[0] & 0x02) != 0);
    // An OUI with the group bit set still yields a unicast MAC.
    auto g = mac_from_guid(guid_from_u64(0x0100000000000001ULL));
    CHECK(g == mac("02:00:00:00:00:01"));
    // A MAC-derived EUI-64 (ff:fe in the middle) folds back to that MAC, made local.
    auto e = mac_from_guid(guid_from_u64(0x001b21fffe123456ULL));
    CHECK(e == mac("02:1b:21:12:34:56"));
    // Different ports differ.
    CHECK(mac_from_guid(guid_from_u64(0x100003)) != mac_from_guid(guid_from_u64(0x100004)));
}
