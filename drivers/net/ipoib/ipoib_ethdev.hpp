// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib private definitions: the per-HCA object (shared by the ethdevs of
// one HCA: its provider context, control plane and control thread), the
// per-ethdev port, and the lock-free tables the fast path reads.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ethdev_driver.h>
#include <rte_ring.h>

#include "ipoib/ctrl/control_plane.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/wire.hpp"

namespace ipoib::pmd {

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

enum class L2Mode : std::uint8_t { eth, ipoib };

struct Config {
    std::string provider = "soft";
    std::string device;        // soft: fabric node (default $SIM_HOST); verbs: rdma-core device (default: first)
    std::uint8_t port = 1;
    std::uint16_t pkey = 0;    // 0: the port's P_Key at index 0
    L2Mode l2 = L2Mode::eth;
    std::uint16_t rxq_size = 512;
    std::uint16_t txq_size = 512;
    std::string capture;
    std::string fabric;
    bool allmulti = false;
    std::uint32_t neigh_timeout_s = 300;
    int gid_index = -1;                    // -1: chosen by the port's link layer
    std::uint32_t bcast_qkey = 0x0b1b;     // RoCE (static management): the broadcast group's Q_Key
    std::uint32_t bcast_mtu = 0;           // ... and MTU in bytes (0: the port's active MTU)
    struct StaticNeigh {
        wire::Mac mac;
        wire::HwAddr hw;
    };
    std::vector<StaticNeigh> neighs;
};

// --- Lock-free tables: written by the control thread only, read by the fast
// path under a per-entry sequence lock. ---

enum NeighState : std::uint8_t { kNeighEmpty = 0, kNeighIncomplete = 1, kNeighResolved = 2, kNeighFailed = 3 };

struct Neigh {
    std::atomic<std::uint32_t> seq;
    std::uint8_t mac[6];
    std::uint8_t state;
    std::uint8_t sl;
    std::uint8_t is_static;
    std::uint16_t dlid;
    std::uint32_t qpn;
    wire::Gid gid;  // zero if unknown
    hca::Ah *ah;
    std::atomic<std::uint64_t> used_ms;  // written by the fast path (relaxed)
    std::uint64_t created_ms;
};

struct NeighSnapshot {
    std::uint8_t state, sl;
    std::uint16_t dlid;
    std::uint32_t qpn;
    hca::Ah *ah;
    wire::Gid gid;
};

struct RxIndex {  // (LID, QPN) of a sender -> the MAC it is known by
    std::atomic<std::uint32_t> seq;
    std::uint8_t used;
    std::uint8_t mac[6];
    std::uint16_t lid;
    std::uint32_t qpn;
};

class NeighTable {
  public:
    static constexpr std::uint32_t kSize = 1024;
    // Fast path.
    bool lookup(const wire::Mac &mac, NeighSnapshot *out, std::uint64_t now_ms);
    bool mac_for(std::uint16_t lid, std::uint32_t qpn, wire::Mac *out);
    // Control thread.
    Neigh *find_or_add(const wire::Mac &mac);
    Neigh *find(const wire::Mac &mac);
    void write(Neigh *n, const std::function<void(Neigh &)> &fn);
    void remove(Neigh *n);
    void index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac);
    void unindex(std::uint16_t lid, std::uint32_t qpn);
    Neigh *slots() { return slots_; }

  private:
    static std::uint32_t hash(const std::uint8_t *m);
    Neigh slots_[kSize] = {};
    RxIndex idx_[kSize] = {};
};

struct McEntry {
    std::atomic<std::uint32_t> seq;
    wire::Gid mgid;
    std::uint16_t mlid;
    hca::Ah *ah;
    std::uint8_t used;
};

// Counters the fast path keeps per queue (one writer each).
struct RxStats {
    std::uint64_t packets, bytes, errors, nombuf;
    std::uint64_t loopback_discard, unsupported_ethertype, arp_translated, nd_translated, translate_errors;
    std::uint64_t bad_frames;
};
struct TxStats {
    std::uint64_t packets, bytes, errors;
    std::uint64_t unresolved_drop, unresolved_queued, too_big, unsupported_ethertype, link_down_drop;
    std::uint64_t arp_translated, nd_translated, translate_errors, mcast_unjoined;
};

struct Port;

struct RxQueue {
    Port *port;
    rte_mempool *mp;
    std::uint16_t queue_id;
    RxStats st;
    hca::Wc wc[64];
    hca::RecvWr repost[64];
};

struct Pending {
    rte_mbuf *m;
    wire::Mac mac;
    std::uint64_t since_ms;
};

struct TxQueue {
    Port *port;
    std::uint16_t queue_id;
    TxStats st;
    std::vector<rte_mbuf *> inflight;     // by wr_id
    std::vector<std::uint32_t> free_ids;  // wr_ids available
    std::vector<std::uint8_t> bounce;     // per-slot bounce buffers (ARP/ND, linearised frames)
    std::vector<std::array<std::uint8_t, 4>> hdr;  // per-slot IPoIB header
    std::uint32_t slot_size = 0;
    Pending pending[64];
    std::uint32_t npending = 0;
    std::atomic_flag busy = ATOMIC_FLAG_INIT;  // tx_burst vs. rx_burst's pending flush (per burst)
};

