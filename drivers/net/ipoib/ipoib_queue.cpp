// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib queue setup and release: the per-queue state rx_burst and
// tx_burst own (work-request ids, bounce slots, held frames, counters).
#include <rte_malloc.h>

#include <algorithm>

#include "ipoib_ethdev.hpp"
#include "ipoib_port.hpp"
#include "ipoib_rxtx.hpp"

namespace ipoib::pmd {

RxQueue *rx_queue_create(Port *p, std::uint16_t qid, rte_mempool *mp) noexcept {
    auto *q = new RxQueue{};
    q->fp = &p->fp;
    q->port = p;
    q->mp = mp;
    q->queue_id = qid;
    return q;
}

int rx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t, unsigned, const rte_eth_rxconf *,
                   rte_mempool *mp) noexcept {
    Port *p = port_of(dev);
    if (p->rxq.size() <= qid)
        p->rxq.resize(qid + 1, nullptr);
    delete p->rxq[qid];
    p->rxq[qid] = rx_queue_create(p, qid, mp);
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

int tx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned,
                   const rte_eth_txconf *) noexcept {
    Port *p = port_of(dev);
    if (p->txq.size() <= qid)
        p->txq.resize(qid + 1, nullptr);
    if (p->txq[qid])
        tx_queue_release(dev, qid);
    const std::uint32_t n = std::clamp<std::uint32_t>(nb_desc ? nb_desc : p->cfg.txq_size, kTxDescMin,
                                                      kQueueDepthMax);
    p->txq[qid] = tx_queue_create(&p->fp, qid, n);
    dev->data->tx_queues[qid] = p->txq[qid];
    return 0;
}

void tx_queue_release(rte_eth_dev *dev, std::uint16_t qid) noexcept {
    Port *p = port_of(dev);
    if (qid < p->txq.size() && p->txq[qid]) {
        TxQueue *q = p->txq[qid];
        for (auto *m : q->inflight)
            if (m)
                rte_pktmbuf_free(m);
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        delete q;
        p->txq[qid] = nullptr;
    }
    dev->data->tx_queues[qid] = nullptr;
}

void drop_pending(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    for (TxQueue *q : p->txq) {
        if (!q)
            continue;
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        q->npending = 0;
        if (p->fp.tx_cq)
            tx_flush_completions(q);
    }
}

} // namespace ipoib::pmd
