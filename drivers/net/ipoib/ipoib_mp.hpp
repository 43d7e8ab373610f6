// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib's multi-process protocol: what a secondary process asks the
// primary over DPDK's IPC (rte_mp) about a port, and the answer. The
// primary writes the result into the buffer the request names (DPDK shared
// memory the secondary allocated); ipoib_mp.cpp has both sides.
#pragma once

#include <cstdint>

#include <rte_eal.h>
#include <rte_ethdev.h>

namespace ipoib::pmd {

inline constexpr const char *kMpAction = "net_ipoib_mp";  // the primary's IPC action
inline constexpr int kMpTimeoutSec = 5;                   // a request without an answer by then fails

enum class MpOp : std::uint32_t {
    stats = 1,         // rte_eth_stats
    stats_reset = 2,   // (nothing back)
    xstats = 3,        // rte_eth_xstat[n]
    dev_info = 4,      // rte_eth_dev_info (the scalar fields dev_infos_get sets)
    link = 5,          // link_update: the primary refreshes dev->data->dev_link
};

struct MpRequest {
    MpOp op;
    std::uint32_t len;  // bytes at buf
    std::uint64_t buf;  // the secondary's buffer, in DPDK's shared memory
    char name[RTE_ETH_NAME_MAX_LEN];
};
struct MpReply {
    std::int32_t rc;  // the op's return value, or -errno
};
static_assert(sizeof(MpRequest) <= RTE_MP_MAX_PARAM_LEN);

} // namespace ipoib::pmd
