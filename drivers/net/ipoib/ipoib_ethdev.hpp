// SPDX-License-Identifier: BSD-3-Clause
// The ethdev operations of net_ipoib, by the file that implements them. The
// ops table and probe/remove are in ipoib_ethdev.cpp.
#pragma once

#include <cstdint>

#include <ethdev_driver.h>

namespace ipoib::pmd {

// ipoib_stats.cpp
int stats_get(rte_eth_dev *dev, rte_eth_stats *s) noexcept;
int stats_reset(rte_eth_dev *dev) noexcept;
int xstats_get(rte_eth_dev *dev, rte_eth_xstat *x, unsigned n) noexcept;
int xstats_get_names(rte_eth_dev *dev, rte_eth_xstat_name *names, unsigned size) noexcept;

// ipoib_queue.cpp
int rx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned socket,
                   const rte_eth_rxconf *conf, rte_mempool *mp) noexcept;
void rx_queue_release(rte_eth_dev *dev, std::uint16_t qid) noexcept;
int tx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned socket,
                   const rte_eth_txconf *conf) noexcept;
void tx_queue_release(rte_eth_dev *dev, std::uint16_t qid) noexcept;
void drop_pending(rte_eth_dev *dev) noexcept;  // frames held for unresolved destinations, at stop

// ipoib_telemetry.cpp
void telemetry_register() noexcept;

} // namespace ipoib::pmd
