// SPDX-License-Identifier: BSD-3-Clause
// The per-frame steps of the fast path, below rx_burst/tx_burst: one
// received buffer to one mbuf, one mbuf to one work request. Declared here
// so the unit tests can drive them on crafted frames.
#pragma once

#include <rte_ether.h>

#include <cstring>
#include <string>

#include "ipoib_port.hpp"

namespace ipoib::pmd {

// Queue state (ipoib_queue.cpp), for queue setup and tests.
RxQueue *rx_queue_create(Port *p, std::uint16_t qid, rte_mempool *mp, bool scatter) noexcept;
TxQueue *tx_queue_create(PortData *fp, std::uint16_t qid, std::uint32_t n) noexcept;

// RX: the frame in receive buffer `buf` (GRH area first) that completion
// `wc` describes, as a new mbuf from q->mp (copied into it): an Ethernet frame (l2=eth: ARP
// and ND translated, the sender learned) or the IPoIB frame with the
// sender's address in the dynamic field (l2=ipoib). nullptr if the frame
// was dropped (counted in q->st).
// With lend (the frame's buffer, lend->id, is in lend->pool): a frame longer
// than the queue's copy_max is handed over in that buffer instead
// (ipoib_rxbuf.hpp) if a spare is left, and lend->repost names the buffer
// to post in its place (lend->id when it was copied).
struct RxLend {
    struct RxBufPool *pool;
    std::uint32_t id;
    std::uint32_t repost;
};
rte_mbuf *rx_frame(RxQueue *q, const hca::Wc &wc, const std::uint8_t *buf, RxLend *lend = nullptr) noexcept;

// The MAC the sender of a received frame is known by (an unknown RoCE
// sender is learned from its GRH), and the multicast MAC of a group's MGID
// (ipoib_rx.cpp, shared with the receive mode below).
wire::Mac rx_sender_mac(RxQueue *q, const hca::Wc &wc, std::uint16_t skey, const std::uint8_t *grh) noexcept;
wire::Mac rx_group_mac(const PortData *fp, const std::uint8_t *dgid) noexcept;

// The Ethernet header Ethernet emulation puts before a received L3 packet.
inline rte_ether_hdr rx_eth_header(const rte_ether_addr &dst, const wire::Mac &src, std::uint16_t ethertype) noexcept {
    rte_ether_hdr eh;
    eh.dst_addr = dst;
    std::memcpy(eh.src_addr.addr_bytes, src.raw.data(), 6);
    eh.ether_type = rte_cpu_to_be_16(ethertype);
    return eh;
}

// RX into mbufs (ipoib_rx_mbuf.cpp): where the HCA writes in a posted mbuf
// (offsets from buf_addr; the L3 header at the usual data offset).
inline constexpr std::uint32_t kRxL3Offset = RTE_PKTMBUF_HEADROOM;
inline constexpr std::uint32_t kRxIpoibOffset = kRxL3Offset - wire::kEncapLen;
inline constexpr std::uint32_t kRxGrhOffset = kRxIpoibOffset - hca::kGrhLen;
static_assert(RTE_PKTMBUF_HEADROOM >= hca::kGrhLen + wire::kEncapLen, "the GRH area and IPoIB header fit the headroom");
// Post n mbufs of q's pool in q's receive queue of qp (control path; false
// with *err if the pool has not that many or their memory is not registered).
bool rx_post_mbufs(RxQueue *q, hca::Qp *qp, std::uint32_t n, std::string *err);
// Give back the mbufs q has posted (the QP that held them is gone).
void rx_release_mbufs(RxQueue *q) noexcept;

// TX: work requests being built for one post_send.
struct TxBatch {
    hca::SendWr wr[kBurstMax];
    hca::Sge sge[kBurstMax][hca::kMaxSendSge];  // (connection sends: TxQueue::cm_sge)
    hca::RcQp *rc[kBurstMax];                    // connected mode: the connection of wr[i], or null (UD)
    int n = 0;
    bool any_rc = false;
};

// no_room: a TSO frame whose segments need more work requests than the
// burst has left; not taken (the caller stops and the application sends it again).
enum class TxResult { sent, dropped, queued, no_room };

// Add a work request for m to b (sent: m is owned by the queue until its
// completion), or hold m for its destination (queued), or refuse it
// (dropped: counted, the caller frees m). retry: m is already held; a
// destination still not ready leaves it held without counting or asking again.
// Needs a free work-request id (q->free_ids not empty) and room in b.
TxResult tx_frame(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry) noexcept;

} // namespace ipoib::pmd
