// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib private structures: the per-HCA object (shared by the ethdevs of
// one HCA: provider context, control plane, control thread), the per-ethdev
// port, its queues, and the requests the fast path sends the control thread.
//
// Locking rules
// - g_hcas (ipoib_control.cpp) and each Hca's port list: under hca_registry_mutex()
//   for probe/close and telemetry; Hca::mu for the control thread's walks.
// - Hca::mu serialises the control path of one HCA: the control thread's loop,
//   ethdev ops that change control state (start, stop, close) and telemetry.
//   The fast path never takes it. The control thread neither waits nor runs
//   application callbacks (LSC) while holding it, so a callback may call any
//   ethdev op, and ops are not starved.
// - Port::fp (PortData) is what rx_burst/tx_burst read per packet. The control
//   thread writes it; fields a running fast path may read concurrently are
//   atomics (qp_ready, link_up) or sit in sequence-locked tables (neigh,
//   groups). qp_ready is published (release) only once every other field the
//   fast path needs is set.
// - A queue (RxQueue/TxQueue) belongs to one lcore. Each has its own HCA
//   queue (receive queue of the RSS QP, send queue of the QP) and CQ, so
//   queues never share anything on the fast path. TxQueue::lock (its own
//   busy flag) lets rx_burst flush frames held on the TX queue of the same
//   index, which may belong to another lcore, without racing tx_burst. On an
//   HCA with fewer send queues than the application's TX queues (verbs: one),
//   TX queues share a send queue and its CQ: their lock is then that send
//   queue's PortData::sq_lock, held per burst, and completions are given
//   back to the queue that posted them (wr_id: queue << 32 | slot).
// - Fast path -> control thread: Port::fp.requests, a multi-producer,
//   single-consumer rte_ring of Request. Control thread -> fast path: the
//   tables and atomics above. Nothing else crosses.
#pragma once

#include <array>
#include <atomic>
#include <set>
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
#include "ipoib_cm.hpp"
#include "ipoib_defs.hpp"
#include "ipoib_devargs.hpp"
#include "ipoib_mr.hpp"
#include "ipoib_neigh.hpp"

