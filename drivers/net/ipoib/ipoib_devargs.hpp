// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib device arguments: one table (ipoib_devargs.cpp) of {name, values,
// parser, documentation} from which the valid-keys list, the error messages
// and the pmdinfo string are produced. Adding a devarg: a field in Config, a
// parser and a row in kDevargs, and the row the unit test prints into
// doc/net_ipoib.md (test/unit/pmd/test_devargs.cpp checks all three agree).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ipoib/wire.hpp"
#include "ipoib_defs.hpp"

namespace ipoib::pmd {

enum class L2Mode : std::uint8_t { eth, ipoib };

struct Config {
    std::string provider = "soft";
    std::string device;  // soft: fabric node (default $SIM_HOST); verbs: rdma-core device (default: first)
    std::uint8_t port = 1;
    std::uint16_t pkey = 0;  // 0: the port's P_Key at index 0
    L2Mode l2 = L2Mode::eth;
    std::uint16_t rxq_size = kQueueDepthDefault;
    std::uint16_t txq_size = kQueueDepthDefault;
    std::uint16_t max_queues = 16;  // RX and TX queues offered at most (hca::kMaxQueues)
    std::uint16_t rx_copy_max = kRxCopyMaxDefault;  // received frames up to this long are copied (ipoib_rxbuf.hpp)
    // Options of the HCA provider (key=value,...), from the devargs that belong to it.
    std::string provider_options;
    bool allmulti = false;
    bool connected = false;  // mode=connected (ipoib_cm.hpp)
    std::uint32_t max_conns = kMaxConnsDefault;
    std::uint32_t cm_idle_s = kCmIdleDefaultS;
    bool icrc_csum = true;  // connected mode: offer "IB CRC as checksum" on connections
    bool zero_copy = true;  // DPDK memory registered with the HCA: mbufs sent and received in place
    std::uint32_t neigh_timeout_s = kNeighTimeoutDefaultS;
    std::uint32_t neigh_max = kNeighMaxDefault;  // neighbours (and senders) the port's tables hold
    int gid_index = -1;               // -1: chosen by the port's link layer
    std::uint32_t bcast_qkey = 0x0b1b; // RoCE (static management): the broadcast group's Q_Key
    std::uint32_t bcast_mtu = 0;      // ... and MTU in bytes (0: the port's active MTU)
    struct StaticNeigh {
        wire::Mac mac;
        wire::HwAddr hw;
    };
    std::vector<StaticNeigh> neighs;
};

struct Devarg {
    const char *name;
    const char *values;      // pmdinfo form, e.g. "<1|2>"
    const char *doc_values;  // doc/net_ipoib.md form with the default, e.g. "1 \| 2 (1)"
    const char *doc;         // what it does: the doc table's third column
    // Parse `value` into cfg; false with *expected saying what was expected.
    bool (*parse)(std::string_view value, Config &cfg, std::string *expected);
};

// Every devarg, in the order the docs list them.
std::span<const Devarg> devargs() noexcept;

// Parse a vdev's argument string. False with *err naming the argument and
// what was expected ("devarg port=3: expected port 1 or 2").
bool parse_devargs(const char *args, Config *cfg, std::string *err);

// The string dpdk-pmdinfo.py reads ("PMD_INFO_STRING= {...}"), built from the table.
const char *pmdinfo_string() noexcept;

} // namespace ipoib::pmd
