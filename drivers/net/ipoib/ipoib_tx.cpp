// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib transmit path: tx_burst. Each frame becomes one UD send (its
// mbuf chain as the gather list, the Ethernet header replaced by the 4-byte
// IPoIB header); a burst is posted in one call and completions are reaped in
// batches. Frames for destinations not resolved yet are held (at most
// kHoldPerDest each) while the control thread resolves them. No locks, no
// syscalls, no allocations.
#include <rte_ether.h>
#include <rte_ip_frag.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>

#include "ipoib/hca/rc.hpp"
#include "ipoib_offload.hpp"
#include "ipoib_rxtx.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

namespace {

constexpr std::uint16_t kEthHdr = RTE_ETHER_HDR_LEN;

// The lkey of a piece of an mbuf's data: its registration in the MR cache
// (zero copy), or 0 (not registered, or no cache: the provider copies or
// reaches it its own way).
std::uint32_t data_lkey(TxQueue *q, std::uintptr_t addr, std::uint32_t len) {
    return q->mr.lkey(q->fp->mrs, addr, len);
}

// --- destinations ---

// Hold m behind a destination that is not ready: at most kHoldPerDest per
// destination (as Linux: it waits for the SA), kPendingMax per queue. A
// LID/QPN MAC needs no SA, only an address handle the control thread makes
// on its next pass: its frames may fill the queue's room (a first burst is
// not lost). `first`: the first one held for it (the control thread must be asked).
TxResult hold(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool *first) {
    std::uint32_t same = 0;
    for (std::uint32_t i = 0; i < q->npending; ++i)
        same += q->pending[i].mac == key;
    const std::uint32_t room = is_lidqpn_mac(key) ? kPendingMax : kHoldPerDest;
    if (same >= room || q->npending >= kPendingMax)
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
        push_request(q->fp, ask);
    return TxResult::queued;
}

// The AH of a joined group (the broadcast group included), or nullptr.
hca::Ah *group_ah(const PortData *fp, const wire::Gid &mgid) {
    return mgid == fp->bcast_mgid ? fp->bcast_ah : fp->groups.find(mgid);
}

// Where a frame goes: an address handle and a QPN, or (connected mode) a connection.
struct Dest {
    hca::Ah *ah = nullptr;
    std::uint32_t qpn = 0;
    hca::RcQp *rc = nullptr;
    std::uint32_t rc_mtu = 0;  // the longest message the connection's peer receives
    bool icrc = false;         // the connection agreed on "IB CRC as checksum"
};

// A multicast group: joined (sent), or held while a send-only join is made.
TxResult group(TxQueue *q, rte_mbuf *m, const wire::Gid &mgid, const wire::Mac &key, std::uint64_t now, bool retry,
               Dest *d) {
    d->qpn = hca::kMulticastQpn;
    if ((d->ah = group_ah(q->fp, mgid)))
        return TxResult::sent;
    Request ask{};
    ask.kind = RequestKind::sendonly_join;
    std::memcpy(ask.gid, mgid.raw.data(), 16);
    return wait_for(q, m, key, now, retry, ask, q->st.mcast_unjoined);
}

// Connected mode, a resolved peer that advertises connections: its
// connection from this TX queue if up; held while it is set up (the control
// thread is asked on the first frame); datagrams while there is none
// (refused, failed, or no room in the table) until it is tried again.
TxResult connection(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool retry, Dest *d) {
    ConnSnapshot c;
    const bool have = q->conns.lookup(key.raw.data(), &c);
    if (have && c.state == ConnState::up && c.qp) {
        d->rc = c.qp;
        d->rc_mtu = c.peer_mtu;
        d->icrc = c.icrc;
        return TxResult::sent;
    }
    if (have && c.state == ConnState::failed && now < c.retry_ms) {
        ++q->st.cm_datagram;
        return TxResult::sent;  // datagrams meanwhile
    }
    if (!q->conns.active()) {
        ++q->st.cm_datagram;
        return TxResult::sent;
    }
    Request ask{};
    ask.kind = RequestKind::connect;
    ask.qpn = q->queue_id;
    std::memcpy(ask.mac, key.raw.data(), 6);
    // A frame held for a connection being set up is asked for again only
    // when none was held (retry: it is held already). But a frame held while
    // its neighbour was resolved comes back here as a retry with no
    // connection asked for yet: ask then too, at most once a millisecond per
    // queue (cm_connect ignores a peer it is connecting to already).
    if (retry && now != q->conn_retry_ask_ms) {
        q->conn_retry_ask_ms = now;
        push_request(q->fp, ask);
    }
    return wait_for(q, m, key, now, retry, ask,
                    q->st.unresolved_drop);
}

// A unicast neighbour by the MAC it is known by: resolved (AH and QPN),
// failed (dropped), or waited for (`ask` resolves it).
// make_ask() builds the resolve request, only when one is needed.
template <class MakeAsk>
TxResult neighbour(TxQueue *q, rte_mbuf *m, const wire::Mac &key, std::uint64_t now, bool retry, MakeAsk make_ask,
                   Dest *d) {
    NeighSnapshot s{};
    const bool known = q->fp->neigh.lookup(key, &s, now);
    if (known && s.state == NeighState::resolved && s.ah) {
        *d = Dest{s.ah, s.qpn};
        if (q->fp->connected && (s.hw_flags & wire::kHwFlagRc))
            return connection(q, m, key, now, retry, d);
        return TxResult::sent;
    }
    if (known && s.state == NeighState::failed && now < s.retry_ms) {
        ++q->st.unresolved_drop;  // failed recently: asked again once its backoff has passed
        return TxResult::dropped;
    }
    return wait_for(q, m, key, now, retry, make_ask(), q->st.unresolved_drop);
}

// Ethernet emulation: the destination of a frame by its destination MAC.
TxResult eth_dest(TxQueue *q, rte_mbuf *m, const std::uint8_t *frame, std::uint32_t l3len, std::uint64_t now,
                  bool retry, Dest *d) {
    PortData *fp = q->fp;
    const auto *eh = reinterpret_cast<const rte_ether_hdr *>(frame);
    const std::uint8_t *l3 = frame + kEthHdr;
    wire::Mac mac;
    std::memcpy(mac.raw.data(), eh->dst_addr.addr_bytes, 6);
    if (rte_is_broadcast_ether_addr(&eh->dst_addr)) {
        if (!fp->bcast_ah) {  // its address handle could not be made (logged by the control thread)
            ++q->st.mcast_unjoined;
            return TxResult::dropped;
        }
        *d = Dest{fp->bcast_ah, hca::kMulticastQpn};
        return TxResult::sent;
    }
    if (rte_is_multicast_ether_addr(&eh->dst_addr)) {
        const std::uint16_t et = rte_be_to_cpu_16(eh->ether_type);
        wire::Result<wire::Gid> g = wire::Result<wire::Gid>::fail(wire::Error::not_multicast);
        if (et == wire::kEtherTypeIPv4 && l3len >= 20)
            g = wire::ipv4_mcast_mgid(wire::Bytes(l3 + 16, 4), fp->bcast_mgid);
        else if (et == wire::kEtherTypeIPv6 && l3len >= 40)
            g = wire::ipv6_mcast_mgid(wire::Bytes(l3 + 24, 16), fp->bcast_mgid);
        if (!g.ok()) {
            ++q->st.unsupported_ethertype;
            return TxResult::dropped;
        }
        return group(q, m, g.value, mac, now, retry, d);
    }
    auto make_ask = [&mac] {
        Request ask{};
        ask.kind = RequestKind::resolve;
        std::memcpy(ask.mac, mac.raw.data(), 6);
        if (is_lidqpn_mac(mac)) {
            ask.lid = lidqpn_mac_lid(mac);
            ask.qpn = lidqpn_mac_qpn(mac);
        }
        return ask;
    };
    return neighbour(q, m, mac, now, retry, make_ask, d);
}

// --- ARP and ND translation on transmit ---

struct TxMapCtx {
    PortData *fp;
    std::uint64_t now;
};

bool tx_mac_to_hw(void *c, const wire::Mac &mac, wire::HwAddr *out) {
    auto *x = static_cast<TxMapCtx *>(c);
    if (std::memcmp(mac.raw.data(), x->fp->mac.addr_bytes, 6) == 0) {
        *out = x->fp->hwaddr;
        return true;
    }
    NeighSnapshot s;
    if (!x->fp->neigh.lookup(mac, &s, x->now))
        return false;
    auto h = wire::make_hwaddr(0, s.qpn, s.gid);
    *out = h.value;
    return h.ok();
}
bool no_hw_to_mac(void *, const wire::HwAddr &, wire::Mac *) { return false; }
// ND options we send describe us, whatever MAC the stack behind us put in them.
bool own_hw(void *c, const wire::Mac &, wire::HwAddr *out) {
    *out = static_cast<TxMapCtx *>(c)->fp->hwaddr;
    return true;
}

enum class Translated { no, yes, dropped };

// ARP/RARP, and ND with link-layer options, rewritten into the bounce slot.
// The application sends ARP or ND as this address (family 4: 4 bytes, 6:
// 16): tell the control thread once (what this queue told it last is kept).
void own_addr_seen(TxQueue *q, std::uint8_t family, const std::uint8_t *ip) {
    std::array<std::uint8_t, 17> a{};
    a[0] = family;
    std::memcpy(a.data() + 1, ip, family == 4 ? 4 : 16);
    for (const auto &s : q->own_seen)
        if (s == a)
            return;
    q->own_seen[q->own_next++ % q->own_seen.size()] = a;
    Request ask{};
    ask.kind = RequestKind::own_addr;
    ask.family = family;
    std::memcpy(ask.gid, a.data() + 1, 16);
    push_request(q->fp, ask);
}

Translated translate(TxQueue *q, rte_mbuf *m, std::uint16_t et, std::uint8_t *bounce, std::uint64_t now,
                     hca::Sge *sge) {
    PortData *fp = q->fp;
    const std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, kEthHdr);
    const std::uint32_t l3len = m->pkt_len - kEthHdr;
    const std::uint32_t half = q->slot_size / 2;
    TxMapCtx cx{fp, now};
    if (et == wire::kEtherTypeArp || et == wire::kEtherTypeRarp) {
        if (m->nb_segs != 1) {
            ++q->st.translate_errors;
            return Translated::dropped;
        }
        // The sender of an ARP we transmit is this port, whatever MAC the stack
        // behind us (a tap, a bridge) used: take its sender MAC as ours.
        const std::uint32_t alen = m->data_len - kEthHdr;
        std::uint8_t *arp = bounce + half;
        std::memcpy(arp, l3, std::min(alen, half));
        if (alen >= wire::kEthArpLen)
            std::memcpy(arp + 8, fp->mac.addr_bytes, 6);
        auto t = wire::arp_eth_to_ib(wire::Bytes(arp, alen), wire::MutBytes(bounce, half),
                                     wire::AddrMapper{&cx, tx_mac_to_hw, no_hw_to_mac});
        if (!t.ok()) {
            ++q->st.translate_errors;
            return Translated::dropped;
        }
        ++q->st.arp_translated;
        // Ethernet, IPv4, 6 + 4 address bytes: the sender's IPv4 address (not 0.0.0.0, a probe's).
        static constexpr std::uint8_t kArpEthIpv4[6] = {0, 1, 8, 0, 6, 4};
        if (alen >= wire::kEthArpLen && std::memcmp(arp, kArpEthIpv4, 6) == 0 &&
            (arp[14] | arp[15] | arp[16] | arp[17]) != 0)
            own_addr_seen(q, 4, arp + 14);
        *sge = hca::Sge{reinterpret_cast<std::uintptr_t>(bounce), static_cast<std::uint32_t>(t.value), q->bounce_lkey};
        return Translated::yes;
    }
    if (et != wire::kEtherTypeIPv6 || m->nb_segs != 1 || l3len <= 40 || l3[6] != wire::kIpProtoIcmpv6)
        return Translated::no;
    auto t = wire::nd_translate(wire::Bytes(l3, l3len), wire::MutBytes(bounce, q->slot_size),
                                wire::NdDirection::eth_to_ib, wire::AddrMapper{&cx, own_hw, no_hw_to_mac});
    if (!t.ok() && t.err == wire::Error::not_nd)
        return Translated::no;
    if (!t.ok() || t.value > fp->mtu) {
        ++(t.ok() ? q->st.too_big : q->st.translate_errors);
        return Translated::dropped;
    }
    ++q->st.nd_translated;
    static constexpr std::uint8_t kUnspecified[16] = {};
    if (std::memcmp(l3 + 8, kUnspecified, 16) != 0)  // (duplicate address detection sends from ::)
        own_addr_seen(q, 6, l3 + 8);
    *sge = hca::Sge{reinterpret_cast<std::uintptr_t>(bounce), static_cast<std::uint32_t>(t.value), q->bounce_lkey};
    return Translated::yes;
}

