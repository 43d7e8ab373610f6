// SPDX-License-Identifier: BSD-3-Clause
// Fuzz target: net_ipoib's devargs string (what a user types after --vdev).
// A string is accepted into a config whose every field is in range, or
// refused with a message that names an argument.
#include <cstdint>
#include <string>

#include "../wire/fuzz_common.hpp"
#include "ipoib_devargs.hpp"

using namespace ipoib::pmd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string args(reinterpret_cast<const char *>(data), size);
    if (args.find('\0') != std::string::npos)
        return 0;  // a C string: what rte_vdev hands the driver
    Config cfg;
    std::string err;
    if (!parse_devargs(args.c_str(), &cfg, &err)) {
        FUZZ_CHECK(err.rfind("devarg ", 0) == 0 || err.rfind("cannot parse devargs", 0) == 0);
        return 0;
    }
    FUZZ_CHECK(err.empty());
    FUZZ_CHECK(cfg.port == 1 || cfg.port == 2);
    FUZZ_CHECK(cfg.pkey == 0 || ipoib::wire::pkey_valid(cfg.pkey));
    for (std::uint32_t d : {std::uint32_t{cfg.rxq_size}, std::uint32_t{cfg.txq_size}})
        FUZZ_CHECK(d >= kQueueDepthMin && d <= kQueueDepthMax && (d & (d - 1)) == 0);
    FUZZ_CHECK(cfg.neigh_timeout_s >= 1 && cfg.neigh_timeout_s <= 86400);
    FUZZ_CHECK(cfg.gid_index >= -1 && cfg.gid_index <= 255);
    FUZZ_CHECK(cfg.bcast_qkey >= 1 && cfg.bcast_qkey <= 0x7fffffff);
    FUZZ_CHECK(cfg.bcast_mtu == 0 || (cfg.bcast_mtu >= 256 && cfg.bcast_mtu <= 4096));
    FUZZ_CHECK(cfg.device.size() <= 63);
    return 0;
}
