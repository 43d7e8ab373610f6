// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib receive mode with mbufs as receive buffers (zero copy; chosen at
// dev_start where the HCA can register the RX queues' mempool memory and
// scatter a receive to two entries: the verbs provider). Each receive slot
// of an RX queue's HCA receive queue holds one mbuf of the queue's pool,
// posted as two scatter entries, as Linux ipoib posts its receives:
//
//   buf_addr + kRxGrhOffset    the 40-byte GRH area          (entry 0)
//   buf_addr + kRxIpoibOffset  IPoIB header, then the frame  (entry 1, to the buffer's end)
//   buf_addr + kRxL3Offset     = RTE_PKTMBUF_HEADROOM: where the L3 header lands
//
// A plain frame is handed to the application in the mbuf the HCA wrote: in
// Ethernet emulation the 14-byte Ethernet header is written in front of the
// L3 header (over the IPoIB header and the end of the GRH area, once both
// are read); in native mode the data starts at the IPoIB header. A new mbuf
// takes the slot. ARP and ND (rare) are rewritten by the copy step
// (rx_frame) into a new mbuf, and the slot keeps its mbuf, as do frames that
// are dropped. Pool empty: the frame is dropped (rx_nombuf), the slot keeps
// its mbuf. No locks, no syscalls, no allocations other than mbufs.
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>

#include "ipoib_offload.hpp"
#include "ipoib_rxtx.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