struct Hca;

// One ethdev: one (HCA port, P_Key).
struct Port {
    rte_eth_dev *dev = nullptr;
    std::uint16_t port_id = 0;
    std::string name;
    Config cfg;
    Hca *hca = nullptr;
    ctrl::Interface *iface = nullptr;

    // Fast-path view, published by the control thread (release) before link up.
    std::atomic<hca::Qp *> qp_ready{nullptr};
    std::atomic<bool> link_up{false};
    std::unique_ptr<hca::Cq> rx_cq, tx_cq;
    std::unique_ptr<hca::Qp> qp;
    std::uint8_t *rx_pool = nullptr;
    std::unique_ptr<hca::Mr> rx_mr;
    std::uint32_t rx_bufsize = 0, rx_nbuf = 0;
    std::uint16_t lid = 0;  // InfiniBand: our LID; RoCE: our GID folded (see gid_key)
    std::uint32_t qpn = 0;
    bool roce = false;      // Ethernet link layer: every address handle carries a GRH
    std::uint8_t gid_index = 0;
    wire::HwAddr hwaddr{};
    rte_ether_addr mac{};
    std::uint32_t qkey = 0x0b1b;
    std::uint16_t mtu = 2044;
    hca::Ah *bcast_ah = nullptr;
    wire::Gid bcast_mgid{};
    std::uint16_t bcast_mlid = 0;
    std::uint8_t bcast_sl = 0;

    NeighTable neigh;
    McEntry mcast[64] = {};
    std::vector<std::unique_ptr<hca::Ah>> ahs;  // owned; freed at close (the fast path may hold pointers)
    rte_ring *requests = nullptr;               // fast path -> control thread
    int dynfield = -1;

    std::vector<RxQueue *> rxq;
    std::vector<TxQueue *> txq;
    std::uint64_t last_age_ms = 0;
    hca::QpCounters hca_base{};  // HCA counters at the last xstats reset (they live in the HCA)
    bool started = false;
};

// Request from the fast path to the control thread (rte_ring element, 32 bytes).
struct Request {
    std::uint8_t kind;  // 1 learn, 2 resolve MAC, 3 send-only join
    std::uint8_t pad;
    std::uint16_t lid;
    std::uint32_t qpn;
    std::uint8_t mac[6];
    std::uint8_t pad2[2];
    std::uint8_t gid[16];
};
static_assert(sizeof(Request) == 32);

// One per HCA device per process, shared by the ethdevs on it.
struct Hca {
    std::string key;
    std::string device;      // the provider's name for it
    int gid_index_arg = -1;  // devarg gid_index of the port that opened it
    int refs = 0;
    std::unique_ptr<hca::Context> ctx;
    ctrl::ControlPlane cp;
    std::mutex mu;  // control path only: control thread vs ethdev ops / telemetry
    pthread_t thread{};
    bool thread_running = false;
    std::atomic<bool> stop{false};
    std::vector<Port *> ports;
};

// Fast path (ipoib_rxtx.cpp).
std::uint16_t rx_burst(void *q, rte_mbuf **pkts, std::uint16_t n);
std::uint16_t tx_burst(void *q, rte_mbuf **pkts, std::uint16_t n);
void tx_flush_completions(TxQueue *q);
void tx_service_pending(TxQueue *q);

// The 16-bit key a peer is known by next to its QPN (the receive index and
// the encoded MACs below): its LID on InfiniBand; on RoCE, where there are no
// LIDs, its GID folded to 16 bits (the GRH's source GID on receive).
inline std::uint16_t gid_key(const std::uint8_t *gid) {
    std::uint16_t k = 0;
    for (int i = 0; i < 16; i += 2)
        k = static_cast<std::uint16_t>(k ^ (gid[i] << 8 | gid[i + 1]));
    return k ? k : 1;
}

// Encoded MACs for senders not (yet) known by their GID: LID and QPN in a locally administered MAC.
inline wire::Mac lidqpn_mac(std::uint16_t lid, std::uint32_t qpn) {
    return wire::Mac{{0x0e, static_cast<std::uint8_t>(lid >> 8), static_cast<std::uint8_t>(lid),
                      static_cast<std::uint8_t>(qpn >> 16), static_cast<std::uint8_t>(qpn >> 8),
                      static_cast<std::uint8_t>(qpn)}};
}
inline bool is_lidqpn_mac(const wire::Mac &m) { return m.raw[0] == 0x0e; }

std::uint64_t now_ms();

// Queue depths the driver accepts (the software HCA's receive-queue limit).
inline constexpr std::uint32_t kMaxQueueDepth = 1024;

} // namespace ipoib::pmd