// --- IP multicast membership ---

// The IGMP/MLD reports the application's IP stack sends (the kernel behind a
// tap, or its own) name the groups it wants whole, which a multicast MAC
// cannot: the control thread joins (full member) or leaves their MGIDs. The
// report itself is sent on as any frame. Only reports whose headers are in
// the first segment are read.
[[gnu::noinline, gnu::cold]] void snoop_report(TxQueue *q, const std::uint8_t *l3, std::uint32_t len,
                                                std::uint16_t et) {
    wire::Result<wire::GroupChanges> r;
    std::uint8_t family;
    if (et == wire::kEtherTypeIPv4) {
        const L3Info i = parse_l3(l3, len, et);
        if (!i.l4off)
            return;
        r = wire::parse_igmp(wire::Bytes(l3 + i.l4off, i.l4len));
        family = 4;
    } else if (et == wire::kEtherTypeIPv6) {
        const L3Info i = parse_l3(l3, len, et);
        if (!i.l4off || i.proto != wire::kIpProtoIcmpv6)
            return;
        r = wire::parse_mld(wire::Bytes(l3 + i.l4off, i.l4len));
        family = 6;
    } else {
        return;
    }
    if (!r.ok()) {
        if (r.err != wire::Error::not_multicast && r.err != wire::Error::not_nd)
            ++q->st.mcast_report_errors;
        return;
    }
    for (unsigned k = 0; k < r.value.n; ++k) {
        const wire::GroupChange &c = r.value.change[k];
        Request ask{};
        ask.kind = c.join ? RequestKind::ip_join : RequestKind::ip_leave;
        ask.family = family;
        std::memcpy(ask.gid, c.group.data(), 16);
        push_request(q->fp, ask);
        ++q->st.mcast_reports;
    }
}

