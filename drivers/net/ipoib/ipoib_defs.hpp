// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib: the driver's named constants (one block, the way Linux's ipoib.h
// keeps its enum), its log types and the error convention.
//
// Error convention of the driver:
// - ethdev and vdev callbacks return 0 or a negative errno, as DPDK expects,
//   and log why (IPOIB_LOG, naming the port) before returning an error;
// - control-path helpers return bool (or a pointer) and, where the caller
//   reports the failure, fill a `std::string *err` with a sentence that names
//   what was wrong ("devarg port=3: expected port 1 or 2");
// - the fast path never fails a call: a frame it cannot deliver or send is
//   freed and counted in its queue's RxStats/TxStats (stats, xstats).
#pragma once

#include <cstdint>

#include <rte_log.h>

namespace ipoib::pmd {

enum : std::uint32_t {
    // Bursts.
    kBurstMax = 64,          // completions polled, work requests built and posted per burst
    kPendingFlushBatch = 32, // held frames re-tried per burst (the rest wait for the next)
    kTxPrefetchData = 4,     // tx_burst: frames ahead whose data is prefetched,
    kTxPrefetchNeigh = 2,    // ... and whose neighbour slot is (by then their MAC is loaded)

    // Frames held while their destination is resolved or their group joined.
    kPendingMax = 64,        // per TX queue
    kHoldPerDest = 3,        // per destination, as Linux ipoib (IPOIB_MAX_PATH_REC_QUEUE)
    kHoldTimeoutMs = 1000,   // held longer than this: dropped (tx_unresolved_drops)

    // Tables the control thread publishes to the fast path.
    kNeighMaxDefault = 65536,  // neighbours per port (devarg neigh_max): every unicast LID of a subnet (48K) fits
    kNeighMaxMin = 16,
    kNeighMaxMax = 1u << 22,
    kNeighSlotsPerEntry = 2, // table slots per neighbour: the table is at most half full
    kNeighProbe = 64,        // linear-probe window of the neighbour table and receive index (half full: a
                             // hit takes 1.5 slots on average; 100,000 random MACs probe 25-35 at worst)
    kTableFullLogMs = 10000, // "table full" is logged at most this often per port (it is counted always)
    kMcastSlots = 64,        // joined multicast groups per port, the broadcast group apart
    kRequestRingSize = 1024, // fast path -> control thread requests per port
    kOwnAddrsMax = 16,       // the application's addresses remembered for failover announcements

    // Queues.
    kQueueDepthMin = 16,     // devargs rxq_size / txq_size and descriptor limits
    kQueueDepthMax = 1024,   // (the software HCA's receive-queue limit)
    kQueueDepthDefault = 512,
    kRxCopyMaxDefault = 128, // devarg rx_copy_max: frames up to this long are copied, longer ones lent
    kRxBufTail = 64,         // receive buffer: GRH area + 4096-byte IB MTU + this slack
    kTxSlotSize = 2 * 4096 + 256, // per-WR bounce slot (ARP/ND translation, linearised frames)

    // Connected mode (ipoib_cm.hpp).
    kCmMtu = 65520,          // the port MTU in connected mode (Linux: IPOIB_CM_MTU)
    kCmRecvMtu = kCmMtu + 4, // what a connection's receive takes, IPoIB header included (sent in the CM data)
    kCmBufSize = 2048,       // one buffer of a shared receive queue's receive
    kCmRecvSge = (kCmRecvMtu + kCmBufSize - 1) / kCmBufSize,  // buffers per receive (32)
    kCmMaxBufSize = 4096,    // larger buffers where a device scatters fewer entries (16 at least)
    kCmSrqDepth = 64,        // receives per RX queue's shared receive queue
    kMaxConnsDefault = 1024, // devarg max_conns: peers per TX queue, passive connections per port
    kMaxConnsMax = 65536,
    kCmIdleDefaultS = 512,   // devarg cm_idle: passive connections idle this long are closed (Linux)
    kCmRetryMs = 10000,      // after a REJ or an unanswered REQ: datagram mode this long, then connect again
    // RNR retries asked of the peer's QP (REP) and granted to it (REQ): 7 = without end, so a
    // sender outrunning a receiver's shared receive queue waits for it (backpressure) instead of
    // losing the connection. Linux sends 0 (its receiver is the kernel's softirq); a Linux sender
    // that takes our 7 waits the same way.
    kCmRnrRetry = 7,
    kCmRxBatch = 16,         // connected-mode receives handled per RX burst
    kCmSendSge = 34,         // a connection send's gather list: the IPoIB header + 33 mbuf segments

    // Timers of the control thread.
    kControlWaitUs = 1000,   // the control thread's sleep between passes (without Hca::mu)
    kAgeIntervalMs = 1000,   // neighbour ageing pass
    kUsedStampMs = 1000,     // the fast path refreshes a neighbour's last-use stamp at most this often
    kNeighTimeoutDefaultS = 300,
    kResolveBackoffMinMs = 1000,   // a failed neighbour is asked for again after this,
    kResolveBackoffMaxMs = 16000,  // doubling per failure up to this (as the SA client's joins)
};

// Offsets in a UD receive buffer: the 40-byte GRH area first (hca::kGrhLen).
inline constexpr std::uint32_t kGrhSgidOffset = 8;
inline constexpr std::uint32_t kGrhDgidOffset = 24;

// A MAC that encodes a sender's 16-bit key and QPN: 0e:kk:kk:qq:qq:qq.
inline constexpr std::uint8_t kLidQpnMacPrefix = 0x0e;

// The link speed ethdev reports where the port's width and speed are not
// known (hca::PortAttr::active_width/speed 0).
inline constexpr std::uint32_t kLinkSpeed = 10000; // RTE_ETH_SPEED_NUM_10G

extern int logtype;
extern int logtype_mcast;

#define IPOIB_LOG(level, fmt, ...) \
    rte_log(RTE_LOG_##level, ::ipoib::pmd::logtype, "net_ipoib: " fmt "\n", ##__VA_ARGS__)
#define IPOIB_MCAST_LOG(level, fmt, ...) \
    rte_log(RTE_LOG_##level, ::ipoib::pmd::logtype_mcast, "net_ipoib: " fmt "\n", ##__VA_ARGS__)

// Fast-path log (Linux's data_debug_level): compiled in only with -Dipoib_data_debug=true.
#ifdef IPOIB_DATA_DEBUG
extern int logtype_data;
#define IPOIB_DATA_LOG(level, fmt, ...) \
    rte_log(RTE_LOG_##level, ::ipoib::pmd::logtype_data, "net_ipoib: " fmt "\n", ##__VA_ARGS__)
#else
#define IPOIB_DATA_LOG(level, fmt, ...) \
    do {                                \
    } while (0)
#endif

// Monotonic milliseconds (CLOCK_MONOTONIC; vDSO, no syscall).
std::uint64_t now_ms() noexcept;
// The same clock in microseconds.
std::uint64_t now_us() noexcept;

} // namespace ipoib::pmd
