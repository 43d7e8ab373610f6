// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib connected mode, control side (ipoib_cm.hpp): the shared receive
// queues, the CM exchange (REQ/REP/RTU, REJ, DREQ/DREP) through the
// provider's connection manager, the connections' lifecycle (fallback to
// datagrams, idle and failed connections, stop), and the TX queues'
// connection tables.
#include <rte_malloc.h>
#include <rte_random.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>

#include "ipoib_control.hpp"
#include "ipoib_port.hpp"
#include "ipoib_retired.hpp"

namespace ipoib::pmd {

// One connection (control thread). Active: a TX queue's, to a peer it sends
// to; passive: a peer's, delivering into one RX queue's shared receive queue.
struct RcConn {
    enum class St : std::uint8_t { req_sent, rep_sent, up, draining };
    St st = St::req_sent;
    bool passive = false;
    wire::Mac mac{};       // the peer, as the application knows it
    std::uint16_t txq = 0;  // active: the TX queue whose connection it is
    std::uint16_t rxq = 0;  // passive: the RX queue it delivers to
    std::unique_ptr<hca::RcQp> qp;
    std::uint32_t cm_id = 0;
    bool has_id = false;
    std::uint16_t dlid = 0;
    std::uint32_t peer_ud_qpn = 0;
    std::uint32_t peer_qpn = 0;  // its RC QP
    std::uint32_t psn = 0;
    hca::AhAttr path{};
    std::uint64_t since_ms = 0;
    // Passive: receive count when last looked at, and when it last changed.
    std::uint64_t rx_seen = 0, active_ms = 0;
    // Draining an active connection: the TX queue's burst count when it was
    // taken from the table, then its posted count once that burst ended.
    std::uint64_t mark = 0;
    bool bursts_ended = false;
    bool icrc = false;  // both sides agreed on "IB CRC as checksum"
};

CmPort::CmPort() = default;
CmPort::~CmPort() = default;

// --- the TX queues' tables ---

TxConnTable::~TxConnTable() { rte_free(slots_); }

bool TxConnTable::init(std::uint32_t max_conns) noexcept {
    rte_free(slots_);
    slots_ = nullptr;
    nslots_ = 0;
    std::uint32_t n = 4;
    while (n < 2 * max_conns)
        n <<= 1;
    slots_ = static_cast<TxConn *>(rte_zmalloc("ipoib_txconn", sizeof(TxConn) * n, 64));
    if (!slots_)
        return false;
    nslots_ = n;
    max_ = max_conns;
    count_ = 0;
    return true;
}

TxConn *TxConnTable::find(const std::uint8_t *mac) noexcept {
    for (std::uint32_t i = home(mac), probe = 0; nslots_ && probe < nslots_; ++probe, i = (i + 1) & (nslots_ - 1)) {
        if (!slots_[i].used)
            return nullptr;
        if (std::memcmp(slots_[i].mac, mac, 6) == 0)
            return &slots_[i];
    }
    return nullptr;
}

TxConn *TxConnTable::find_or_add(const std::uint8_t *mac) noexcept {
    if (TxConn *c = find(mac))
        return c;
    if (!nslots_ || count_ >= max_)
        return nullptr;
    std::uint32_t i = home(mac);
    while (slots_[i].used)
        i = (i + 1) & (nslots_ - 1);
    seq_write(slots_[i], [&](TxConn &c) {
        std::memcpy(c.mac, mac, 6);
        c.state = ConnState::none;
        c.qp = nullptr;
        c.peer_mtu = 0;
        c.retry_ms = 0;
        c.used = 1;
    });
    ++count_;
    return &slots_[i];
}

void TxConnTable::clear() noexcept {
    if (slots_)
        std::memset(static_cast<void *>(slots_), 0, sizeof(TxConn) * nslots_);
    count_ = 0;
}

// --- private data (doc/wire.md) ---

void cm_write_private_data(const CmPrivateData &d, std::uint8_t *out) noexcept {
    wire::store_be32(out, d.ud_qpn & 0xffffff);
    wire::store_be32(out + 4, d.recv_mtu);
    wire::store_be32(out + 8, kCmExtMagic);
    wire::store_be32(out + 12, d.features);
}

bool cm_read_private_data(const std::uint8_t *in, std::size_t len, CmPrivateData *out) noexcept {
    if (len < 8)
        return false;
    *out = CmPrivateData{};
    out->ud_qpn = wire::load_be32(in) & 0xffffff;  // (Linux: the high byte is ignored)
    out->recv_mtu = wire::load_be32(in + 4);
    if (len >= kCmPrivateDataLen && wire::load_be32(in + 8) == kCmExtMagic) {
        out->has_ext = true;
        out->features = wire::load_be32(in + 12);
    }
    return true;
}

namespace {

const char *mac_text(const wire::Mac &m, char (&buf)[18]) {
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m.raw[0], m.raw[1], m.raw[2], m.raw[3], m.raw[4],
                  m.raw[5]);
    return buf;
}

hca::Cm *port_cm(Port *p) {
    auto &cm = p->hca->cms[p->cfg.port];
    if (!cm) {
        cm = p->hca->ctx->open_cm(p->cfg.port);
        if (!cm)
            IPOIB_LOG(ERR, "%s: connected mode: no connection manager on port %u: %s", p->name.c_str(), p->cfg.port,
                      p->hca->ctx->last_error().c_str());
    }
    return cm.get();
}

// Set a TX queue's entry for a peer (control thread).
void tx_entry(Port *p, std::uint16_t txq, const wire::Mac &mac, ConnState st, hca::RcQp *qp, std::uint32_t mtu,
              std::uint64_t retry_ms, bool icrc = false) {
    if (txq >= p->txq.size() || !p->txq[txq])
        return;
    TxConn *c = p->txq[txq]->conns.find_or_add(mac.raw.data());
    if (!c)
        return;
    p->txq[txq]->conns.write(c, [&](TxConn &e) {
        e.state = st;
        e.qp = qp;
        e.peer_mtu = static_cast<std::uint16_t>(std::min<std::uint32_t>(mtu, 0xffff));
        e.retry_ms = retry_ms;
        e.icrc = icrc;
    });
}

RcConn *by_id(CmPort &cm, std::uint32_t id) {
    for (RcConn &c : cm.conns)
        if (c.has_id && c.cm_id == id && c.st != RcConn::St::draining)
            return &c;
    return nullptr;
}

// Take an active connection out of its queue's table and let its QP go once
// the queue can no longer post to it; a passive one goes at once (the RX
// queues only read its completions, which carry its number).
void close_conn(Port *p, RcConn &c, ConnState next, std::uint64_t retry_ms) {
    if (c.qp)
        c.qp->set_error();
    if (c.passive) {
        if (c.qp)
            p->fp.neigh.unindex(kCmRxKey, c.qp->qp_num());
        c.st = RcConn::St::draining;
        c.qp.reset();
        return;
    }
    tx_entry(p, c.txq, c.mac, next, nullptr, 0, retry_ms);
    c.st = RcConn::St::draining;
    const TxQueue *q = c.txq < p->txq.size() ? p->txq[c.txq] : nullptr;
    c.mark = q ? q->bursts.load(std::memory_order_acquire) : 0;
    c.bursts_ended = q == nullptr;
}

void reap_conns(Port *p) {
    CmPort &cm = *p->cm;
    std::erase_if(cm.conns, [p](RcConn &c) {
        if (c.st != RcConn::St::draining)
            return false;
        if (!c.qp)
            return true;
        const TxQueue *q = c.txq < p->txq.size() ? p->txq[c.txq] : nullptr;
        if (!q || !p->started)
            return true;  // (stopped: no burst runs)
        if (!c.bursts_ended) {
            if (q->lock->test(std::memory_order_acquire) && q->bursts.load(std::memory_order_acquire) == c.mark)
                return false;
            c.mark = q->posted.load(std::memory_order_acquire);
            c.bursts_ended = true;
        }
        return q->completed.load(std::memory_order_acquire) >= c.mark;
    });
}

hca::AhAttr path_to(const Port *p, std::uint16_t dlid, std::uint8_t sl, const wire::Gid &dgid) {
    hca::AhAttr a{};
    a.dlid = dlid;
    a.sl = sl;
    a.port_num = p->cfg.port;
    if (p->fp.roce) {
        a.is_global = true;
        a.dgid = dgid;
        a.sgid_index = p->gid_index;
        a.hop_limit = 64;
    }
    return a;
}

std::unique_ptr<hca::RcQp> make_qp(Port *p, hca::Cq *send_cq, std::uint16_t rxq) {
    hca::RcQpInit init;
    init.send_cq = send_cq;
    init.recv_cq = p->cm->rings[rxq].cq;
    init.srq = p->cm->rings[rxq].srq;
    init.port_num = p->cfg.port;
    init.pkey_index = static_cast<std::uint16_t>(p->iface ? p->iface->pkey_index() : 0);
    init.max_send_wr = p->cfg.txq_size;
    return p->hca->ctx->create_rc_qp(init);
}

CmPrivateData own_data(const Port *p) {
    CmPrivateData d;
    d.ud_qpn = p->fp.qpn;
    d.recv_mtu = kCmRecvMtu;
    d.features = p->cfg.icrc_csum ? kCmFeatureIcrcCsum : 0;
    return d;
}

// --- events ---

void on_req(Port *p, hca::Cm &cm, const hca::CmEvent &ev) {
    CmPort &st = *p->cm;
    ++st.req_received;
    char mb[18];
    CmPrivateData pd;
    if (!cm_read_private_data(ev.private_data, ev.private_data_len, &pd)) {
        ++st.refused;
        IPOIB_LOG(WARNING, "%s: connection request from LID %u with %u bytes of private data (IPoIB sends 8 or more): "
                  "rejected", p->name.c_str(), ev.path.dlid, ev.private_data_len);
        cm.send_rej(ev.id, hca::CmRejReason::consumer);
        return;
    }
    std::size_t passive = 0;
    for (const RcConn &c : st.conns)
        passive += c.passive && c.st != RcConn::St::draining;
    if (passive >= p->cfg.max_conns || st.rings.empty()) {
        ++st.refused;
        IPOIB_LOG(WARNING, "%s: connection request from LID %u QPN 0x%06x rejected: %zu connections already "
                  "(max_conns=%u)", p->name.c_str(), ev.path.dlid, pd.ud_qpn, passive, p->cfg.max_conns);
        cm.send_rej(ev.id, hca::CmRejReason::no_resources);
        return;
    }
    RcConn c;
    c.passive = true;
    c.rxq = static_cast<std::uint16_t>(st.next_rxq++ % st.rings.size());
    // The key the peer's frames are known by: its LID; on RoCE its GID folded
    // (as the datagram path keys RoCE senders; the CM's LID is 0 there).
    c.dlid = p->fp.roce ? gid_key(ev.path.dgid.raw.data()) : ev.path.dlid;
    c.peer_ud_qpn = pd.ud_qpn;
    c.peer_qpn = ev.remote_qpn;
    c.psn = static_cast<std::uint32_t>(rte_rand() & 0xffffff);
    c.path = path_to(p, ev.path.dlid, ev.path.sl, ev.path.dgid);
    c.since_ms = c.active_ms = now_ms();
    c.cm_id = ev.id;
    c.has_id = true;
    c.icrc = p->cfg.icrc_csum && pd.has_ext && (pd.features & kCmFeatureIcrcCsum);
    // The sender is shown as the MAC it is known by (its UD address's), else by its LID and UD QPN.
    if (!p->fp.neigh.mac_for(c.dlid, c.peer_ud_qpn, &c.mac))
        c.mac = lidqpn_mac(c.dlid, c.peer_ud_qpn);
    c.qp = make_qp(p, st.cqs[c.rxq].get(), c.rxq);
    hca::RcConnect rc;
    rc.path = c.path;
    rc.remote_qpn = ev.remote_qpn;
    rc.remote_psn = ev.starting_psn;
    rc.local_psn = c.psn;
    rc.path_mtu = ev.path.mtu;
    rc.rnr_retry = ev.rnr_retry_count;
    if (!c.qp || cm.init_qp_attr(ev.id, &rc) != 0 || c.qp->connect(rc) != 0) {
        ++st.refused;
        IPOIB_LOG(ERR, "%s: cannot accept the connection from LID %u QPN 0x%06x: %s", p->name.c_str(), c.dlid,
                  c.peer_ud_qpn, p->hca->ctx->last_error().c_str());
        cm.send_rej(ev.id, hca::CmRejReason::no_resources);
        return;
    }
    // Frames of the connection show the sender's MAC (the receive index by our RC QP, kCmRxKey).
    p->fp.neigh.index(kCmRxKey, c.qp->qp_num(), c.mac);
    // Its REQ shows the peer is in connected mode: frames to it go over a connection of ours too,
    // though it never announced its address (cm_peer_connected() for neighbours made later).
    if (Neigh *n = p->fp.neigh.find(c.mac); n && !(n->hw_flags & wire::kHwFlagRc))
        p->fp.neigh.write(n, [](Neigh &e) { e.hw_flags |= wire::kHwFlagRc; });
    std::uint8_t data[kCmPrivateDataLen];
    cm_write_private_data(own_data(p), data);
    hca::CmRepParam rep;
    rep.local_qpn = c.qp->qp_num();
    rep.starting_psn = c.psn = rc.local_psn;
    rep.private_data = data;
    rep.private_data_len = kCmPrivateDataLen;
    rep.rnr_retry_count = kCmRnrRetry;  // (the peer's QP retries this often when our receives run out)
    if (cm.send_rep(ev.id, rep) != 0) {
        ++st.refused;
        IPOIB_LOG(ERR, "%s: cannot answer the connection request of LID %u: %s", p->name.c_str(), c.dlid,
                  p->hca->ctx->last_error().c_str());
        p->fp.neigh.unindex(kCmRxKey, c.qp->qp_num());
        return;
    }
    c.st = RcConn::St::rep_sent;
    IPOIB_LOG(INFO, "%s: connection from %s (LID %u, QPN 0x%06x): RC QP 0x%06x on RX queue %u", p->name.c_str(),
              mac_text(c.mac, mb), c.dlid, c.peer_ud_qpn, c.qp->qp_num(), c.rxq);
    st.conns.push_back(std::move(c));
}

void on_rep(Port *p, hca::Cm &cm, RcConn &c, const hca::CmEvent &ev) {
    CmPort &st = *p->cm;
    char mb[18];
    CmPrivateData pd;
    if (!cm_read_private_data(ev.private_data, ev.private_data_len, &pd) || pd.recv_mtu <= wire::kEncapLen) {
        IPOIB_LOG(WARNING, "%s: the reply of %s carries no usable receive MTU: rejected, datagrams for %u s",
                  p->name.c_str(), mac_text(c.mac, mb), kCmRetryMs / 1000);
        cm.send_rej(ev.id, hca::CmRejReason::invalid_mtu);
        c.has_id = false;
        ++st.fallbacks;
        close_conn(p, c, ConnState::failed, now_ms() + kCmRetryMs);
        return;
    }
    hca::RcConnect rc;
    rc.path = c.path;
    rc.remote_qpn = ev.remote_qpn;
    rc.remote_psn = ev.starting_psn;
    rc.local_psn = c.psn;
    rc.path_mtu = p->hca->cp.port_attr(p->cfg.port).active_mtu;
    rc.rnr_retry = ev.rnr_retry_count;
    c.peer_qpn = ev.remote_qpn;
    if (cm.init_qp_attr(ev.id, &rc) != 0 || c.qp->connect(rc) != 0) {
        IPOIB_LOG(ERR, "%s: cannot connect RC QP 0x%06x to %s: %s", p->name.c_str(), c.qp->qp_num(),
                  mac_text(c.mac, mb), p->hca->ctx->last_error().c_str());
        cm.send_rej(ev.id, hca::CmRejReason::no_resources);
        c.has_id = false;
        ++st.fallbacks;
        close_conn(p, c, ConnState::failed, now_ms() + kCmRetryMs);
        return;
    }
    cm.send_rtu(ev.id);
    c.st = RcConn::St::up;
    ++st.established;
    c.icrc = p->cfg.icrc_csum && pd.has_ext && (pd.features & kCmFeatureIcrcCsum);
    tx_entry(p, c.txq, c.mac, ConnState::up, c.qp.get(), std::min<std::uint32_t>(pd.recv_mtu, kCmRecvMtu), 0,
             c.icrc);
    IPOIB_LOG(INFO, "%s: TX queue %u connected to %s (RC QP 0x%06x -> 0x%06x, its MTU %u, IB CRC as checksum: %s)",
              p->name.c_str(), c.txq, mac_text(c.mac, mb), c.qp->qp_num(), c.peer_qpn, pd.recv_mtu,
              c.icrc ? "agreed" : (pd.has_ext ? "not agreed" : "peer without it"));
}

// A connection we asked for did not come: datagrams for kCmRetryMs.
void fall_back(Port *p, RcConn &c, const char *why) {
    char mb[18];
    ++p->cm->fallbacks;
    IPOIB_LOG(NOTICE, "%s: no connection to %s (%s): datagram mode to it for %u s", p->name.c_str(),
              mac_text(c.mac, mb), why, kCmRetryMs / 1000);
    c.has_id = false;
    close_conn(p, c, ConnState::failed, now_ms() + kCmRetryMs);
}

void on_event(Hca *h, hca::Cm &cm, const hca::CmEvent &ev) {
    if (ev.type == hca::CmEventType::req_received) {
        const std::uint32_t qpn = static_cast<std::uint32_t>(ev.service_id & 0xffffff);
        const std::uint64_t kind = ev.service_id & ~0xffffffull;
        for (Port *p : h->ports)
            if (p->cm && p->cm->listening && p->fp.qpn == qpn && (kind == kCmServiceIdLinux || kind == kCmServiceIdRfc)) {
                on_req(p, cm, ev);
                return;
            }
        cm.send_rej(ev.id, hca::CmRejReason::invalid_service_id);
        return;
    }
    for (Port *p : h->ports) {
        if (!p->cm)
            continue;
        RcConn *c = by_id(*p->cm, ev.id);
        if (!c)
            continue;
        switch (ev.type) {
        case hca::CmEventType::rep_received:
            if (!c->passive && c->st == RcConn::St::req_sent)
                on_rep(p, cm, *c, ev);
            break;
        case hca::CmEventType::rtu_received:
            if (c->passive && c->st == RcConn::St::rep_sent) {
                c->st = RcConn::St::up;
                ++p->cm->established;
            }
            break;
        case hca::CmEventType::rej_received:
            ++p->cm->rejected;
            if (c->passive) {
                c->has_id = false;
                close_conn(p, *c, ConnState::none, 0);
            } else {
                char why[48];
                std::snprintf(why, sizeof why, "rejected, reason %u", ev.rej_reason);
                fall_back(p, *c, why);
            }
            break;
        case hca::CmEventType::req_error:
            ++p->cm->timeouts;
            fall_back(p, *c, "no answer to its requests");
            break;
        case hca::CmEventType::rep_error:
            ++p->cm->timeouts;
            c->has_id = false;
            close_conn(p, *c, ConnState::none, 0);
            break;
        case hca::CmEventType::dreq_received:
            ++p->cm->dreq_received;
            cm.send_drep(ev.id);
            c->has_id = false;
            // The peer closes: connect again on the next frame (its REQ is
            // rejected if it stopped: then datagrams).
            close_conn(p, *c, ConnState::none, 0);
            break;
        case hca::CmEventType::drep_received:
        case hca::CmEventType::dreq_error:
            c->has_id = false;
            break;
        case hca::CmEventType::mra_received:
        case hca::CmEventType::req_received: break;
        }
        return;
    }
    // An event for an id no connection holds (closed meanwhile): a REP is refused.
    if (ev.type == hca::CmEventType::rep_received)
        cm.send_rej(ev.id, hca::CmRejReason::stale_conn);
    else if (ev.type == hca::CmEventType::dreq_received)
        cm.send_drep(ev.id);
}

// Connections whose QP failed (the peer died, its port went down: retries
// exhausted), and passive ones idle for cm_idle seconds.
void check_conns(Port *p, std::uint64_t now) {
    CmPort &st = *p->cm;
    hca::Cm *cm = p->hca->cms[p->cfg.port].get();
    char mb[18];
    for (RcConn &c : st.conns) {
        if (c.st == RcConn::St::draining || !c.qp)
            continue;
        if (c.qp->state() == hca::RcState::error) {
            ++st.conn_errors;
            IPOIB_LOG(NOTICE, "%s: connection %s %s failed (RC QP 0x%06x in error): closed%s", p->name.c_str(),
                      c.passive ? "from" : "to", mac_text(c.mac, mb), c.qp->qp_num(),
                      c.passive ? "" : "; its path is resolved again");
            if (cm && c.has_id)
                cm->send_dreq(c.cm_id);
            c.has_id = false;
            close_conn(p, c, ConnState::none, 0);
            if (!c.passive)
                if (Neigh *n = p->fp.neigh.find(c.mac); n && n->state == NeighState::resolved)
                    p->fp.neigh.write(n, [](Neigh &e) { e.state = NeighState::incomplete; e.ah = nullptr; });
            continue;
        }
        if (c.passive && c.st == RcConn::St::up) {
            const std::uint64_t rx = c.qp->counters().rx_packets;
            if (rx != c.rx_seen) {
                c.rx_seen = rx;
                c.active_ms = now;
            } else if (now - c.active_ms >= std::uint64_t{p->cfg.cm_idle_s} * 1000) {
                ++st.idle_closed;
                IPOIB_LOG(INFO, "%s: connection from %s idle for %u s: closed", p->name.c_str(), mac_text(c.mac, mb),
                          p->cfg.cm_idle_s);
                if (cm && c.has_id)
                    cm->send_dreq(c.cm_id);
                c.has_id = false;
                close_conn(p, c, ConnState::none, 0);
            }
        }
    }
    reap_conns(p);
}

} // namespace

