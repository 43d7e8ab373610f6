// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib connected mode (RFC 4755; Linux's ipoib_cm.c): unicast to a
// peer whose 20-byte address carries the RC flag goes over a Reliable
// Connection that the sending TX queue sets up on first use (active side);
// connections peers open to us (passive side) deliver into shared receive
// queues, one per RX queue, spread over the RX queues one connection each.
//
// Concurrency, as the rest of the driver (ipoib_port.hpp):
// - TxConnTable: one per TX queue, written by the control thread only
//   (sequence-locked entries), read by its TX queue. An entry for a peer is
//   made when the queue asks (RequestKind::connect) and then only changes
//   state: connecting -> up -> (error, REJ, timeout, DREQ) failed or none.
//   The table is emptied at stop (the fast path stopped).
// - A connection's QP that a TX queue may still post to is destroyed only
//   after that queue ended the burst it may be in and caught up with its
//   completions (as the dead address handles are: RetiredAh).
// - Everything else (CmPort, the connections) belongs to the control
//   thread, under Hca::mu.
#pragma once

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <vector>

#include "ipoib/hca/rc.hpp"
#include "ipoib/wire.hpp"
#include "ipoib_defs.hpp"
#include "ipoib_neigh.hpp"

namespace ipoib::pmd {

struct Port;
struct Hca;
struct Request;

// The connection state of one peer as its TX queue sees it.
enum class ConnState : std::uint8_t { none = 0, connecting = 1, up = 2, failed = 3 };

struct alignas(32) TxConn {
    std::atomic<std::uint32_t> seq;
    std::uint8_t mac[6];
    ConnState state;
    std::uint8_t used;
    std::uint16_t peer_mtu;  // up: the longest message the peer receives (its REP's MTU)
    std::uint8_t icrc;       // up: both sides agreed on "IB CRC as checksum"
    std::uint8_t pad;
    hca::RcQp *qp;           // up: where the queue posts
    std::uint64_t retry_ms;  // failed: datagram mode until then, then connected again
};
static_assert(sizeof(TxConn) == 32);

struct ConnSnapshot {
    ConnState state = ConnState::none;
    hca::RcQp *qp = nullptr;
    std::uint32_t peer_mtu = 0;
    std::uint64_t retry_ms = 0;
    bool icrc = false;
};

// A TX queue's connections by the peer's MAC (open addressing, twice as
// many slots as devarg max_conns, never removed until clear()).
class TxConnTable {
  public:
    TxConnTable() = default;
    TxConnTable(const TxConnTable &) = delete;
    TxConnTable &operator=(const TxConnTable &) = delete;
    ~TxConnTable();
    bool init(std::uint32_t max_conns) noexcept;
    bool active() const noexcept { return nslots_ != 0; }

    // Fast path.
    bool lookup(const std::uint8_t *mac, ConnSnapshot *out) const noexcept {
        if (!nslots_)
            return false;
        std::uint32_t i = home(mac);
        for (std::uint32_t probe = 0; probe < nslots_; ++probe, i = (i + 1) & (nslots_ - 1)) {
            const TxConn &c = slots_[i];
            bool used = false, match = false;
            ConnSnapshot s;
            if (!seq_read(c.seq, [&] {
                    used = c.used;
                    match = used && std::memcmp(c.mac, mac, 6) == 0;
                    s = ConnSnapshot{c.state, c.qp, c.peer_mtu, c.retry_ms, c.icrc != 0};
                }))
                return false;
            if (!used)
                return false;
            if (match) {
                *out = s;
                return true;
            }
        }
        return false;
    }

    // Control thread.
    TxConn *find(const std::uint8_t *mac) noexcept;
    TxConn *find_or_add(const std::uint8_t *mac) noexcept;  // nullptr: max_conns peers already
    template <class F>
    void write(TxConn *c, F &&fn) noexcept {
        seq_write(*c, fn);
    }
    void clear() noexcept;  // fast path stopped

