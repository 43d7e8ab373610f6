// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib fast path: rx_burst / tx_burst. No locks, no syscalls, no
// allocations other than mbufs, one provider call per burst.
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include <cstring>

#include "ipoib_ethdev.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

namespace {

constexpr std::uint16_t kEthHdr = RTE_ETHER_HDR_LEN;

inline void push_request(Port *p, const Request &r) {
    // Full ring: the request is lost; the fast path retries on the next packet.
    rte_ring_mp_enqueue_elem(p->requests, const_cast<Request *>(&r), sizeof(Request));
}

// --- sequence-locked reads ---

template <class T, class F>
bool seq_read(const std::atomic<std::uint32_t> &seq, F &&copy) {
    for (int tries = 0; tries < 4; ++tries) {
        const std::uint32_t s1 = seq.load(std::memory_order_acquire);
        if (s1 & 1)
            continue;
        copy();
        std::atomic_thread_fence(std::memory_order_acquire);
        if (seq.load(std::memory_order_relaxed) == s1)
            return true;
    }
    return false;
}

std::uint32_t packet_type(const std::uint8_t *l3, std::uint32_t len, std::uint16_t ethertype) {
    std::uint32_t t = RTE_PTYPE_L2_ETHER;
    std::uint8_t proto = 0;
    if (ethertype == wire::kEtherTypeIPv4 && len >= 20) {
        t |= RTE_PTYPE_L3_IPV4;
        proto = l3[9];
    } else if (ethertype == wire::kEtherTypeIPv6 && len >= 40) {
        t |= RTE_PTYPE_L3_IPV6;
        proto = l3[6];
    } else if (ethertype == wire::kEtherTypeArp) {
        return RTE_PTYPE_L2_ETHER_ARP;
    }
    switch (proto) {
    case IPPROTO_TCP: t |= RTE_PTYPE_L4_TCP; break;
    case IPPROTO_UDP: t |= RTE_PTYPE_L4_UDP; break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: t |= RTE_PTYPE_L4_ICMP; break;
    default: break;
    }
    return t;
}

// Copy len bytes into m (and chained segments from the same pool if needed).
bool fill_mbuf(rte_mbuf *m, rte_mempool *mp, const std::uint8_t *src, std::uint32_t len, RxStats &st) {
    rte_mbuf *seg = m;
    std::uint32_t left = len;
    for (;;) {
        const std::uint32_t room = rte_pktmbuf_tailroom(seg);
        const std::uint32_t n = left < room ? left : room;
        std::memcpy(rte_pktmbuf_mtod_offset(seg, std::uint8_t *, seg->data_len), src, n);
        seg->data_len = static_cast<std::uint16_t>(seg->data_len + n);
        src += n;
        left -= n;
        if (!left)
            break;
        rte_mbuf *next = rte_pktmbuf_alloc(mp);
        if (!next) {
            ++st.nombuf;
            return false;
        }
        seg->next = next;
        ++m->nb_segs;
        seg = next;
    }
    m->pkt_len = len;
    return true;
}

struct RxCtx {
    Port *p;
    std::uint16_t slid;
    std::uint32_t sqpn;
    wire::Mac src_mac;
};

// IPoIB address -> MAC for ARP/ND translation on receive; learns the sender.
bool rx_hw_to_mac(void *c, const wire::HwAddr &hw, wire::Mac *out) {
    auto *x = static_cast<RxCtx *>(c);
    if (hw == x->p->hwaddr) {
        std::memcpy(out->raw.data(), x->p->mac.addr_bytes, 6);
        return true;
    }
    // RoCE: one GID may carry many QPs (processes sharing a port): the QPN is part of the MAC.
    *out = x->p->roce ? lidqpn_mac(gid_key(hw.raw.data() + 4), hw.qpn())
                      : wire::mac_from_guid(wire::guid_from_gid(hw.gid()));
    if (hw.qpn() == x->sqpn) {
        // The sender's own address: remember where it lives.
        Request r{};
        r.kind = 1;
        r.lid = x->slid;
        r.qpn = x->sqpn;
        std::memcpy(r.mac, out->raw.data(), 6);
        std::memcpy(r.gid, hw.raw.data() + 4, 16);
        push_request(x->p, r);
        x->src_mac = *out;
    }
    return true;
}
bool no_mac_to_hw(void *, const wire::Mac &, wire::HwAddr *) { return false; }

// IPoIB multicast MGID -> the Ethernet multicast MAC the stack expects.
wire::Mac mcast_mac(const Port *p, const std::uint8_t *dgid) {
    if (std::memcmp(dgid, p->bcast_mgid.raw.data(), 16) == 0)
        return wire::Mac{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    if (wire::load_be16(dgid + 2) == wire::kSignatureIPv6)
        return wire::Mac{{0x33, 0x33, dgid[12], dgid[13], dgid[14], dgid[15]}};
    return wire::Mac{{0x01, 0x00, 0x5e, static_cast<std::uint8_t>(dgid[13] & 0x7f), dgid[14], dgid[15]}};
}

} // namespace

// ---------------------------------------------------------------------------
// Neighbour table (fast-path side)

std::uint32_t NeighTable::hash(const std::uint8_t *m) {
    std::uint32_t h = 2166136261u;
    for (int i = 0; i < 6; ++i)
        h = (h ^ m[i]) * 16777619u;
    return h;
}

bool NeighTable::lookup(const wire::Mac &mac, NeighSnapshot *out, std::uint64_t now) {
    std::uint32_t i = hash(mac.raw.data()) & (kSize - 1);
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        Neigh &n = slots_[i];
        bool match = false;
        NeighSnapshot s{};
        if (!seq_read<Neigh>(n.seq, [&] {
                match = n.state != kNeighEmpty && std::memcmp(n.mac, mac.raw.data(), 6) == 0;
                s = NeighSnapshot{n.state, n.sl, n.dlid, n.qpn, n.ah, n.gid};
            }))
            return false;
        if (n.state == kNeighEmpty && !match)
            return false;
        if (match) {
            *out = s;
            if (n.used_ms.load(std::memory_order_relaxed) + 1000 < now)
                n.used_ms.store(now, std::memory_order_relaxed);
            return true;
        }
    }
    return false;
}