// --- receive stores (ipoib_cm.hpp: CmRxStore) ---

namespace {

// The application freed an mbuf whose data was buffer `addr` of store `opaque`
// (any lcore, any time): the last of a slot's buffers puts the slot on the return ring.
void cm_buffer_returned(void *addr, void *opaque) noexcept {
    auto *st = static_cast<CmRxStore *>(opaque);
    const auto idx = static_cast<std::uint32_t>((static_cast<std::uint8_t *>(addr) - st->mem) / st->buf_size);
    const std::uint32_t slot = idx % st->slots;
    if (st->held[slot].fetch_sub(1, std::memory_order_acq_rel) == 1)  // (never full: it holds every slot)
        rte_ring_mp_enqueue_elem(st->back, const_cast<std::uint32_t *>(&slot), sizeof slot);
    st->lent.fetch_sub(1, std::memory_order_release);
}

void destroy_store(CmRxStore *st) noexcept {
    rte_ring_free(st->back);
    st->mr.reset();
    if (st->mem)
        st->hca->ctx->free_dma(st->mem);
    delete st;
}

// Stores released while the application still held some of their buffers.
RetiredList<CmRxStore, destroy_store> g_retired;

} // namespace

CmRxStore *cm_rx_store_create(Port *p, std::uint32_t rxq, std::uint32_t depth, std::uint32_t nsge,
                              std::uint32_t buf_size) noexcept {
    static std::atomic<std::uint32_t> serial{0};
    hca::Context &ctx = *p->hca->ctx;
    auto st = std::make_unique<CmRxStore>();
    st->hca = p->hca;
    st->slots = 2 * depth;
    st->nsge = nsge;
    st->buf_size = buf_size;
    st->bytes = std::size_t{st->slots} * nsge * buf_size;
    st->mem = static_cast<std::uint8_t *>(ctx.alloc_dma(st->bytes));
    st->mr = st->mem ? ctx.reg_mr(st->mem, st->bytes) : nullptr;
    if (!st->mr) {
        IPOIB_LOG(ERR, "%s: connected mode: cannot allocate %zu bytes of receive buffers for RX queue %u: %s",
                  p->name.c_str(), st->bytes, rxq, ctx.last_error().c_str());
        if (st->mem)
            ctx.free_dma(st->mem);
        return nullptr;
    }
    if (rte_eal_iova_mode() == RTE_IOVA_VA)  // (as ipoib_rxbuf: not DPDK's memory)
        st->iova_base = static_cast<rte_iova_t>(reinterpret_cast<std::uintptr_t>(st->mem));
    st->shinfo.resize(std::size_t{st->slots} * nsge);
    for (auto &sh : st->shinfo) {
        sh.free_cb = cm_buffer_returned;
        sh.fcb_opaque = st.get();
        rte_mbuf_ext_refcnt_set(&sh, 0);
    }
    st->held = std::make_unique<std::atomic<std::uint32_t>[]>(st->slots);
    char name[RTE_RING_NAMESIZE];
    std::snprintf(name, sizeof name, "ipoib_cmrx_%u", serial.fetch_add(1));
    st->back = rte_ring_create_elem(name, sizeof(std::uint32_t), st->slots, rte_socket_id(),
                                    RING_F_SC_DEQ | RING_F_EXACT_SZ);
    if (!st->back) {
        IPOIB_LOG(ERR, "%s: connected mode: cannot create RX queue %u's return ring: %s", p->name.c_str(), rxq,
                  rte_strerror(rte_errno));
        destroy_store(st.release());
        return nullptr;
    }
    for (std::uint32_t k = depth; k < st->slots; ++k)  // the spares
        rte_ring_sp_enqueue_elem(st->back, &k, sizeof k);
    return st.release();
}

