// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib telemetry: /ipoib/ports, /ipoib/mcg,<port_id>, /ipoib/path,<port_id>.
// Answers are keyed by number where an entry is itself a dictionary:
// telemetry names cannot hold ':' (GIDs, MACs), and arrays cannot hold dictionaries.
#include <rte_telemetry.h>

#include <algorithm>
#include <cstdlib>

#include "ipoib_control.hpp"
#include "ipoib_ethdev.hpp"

namespace ipoib::pmd {

namespace {

std::string hex16(std::uint16_t v) {
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", v);
    return b;
}

// Caller holds hca_registry_mutex().
Port *port_by_id(const char *params) {
    if (!params || !*params)
        return nullptr;
    const int id = std::atoi(params);
    for (Hca *h : hca_registry())
        for (Port *p : h->ports)
            if (p->fp.port_id == id)
                return p;
    return nullptr;
}

std::string mac_text(const rte_ether_addr &a) {
    char mac[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(mac, sizeof mac, &a);
    return mac;
}

void add_port(rte_tel_data *d, const Hca *h, const Port *p) {
    rte_tel_data *x = rte_tel_data_alloc();
    rte_tel_data_start_dict(x);
    rte_tel_data_add_dict_string(x, "name", p->name.c_str());
    rte_tel_data_add_dict_string(x, "hca", h->ctx->name().c_str());
    rte_tel_data_add_dict_int(x, "hca_port", p->cfg.port);
    rte_tel_data_add_dict_string(x, "pkey", hex16(p->iface ? p->iface->pkey() : p->cfg.pkey).c_str());
    rte_tel_data_add_dict_string(x, "state", p->iface ? ctrl::to_string(p->iface->state()) : "stopped");
    rte_tel_data_add_dict_string(x, "link", p->fp.link_up ? "up" : "down");
    rte_tel_data_add_dict_int(x, "lid", p->fp.lid);
    rte_tel_data_add_dict_u64(x, "qpn", p->fp.qpn);
    rte_tel_data_add_dict_string(x, "hwaddr", wire::to_string(p->fp.hwaddr).c_str());
    rte_tel_data_add_dict_string(x, "mac", mac_text(p->fp.mac).c_str());
    rte_tel_data_add_dict_int(x, "mtu", p->fp.mtu);
    rte_tel_data_add_dict_string(x, "l2", p->cfg.l2 == L2Mode::eth ? "eth" : "ipoib");
    rte_tel_data_add_dict_string(x, "broadcast", wire::to_string(p->fp.bcast_mgid).c_str());
    // Zero copy (set at dev_start): "tx+rx" (mbufs sent and received in place), "tx" (receives copied), "off".
    rte_tel_data_add_dict_string(x, "zero_copy", !p->fp.mrs ? "off" : p->rx_mbufs ? "tx+rx" : "tx");
    rte_tel_data_add_dict_u64(x, "hca_mrs", h->mrs.regions());  // DPDK memory registered with the HCA (MR cache)
    rte_tel_data_add_dict_u64(x, "started_us", p->started_us.load(std::memory_order_relaxed));
    rte_tel_data_add_dict_u64(x, "link_up_us", p->link_up_us.load(std::memory_order_relaxed));
    rte_tel_data_add_dict_u64(x, "link_down_us", p->link_down_us.load(std::memory_order_relaxed));
    rte_tel_data_add_dict_container(d, std::to_string(p->fp.port_id).c_str(), x, 0);
}

int tm_ports(const char *, const char *, rte_tel_data *d) noexcept {
    std::lock_guard<std::mutex> g(hca_registry_mutex());
    rte_tel_data_start_dict(d);
    for (Hca *h : hca_registry()) {
        std::lock_guard<std::mutex> lk(h->mu);
        for (const Port *p : h->ports)
            add_port(d, h, p);
    }
    return 0;
}

struct GroupRow {
    std::string mgid;
    std::uint16_t mlid;
    const char *state;
    unsigned join_state, joins, failures;
    std::string last_error;
};

void add_group(rte_tel_data *d, int idx, const GroupRow &r) {
    rte_tel_data *x = rte_tel_data_alloc();
    rte_tel_data_start_dict(x);
    rte_tel_data_add_dict_string(x, "mgid", r.mgid.c_str());
    rte_tel_data_add_dict_string(x, "mlid", hex16(r.mlid).c_str());
    rte_tel_data_add_dict_string(x, "state", r.state);
    rte_tel_data_add_dict_int(x, "join_state", static_cast<int>(r.join_state));
    rte_tel_data_add_dict_int(x, "joins", static_cast<int>(r.joins));
    rte_tel_data_add_dict_int(x, "failures", static_cast<int>(r.failures));
    if (!r.last_error.empty())
        rte_tel_data_add_dict_string(x, "last_error", r.last_error.c_str());
    rte_tel_data_add_dict_container(d, std::to_string(idx).c_str(), x, 0);
}

// Answer for the port named by params (its port id), under the locks the
// control path takes: fn(port) fills d, a dictionary.
template <class F>
int with_port(const char *params, rte_tel_data *d, F &&fn) {
    std::lock_guard<std::mutex> g(hca_registry_mutex());
    Port *p = port_by_id(params);
    if (!p)
        return -EINVAL;
    std::lock_guard<std::mutex> lk(p->hca->mu);
    rte_tel_data_start_dict(d);
    fn(p);
    return 0;
}

int tm_mcg(const char *, const char *params, rte_tel_data *d) noexcept {
    return with_port(params, d, [d](const Port *p) {
        if (!p->iface)
            return;
        const auto &b = p->iface->broadcast();
        int idx = 0;
        add_group(d, idx++, {wire::to_string(b.mgid), b.mlid,
                             p->iface->up() ? "joined (broadcast)" : ctrl::to_string(p->iface->state()),
                             ctrl::kFullMember, static_cast<unsigned>(p->iface->counters().joins), 0, ""});
        for (auto &gv : p->iface->groups())
            add_group(d, idx++, {wire::to_string(gv.mgid), gv.mlid, gv.joined ? "joined" : "joining",
                                 gv.join_state, gv.joins, gv.failures, gv.last_error});
    });
}

void add_neigh(rte_tel_data *d, int idx, const Neigh &n, std::uint64_t now) {
    rte_tel_data *x = rte_tel_data_alloc();
    rte_tel_data_start_dict(x);
    rte_tel_data_add_dict_string(x, "neighbour", mac_text(*reinterpret_cast<const rte_ether_addr *>(n.mac)).c_str());
    rte_tel_data_add_dict_string(x, "state", to_string(n.state));
    rte_tel_data_add_dict_string(x, "gid", wire::to_string(n.gid).c_str());
    rte_tel_data_add_dict_u64(x, "qpn", n.qpn);
    rte_tel_data_add_dict_int(x, "lid", n.dlid);
    rte_tel_data_add_dict_int(x, "sl", n.sl);
    rte_tel_data_add_dict_string(x, "kind", n.is_static ? "static" : "learned");
    const std::uint64_t last = n.used_ms.load(std::memory_order_relaxed);
    rte_tel_data_add_dict_u64(x, "idle_s", now > last ? (now - last) / 1000 : 0);
    rte_tel_data_add_dict_container(d, std::to_string(idx).c_str(), x, 0);
}

void add_path(rte_tel_data *d, int idx, const ctrl::PathCache::Key &k, const ctrl::PathEntry &e, std::uint64_t now) {
    rte_tel_data *x = rte_tel_data_alloc();
    rte_tel_data_start_dict(x);
    wire::Gid g;
    g.raw = k.dgid;
    rte_tel_data_add_dict_string(x, "path_to", wire::to_string(g).c_str());
    rte_tel_data_add_dict_string(x, "state", e.valid ? "valid" : e.pending ? "pending" : "invalid");
    rte_tel_data_add_dict_int(x, "dlid", e.rec.dlid);
    rte_tel_data_add_dict_int(x, "sl", e.rec.sl);
    rte_tel_data_add_dict_int(x, "mtu", e.rec.mtu ? 128 << e.rec.mtu : 0);
    rte_tel_data_add_dict_u64(x, "age_s", (now - e.updated_ms) / 1000);
    rte_tel_data_add_dict_container(d, std::to_string(idx).c_str(), x, 0);
}

int tm_path(const char *, const char *params, rte_tel_data *d) noexcept {
    return with_port(params, d, [d](Port *p) {
        int idx = 0;
        const std::uint64_t now = now_ms();
        p->fp.neigh.for_each([&](const Neigh &n) { add_neigh(d, idx++, n, now); });
        const std::uint16_t pkey = p->iface ? p->iface->pkey() : 0;
        for (auto &[k, e] : p->hca->cp.paths().entries())
            if (k.pkey == pkey && k.port == p->cfg.port)
                add_path(d, idx++, k, e, now);
    });
}

} // namespace

void telemetry_register() noexcept {
    rte_telemetry_register_cmd("/ipoib/ports", tm_ports, "net_ipoib ports: HCA, P_Key, state, addresses");
    rte_telemetry_register_cmd("/ipoib/mcg", tm_mcg, "Multicast groups of a net_ipoib port. Parameters: int port_id");
    rte_telemetry_register_cmd("/ipoib/path", tm_path,
                               "Neighbours and paths of a net_ipoib port. Parameters: int port_id");
}

} // namespace ipoib::pmd
