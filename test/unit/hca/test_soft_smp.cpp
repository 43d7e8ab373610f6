// SPDX-License-Identifier: BSD-3-Clause
// What the software HCA makes of the SMP answers it reads from the SM
// (lib/hca/src/soft/smp_client.hpp): the PortInfo and NodeInfo decoders,
// given answers built here byte by byte from the IBA layout.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "soft/smp_client.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::soft;

namespace {

// PortInfo (IBA 14.2.5.6) as OpenSM leaves an HCA port on ibsim: ACTIVE,
// LinkUp, LID 2, SM LID 1, MTUCap and NeighborMTU 2048, prefix fe80::.
struct PortInfo {
    std::uint8_t b[kSmpDataLen] = {};
    PortInfo() {
        b[8] = 0xfe, b[9] = 0x80;  // GidPrefix
        lid(2);
        b[18] = 0, b[19] = 1;      // MasterSMLID
        b[32] = 0x10 | 4;          // LinkSpeedSupported | PortState ACTIVE
        b[33] = 5 << 4 | 2;        // PortPhysicalState LinkUp | LinkDownDefaultState
        b[36] = 4 << 4;            // NeighborMTU | MasterSMSL
        b[41] = 4;                 // InitTypeReply | MTUCap
    }
    PortInfo &lid(std::uint16_t v) { return b[16] = std::uint8_t(v >> 8), b[17] = std::uint8_t(v), *this; }
    PortInfo &sm_lid(std::uint16_t v) { return b[18] = std::uint8_t(v >> 8), b[19] = std::uint8_t(v), *this; }
    PortInfo &state(std::uint8_t s) { return b[32] = std::uint8_t((b[32] & 0xf0) | s), *this; }
    PortInfo &phys(std::uint8_t s) { return b[33] = std::uint8_t(s << 4 | (b[33] & 0xf)), *this; }
    PortInfo &lmc(std::uint8_t v) { return b[34] = v, *this; }
    PortInfo &neighbor_mtu(std::uint8_t c) { return b[36] = std::uint8_t(c << 4 | (b[36] & 0xf)), *this; }
    PortInfo &mtu_cap(std::uint8_t c) { return b[41] = c, *this; }
    PortInfo &prefix_hi(std::uint8_t v) { return b[8] = v, *this; }
};

// Refused, with a reason, and the port's attributes left as they were.
std::string refused(const PortInfo &pi) {
    PortAttr a;
    a.lid = 77;
    std::string err;
    if (decode_port_info(pi.b, 1, &a, &err))
        return "taken";
    return a.lid == 77 && !err.empty() ? err : "refused, but the attributes changed or no reason";
}

} // namespace

