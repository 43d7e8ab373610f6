// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib queue setup and release: the per-queue state rx_burst and
// tx_burst own (work-request ids, bounce slots, held frames, counters).
#include <rte_malloc.h>
#include <rte_pause.h>

#include <algorithm>

#include "ipoib_control.hpp"
#include "ipoib_ethdev.hpp"
#include "ipoib_offload.hpp"
#include "ipoib_port.hpp"
#include "ipoib_rxtx.hpp"

namespace ipoib::pmd {

RxQueue *rx_queue_create(Port *p, std::uint16_t qid, rte_mempool *mp, bool scatter) noexcept {
    auto *q = new RxQueue{};
    q->fp = &p->fp;
    q->port = p;
    q->mp = mp;
    q->queue_id = qid;
    q->scatter = scatter;
    q->copy_max = p->cfg.rx_copy_max;
    q->room = mp ? rte_pktmbuf_data_room_size(mp) - RTE_PKTMBUF_HEADROOM : 0;
    return q;
}

namespace {

// A queue whose mbufs the QP holds (receiving into mbufs) goes with the QP:
// the HCA must not write into them once the queue (and maybe its pool) is gone.
void rx_queue_free(Port *p, std::uint16_t qid) {
    if (qid >= p->rxq.size() || !p->rxq[qid])
        return;
    if (!p->rxq[qid]->posted.empty()) {
        std::lock_guard<std::mutex> lk(p->hca->mu);
        IPOIB_LOG(INFO, "%s: RX queue %u released while the QP holds its mbufs: the UD QP goes too (a new QPN "
                  "at the next start)", p->name.c_str(), qid);
        port_release_qp(p);
    }
    delete p->rxq[qid];
    p->rxq[qid] = nullptr;
}

// Every byte of pool mp is in memory the cache has registered.
bool pool_registered(rte_mempool *mp, const MrCache &mrs) {
    struct Walk {
        const MrCache *mrs;
        bool all = true;
    } w{&mrs};
    rte_mempool_mem_iter(
        mp,
        [](rte_mempool *, void *arg, rte_mempool_memhdr *h, unsigned) {
            auto *x = static_cast<Walk *>(arg);
            MrRange r;
            x->all = x->all && x->mrs->find(reinterpret_cast<std::uintptr_t>(h->addr),
                                            static_cast<std::uint32_t>(h->len), &r);
        },
        &w);
    return w.all;
}

} // namespace

bool rx_mbufs_possible(const Port *p, std::uint16_t nrx, std::string *why) {
    if (!p->fp.mrs) {
        *why = p->cfg.zero_copy ? p->hca->ctx->name() + " cannot register DPDK's memory" : "devarg zero_copy=0";
        return false;
    }
    if (p->hca->ctx->caps().max_recv_sge < 2) {
        *why = p->hca->ctx->name() + " receives into one buffer only";
        return false;
    }
    const std::uint32_t longest = p->max_mtu.load(std::memory_order_relaxed);
    for (std::uint16_t i = 0; i < nrx; ++i) {
        rte_mempool *mp = p->rxq[i]->mp;
        const std::uint32_t room = rte_pktmbuf_data_room_size(mp) - RTE_PKTMBUF_HEADROOM;
        if (room < longest) {
            *why = "RX queue " + std::to_string(i) + ": " + std::to_string(room) + "-byte mbufs hold less than the " +
                   std::to_string(longest) + " bytes the port's MTU lets a peer send";
            return false;
        }
        if (mp->size <= p->rxq[i]->nb_desc) {
            *why = "RX queue " + std::to_string(i) + ": pool " + mp->name + " has " + std::to_string(mp->size) +
                   " mbufs, not more than its " + std::to_string(p->rxq[i]->nb_desc) + " descriptors";
            return false;
        }
        if (!pool_registered(mp, *p->fp.mrs)) {
            *why = std::string("RX queue ") + std::to_string(i) + ": pool " + mp->name +
                   " is not (all) in registered memory";
            return false;
        }
    }
    return true;
}

int rx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned,
                   const rte_eth_rxconf *conf, rte_mempool *mp) noexcept {
    Port *p = port_of(dev);
    if (p->rxq.size() <= qid)
        p->rxq.resize(qid + 1, nullptr);
    rx_queue_free(p, qid);
    const std::uint64_t offloads = (conf ? conf->offloads : 0) | dev->data->dev_conf.rxmode.offloads;
    const bool scatter = offloads & RTE_ETH_RX_OFFLOAD_SCATTER;
    const std::uint32_t room = rte_pktmbuf_data_room_size(mp) - RTE_PKTMBUF_HEADROOM;
    const std::uint32_t longest = p->fp.mtu + (p->cfg.l2 == L2Mode::eth ? RTE_ETHER_HDR_LEN : wire::kEncapLen);
    if (!scatter && room < longest)
        IPOIB_LOG(WARNING, "%s: RX queue %u: %u-byte mbufs hold frames up to %u bytes of the %u the MTU allows; "
                  "longer ones are dropped (rx_too_long_drops) unless scatter is enabled",
                  p->name.c_str(), qid, room, room, longest);
    p->rxq[qid] = rx_queue_create(p, qid, mp, scatter);
    // Receiving into mbufs, the queue lends the HCA as many as the application
    // budgeted descriptors for (the QP's receive queue is rxq_size deep).
    p->rxq[qid]->nb_desc = nb_desc ? std::min<std::uint32_t>(nb_desc, p->cfg.rxq_size) : p->cfg.rxq_size;
    p->rxq[qid]->l4_cksum = offloads & kRxL4Cksum;
    p->rxq[qid]->ip_cksum = offloads & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
    // The hash is in the mbuf whenever RSS spreads (as mlx5 and the Intel
    // drivers give it), or when the application asked for it by the offload.
    p->rxq[qid]->rss_hash = (offloads & RTE_ETH_RX_OFFLOAD_RSS_HASH) ||
                            (dev->data->dev_conf.rxmode.mq_mode & RTE_ETH_MQ_RX_RSS_FLAG);
    dev->data->rx_queues[qid] = p->rxq[qid];
    return 0;
}