bool NeighTable::mac_for(std::uint16_t lid, std::uint32_t qpn, wire::Mac *out) {
    const std::uint32_t key = std::uint32_t{lid} << 24 ^ qpn;
    std::uint32_t i = (key * 2654435761u) >> 22;  // top 10 bits: kSize == 1024
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        RxIndex &x = idx_[i];
        std::uint8_t used = 0;
        std::uint16_t l = 0;
        std::uint32_t q = 0;
        std::uint8_t mac[6];
        if (!seq_read<RxIndex>(x.seq, [&] {
                used = x.used;
                l = x.lid;
                q = x.qpn;
                std::memcpy(mac, x.mac, 6);
            }))
            return false;
        if (!used)
            return false;
        if (l == lid && q == qpn) {
            std::memcpy(out->raw.data(), mac, 6);
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------
// RX

std::uint16_t rx_burst(void *queue, rte_mbuf **pkts, std::uint16_t nb) {
    auto *q = static_cast<RxQueue *>(queue);
    Port *p = q->port;
    hca::Qp *qp = p->qp_ready.load(std::memory_order_acquire);
    if (!qp)
        return 0;
    const int want = nb < 64 ? nb : 64;
    const int n = p->rx_cq->poll(q->wc, want);
    if (n <= 0) {
        if (q->queue_id < p->txq.size() && p->txq[q->queue_id])
            tx_service_pending(p->txq[q->queue_id]);
        return 0;
    }
    std::uint16_t out = 0;
    int nrepost = 0;
    for (int k = 0; k < n; ++k) {
        const hca::Wc &wc = q->wc[k];
        std::uint8_t *buf = p->rx_pool + wc.wr_id * p->rx_bufsize;
        if (k + 1 < n)
            rte_prefetch0(p->rx_pool + q->wc[k + 1].wr_id * p->rx_bufsize + hca::kGrhLen);
        q->repost[nrepost++] = hca::RecvWr{wc.wr_id, {reinterpret_cast<std::uintptr_t>(buf), p->rx_bufsize,
                                                       p->rx_mr->lkey()}};
        IPOIB_DATA_LOG(DEBUG, "rx: %u bytes from LID %u QPN 0x%06x%s", wc.byte_len - hca::kGrhLen, wc.slid,
                       wc.src_qp, (wc.wc_flags & hca::kWcGrh) ? " (GRH)" : "");
        if (wc.status != hca::WcStatus::success) {
            ++q->st.errors;
            continue;
        }
        // The sender's key: its LID, or on RoCE its GID (from the GRH) folded.
        const bool grh = wc.wc_flags & hca::kWcGrh;
        const std::uint16_t slid = p->roce && grh ? gid_key(buf + 8) : wc.slid;
        if (wc.src_qp == p->qpn && slid == p->lid) {
            ++q->st.loopback_discard;  // the HCA's copy of our own multicast
            continue;
        }
        const std::uint8_t *ib = buf + hca::kGrhLen;
        const std::uint32_t len = wc.byte_len - hca::kGrhLen;
        auto et = wire::parse_encap(wire::Bytes(ib, len));
        if (!et.ok()) {
            ++(et.err == wire::Error::unsupported_ethertype ? q->st.unsupported_ethertype : q->st.bad_frames);
            continue;
        }
        rte_mbuf *m = rte_pktmbuf_alloc(q->mp);
        if (!m) {
            ++q->st.nombuf;
            continue;
        }
        const std::uint8_t *l3 = ib + wire::kEncapLen;
        const std::uint32_t l3len = len - static_cast<std::uint32_t>(wire::kEncapLen);
        bool ok = true;
        if (p->cfg.l2 == L2Mode::ipoib) {
            ok = fill_mbuf(m, q->mp, ib, len, q->st);
            auto *a = rte_pmd_ipoib_addr(m, p->dynfield);
            std::memset(a, 0, sizeof *a);
            a->hwaddr[1] = static_cast<std::uint8_t>(wc.src_qp >> 16);
            a->hwaddr[2] = static_cast<std::uint8_t>(wc.src_qp >> 8);
            a->hwaddr[3] = static_cast<std::uint8_t>(wc.src_qp);
            if (wc.wc_flags & hca::kWcGrh)
                std::memcpy(a->hwaddr + 4, buf + 8, 16);
            a->lid = slid;
            m->packet_type = packet_type(l3, l3len, et.value) & ~RTE_PTYPE_L2_MASK;
        } else {
            RxCtx cx{p, slid, wc.src_qp, {}};
            if (!p->neigh.mac_for(slid, wc.src_qp, &cx.src_mac)) {
                cx.src_mac = lidqpn_mac(slid, wc.src_qp);
                if (p->roce && grh) {
                    // RoCE: a LID is no address, the GRH's source GID is: learn it so replies can go back.
                    Request r{};
                    r.kind = 1;
                    r.lid = slid;
                    r.qpn = wc.src_qp;
                    std::memcpy(r.mac, cx.src_mac.raw.data(), 6);
                    std::memcpy(r.gid, buf + 8, 16);
                    push_request(p, r);
                }
            }
            rte_ether_hdr eh;
            if ((wc.wc_flags & hca::kWcGrh) && buf[24] == 0xff) {
                const wire::Mac d = mcast_mac(p, buf + 24);
                std::memcpy(eh.dst_addr.addr_bytes, d.raw.data(), 6);
            } else {
                eh.dst_addr = p->mac;
            }
            eh.ether_type = rte_cpu_to_be_16(et.value);
            std::uint8_t *dst = rte_pktmbuf_mtod(m, std::uint8_t *);
            const wire::AddrMapper map{&cx, no_mac_to_hw, rx_hw_to_mac};
            const std::uint32_t room = rte_pktmbuf_tailroom(m);
            if (et.value == wire::kEtherTypeArp || et.value == wire::kEtherTypeRarp) {
                auto r = wire::arp_ib_to_eth(wire::Bytes(l3, l3len), wire::MutBytes(dst + kEthHdr, room - kEthHdr), map);
                if (r.ok()) {
                    ++q->st.arp_translated;
                    m->data_len = static_cast<std::uint16_t>(kEthHdr + r.value);
                    m->pkt_len = m->data_len;
                } else {
                    ++q->st.translate_errors;
                    ok = false;
                }
            } else if (et.value == wire::kEtherTypeIPv6 && l3len > 40 && l3[6] == wire::kIpProtoIcmpv6) {
                auto r = wire::nd_translate(wire::Bytes(l3, l3len), wire::MutBytes(dst + kEthHdr, room - kEthHdr),
                                            wire::NdDirection::ib_to_eth, map);
                if (r.ok()) {
                    ++q->st.nd_translated;
                    m->data_len = static_cast<std::uint16_t>(kEthHdr + r.value);
                    m->pkt_len = m->data_len;
                } else if (r.err == wire::Error::not_nd) {
                    m->data_len = kEthHdr;
                    ok = fill_mbuf(m, q->mp, l3, l3len, q->st);
                    m->pkt_len += kEthHdr;
                } else {
                    ++q->st.translate_errors;
                    ok = false;
                }
            } else {
                m->data_len = kEthHdr;
                ok = fill_mbuf(m, q->mp, l3, l3len, q->st);
                m->pkt_len += kEthHdr;
            }
            std::memcpy(eh.src_addr.addr_bytes, cx.src_mac.raw.data(), 6);
            std::memcpy(dst, &eh, kEthHdr);
            m->packet_type = packet_type(l3, l3len, et.value);
        }
        if (!ok) {
            rte_pktmbuf_free(m);
            continue;
        }
        m->port = p->port_id;
        m->ol_flags = 0;
        if (et.value == wire::kEtherTypeIPv4 && l3len >= 20) {
            const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(l3);
            const unsigned ihl = (ip->version_ihl & 0xf) * 4u;
            m->ol_flags |= (ihl >= 20 && ihl <= l3len && rte_raw_cksum(ip, ihl) == 0xffff)
                               ? RTE_MBUF_F_RX_IP_CKSUM_GOOD
                               : RTE_MBUF_F_RX_IP_CKSUM_BAD;
        }
        ++q->st.packets;
        q->st.bytes += m->pkt_len;
        pkts[out++] = m;
    }
    if (nrepost)
        qp->post_recv(q->repost, nrepost);
    if (q->queue_id < p->txq.size() && p->txq[q->queue_id])
        tx_service_pending(p->txq[q->queue_id]);
    return out;
}

// ---------------------------------------------------------------------------
// TX

void tx_flush_completions(TxQueue *q) {
    Port *p = q->port;
    hca::Wc wc[64];
    int n;
    while ((n = p->tx_cq->poll(wc, 64)) > 0)
        for (int i = 0; i < n; ++i) {
            const auto id = static_cast<std::uint32_t>(wc[i].wr_id);
            if (wc[i].status != hca::WcStatus::success)
                ++q->st.errors;
            rte_pktmbuf_free(q->inflight[id]);
            q->inflight[id] = nullptr;
            q->free_ids.push_back(id);
        }
}

namespace {

struct TxBatch {
    hca::SendWr wr[64];
    hca::Sge sge[64][hca::kMaxSendSge];
    int n = 0;
};

struct TxMapCtx {
    Port *p;
    std::uint64_t now;
};

bool tx_mac_to_hw(void *c, const wire::Mac &mac, wire::HwAddr *out) {
    auto *x = static_cast<TxMapCtx *>(c);
    if (std::memcmp(mac.raw.data(), x->p->mac.addr_bytes, 6) == 0) {
        *out = x->p->hwaddr;
        return true;
    }
    NeighSnapshot s;
    if (!x->p->neigh.lookup(mac, &s, x->now))
        return false;
    auto h = wire::make_hwaddr(0, s.qpn, s.gid);
    *out = h.value;
    return h.ok();
}
bool no_hw_to_mac(void *, const wire::HwAddr &, wire::Mac *) { return false; }
// ND options we send describe us, whatever MAC the stack behind us put in them.
bool own_hw(void *c, const wire::Mac &, wire::HwAddr *out) {
    *out = static_cast<TxMapCtx *>(c)->p->hwaddr;
    return true;
}

enum class TxResult { sent, dropped, queued };

// Resolve the destination of an Ethernet frame to (AH, QPN).
// Queue m behind an unresolved destination (at most 3 per destination, as
// Linux does); `first` says whether it is the first one (ask for resolution).
TxResult hold(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool *first) {
    std::uint32_t same = 0;
    for (std::uint32_t i = 0; i < q->npending; ++i)
        same += q->pending[i].mac == key;
    if (same >= 3 || q->npending >= std::size(q->pending))
        return TxResult::dropped;
    *first = same == 0;
    q->pending[q->npending++] = Pending{m, key, now};
    ++q->st.unresolved_queued;
    return TxResult::queued;
}

// A destination is not ready: hold m behind it, and ask the control thread
// (`ask`) when m is the first frame held for it. retry: m is already held,
// leave it held (no counting, no new request). Overflow drops count in `drops`.
TxResult wait_for(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool retry, const Request &ask,
                  std::uint64_t &drops) {
    if (retry)
        return TxResult::queued;
    bool first = false;
    if (hold(q, m, key, now, &first) == TxResult::dropped) {
        ++drops;
        return TxResult::dropped;
    }
    if (first)
        push_request(q->port, ask);
    return TxResult::queued;
}

// The AH of a multicast group this port has joined (the broadcast group
// included), or nullptr.
hca::Ah *group_ah(Port *p, const wire::Gid &mgid) {
    if (mgid == p->bcast_mgid)
        return p->bcast_ah;
    for (auto &e : p->mcast) {
        bool hit = false;
        hca::Ah *a = nullptr;
        seq_read<McEntry>(e.seq, [&] {
            hit = e.used && e.mgid == mgid;
            a = e.ah;
        });
        if (hit && a)
            return a;
    }
    return nullptr;
}

// A unicast neighbour by the MAC it is known by: resolved (AH and QPN), failed
// (dropped), or waited for (`ask` resolves it).
TxResult neighbour(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool retry, const Request &ask,
                   hca::Ah **ah, std::uint32_t *qpn) {
    NeighSnapshot s{};
    const bool known = q->port->neigh.lookup(key, &s, now);
    if (known && s.state == kNeighResolved && s.ah) {
        *ah = s.ah;
        *qpn = s.qpn;
        return TxResult::sent;
    }
    if (known && s.state == kNeighFailed) {
        ++q->st.unresolved_drop;
        return TxResult::dropped;
    }
    // Unknown or unresolved: up to 3 frames wait per neighbour, as in Linux.
    return wait_for(q, m, key, now, retry, ask, q->st.unresolved_drop);
}

// retry: m is already held; on a miss leave it held (no counting, no new request).
TxResult resolve_dst(TxQueue *q, rte_mbuf *m, const std::uint8_t *frame, std::uint32_t l3len, std::uint64_t now,
                     hca::Ah **ah, std::uint32_t *qpn, bool retry) {
    Port *p = q->port;
    const auto *eh = reinterpret_cast<const rte_ether_hdr *>(frame);
    const std::uint8_t *l3 = frame + kEthHdr;
    if (rte_is_broadcast_ether_addr(&eh->dst_addr)) {
        *ah = p->bcast_ah;
        *qpn = hca::kMulticastQpn;
        return TxResult::sent;
    }
    if (rte_is_multicast_ether_addr(&eh->dst_addr)) {
        const std::uint16_t et = rte_be_to_cpu_16(eh->ether_type);
        wire::Result<wire::Gid> g = wire::Result<wire::Gid>::fail(wire::Error::not_multicast);
        if (et == wire::kEtherTypeIPv4 && l3len >= 20)
            g = wire::ipv4_mcast_mgid(wire::Bytes(l3 + 16, 4), p->bcast_mgid);
        else if (et == wire::kEtherTypeIPv6 && l3len >= 40)
            g = wire::ipv6_mcast_mgid(wire::Bytes(l3 + 24, 16), p->bcast_mgid);
        if (!g.ok()) {
            ++q->st.unsupported_ethertype;
            return TxResult::dropped;
        }
        *qpn = hca::kMulticastQpn;
        if ((*ah = group_ah(p, g.value)))
            return TxResult::sent;
        // Not joined yet: wait while the control thread makes a send-only join.
        wire::Mac key;
        std::memcpy(key.raw.data(), eh->dst_addr.addr_bytes, 6);
        Request ask{};
        ask.kind = 3;
        std::memcpy(ask.gid, g.value.raw.data(), 16);
        return wait_for(q, m, key, now, retry, ask, q->st.mcast_unjoined);
    }
    wire::Mac mac;
    std::memcpy(mac.raw.data(), eh->dst_addr.addr_bytes, 6);
    Request ask{};
    ask.kind = 2;
    std::memcpy(ask.mac, mac.raw.data(), 6);
    if (is_lidqpn_mac(mac)) {
        ask.lid = static_cast<std::uint16_t>(mac.raw[1] << 8 | mac.raw[2]);
        ask.qpn = std::uint32_t{mac.raw[3]} << 16 | std::uint32_t{mac.raw[4]} << 8 | mac.raw[5];
    }
    return neighbour(q, m, mac, now, retry, ask, ah, qpn);
}

// Build the work request for one Ethernet frame. Returns what became of m.
TxResult build_eth(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry = false) {
    Port *p = q->port;
    if (m->data_len < kEthHdr) {
        ++q->st.errors;
        return TxResult::dropped;
    }
    std::uint8_t *frame = rte_pktmbuf_mtod(m, std::uint8_t *);
    const auto *eh = reinterpret_cast<const rte_ether_hdr *>(frame);
    const std::uint16_t et = rte_be_to_cpu_16(eh->ether_type);
    if (!wire::ethertype_allowed(et)) {
        ++q->st.unsupported_ethertype;
        return TxResult::dropped;
    }
    const std::uint32_t l3len = m->pkt_len - kEthHdr;
    if (l3len > p->mtu) {
        ++q->st.too_big;
        return TxResult::dropped;
    }
    // Checksum offloads, done here in software: IPoIB HCAs in datagram mode do them for Linux.
    if (m->ol_flags & (RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_L4_MASK)) {
        if (m->l2_len == 0)
            m->l2_len = kEthHdr;
        if (m->ol_flags & RTE_MBUF_F_TX_IPV4) {
            auto *ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr *, m->l2_len);
            if (m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) {
                ip->hdr_checksum = 0;
                ip->hdr_checksum = rte_ipv4_cksum(ip);
            }
            const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_TX_L4_MASK;
            if (l4 == RTE_MBUF_F_TX_TCP_CKSUM || l4 == RTE_MBUF_F_TX_UDP_CKSUM) {
                std::uint8_t *l4h = reinterpret_cast<std::uint8_t *>(ip) + m->l3_len;
                auto *ck = reinterpret_cast<std::uint16_t *>(l4h + (l4 == RTE_MBUF_F_TX_TCP_CKSUM ? 16 : 6));
                *ck = 0;
                *ck = rte_ipv4_udptcp_cksum(ip, l4h);
            }
        } else if (m->ol_flags & RTE_MBUF_F_TX_IPV6) {
            auto *ip = rte_pktmbuf_mtod_offset(m, rte_ipv6_hdr *, m->l2_len);
            const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_TX_L4_MASK;
            if (l4 == RTE_MBUF_F_TX_TCP_CKSUM || l4 == RTE_MBUF_F_TX_UDP_CKSUM) {
                std::uint8_t *l4h = reinterpret_cast<std::uint8_t *>(ip) + m->l3_len;
                auto *ck = reinterpret_cast<std::uint16_t *>(l4h + (l4 == RTE_MBUF_F_TX_TCP_CKSUM ? 16 : 6));
                *ck = 0;
                *ck = rte_ipv6_udptcp_cksum(ip, l4h);
            }
        }
    }
    hca::Ah *ah = nullptr;
    std::uint32_t qpn = 0;
    const TxResult r = resolve_dst(q, m, frame, l3len, now, &ah, &qpn, retry);
    if (r != TxResult::sent)
        return r;

    const std::uint32_t id = q->free_ids.back();
    std::uint8_t *bounce = q->bounce.data() + std::size_t{id} * q->slot_size;
    auto &hdr = q->hdr[id];
    wire::write_encap(wire::MutBytes(hdr.data(), 4), et);
    hca::Sge *sg = b.sge[b.n];
    std::uint32_t nsge = 0;
    sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(hdr.data()), 4, 0};
    const std::uint8_t *l3 = frame + kEthHdr;
    TxMapCtx cx{p, now};
    const wire::AddrMapper map{&cx, tx_mac_to_hw, no_hw_to_mac};
    bool translated = false;
    if (et == wire::kEtherTypeArp || et == wire::kEtherTypeRarp) {
        if (m->nb_segs != 1) {
            ++q->st.translate_errors;
            return TxResult::dropped;
        }
        // The sender of an ARP we transmit is this port, whatever MAC the stack
        // behind us (a tap, a bridge) used: take its sender MAC as ours.
        const std::uint32_t alen = m->data_len - kEthHdr;
        std::uint8_t *arp = bounce + q->slot_size / 2;
        std::memcpy(arp, l3, std::min<std::uint32_t>(alen, q->slot_size / 2));
        if (alen >= wire::kEthArpLen)
            std::memcpy(arp + 8, p->mac.addr_bytes, 6);
        auto t = wire::arp_eth_to_ib(wire::Bytes(arp, alen), wire::MutBytes(bounce, q->slot_size / 2), map);
        if (!t.ok()) {
            ++q->st.translate_errors;
            return TxResult::dropped;
        }
        ++q->st.arp_translated;
        sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(bounce), static_cast<std::uint32_t>(t.value), 0};
        translated = true;
    } else if (et == wire::kEtherTypeIPv6 && m->nb_segs == 1 && l3len > 40 && l3[6] == wire::kIpProtoIcmpv6) {
        const wire::AddrMapper own{&cx, own_hw, no_hw_to_mac};
        auto t = wire::nd_translate(wire::Bytes(l3, l3len), wire::MutBytes(bounce, q->slot_size),
                                    wire::NdDirection::eth_to_ib, own);
        if (t.ok()) {
            if (t.value > p->mtu) {
                ++q->st.too_big;
                return TxResult::dropped;
            }
            ++q->st.nd_translated;
            sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(bounce), static_cast<std::uint32_t>(t.value), 0};
            translated = true;
        } else if (t.err != wire::Error::not_nd) {
            ++q->st.translate_errors;
            return TxResult::dropped;
        }
    }
    if (!translated) {
        if (m->nb_segs + 1u > hca::kMaxSendSge) {
            // Too many segments for one gather list: linearise.
            rte_pktmbuf_read(m, kEthHdr, l3len, bounce);
            sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(bounce), l3len, 0};
        } else {
            sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(frame + kEthHdr),
                                  static_cast<std::uint32_t>(m->data_len - kEthHdr), 0};
            for (rte_mbuf *s = m->next; s; s = s->next)
                sg[nsge++] = hca::Sge{rte_pktmbuf_mtod(s, std::uintptr_t), s->data_len, 0};
        }
    }
    q->free_ids.pop_back();
    q->inflight[id] = m;
    b.wr[b.n] = hca::SendWr{id, sg, nsge, ah, qpn, hca::kUseQpQkey, true};
    ++b.n;
    ++q->st.packets;
    q->st.bytes += m->pkt_len;
    IPOIB_DATA_LOG(DEBUG, "tx: EtherType 0x%04x, %u bytes to LID %u QPN 0x%06x", et, m->pkt_len - kEthHdr,
                   ah->attr().dlid, qpn);
    return TxResult::sent;
}

