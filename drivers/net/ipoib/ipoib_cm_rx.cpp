// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib connected mode, receive side (ipoib_cm.hpp): an RX queue's
// shared receive queue. A message (up to 65524 bytes) arrives scattered over
// the buffers of one receive slot. Longer than rx_copy_max, it is lent: a
// chain of the application's mbufs attached to the buffers it fills, the
// Ethernet header written over the IPoIB header's place, and a spare slot
// posted instead (no copy, no buffer of 64 KB anywhere); else, or with no
// spare left, it is copied into a chain of the application's mbufs and the
// slot posted again. ARP and ND, which peers may send over a connection too,
// go through the datagram path's translation.
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>

#include "ipoib/hca/rc.hpp"
#include "ipoib_offload.hpp"
#include "ipoib_rxtx.hpp"

namespace ipoib::pmd {

namespace {

constexpr std::uint32_t kEthHdr = RTE_ETHER_HDR_LEN;
constexpr std::uint32_t kMaxChain = 256;  // segments of one received frame at most (tiny mbufs: dropped)

// Frames the datagram path translates (ARP, RARP, ICMPv6 that may be ND):
// given to rx_frame from a copy with an empty GRH area.
bool needs_translation(std::uint16_t et, const std::uint8_t *l3, std::uint32_t l3len) {
    return et == wire::kEtherTypeArp || et == wire::kEtherTypeRarp ||
           (et == wire::kEtherTypeIPv6 && l3len > 40 && l3[6] == wire::kIpProtoIcmpv6);
}

rte_mbuf *translated(RxQueue *q, const CmRxRing &r, std::uint32_t w, const hca::Wc &wc) {
    if (wc.byte_len > r.seg_len(0)) {
        ++q->st.cm_errors;  // (ARP and ND are short)
        return nullptr;
    }
    alignas(64) std::uint8_t buf[hca::kGrhLen + kCmMaxBufSize];
    std::memset(buf, 0, hca::kGrhLen);
    std::memcpy(buf + hca::kGrhLen, r.seg(w, 0), wc.byte_len);
    hca::Wc u = wc;
    u.byte_len = wc.byte_len + hca::kGrhLen;
    u.wc_flags = 0;
    return rx_frame(q, u, buf);
}

// The Ethernet header a connection's frame is shown with: to the port, from
// the MAC the sender is known by (the control thread indexed the
// connection's local QP under it).
rte_ether_hdr cm_eth_header(RxQueue *q, const hca::Wc &wc, std::uint16_t et) {
    wire::Mac src;
    if (!q->fp->neigh.mac_for(kCmRxKey, wc.qp_num, &src))
        src = lidqpn_mac(wc.slid, wc.src_qp);
    return rx_eth_header(q->fp->mac, src, et);
}

// Packet type and checksum flags of a connection's frame m (the L3 packet
// after the Ethernet header; its first bytes at l3): verified over the
// chain, or NONE where the sender left them to the connection's IB CRC (its
// mark in the IPoIB header, `marks`).
void finish(RxQueue *q, rte_mbuf *m, const std::uint8_t *l3, std::uint32_t l3len, std::uint32_t first_len,
            std::uint16_t et, std::uint16_t marks) {
    m->port = q->fp->port_id;
    m->packet_type = RTE_PTYPE_L2_ETHER | parse_l3(l3, l3len, et, first_len).ptype;
    const bool ip_skipped = marks & kEncapIpCksumSkipped, l4_skipped = marks & kEncapL4CksumSkipped;
    if ((ip_skipped && !q->ip_cksum) || (l4_skipped && !q->l4_cksum))  // (not to be told NONE: computed here)
        rx_cksum_fill_chain(m, kEthHdr, et, ip_skipped && !q->ip_cksum, l4_skipped && !q->l4_cksum);
    m->ol_flags |= rx_cksum_flags_chain(m, kEthHdr, et, q->l4_cksum, q->ip_cksum, ip_skipped && q->ip_cksum,
                                        l4_skipped && q->l4_cksum);
    q->st.cm_cksum_none += (ip_skipped && q->ip_cksum) || (l4_skipped && q->l4_cksum);
    ++q->st.packets;
    q->st.bytes += m->pkt_len;
}

// The message of slot w as an Ethernet frame in a chain of q's mbufs (copied).
rte_mbuf *chained(RxQueue *q, const CmRxRing &r, std::uint32_t w, const hca::Wc &wc, std::uint16_t et) {
    const std::uint32_t l3len = wc.byte_len - wire::kEncapLen;
    const std::uint32_t total = kEthHdr + l3len;
    const std::uint32_t nseg = (total + q->room - 1) / q->room;
    if (nseg > 1 && (!q->scatter || nseg > kMaxChain)) {
        ++q->st.too_long;
        return nullptr;
    }
    rte_mbuf *segs[kMaxChain];
    if (rte_pktmbuf_alloc_bulk(q->mp, segs, nseg) != 0) {
        ++q->st.nombuf;
        return nullptr;
    }
    const rte_ether_hdr eh = cm_eth_header(q, wc, et);
    // Copy: the message from byte 4 (after the IPoIB header), buffer by buffer.
    std::uint32_t seg = 0, at = 0;  // destination
    auto put = [&](const std::uint8_t *src_bytes, std::uint32_t len) {
        while (len) {
            if (at == q->room) {  // this segment is full: on to the next
                segs[seg]->data_len = static_cast<std::uint16_t>(at);
                ++seg;
                at = 0;
            }
            const std::uint32_t n = std::min(len, q->room - at);
            std::memcpy(rte_pktmbuf_mtod_offset(segs[seg], std::uint8_t *, at), src_bytes, n);
            src_bytes += n;
            len -= n;
            at += n;
        }
    };
    put(reinterpret_cast<const std::uint8_t *>(&eh), kEthHdr);
    std::uint32_t off = wire::kEncapLen, left = l3len;
    for (std::uint32_t j = 0; left; ++j) {
        const std::uint32_t n = std::min(left, r.seg_len(j) - off);
        put(r.seg(w, j) + off, n);
        left -= n;
        off = 0;
    }
    segs[seg]->data_len = static_cast<std::uint16_t>(at);
    for (std::uint32_t k = 0; k + 1 < nseg; ++k)
        segs[k]->next = segs[k + 1];
    rte_mbuf *m = segs[0];
    m->nb_segs = static_cast<std::uint16_t>(nseg);
    m->pkt_len = total;
    q->st.copied_bytes += total;
    finish(q, m, r.seg(w, 0) + wire::kEncapLen, l3len, r.seg_len(0) - wire::kEncapLen, et,
           wire::load_be16(r.seg(w, 0) + 2));
    return m;
}

// The message of slot w lent to the application: a chain of q's mbufs
// attached to the buffers the message fills, the Ethernet header written
// where the IPoIB header's place ends (kCmRxHead: RTE_PKTMBUF_HEADROOM bytes
// of headroom before it). 1: lent (*out); 0: not (a chain without scatter:
// the caller copies, and counts it); -1: dropped, counted (no mbufs).
int lent(RxQueue *q, CmRxRing &r, std::uint32_t w, const hca::Wc &wc, std::uint16_t et, rte_mbuf **out) {
    CmRxStore *st = r.store;
    const std::uint32_t first = std::min(wc.byte_len, r.seg_len(0));
    const std::uint32_t nseg = 1 + (wc.byte_len - first + r.buf_size - 1) / r.buf_size;
    if (nseg > 1 && !q->scatter)
        return 0;
    rte_mbuf *segs[kCmRecvSge];
    if (rte_pktmbuf_alloc_bulk(q->mp, segs, nseg) != 0) {
        ++q->st.nombuf;
        return -1;
    }
    const std::uint16_t marks = wire::load_be16(r.seg(w, 0) + 2);
    std::uint8_t *b0 = r.seg(w, 0);
    const rte_ether_hdr eh = cm_eth_header(q, wc, et);
    std::memcpy(b0 + wire::kEncapLen - kEthHdr, &eh, kEthHdr);
    st->held[w].store(nseg, std::memory_order_relaxed);
    std::uint32_t left = wc.byte_len;
    for (std::uint32_t j = 0; j < nseg; ++j) {
        rte_mbuf *m = segs[j];
        const std::size_t idx = std::size_t{j} * r.slots + w;
        rte_mbuf_ext_shared_info *sh = &st->shinfo[idx];
        rte_mbuf_ext_refcnt_set(sh, 1);
        const rte_iova_t iova = st->iova_base == RTE_BAD_IOVA ? RTE_BAD_IOVA : st->iova_base + idx * r.buf_size;
        rte_pktmbuf_attach_extbuf(m, r.buf(w, j), iova, static_cast<std::uint16_t>(r.buf_size), sh);
        const std::uint32_t n = std::min(left, r.seg_len(j));
        if (j == 0) {
            m->data_off = static_cast<std::uint16_t>(kCmRxHead + wire::kEncapLen - kEthHdr);
            m->data_len = static_cast<std::uint16_t>(n - wire::kEncapLen + kEthHdr);
        } else {
            m->data_off = 0;
            m->data_len = static_cast<std::uint16_t>(n);
        }
        left -= n;
        m->next = j + 1 < nseg ? segs[j + 1] : nullptr;
    }
    st->lent.fetch_add(nseg, std::memory_order_relaxed);
    rte_mbuf *m = segs[0];
    m->nb_segs = static_cast<std::uint16_t>(nseg);
    m->pkt_len = kEthHdr + wc.byte_len - wire::kEncapLen;
    ++q->st.lent;
    finish(q, m, b0 + wire::kEncapLen, wc.byte_len - wire::kEncapLen, first - wire::kEncapLen, et, marks);
    *out = m;
    return 1;
}

} // namespace

std::uint16_t cm_rx(RxQueue *q, rte_mbuf **pkts, std::uint16_t n) noexcept {
    CmRxRing &r = q->cm;
    if (!r.cq || !n)
        return 0;
    hca::Wc wc[kCmRxBatch];
    const int got = r.cq->poll(wc, std::min<int>(n, kCmRxBatch));
    if (got <= 0)
        return 0;
    const bool deliver = q->fp->link_up.load(std::memory_order_acquire);
    hca::Sge sge[kCmRxBatch][kCmRecvSge];
    hca::RcRecvWr wr[kCmRxBatch];
    int nrep = 0;
    std::uint16_t out = 0;
    for (int k = 0; k < got; ++k) {
        const hca::Wc &c = wc[k];
        const auto w = static_cast<std::uint32_t>(c.wr_id);
        if (c.opcode != hca::WcOpcode::recv || w >= r.slots)
            continue;  // not a receive of this ring (a passive connection posts no sends)
        std::uint32_t repost = w;  // the slot posted in w's place
        rte_mbuf *m = nullptr;
        if (c.status == hca::WcStatus::wr_flush_err) {
            // A connection closed while its message was arriving (its QP to ERR: the device
            // flushes the receive it had taken): not traffic; the slot is posted again.
        } else if (c.status != hca::WcStatus::success || c.byte_len < wire::kEncapLen || c.byte_len > kCmRecvMtu) {
            ++q->st.cm_errors;
        } else if (!deliver) {
            ++q->st.link_down;
        } else {
            const std::uint8_t *b0 = r.seg(w, 0);
            auto et = wire::parse_encap(wire::Bytes(b0, std::min<std::uint32_t>(c.byte_len, r.seg_len(0))));
            const std::uint32_t l3len = c.byte_len - wire::kEncapLen;
            if (!et.ok()) {
                ++(et.err == wire::Error::unsupported_ethertype ? q->st.unsupported_ethertype : q->st.bad_frames);
            } else if (needs_translation(et.value, b0 + wire::kEncapLen, l3len)) {
                m = translated(q, r, w, c);
            } else {
                std::uint32_t spare = 0;
                int taken = 0;
                // Lent where the provider reaches any memory (software HCAs: no MR cache); on
                // one that needs registered memory (verbs) a lent buffer the application
                // forwarded would be memory it cannot send from: copied there.
                if (r.lend && kEthHdr + l3len > q->copy_max) {
                    if (r.take_spare(&spare)) {
                        taken = lent(q, r, w, c, et.value, &m);
                        if (taken == 1)
                            repost = spare;
                        else
                            r.put_spare(spare);
                    } else {
                        ++q->st.lend_exhausted;
                    }
                }
                if (taken == 0)
                    m = chained(q, r, w, c, et.value);
            }
        }
        r.recv_wr(repost, sge[nrep], &wr[nrep]);
        ++nrep;
        if (!m)
            continue;
        ++q->st.cm_packets;
        q->st.cm_bytes += m->pkt_len;
        pkts[out++] = m;
    }
    if (nrep)
        r.srq->post_recv(wr, nrep);
    return out;
}

} // namespace ipoib::pmd