// Per frame, two byte compares: only IGMP, or IPv6 with a hop-by-hop header
// or ICMPv6 next (MLD comes with a router alert; other ICMPv6 may come
// without), is looked at further (out of line: the big result stays off the
// fast path's stack).
inline void snoop_membership(TxQueue *q, const std::uint8_t *l3, std::uint32_t len, std::uint16_t et) {
    if (et == wire::kEtherTypeIPv4) {
        if (len < sizeof(rte_ipv4_hdr) || l3[9] != wire::kIpProtoIgmp)
            return;
    } else if (et == wire::kEtherTypeIPv6) {
        if (len < sizeof(rte_ipv6_hdr) || (l3[6] != kIpv6HopByHop && l3[6] != wire::kIpProtoIcmpv6))
            return;
    } else {
        return;
    }
    snoop_report(q, l3, len, et);
}

// --- work requests ---

// Take work-request id `id` (the last of free_ids) and add its WR (gather
// list sg[0..nsge), `bytes` on the wire) to the batch; `owned` (or none) is
// freed when it completes.
void add_wr(TxQueue *q, TxBatch &b, rte_mbuf *owned, std::uint32_t id, std::uint32_t nsge, const Dest &d,
            std::uint32_t bytes, const hca::Sge *sg = nullptr) {
    q->free_ids.pop_back();
    q->inflight[id] = owned;
    b.wr[b.n] = hca::SendWr{std::uint64_t{q->queue_id} << 32 | id, sg ? sg : b.sge[b.n], nsge, d.ah, d.qpn,
                             hca::kUseQpQkey, true};
    b.rc[b.n] = d.rc;
    b.any_rc |= d.rc != nullptr;
    ++b.n;
    ++q->st.packets;
    q->st.bytes += bytes;
    if (d.rc) {
        ++q->st.cm_packets;
        q->st.cm_bytes += bytes;
    }
}