// Native mode: the frame already carries the IPoIB header; the address is in the dynfield.
TxResult build_native(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry = false) {
    Port *p = q->port;
    auto et = wire::parse_encap(wire::Bytes(rte_pktmbuf_mtod(m, const std::uint8_t *), m->data_len));
    if (!et.ok()) {
        ++q->st.unsupported_ethertype;
        return TxResult::dropped;
    }
    if (m->pkt_len - wire::kEncapLen > p->mtu) {
        ++q->st.too_big;
        return TxResult::dropped;
    }
    const auto *a = rte_pmd_ipoib_addr(m, p->dynfield);
    auto hw = wire::parse_hwaddr(wire::Bytes(a->hwaddr, 20)).value;
    hca::Ah *ah = nullptr;
    std::uint32_t qpn = hw.qpn();
    const wire::Gid gid = hw.gid();
    Request ask{};
    std::memcpy(ask.gid, gid.raw.data(), 16);
    TxResult r;
    if (qpn == hca::kMulticastQpn) {
        ah = group_ah(p, gid);
        // Not joined yet: held under the group's MGID folded like a GUID while we join.
        ask.kind = 3;
        r = ah ? TxResult::sent
               : wait_for(q, m, wire::mac_from_guid(wire::guid_from_gid(gid)), now, retry, ask, q->st.mcast_unjoined);
    } else {
        const wire::Mac key = gid == wire::Gid{} ? lidqpn_mac(a->lid, qpn)
                                                 : wire::mac_from_guid(wire::guid_from_gid(gid));
        ask.kind = 2;
        std::memcpy(ask.mac, key.raw.data(), 6);
        ask.lid = a->lid;
        ask.qpn = qpn;
        r = neighbour(q, m, key, now, retry, ask, &ah, &qpn);
    }
    if (r != TxResult::sent)
        return r;
    if (m->nb_segs > hca::kMaxSendSge) {
        ++q->st.errors;
        return TxResult::dropped;
    }
    const std::uint32_t id = q->free_ids.back();
    q->free_ids.pop_back();
    hca::Sge *sg = b.sge[b.n];
    std::uint32_t nsge = 0;
    for (rte_mbuf *s = m; s; s = s->next)
        sg[nsge++] = hca::Sge{rte_pktmbuf_mtod(s, std::uintptr_t), s->data_len, 0};
    q->inflight[id] = m;
    b.wr[b.n] = hca::SendWr{id, sg, nsge, ah, qpn, hca::kUseQpQkey, true};
    ++b.n;
    ++q->st.packets;
    q->st.bytes += m->pkt_len;
    return TxResult::sent;
}

