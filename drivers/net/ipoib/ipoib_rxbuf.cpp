// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib receive buffers lent to the application (ipoib_rxbuf.hpp):
// the pool's making, posting and release, and the free callback.
#include "ipoib_rxbuf.hpp"

#include <rte_eal.h>

#include <cstdio>
#include <mutex>

#include "ipoib_control.hpp"
#include "ipoib_port.hpp"
#include "ipoib_retired.hpp"

namespace ipoib::pmd {

namespace {

// The application freed an mbuf whose data was buffer `addr` of pool `opaque`
// (any lcore, any time): the buffer goes back to its RX queue's return ring.
void buffer_returned(void *addr, void *opaque) noexcept {
    auto *pool = static_cast<RxBufPool *>(opaque);
    const auto id = static_cast<std::uint32_t>((static_cast<std::uint8_t *>(addr) - pool->mem) / pool->stride);
    // Never full: the ring holds every buffer of its queue.
    rte_ring_mp_enqueue_elem(pool->back[id / pool->per_queue], const_cast<std::uint32_t *>(&id),
                             sizeof(std::uint32_t));
    pool->lent.fetch_sub(1, std::memory_order_release);
}

void destroy(RxBufPool *pool) noexcept {
    for (rte_ring *r : pool->back)
        rte_ring_free(r);
    pool->mr.reset();
    if (pool->mem)
        pool->hca->ctx->free_dma(pool->mem);
    delete pool;
}

// Pools released while the application still held some of their buffers.
RetiredList<RxBufPool, destroy> g_retired;

} // namespace

bool rxbuf_pool_create(Port *p, std::uint32_t nqueues, std::uint32_t rxq_size) noexcept {
    static std::atomic<std::uint32_t> serial{0};
    auto pool = std::make_unique<RxBufPool>();
    hca::Context &ctx = *p->hca->ctx;
    pool->hca = p->hca;
    pool->post_len = hca::kGrhLen + 4096 + kRxBufTail;
    pool->stride = (kRxPostOffset + pool->post_len + 63) & ~63u;
    pool->posted = rxq_size;
    pool->per_queue = 2 * rxq_size;
    pool->nqueues = nqueues;
    const std::uint32_t nbuf = pool->per_queue * nqueues;
    pool->bytes = std::size_t{nbuf} * pool->stride;
    pool->mem = static_cast<std::uint8_t *>(ctx.alloc_dma(pool->bytes));
    pool->mr = pool->mem ? ctx.reg_mr(pool->mem, pool->bytes) : nullptr;
    if (!pool->mr) {
        IPOIB_LOG(ERR, "%s: cannot allocate %zu bytes of receive buffers: %s", p->name.c_str(), pool->bytes,
                  ctx.last_error().c_str());
        if (pool->mem)
            ctx.free_dma(pool->mem);
        return false;
    }
    pool->lkey = pool->mr->lkey();
    // The memory is not DPDK's: its I/O address is its virtual one where DPDK
    // uses virtual addresses for I/O, else none (a device that DMAs from the
    // application's mbufs cannot reach it: doc/net_ipoib.md).
    if (rte_eal_iova_mode() == RTE_IOVA_VA)
        pool->iova_base = static_cast<rte_iova_t>(reinterpret_cast<std::uintptr_t>(pool->mem));
    pool->shinfo.resize(nbuf);
    for (auto &sh : pool->shinfo) {
        sh.free_cb = buffer_returned;
        sh.fcb_opaque = pool.get();
        rte_mbuf_ext_refcnt_set(&sh, 0);
    }
    pool->stash.resize(nqueues);
    const std::uint32_t n = serial.fetch_add(1);
    bool ok = true;
    std::vector<hca::RecvWr> wrs(rxq_size);
    for (std::uint32_t q = 0; q < nqueues && ok; ++q) {
        char name[RTE_RING_NAMESIZE];
        std::snprintf(name, sizeof name, "ipoib_rxb_%u_%u", n, q);
        rte_ring *r = rte_ring_create_elem(name, sizeof(std::uint32_t), pool->per_queue, rte_socket_id(),
                                           RING_F_SC_DEQ | RING_F_EXACT_SZ);
        if (!r) {
            IPOIB_LOG(ERR, "%s: cannot create the receive buffers' return ring: %s", p->name.c_str(),
                      rte_strerror(rte_errno));
            ok = false;
            break;
        }
        pool->back.push_back(r);
        const std::uint32_t first = q * pool->per_queue;
        for (std::uint32_t k = pool->posted; k < pool->per_queue; ++k) {
            const std::uint32_t id = first + k;
            rte_ring_sp_enqueue_elem(r, const_cast<std::uint32_t *>(&id), sizeof id);
        }
        for (std::uint32_t k = 0; k < pool->posted; ++k)
            wrs[k] = hca::RecvWr{first + k, {reinterpret_cast<std::uintptr_t>(pool->posted_at(first + k)),
                                             pool->post_len, pool->lkey}};
        if (p->qp->post_recv_queue(q, wrs.data(), static_cast<int>(rxq_size)) != static_cast<int>(rxq_size)) {
            IPOIB_LOG(ERR, "%s: cannot post receive buffers: %s", p->name.c_str(), ctx.last_error().c_str());
            ok = false;
        }
    }
    if (!ok) {
        destroy(pool.release());
        return false;
    }
    p->fp.rxbufs = pool.release();
    return true;
}

void rxbuf_pool_release(Port *p) noexcept {
    RxBufPool *pool = p->fp.rxbufs;
    p->fp.rxbufs = nullptr;
    if (const std::int64_t held = g_retired.release(pool))
        IPOIB_LOG(WARNING, "%s: the application still holds %lld receive buffers: their pool is freed once it has "
                           "freed them (at a later stop or close)",
                  p->name.c_str(), static_cast<long long>(held));
}

} // namespace ipoib::pmd