namespace ipoib::pmd {

// Counters the fast path keeps per queue (one writer each).
struct RxStats {
    std::uint64_t packets, bytes, errors, nombuf;
    std::uint64_t loopback_discard, unsupported_ethertype, arp_translated, nd_translated, translate_errors;
    std::uint64_t bad_frames;
    std::uint64_t too_long;  // longer than one mbuf while the application did not enable scatter
    std::uint64_t link_down;  // received while the link is down (e.g. the partition left the port)
    std::uint64_t learn_refused;  // an ARP/ND sender claiming a GID other than its GRH's source
    std::uint64_t copied_bytes;    // frame bytes copied into mbufs of the application's pool
    std::uint64_t lent;            // frames handed over in the HCA's receive buffer (no copy)
    std::uint64_t lend_exhausted;  // frames copied because the application held every spare buffer
    std::uint64_t cm_packets, cm_bytes;  // received over connections (counted in packets/bytes too)
    std::uint64_t cm_errors;             // connection receives completed in error or malformed
    std::uint64_t cm_cksum_none;         // frames whose sender left checksums to the IB CRC (flags NONE)
    std::uint64_t local;                 // frames the driver made for the application (PMTU ICMP)
};
struct TxStats {
    std::uint64_t packets, bytes, errors;
    std::uint64_t unresolved_drop, unresolved_queued, too_big, unsupported_ethertype, link_down_drop;
    std::uint64_t arp_translated, nd_translated, translate_errors, mcast_unjoined;
    std::uint64_t bad_offload;  // checksum asked with l2_len/l3_len/flags that do not describe the frame
    std::uint64_t mcast_reports;      // IGMP/MLD membership changes seen in what the application sent
    std::uint64_t mcast_report_errors;  // malformed IGMP/MLD reports (sent on, not acted upon)
    std::uint64_t tso_frames, tso_segments;  // TCP frames cut by TSO, and the segments sent for them
    std::uint64_t tso_bad;  // TSO asked with metadata that does not describe the frame, or too many segments
    std::uint64_t linearized;  // frames of more segments than a gather list holds, copied into one piece
    std::uint64_t announcements;  // gratuitous ARPs / unsolicited NAs sent for the port (mac_addr_set)
    std::uint64_t cm_packets, cm_bytes;  // sent over connections (counted in packets/bytes too)
    std::uint64_t cm_datagram;  // to a connected-mode peer over UD (no connection: refused, failed, table full)
    std::uint64_t cm_too_many_segs;  // frames of more segments than a connection's gather list takes
    std::uint64_t cm_cksum_skipped;  // offloaded checksums left to the connection's IB CRC (agreed)
    // Connected mode, frames longer than a datagram destination takes (ipoib_pmtu.cpp):
    std::uint64_t frag_datagrams, frag_fragments;  // IPv4 without DF cut to the datagram MTU
    std::uint64_t frag_errors;                     // ... not cut (no mbufs for the fragments)
    std::uint64_t pmtu_icmp;  // ICMP "fragmentation needed" / ICMPv6 "packet too big" given to the application
    std::uint64_t pmtu_icmp_lost;  // ... not given (no mbuf, the ring full)
};

// Request from the fast path to the control thread (rte_ring element, 32 bytes).
enum class RequestKind : std::uint8_t {
    learn = 1,         // a sender announced its address (ARP/ND, or a RoCE GRH): remember it
    resolve = 2,       // the fast path holds frames for this MAC: resolve it
    sendonly_join = 3, // the fast path holds frames for this multicast group: join it
    ip_join = 4,       // the application's stack reported (or the API asked for) an IP group: receive it
    ip_leave = 5,      // ... no longer
    own_addr = 6,      // the application sent ARP/ND as this IPv4/IPv6 address: announced on failover
    connect = 7,       // connected mode: TX queue `qpn` holds frames for this (resolved) neighbour: connect
};
struct Request {
    RequestKind kind;
    std::uint8_t family;  // ip_join / ip_leave: 4 (group in gid[0..4)) or 6 (gid = the group)
    std::uint16_t lid;
    std::uint32_t qpn;
    std::uint8_t mac[6];
    std::uint8_t pad2[2];  // learn: [0] = the sender's 20-byte address flags (wire::kHwFlagRc)
    std::uint8_t gid[16];
};
static_assert(sizeof(Request) == 32);

struct RxBufPool;

// The fast path's view of a port: everything rx_burst and tx_burst read per
// packet, together (as mlx5_rxq_data sits inside mlx5_rxq_ctrl). Written by
// the control thread; see the locking rules above.
struct PortData {
    std::atomic<hca::Qp *> qp_ready{nullptr};  // non-null: QP usable (release-published)
    std::atomic<bool> link_up{false};
    std::array<hca::Cq *, hca::kMaxQueues> rx_cqs{};  // per RX queue (the RSS QP's receive queue of that index)
    std::array<hca::Cq *, hca::kMaxQueues> tx_cqs{};  // per send queue of the QP
    RxBufPool *rxbufs = nullptr;  // every RX queue's receive buffers (ipoib_rxbuf.hpp), wr_id = index
    // DPDK's memory registered with the HCA (zero copy), or null: mbufs are
    // then sent with lkey 0 (the provider reaches them its own way).
    const MrCache *mrs = nullptr;
    L2Mode l2 = L2Mode::eth;
    std::uint32_t cm_send_sge = kCmSendSge;  // a connection send's gather list on this device (rxe: 32)
    bool roce = false;                // Ethernet link layer: senders known by their GRH's GID
    std::uint16_t port_id = 0;
    int dynfield = -1;                // native mode: offset of struct rte_pmd_ipoib_addr
    std::uint16_t lid = 0;            // InfiniBand: our LID; RoCE: our GID folded (gid_key)
    std::uint32_t qpn = 0;
    std::uint16_t mtu = 2044;          // the port's MTU (connected mode: kCmMtu)
    std::uint16_t ud_mtu = 2044;       // datagrams': the broadcast group's MTU - 4
    bool connected = false;            // mode=connected
    wire::HwAddr hwaddr{};
    rte_ether_addr mac{};
    hca::Ah *bcast_ah = nullptr;
    wire::Gid bcast_mgid{};
    rte_ring *requests = nullptr;     // fast path -> control thread
    // Connected mode: frames the driver makes for the application (ICMP for
    // path MTU), TX queues -> RX queues; and the pools of IPv4 fragments
    // (direct: their headers and those ICMP messages; indirect: the payload).
    rte_ring *local_rx = nullptr;
    rte_mempool *frag_direct = nullptr, *frag_indirect = nullptr;
    std::atomic<std::uint64_t> requests_lost{0};  // the ring was full (any producer; relaxed)
    NeighTable neigh;
    GroupTable groups;                // joined groups other than the broadcast group
    // TX queues sharing a send queue (more TX queues than the HCA's send
    // queues per QP): the send queue's lock, and each queue by index, to hand
    // completions back to the queue that posted them.
    std::array<std::atomic_flag, hca::kMaxQueues> sq_lock{};
    std::array<struct TxQueue *, hca::kMaxQueues> txqs{};
};

struct Port;

struct RxQueue {
    PortData *fp;
    Port *port;  // control side (the TX queue of the same index, for held frames)
    rte_mempool *mp;
    std::uint16_t queue_id;
    bool scatter;  // RTE_ETH_RX_OFFLOAD_SCATTER: frames longer than one mbuf are chained
    bool l4_cksum;  // RTE_ETH_RX_OFFLOAD_UDP/TCP_CKSUM: TCP/UDP checksums verified (flags in ol_flags)
    bool ip_cksum = true;  // RTE_ETH_RX_OFFLOAD_IPV4_CKSUM: IPv4 header checksums verified (set at queue setup)
    bool rss_hash;  // RTE_ETH_RX_OFFLOAD_RSS_HASH: the HCA's hash in mbuf->hash.rss
    std::uint32_t copy_max;  // devarg rx_copy_max: frames up to this long are copied, longer ones lent
    std::uint32_t room;      // data room of the pool's mbufs (after the headroom)
    RxStats st;
    hca::Wc wc[kBurstMax];
    hca::RecvWr repost[kBurstMax];
    // mbufs taken from mp in bulk, handed out one per frame (rx_mbuf).
    rte_mbuf *spare_mbufs[kBurstMax];
    std::uint32_t nspare_mbufs = 0;
    ~RxQueue() {
        if (nspare_mbufs)
            rte_pktmbuf_free_bulk(spare_mbufs, nspare_mbufs);
    }
    // Receiving into mbufs (Port::rx_mbufs): the mbuf posted in each receive
    // slot of this queue's HCA receive queue (wr_id = slot); `mr` finds their lkeys.
    std::vector<rte_mbuf *> posted;
    std::uint32_t nb_desc = 0;  // mbufs to post: the descriptors asked for, at most rxq_size (0: rxq_size)
    MrLookup mr;
    // Connected mode: this queue's shared receive queue (null CQ: none).
    CmRxRing cm;
};

struct Pending {
    rte_mbuf *m;
    wire::Mac mac;  // the destination it waits for
    std::uint64_t since_ms;
};

struct TxQueue {
    PortData *fp;
    std::uint16_t queue_id;
    std::uint16_t sq = 0;  // the QP's send queue it posts to (its own, or shared: see the locking rules)
    TxStats st;
    std::vector<rte_mbuf *> inflight;     // by wr_id
    std::vector<std::uint32_t> free_ids;  // wr_ids available
    std::vector<std::uint8_t> bounce;     // per-slot bounce buffers (ARP/ND, linearised frames)
    std::vector<std::array<std::uint8_t, 4>> hdr;  // per-slot IPoIB header
    std::uint32_t slot_size = 0;
    // Zero copy (PortData::mrs): the lkeys of mbuf memory, and the headers'
    // and bounce slots' own registrations (0: not registered).
    MrLookup mr;
    std::unique_ptr<hca::Mr> hdr_mr, bounce_mr;
    std::uint32_t hdr_lkey = 0, bounce_lkey = 0;
    Pending pending[kPendingMax];
    std::uint32_t npending = 0;
    // The application's own addresses this queue last reported (family byte + address): asked once each.
    std::array<std::array<std::uint8_t, 17>, 4> own_seen{};
    std::uint32_t own_next = 0;
    // Connected mode: this queue's connections by peer, and the gather lists of connection sends.
    TxConnTable conns;
    std::vector<hca::Sge> cm_sge;  // kBurstMax rows of kCmSendSge
    std::uint64_t conn_retry_ask_ms = 0;  // when a held frame's retry last asked for a connection
    std::atomic_flag busy = ATOMIC_FLAG_INIT;  // tx_burst vs. rx_burst's pending flush (per burst)
    std::atomic_flag *lock = &busy;            // busy, or the shared send queue's sq_lock
    // Progress the control thread reads before freeing an address handle
    // (one writer: whoever holds busy): WRs posted, completions reaped, bursts ended.
    std::atomic<std::uint64_t> posted{0}, completed{0}, bursts{0};
};

// An address handle no table refers to any more, freed once no send can use
// it (Linux's dead AH list): first every TX queue ends the burst it may be in
// (`mark` holds their burst counts), then their completions catch up with
// what they had posted by then (`mark` holds their posted counts).
struct RetiredAh {
    std::unique_ptr<hca::Ah> ah;
    std::vector<std::uint64_t> mark;
    bool bursts_ended = false;
};

struct Hca;

// One ethdev: one (HCA port, P_Key).
struct Port {
    PortData fp;  // hot: first

