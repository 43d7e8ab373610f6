// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib receive interrupts (intr_conf.rxq): each RX queue's completion
// queue has completion events (hca::Cq::notify_fd: a completion channel on
// verbs, a datagram socket the senders write on the software HCA), and the
// port's interrupt handle lists those fds, one per queue, as ethdev's
// rte_eth_dev_rx_intr_ctl_q expects. rx_queue_intr_enable arms the CQ (an
// event on its next completion, at once if one waits); rx_queue_intr_disable
// consumes the event. The handle is of type EXT: the EAL does not read the
// fds itself, the driver does (as mlx5's completion channels).
#include <rte_interrupts.h>

#include "ipoib_control.hpp"
#include "ipoib_ethdev.hpp"
#include "ipoib_port.hpp"

namespace ipoib::pmd {

int rx_intr_install(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    rte_intr_handle *h = dev->intr_handle;
    const std::uint16_t n = dev->data->nb_rx_queues;
    if (!h || !dev->data->dev_conf.intr_conf.rxq)
        return 0;
    rte_intr_vec_list_free(h);
    if (rte_intr_type_set(h, RTE_INTR_HANDLE_EXT) != 0 || rte_intr_vec_list_alloc(h, "ipoib_rxq_intr", n) != 0) {
        IPOIB_LOG(ERR, "%s: cannot set up the RX interrupt vector (%u queues)", p->name.c_str(), n);
        return -ENOMEM;
    }
    for (std::uint16_t i = 0; i < n; ++i) {
        const int fd = i < p->rx_cqs.size() && p->rx_cqs[i] ? p->rx_cqs[i]->notify_fd() : -1;
        if (fd < 0) {
            IPOIB_LOG(ERR, "%s: RX queue %u has no completion events: %s cannot give RX interrupts",
                      p->name.c_str(), i, p->hca->ctx->name().c_str());
            rte_intr_vec_list_free(h);
            return -ENOTSUP;
        }
        rte_intr_vec_list_index_set(h, i, static_cast<int>(RTE_INTR_VEC_RXTX_OFFSET + i));
        rte_intr_efds_index_set(h, i, fd);
    }
    rte_intr_nb_efd_set(h, n);
    rte_intr_max_intr_set(h, n + 1);
    return 0;
}

void rx_intr_uninstall(rte_eth_dev *dev) noexcept {
    if (rte_intr_handle *h = dev->intr_handle) {
        rte_intr_vec_list_free(h);
        rte_intr_nb_efd_set(h, 0);
    }
}

// Arming before the QP exists (link not up yet) arms CQs no receive queue
// feeds yet: the application's wait ends by its own timeout, and the next
// arm, once the link is up, watches the queue.
int rx_queue_intr_enable(rte_eth_dev *dev, std::uint16_t qid) noexcept {
    Port *p = port_of(dev);
    if (qid >= p->rx_cqs.size() || !p->rx_cqs[qid])
        return -EINVAL;
    const int rc = p->rx_cqs[qid]->arm_notify();
    return rc == -EOPNOTSUPP ? -ENOTSUP : rc;
}

int rx_queue_intr_disable(rte_eth_dev *dev, std::uint16_t qid) noexcept {
    Port *p = port_of(dev);
    if (qid >= p->rx_cqs.size() || !p->rx_cqs[qid])
        return -EINVAL;
    p->rx_cqs[qid]->ack_notify();
    return 0;
}

} // namespace ipoib::pmd