// TSO: m (a TCP frame marked RTE_MBUF_F_TX_TCP_SEG, link header of l2_hdr
// bytes) leaves as MTU-sized segments, one work request each: the segment's
// headers in its WR's bounce slot (IPoIB header, IP, TCP, fixed for the
// segment), its payload gathered from the mbuf where it lies (copied behind
// the headers when it spans more pieces than a gather list holds). The
// mbuf goes with the last WR: the sends before it complete first (a send
// queue completes in order, and no provider reads a send's memory after
// posting it). All segments or none: no_room if the batch or the queue's
// work-request ids cannot take them now.
TxResult tx_tso(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint32_t l2_hdr, std::uint16_t et, const Dest &d) {
    TsoPlan p;
    const std::uint32_t mtu = d.rc ? std::min<std::uint32_t>(q->fp->mtu, d.rc_mtu - wire::kEncapLen) : q->fp->ud_mtu;
    if (!tso_plan(m, l2_hdr, static_cast<std::uint16_t>(mtu), &p) || p.nseg > kBurstMax || p.nseg > q->inflight.size()) {
        ++q->st.tso_bad;
        return TxResult::dropped;
    }
    if (b.n + p.nseg > kBurstMax || q->free_ids.size() < p.nseg)
        return TxResult::no_room;
    const std::uint32_t hlen = wire::kEncapLen + p.hdr;
    for (std::uint32_t k = 0; k < p.nseg; ++k) {
        const std::uint32_t id = q->free_ids.back();
        const std::uint32_t off = p.l3off + p.hdr + k * p.mss;
        const std::uint32_t seglen = std::min(p.mss, p.payload - k * p.mss);
        std::uint8_t *slot = q->bounce.data() + std::size_t{id} * q->slot_size;
        wire::write_encap(wire::MutBytes(slot, wire::kEncapLen), et);
        std::memcpy(slot + wire::kEncapLen, rte_pktmbuf_mtod_offset(m, const std::uint8_t *, p.l3off), p.hdr);
        if (!tso_segment_header(slot + wire::kEncapLen, p, k, seglen, m, m->l3_len)) {
            // The chain is shorter than pkt_len says: take back the segments added.
            for (std::uint32_t j = 0; j < k; ++j) {
                const auto back = static_cast<std::uint32_t>(b.wr[--b.n].wr_id);
                q->free_ids.push_back(back);
                --q->st.packets;
            }
            q->st.bytes -= std::uint64_t{k} * (hlen - wire::kEncapLen) + std::uint64_t{k} * p.mss;
            ++q->st.tso_bad;
            return TxResult::dropped;
        }
        hca::Sge *sg = b.sge[b.n];
        std::uint32_t nsge = 0;
        sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(slot), hlen, q->bounce_lkey};
        // The payload's pieces in the chain.
        std::uint32_t skip = off, left = seglen;
        const rte_mbuf *s = m;
        while (s && skip >= s->data_len) {
            skip -= s->data_len;
            s = s->next;
        }
        for (; s && left && nsge < hca::kMaxSendSge; s = s->next, skip = 0) {
            const std::uint32_t n = std::min<std::uint32_t>(s->data_len - skip, left);
            const auto at = rte_pktmbuf_mtod_offset(s, std::uintptr_t, skip);
            sg[nsge++] = hca::Sge{at, n, data_lkey(q, at, n)};
            left -= n;
        }
        if (left) {  // more pieces than the gather list holds: copy the payload behind the headers
            rte_pktmbuf_read(m, off, seglen, slot + hlen);
            nsge = 1;
            sg[0].length = hlen + seglen;
        }
        add_wr(q, b, k + 1 == p.nseg ? m : nullptr, id, nsge, d, hlen - wire::kEncapLen + seglen);
    }
    ++q->st.tso_frames;
    q->st.tso_segments += p.nseg;
    return TxResult::sent;
}