TEST_CASE("soft smp: PortInfo values no correct SM or simulator answers are refused, not passed on") {
    PortAttr a;
    std::string err;
    REQUIRE(decode_port_info(PortInfo().b, 1, &a, &err));
    CHECK(a.state == PortState::active);
    CHECK(a.phys_state == 5);
    CHECK(a.lid == 2);
    CHECK(a.sm_lid == 1);
    CHECK(a.max_mtu == Mtu::mtu2048);
    CHECK(a.active_mtu == Mtu::mtu2048);
    CHECK(a.subnet_prefix == 0xfe80000000000000ull);
    CHECK(a.port_num == 1);

    // Once the SM took the port past DOWN, every field must mean something.
    CHECK_THAT(refused(PortInfo().mtu_cap(0)), Catch::Contains("MTUCap 0"));  // was taken as 2048
    CHECK_THAT(refused(PortInfo().mtu_cap(6)), Catch::Contains("MTUCap 6"));
    CHECK_THAT(refused(PortInfo().neighbor_mtu(7)), Catch::Contains("NeighborMTU 7"));
    CHECK_THAT(refused(PortInfo().neighbor_mtu(5)), Catch::Contains("NeighborMTU 5"));  // above the cap
    CHECK_THAT(refused(PortInfo().lid(0xc001)), Catch::Contains("LID 49153"));  // a multicast LID
    CHECK_THAT(refused(PortInfo().lid(0xffff)), Catch::Contains("LID 65535"));  // the permissive LID
    CHECK_THAT(refused(PortInfo().lid(0)), Catch::Contains("LID 0"));            // ACTIVE without a LID
    CHECK_THAT(refused(PortInfo().lid(0xbfff).lmc(1)), Catch::Contains("LMC 1"));
    CHECK_THAT(refused(PortInfo().sm_lid(0xc000)), Catch::Contains("SM LID 49152"));
    CHECK_THAT(refused(PortInfo().prefix_hi(0xff)), Catch::Contains("prefix"));  // a multicast GID
    CHECK_THAT(refused(PortInfo().state(0)), Catch::Contains("PortState 0"));   // was taken as NOP
    CHECK_THAT(refused(PortInfo().state(5)), Catch::Contains("PortState 5"));   // was taken as DOWN
    CHECK_THAT(refused(PortInfo().phys(0)), Catch::Contains("PortPhysicalState 0"));
    CHECK_THAT(refused(PortInfo().phys(8)), Catch::Contains("PortPhysicalState 8"));

    // INIT: no LID or SM yet is fine.
    CHECK(refused(PortInfo().state(2).lid(0).sm_lid(0)) == "taken");

    // DOWN: only PortState and PortPhysicalState mean anything (IBA C14-24.2.1).
    // Taken; a LID that is not unicast reads 0, MTUs that are no codes as before.
    PortAttr d;
    REQUIRE(decode_port_info(PortInfo().state(1).phys(2).lid(0xc001).sm_lid(0xffff).mtu_cap(0).neighbor_mtu(9).b, 2,
                             &d, &err));
    CHECK(d.state == PortState::down);
    CHECK(d.lid == 0);
    CHECK(d.sm_lid == 0);
    CHECK(d.max_mtu == Mtu::mtu2048);
    CHECK(d.active_mtu == Mtu::mtu2048);

    // NodeInfo: a node without a GUID, a port GUID or ports is no HCA to be.
    std::uint8_t ni[kSmpDataLen] = {};
    ni[0] = ni[1] = ni[2] = 1, ni[3] = 2;  // BaseVersion, ClassVersion, NodeType CA, NumPorts
    ni[19] = 0x40, ni[27] = 0x41;          // NodeGUID, PortGUID
    NodeIdentity n;
    REQUIRE(decode_node_info(ni, &n, &err));
    CHECK(n.node_guid == 0x40);
    CHECK(n.port1_guid == 0x41);
    CHECK(n.num_ports == 2);
    ni[27] = 0;
    n = NodeIdentity{};
    err.clear();
    CHECK_FALSE(decode_node_info(ni, &n, &err));
    CHECK_THAT(err, Catch::Contains("PortGUID"));
    CHECK(n.port1_guid == 0);
}

// The link rate the driver reports comes from these (hca::link_mbps).
TEST_CASE("soft smp: active width and speed, FDR and faster from the extended speed") {
    PortInfo pi;
    pi.b[31] = 2;             // LinkWidthActive 4x
    pi.b[35] = 4 << 4 | 4;    // LinkSpeedActive QDR | LinkSpeedEnabled
    PortAttr a;
    std::string err;
    REQUIRE(decode_port_info(pi.b, 1, &a, &err));
    CHECK(a.active_width == 2);
    CHECK(a.active_speed == 4);
    CHECK(link_mbps(a.active_width, a.active_speed) == 40000);  // as Linux ipoib's ethtool: 4 x 10G
    CHECK(link_mbps(2, 16) == 56000);                            // 4x FDR
    pi.b[62] = 2 << 4;        // LinkSpeedExtActive EDR
    REQUIRE(decode_port_info(pi.b, 1, &a, &err));
    CHECK(a.active_speed == 32);
    CHECK(link_mbps(a.active_width, a.active_speed) == 100000);
    CHECK(link_mbps(0, 4) == 0);
    CHECK(link_mbps(2, 3) == 0);
}