namespace {

constexpr std::uint32_t kEthHdr = RTE_ETHER_HDR_LEN;
static_assert(kRxGrhOffset + hca::kGrhLen == kRxIpoibOffset, "the GRH area is right in front of the IPoIB header, "
                                                              "so the copy step reads both as one buffer");

// ICMPv6 types nd_translate rewrites (router/neighbour solicitation and advertisement, redirect).
constexpr std::uint8_t kNdFirstType = 133, kNdLastType = 137;

// Frames whose link-layer addresses are inside them: rewritten by copying.
bool needs_translation(std::uint16_t et, const std::uint8_t *l3, std::uint32_t l3len) {
    if (et == wire::kEtherTypeArp || et == wire::kEtherTypeRarp)
        return true;
    return et == wire::kEtherTypeIPv6 && l3len > 40 && l3[6] == wire::kIpProtoIcmpv6 && l3[40] >= kNdFirstType &&
           l3[40] <= kNdLastType;
}

hca::RecvWr recv_wr(RxQueue *q, std::uint32_t slot, rte_mbuf *m) {
    const auto base = reinterpret_cast<std::uintptr_t>(m->buf_addr);
    const std::uint32_t lkey = q->mr.lkey(q->fp->mrs, base, m->buf_len);
    return hca::RecvWr{slot,
                       {base + kRxGrhOffset, hca::kGrhLen, lkey},
                       {base + kRxIpoibOffset, static_cast<std::uint32_t>(m->buf_len - kRxIpoibOffset), lkey},
                       2};
}

// What one completion of slot's mbuf m gives the application: m itself
// (*fresh took its place in the slot), a copy (translated), or nothing.
rte_mbuf *rx_mbuf_frame(RxQueue *q, const hca::Wc &wc, rte_mbuf *m, rte_mbuf **fresh) {
    PortData *fp = q->fp;
    auto *base = static_cast<std::uint8_t *>(m->buf_addr);
    const std::uint8_t *grh = base + kRxGrhOffset;
    if (wc.status != hca::WcStatus::success) {
        ++q->st.errors;
        return nullptr;
    }
    const bool has_grh = (wc.wc_flags & hca::kWcGrh) != 0;
    const std::uint16_t skey = fp->roce && has_grh ? gid_key(grh + kGrhSgidOffset) : wc.slid;
    if (wc.src_qp == fp->qpn && skey == fp->lid) {
        ++q->st.loopback_discard;  // the HCA's copy of our own multicast
        return nullptr;
    }
    const std::uint8_t *ib = base + kRxIpoibOffset;
    const std::uint32_t len = wc.byte_len > hca::kGrhLen ? wc.byte_len - hca::kGrhLen : 0;
    const auto et = wire::parse_encap(wire::Bytes(ib, len));
    if (!et.ok()) {
        ++(et.err == wire::Error::unsupported_ethertype ? q->st.unsupported_ethertype : q->st.bad_frames);
        return nullptr;
    }
    const std::uint8_t *l3 = ib + wire::kEncapLen;
    const std::uint32_t l3len = len - static_cast<std::uint32_t>(wire::kEncapLen);
    if (fp->l2 == L2Mode::eth && needs_translation(et.value, l3, l3len))
        return rx_frame(q, wc, grh);  // copied (rx_copied_bytes); the slot keeps m
    rte_mbuf *repl = rte_pktmbuf_alloc(q->mp);
    if (!repl) {
        ++q->st.nombuf;  // the slot keeps m: the frame is lost, the receive queue is not
        return nullptr;
    }
    if (fp->l2 == L2Mode::eth) {
        rte_ether_hdr eh;
        if (has_grh && grh[kGrhDgidOffset] == 0xff) {
            const wire::Mac d = rx_group_mac(fp, grh + kGrhDgidOffset);
            std::memcpy(eh.dst_addr.addr_bytes, d.raw.data(), 6);
        } else {
            eh.dst_addr = fp->mac;
        }
        const wire::Mac s = rx_sender_mac(q, wc, skey, grh);
        std::memcpy(eh.src_addr.addr_bytes, s.raw.data(), 6);
        eh.ether_type = rte_cpu_to_be_16(et.value);
        // The header overlaps the end of the GRH area: written once the GRH has been read.
        m->data_off = static_cast<std::uint16_t>(kRxL3Offset - kEthHdr);
        std::memcpy(base + m->data_off, &eh, kEthHdr);
        m->data_len = static_cast<std::uint16_t>(kEthHdr + l3len);
        m->packet_type = packet_type(l3, l3len, et.value);
    } else {
        auto *a = rte_pmd_ipoib_addr(m, fp->dynfield);
        std::memset(a, 0, sizeof *a);
        a->hwaddr[1] = static_cast<std::uint8_t>(wc.src_qp >> 16);
        a->hwaddr[2] = static_cast<std::uint8_t>(wc.src_qp >> 8);
        a->hwaddr[3] = static_cast<std::uint8_t>(wc.src_qp);
        if (has_grh)
            std::memcpy(a->hwaddr + 4, grh + kGrhSgidOffset, 16);
        a->lid = skey;
        m->data_off = static_cast<std::uint16_t>(kRxIpoibOffset);
        m->data_len = static_cast<std::uint16_t>(len);
        m->packet_type = packet_type(l3, l3len, et.value) & ~RTE_PTYPE_L2_MASK;
    }
    m->pkt_len = m->data_len;
    m->port = fp->port_id;
    m->ol_flags = rx_cksum_flags(l3, l3len, et.value, q->l4_cksum);
    ++q->st.packets;
    q->st.bytes += m->pkt_len;
    *fresh = repl;
    return m;
}

} // namespace

bool rx_post_mbufs(RxQueue *q, hca::Qp *qp, std::uint32_t n, std::string *err) {
    rx_release_mbufs(q);
    q->posted.assign(n, nullptr);
    if (rte_pktmbuf_alloc_bulk(q->mp, q->posted.data(), n) != 0) {
        q->posted.clear();
        *err = "RX queue " + std::to_string(q->queue_id) + ": its pool " + q->mp->name + " has not " +
               std::to_string(n) + " mbufs to post";
        return false;
    }
    std::vector<hca::RecvWr> wrs(n);
    for (std::uint32_t i = 0; i < n; ++i) {
        wrs[i] = recv_wr(q, i, q->posted[i]);
        if (!wrs[i].sge.lkey) {
            *err = "RX queue " + std::to_string(q->queue_id) + ": an mbuf of pool " + q->mp->name +
                   " is not in registered memory";
            rx_release_mbufs(q);
            return false;
        }
    }
    if (qp->post_recv_queue(q->queue_id, wrs.data(), static_cast<int>(n)) != static_cast<int>(n)) {
        *err = "RX queue " + std::to_string(q->queue_id) + ": posting its mbufs failed";
        return false;  // (some may be posted: the caller releases the QP, then the mbufs)
    }
    return true;
}