void cm_rx_store_release(Port *p, CmRxStore *st) noexcept {
    if (const std::int64_t held = g_retired.release(st))
        IPOIB_LOG(WARNING, "%s: the application still holds %lld connected-mode receive buffers: they are freed once "
                           "it has freed them (at a later stop or close)", p->name.c_str(), static_cast<long long>(held));
}

// --- entry points ---

bool cm_peer_connected(const Port *p, std::uint16_t lid, std::uint32_t ud_qpn) {
    if (!p->cm)
        return false;
    for (const RcConn &c : p->cm->conns)
        if (c.passive && c.st != RcConn::St::draining && c.dlid == lid && c.peer_ud_qpn == ud_qpn)
            return true;
    return false;
}

bool cm_port_up(Port *p) {
    if (!p->cfg.connected)
        return true;
    if (!p->cm)
        p->cm = std::make_unique<CmPort>();
    CmPort &st = *p->cm;
    hca::Context &ctx = *p->hca->ctx;
    // The device's gather and scatter limits: a frame of kCmRecvMtu (after kCmRxHead) in fewer,
    // larger receive buffers where the device scatters fewer entries.
    const hca::DeviceCaps caps = ctx.caps();
    const std::uint32_t nsge = std::min<std::uint32_t>(kCmRecvSge, caps.max_rc_recv_sge);
    const std::uint32_t buf_size = nsge ? ((kCmRecvMtu + kCmRxHead + nsge - 1) / nsge + 63u) & ~63u : 0;
    if (!nsge || buf_size > kCmMaxBufSize || caps.max_rc_send_sge < 2) {
        IPOIB_LOG(ERR, "%s: connected mode: the device scatters %u and gathers %u entries per message, too few for "
                  "%u-byte frames (datagram mode only)", p->name.c_str(), caps.max_rc_recv_sge, caps.max_rc_send_sge,
                  kCmRecvMtu);
        return false;
    }
    p->fp.cm_send_sge = std::min<std::uint32_t>(kCmSendSge, caps.max_rc_send_sge);
    if (st.rings.empty()) {
        for (std::uint32_t i = 0; i < p->rx_queues; ++i) {
            auto cq = ctx.create_cq(kCmSrqDepth + static_cast<int>(p->cfg.txq_size));
            hca::SrqInit si;
            si.cq = cq.get();
            si.max_wr = kCmSrqDepth;
            si.max_sge = nsge;
            auto srq = cq ? ctx.create_srq(si) : nullptr;
            if (!srq) {
                IPOIB_LOG(ERR, "%s: connected mode: cannot make RX queue %u's shared receive queue: %s (datagram "
                          "mode only)", p->name.c_str(), i, ctx.last_error().c_str());
                cm_port_release(p);
                return false;
            }
            CmRxStore *store = cm_rx_store_create(p, i, kCmSrqDepth, nsge, buf_size);
            if (!store) {
                cm_port_release(p);
                return false;
            }
            CmRxRing r;
            r.srq = srq.get();
            r.cq = cq.get();
            r.store = store;
            r.base = store->mem;
            r.lkey = store->mr->lkey();
            r.depth = kCmSrqDepth;
            r.slots = store->slots;
            r.nsge = nsge;
            r.buf_size = buf_size;
            // A provider that sends only registered memory (verbs) could not send a lent
            // buffer the application forwards: frames are copied there.
            r.lend = !caps.lkey_required;
            st.cqs.push_back(std::move(cq));
            st.srqs.push_back(std::move(srq));
            st.stores.push_back(store);
            for (std::uint32_t w = 0; w < kCmSrqDepth; ++w) {
                hca::Sge sge[kCmRecvSge];
                hca::RcRecvWr wr;
                r.recv_wr(w, sge, &wr);
                if (st.srqs.back()->post_recv(&wr, 1) != 1) {
                    IPOIB_LOG(ERR, "%s: connected mode: cannot post RX queue %u's shared receives: %s",
                              p->name.c_str(), i, ctx.last_error().c_str());
                    cm_port_release(p);
                    return false;
                }
            }
            st.rings.push_back(r);
        }
    }
    for (std::uint32_t i = 0; i < p->rx_queues && i < p->rxq.size(); ++i)
        if (p->rxq[i])
            p->rxq[i]->cm = st.rings[i];
    for (TxQueue *q : p->txq) {
        if (!q)
            continue;
        if (!q->conns.active() && !q->conns.init(p->cfg.max_conns)) {
            IPOIB_LOG(ERR, "%s: connected mode: no memory for TX queue %u's connection table", p->name.c_str(),
                      q->queue_id);
            return false;
        }
        q->cm_sge.resize(std::size_t{kBurstMax} * kCmSendSge);
    }
    hca::Cm *cm = port_cm(p);
    if (!cm)
        return false;
    if (!st.listening || st.listened_qpn != p->fp.qpn) {
        if (st.listening) {
            cm->unlisten(kCmServiceIdLinux | st.listened_qpn);
            cm->unlisten(kCmServiceIdRfc | st.listened_qpn);
        }
        if (cm->listen(kCmServiceIdLinux | p->fp.qpn) != 0 || cm->listen(kCmServiceIdRfc | p->fp.qpn) != 0) {
            IPOIB_LOG(ERR, "%s: connected mode: cannot listen for connections: %s", p->name.c_str(),
                      ctx.last_error().c_str());
            return false;
        }
        st.listening = true;
        st.listened_qpn = p->fp.qpn;
        IPOIB_LOG(INFO, "%s: connected mode: listening on service IDs 0x%016llx and 0x%016llx", p->name.c_str(),
                  static_cast<unsigned long long>(kCmServiceIdLinux | p->fp.qpn),
                  static_cast<unsigned long long>(kCmServiceIdRfc | p->fp.qpn));
    }
    return true;
}