  private:
    std::uint32_t home(const std::uint8_t *mac) const noexcept {
        std::uint64_t k = 0;
        std::memcpy(&k, mac, 6);
        return static_cast<std::uint32_t>((k * 0x9e3779b97f4a7c15ull) >> 40) & (nslots_ - 1);
    }
    TxConn *slots_ = nullptr;
    std::uint32_t nslots_ = 0;  // power of two
    std::uint32_t max_ = 0, count_ = 0;
};

// Where the message starts in the first buffer of a shared receive: the
// Ethernet header that replaces the IPoIB header (Ethernet emulation) then
// starts RTE_PKTMBUF_HEADROOM bytes into the buffer, so a frame lent to the
// application has the headroom its own pool's mbufs have.
inline constexpr std::uint32_t kCmRxHead = RTE_PKTMBUF_HEADROOM + RTE_ETHER_HDR_LEN - wire::kEncapLen;

// One RX queue's receive buffers for connections (memory the HCA reaches,
// alloc_dma, in one region): 2 x kCmSrqDepth slots of nsge buffers of
// buf_size bytes, kCmSrqDepth of them posted in the shared receive queue,
// the rest spare. A slot's buffer j is at (j * slots + slot) * buf_size; its
// receive starts kCmRxHead bytes into buffer 0. A frame longer than
// rx_copy_max is lent to the application in its slot (a chain of mbufs
// attached to the buffers it fills, ipoib_cm_rx.cpp) and a spare slot is
// posted in its place; when the application has freed every buffer of the
// frame, the free callback (any lcore) puts the slot on the return ring.
// Shorter frames, and every frame while no spare is left, are copied into
// the application's mbufs and their slot posted again. Kept past the port's
// release while the application holds any of its buffers (as ipoib_rxbuf).
struct CmRxStore {
    Hca *hca = nullptr;
    std::uint8_t *mem = nullptr;
    std::size_t bytes = 0;
    std::unique_ptr<hca::Mr> mr;
    std::uint32_t slots = 0, nsge = 0, buf_size = 0;
    rte_iova_t iova_base = RTE_BAD_IOVA;
    std::vector<rte_mbuf_ext_shared_info> shinfo;  // per buffer
    std::unique_ptr<std::atomic<std::uint32_t>[]> held;  // per slot: its buffers the application holds
    rte_ring *back = nullptr;                       // slots the application gave back (multi-producer)
    std::atomic<std::int64_t> lent{0};              // buffers the application holds
    // Spares the RX queue's lcore took off the return ring, not posted yet
    // (its alone; here, not in the queue, so that they outlive a queue's setup).
    std::uint32_t nspare = 0;
    std::uint32_t spare[2 * kCmSrqDepth];
};
// Make a store of 2 x depth slots (nullptr: logged); destroy it now if
// nothing is lent, else retire it until the application has freed all.
CmRxStore *cm_rx_store_create(Port *p, std::uint32_t rxq, std::uint32_t depth, std::uint32_t nsge,
                              std::uint32_t buf_size) noexcept;
void cm_rx_store_release(Port *p, CmRxStore *s) noexcept;

// The fast path's view of a store (in RxQueue): single consumer, the queue's lcore.
struct CmRxRing {
    hca::Srq *srq = nullptr;
    hca::Cq *cq = nullptr;
    CmRxStore *store = nullptr;
    std::uint8_t *base = nullptr;
    std::uint32_t lkey = 0;
    std::uint32_t depth = 0;              // receives posted
    std::uint32_t slots = 0;              // posted + spare
    std::uint32_t nsge = kCmRecvSge;      // <= kCmRecvSge
    std::uint32_t buf_size = kCmBufSize;  // <= kCmMaxBufSize; nsge * buf_size - kCmRxHead >= kCmRecvMtu
    bool lend = false;                    // frames may be lent (the provider sends from any memory)
    std::uint8_t *buf(std::uint32_t slot, std::uint32_t j) const noexcept {
        return base + (std::size_t{j} * slots + slot) * buf_size;
    }
    // The bytes of the message in buffer j of a slot: where they start, how many fit.
    std::uint8_t *seg(std::uint32_t slot, std::uint32_t j) const noexcept {
        return buf(slot, j) + (j ? 0 : kCmRxHead);
    }
    std::uint32_t seg_len(std::uint32_t j) const noexcept { return buf_size - (j ? 0 : kCmRxHead); }
    // The receive of `slot` (sge: nsge entries).
    void recv_wr(std::uint32_t slot, hca::Sge *sge, hca::RcRecvWr *out) const noexcept {
        for (std::uint32_t j = 0; j < nsge; ++j)
            sge[j] = hca::Sge{reinterpret_cast<std::uintptr_t>(seg(slot, j)), seg_len(j), lkey};
        *out = hca::RcRecvWr{slot, sge, nsge};
    }
    // A spare slot (false: the application holds them all).
    bool take_spare(std::uint32_t *slot) noexcept {
        CmRxStore &s = *store;
        if (!s.nspare)
            s.nspare = rte_ring_sc_dequeue_burst_elem(s.back, s.spare, sizeof(std::uint32_t), 2 * kCmSrqDepth, nullptr);
        if (!s.nspare)
            return false;
        *slot = s.spare[--s.nspare];
        return true;
    }
    // Give back a spare take_spare gave (room: it was taken from there).
    void put_spare(std::uint32_t slot) noexcept { store->spare[store->nspare++] = slot; }
};

// The CM private data of a REQ or REP (doc/wire.md "Connected mode"): Linux's
// two fields, then ours, which Linux neither sends nor reads.
struct CmPrivateData {
    std::uint32_t ud_qpn = 0;    // the sender's UD QP (Linux: its data QP)
    std::uint32_t recv_mtu = 0;  // the longest message the sender receives (IPoIB header included)
    bool has_ext = false;        // our extension present (magic matched)
    std::uint32_t features = 0;  // kCmFeature*
};
inline constexpr std::uint32_t kCmExtMagic = 0x49504443;  // "IPDC"
inline constexpr std::uint32_t kCmFeatureIcrcCsum = 1u << 0;  // "IB CRC as checksum" (seed 003)
inline constexpr std::uint32_t kCmPrivateDataLen = 16;
// The per-frame mark on a connection that agreed on "IB CRC as checksum":
// bits of the IPoIB header's reserved field (bytes 2-3, big endian) saying
// which checksums the sender did not compute (doc/wire.md). Never set
// elsewhere; a receiver reads them only on frames from a connection.
inline constexpr std::uint16_t kEncapIpCksumSkipped = 0x0001;
inline constexpr std::uint16_t kEncapL4CksumSkipped = 0x0002;
void cm_write_private_data(const CmPrivateData &d, std::uint8_t *out) noexcept;  // kCmPrivateDataLen bytes
bool cm_read_private_data(const std::uint8_t *in, std::size_t len, CmPrivateData *out) noexcept;

// The receive index knows a passive connection's frames by (kCmRxKey, the
// local RC QP's number): a receive completion names the local QP on every
// link layer, while its slid is 0 on RoCE (no LIDs, no GRH on RC). No sender
// has key 0 (LID 0 is no LID; gid_key is never 0).
inline constexpr std::uint16_t kCmRxKey = 0;

// Linux's service ID for a peer's UD QPN (IPOIB_CM_IETF_ID | QPN), and the one RFC 4755's text gives.
inline constexpr std::uint64_t kCmServiceIdLinux = 0x1000000000000000ull;
inline constexpr std::uint64_t kCmServiceIdRfc = 0x0100000000000000ull;

struct RcConn;

// A port's connected-mode state (control thread, Hca::mu).
struct CmPort {
    std::vector<std::unique_ptr<hca::Cq>> cqs;   // per RX queue
    std::vector<std::unique_ptr<hca::Srq>> srqs;  // per RX queue
    std::vector<CmRxRing> rings;                 // per RX queue (the fast path's copy is in RxQueue)
    std::vector<CmRxStore *> stores;             // per RX queue
    std::list<RcConn> conns;
    std::uint32_t next_rxq = 0;
    bool listening = false;
    std::uint32_t listened_qpn = 0;
    // Counters (xstats cm_*).
    std::uint64_t req_sent = 0, req_received = 0, established = 0, rejected = 0, timeouts = 0;
    std::uint64_t fallbacks = 0, conn_errors = 0, idle_closed = 0, dreq_received = 0, refused = 0;
    CmPort();
    ~CmPort();
};

// Control thread (ipoib_cm.cpp), Hca::mu held.
// Link up with the QP made: the SRQs (first time), listen on the port's service IDs.
bool cm_port_up(Port *p);
// Link down, stop, close: every connection closed (DREQ where up), queued
// frames dropped by their queues, TX tables emptied (fast path stopped).
void cm_port_down(Port *p, bool send_dreq);
// A normal or heavy flush (paths dropped, as Linux's ipoib_flush_paths):
// the TX queues' connections close (DREQ where up) and are made again on the
// next frame over the new path; connections peers opened stay theirs.
void cm_port_flush(Port *p);
// Free the SRQs, CQs and buffers (the QP's resources go).
void cm_port_release(Port *p);
// Whether the peer of LID lid and UD QPN ud_qpn has a connection to p (then
// it is in connected mode: a neighbour made for its LID/QPN MAC gets the RC flag).
bool cm_peer_connected(const Port *p, std::uint16_t lid, std::uint32_t ud_qpn);
// A TX queue asks for a connection to a resolved neighbour.
void cm_connect(Port *p, const Request &r);
// Receive CM events of every port of h, run idle and error checks.
void cm_poll(Hca *h, std::uint64_t now);

} // namespace ipoib::pmd