// Frames that waited for their neighbour: send the resolved, drop the
// hopeless (failed, or waiting for over a second), keep the rest.
void flush_pending(TxQueue *q, TxBatch &b, std::uint64_t now) {
    if (!q->npending)
        return;
    Pending waiting[std::size(q->pending)];
    const std::uint32_t nw = q->npending;
    std::memcpy(waiting, q->pending, sizeof(Pending) * nw);
    q->npending = 0;
    for (std::uint32_t k = 0; k < nw; ++k) {
        const Pending &pe = waiting[k];
        if (now - pe.since_ms > 1000) {
            ++q->st.unresolved_drop;
            rte_pktmbuf_free(pe.m);
            continue;
        }
        if (q->free_ids.empty() || b.n >= 32) {
            q->pending[q->npending++] = pe;
            continue;
        }
        const TxResult r = q->port->cfg.l2 == L2Mode::eth ? build_eth(q, b, pe.m, now, true)
                                                          : build_native(q, b, pe.m, now, true);
        switch (r) {
        case TxResult::sent: break;
        case TxResult::dropped: rte_pktmbuf_free(pe.m); break;
        case TxResult::queued: q->pending[q->npending++] = pe; break;
        }
    }
}

void post_batch(TxQueue *q, hca::Qp *qp, TxBatch &b) {
    if (!b.n)
        return;
    const int posted = qp->post_send(b.wr, b.n);
    for (int k = posted < 0 ? 0 : posted; k < b.n; ++k) {
        const auto id = static_cast<std::uint32_t>(b.wr[k].wr_id);
        rte_pktmbuf_free(q->inflight[id]);
        q->inflight[id] = nullptr;
        q->free_ids.push_back(id);
        ++q->st.errors;
    }
    b.n = 0;
}

} // namespace