// Connected mode: m (an Ethernet frame, its checksums done) is longer than
// its datagram destination takes. IPv4 without DF: cut into fragments of the
// datagram MTU (DPDK's ip_frag: each a header of its own and the payload
// where it lies), sent as one WR each, all or none (no_room when the burst
// or the queue's ids cannot take them). Else: an ICMP "fragmentation
// needed" / ICMPv6 "packet too big" to the application (pmtu_report).
TxResult tx_too_big(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint16_t et, const Dest &d) {
    PortData *fp = q->fp;
    const std::uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, kEthHdr);
    const std::uint32_t l3len = m->pkt_len - kEthHdr;
    const bool v4 = et == wire::kEtherTypeIPv4 && m->data_len >= kEthHdr + sizeof(rte_ipv4_hdr);
    const bool df = v4 && (wire::load_be16(l3 + 6) & RTE_IPV4_HDR_DF_FLAG);
    if (!v4 || df || !fp->frag_direct) {
        ++q->st.too_big;
        pmtu_report(q, m, et, fp->ud_mtu);
        return TxResult::dropped;
    }
    const std::uint32_t ihl = (l3[0] & 0xf) * 4u;
    const std::uint32_t per = (fp->ud_mtu - ihl) & ~7u;
    const std::uint32_t nfrag = ihl < sizeof(rte_ipv4_hdr) || l3len <= ihl ? 0 : (l3len - ihl + per - 1) / per;
    if (!nfrag || nfrag > kBurstMax) {
        ++q->st.too_big;
        return TxResult::dropped;
    }
    if (b.n + nfrag > kBurstMax || q->free_ids.size() < nfrag)
        return TxResult::no_room;
    rte_mbuf *frags[kBurstMax];
    rte_pktmbuf_adj(m, kEthHdr);
    const int n = rte_ipv4_fragment_packet(m, frags, kBurstMax, fp->ud_mtu, fp->frag_direct, fp->frag_indirect);
    if (n <= 0 || static_cast<std::uint32_t>(n) > q->free_ids.size()) {
        for (int k = 0; k < n; ++k)
            rte_pktmbuf_free(frags[k]);
        ++q->st.frag_errors;
        return TxResult::dropped;
    }
    rte_pktmbuf_free(m);  // (its data stays, referred to by the fragments until they complete)
    for (int k = 0; k < n; ++k) {
        rte_mbuf *f = frags[k];
        // ip_frag leaves each fragment's header checksum 0, for hardware to fill.
        auto *iph = rte_pktmbuf_mtod(f, rte_ipv4_hdr *);
        iph->hdr_checksum = 0;
        iph->hdr_checksum = rte_ipv4_cksum(iph);
        const std::uint32_t id = q->free_ids.back();
        wire::write_encap(wire::MutBytes(q->hdr[id].data(), wire::kEncapLen), wire::kEtherTypeIPv4);
        hca::Sge *sg = b.sge[b.n];
        std::uint32_t nsge = 0;
        sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(q->hdr[id].data()), wire::kEncapLen, q->hdr_lkey};
        for (rte_mbuf *s = f; s && nsge < hca::kMaxSendSge; s = s->next) {
            const auto at = rte_pktmbuf_mtod(s, std::uintptr_t);
            sg[nsge++] = hca::Sge{at, s->data_len, data_lkey(q, at, s->data_len)};
        }
        add_wr(q, b, f, id, nsge, d, f->pkt_len + kEthHdr);
    }
    ++q->st.frag_datagrams;
    q->st.frag_fragments += static_cast<std::uint32_t>(n);
    // Counted as sent per fragment (add_wr): the datagram itself is not one more.
    return TxResult::sent;
}

