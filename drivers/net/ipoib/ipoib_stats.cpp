// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib statistics: basic stats from the queues' counters, xstats from a
// table of {name, getter} over the queues, the interface and the HCA.
#include "ipoib_ethdev.hpp"
#include "ipoib_port.hpp"

namespace ipoib::pmd {

namespace {

// Drops that count as errors in the basic stats.
std::uint64_t rx_error_sum(const RxStats &s) {
    return s.errors + s.bad_frames + s.translate_errors + s.unsupported_ethertype + s.too_long + s.link_down +
           s.cm_errors;
}
std::uint64_t tx_error_sum(const TxStats &s) {
    return s.errors + s.unresolved_drop + s.too_big + s.unsupported_ethertype + s.link_down_drop +
           s.translate_errors + s.mcast_unjoined + s.bad_offload + s.tso_bad + s.cm_too_many_segs + s.frag_errors;
}

struct XstatDef {
    const char *name;
    std::uint64_t (*get)(const Port *);
};

template <std::uint64_t RxStats::*F>
std::uint64_t rx_sum(const Port *p) {
    std::uint64_t v = 0;
    for (const RxQueue *q : p->rxq)
        v += q ? q->st.*F : 0;
    return v;
}
template <std::uint64_t TxStats::*F>
std::uint64_t tx_sum(const Port *p) {
    std::uint64_t v = 0;
    for (const TxQueue *q : p->txq)
        v += q ? q->st.*F : 0;
    return v;
}
template <std::uint64_t ctrl::IfaceCounters::*F>
std::uint64_t iface(const Port *p) {
    return p->iface ? p->iface->counters().*F : 0;
}
template <std::uint64_t ctrl::CpCounters::*F>
std::uint64_t cp(const Port *p) {
    return p->hca->cp.counters().*F;
}
// Connected mode's control counters (0 in datagram mode).
template <std::uint64_t CmPort::*F>
std::uint64_t cm(const Port *p) {
    return p->cm ? p->cm.get()->*F : 0;
}
// HCA counters since the last reset (they live in the HCA, which we cannot reset).
template <std::uint64_t hca::QpCounters::*F>
std::uint64_t hca_qp(const Port *p) {
    return p->qp ? p->qp->counters().*F - p->hca_base.*F : 0;
}
// The HCA port's counters (shared by the ethdevs on one port: P_Keys, processes).
hca::PortCounters hca_port_now(const Port *p) {
    hca::PortCounters c{};
    if (p->hca && p->hca->ctx)
        p->hca->ctx->port_counters(p->cfg.port, &c);
    return c;
}
template <std::uint64_t hca::PortCounters::*F>
std::uint64_t hca_port(const Port *p) {
    return hca_port_now(p).*F - p->hca_port_base.*F;
}

const XstatDef kXstats[] = {
    {"rx_loopback_discards", rx_sum<&RxStats::loopback_discard>},
    {"rx_unsupported_ethertype", rx_sum<&RxStats::unsupported_ethertype>},
    {"rx_arp_translated", rx_sum<&RxStats::arp_translated>},
    {"rx_nd_translated", rx_sum<&RxStats::nd_translated>},
    {"rx_translate_errors", rx_sum<&RxStats::translate_errors>},
    {"rx_bad_frames", rx_sum<&RxStats::bad_frames>},
    {"rx_hca_errors", rx_sum<&RxStats::errors>},
    {"rx_too_long_drops", rx_sum<&RxStats::too_long>},
    {"rx_link_down_drops", rx_sum<&RxStats::link_down>},
    {"rx_learn_refused", rx_sum<&RxStats::learn_refused>},
    {"rx_copied_bytes", rx_sum<&RxStats::copied_bytes>},
    {"rx_lent_frames", rx_sum<&RxStats::lent>},
    {"rx_lend_exhausted", rx_sum<&RxStats::lend_exhausted>},
    {"neigh_learn_refused", [](const Port *p) -> std::uint64_t { return p->learn_refused; }},
    {"neigh_table_full", [](const Port *p) -> std::uint64_t { return p->table_full; }},
    {"neigh_flushed", [](const Port *p) -> std::uint64_t { return p->neigh_flushed; }},
    {"tx_unresolved_drops", tx_sum<&TxStats::unresolved_drop>},
    {"tx_unresolved_queued", tx_sum<&TxStats::unresolved_queued>},
    {"tx_too_big", tx_sum<&TxStats::too_big>},
    {"tx_unsupported_ethertype", tx_sum<&TxStats::unsupported_ethertype>},
    {"tx_link_down_drops", tx_sum<&TxStats::link_down_drop>},
    {"tx_arp_translated", tx_sum<&TxStats::arp_translated>},
    {"tx_nd_translated", tx_sum<&TxStats::nd_translated>},
    {"tx_translate_errors", tx_sum<&TxStats::translate_errors>},
    {"tx_mcast_unjoined_drops", tx_sum<&TxStats::mcast_unjoined>},
    {"tx_hca_errors", tx_sum<&TxStats::errors>},
    {"tx_bad_offload_drops", tx_sum<&TxStats::bad_offload>},
    {"tx_mcast_reports", tx_sum<&TxStats::mcast_reports>},
    {"tx_mcast_report_errors", tx_sum<&TxStats::mcast_report_errors>},
    {"tx_tso_frames", tx_sum<&TxStats::tso_frames>},
    {"tx_tso_segments", tx_sum<&TxStats::tso_segments>},
    {"tx_tso_bad_drops", tx_sum<&TxStats::tso_bad>},
    {"tx_linearized", tx_sum<&TxStats::linearized>},
    {"tx_announcements", tx_sum<&TxStats::announcements>},
    {"request_ring_full", [](const Port *p) -> std::uint64_t { return p->fp.requests_lost.load(std::memory_order_relaxed); }},
    {"mcast_joins", iface<&ctrl::IfaceCounters::joins>},
    {"mcast_join_failures", iface<&ctrl::IfaceCounters::join_failures>},
    {"mcast_leaves", iface<&ctrl::IfaceCounters::leaves>},
    {"mcast_flushes", iface<&ctrl::IfaceCounters::flushes>},
    {"bcast_group_absent", iface<&ctrl::IfaceCounters::broadcast_absent>},
    {"bcast_group_mtu_too_big", iface<&ctrl::IfaceCounters::broadcast_mtu_too_big>},
    {"port_not_active", iface<&ctrl::IfaceCounters::port_not_active>},
    {"pkey_missing", iface<&ctrl::IfaceCounters::pkey_missing>},
    {"pkey_moves", iface<&ctrl::IfaceCounters::pkey_moves>},
    {"pkey_move_failed", iface<&ctrl::IfaceCounters::pkey_move_failed>},
    {"sa_timeouts", iface<&ctrl::IfaceCounters::sa_timeouts>},
    {"path_resolved", cp<&ctrl::CpCounters::path_resolved>},
    {"path_failed", cp<&ctrl::CpCounters::path_failed>},
    {"hca_drop_no_buffer", hca_qp<&hca::QpCounters::drop_no_buffer>},
    {"hca_drop_qkey", hca_qp<&hca::QpCounters::drop_qkey>},
    {"hca_drop_pkey", hca_qp<&hca::QpCounters::drop_pkey>},
    {"hca_drop_too_long", hca_qp<&hca::QpCounters::drop_too_long>},
    {"hca_drop_port_down", hca_qp<&hca::QpCounters::drop_port_down>},
    {"hca_rx_errors", hca_qp<&hca::QpCounters::rx_errors>},
    {"hca_drop_aborted", hca_qp<&hca::QpCounters::drop_aborted>},
    {"hca_drop_stalled", hca_qp<&hca::QpCounters::drop_stalled>},
    {"hca_tx_late", hca_qp<&hca::QpCounters::tx_late>},
    {"hca_rx_bad_slot", hca_qp<&hca::QpCounters::rx_bad_slot>},
    {"tx_bounce_bytes", hca_qp<&hca::QpCounters::tx_bounce_bytes>},
    {"hca_port_rx_bad_icrc", hca_port<&hca::PortCounters::rx_bad_icrc>},
    {"hca_port_rx_malformed", hca_port<&hca::PortCounters::rx_malformed>},
    {"rx_cm_packets", rx_sum<&RxStats::cm_packets>},
    {"rx_cm_bytes", rx_sum<&RxStats::cm_bytes>},
    {"rx_cm_errors", rx_sum<&RxStats::cm_errors>},
    {"tx_cm_packets", tx_sum<&TxStats::cm_packets>},
    {"tx_cm_bytes", tx_sum<&TxStats::cm_bytes>},
    {"tx_cm_datagram", tx_sum<&TxStats::cm_datagram>},
    {"tx_cm_too_many_segs", tx_sum<&TxStats::cm_too_many_segs>},
    {"tx_cm_cksum_skipped", tx_sum<&TxStats::cm_cksum_skipped>},
    {"rx_cm_cksum_none", rx_sum<&RxStats::cm_cksum_none>},
    {"rx_local_frames", rx_sum<&RxStats::local>},
    {"tx_frag_datagrams", tx_sum<&TxStats::frag_datagrams>},
    {"tx_frag_fragments", tx_sum<&TxStats::frag_fragments>},
    {"tx_frag_errors", tx_sum<&TxStats::frag_errors>},
    {"tx_pmtu_icmp", tx_sum<&TxStats::pmtu_icmp>},
    {"tx_pmtu_icmp_lost", tx_sum<&TxStats::pmtu_icmp_lost>},
    {"cm_req_sent", cm<&CmPort::req_sent>},
    {"cm_req_received", cm<&CmPort::req_received>},
    {"cm_established", cm<&CmPort::established>},
    {"cm_rejected", cm<&CmPort::rejected>},
    {"cm_timeouts", cm<&CmPort::timeouts>},
    {"cm_fallbacks", cm<&CmPort::fallbacks>},
    {"cm_conn_errors", cm<&CmPort::conn_errors>},
    {"cm_idle_closed", cm<&CmPort::idle_closed>},
    {"cm_dreq_received", cm<&CmPort::dreq_received>},
    {"cm_refused", cm<&CmPort::refused>},
    // Process-wide: requests from secondary processes refused as malformed (ipoib_mp.cpp).
    {"mp_bad_requests", [](const Port *) { return mp_bad_requests(); }},
};
constexpr unsigned kNumXstats = std::size(kXstats);

} // namespace

int stats_get(rte_eth_dev *dev, rte_eth_stats *s) noexcept {
    const Port *p = port_of(dev);
    for (std::size_t i = 0; i < p->rxq.size(); ++i)
        if (const RxQueue *q = p->rxq[i]) {
            s->ipackets += q->st.packets;
            s->ibytes += q->st.bytes;
            s->ierrors += rx_error_sum(q->st);
            s->rx_nombuf += q->st.nombuf;
            if (i < RTE_ETHDEV_QUEUE_STAT_CNTRS) {
                s->q_ipackets[i] = q->st.packets;
                s->q_ibytes[i] = q->st.bytes;
            }
        }
    for (std::size_t i = 0; i < p->txq.size(); ++i)
        if (const TxQueue *q = p->txq[i]) {
            s->opackets += q->st.packets;
            s->obytes += q->st.bytes;
            s->oerrors += tx_error_sum(q->st);
            if (i < RTE_ETHDEV_QUEUE_STAT_CNTRS) {
                s->q_opackets[i] = q->st.packets;
                s->q_obytes[i] = q->st.bytes;
            }
        }
    return 0;
}

int stats_reset(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    if (p->qp)
        p->hca_base = p->qp->counters();
    p->hca_port_base = hca_port_now(p);
    for (auto *q : p->rxq)
        if (q)
            q->st = RxStats{};
    for (auto *q : p->txq)
        if (q)
            q->st = TxStats{};
    return 0;
}

int xstats_get(rte_eth_dev *dev, rte_eth_xstat *x, unsigned n) noexcept {
    if (n < kNumXstats)
        return kNumXstats;
    const Port *p = port_of(dev);
    for (unsigned i = 0; i < kNumXstats; ++i)
        x[i] = rte_eth_xstat{i, kXstats[i].get(p)};
    return kNumXstats;
}

int xstats_get_names(rte_eth_dev *, rte_eth_xstat_name *names, unsigned size) noexcept {
    if (names && size >= kNumXstats)
        for (unsigned i = 0; i < kNumXstats; ++i)
            rte_strscpy(names[i].name, kXstats[i].name, sizeof names[i].name);
    return kNumXstats;
}

} // namespace ipoib::pmd