// Called from rx_burst: frames waiting for a neighbour must leave once it is
// resolved even if the application sends nothing more. The TX queue may
// belong to another lcore, hence the per-burst try-lock.
void tx_service_pending(TxQueue *q) {
    if (!q->npending || q->busy.test_and_set(std::memory_order_acquire))
        return;
    hca::Qp *qp = q->port->qp_ready.load(std::memory_order_acquire);
    if (qp && q->port->link_up.load(std::memory_order_acquire)) {
        TxBatch b;
        flush_pending(q, b, now_ms());
        post_batch(q, qp, b);
        tx_flush_completions(q);
    }
    q->busy.clear(std::memory_order_release);
}

std::uint16_t tx_burst(void *queue, rte_mbuf **pkts, std::uint16_t nb) {
    auto *q = static_cast<TxQueue *>(queue);
    Port *p = q->port;
    hca::Qp *qp = p->qp_ready.load(std::memory_order_acquire);
    if (!qp || !p->link_up.load(std::memory_order_acquire)) {
        for (std::uint16_t i = 0; i < nb; ++i)
            rte_pktmbuf_free(pkts[i]);
        q->st.link_down_drop += nb;
        return nb;
    }
    while (q->busy.test_and_set(std::memory_order_acquire))
        rte_pause();  // rx_burst of another lcore is flushing our pending frames
    tx_flush_completions(q);
    const std::uint64_t now = now_ms();
    TxBatch b;

    flush_pending(q, b, now);

    std::uint16_t i = 0;
    for (; i < nb; ++i) {
        if (q->free_ids.empty() || b.n == 64)
            break;
        rte_mbuf *m = pkts[i];
        if (i + 1 < nb)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
        const TxResult r = p->cfg.l2 == L2Mode::eth ? build_eth(q, b, m, now) : build_native(q, b, m, now);
        if (r == TxResult::dropped)
            rte_pktmbuf_free(m);
    }
    post_batch(q, qp, b);
    tx_flush_completions(q);
    q->busy.clear(std::memory_order_release);
    return i;
}

} // namespace ipoib::pmd
