// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib receive path: rx_burst. Completions are polled in bursts; each
// receive buffer (GRH area, IPoIB header, payload) becomes one mbuf; buffers
// are reposted in one call per burst. No locks, no syscalls, no allocations
// other than mbufs.
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>

#include "ipoib_offload.hpp"
#include "ipoib_rxbuf.hpp"
#include "ipoib_rxtx.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

namespace {

constexpr std::uint16_t kEthHdr = RTE_ETHER_HDR_LEN;

// A fresh mbuf of the queue's pool, taken a burst at a time (nullptr: none left).
inline rte_mbuf *rx_mbuf(RxQueue *q) {
    if (!q->nspare_mbufs) [[unlikely]] {
        if (rte_pktmbuf_alloc_bulk(q->mp, q->spare_mbufs, kBurstMax) == 0)
            q->nspare_mbufs = kBurstMax;
        else
            return rte_pktmbuf_alloc(q->mp);  // fewer than a burst left: one at a time
    }
    return q->spare_mbufs[--q->nspare_mbufs];
}

// Append len bytes to m, chaining segments from the queue's pool if scatter
// is enabled; without it, a frame that does not fit one mbuf is dropped.
bool append(RxQueue *q, rte_mbuf *m, const std::uint8_t *src, std::uint32_t len) {
    rte_mbuf *seg = rte_pktmbuf_lastseg(m);
    if (!q->scatter && len > rte_pktmbuf_tailroom(seg)) {
        ++q->st.too_long;
        return false;
    }
    std::uint32_t left = len;
    for (;;) {
        const std::uint32_t room = rte_pktmbuf_tailroom(seg);
        const std::uint32_t n = left < room ? left : room;
        std::memcpy(rte_pktmbuf_mtod_offset(seg, std::uint8_t *, seg->data_len), src, n);
        seg->data_len = static_cast<std::uint16_t>(seg->data_len + n);
        m->pkt_len += n;
        src += n;
        left -= n;
        if (!left)
            return true;
        rte_mbuf *next = rx_mbuf(q);
        if (!next) {
            ++q->st.nombuf;
            return false;
        }
        seg->next = next;
        ++m->nb_segs;
        seg = next;
    }
}

// What the receive path knows about one frame.
struct RxFrame {
    RxQueue *q;
    const hca::Wc *wc;
    const std::uint8_t *grh;   // the 40-byte GRH area (valid if has_grh)
    bool has_grh;
    std::uint16_t skey;        // the sender's key: its LID, or on RoCE its GID folded
    std::uint16_t ethertype;
    const std::uint8_t *l3;    // after the IPoIB header
    std::uint32_t l3len;
    wire::Mac src_mac;         // the MAC the sender is known by
};

void ask_learn(PortData *fp, std::uint16_t key, std::uint32_t qpn, const wire::Mac &mac, const std::uint8_t *gid,
               std::uint8_t hw_flags = 0) {
    Request r{};
    r.kind = RequestKind::learn;
    r.pad2[0] = hw_flags;  // the sender's address flags (connected mode)
    r.lid = key;
    r.qpn = qpn;
    std::memcpy(r.mac, mac.raw.data(), 6);
    std::memcpy(r.gid, gid, 16);
    push_request(fp, r);
}

// IPoIB address -> MAC for ARP/ND translation on receive; learns the sender.
bool rx_hw_to_mac(void *c, const wire::HwAddr &hw, wire::Mac *out) {
    auto *f = static_cast<RxFrame *>(c);
    PortData *fp = f->q->fp;
    if (hw == fp->hwaddr) {
        std::memcpy(out->raw.data(), fp->mac.addr_bytes, 6);
        return true;
    }
    // RoCE: one GID may carry many QPs (processes sharing a port): the QPN is part of the MAC.
    *out = fp->roce ? lidqpn_mac(gid_key(hw.raw.data() + 4), hw.qpn())
                    : wire::mac_from_guid(wire::guid_from_gid(hw.gid()));
    if (hw.qpn() != f->wc->src_qp)
        return true;  // not the sender's own address: nothing to learn
    // The sender's own address. A GRH says where the packet came from: a claim
    // of another GID is not learned (one member must not take another's MAC).
    if (f->has_grh && std::memcmp(hw.raw.data() + 4, f->grh + kGrhSgidOffset, 16) != 0) {
        ++f->q->st.learn_refused;
        return true;
    }
    // Another endpoint already holds this MAC (two QPs on one port GID, or two
    // GUIDs that fold to one MAC): this one is known by its LID and QPN.
    NeighSnapshot s;
    if (!fp->roce && fp->neigh.lookup(*out, &s, 0) && s.gid != wire::Gid{} &&
        (s.gid != hw.gid() || s.qpn != hw.qpn()))
        *out = lidqpn_mac(f->skey, hw.qpn());
    ask_learn(fp, f->skey, f->wc->src_qp, *out, hw.raw.data() + 4, hw.raw[0]);
    f->src_mac = *out;
    return true;
}
bool no_mac_to_hw(void *, const wire::Mac &, wire::HwAddr *) { return false; }

// IPoIB multicast MGID -> the Ethernet multicast MAC the stack expects.
wire::Mac mcast_mac(const PortData *fp, const std::uint8_t *dgid) {
    if (std::memcmp(dgid, fp->bcast_mgid.raw.data(), 16) == 0)
        return wire::Mac{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    if (wire::load_be16(dgid + 2) == wire::kSignatureIPv6)
        return wire::Mac{{0x33, 0x33, dgid[12], dgid[13], dgid[14], dgid[15]}};
    return wire::Mac{{0x01, 0x00, 0x5e, static_cast<std::uint8_t>(dgid[13] & 0x7f), dgid[14], dgid[15]}};
}

// Native mode: the sender's address in the mbuf's dynamic field.
void set_sender(const RxFrame &f, rte_mbuf *m) {
    auto *a = rte_pmd_ipoib_addr(m, f.q->fp->dynfield);
    std::memset(a, 0, sizeof *a);
    a->hwaddr[1] = static_cast<std::uint8_t>(f.wc->src_qp >> 16);
    a->hwaddr[2] = static_cast<std::uint8_t>(f.wc->src_qp >> 8);
    a->hwaddr[3] = static_cast<std::uint8_t>(f.wc->src_qp);
    if (f.has_grh)
        std::memcpy(a->hwaddr + 4, f.grh + kGrhSgidOffset, 16);
    a->lid = f.skey;
}

// Native mode: the IPoIB frame as it came, the sender in the dynamic field.
bool rx_native(const RxFrame &f, rte_mbuf *m) {
    const std::uint8_t *ib = f.l3 - wire::kEncapLen;
    if (!append(f.q, m, ib, f.l3len + wire::kEncapLen))
        return false;
    set_sender(f, m);
    m->packet_type = packet_type(f.l3, f.l3len, f.ethertype) & ~RTE_PTYPE_L2_MASK;
    return true;
}

// The MAC the sender is known by; an unknown RoCE sender is learned from its GRH.
void rx_source(RxFrame &f) {
    PortData *fp = f.q->fp;
    if (fp->neigh.mac_for(f.skey, f.wc->src_qp, &f.src_mac))
        return;
    f.src_mac = lidqpn_mac(f.skey, f.wc->src_qp);
    if (fp->roce && f.has_grh)  // RoCE: a LID is no address, the GRH's source GID is
        ask_learn(fp, f.skey, f.wc->src_qp, f.src_mac, f.grh + kGrhSgidOffset);
}

// The Ethernet header of a received frame: to the multicast MAC of the
// GRH's destination GID, else to the port's MAC; from the sender's MAC.
rte_ether_hdr eth_header(const RxFrame &f) {
    rte_ether_addr dst = f.q->fp->mac;
    if (f.has_grh && f.grh[kGrhDgidOffset] == 0xff) {
        const wire::Mac d = mcast_mac(f.q->fp, f.grh + kGrhDgidOffset);
        std::memcpy(dst.addr_bytes, d.raw.data(), 6);
    }
    return rx_eth_header(dst, f.src_mac, f.ethertype);
}

// Ethernet emulation: the L3 payload behind an Ethernet header, ARP and ND
// rewritten to Ethernet addresses.
bool rx_eth(RxFrame &f, rte_mbuf *m) {
    RxQueue *q = f.q;
    rx_source(f);
    std::uint8_t *dst = rte_pktmbuf_mtod(m, std::uint8_t *);
    const wire::AddrMapper map{&f, no_mac_to_hw, rx_hw_to_mac};
    const wire::MutBytes room(dst + kEthHdr, rte_pktmbuf_tailroom(m) - kEthHdr);
    const wire::Bytes l3(f.l3, f.l3len);
    m->data_len = kEthHdr;
    m->pkt_len = kEthHdr;
    bool plain = true;
    if (f.ethertype == wire::kEtherTypeArp || f.ethertype == wire::kEtherTypeRarp) {
        auto r = wire::arp_ib_to_eth(l3, room, map);
        if (!r.ok()) {
            ++q->st.translate_errors;
            return false;
        }
        ++q->st.arp_translated;
        m->data_len = m->pkt_len = static_cast<std::uint16_t>(kEthHdr + r.value);
        plain = false;
    } else if (f.ethertype == wire::kEtherTypeIPv6 && f.l3len > 40 && f.l3[6] == wire::kIpProtoIcmpv6) {
        auto r = wire::nd_translate(l3, room, wire::NdDirection::ib_to_eth, map);
        if (r.ok()) {
            ++q->st.nd_translated;
            m->data_len = m->pkt_len = static_cast<std::uint16_t>(kEthHdr + r.value);
            plain = false;
        } else if (r.err != wire::Error::not_nd) {
            ++q->st.translate_errors;
            return false;
        }
    }
    if (plain && !append(q, m, f.l3, f.l3len))
        return false;
    const rte_ether_hdr eh = eth_header(f);
    std::memcpy(dst, &eh, kEthHdr);
    m->packet_type = packet_type(f.l3, f.l3len, f.ethertype);
    return true;
}

// Whether a frame can be handed over in its receive buffer: ARP and ND are
// rewritten into a frame of another length (copied), all else is not changed.
bool lendable(const RxFrame &f) {
    if (f.q->fp->l2 == L2Mode::ipoib)
        return true;
    if (f.ethertype == wire::kEtherTypeArp || f.ethertype == wire::kEtherTypeRarp)
        return false;
    return !(f.ethertype == wire::kEtherTypeIPv6 && f.l3len > 40 && f.l3[6] == wire::kIpProtoIcmpv6);
}

// Ethernet emulation in the receive buffer itself: the Ethernet header is
// written over the end of the GRH area and the IPoIB header (the GRH's
// destination GID is read first).
void rx_eth_in_place(RxFrame &f, rte_mbuf *m) {
    rx_source(f);
    const rte_ether_hdr eh = eth_header(f);  // (reads the GRH before the header overwrites it)
    std::memcpy(const_cast<std::uint8_t *>(f.l3) - kEthHdr, &eh, kEthHdr);
    m->packet_type = packet_type(f.l3, f.l3len, f.ethertype);
}

// Native mode in the receive buffer: the frame from its IPoIB header on.
void rx_native_in_place(const RxFrame &f, rte_mbuf *m) {
    set_sender(f, m);
    m->packet_type = packet_type(f.l3, f.l3len, f.ethertype) & ~RTE_PTYPE_L2_MASK;
}

// Hand the frame over in its buffer (lend->id) with a spare posted in its
// place; nullptr if it is to be copied (short, rewritten, longer than the
// application's mbufs, or no spare left).
rte_mbuf *rx_lend(RxFrame &f, RxLend *lend) {
    RxQueue *q = f.q;
    PortData *fp = q->fp;
    const bool eth = fp->l2 == L2Mode::eth;
    const std::uint32_t len = f.l3len + (eth ? kEthHdr : wire::kEncapLen);
    // Not longer than the application's own mbufs hold: an application that
    // gave small mbufs (and scatter) gets its frames as chains of them.
    if (len <= q->copy_max || len > q->room || !lendable(f))
        return nullptr;
    std::uint32_t spare;
    if (!lend->pool->take_spare(q->queue_id, &spare)) {
        ++q->st.lend_exhausted;
        return nullptr;
    }
    rte_mbuf *m = rx_mbuf(q);
    if (!m) {
        lend->pool->put_spare(q->queue_id, spare);
        return nullptr;  // the copy finds none either, and counts it
    }
    if (eth)
        rx_eth_in_place(f, m);
    else
        rx_native_in_place(f, m);
    const std::uint8_t *start = f.l3 - (eth ? kEthHdr : wire::kEncapLen);
    lend->pool->lend(m, lend->id, static_cast<std::uint32_t>(start - lend->pool->buffer(lend->id)), len);
    lend->repost = spare;
    ++q->st.lent;
    return m;
}

} // namespace

rte_mbuf *rx_frame(RxQueue *q, const hca::Wc &wc, const std::uint8_t *buf, RxLend *lend) noexcept {
    PortData *fp = q->fp;
    if (wc.status != hca::WcStatus::success) {
        ++q->st.errors;
        return nullptr;
    }
    RxFrame f{q, &wc, buf, (wc.wc_flags & hca::kWcGrh) != 0, wc.slid, 0, nullptr, 0, {}};
    if (fp->roce && f.has_grh)
        f.skey = gid_key(buf + kGrhSgidOffset);
    if (wc.src_qp == fp->qpn && f.skey == fp->lid) {
        ++q->st.loopback_discard;  // the HCA's copy of our own multicast
        return nullptr;
    }
    const std::uint8_t *ib = buf + hca::kGrhLen;
    const std::uint32_t len = wc.byte_len - hca::kGrhLen;
    auto et = wire::parse_encap(wire::Bytes(ib, len));
    if (!et.ok()) {
        ++(et.err == wire::Error::unsupported_ethertype ? q->st.unsupported_ethertype : q->st.bad_frames);
        return nullptr;
    }
    f.ethertype = et.value;
    f.l3 = ib + wire::kEncapLen;
    f.l3len = len - static_cast<std::uint32_t>(wire::kEncapLen);
    rte_mbuf *m = lend ? rx_lend(f, lend) : nullptr;
    if (!m) {
        m = rx_mbuf(q);
        if (!m) {
            ++q->st.nombuf;
            return nullptr;
        }
        if (!(fp->l2 == L2Mode::ipoib ? rx_native(f, m) : rx_eth(f, m))) {
            rte_pktmbuf_free(m);
            return nullptr;
        }
        q->st.copied_bytes += m->pkt_len;
    }
    m->port = fp->port_id;
    m->ol_flags |= rx_cksum_flags(f.l3, f.l3len, f.ethertype, q->l4_cksum, q->ip_cksum);
    ++q->st.packets;
    q->st.bytes += m->pkt_len;
    return m;
}

std::uint16_t rx_burst(void *queue, rte_mbuf **pkts, std::uint16_t nb) noexcept {
    auto *q = static_cast<RxQueue *>(queue);
    PortData *fp = q->fp;
    hca::Qp *qp = fp->qp_ready.load(std::memory_order_acquire);
    if (!qp)
        return 0;
    RxBufPool *pool = fp->rxbufs;
    const int n = fp->rx_cqs[q->queue_id]->poll(q->wc, std::min<int>(nb, kBurstMax));
    // Link down (port down, partition gone): what arrives is not delivered,
    // as Linux ipoib drops on a down interface; the buffers go back at once.
    const bool deliver = fp->link_up.load(std::memory_order_acquire);
    std::uint16_t out = 0;
    for (int k = 0; k < n; ++k) {
        const hca::Wc &wc = q->wc[k];
        const auto id = static_cast<std::uint32_t>(wc.wr_id);
        std::uint8_t *buf = pool->posted_at(id);
        if (k + 1 < n)
            rte_prefetch0(pool->posted_at(static_cast<std::uint32_t>(q->wc[k + 1].wr_id)) + hca::kGrhLen);
        IPOIB_DATA_LOG(DEBUG, "rx: %u bytes from LID %u QPN 0x%06x%s", wc.byte_len - hca::kGrhLen, wc.slid,
                       wc.src_qp, (wc.wc_flags & hca::kWcGrh) ? " (GRH)" : "");
        RxLend lend{pool, id, id};
        if (!deliver)
            ++q->st.link_down;
        else if (rte_mbuf *m = rx_frame(q, wc, buf, &lend)) {
            if (q->rss_hash && (wc.wc_flags & hca::kWcRssHash)) {
                m->hash.rss = wc.rss_hash;
                m->ol_flags |= RTE_MBUF_F_RX_RSS_HASH;
            }
            pkts[out++] = m;
        }
        q->repost[k] = hca::RecvWr{lend.repost, {reinterpret_cast<std::uintptr_t>(pool->posted_at(lend.repost)),
                                                 pool->post_len, pool->lkey}};
    }
    if (n > 0)
        qp->post_recv_queue(q->queue_id, q->repost, n);
    if (q->cm.cq && out < nb)  // connected mode: what arrived over connections
        out += cm_rx(q, pkts + out, static_cast<std::uint16_t>(nb - out));
    if (fp->local_rx && out < nb && !rte_ring_empty(fp->local_rx))  // ... and ICMP for path MTU
        out += local_rx(q, pkts + out, static_cast<std::uint16_t>(nb - out));
    // Frames held for a destination must leave once it is resolved even if
    // the application sends nothing more.
    if (q->queue_id < q->port->txq.size() && q->port->txq[q->queue_id])
        tx_service_pending(q->port->txq[q->queue_id]);
    return out;
}

wire::Mac rx_sender_mac(RxQueue *q, const hca::Wc &wc, std::uint16_t skey, const std::uint8_t *grh) noexcept {
    RxFrame f{q, &wc, grh, (wc.wc_flags & hca::kWcGrh) != 0, skey, 0, nullptr, 0, {}};
    rx_source(f);
    return f.src_mac;
}

wire::Mac rx_group_mac(const PortData *fp, const std::uint8_t *dgid) noexcept { return mcast_mac(fp, dgid); }

} // namespace ipoib::pmd
