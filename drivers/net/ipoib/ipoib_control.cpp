// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib control path: HCA sharing, the control thread, and everything it
// does for a port (always under Hca::mu; see the locking rules in ipoib_port.hpp).
#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_ring_elem.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "ipoib_control.hpp"
#include "ipoib_rxbuf.hpp"
#include "ipoib_rxtx.hpp"

namespace ipoib::pmd {

std::uint64_t now_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

std::uint64_t now_us() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

namespace {

std::mutex g_mu;
std::vector<Hca *> g_hcas;

// --- address handles and neighbours ---

// The address handle for (LID, SL[, GID]), shared by every user. On RoCE the
// GID is the address and there are no LIDs: no GID, no handle.
hca::Ah *get_ah(Port *p, std::uint16_t dlid, std::uint8_t sl, const wire::Gid *dgid, std::uint8_t hop) {
    if (p->fp.roce) {
        if (!dgid || *dgid == wire::Gid{})
            return nullptr;
        dlid = 0;
    }
    for (auto &a : p->ahs) {
        const auto &at = a->attr();
        if (at.dlid == dlid && at.sl == sl && at.is_global == (dgid != nullptr) && (!dgid || at.dgid == *dgid))
            return a.get();
    }
    hca::AhAttr at;
    at.dlid = dlid;
    at.sl = sl;
    at.port_num = p->cfg.port;
    if (dgid) {
        at.is_global = true;
        at.dgid = *dgid;
        at.hop_limit = hop;
        at.sgid_index = p->gid_index;
    }
    auto ah = p->hca->ctx->create_ah(at);
    if (!ah)
        return nullptr;
    p->ahs.push_back(std::move(ah));
    return p->ahs.back().get();
}

constexpr std::uint8_t kUnicastHopLimit = 64;

// A neighbour or sender the table had no room for (neigh_max reached, or its
// probe window full): counted always (xstat neigh_table_full), logged at most
// every kTableFullLogMs.
void count_table_full(Port *p, const char *what, const wire::Mac &mac) {
    ++p->table_full;
    const std::uint64_t now = now_ms();
    if (p->table_full_logged_ms && now - p->table_full_logged_ms < kTableFullLogMs)
        return;
    p->table_full_logged_ms = now;
    IPOIB_LOG(WARNING, "%s: neighbour table full (%u of neigh_max=%u held, %" PRIu64 " refused so far): "
              "%s %02x:%02x:%02x:%02x:%02x:%02x not recorded", p->name.c_str(), p->fp.neigh.size(),
              p->fp.neigh.capacity(), p->table_full, what, mac.raw[0], mac.raw[1], mac.raw[2], mac.raw[3],
              mac.raw[4], mac.raw[5]);
}

void neigh_set(Port *p, const wire::Mac &mac, NeighState state, std::uint16_t dlid, std::uint32_t qpn,
               const wire::Gid &gid, std::uint8_t sl, bool is_static) {
    Neigh *n = p->fp.neigh.find_or_add(mac);
    if (!n) {
        count_table_full(p, "neighbour", mac);
        return;
    }
    // RoCE: the neighbour is addressed by its GID (a GRH), InfiniBand: by its LID.
    hca::Ah *ah = state == NeighState::resolved
                      ? get_ah(p, dlid, sl, p->fp.roce ? &gid : nullptr, kUnicastHopLimit)
                      : nullptr;
    const std::uint64_t now = now_ms();
    p->fp.neigh.write(n, [&](Neigh &e) {
        if (state == NeighState::failed) {  // ask again later, later after each failure
            e.backoff_ms = e.backoff_ms ? std::min<std::uint32_t>(2 * e.backoff_ms, kResolveBackoffMaxMs)
                                        : kResolveBackoffMinMs;
            e.retry_ms = now + e.backoff_ms;
        } else if (state == NeighState::resolved) {
            e.backoff_ms = 0;
        }
        e.state = state;
        e.dlid = dlid;
        e.qpn = qpn;
        e.gid = gid;
        e.sl = sl;
        e.ah = ah;
        e.is_static = e.is_static || is_static;
        if (!e.used_ms.load(std::memory_order_relaxed))
            e.used_ms.store(now, std::memory_order_relaxed);  // created: ageing counts from now
    });
}

void age_neighbours(Port *p, std::uint64_t now) {
    const std::uint64_t limit = std::uint64_t{p->cfg.neigh_timeout_s} * 1000;
    p->fp.neigh.for_each([&](Neigh &n) {
        if (n.is_static)
            return;
        const std::uint64_t last = n.used_ms.load(std::memory_order_relaxed);
        if (now > last && now - last > limit) {
            p->fp.neigh.unindex(n.dlid, n.qpn);
            p->fp.neigh.remove(&n);
        }
    });
}

// Retire the address handles no table refers to, and free the retired ones
// no send can use any more (see RetiredAh).
void reap_ahs(Port *p) {
    std::vector<const hca::Ah *> used{p->fp.bcast_ah};
    p->fp.neigh.for_each([&](const Neigh &n) { used.push_back(n.ah); });
    p->fp.groups.for_each_ah([&](const hca::Ah *a) { used.push_back(a); });
    std::sort(used.begin(), used.end());
    for (auto it = p->ahs.begin(); it != p->ahs.end();) {
        if (std::binary_search(used.begin(), used.end(), it->get())) {
            ++it;
            continue;
        }
        RetiredAh r{std::move(*it), {}, false};
        for (const TxQueue *q : p->txq)
            r.mark.push_back(q ? q->bursts.load(std::memory_order_acquire) : 0);
        p->dead_ahs.push_back(std::move(r));
        it = p->ahs.erase(it);
    }
    std::erase_if(p->dead_ahs, [p](RetiredAh &r) {
        const std::size_t nq = std::min(r.mark.size(), p->txq.size());
        if (!r.bursts_ended) {
            for (std::size_t i = 0; i < nq; ++i)
                if (const TxQueue *q = p->txq[i];
                    q && q->lock->test(std::memory_order_acquire) && q->bursts.load(std::memory_order_acquire) == r.mark[i])
                    return false;  // may still be in a burst that read the handle
            for (std::size_t i = 0; i < nq; ++i)
                r.mark[i] = p->txq[i] ? p->txq[i]->posted.load(std::memory_order_acquire) : 0;
            r.bursts_ended = true;
        }
        for (std::size_t i = 0; i < nq; ++i)
            if (const TxQueue *q = p->txq[i]; q && q->completed.load(std::memory_order_acquire) < r.mark[i])
                return false;  // a send that may use it is not complete yet
        return true;  // freed
    });
}

// --- the UD QP, link state, groups ---

// Our own key (the LID, or on RoCE the folded port GID) as the receive path compares senders with it.
void refresh_own_key(Port *p) {
    hca::PortAttr pa;
    p->hca->ctx->query_port(p->cfg.port, &pa);
    p->fp.roce = pa.link_layer == hca::LinkLayer::ethernet;
    p->fp.lid = p->fp.roce ? gid_key(p->hca->cp.port_gid(p->cfg.port).raw.data()) : pa.lid;
}

// The QP's receives: rxq_size mbufs of each RX queue's own pool (receiving
// into mbufs, Port::rx_mbufs), or the driver's receive pool (ipoib_rxbuf.hpp).
bool post_receive_buffers(Port *p) {
    p->qp_rx_mbufs = p->rx_mbufs;
    if (!p->rx_mbufs)
        return rxbuf_pool_create(p, p->rx_queues, p->cfg.rxq_size);
    for (std::uint32_t q = 0; q < p->rx_queues; ++q) {
        std::string err;
        RxQueue *rq = p->rxq[q];
        if (!rx_post_mbufs(rq, p->qp.get(), rq->nb_desc ? rq->nb_desc : p->cfg.rxq_size, &err)) {
            IPOIB_LOG(ERR, "%s: %s", p->name.c_str(), err.c_str());
            return false;
        }
    }
    return true;
}

// Sends a send queue of the next QP holds: its TX queues' (several when
// they share it) outstanding sends, txq_size each.
std::uint32_t send_queue_depth(const Port *p) {
    return p->cfg.txq_size * ((p->tx_queues + p->send_queues - 1) / p->send_queues);
}

// The completion queues of the next QP: one per receive queue (with
// completion events when the application asked for RX interrupts), one per
// send queue (send_queue_depth).
bool make_cqs(Port *p) {
    hca::Context &ctx = *p->hca->ctx;
    p->rx_cqs.clear();
    p->tx_cqs.clear();
    for (std::uint32_t i = 0; i < p->rx_queues; ++i) {
        p->rx_cqs.push_back(p->rx_events ? ctx.create_event_cq(p->cfg.rxq_size) : ctx.create_cq(p->cfg.rxq_size));
        if (!p->rx_cqs.back())
            break;
    }
    for (std::uint32_t i = 0; i < p->send_queues && p->rx_cqs.size() == p->rx_queues && p->rx_cqs.back(); ++i) {
        p->tx_cqs.push_back(ctx.create_cq(static_cast<int>(send_queue_depth(p))));
        if (!p->tx_cqs.back())
            break;
    }
    if (p->tx_cqs.size() == p->send_queues && p->tx_cqs.back())
        return true;
    IPOIB_LOG(ERR, "%s: cannot create its completion queues: %s", p->name.c_str(), ctx.last_error().c_str());
    p->rx_cqs.clear();
    p->tx_cqs.clear();
    return false;
}

// The UD QP with the application's queues: one receive queue per RX queue
// (several: the HCA spreads by RSS), one send queue per TX queue up to the
// HCA's send queues per QP (prepare_queues), each with its own CQ.
bool ensure_qp(Port *p) {
    if (p->qp)
        return true;
    hca::Context &ctx = *p->hca->ctx;
    const std::uint32_t nrq = p->rx_queues, nsq = p->send_queues;
    if ((p->rx_cqs.empty() || p->tx_cqs.empty()) && !make_cqs(p))
        return false;
    std::vector<hca::Cq *> rcq, scq;
    for (auto &c : p->rx_cqs)
        rcq.push_back(c.get());
    for (auto &c : p->tx_cqs)
        scq.push_back(c.get());
    hca::QpInit init;
    init.send_cq = scq[0];
    init.recv_cq = rcq[0];
    init.port_num = p->cfg.port;
    init.pkey_index = static_cast<std::uint16_t>(p->iface->pkey_index());
    init.qkey = p->qkey;
    init.max_recv_wr = p->cfg.rxq_size;
    init.max_send_wr = send_queue_depth(p);
    init.num_recv_queues = nrq;
    init.num_send_queues = nsq;
    init.recv_cqs = rcq.data();
    init.send_cqs = scq.data();
    init.rss = p->rss;
    p->qp = ctx.create_ud_qp(init);
    if (!p->qp || !post_receive_buffers(p)) {
        IPOIB_LOG(ERR, "%s: cannot create its UD QP (%u receive, %u send queues): %s", p->name.c_str(), nrq, nsq,
                  ctx.last_error().c_str());
        port_release_resources(p);
        return false;
    }
    for (std::uint32_t i = 0; i < nrq; ++i)
        p->fp.rx_cqs[i] = rcq[i];
    for (std::uint32_t i = 0; i < nsq; ++i)
        p->fp.tx_cqs[i] = scq[i];
    p->fp.qpn = p->qp->qp_num();
    const wire::Gid gid = p->hca->cp.port_gid(p->cfg.port);
    p->gid_index = static_cast<std::uint8_t>(p->hca->cp.gid_index(p->cfg.port));
    refresh_own_key(p);
    p->fp.hwaddr = wire::make_hwaddr(p->cfg.connected ? wire::kHwFlagRc : 0, p->fp.qpn, gid).value;
    IPOIB_LOG(INFO, "%s: UD QP 0x%06x (%u receive, %u send queues), address %s", p->name.c_str(), p->fp.qpn, nrq,
              nsq, wire::to_string(p->fp.hwaddr).c_str());
    return true;
}

void set_link(Port *p, bool up) {
    rte_eth_link link{};
    link.link_status = up ? RTE_ETH_LINK_UP : RTE_ETH_LINK_DOWN;
    link.link_duplex = RTE_ETH_LINK_FULL_DUPLEX;
    link.link_speed = up ? p->link_mbps.load(std::memory_order_relaxed) : RTE_ETH_SPEED_NUM_NONE;
    link.link_autoneg = RTE_ETH_LINK_FIXED;
    p->fp.link_up.store(up, std::memory_order_release);
    (up ? p->link_up_us : p->link_down_us).store(now_us(), std::memory_order_relaxed);
    rte_eth_linkstatus_set(p->dev, &link);
    // The application's callback runs from the control thread's loop once Hca::mu is released.
    if (p->dev->data->dev_conf.intr_conf.lsc)
        p->lsc_pending = true;
    IPOIB_LOG(NOTICE, "%s: link %s", p->name.c_str(), up ? "up" : "down");
}

// An IP group -> its MGID in the port's partition (from the broadcast group's).
bool ip_group_mgid(const Port *p, const std::array<std::uint8_t, 17> &g, wire::Gid *out) {
    if (!p->iface)
        return false;
    const wire::Gid &bcast = p->iface->broadcast().mgid;
    auto r = g[0] == 4 ? wire::ipv4_mcast_mgid(wire::Bytes(g.data() + 1, 4), bcast)
                       : wire::ipv6_mcast_mgid(wire::Bytes(g.data() + 1, 16), bcast);
    if (!r.ok() || r.value == bcast)
        return false;
    *out = r.value;
    return true;
}

// The IP groups the application receives, joined again once the link is up
// (after a start: the broadcast group's MGID names their partition).
void join_ip_groups(Port *p) {
    for (const auto &g : p->ip_groups) {
        wire::Gid mgid;
        if (ip_group_mgid(p, g, &mgid))
            p->iface->join(mgid);
    }
}

void on_link(Port *p, bool up) {
    if (up) {
        if (!ensure_qp(p))
            return;
        port_read_rates(p);
        refresh_own_key(p);
        if (!cm_port_up(p))
            IPOIB_LOG(WARNING, "%s: connected mode unavailable: datagrams only", p->name.c_str());
        p->fp.qp_ready.store(p->qp.get(), std::memory_order_release);
    } else {
        cm_port_down(p, false);  // (the port cannot send a DREQ: peers find out by their retries)
    }
    set_link(p, up);
    if (up)
        join_ip_groups(p);
}

// A flush (Linux ipoib's levels). Light (the SA forgot us): addresses are
// unchanged, neighbours keep their paths. Normal or heavy (port error or
// active, LID change, P_Key change): on InfiniBand every neighbour known by
// its GID, static ones included, loses its path and address handle (LIDs
// may have moved) and is resolved again on its next frame, as Linux's
// flushed paths are. The binding MAC -> GID/QPN is kept:
// it is the application's ARP cache's, which a flush does not empty; so is
// its receive index entry (frames from it keep showing its MAC; the new
// path's LID is indexed when it comes).
void on_flush(Port *p, bool light) {
    if (p->fp.roce || light)
        return;  // RoCE neighbours are addressed by GID; a light flush moves no LID
    p->fp.neigh.for_each([&](Neigh &n) {
        if (n.gid == wire::Gid{} || n.state == NeighState::failed)
            return;
        wire::Mac mac;
        std::memcpy(mac.raw.data(), n.mac, 6);
        neigh_set(p, mac, NeighState::incomplete, 0, n.qpn, n.gid, 0, false);  // dlid 0: no claim to check
        ++p->neigh_flushed;
    });
    cm_port_flush(p);  // connections on the old paths go with them (made again over the new ones)
}

constexpr std::uint8_t kMcastDefaultHopLimit = 1;

// Receiving a group takes a full or non-member join; a send-only member only
// sends to it (its QP is not attached, as Linux's is not).
bool receives(const ctrl::McMemberRecord &rec) { return rec.join_state & (ctrl::kFullMember | ctrl::kNonMember); }

void on_group(Port *p, const wire::Gid &mgid, const ctrl::McMemberRecord &rec, bool joined) {
    if (!ensure_qp(p))
        return;
    if (!joined) {
        if (receives(rec))
            p->qp->detach_mcast(mgid, rec.mlid);
        p->fp.groups.remove(mgid);
        return;
    }
    if (receives(rec) && p->qp->attach_mcast(mgid, rec.mlid) != 0)
        IPOIB_MCAST_LOG(ERR, "%s: attach to %s failed: %s", p->name.c_str(), wire::to_string(mgid).c_str(),
                        p->hca->ctx->last_error().c_str());
    hca::Ah *ah = get_ah(p, rec.mlid, rec.sl, &mgid, rec.hop_limit ? rec.hop_limit : kMcastDefaultHopLimit);
    if (!ah)
        IPOIB_MCAST_LOG(ERR, "%s: no address handle for %s: %s (frames to it are dropped)", p->name.c_str(),
                        wire::to_string(mgid).c_str(), p->hca->ctx->last_error().c_str());
    if (mgid == p->iface->broadcast().mgid) {
        p->qkey = rec.qkey;
        p->qp->set_qkey(rec.qkey);
        p->fp.ud_mtu = static_cast<std::uint16_t>((128u << rec.mtu) - wire::kEncapLen);
        p->fp.mtu = p->fp.connected ? static_cast<std::uint16_t>(kCmMtu) : p->fp.ud_mtu;
        p->fp.bcast_mgid = mgid;
        p->fp.bcast_ah = ah;
        p->bcast_mlid = rec.mlid;
        p->bcast_sl = rec.sl;
        p->dev->data->mtu = p->fp.mtu;
    } else if (!p->fp.groups.add(mgid, rec.mlid, ah)) {
        IPOIB_MCAST_LOG(ERR, "%s: more than %u groups joined: %s not usable", p->name.c_str(), kMcastSlots,
                        wire::to_string(mgid).c_str());
    }
    IPOIB_MCAST_LOG(INFO, "%s: attached to %s (MLID 0x%04x)", p->name.c_str(), wire::to_string(mgid).c_str(),
                    rec.mlid);
}

// --- requests from the fast path ---

// A sender announced its address (ARP/ND, or a RoCE GRH). Frames from its
// (key, QPN) show `mac` at once. Sending to it: on RoCE the GRH's source GID
// was checked on receive, so the claim holds; on InfiniBand a claim is no
// proof: the neighbour waits for the SA's path, which must put the GID at
// the LID the claim came from (on_path).
void learn(Port *p, const Request &r, const wire::Mac &mac, const wire::Gid &gid) {
    if (!p->fp.neigh.index(r.lid, r.qpn, mac))
        count_table_full(p, "sender", mac);
    if (Neigh *n = p->fp.neigh.find(mac); n && n->hw_flags != r.pad2[0])
        p->fp.neigh.write(n, [&](Neigh &e) { e.hw_flags = r.pad2[0]; });
    const Neigh *old = p->fp.neigh.find(mac);
    const bool same = old && old->state == NeighState::resolved && old->dlid == r.lid && old->qpn == r.qpn &&
                      old->gid == gid;
    if (same || !p->iface)
        return;
    if (p->fp.roce)
        neigh_set(p, mac, NeighState::resolved, r.lid, r.qpn, gid, p->bcast_sl, false);
    else
        neigh_set(p, mac, NeighState::incomplete, r.lid, r.qpn, gid, 0, false);  // dlid: the LID it came from
    if (Neigh *n = p->fp.neigh.find(mac); n && n->hw_flags != r.pad2[0])
        p->fp.neigh.write(n, [&](Neigh &e) { e.hw_flags = r.pad2[0]; });
    p->hca->cp.request_path(gid, p->iface->pkey(), p->cfg.port);
}

// The partition a port is in (its P_Key without the membership bit; the
// devarg's until its interface exists).
std::uint16_t partition_of(const Port *p) {
    return (p->iface ? p->iface->pkey() : p->cfg.pkey) & 0x7fff;
}

// A neighbour of that MAC known by its GID on another port of the same HCA
// and partition (Hca::mu held: the HCA's ports are ours to read).
const Neigh *sibling_neigh(const Port *p, const wire::Mac &mac) {
    for (const Port *o : p->hca->ports) {
        if (o == p || partition_of(o) != partition_of(p) || o->cfg.l2 != p->cfg.l2)
            continue;
        const Neigh *e = const_cast<Port *>(o)->fp.neigh.find(mac);
        if (e && e->state != NeighState::failed && e->gid != wire::Gid{})
            return e;
    }
    return nullptr;
}

void resolve(Port *p, const Request &r, const wire::Mac &mac, const wire::Gid &gid) {
    const Neigh *n = p->fp.neigh.find(mac);
    const std::uint16_t pkey = p->iface ? p->iface->pkey() : 0;
    if (std::memcmp(r.mac, p->fp.mac.addr_bytes, 6) == 0) {
        neigh_set(p, mac, NeighState::resolved, p->fp.lid, p->fp.qpn, p->fp.hwaddr.gid(), p->bcast_sl, false);
    } else if (is_lidqpn_mac(mac) && r.lid && !p->fp.roce) {  // RoCE: a LID is no address
        neigh_set(p, mac, NeighState::resolved, r.lid, r.qpn, wire::Gid{}, p->bcast_sl, false);
        if (Neigh *m = p->fp.neigh.find(mac); m && cm_peer_connected(p, r.lid, r.qpn))
            p->fp.neigh.write(m, [](Neigh &e) { e.hw_flags |= wire::kHwFlagRc; });
    } else if (n && n->gid != wire::Gid{}) {
        if (n->state != NeighState::resolved && p->iface)
            p->hca->cp.request_path(n->gid, pkey, p->cfg.port);
    } else if (gid != wire::Gid{}) {
        neigh_set(p, mac, NeighState::incomplete, 0, r.qpn, gid, 0, false);
        if (p->iface)
            p->hca->cp.request_path(gid, pkey, p->cfg.port);
    } else if (const Neigh *s = sibling_neigh(p, mac)) {
        // Learned by another port of this HCA in the partition (a bond's
        // other member, which received while this one was idle): the same
        // peer, reached by a path from this port, as a bond's ARP cache is shared.
        neigh_set(p, mac, NeighState::incomplete, 0, s->qpn, s->gid, 0, false);
        if (p->iface)
            p->hca->cp.request_path(s->gid, pkey, p->cfg.port);
    } else if (!n || n->state == NeighState::failed) {
        neigh_set(p, mac, NeighState::failed, 0, 0, wire::Gid{}, 0, false);  // (still) never announced itself
    }
}

// The application wants an IP group (join) or no longer (leave): a full-member
// join of its exact MGID, as Linux ipoib does for the groups its stack joins.
void ip_group(Port *p, const Request &r, bool join) {
    std::array<std::uint8_t, 17> g{};
    g[0] = r.family == 6 ? 6 : 4;
    std::memcpy(g.data() + 1, r.gid, g[0] == 6 ? 16 : 4);
    const bool known = p->ip_groups.count(g) != 0;
    if (join == known)
        return;  // a repeated report
    if (join)
        p->ip_groups.insert(g);
    else
        p->ip_groups.erase(g);
    wire::Gid mgid;
    if (!ip_group_mgid(p, g, &mgid))
        return;  // joined once the link is up (join_ip_groups)
    if (join)
        p->iface->join(mgid);
    else
        p->iface->leave(mgid);
    IPOIB_MCAST_LOG(INFO, "%s: %s %s", p->name.c_str(), join ? "receiving" : "no longer receiving",
                    wire::to_string(mgid).c_str());
}

// --- failover announcements ---

// One frame as the application would send it (Ethernet emulation), into an
// mbuf of RX queue 0's pool; the TX path translates it like the
// application's own ARP/ND.
rte_mbuf *frame_mbuf(Port *p, const std::uint8_t *f, std::uint16_t len) {
    rte_mempool *mp = !p->rxq.empty() && p->rxq[0] ? p->rxq[0]->mp : nullptr;
    rte_mbuf *m = mp ? rte_pktmbuf_alloc(mp) : nullptr;
    char *d = m ? rte_pktmbuf_append(m, len) : nullptr;
    if (!d) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    std::memcpy(d, f, len);
    return m;
}

// A gratuitous ARP (a request for its own address, RFC 5227's announcement).
rte_mbuf *garp(Port *p, const std::uint8_t *ip4) {
    std::uint8_t f[42] = {};
    std::memset(f, 0xff, 6);
    std::memcpy(f + 6, p->fp.mac.addr_bytes, 6);
    f[12] = 0x08, f[13] = 0x06;
    std::uint8_t *a = f + 14;
    const std::uint8_t head[8] = {0, 1, 8, 0, 6, 4, 0, 1};  // Ethernet, IPv4, request
    std::memcpy(a, head, 8);
    std::memcpy(a + 8, p->fp.mac.addr_bytes, 6);
    std::memcpy(a + 14, ip4, 4);
    std::memcpy(a + 24, ip4, 4);  // target = sender
    return frame_mbuf(p, f, sizeof f);
}

// An unsolicited neighbour advertisement to all nodes (RFC 4861 7.2.6), Override set.
rte_mbuf *unsolicited_na(Port *p, const std::uint8_t *ip6) {
    std::uint8_t f[14 + 40 + 32] = {};
    const std::uint8_t all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
    std::memcpy(f, all_nodes_mac, 6);
    std::memcpy(f + 6, p->fp.mac.addr_bytes, 6);
    f[12] = 0x86, f[13] = 0xdd;
    auto *ip = reinterpret_cast<rte_ipv6_hdr *>(f + 14);
    ip->vtc_flow = rte_cpu_to_be_32(6u << 28);
    ip->payload_len = rte_cpu_to_be_16(32);
    ip->proto = IPPROTO_ICMPV6;
    ip->hop_limits = 255;
    std::memcpy(ip->src_addr, ip6, 16);
    ip->dst_addr[0] = 0xff, ip->dst_addr[1] = 0x02, ip->dst_addr[15] = 1;  // ff02::1
    std::uint8_t *na = f + 14 + 40;
    na[0] = 136;   // neighbour advertisement
    na[4] = 0x20;  // Override
    std::memcpy(na + 8, ip6, 16);
    na[24] = 2;  // target link-layer address option, 8 bytes
    na[25] = 1;
    std::memcpy(na + 26, p->fp.mac.addr_bytes, 6);
    const std::uint16_t ck = rte_ipv6_udptcp_cksum(ip, na);
    std::memcpy(na + 2, &ck, 2);
    return frame_mbuf(p, f, sizeof f);
}

// The application's addresses, announced from this port (it became the
// active member of a bond: its MAC was set), those other ports of the HCA
// in the partition saw included. Sent through TX queue 0 under
// that queue's lock, like any burst; its frames count there too.
void announce(Port *p) {
    p->announce_pending = false;
    if (p->txq.empty() || !p->txq[0] || !p->fp.link_up.load(std::memory_order_acquire))
        return;
    // The application's addresses as any port of this HCA in the partition
    // saw them: a bond's backup sent nothing while it was idle.
    std::set<std::array<std::uint8_t, 17>> addrs;
    for (const Port *o : p->hca->ports)
        if (partition_of(o) == partition_of(p))
            addrs.insert(o->own_addrs.begin(), o->own_addrs.end());
    rte_mbuf *pkts[kOwnAddrsMax];
    std::uint16_t n = 0;
    for (const auto &a : addrs)
        if (n < kOwnAddrsMax)
            if (rte_mbuf *m = a[0] == 4 ? garp(p, a.data() + 1) : unsolicited_na(p, a.data() + 1))
                pkts[n++] = m;
    const std::uint16_t sent = tx_burst(p->txq[0], pkts, n);
    rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    p->txq[0]->st.announcements += sent;  // (queue 0's counters: its lock is free again, and this is the control path)
    IPOIB_LOG(NOTICE, "%s: announced %u address(es) from address %s", p->name.c_str(), sent,
              wire::to_string(p->fp.hwaddr).c_str());
}

void handle_requests(Port *p) {
    Request r;
    while (rte_ring_sc_dequeue_elem(p->fp.requests, &r, sizeof r) == 0) {
        wire::Mac mac;
        std::memcpy(mac.raw.data(), r.mac, 6);
        wire::Gid gid;
        std::memcpy(gid.raw.data(), r.gid, 16);
        switch (r.kind) {
        case RequestKind::learn: learn(p, r, mac, gid); break;
        case RequestKind::resolve: resolve(p, r, mac, gid); break;
        case RequestKind::sendonly_join:
            if (p->iface)
                p->hca->cp.request_sendonly(p->iface, gid);
            break;
        case RequestKind::ip_join: ip_group(p, r, true); break;
        case RequestKind::ip_leave: ip_group(p, r, false); break;
        case RequestKind::connect: cm_connect(p, r); break;
        case RequestKind::own_addr: {
            std::array<std::uint8_t, 17> a{};
            a[0] = r.family == 6 ? 6 : 4;
            std::memcpy(a.data() + 1, r.gid, a[0] == 6 ? 16 : 4);
            if (p->own_addrs.size() < kOwnAddrsMax)
                p->own_addrs.insert(a);
            break;
        }
        }
    }
}

// A path answer: every neighbour with that GID of the ports on that HCA port and partition gets it.
void on_path(Hca *h, std::uint8_t port, const wire::Gid &dgid, std::uint16_t pkey, ctrl::SaStatus st,
             const ctrl::PathRecord *rec) {
    for (Port *p : h->ports) {
        if (!p->iface || p->cfg.port != port || (p->iface->pkey() & 0x7fff) != (pkey & 0x7fff))
            continue;
        p->fp.neigh.for_each_with_gid(dgid, [&](Neigh &n) {
            wire::Mac mac;
            std::memcpy(mac.raw.data(), n.mac, 6);
            if (st.ok() && rec && !p->fp.roce && n.state == NeighState::incomplete && n.dlid && n.dlid != rec->dlid) {
                // Learned from a packet of LID n.dlid claiming a GID the SA puts at another LID.
                ++p->learn_refused;
                neigh_set(p, mac, NeighState::failed, 0, n.qpn, dgid, 0, false);
                IPOIB_LOG(WARNING, "%s: %02x:%02x:%02x:%02x:%02x:%02x claimed %s from LID %u, which the SA puts at LID %u: "
                          "not learned", p->name.c_str(), n.mac[0], n.mac[1], n.mac[2], n.mac[3], n.mac[4], n.mac[5],
                          wire::to_string(dgid).c_str(), n.dlid, rec->dlid);
            } else if (st.ok() && rec) {
                const std::uint16_t key = p->fp.roce ? gid_key(dgid.raw.data()) : rec->dlid;
                neigh_set(p, mac, NeighState::resolved, key, n.qpn, dgid, rec->sl, false);
                if (!p->fp.neigh.index(key, n.qpn, mac))
                    count_table_full(p, "sender", mac);
            } else if (n.state != NeighState::resolved) {
                neigh_set(p, mac, NeighState::failed, 0, n.qpn, dgid, 0, false);
                IPOIB_LOG(INFO, "%s: no path to %s: %s", p->name.c_str(), wire::to_string(dgid).c_str(),
                          st.message().c_str());
            }
        });
    }
}

// One pass of the control thread's work, under Hca::mu. Returns the ports
// whose application asked to hear of a link change that happened.
void control_pass(Hca *h, std::vector<std::uint16_t> *lsc) {
    std::lock_guard<std::mutex> lk(h->mu);
    h->cp.run_once(0);
    const std::uint64_t now = now_ms();
    cm_poll(h, now);
    for (Port *p : h->ports) {
        handle_requests(p);
        if (now - p->last_age_ms >= kAgeIntervalMs) {
            p->last_age_ms = now;
            age_neighbours(p, now);
            reap_ahs(p);
        }
        if (p->announce_pending)
            announce(p);

        // Not before ethdev has marked the port started (it does so once
        // dev_start returned): a callback that stops the port would find it
        // "already stopped" and do nothing, and the link would stay up.
        if (p->lsc_pending && p->dev->data->dev_started) {
            p->lsc_pending = false;
            lsc->push_back(p->fp.port_id);
        }
    }
}

void *control_thread(void *arg) {
    auto *h = static_cast<Hca *>(arg);
    std::vector<std::uint16_t> lsc;
    while (!h->stop.load(std::memory_order_acquire)) {
        lsc.clear();
        control_pass(h, &lsc);
        // Outside the mutex: an LSC callback may stop or close its port.
        for (std::uint16_t id : lsc)
            if (rte_eth_dev_is_valid_port(id))
                rte_eth_dev_callback_process(&rte_eth_devices[id], RTE_ETH_EVENT_INTR_LSC, nullptr);
        rte_delay_us_sleep(kControlWaitUs);
    }
    return nullptr;
}

ctrl::LogFn make_logger() {
    return [](ctrl::LogLevel l, const char *topic, const std::string &m) {
        const std::uint32_t lvl = l == ctrl::LogLevel::error     ? RTE_LOG_ERR
                                  : l == ctrl::LogLevel::warning ? RTE_LOG_WARNING
                                  : l == ctrl::LogLevel::notice  ? RTE_LOG_NOTICE
                                  : l == ctrl::LogLevel::info    ? RTE_LOG_INFO
                                                                 : RTE_LOG_DEBUG;
        const int type = std::strcmp(topic, "ipoib.mcast") == 0 ? logtype_mcast : logtype;
        rte_log(lvl, type, "net_ipoib: %s\n", m.c_str());
    };
}

Hca *find_open_hca(const std::string &key, const Config &cfg, const std::string &dev, std::string *err) {
    for (Hca *h : g_hcas)
        if (h->key == key) {
            if (cfg.gid_index >= 0 && cfg.gid_index != h->gid_index_arg) {
                *err = "devarg gid_index=" + std::to_string(cfg.gid_index) + " conflicts with another port of " +
                       dev + " (one GID index per HCA)";
                return nullptr;
            }
            ++h->refs;
            return h;
        }
    return nullptr;
}

} // namespace

std::mutex &hca_registry_mutex() noexcept { return g_mu; }
const std::vector<Hca *> &hca_registry() noexcept { return g_hcas; }

Hca *hca_get(const Config &cfg, std::string *err) {
    const char *sim = std::getenv("SIM_HOST");
    const std::string dev = !cfg.device.empty() ? cfg.device : sim ? sim : "";
    const std::string key = cfg.provider + ":" + dev;
    if (Hca *h = find_open_hca(key, cfg, dev, err); h || !err->empty())
        return h;
    auto o = hca::open_device(cfg.provider, dev, cfg.provider_options);
    if (!o.ctx) {
        *err = "cannot open HCA '" + dev + "' (provider " + cfg.provider + "): " + o.error;
        return nullptr;
    }
    auto h = std::make_unique<Hca>();
    h->key = key;
    h->refs = 1;
    h->ctx = std::move(o.ctx);
    h->device = h->ctx->name();
    h->gid_index_arg = cfg.gid_index;
    h->mrs.open(h->ctx.get(), "net_ipoib_mr_" + key);  // inactive where the provider cannot register DPDK memory
    ctrl::CpConfig cc;
    cc.log = make_logger();
    cc.gid_index = cfg.gid_index;
    if (cfg.provider == "verbs")
        cc.sa.ca_name = h->device.c_str();  // umad on the same CA (InfiniBand ports)
    if (!h->cp.open(*h->ctx, cc, err))
        return nullptr;
    Hca *raw = h.get();
    h->cp.on_port_path = [raw](std::uint8_t port, const wire::Gid &g, std::uint16_t pk, ctrl::SaStatus st,
                               const ctrl::PathRecord *r) { on_path(raw, port, g, pk, st, r); };
    const std::string tname = "ipoib-" + dev.substr(0, 8);
    if (rte_ctrl_thread_create(&h->thread, tname.c_str(), nullptr, control_thread, raw) != 0) {
        *err = "cannot create the control thread";
        return nullptr;
    }
    h->thread_running = true;
    g_hcas.push_back(h.release());
    return raw;
}

void hca_put(Hca *h) {
    if (--h->refs > 0)
        return;
    h->stop.store(true, std::memory_order_release);
    if (h->thread_running)
        pthread_join(h->thread, nullptr);
    h->cp.stop();
    g_hcas.erase(std::remove(g_hcas.begin(), g_hcas.end(), h), g_hcas.end());
    delete h;
}

void port_read_rates(Port *p) {
    const hca::PortAttr &pa = p->hca->cp.port_attr(p->cfg.port);
    p->max_mtu = static_cast<std::uint16_t>(hca::mtu_bytes(pa.active_mtu) - wire::kEncapLen);
    if (const std::uint32_t mbps = hca::link_mbps(pa.active_width, pa.active_speed))
        p->link_mbps = mbps;
}

int port_control_start(Port *p) {
    if (!p->iface) {
        ctrl::IfaceConfig ic;
        ic.port = p->cfg.port;
        ic.pkey = p->cfg.pkey;
        ic.allmulti = p->cfg.allmulti;
        ic.static_qkey = p->cfg.bcast_qkey;
        ic.static_mtu = p->cfg.bcast_mtu;
        std::string err;
        p->iface = p->hca->cp.add_interface(ic, &err);
        if (!p->iface) {
            IPOIB_LOG(ERR, "%s: %s", p->name.c_str(), err.c_str());
            return -EINVAL;
        }
        p->iface->on_link = [p](bool up) { on_link(p, up); };
        p->iface->on_group = [p](const wire::Gid &g, const ctrl::McMemberRecord &r, bool j) { on_group(p, g, r, j); };
        p->iface->on_flush = [p](bool light) { on_flush(p, light); };
        // Heavy flush: the partition moved in the port's P_Key table (the link
        // is down). The QP moves there in place, keeping its number (the
        // port's address) and its posted receives; one not made yet is made there.
        p->iface->on_pkey_index = [p](int idx) {
            if (!p->qp)
                return true;
            if (p->qp->set_pkey_index(static_cast<std::uint16_t>(idx)) != 0) {
                IPOIB_LOG(ERR, "%s: cannot move UD QP 0x%06x to P_Key index %d: %s (the port stays down)",
                          p->name.c_str(), p->fp.qpn, idx, p->hca->ctx->last_error().c_str());
                return false;
            }
            IPOIB_LOG(NOTICE, "%s: UD QP 0x%06x moved to P_Key index %d", p->name.c_str(), p->fp.qpn, idx);
            return true;
        };
    }
    for (auto &n : p->cfg.neighs) {
        const Neigh *e = p->fp.neigh.find(n.mac);
        if (!e || e->state != NeighState::resolved)
            neigh_set(p, n.mac, NeighState::incomplete, 0, n.hw.qpn(), n.hw.gid(), 0, true);
        if (Neigh *s = p->fp.neigh.find(n.mac))
            p->fp.neigh.write(s, [&](Neigh &x) { x.hw_flags = n.hw.raw[0]; });
    }
    return 0;
}

void port_control_stop(Port *p) {
    cm_port_down(p, true);  // DREQ for every connection up
    for (TxQueue *q : p->txq)  // (the fast path is stopped)
        if (q)
            q->conns.clear();
    if (p->iface) {
        p->hca->cp.remove_interface(p->iface);  // leaves every group; link goes down
        p->iface = nullptr;
    }
    p->fp.link_up.store(false, std::memory_order_release);
    p->fp.qp_ready.store(nullptr, std::memory_order_release);
}

void port_release_resources(Port *p) {
    cm_port_release(p);
    p->fp.rx_cqs.fill(nullptr);
    p->fp.tx_cqs.fill(nullptr);
    p->qp.reset();
    for (RxQueue *q : p->rxq)  // the mbufs the QP held (receiving into mbufs)
        if (q)
            rx_release_mbufs(q);
    p->qp_rx_mbufs = false;
    p->rx_cqs.clear();
    p->tx_cqs.clear();
    rxbuf_pool_release(p);
    p->fp.bcast_ah = nullptr;
    p->ahs.clear();
    p->dead_ahs.clear();
}

void port_release_qp(Port *p) {
    p->fp.neigh.clear();
    std::vector<wire::Gid> groups;
    p->fp.groups.for_each_mgid([&](const wire::Gid &g) { groups.push_back(g); });
    for (const auto &g : groups)
        p->fp.groups.remove(g);
    port_release_resources(p);
}

bool prepare_queues(Port *p, std::uint16_t nrx, std::uint16_t ntx, bool rx_events, bool rx_mbufs) {
    const std::uint32_t nrq = std::max<std::uint32_t>(nrx, 1);
    const std::uint32_t ntq = std::max<std::uint32_t>(ntx, 1);
    const std::uint32_t nsq = std::min<std::uint32_t>(ntq, p->hca->ctx->caps().max_send_queues);
    const bool changed = p->rx_queues != nrq || p->tx_queues != ntq || p->send_queues != nsq ||
                         p->rx_events != rx_events || (p->qp && p->qp_rx_mbufs != rx_mbufs);
    if ((p->qp || !p->rx_cqs.empty()) && changed) {
        // The queues are the QP's: a new layout is a new QP (and QPN, so a
        // new IPoIB address). What referred to the old one goes with it.
        if (p->qp)
            IPOIB_LOG(NOTICE, "%s: %u RX / %u TX queues%s, receiving into %s now (the QP had %u receive / %u "
                      "send queues, %s): the UD QP is made again, with a new QPN", p->name.c_str(), nrq, ntq,
                      rx_events ? " with RX interrupts" : "", rx_mbufs ? "mbufs" : "the driver's buffers",
                      p->rx_queues, p->send_queues, p->qp_rx_mbufs ? "mbufs" : "the driver's buffers");
        port_release_qp(p);
    }
    p->rx_mbufs = rx_mbufs;
    p->rx_queues = nrq;
    p->tx_queues = ntq;
    p->send_queues = nsq;
    p->rx_events = rx_events;
    if (p->rx_cqs.empty() && !make_cqs(p))
        return false;
    const bool shared = ntq > nsq;
    for (std::uint32_t i = 0; i < hca::kMaxQueues; ++i) {
        TxQueue *q = i < ntx && i < p->txq.size() ? p->txq[i] : nullptr;
        p->fp.txqs[i] = q;
        if (!q)
            continue;
        q->sq = static_cast<std::uint16_t>(i % nsq);
        q->lock = shared ? &p->fp.sq_lock[q->sq] : &q->busy;
    }
    if (shared)
        IPOIB_LOG(NOTICE, "%s: %u TX queues share %u send queue(s) of the QP (%s has %u per QP): one lock per burst",
                  p->name.c_str(), ntq, nsq, p->hca->ctx->name().c_str(), p->hca->ctx->caps().max_send_queues);
    return true;
}

} // namespace ipoib::pmd