// Ethernet emulation: one Ethernet frame.
TxResult tx_eth(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry) {
    PortData *fp = q->fp;
    if (m->data_len < kEthHdr) {
        ++q->st.errors;
        return TxResult::dropped;
    }
    std::uint8_t *frame = rte_pktmbuf_mtod(m, std::uint8_t *);
    const std::uint16_t et = rte_be_to_cpu_16(reinterpret_cast<const rte_ether_hdr *>(frame)->ether_type);
    if (!wire::ethertype_allowed(et)) {
        ++q->st.unsupported_ethertype;
        return TxResult::dropped;
    }
    const std::uint32_t l3len = m->pkt_len - kEthHdr;
    const bool tso = m->ol_flags & RTE_MBUF_F_TX_TCP_SEG;
    if (tso) {
        if (et != wire::kEtherTypeIPv4 && et != wire::kEtherTypeIPv6) {
            ++q->st.tso_bad;
            return TxResult::dropped;
        }
        Dest d;
        if (const TxResult r = eth_dest(q, m, frame, l3len, now, retry, &d); r != TxResult::sent)
            return r;
        return tx_tso(q, b, m, kEthHdr, et, d);
    }
    if (l3len > fp->mtu) {
        ++q->st.too_big;
        return TxResult::dropped;
    }
    if (!retry)
        snoop_membership(q, frame + kEthHdr, m->data_len - kEthHdr, et);
    Dest d;
    if (const TxResult r = eth_dest(q, m, frame, l3len, now, retry, &d); r != TxResult::sent)
        return r;
    // Checksums the application offloaded: computed, unless the frame goes
    // over a connection that agreed on "IB CRC as checksum" (then the
    // IPoIB header says which were left out).
    std::uint16_t skipped = 0;
    if (d.icrc && (m->ol_flags & (RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_L4_MASK))) {
        skipped = static_cast<std::uint16_t>(((m->ol_flags & RTE_MBUF_F_TX_IP_CKSUM) ? kEncapIpCksumSkipped : 0) |
                                             ((m->ol_flags & RTE_MBUF_F_TX_L4_MASK) ? kEncapL4CksumSkipped : 0));
        ++q->st.cm_cksum_skipped;
    } else if (!tx_cksum(m)) {
        ++q->st.bad_offload;
        return TxResult::dropped;
    }
    // Connected mode: a datagram takes what the broadcast group allows, a
    // connection what its peer receives. Longer: fragmented (IPv4 without
    // DF) or answered with ICMP (ipoib_pmtu.cpp), as Linux emulates PMTU.
    if (d.rc ? l3len + wire::kEncapLen > d.rc_mtu : l3len > fp->ud_mtu) {
        if (!d.rc && fp->connected)
            return tx_too_big(q, b, m, et, Dest{d.ah, d.qpn});
        ++q->st.too_big;
        return TxResult::dropped;
    }

    const std::uint32_t id = q->free_ids.back();
    std::uint8_t *bounce = q->bounce.data() + std::size_t{id} * q->slot_size;
    wire::write_encap(wire::MutBytes(q->hdr[id].data(), wire::kEncapLen), et);
    q->hdr[id][2] = static_cast<std::uint8_t>(skipped >> 8);
    q->hdr[id][3] = static_cast<std::uint8_t>(skipped);
    hca::Sge *sg = d.rc ? &q->cm_sge[std::size_t{static_cast<unsigned>(b.n)} * kCmSendSge] : b.sge[b.n];
    const std::uint32_t max_sge = d.rc ? q->fp->cm_send_sge : hca::kMaxSendSge;
    std::uint32_t nsge = 0;
    sg[nsge++] = hca::Sge{reinterpret_cast<std::uintptr_t>(q->hdr[id].data()), wire::kEncapLen, q->hdr_lkey};
    switch (translate(q, m, et, bounce, now, &sg[nsge])) {
    case Translated::dropped: return TxResult::dropped;
    case Translated::yes:  // (ARP and ND go as datagrams in connected mode too)
        ++nsge;
        d.rc = nullptr;
        break;
    case Translated::no:
        if (d.rc && m->nb_segs + 1u > max_sge) {  // (no bounce slot holds a connection's 64 KB)
            ++q->st.cm_too_many_segs;
            return TxResult::dropped;
        }
        if (m->nb_segs + 1u > max_sge) {
            // Too many segments for one gather list: linearise. The payload may
            // already be contiguous (empty trailing segments): then it is not
            // copied and the returned pointer is where it is.
            const void *flat = rte_pktmbuf_read(m, kEthHdr, l3len, bounce);
            if (!flat) {
                ++q->st.errors;
                return TxResult::dropped;
            }
            q->st.linearized += flat == bounce;
            const auto at = reinterpret_cast<std::uintptr_t>(flat);
            sg[nsge++] = hca::Sge{at, l3len, flat == bounce ? q->bounce_lkey : data_lkey(q, at, l3len)};
            break;
        }
        const auto at = reinterpret_cast<std::uintptr_t>(frame + kEthHdr);
        const auto len = static_cast<std::uint32_t>(m->data_len - kEthHdr);
        sg[nsge++] = hca::Sge{at, len, data_lkey(q, at, len)};
        for (rte_mbuf *s = m->next; s; s = s->next) {
            const auto sat = rte_pktmbuf_mtod(s, std::uintptr_t);
            sg[nsge++] = hca::Sge{sat, s->data_len, data_lkey(q, sat, s->data_len)};
        }
        break;
    }
    add_wr(q, b, m, id, nsge, d, m->pkt_len, sg);
    IPOIB_DATA_LOG(DEBUG, "tx: EtherType 0x%04x, %u bytes to LID %u QPN 0x%06x%s", et, m->pkt_len - kEthHdr,
                   d.ah->attr().dlid, d.qpn, d.rc ? " (connection)" : "");
    return TxResult::sent;
}