    rte_eth_dev *dev = nullptr;
    std::string name;
    Config cfg;
    Hca *hca = nullptr;
    ctrl::Interface *iface = nullptr;

    // Provider objects (owned; fp holds raw pointers to some of them).
    std::vector<std::unique_ptr<hca::Cq>> rx_cqs, tx_cqs;  // per receive / send queue of the QP
    std::unique_ptr<hca::Qp> qp;
    // The QP's queues (prepare_queues, at dev_start; a QP of another layout
    // is released then): receive queues (= RX queues), the application's TX
    // queues, send queues.
    std::uint32_t rx_queues = 1, tx_queues = 1, send_queues = 1;
    bool rx_events = false;  // RX CQs with completion events (intr_conf.rxq)
    // Receive-side scaling as the application configured it (dev_configure,
    // reta_update, rss_hash_update); given to the QP when it is made.
    hca::RssConf rss{};
    std::uint64_t rss_hf = 0;
    // Receive mode (dev_start): the HCA fills the RX queues' own mbufs (the
    // GRH area apart, in a second scatter entry), or the driver's receive
    // pool (ipoib_rxbuf.hpp). qp_rx_mbufs: the mode the QP's posted receives
    // are in (a QP of the other mode is made again).
    bool rx_mbufs = false;
    bool qp_rx_mbufs = false;
    std::vector<std::unique_ptr<hca::Ah>> ahs;  // in use by the tables (or about to be)
    std::vector<RetiredAh> dead_ahs;            // unreferenced, waiting for the sends that may use them

