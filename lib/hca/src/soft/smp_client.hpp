// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's window on the managed fabric: NodeInfo, PortInfo and
// P_KeyTable read by SMP through libibmad/libibumad (under umad2sim on this
// machine, so OpenSM's and ibsim's view is what the HCA reports). Control
// path only: every call is a blocking MAD round trip.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ipoib/hca/hca.hpp"

struct ibmad_port;

namespace ipoib::hca::soft {

struct NodeIdentity {
    std::uint64_t node_guid = 0;
    std::uint64_t port1_guid = 0;
    std::uint8_t num_ports = 0;
};

struct PortSnapshot {
    PortAttr attr;
    std::uint16_t pkeys[kMaxPkeys] = {};
};

// The SMP attribute payloads (the 64-byte SMP data) as SmpClient decodes
// them; pure functions, for the unit tests and the fuzz target. What comes
// back is the SM's and the simulator's to write, so it is checked before it
// is used: false with *err set, and *out left as it was.
inline constexpr std::size_t kSmpDataLen = 64;
// NodeInfo: node GUID, port GUID, number of ports (none of them 0).
bool decode_node_info(const std::uint8_t *nodeinfo64, NodeIdentity *out, std::string *err);
// PortInfo of local port `port`: state, LIDs, SM, MTUs, subnet prefix into
// *out (not port_guid, pkey_tbl_len: query_port fills them). Refused: a
// PortState or PortPhysicalState out of range; past DOWN, a LID that is not
// unicast (or none in ARMED/ACTIVE, or an LMC range past the unicast LIDs),
// an SM LID that is not unicast, MTU codes out of 1..5 or NeighborMTU above
// MTUCap, a multicast GID prefix. A DOWN port's other fields may be anything
// (IBA C14-24.2.1): taken, with a LID that is not unicast read as 0.
bool decode_port_info(const std::uint8_t *portinfo64, std::uint8_t port, PortAttr *out, std::string *err);
// One P_KeyTable block: 32 big-endian entries into keys32[0..31]. Every
// 16-bit value is a P_Key or an empty entry: nothing to refuse.
void decode_pkey_block(const std::uint8_t *block64, std::uint16_t *keys32);

class SmpClient {
  public:
    SmpClient() = default;
    SmpClient(const SmpClient &) = delete;
    SmpClient &operator=(const SmpClient &) = delete;
    ~SmpClient();

    // Open the local umad port; false with error() set on failure.
    bool open();
    bool query_node(NodeIdentity *out);
    // PortInfo + P_KeyTable of local port `port` (1-based).
    bool query_port(std::uint8_t port, const NodeIdentity &node, PortSnapshot *out);
    const std::string &error() const { return error_; }

  private:
    bool smp_dr(unsigned attr, unsigned mod, std::uint8_t *buf);
    bool smp_lid(std::uint16_t lid, unsigned attr, unsigned mod, std::uint8_t *buf);
    ibmad_port *port_ = nullptr;
    std::string error_;
};

} // namespace ipoib::hca::soft