// Native mode: the frame already carries the IPoIB header; the address is in the dynfield.
TxResult tx_native(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry) {
    PortData *fp = q->fp;
    auto et = wire::parse_encap(wire::Bytes(rte_pktmbuf_mtod(m, const std::uint8_t *), m->data_len));
    if (!et.ok()) {
        ++q->st.unsupported_ethertype;
        return TxResult::dropped;
    }
    const bool tso = m->ol_flags & RTE_MBUF_F_TX_TCP_SEG;
    if (!tso && m->pkt_len - wire::kEncapLen > fp->mtu) {
        ++q->st.too_big;
        return TxResult::dropped;
    }
    if (!tso && !tx_cksum(m, wire::kEncapLen)) {
        ++q->st.bad_offload;
        return TxResult::dropped;
    }
    const auto *a = rte_pmd_ipoib_addr(m, fp->dynfield);
    const wire::HwAddr hw = wire::parse_hwaddr(wire::Bytes(a->hwaddr, RTE_PMD_IPOIB_HWADDR_LEN)).value;
    const wire::Gid gid = hw.gid();
    Dest d;
    TxResult r;
    if (hw.qpn() == hca::kMulticastQpn) {
        // Not joined yet: held under the group's MGID folded like a GUID while we join.
        r = group(q, m, gid, wire::mac_from_guid(wire::guid_from_gid(gid)), now, retry, &d);
    } else {
        const wire::Mac key = gid == wire::Gid{} ? lidqpn_mac(a->lid, hw.qpn())
                                                 : wire::mac_from_guid(wire::guid_from_gid(gid));
        auto make_ask = [&] {
            Request ask{};
            ask.kind = RequestKind::resolve;
            std::memcpy(ask.gid, gid.raw.data(), 16);
            std::memcpy(ask.mac, key.raw.data(), 6);
            ask.lid = a->lid;
            ask.qpn = hw.qpn();
            return ask;
        };
        r = neighbour(q, m, key, now, retry, make_ask, &d);
    }
    if (r != TxResult::sent)
        return r;
    if (tso)
        return tx_tso(q, b, m, wire::kEncapLen, et.value, d);
    if (m->nb_segs > hca::kMaxSendSge) {
        ++q->st.errors;
        return TxResult::dropped;
    }
    hca::Sge *sg = b.sge[b.n];
    std::uint32_t nsge = 0;
    for (rte_mbuf *s = m; s; s = s->next) {
        const auto at = rte_pktmbuf_mtod(s, std::uintptr_t);
        sg[nsge++] = hca::Sge{at, s->data_len, data_lkey(q, at, s->data_len)};
    }
    add_wr(q, b, m, q->free_ids.back(), nsge, d, m->pkt_len);
    return TxResult::sent;
}

// Frames that waited for their destination: send the resolved, drop the
// hopeless (failed, or waiting for too long), keep the rest.
void flush_pending(TxQueue *q, TxBatch &b, std::uint64_t now) {
    if (!q->npending)
        return;
    Pending waiting[kPendingMax];
    const std::uint32_t nw = q->npending;
    std::memcpy(waiting, q->pending, sizeof(Pending) * nw);
    q->npending = 0;
    for (std::uint32_t k = 0; k < nw; ++k) {
        const Pending &pe = waiting[k];
        if (now - pe.since_ms > kHoldTimeoutMs) {
            ++q->st.unresolved_drop;
            rte_pktmbuf_free(pe.m);
            continue;
        }
        if (q->free_ids.empty() || b.n >= static_cast<int>(kPendingFlushBatch)) {
            q->pending[q->npending++] = pe;
            continue;
        }
        switch (tx_frame(q, b, pe.m, now, true)) {
        case TxResult::sent: break;
        case TxResult::dropped: rte_pktmbuf_free(pe.m); break;
        case TxResult::queued:
        case TxResult::no_room: q->pending[q->npending++] = pe; break;
        }
    }
}

// WRs wr[0..n) were given to the HCA, which took `posted` of them (<0: none):
// count those, free and count the rest.
void posted_or_freed(TxQueue *q, const hca::SendWr *wr, int n, int posted) {
    if (posted > 0)
        q->posted.store(q->posted.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(posted),
                        std::memory_order_release);
    for (int k = posted < 0 ? 0 : posted; k < n; ++k) {
        const auto id = static_cast<std::uint32_t>(wr[k].wr_id);
        rte_pktmbuf_free(q->inflight[id]);
        q->inflight[id] = nullptr;
        q->free_ids.push_back(id);
        ++q->st.errors;
    }
}

// Connected mode: the batch's datagrams in one post, its connection sends
// in one post per run of consecutive WRs to one connection (in order per
// destination, as each post keeps its WRs' order).
void post_mixed(TxQueue *q, hca::Qp *qp, TxBatch &b) {
    hca::SendWr ud[kBurstMax];
    int nud = 0;
    for (int k = 0; k < b.n;) {
        if (!b.rc[k]) {
            ud[nud++] = b.wr[k++];
            continue;
        }
        int e = k + 1;
        while (e < b.n && b.rc[e] == b.rc[k])
            ++e;
        posted_or_freed(q, b.wr + k, e - k, b.rc[k]->post_send(b.wr + k, e - k));
        k = e;
    }
    if (nud)
        posted_or_freed(q, ud, nud, qp->post_send_queue(q->sq, ud, nud));
}

// Post the batch; WRs the HCA did not take are freed and counted.
void post_batch(TxQueue *q, hca::Qp *qp, TxBatch &b) {
    if (!b.n)
        return;
    if (b.any_rc) [[unlikely]]
        post_mixed(q, qp, b);
    else
        posted_or_freed(q, b.wr, b.n, qp->post_send_queue(q->sq, b.wr, b.n));
    b.n = 0;
    b.any_rc = false;
}

} // namespace