void rx_queue_release(rte_eth_dev *dev, std::uint16_t qid) noexcept {
    rx_queue_free(port_of(dev), qid);
    dev->data->rx_queues[qid] = nullptr;
}

TxQueue *tx_queue_create(PortData *fp, std::uint16_t qid, std::uint32_t n) noexcept {
    auto *q = new TxQueue{};
    q->fp = fp;
    q->queue_id = qid;
    q->inflight.assign(n, nullptr);
    q->free_ids.reserve(n);
    for (std::uint32_t i = n; i-- > 0;)
        q->free_ids.push_back(i);
    q->slot_size = kTxSlotSize;
    q->bounce.assign(std::size_t{n} * q->slot_size, 0);
    q->hdr.assign(n, {});
    return q;
}

namespace {

// Caller holds Hca::mu (the control thread reads the queue list).
void tx_queue_free(rte_eth_dev *dev, Port *p, std::uint16_t qid) {
    if (qid < p->txq.size() && p->txq[qid]) {
        TxQueue *q = p->txq[qid];
        for (auto *m : q->inflight)
            if (m)
                rte_pktmbuf_free(m);
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        if (qid < hca::kMaxQueues && p->fp.txqs[qid] == q)
            p->fp.txqs[qid] = nullptr;
        delete q;
        p->txq[qid] = nullptr;
    }
    dev->data->tx_queues[qid] = nullptr;
}

} // namespace

int tx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned,
                   const rte_eth_txconf *) noexcept {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    if (p->txq.size() <= qid)
        p->txq.resize(qid + 1, nullptr);
    tx_queue_free(dev, p, qid);
    // One source of truth for the send ring: the QP's send queue and its
    // completion queue are txq_size deep (ipoib_control.cpp), so no more
    // sends than that may be outstanding, whatever the application asked.
    const std::uint32_t n = nb_desc ? std::min<std::uint32_t>(nb_desc, p->cfg.txq_size) : p->cfg.txq_size;
    if (n < nb_desc)
        IPOIB_LOG(INFO, "%s: TX queue %u: %u descriptors asked, %u used (devarg txq_size)", p->name.c_str(), qid,
                  nb_desc, n);
    TxQueue *q = p->txq[qid] = tx_queue_create(&p->fp, qid, n);
    // Zero copy: the queue's own memory (IPoIB headers, bounce slots for
    // ARP/ND, TSO headers, linearised frames) registered too, so that no
    // part of a send needs the provider's bounce ring.
    if (p->cfg.zero_copy && p->hca->mrs.active()) {
        hca::Context &ctx = *p->hca->ctx;
        q->hdr_mr = ctx.reg_mr(q->hdr.data(), q->hdr.size() * sizeof q->hdr[0]);
        q->bounce_mr = ctx.reg_mr(q->bounce.data(), q->bounce.size());
        q->hdr_lkey = q->hdr_mr ? q->hdr_mr->lkey() : 0;
        q->bounce_lkey = q->bounce_mr ? q->bounce_mr->lkey() : 0;
    }
    dev->data->tx_queues[qid] = q;
    return 0;
}

void tx_queue_release(rte_eth_dev *dev, std::uint16_t qid) noexcept {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    tx_queue_free(dev, p, qid);
}

void drop_pending(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    for (TxQueue *q : p->txq) {
        if (!q)
            continue;
        while (q->lock->test_and_set(std::memory_order_acquire))
            rte_pause();  // an rx_burst still flushing this queue's held frames
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        q->npending = 0;
        if (p->fp.tx_cqs[q->sq])
            tx_flush_completions(q);
        q->lock->clear(std::memory_order_release);
    }
}

} // namespace ipoib::pmd