namespace {

// Close c and end its CM exchange: a DREQ if it is up and `dreq`, else its
// id forgotten (being set up: the CM rejects it as the peer knows it).
void close_with_cm(Port *p, hca::Cm *cm, RcConn &c, bool dreq) {
    if (cm && c.has_id) {
        if (dreq && c.st == RcConn::St::up)
            cm->send_dreq(c.cm_id);
        else
            cm->destroy_id(c.cm_id);
    }
    c.has_id = false;
    close_conn(p, c, ConnState::none, 0);
}

} // namespace

void cm_port_down(Port *p, bool send_dreq) {
    if (!p->cm)
        return;
    CmPort &st = *p->cm;
    hca::Cm *cm = p->hca->cms[p->cfg.port].get();
    for (RcConn &c : st.conns)
        if (c.st != RcConn::St::draining)
            close_with_cm(p, cm, c, send_dreq);
    if (cm && st.listening) {
        cm->unlisten(kCmServiceIdLinux | st.listened_qpn);
        cm->unlisten(kCmServiceIdRfc | st.listened_qpn);
        st.listening = false;
    }
    reap_conns(p);
    if (!p->started)
        for (TxQueue *q : p->txq)
            if (q)
                q->conns.clear();
}

void cm_port_flush(Port *p) {
    if (!p->cm)
        return;
    hca::Cm *cm = p->hca->cms[p->cfg.port].get();
    for (RcConn &c : p->cm->conns)
        if (!c.passive && c.st != RcConn::St::draining)
            close_with_cm(p, cm, c, true);
}

