// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's window on the managed fabric: NodeInfo, PortInfo and
// P_KeyTable read by SMP through libibmad/libibumad (under umad2sim on this
// machine, so OpenSM's and ibsim's view is what the HCA reports). Control
// path only: every call is a blocking MAD round trip.
#pragma once

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
