// SPDX-License-Identifier: BSD-3-Clause
// The ethdev operations of net_ipoib, by the file that implements them. The
// ops table and probe/remove are in ipoib_ethdev.cpp.
#pragma once

#include <cstdint>
#include <string>

#include <ethdev_driver.h>

struct rte_vdev_device;

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
// dev_start: whether the HCA can receive into the RX queues' mbufs (zero
// copy), else false with *why (the driver's own receive buffers then).
bool rx_mbufs_possible(const struct Port *p, std::uint16_t nrx, std::string *why);

// ipoib_rss.cpp
std::uint64_t rss_offloads() noexcept;    // the flow types the HCA hashes (dev_info)
int rss_configure(rte_eth_dev *dev) noexcept;  // dev_configure's rss_conf and mq_mode
int reta_update(rte_eth_dev *dev, rte_eth_rss_reta_entry64 *conf, std::uint16_t size) noexcept;
int reta_query(rte_eth_dev *dev, rte_eth_rss_reta_entry64 *conf, std::uint16_t size) noexcept;
int rss_hash_update(rte_eth_dev *dev, rte_eth_rss_conf *conf) noexcept;
int rss_hash_conf_get(rte_eth_dev *dev, rte_eth_rss_conf *conf) noexcept;

// ipoib_intr.cpp: RX interrupts
int rx_intr_install(rte_eth_dev *dev) noexcept;  // dev_start, with intr_conf.rxq: one fd per RX queue
void rx_intr_uninstall(rte_eth_dev *dev) noexcept;
int rx_queue_intr_enable(rte_eth_dev *dev, std::uint16_t qid) noexcept;
int rx_queue_intr_disable(rte_eth_dev *dev, std::uint16_t qid) noexcept;

// ipoib_mp.cpp: the multi-process model (secondary processes)
int mp_primary_init() noexcept;                     // primary probe: answer secondaries' requests
int probe_secondary(rte_vdev_device *vdev) noexcept;  // attach to the primary's port
void remove_secondary(rte_eth_dev *dev) noexcept;   // this process's state of the port
// The primary's answer to one request (param: the rte_mp message's), what
// its IPC handler replies; -EFAULT/-EINVAL are counted in mp_bad_requests.
int mp_answer(const void *param, int len) noexcept;
std::uint64_t mp_bad_requests() noexcept;            // malformed requests the primary refused
std::uint64_t mp_bursts_refused() noexcept;          // rx/tx bursts a secondary called (nothing done)
// ipoib_telemetry.cpp
void telemetry_register() noexcept;

} // namespace ipoib::pmd