void cm_port_release(Port *p) {
    if (!p->cm)
        return;
    cm_port_down(p, false);
    CmPort &st = *p->cm;
    st.conns.clear();
    for (RxQueue *q : p->rxq)
        if (q)
            q->cm = CmRxRing{};
    st.rings.clear();
    st.srqs.clear();
    st.cqs.clear();
    for (CmRxStore *s : st.stores)
        cm_rx_store_release(p, s);
    st.stores.clear();
}

void cm_connect(Port *p, const Request &r) {
    if (!p->cm || r.qpn >= p->txq.size() || !p->txq[r.qpn] || !p->fp.link_up.load(std::memory_order_acquire))
        return;
    CmPort &st = *p->cm;
    wire::Mac mac;
    std::memcpy(mac.raw.data(), r.mac, 6);
    const auto txq = static_cast<std::uint16_t>(r.qpn);
    for (const RcConn &c : st.conns)
        if (!c.passive && c.txq == txq && c.mac == mac && c.st != RcConn::St::draining)
            return;  // asked again while connecting
    const TxConn *e = p->txq[txq]->conns.find(mac.raw.data());
    if (e && (e->state == ConnState::up || (e->state == ConnState::failed && now_ms() < e->retry_ms)))
        return;
    const Neigh *n = p->fp.neigh.find(mac);
    char mb[18];
    if (!n || n->state != NeighState::resolved || !(n->hw_flags & wire::kHwFlagRc))
        return;  // (the fast path sends datagrams meanwhile)
    hca::Cm *cm = port_cm(p);
    RcConn c;
    c.txq = txq;
    c.mac = mac;
    c.dlid = n->dlid;
    c.peer_ud_qpn = n->qpn;
    c.psn = static_cast<std::uint32_t>(rte_rand() & 0xffffff);
    c.path = path_to(p, n->dlid, n->sl, n->gid);
    c.since_ms = now_ms();
    c.qp = cm ? make_qp(p, p->fp.tx_cqs[p->txq[txq]->sq], 0) : nullptr;
    if (!c.qp) {
        ++st.fallbacks;
        IPOIB_LOG(ERR, "%s: cannot make an RC QP for %s: %s (datagrams for %u s)", p->name.c_str(), mac_text(mac, mb),
                  p->hca->ctx->last_error().c_str(), kCmRetryMs / 1000);
        tx_entry(p, txq, mac, ConnState::failed, nullptr, 0, now_ms() + kCmRetryMs);
        return;
    }
    if (!p->txq[txq]->conns.find_or_add(mac.raw.data())) {
        ++p->txq[txq]->st.cm_datagram;  // (max_conns peers already: this one gets datagrams)
        return;
    }
    const hca::PortAttr &pa = p->hca->cp.port_attr(p->cfg.port);
    std::uint8_t data[kCmPrivateDataLen];
    cm_write_private_data(own_data(p), data);
    hca::CmReqParam req;
    req.service_id = kCmServiceIdLinux | n->qpn;
    req.path.slid = p->fp.lid;
    req.path.dlid = n->dlid;
    req.path.sgid = p->fp.hwaddr.gid();
    req.path.dgid = n->gid;
    req.path.pkey = p->iface ? p->iface->pkey() : 0xffff;
    req.path.sl = n->sl;
    req.path.mtu = pa.active_mtu;
    req.path.global = p->fp.roce;
    req.local_qpn = c.qp->qp_num();
    req.starting_psn = c.psn;
    req.private_data = data;
    req.private_data_len = kCmPrivateDataLen;
    req.rnr_retry_count = kCmRnrRetry;
    if (cm->send_req(req, &c.cm_id) != 0) {
        ++st.fallbacks;
        IPOIB_LOG(ERR, "%s: cannot send a connection request to %s: %s (datagrams for %u s)", p->name.c_str(),
                  mac_text(mac, mb), p->hca->ctx->last_error().c_str(), kCmRetryMs / 1000);
        tx_entry(p, txq, mac, ConnState::failed, nullptr, 0, now_ms() + kCmRetryMs);
        return;
    }
    c.has_id = true;
    ++st.req_sent;
    tx_entry(p, txq, mac, ConnState::connecting, nullptr, 0, 0);
    // (On RoCE the neighbour's "LID" is its GID folded: show the GID.)
    const std::string where = p->fp.roce ? "GID " + wire::to_string(n->gid) : "LID " + std::to_string(n->dlid);
    IPOIB_LOG(INFO, "%s: TX queue %u connecting to %s (%s, service ID 0x%016llx, RC QP 0x%06x)", p->name.c_str(),
              txq, mac_text(mac, mb), where.c_str(), static_cast<unsigned long long>(req.service_id),
              c.qp->qp_num());
    st.conns.push_back(std::move(c));
}

void cm_poll(Hca *h, std::uint64_t now) {
    for (auto &cm : h->cms) {
        if (!cm)
            continue;
        hca::CmEvent ev;
        for (int k = 0; k < 64 && cm->get_event(&ev) == 1; ++k)
            on_event(h, *cm, ev);
    }
    for (Port *p : h->ports)
        if (p->cm)
            check_conns(p, now);
}

} // namespace ipoib::pmd
