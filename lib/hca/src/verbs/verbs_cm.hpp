// SPDX-License-Identifier: BSD-3-Clause
// The verbs provider's connection manager: rc.hpp's Cm over librdmacm (the
// kernel's rdma_cm and ib_cm send the MADs), with the RC QP created by the
// caller ("external QP": rdma_connect/rdma_accept with qp_num, the QP moved
// to RTR/RTS with rdma_init_qp_attr's attributes, rdma_establish for the RTU).
//
// Addressing (doc/verbs-provider.md "Connected mode"):
//   InfiniBand  AF_IB: the REQ carries the caller's service ID as it is
//               (Linux ipoib's 0x1000000000000000 | QPN), sent to the
//               destination GID and P_Key; private data unchanged. A Linux
//               ipoib peer on the same fabric sees what its own CM would.
//   RoCE        AF_INET / AF_INET6 from the GIDs (an IPv4-mapped GID is its
//               IPv4 address, a link-local one is scoped to the port's
//               netdev), RDMA_PS_TCP, port = the service ID's low 16 bits.
//               rdma_cm prepends its own 36-byte header to the REQ's
//               private data (56 bytes left, IPoIB needs 16) and removes it
//               again; listening on two service IDs with the same low bits
//               is one listener.
// Internal to lib/hca.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ipoib/hca/rc.hpp"
#include "verbs_glue.hpp"

namespace ipoib::hca::verbs {

struct CmPortInfo {
    std::string device;       // the RDMA device's name: requests arriving for another are rejected
    std::uint8_t port = 1;
    bool ethernet = false;    // RoCE: IP addressing; else AF_IB
    unsigned ifindex = 0;     // RoCE: the port's netdev (scope of link-local GIDs)
    std::uint16_t pkey = 0xffff;
};

// nullptr and *err if librdmacm cannot be used (no /dev/infiniband/rdma_cm:
// the rdma_ucm module is not loaded).
std::unique_ptr<Cm> make_rdma_cm(const Glue *glue, const CmPortInfo &info, std::string *err);

} // namespace ipoib::hca::verbs
