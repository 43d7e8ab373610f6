// SPDX-License-Identifier: BSD-3-Clause
// The build environment the PMD stands on: Debian's DPDK plus the driver-SDK
// headers fetched from Debian's source package. Compiling this file proves the
// headers parse as C++20 against the installed public headers; the checks
// prove the internal symbols link and that the running DPDK is the version
// the headers came from (the PMD must refuse to load otherwise).
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include <bus_vdev_driver.h>
#include <ethdev_driver.h>
#include <ethdev_vdev.h>
#include <rte_version.h>

TEST_CASE("dpdk-sdk: running DPDK is the version built against", "[dpdk]") {
    const std::string running = rte_version();
    CHECK(running == RTE_VERSION_STR_BUILT);
    CHECK(RTE_VERSION >= RTE_VERSION_NUM(22, 11, 0, 0));
    CHECK(RTE_VERSION < RTE_VERSION_NUM(22, 12, 0, 0));
}

TEST_CASE("dpdk-sdk: internal driver API is visible and links", "[dpdk]") {
    // Driver-only types are complete...
    CHECK(sizeof(struct rte_eth_dev) > 0);
    CHECK(sizeof(struct eth_dev_ops) > 0);
    CHECK(sizeof(struct rte_vdev_driver) > 0);
    // ...and the INTERNAL-versioned symbols a PMD calls resolve at link time.
    CHECK(reinterpret_cast<void *>(&rte_eth_dev_allocate) != nullptr);
    CHECK(reinterpret_cast<void *>(&rte_eth_dev_release_port) != nullptr);
    CHECK(reinterpret_cast<void *>(&rte_eth_dev_probing_finish) != nullptr);
    CHECK(reinterpret_cast<void *>(&rte_vdev_register) != nullptr);
    CHECK(rte_eth_devices != nullptr);
}
