// SPDX-License-Identifier: BSD-3-Clause
// The EAL for in-process driver tests: started once per process, without
// hugepages, PCI, shared files or telemetry, so it runs as any user.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>
#include <vector>

namespace ipoib::test {

// Start the EAL (once); REQUIREs success.
void ensure_eal();

// A packet-mbuf pool of n mbufs with `room` data bytes each (created once per name).
rte_mempool *pool(const char *name, unsigned n = 512, std::uint16_t room = RTE_MBUF_DEFAULT_BUF_SIZE);

// The bytes of an mbuf chain, flattened.
std::vector<std::uint8_t> bytes_of(const rte_mbuf *m);

// A one-segment mbuf holding `data`.
rte_mbuf *mbuf_with(rte_mempool *mp, const std::vector<std::uint8_t> &data);

} // namespace ipoib::test
