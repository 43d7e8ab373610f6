// SPDX-License-Identifier: BSD-3-Clause
// Receive buffers lent to the application (one copy per frame end to end):
// the HCA writes each message into a buffer of the driver's receive pool
// (memory of the HCA's, alloc_dma), and rx_burst hands that buffer to the
// application as the data of an mbuf (an external buffer,
// rte_pktmbuf_attach_extbuf) instead of copying it, posting a spare buffer in
// its place. When the application frees the mbuf, the buffer's free callback
// (on whatever lcore frees it) puts its index on its RX queue's return ring
// (multi-producer); the queue takes returned buffers back in bursts.
//
// Each RX queue owns 2 * rxq_size buffers: rxq_size posted, the rest spare
// (in its return ring, or in its stash: spares the queue's lcore already
// took off the ring). With no spare left (the application holds them all),
// frames are copied into mbufs of the application's pool as before and the
// buffer is posted again at once (xstat rx_lend_exhausted). Frames of up to
// rx_copy_max bytes are copied too (devarg): for them a copy costs less than
// lending a buffer and taking it back.
//
// A buffer: [kRxPostOffset headroom][GRH area 40][IPoIB header 4][MTU + tail].
// The posted receive starts at kRxPostOffset, so that the Ethernet header
// that replaces GRH area and IPoIB header (Ethernet emulation) starts
// RTE_PKTMBUF_HEADROOM bytes into the buffer: the application gets the
// headroom it would get from its own pool.
#pragma once

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <atomic>
#include <memory>
#include <vector>

#include "ipoib_defs.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/wire/encap.hpp"

namespace ipoib::pmd {

struct Hca;
struct Port;

inline constexpr std::uint32_t kRxPostOffset =
    RTE_PKTMBUF_HEADROOM - (hca::kGrhLen + wire::kEncapLen - RTE_ETHER_HDR_LEN);
static_assert(RTE_PKTMBUF_HEADROOM >= hca::kGrhLen + wire::kEncapLen - RTE_ETHER_HDR_LEN);

struct RxBufPool {
    Hca *hca = nullptr;
    std::uint8_t *mem = nullptr;  // nbuf buffers of `stride` bytes (alloc_dma)
    std::size_t bytes = 0;
    std::unique_ptr<hca::Mr> mr;
    std::uint32_t lkey = 0;
    std::uint32_t stride = 0;      // bytes per buffer
    std::uint32_t post_len = 0;    // bytes posted per receive (GRH area, IPoIB header, MTU, tail)
    std::uint32_t per_queue = 0;   // buffers per RX queue (posted + spare)
    std::uint32_t posted = 0;      // of which posted at start
    std::uint32_t nqueues = 0;
    rte_iova_t iova_base = RTE_BAD_IOVA;
    std::vector<rte_mbuf_ext_shared_info> shinfo;  // per buffer: refcount and the free callback
    std::vector<rte_ring *> back;                  // per RX queue: buffers the application freed
    // Per RX queue: spares its lcore took off the return ring (its alone).
    struct alignas(64) Stash {
        std::uint32_t n = 0;
        std::uint32_t id[2 * kBurstMax];
    };
    std::vector<Stash> stash;
    std::atomic<std::int64_t> lent{0};  // buffers the application holds

    std::uint8_t *buffer(std::uint32_t id) const noexcept { return mem + std::size_t{id} * stride; }
    // Where the receive of buffer id starts (its GRH area).
    std::uint8_t *posted_at(std::uint32_t id) const noexcept { return buffer(id) + kRxPostOffset; }
    // A spare buffer of RX queue q (false: the application holds them all).
    bool take_spare(std::uint16_t q, std::uint32_t *id) noexcept {
        Stash &s = stash[q];
        if (!s.n)
            s.n = rte_ring_sc_dequeue_burst_elem(back[q], s.id, sizeof(std::uint32_t), 2 * kBurstMax, nullptr);
        if (!s.n)
            return false;
        *id = s.id[--s.n];
        return true;
    }
    // Give back a spare take_spare gave (room: it was taken from there).
    void put_spare(std::uint16_t q, std::uint32_t id) noexcept { stash[q].id[stash[q].n++] = id; }
    // m's data becomes buffer id: `off` bytes into it, `len` bytes long.
    void lend(rte_mbuf *m, std::uint32_t id, std::uint32_t off, std::uint32_t len) noexcept {
        rte_mbuf_ext_shared_info *sh = &shinfo[id];
        rte_mbuf_ext_refcnt_set(sh, 1);
        const rte_iova_t iova = iova_base == RTE_BAD_IOVA ? RTE_BAD_IOVA : iova_base + std::size_t{id} * stride;
        rte_pktmbuf_attach_extbuf(m, buffer(id), iova, static_cast<std::uint16_t>(stride), sh);
        m->data_off = static_cast<std::uint16_t>(off);
        m->data_len = static_cast<std::uint16_t>(len);
        m->pkt_len = len;
        lent.fetch_add(1, std::memory_order_relaxed);
    }
};

// Make port p's pool (nqueues RX queues of rxq_size posted receives each)
// and post its receives on p's QP. false: logged, nothing left allocated.
bool rxbuf_pool_create(Port *p, std::uint32_t nqueues, std::uint32_t rxq_size) noexcept;
// Release port p's pool: freed now if the application holds none of its
// buffers, else kept (with a reference on the HCA) until it has freed them
// all, and freed by a later release (logged).
void rxbuf_pool_release(Port *p) noexcept;

} // namespace ipoib::pmd