void rx_release_mbufs(RxQueue *q) noexcept {
    for (rte_mbuf *&m : q->posted)
        if (m) {
            rte_pktmbuf_free(m);
            m = nullptr;
        }
    q->posted.clear();
}

std::uint16_t rx_burst_mbufs(void *queue, rte_mbuf **pkts, std::uint16_t nb) noexcept {
    auto *q = static_cast<RxQueue *>(queue);
    PortData *fp = q->fp;
    hca::Qp *qp = fp->qp_ready.load(std::memory_order_acquire);
    if (!qp)
        return 0;
    const int n = fp->rx_cqs[q->queue_id]->poll(q->wc, std::min<int>(nb, kBurstMax));
    // Link down: what arrives is not delivered; the mbufs go back at once.
    const bool deliver = fp->link_up.load(std::memory_order_acquire);
    std::uint16_t out = 0;
    for (int k = 0; k < n; ++k) {
        const hca::Wc &wc = q->wc[k];
        const auto slot = static_cast<std::uint32_t>(wc.wr_id);
        if (k + 1 < n) {
            const rte_mbuf *next = q->posted[static_cast<std::uint32_t>(q->wc[k + 1].wr_id)];
            rte_prefetch0(static_cast<const std::uint8_t *>(next->buf_addr) + kRxGrhOffset);
        }
        rte_mbuf *m = q->posted[slot];
        IPOIB_DATA_LOG(DEBUG, "rx: %u bytes from LID %u QPN 0x%06x%s (into an mbuf)", wc.byte_len - hca::kGrhLen,
                       wc.slid, wc.src_qp, (wc.wc_flags & hca::kWcGrh) ? " (GRH)" : "");
        rte_mbuf *fresh = nullptr;
        if (!deliver)
            ++q->st.link_down;
        else if (rte_mbuf *got = rx_mbuf_frame(q, wc, m, &fresh)) {
            if (q->rss_hash && (wc.wc_flags & hca::kWcRssHash)) {
                got->hash.rss = wc.rss_hash;
                got->ol_flags |= RTE_MBUF_F_RX_RSS_HASH;
            }
            pkts[out++] = got;
        }
        if (fresh)
            q->posted[slot] = fresh;
        q->repost[k] = recv_wr(q, slot, q->posted[slot]);
    }
    if (n > 0) {
        const int posted = qp->post_recv_queue(q->queue_id, q->repost, n);
        // Not taken (the QP in error): the slot is empty from now on, its mbuf back in the pool.
        for (int k = std::max(posted, 0); k < n; ++k) {
            const auto slot = static_cast<std::uint32_t>(q->repost[k].wr_id);
            rte_pktmbuf_free(q->posted[slot]);
            q->posted[slot] = nullptr;
            ++q->st.errors;
        }
    }
    if (q->cm.cq && out < nb)  // connected mode: what arrived over connections
        out += cm_rx(q, pkts + out, static_cast<std::uint16_t>(nb - out));
    if (fp->local_rx && out < nb && !rte_ring_empty(fp->local_rx))  // ... and ICMP for path MTU
        out += local_rx(q, pkts + out, static_cast<std::uint16_t>(nb - out));
    if (q->queue_id < q->port->txq.size() && q->port->txq[q->queue_id])
        tx_service_pending(q->port->txq[q->queue_id]);
    return out;
}

} // namespace ipoib::pmd