TxResult tx_frame(TxQueue *q, TxBatch &b, rte_mbuf *m, std::uint64_t now, bool retry) noexcept {
    return q->fp->l2 == L2Mode::eth ? tx_eth(q, b, m, now, retry) : tx_native(q, b, m, now, retry);
}

// Completions of q's send queue. Where TX queues share it (q->lock is the
// send queue's, held), each completion goes back to the queue that posted it.
void tx_flush_completions(TxQueue *q) noexcept {
    hca::Wc wc[kBurstMax];
    rte_mbuf *done[kBurstMax];
    hca::Cq *cq = q->fp->tx_cqs[q->sq];
    int n;
    while ((n = cq->poll(wc, kBurstMax)) > 0) {
        unsigned nd = 0;
        for (int i = 0; i < n; ++i) {
            const auto qi = static_cast<std::uint32_t>(wc[i].wr_id >> 32);
            TxQueue *o = qi == q->queue_id ? q : (qi < hca::kMaxQueues ? q->fp->txqs[qi] : nullptr);
            const auto id = static_cast<std::uint32_t>(wc[i].wr_id);
            if (!o || id >= o->inflight.size()) [[unlikely]]
                continue;  // not a work request of ours: nothing to give back
            if (wc[i].status != hca::WcStatus::success)
                ++o->st.errors;
            done[nd++] = o->inflight[id];  // (null for a TSO segment but the last)
            o->inflight[id] = nullptr;
            o->free_ids.push_back(id);
            o->completed.store(o->completed.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        }
        rte_pktmbuf_free_bulk(done, nd);  // before the next poll: no mbuf is freed twice or late
    }
}

// Called from rx_burst: frames waiting for a neighbour must leave once it is
// resolved even if the application sends nothing more. The TX queue may
// belong to another lcore, hence the per-burst try-lock.
void tx_service_pending(TxQueue *q) noexcept {
    if (!q->npending || q->lock->test_and_set(std::memory_order_acquire))
        return;
    hca::Qp *qp = q->fp->qp_ready.load(std::memory_order_acquire);
    if (qp && q->fp->link_up.load(std::memory_order_acquire)) {
        TxBatch b;
        flush_pending(q, b, now_ms());
        post_batch(q, qp, b);
        tx_flush_completions(q);
    }
    q->bursts.store(q->bursts.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    q->lock->clear(std::memory_order_release);
}

std::uint16_t tx_burst(void *queue, rte_mbuf **pkts, std::uint16_t nb) noexcept {
    auto *q = static_cast<TxQueue *>(queue);
    PortData *fp = q->fp;
    hca::Qp *qp = fp->qp_ready.load(std::memory_order_acquire);
    if (!qp || !fp->link_up.load(std::memory_order_acquire)) {
        for (std::uint16_t i = 0; i < nb; ++i)
            rte_pktmbuf_free(pkts[i]);
        q->st.link_down_drop += nb;
        return nb;
    }
    while (q->lock->test_and_set(std::memory_order_acquire))
        rte_pause();  // rx_burst of another lcore is flushing our held frames (or a TX queue sharing our send queue sends)
    tx_flush_completions(q);
    const std::uint64_t now = now_ms();
    TxBatch b;
    flush_pending(q, b, now);
    // Prefetch in two stages: a frame's data kTxPrefetchData frames before
    // it is sent, its neighbour's slot (Ethernet emulation: found by the
    // destination MAC, the first bytes of that data, loaded by then)
    // kTxPrefetchNeigh frames before, so a lookup in a table bigger than the
    // caches rarely waits for memory.
    const bool by_mac = fp->l2 == L2Mode::eth;
    for (std::uint16_t k = 0; k < nb && k < kTxPrefetchData; ++k)
        rte_prefetch0(rte_pktmbuf_mtod(pkts[k], void *));
    for (std::uint16_t k = 0; by_mac && k < nb && k < kTxPrefetchNeigh; ++k)
        fp->neigh.prefetch(rte_pktmbuf_mtod(pkts[k], const std::uint8_t *));
    std::uint16_t i = 0;
    for (; i < nb && !q->free_ids.empty() && b.n < static_cast<int>(kBurstMax); ++i) {
        if (i + kTxPrefetchData < nb)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kTxPrefetchData], void *));
        if (by_mac && i + kTxPrefetchNeigh < nb)
            fp->neigh.prefetch(rte_pktmbuf_mtod(pkts[i + kTxPrefetchNeigh], const std::uint8_t *));
        const TxResult r = tx_frame(q, b, pkts[i], now, false);
        if (r == TxResult::no_room)
            break;  // a TSO frame's segments do not fit what is left: not taken
        if (r == TxResult::dropped)
            rte_pktmbuf_free(pkts[i]);
    }
    post_batch(q, qp, b);
    tx_flush_completions(q);
    q->bursts.store(q->bursts.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    q->lock->clear(std::memory_order_release);
    return i;
}

} // namespace ipoib::pmd