    std::uint8_t gid_index = 0;
    std::atomic<std::uint32_t> link_mbps{kLinkSpeed};  // from the port's active width and speed (control thread writes)
    std::atomic<std::uint16_t> max_mtu{2044};  // the port's active MTU - 4: no broadcast group may allow more (control thread writes)
    std::uint32_t qkey = ctrl::kDefaultStaticQkey;
    std::uint16_t bcast_mlid = 0;
    std::uint8_t bcast_sl = 0;

    std::vector<RxQueue *> rxq;
    std::vector<TxQueue *> txq;
    std::uint64_t last_age_ms = 0;
    std::uint64_t learn_refused = 0;  // claims the SA contradicts (the GID is at another LID)
    std::uint64_t table_full = 0;     // neighbours or senders not recorded: neigh_max reached or their probe window full
    std::uint64_t table_full_logged_ms = 0;  // when that was last logged
    std::uint64_t neigh_flushed = 0;  // neighbours whose path a flush dropped (resolved again)
    // IP groups the application receives (its IGMP/MLD reports, or the API):
    // joined as full members, kept across stop/start (no querier may ask again).
    std::set<std::array<std::uint8_t, 17>> ip_groups;  // family byte (4/6) + the group
    // The application's own IPv4/IPv6 addresses, as its ARP and ND showed
    // them (family byte + address; at most kOwnAddrsMax): what a failover
    // announces (gratuitous ARP, unsolicited NA), as Linux bonding does.
    std::set<std::array<std::uint8_t, 17>> own_addrs;
    bool announce_pending = false;  // mac_addr_set while up: announce on the next pass
    bool lsc_pending = false;  // a link change the application asked to hear of, not told yet
    hca::QpCounters hca_base{};  // HCA counters at the last xstats reset (they live in the HCA)
    hca::PortCounters hca_port_base{};  // the HCA port's, likewise
    bool started = false;
    // When dev_start was called and the link last went up / down (CLOCK_MONOTONIC
    // microseconds, the clock every process of the machine reads): telemetry
    // /ipoib/ports, what test/bench/linkup-bench.sh measures.
    std::atomic<std::uint64_t> started_us{0}, link_up_us{0}, link_down_us{0};
    std::unique_ptr<CmPort> cm;  // connected mode (ipoib_cm.cpp)
};

inline Port *port_of(const rte_eth_dev *dev) { return *static_cast<Port **>(dev->data->dev_private); }

// One per HCA device per process, shared by the ethdevs on it.
struct Hca {
    std::string key;         // provider:device
    std::string device;      // the provider's name for it
    int gid_index_arg = -1;  // devarg gid_index of the port that opened it
    int refs = 0;
    std::unique_ptr<hca::Context> ctx;
    MrCache mrs;  // DPDK's memory registered with ctx (inactive where the provider cannot)
    ctrl::ControlPlane cp;
    std::mutex mu;  // control path only: see the locking rules above
    pthread_t thread{};
    bool thread_running = false;
    std::atomic<bool> stop{false};
    std::vector<Port *> ports;
    std::array<std::unique_ptr<hca::Cm>, 3> cms;  // per HCA port (1, 2): connected mode's connection manager
};

// The 16-bit key a peer is known by next to its QPN (the receive index and
// the encoded MACs below): its LID on InfiniBand; on RoCE, where there are no
// LIDs, its GID folded to 16 bits (the GRH's source GID on receive).
inline std::uint16_t gid_key(const std::uint8_t *gid) noexcept {
    std::uint16_t k = 0;
    for (int i = 0; i < 16; i += 2)
        k = static_cast<std::uint16_t>(k ^ (gid[i] << 8 | gid[i + 1]));
    return k ? k : 1;
}

// Encoded MACs for senders not (yet) known by their GID: key and QPN in a locally administered MAC.
inline wire::Mac lidqpn_mac(std::uint16_t lid, std::uint32_t qpn) noexcept {
    return wire::Mac{{kLidQpnMacPrefix, static_cast<std::uint8_t>(lid >> 8), static_cast<std::uint8_t>(lid),
                      static_cast<std::uint8_t>(qpn >> 16), static_cast<std::uint8_t>(qpn >> 8),
                      static_cast<std::uint8_t>(qpn)}};
}
inline bool is_lidqpn_mac(const wire::Mac &m) noexcept { return m.raw[0] == kLidQpnMacPrefix; }
inline std::uint16_t lidqpn_mac_lid(const wire::Mac &m) noexcept {
    return static_cast<std::uint16_t>(m.raw[1] << 8 | m.raw[2]);
}
inline std::uint32_t lidqpn_mac_qpn(const wire::Mac &m) noexcept {
    return std::uint32_t{m.raw[3]} << 16 | std::uint32_t{m.raw[4]} << 8 | m.raw[5];
}

// Full ring: the request is lost; the fast path asks again on a later packet.
inline bool push_request(PortData *fp, const Request &r) noexcept {
    if (rte_ring_mp_enqueue_elem(fp->requests, const_cast<Request *>(&r), sizeof(Request)) == 0)
        return true;
    fp->requests_lost.fetch_add(1, std::memory_order_relaxed);
    return false;
}

// Fast path (ipoib_rx.cpp, ipoib_tx.cpp).
std::uint16_t rx_burst(void *q, rte_mbuf **pkts, std::uint16_t n) noexcept;
// The receive mode with mbufs as receive buffers (ipoib_rx_mbuf.cpp).
std::uint16_t rx_burst_mbufs(void *q, rte_mbuf **pkts, std::uint16_t n) noexcept;
std::uint16_t tx_burst(void *q, rte_mbuf **pkts, std::uint16_t n) noexcept;
// Connected mode: up to n frames received over connections into pkts (ipoib_cm_rx.cpp).
std::uint16_t cm_rx(RxQueue *q, rte_mbuf **pkts, std::uint16_t n) noexcept;
// Connected mode, path MTU (ipoib_pmtu.cpp): tell the application, as a
// router would, that the frame m (IPv4 with DF, or IPv6) exceeds `mtu`; and
// the frames made so, for rx_burst.
void pmtu_report(TxQueue *q, const rte_mbuf *m, std::uint16_t ethertype, std::uint32_t mtu) noexcept;
std::uint16_t local_rx(RxQueue *q, rte_mbuf **pkts, std::uint16_t n) noexcept;
// Probe/close: the ring and pools above (connected mode). False if they cannot be made.
bool pmtu_resources(PortData *fp, const char *name, int socket) noexcept;
void pmtu_release(PortData *fp) noexcept;
void tx_flush_completions(TxQueue *q) noexcept;
void tx_service_pending(TxQueue *q) noexcept;

} // namespace ipoib::pmd
