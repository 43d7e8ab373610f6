// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib queue setup and release: the per-queue state rx_burst and
// tx_burst own (work-request ids, bounce slots, held frames, counters).
#include <rte_malloc.h>
#include <rte_pause.h>

#include <algorithm>

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

int rx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t, unsigned, const rte_eth_rxconf *conf,
                   rte_mempool *mp) noexcept {
    Port *p = port_of(dev);
    if (p->rxq.size() <= qid)
        p->rxq.resize(qid + 1, nullptr);
    delete p->rxq[qid];
    const std::uint64_t offloads = (conf ? conf->offloads : 0) | dev->data->dev_conf.rxmode.offloads;
    const bool scatter = offloads & RTE_ETH_RX_OFFLOAD_SCATTER;
    const std::uint32_t room = rte_pktmbuf_data_room_size(mp) - RTE_PKTMBUF_HEADROOM;
    const std::uint32_t longest = p->fp.mtu + (p->cfg.l2 == L2Mode::eth ? RTE_ETHER_HDR_LEN : wire::kEncapLen);
    if (!scatter && room < longest)
        IPOIB_LOG(WARNING, "%s: RX queue %u: %u-byte mbufs hold frames up to %u bytes of the %u the MTU allows; "
                  "longer ones are dropped (rx_too_long_drops) unless scatter is enabled",
                  p->name.c_str(), qid, room, room, longest);
    p->rxq[qid] = rx_queue_create(p, qid, mp, scatter);
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
    Port *p = port_of(dev);
    if (qid < p->rxq.size()) {
        delete p->rxq[qid];
        p->rxq[qid] = nullptr;
    }
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
    p->txq[qid] = tx_queue_create(&p->fp, qid, n);
    dev->data->tx_queues[qid] = p->txq[qid];
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
