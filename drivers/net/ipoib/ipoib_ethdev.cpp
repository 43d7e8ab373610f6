// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib: probe/remove, devargs, ethdev ops, the control thread per HCA,
// telemetry. The fast path is in ipoib_rxtx.cpp.
#include <bus_vdev_driver.h>
#include <ethdev_driver.h>
#include <ethdev_vdev.h>
#include <rte_bus_vdev.h>
#include <rte_kvargs.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring_elem.h>
#include <rte_telemetry.h>
#include <rte_version.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "ipoib_ethdev.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

RTE_LOG_REGISTER(logtype, pmd.net.ipoib, NOTICE);
RTE_LOG_REGISTER(logtype_mcast, pmd.net.ipoib.mcast, NOTICE);
#ifdef IPOIB_DATA_DEBUG
RTE_LOG_REGISTER(logtype_data, pmd.net.ipoib.data, NOTICE);
#endif

std::uint64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

namespace {

// The driver's registered objects: the HCAs this process has open.
std::mutex g_mu;
std::vector<Hca *> g_hcas;

Port *port_of(rte_eth_dev *dev) { return *static_cast<Port **>(dev->data->dev_private); }

std::string hex16(std::uint16_t v) {
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", v);
    return b;
}

// ---------------------------------------------------------------------------
// Devargs: every argument in one place.

constexpr const char *kArgProvider = "provider", *kArgDev = "dev", *kArgPort = "port", *kArgPkey = "pkey",
                     *kArgMode = "mode", *kArgL2 = "l2", *kArgRxq = "rxq_size", *kArgTxq = "txq_size",
                     *kArgNeigh = "neigh", *kArgCapture = "capture", *kArgFabric = "fabric",
                     *kArgAllmulti = "allmulti", *kArgNeighTimeout = "neigh_timeout", *kArgGidIndex = "gid_index",
                     *kArgBcastQkey = "bcast_qkey", *kArgBcastMtu = "bcast_mtu";
const char *const kValidArgs[] = {kArgProvider, kArgDev,      kArgPort,         kArgPkey,     kArgMode,
                                  kArgL2,       kArgRxq,      kArgTxq,          kArgNeigh,    kArgCapture,
                                  kArgFabric,   kArgAllmulti, kArgNeighTimeout, kArgGidIndex, kArgBcastQkey,
                                  kArgBcastMtu, nullptr};

struct ParseCtx {
    Config *cfg;
    std::string err;
};

bool parse_uint(const char *v, unsigned long lo, unsigned long hi, unsigned long *out) {
    if (!v || !*v || *v == '-')
        return false;
    char *end = nullptr;
    errno = 0;
    const unsigned long x = std::strtoul(v, &end, 0);
    if (errno || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

int on_arg(const char *key, const char *value, void *opaque) {
    auto *c = static_cast<ParseCtx *>(opaque);
    Config &cfg = *c->cfg;
    const std::string k = key, v = value ? value : "";
    unsigned long x = 0;
    auto bad = [&](const std::string &why) {
        c->err = "devarg " + k + "=" + v + ": " + why;
        return -1;
    };
    if (k == kArgProvider) {
        if (v != "soft" && v != "verbs")
            return bad("expected soft or verbs");
        cfg.provider = v;
    } else if (k == kArgDev) {
        if (v.empty() || v.size() > 63)
            return bad("expected a device name");
        cfg.device = v;
    } else if (k == kArgPort) {
        if (!parse_uint(value, 1, 2, &x))
            return bad("expected port 1 or 2");
        cfg.port = static_cast<std::uint8_t>(x);
    } else if (k == kArgPkey) {
        if (!parse_uint(value, 1, 0xffff, &x) || !wire::pkey_valid(static_cast<std::uint16_t>(x)))
            return bad("expected a P_Key (0x0001-0xffff, not 0x8000)");
        cfg.pkey = static_cast<std::uint16_t>(x);
    } else if (k == kArgMode) {
        if (v == "connected")
            return bad("connected mode is not implemented yet; use mode=datagram");
        if (v != "datagram")
            return bad("expected datagram");
    } else if (k == kArgL2) {
        if (v == "eth")
            cfg.l2 = L2Mode::eth;
        else if (v == "ipoib")
            cfg.l2 = L2Mode::ipoib;
        else
            return bad("expected eth (Ethernet emulation) or ipoib (native)");
    } else if (k == kArgRxq || k == kArgTxq) {
        if (!parse_uint(value, 16, kMaxQueueDepth, &x) || (x & (x - 1)))
            return bad("expected a power of two, 16-" + std::to_string(kMaxQueueDepth));
        (k == kArgRxq ? cfg.rxq_size : cfg.txq_size) = static_cast<std::uint16_t>(x);
    } else if (k == kArgNeigh) {
        // MAC/IPoIB-address, e.g. 02:00:00:10:00:05/00:00:01:80:fe:80:...:00:10:00:05
        const auto slash = v.find('/');
        rte_ether_addr mac;
        if (slash == std::string::npos || rte_ether_unformat_addr(v.substr(0, slash).c_str(), &mac) != 0)
            return bad("expected MAC/20-byte-IPoIB-address");
        auto hw = wire::parse_hwaddr_text(v.substr(slash + 1));
        if (!hw.ok())
            return bad(std::string("IPoIB address: ") + wire::describe(hw.err));
        Config::StaticNeigh n;
        std::memcpy(n.mac.raw.data(), mac.addr_bytes, 6);
        n.hw = hw.value;
        cfg.neighs.push_back(n);
    } else if (k == kArgCapture) {
        cfg.capture = v;
    } else if (k == kArgFabric) {
        cfg.fabric = v;
    } else if (k == kArgAllmulti) {
        if (v != "0" && v != "1")
            return bad("expected 0 or 1");
        cfg.allmulti = v == "1";
    } else if (k == kArgNeighTimeout) {
        if (!parse_uint(value, 1, 86400, &x))
            return bad("expected seconds, 1-86400");
        cfg.neigh_timeout_s = static_cast<std::uint32_t>(x);
    } else if (k == kArgGidIndex) {
        if (!parse_uint(value, 0, 255, &x))
            return bad("expected a GID table index, 0-255");
        cfg.gid_index = static_cast<int>(x);
    } else if (k == kArgBcastQkey) {
        if (!parse_uint(value, 1, 0x7fffffff, &x))
            return bad("expected a Q_Key, 0x1-0x7fffffff (the high bit marks controlled Q_Keys)");
        cfg.bcast_qkey = static_cast<std::uint32_t>(x);
    } else if (k == kArgBcastMtu) {
        if (!parse_uint(value, 256, 4096, &x) || (x & (x - 1)))
            return bad("expected an IB MTU: 256, 512, 1024, 2048 or 4096");
        cfg.bcast_mtu = static_cast<std::uint32_t>(x);
    }
    return 0;
}

bool parse_devargs(const char *args, Config *cfg, std::string *err) {
    if (!args || !*args)
        return true;
    rte_kvargs *kv = rte_kvargs_parse(args, kValidArgs);
    if (!kv) {
        *err = std::string("cannot parse devargs '") + args + "' (known: provider, dev, port, pkey, mode, l2, "
               "rxq_size, txq_size, neigh, capture, fabric, allmulti, neigh_timeout, gid_index, bcast_qkey, "
               "bcast_mtu)";
        return false;
    }
    ParseCtx c{cfg, {}};
    for (const char *const *k = kValidArgs; *k; ++k)
        if (rte_kvargs_process(kv, *k, on_arg, &c) < 0)
            break;
    rte_kvargs_free(kv);
    if (!c.err.empty()) {
        *err = c.err;
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------
// Control thread work (always under hca->mu)

// The address handle for (LID, SL[, GID]), shared by every user. On RoCE the
// GID is the address and there are no LIDs: no GID, no handle.
hca::Ah *get_ah(Port *p, std::uint16_t dlid, std::uint8_t sl, const wire::Gid *dgid, std::uint8_t hop) {
    if (p->roce) {
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

void neigh_set(Port *p, const wire::Mac &mac, std::uint8_t state, std::uint16_t dlid, std::uint32_t qpn,
               const wire::Gid &gid, std::uint8_t sl, bool is_static) {
    Neigh *n = p->neigh.find_or_add(mac);
    if (!n)
        return;
    // RoCE: the neighbour is addressed by its GID (a GRH), InfiniBand: by its LID.
    hca::Ah *ah = state == kNeighResolved ? get_ah(p, dlid, sl, p->roce ? &gid : nullptr, 64) : nullptr;
    p->neigh.write(n, [&](Neigh &e) {
        e.state = state;
        e.dlid = dlid;
        e.qpn = qpn;
        e.gid = gid;
        e.sl = sl;
        e.ah = ah;
        e.is_static = e.is_static || is_static;
        if (!e.created_ms)
            e.created_ms = now_ms();
    });
}

// Our own key (the LID, or on RoCE the folded port GID) as the receive path compares senders with it.
void refresh_own_key(Port *p) {
    hca::PortAttr pa;
    p->hca->ctx->query_port(p->cfg.port, &pa);
    p->roce = pa.link_layer == hca::LinkLayer::ethernet;
    p->lid = p->roce ? gid_key(p->hca->cp.port_gid(p->cfg.port).raw.data()) : pa.lid;
}

bool ensure_qp(Port *p) {
    if (p->qp)
        return true;
    hca::Context &ctx = *p->hca->ctx;
    p->rx_cq = ctx.create_cq(p->cfg.rxq_size);
    p->tx_cq = ctx.create_cq(p->cfg.txq_size);
    hca::QpInit init;
    init.send_cq = p->tx_cq.get();
    init.recv_cq = p->rx_cq.get();
    init.port_num = p->cfg.port;
    init.pkey_index = static_cast<std::uint16_t>(p->iface->pkey_index());
    init.qkey = p->qkey;
    init.max_recv_wr = p->cfg.rxq_size;
    init.max_send_wr = p->cfg.txq_size;
    p->qp = p->rx_cq && p->tx_cq ? ctx.create_ud_qp(init) : nullptr;
    p->rx_nbuf = p->cfg.rxq_size;
    p->rx_bufsize = hca::kGrhLen + 4096 + 64;
    p->rx_pool = p->qp ? static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{p->rx_nbuf} * p->rx_bufsize)) : nullptr;
    p->rx_mr = p->rx_pool ? ctx.reg_mr(p->rx_pool, std::size_t{p->rx_nbuf} * p->rx_bufsize) : nullptr;
    if (!p->rx_mr) {
        IPOIB_LOG(ERR, "%s: cannot create its UD QP: %s", p->name.c_str(), ctx.last_error().c_str());
        p->qp.reset();
        return false;
    }
    std::vector<hca::RecvWr> wrs(p->rx_nbuf);
    for (std::uint32_t i = 0; i < p->rx_nbuf; ++i)
        wrs[i] = hca::RecvWr{i, {reinterpret_cast<std::uintptr_t>(p->rx_pool + std::size_t{i} * p->rx_bufsize),
                                 p->rx_bufsize, p->rx_mr->lkey()}};
    p->qp->post_recv(wrs.data(), static_cast<int>(wrs.size()));
    p->qpn = p->qp->qp_num();
    const wire::Gid gid = p->hca->cp.port_gid(p->cfg.port);
    p->gid_index = static_cast<std::uint8_t>(p->hca->cp.gid_index(p->cfg.port));
    refresh_own_key(p);
    p->hwaddr = wire::make_hwaddr(0, p->qpn, gid).value;
    IPOIB_LOG(INFO, "%s: UD QP 0x%06x, address %s", p->name.c_str(), p->qpn, wire::to_string(p->hwaddr).c_str());
    return true;
}

void set_link(Port *p, bool up) {
    rte_eth_link link{};
    link.link_status = up ? RTE_ETH_LINK_UP : RTE_ETH_LINK_DOWN;
    link.link_duplex = RTE_ETH_LINK_FULL_DUPLEX;
    link.link_speed = up ? RTE_ETH_SPEED_NUM_10G : RTE_ETH_SPEED_NUM_NONE;
    link.link_autoneg = RTE_ETH_LINK_FIXED;
    p->link_up.store(up, std::memory_order_release);
    rte_eth_linkstatus_set(p->dev, &link);
    rte_eth_dev_callback_process(p->dev, RTE_ETH_EVENT_INTR_LSC, nullptr);
    IPOIB_LOG(NOTICE, "%s: link %s", p->name.c_str(), up ? "up" : "down");
}

void on_group(Port *p, const wire::Gid &mgid, const ctrl::McMemberRecord &rec, bool joined) {
    if (!ensure_qp(p))
        return;
    const bool bcast = mgid == p->iface->broadcast().mgid;
    if (joined) {
        if (p->qp->attach_mcast(mgid, rec.mlid) != 0)
            IPOIB_MCAST_LOG(ERR, "%s: attach to %s failed: %s", p->name.c_str(), wire::to_string(mgid).c_str(),
                            p->hca->ctx->last_error().c_str());
        hca::Ah *ah = get_ah(p, rec.mlid, rec.sl, &mgid, rec.hop_limit ? rec.hop_limit : 1);
        if (bcast) {
            p->qkey = rec.qkey;
            p->qp->set_qkey(rec.qkey);
            p->mtu = static_cast<std::uint16_t>((128u << rec.mtu) - wire::kEncapLen);
            p->bcast_mgid = mgid;
            p->bcast_mlid = rec.mlid;
            p->bcast_sl = rec.sl;
            p->bcast_ah = ah;
            p->dev->data->mtu = p->mtu;
        } else {
            for (auto &e : p->mcast)
                if (!e.used) {
                    e.seq.fetch_add(1, std::memory_order_acq_rel);
                    e.mgid = mgid;
                    e.mlid = rec.mlid;
                    e.ah = ah;
                    e.used = 1;
                    e.seq.fetch_add(1, std::memory_order_release);
                    break;
                }
        }
        IPOIB_MCAST_LOG(INFO, "%s: attached to %s (MLID 0x%04x)", p->name.c_str(), wire::to_string(mgid).c_str(),
                        rec.mlid);
    } else {
        p->qp->detach_mcast(mgid, rec.mlid);
        for (auto &e : p->mcast)
            if (e.used && e.mgid == mgid) {
                e.seq.fetch_add(1, std::memory_order_acq_rel);
                e.used = 0;
                e.seq.fetch_add(1, std::memory_order_release);
            }
    }
}

void on_link(Port *p, bool up) {
    if (up) {
        if (!ensure_qp(p))
            return;
        refresh_own_key(p);
        p->qp_ready.store(p->qp.get(), std::memory_order_release);
    }
    set_link(p, up);
}

void handle_requests(Port *p) {
    Request r;
    const std::uint16_t pkey = p->iface ? p->iface->pkey() : 0;
    while (rte_ring_sc_dequeue_elem(p->requests, &r, sizeof r) == 0) {
        wire::Mac mac;
        std::memcpy(mac.raw.data(), r.mac, 6);
        wire::Gid gid;
        std::memcpy(gid.raw.data(), r.gid, 16);
        if (r.kind == 1) {  // learn: a sender announced its address (ARP/ND)
            Neigh *old = p->neigh.find(mac);
            const bool fresh = !old || old->state != kNeighResolved || old->dlid != r.lid || old->qpn != r.qpn;
            neigh_set(p, mac, kNeighResolved, r.lid, r.qpn, gid, p->bcast_sl, false);
            p->neigh.index(r.lid, r.qpn, mac);
            if (fresh && p->iface)
                p->hca->cp.request_path(gid, pkey);  // refine SL/LID from the SA
        } else if (r.kind == 2) {  // resolve a MAC the fast path has frames for
            Neigh *n = p->neigh.find(mac);
            if (std::memcmp(r.mac, p->mac.addr_bytes, 6) == 0) {
                neigh_set(p, mac, kNeighResolved, p->lid, p->qpn, p->hwaddr.gid(), p->bcast_sl, false);
            } else if (is_lidqpn_mac(mac) && r.lid && !p->roce) {  // RoCE: a LID is no address
                neigh_set(p, mac, kNeighResolved, r.lid, r.qpn, wire::Gid{}, p->bcast_sl, false);
            } else if (n && n->gid != wire::Gid{}) {
                if (n->state != kNeighResolved && p->iface)
                    p->hca->cp.request_path(n->gid, pkey);
            } else if (gid != wire::Gid{}) {
                neigh_set(p, mac, kNeighIncomplete, 0, r.qpn, gid, 0, false);
                if (p->iface)
                    p->hca->cp.request_path(gid, pkey);
            } else if (!n) {
                neigh_set(p, mac, kNeighFailed, 0, 0, wire::Gid{}, 0, false);  // never announced itself
            }
        } else if (r.kind == 3 && p->iface) {
            p->hca->cp.request_sendonly(p->iface, gid);
        }
    }
}

void on_path(Hca *h, const wire::Gid &dgid, std::uint16_t pkey, ctrl::SaStatus st, const ctrl::PathRecord *rec) {
    for (Port *p : h->ports) {
        if (!p->iface || (p->iface->pkey() & 0x7fff) != (pkey & 0x7fff))
            continue;
        Neigh *slots = p->neigh.slots();
        for (std::uint32_t i = 0; i < NeighTable::kSize; ++i) {
            Neigh &n = slots[i];
            if (n.state == kNeighEmpty || n.gid != dgid)
                continue;
            wire::Mac mac;
            std::memcpy(mac.raw.data(), n.mac, 6);
            if (st.ok() && rec) {
                const std::uint16_t key = p->roce ? gid_key(dgid.raw.data()) : rec->dlid;
                neigh_set(p, mac, kNeighResolved, key, n.qpn, dgid, rec->sl, false);
                p->neigh.index(key, n.qpn, mac);
            } else if (n.state != kNeighResolved) {
                neigh_set(p, mac, kNeighFailed, 0, n.qpn, dgid, 0, false);
                IPOIB_LOG(INFO, "%s: no path to %s: %s", p->name.c_str(), wire::to_string(dgid).c_str(),
                          st.message().c_str());
            }
        }
    }
}

void age_neighbours(Port *p, std::uint64_t now) {
    if (now - p->last_age_ms < 1000)
        return;
    p->last_age_ms = now;
    const std::uint64_t limit = std::uint64_t{p->cfg.neigh_timeout_s} * 1000;
    Neigh *slots = p->neigh.slots();
    for (std::uint32_t i = 0; i < NeighTable::kSize; ++i) {
        Neigh &n = slots[i];
        if (n.state == kNeighEmpty || n.is_static)
            continue;
        const std::uint64_t last = std::max(n.used_ms.load(std::memory_order_relaxed), n.created_ms);
        if (now - last > limit) {
            p->neigh.unindex(n.dlid, n.qpn);
            p->neigh.remove(&n);
        }
    }
}

void *control_thread(void *arg) {
    auto *h = static_cast<Hca *>(arg);
    while (!h->stop.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lk(h->mu);
        h->cp.run_once(2);
        const std::uint64_t now = now_ms();
        for (Port *p : h->ports) {
            handle_requests(p);
            age_neighbours(p, now);
        }
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

Hca *get_hca(const Config &cfg, std::string *err) {
    const char *sim = std::getenv("SIM_HOST");
    const std::string dev = !cfg.device.empty() ? cfg.device : sim ? sim : "";
    const std::string key = cfg.provider + ":" + dev;
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
    std::string opts;
    if (!cfg.fabric.empty())
        opts += "fabric=" + cfg.fabric;
    if (!cfg.capture.empty())
        opts += (opts.empty() ? "" : ",") + std::string("capture=") + cfg.capture;
    auto o = hca::open_device(cfg.provider, dev, opts);
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
    ctrl::CpConfig cc;
    cc.log = make_logger();
    cc.gid_index = cfg.gid_index;
    if (cfg.provider == "verbs")
        cc.sa.ca_name = h->device.c_str();  // umad on the same CA (InfiniBand ports)
    if (!h->cp.open(*h->ctx, cc, err))
        return nullptr;
    Hca *raw = h.get();
    h->cp.on_path = [raw](const wire::Gid &g, std::uint16_t pk, ctrl::SaStatus st, const ctrl::PathRecord *r) {
        on_path(raw, g, pk, st, r);
    };
    const std::string tname = "ipoib-" + dev.substr(0, 8);
    if (rte_ctrl_thread_create(&h->thread, tname.c_str(), nullptr, control_thread, raw) != 0) {
        *err = "cannot create the control thread";
        return nullptr;
    }
    h->thread_running = true;
    g_hcas.push_back(h.release());
    return raw;
}

void put_hca(Hca *h) {
    if (--h->refs > 0)
        return;
    h->stop.store(true, std::memory_order_release);
    if (h->thread_running)
        pthread_join(h->thread, nullptr);
    h->cp.stop();
    g_hcas.erase(std::remove(g_hcas.begin(), g_hcas.end(), h), g_hcas.end());
    delete h;
}

// ---------------------------------------------------------------------------
// ethdev ops

int dev_configure(rte_eth_dev *dev) {
    Port *p = port_of(dev);
    if (dev->data->nb_rx_queues > 1 || dev->data->nb_tx_queues > 1) {
        IPOIB_LOG(ERR, "%s: one RX and one TX queue per port (asked for %u/%u)", p->name.c_str(),
                  dev->data->nb_rx_queues, dev->data->nb_tx_queues);
        return -EINVAL;
    }
    return 0;
}

int dev_infos_get(rte_eth_dev *dev, rte_eth_dev_info *info) {
    Port *p = port_of(dev);
    info->max_mac_addrs = 1;
    info->max_rx_pktlen = p->mtu + (p->cfg.l2 == L2Mode::eth ? RTE_ETHER_HDR_LEN : wire::kEncapLen);
    info->min_mtu = 68;
    info->max_mtu = p->mtu;
    info->max_rx_queues = 1;
    info->max_tx_queues = 1;
    info->min_rx_bufsize = 64;
    info->rx_offload_capa = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_SCATTER;
    info->tx_offload_capa = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM |
                            RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    info->rx_desc_lim.nb_max = kMaxQueueDepth;
    info->rx_desc_lim.nb_min = 16;
    info->rx_desc_lim.nb_align = 1;
    info->tx_desc_lim = info->rx_desc_lim;
    info->speed_capa = RTE_ETH_LINK_SPEED_10G;
    return 0;
}

const std::uint32_t kPtypes[] = {RTE_PTYPE_L2_ETHER,  RTE_PTYPE_L2_ETHER_ARP, RTE_PTYPE_L3_IPV4, RTE_PTYPE_L3_IPV6,
                                 RTE_PTYPE_L4_TCP,    RTE_PTYPE_L4_UDP,       RTE_PTYPE_L4_ICMP, RTE_PTYPE_UNKNOWN};
const std::uint32_t *supported_ptypes(rte_eth_dev *) { return kPtypes; }

int dev_start(rte_eth_dev *dev) {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
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
    }
    for (auto &n : p->cfg.neighs) {
        Neigh *e = p->neigh.find(n.mac);
        if (!e || e->state != kNeighResolved)
            neigh_set(p, n.mac, kNeighIncomplete, 0, n.hw.qpn(), n.hw.gid(), 0, true);
    }
    p->started = true;
    dev->data->rx_queue_state[0] = RTE_ETH_QUEUE_STATE_STARTED;
    dev->data->tx_queue_state[0] = RTE_ETH_QUEUE_STATE_STARTED;
    return 0;
}

void drop_pending(Port *p) {
    for (TxQueue *q : p->txq) {
        if (!q)
            continue;
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        q->npending = 0;
        if (p->tx_cq)
            tx_flush_completions(q);
    }
}

int dev_stop(rte_eth_dev *dev) {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    if (p->iface) {
        p->hca->cp.remove_interface(p->iface);  // leaves every group; link goes down
        p->iface = nullptr;
    }
    p->link_up.store(false, std::memory_order_release);
    p->qp_ready.store(nullptr, std::memory_order_release);
    drop_pending(p);
    p->started = false;
    dev->data->dev_started = 0;
    dev->data->rx_queue_state[0] = RTE_ETH_QUEUE_STATE_STOPPED;
    dev->data->tx_queue_state[0] = RTE_ETH_QUEUE_STATE_STOPPED;
    rte_eth_link link{};
    rte_eth_linkstatus_set(dev, &link);
    return 0;
}

void rx_queue_release(rte_eth_dev *dev, std::uint16_t qid) {
    Port *p = port_of(dev);
    if (qid < p->rxq.size()) {
        delete p->rxq[qid];
        p->rxq[qid] = nullptr;
    }
    dev->data->rx_queues[qid] = nullptr;
}

void tx_queue_release(rte_eth_dev *dev, std::uint16_t qid) {
    Port *p = port_of(dev);
    if (qid < p->txq.size() && p->txq[qid]) {
        TxQueue *q = p->txq[qid];
        for (auto *m : q->inflight)
            if (m)
                rte_pktmbuf_free(m);
        for (std::uint32_t i = 0; i < q->npending; ++i)
            rte_pktmbuf_free(q->pending[i].m);
        delete q;
        p->txq[qid] = nullptr;
    }
    dev->data->tx_queues[qid] = nullptr;
}

int dev_close(rte_eth_dev *dev) {
    if (rte_eal_process_type() != RTE_PROC_PRIMARY)
        return 0;
    Port *p = port_of(dev);
    if (p->started)
        dev_stop(dev);
    for (std::uint16_t i = 0; i < dev->data->nb_rx_queues; ++i)
        rx_queue_release(dev, i);
    for (std::uint16_t i = 0; i < dev->data->nb_tx_queues; ++i)
        tx_queue_release(dev, i);
    {
        std::lock_guard<std::mutex> g(g_mu);
        Hca *h = p->hca;
        {
            std::lock_guard<std::mutex> lk(h->mu);
            h->ports.erase(std::remove(h->ports.begin(), h->ports.end(), p), h->ports.end());
            p->qp.reset();
            p->rx_cq.reset();
            p->tx_cq.reset();
            p->rx_mr.reset();
            if (p->rx_pool)
                h->ctx->free_dma(p->rx_pool);
            p->ahs.clear();
        }
        put_hca(h);
    }
    rte_ring_free(p->requests);
    dev->data->mac_addrs = nullptr;  // points into Port, not rte_malloc'ed
    delete p;
    *static_cast<Port **>(dev->data->dev_private) = nullptr;
    return 0;
}

int link_update(rte_eth_dev *dev, int) {
    Port *p = port_of(dev);
    rte_eth_link link{};
    const bool up = p->link_up.load(std::memory_order_acquire);
    link.link_status = up ? RTE_ETH_LINK_UP : RTE_ETH_LINK_DOWN;
    link.link_duplex = RTE_ETH_LINK_FULL_DUPLEX;
    link.link_speed = up ? RTE_ETH_SPEED_NUM_10G : RTE_ETH_SPEED_NUM_NONE;
    return rte_eth_linkstatus_set(dev, &link);
}

int stats_get(rte_eth_dev *dev, rte_eth_stats *s) {
    Port *p = port_of(dev);
    for (std::size_t i = 0; i < p->rxq.size(); ++i)
        if (RxQueue *q = p->rxq[i]) {
            s->ipackets += q->st.packets;
            s->ibytes += q->st.bytes;
            s->ierrors += q->st.errors + q->st.bad_frames + q->st.translate_errors + q->st.unsupported_ethertype;
            s->rx_nombuf += q->st.nombuf;
            if (i < RTE_ETHDEV_QUEUE_STAT_CNTRS) {
                s->q_ipackets[i] = q->st.packets;
                s->q_ibytes[i] = q->st.bytes;
            }
        }
    for (std::size_t i = 0; i < p->txq.size(); ++i)
        if (TxQueue *q = p->txq[i]) {
            s->opackets += q->st.packets;
            s->obytes += q->st.bytes;
            s->oerrors += q->st.errors + q->st.unresolved_drop + q->st.too_big + q->st.unsupported_ethertype +
                          q->st.link_down_drop + q->st.translate_errors + q->st.mcast_unjoined;
            if (i < RTE_ETHDEV_QUEUE_STAT_CNTRS) {
                s->q_opackets[i] = q->st.packets;
                s->q_obytes[i] = q->st.bytes;
            }
        }
    return 0;
}

int stats_reset(rte_eth_dev *dev) {
    Port *p = port_of(dev);
    if (p->qp)
        p->hca_base = p->qp->counters();
    for (auto *q : p->rxq)
        if (q)
            q->st = RxStats{};
    for (auto *q : p->txq)
        if (q)
            q->st = TxStats{};
    return 0;
}

// xstats: the IPoIB counters of this port, its interface and its HCA port.
struct XstatDef {
    const char *name;
    std::uint64_t (*get)(Port *);
};
#define RXS(f) [](Port *p) -> std::uint64_t { return p->rxq.empty() || !p->rxq[0] ? 0 : p->rxq[0]->st.f; }
#define TXS(f) [](Port *p) -> std::uint64_t { return p->txq.empty() || !p->txq[0] ? 0 : p->txq[0]->st.f; }
#define IFS(f) [](Port *p) -> std::uint64_t { return p->iface ? p->iface->counters().f : 0; }
const XstatDef kXstats[] = {
    {"rx_loopback_discards", RXS(loopback_discard)},
    {"rx_unsupported_ethertype", RXS(unsupported_ethertype)},
    {"rx_arp_translated", RXS(arp_translated)},
    {"rx_nd_translated", RXS(nd_translated)},
    {"rx_translate_errors", RXS(translate_errors)},
    {"rx_bad_frames", RXS(bad_frames)},
    {"rx_hca_errors", RXS(errors)},
    {"tx_unresolved_drops", TXS(unresolved_drop)},
    {"tx_unresolved_queued", TXS(unresolved_queued)},
    {"tx_too_big", TXS(too_big)},
    {"tx_unsupported_ethertype", TXS(unsupported_ethertype)},
    {"tx_link_down_drops", TXS(link_down_drop)},
    {"tx_arp_translated", TXS(arp_translated)},
    {"tx_nd_translated", TXS(nd_translated)},
    {"tx_translate_errors", TXS(translate_errors)},
    {"tx_mcast_unjoined_drops", TXS(mcast_unjoined)},
    {"tx_hca_errors", TXS(errors)},
    {"mcast_joins", IFS(joins)},
    {"mcast_join_failures", IFS(join_failures)},
    {"mcast_leaves", IFS(leaves)},
    {"mcast_flushes", IFS(flushes)},
    {"bcast_group_absent", IFS(broadcast_absent)},
    {"bcast_group_mtu_too_big", IFS(broadcast_mtu_too_big)},
    {"port_not_active", IFS(port_not_active)},
    {"pkey_missing", IFS(pkey_missing)},
    {"sa_timeouts", IFS(sa_timeouts)},
    {"path_resolved", [](Port *p) -> std::uint64_t { return p->hca->cp.counters().path_resolved; }},
    {"path_failed", [](Port *p) -> std::uint64_t { return p->hca->cp.counters().path_failed; }},
#define HCAS(f) [](Port *p) -> std::uint64_t { return p->qp ? p->qp->counters().f - p->hca_base.f : 0; }
    {"hca_drop_no_buffer", HCAS(drop_no_buffer)},
    {"hca_drop_qkey", HCAS(drop_qkey)},
    {"hca_drop_pkey", HCAS(drop_pkey)},
    {"hca_drop_too_long", HCAS(drop_too_long)},
    {"hca_drop_port_down", HCAS(drop_port_down)},
    {"hca_rx_errors", HCAS(rx_errors)},
};
constexpr unsigned kNumXstats = sizeof kXstats / sizeof kXstats[0];

int xstats_get(rte_eth_dev *dev, rte_eth_xstat *x, unsigned n) {
    if (n < kNumXstats)
        return kNumXstats;
    Port *p = port_of(dev);
    for (unsigned i = 0; i < kNumXstats; ++i)
        x[i] = rte_eth_xstat{i, kXstats[i].get(p)};
    return kNumXstats;
}

int xstats_get_names(rte_eth_dev *, rte_eth_xstat_name *names, unsigned size) {
    if (names && size >= kNumXstats)
        for (unsigned i = 0; i < kNumXstats; ++i)
            rte_strscpy(names[i].name, kXstats[i].name, sizeof names[i].name);
    return kNumXstats;
}

int rx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t, unsigned, const rte_eth_rxconf *,
                   rte_mempool *mp) {
    Port *p = port_of(dev);
    if (p->rxq.size() <= qid)
        p->rxq.resize(qid + 1, nullptr);
    delete p->rxq[qid];
    auto *q = new RxQueue{};
    q->port = p;
    q->mp = mp;
    q->queue_id = qid;
    p->rxq[qid] = q;
    dev->data->rx_queues[qid] = q;
    return 0;
}

int tx_queue_setup(rte_eth_dev *dev, std::uint16_t qid, std::uint16_t nb_desc, unsigned, const rte_eth_txconf *) {
    Port *p = port_of(dev);
    if (p->txq.size() <= qid)
        p->txq.resize(qid + 1, nullptr);
    if (p->txq[qid])
        tx_queue_release(dev, qid);
    const std::uint32_t n = std::clamp<std::uint32_t>(nb_desc ? nb_desc : p->cfg.txq_size, 64, kMaxQueueDepth);
    auto *q = new TxQueue{};
    q->port = p;
    q->queue_id = qid;
    q->inflight.assign(n, nullptr);
    q->free_ids.reserve(n);
    for (std::uint32_t i = n; i-- > 0;)
        q->free_ids.push_back(i);
    q->slot_size = 2 * 4096 + 256;
    q->bounce.assign(std::size_t{n} * q->slot_size, 0);
    q->hdr.assign(n, {});
    p->txq[qid] = q;
    dev->data->tx_queues[qid] = q;
    return 0;
}

int promiscuous_toggle(rte_eth_dev *) { return 0; }  // IPoIB unicast has no promiscuity

int allmulticast_enable(rte_eth_dev *dev) {
    Port *p = port_of(dev);
    p->cfg.allmulti = true;  // takes effect at the next start
    return 0;
}
int allmulticast_disable(rte_eth_dev *dev) {
    port_of(dev)->cfg.allmulti = false;
    return 0;
}

int mtu_set(rte_eth_dev *dev, std::uint16_t mtu) {
    Port *p = port_of(dev);
    if (mtu > p->mtu) {
        IPOIB_LOG(ERR, "%s: MTU %u larger than the broadcast group allows (%u)", p->name.c_str(), mtu, p->mtu);
        return -EINVAL;
    }
    return 0;
}

int mac_addr_set(rte_eth_dev *, rte_ether_addr *) { return -ENOTSUP; }  // derived from the port GUID

eth_dev_ops make_ops() {
    eth_dev_ops o{};
    o.dev_configure = dev_configure;
    o.dev_start = dev_start;
    o.dev_stop = dev_stop;
    o.dev_close = dev_close;
    o.promiscuous_enable = promiscuous_toggle;
    o.promiscuous_disable = promiscuous_toggle;
    o.allmulticast_enable = allmulticast_enable;
    o.allmulticast_disable = allmulticast_disable;
    o.link_update = link_update;
    o.stats_get = stats_get;
    o.stats_reset = stats_reset;
    o.xstats_get = xstats_get;
    o.xstats_reset = stats_reset;
    o.xstats_get_names = xstats_get_names;
    o.dev_infos_get = dev_infos_get;
    o.dev_supported_ptypes_get = supported_ptypes;
    o.mtu_set = mtu_set;
    o.rx_queue_setup = rx_queue_setup;
    o.rx_queue_release = rx_queue_release;
    o.tx_queue_setup = tx_queue_setup;
    o.tx_queue_release = tx_queue_release;
    o.mac_addr_set = mac_addr_set;
    return o;
}
const eth_dev_ops kOps = make_ops();

// ---------------------------------------------------------------------------
// probe / remove

int probe(rte_vdev_device *vdev) {
    const char *name = rte_vdev_device_name(vdev);
    // The driver uses DPDK's internal driver structures, which have no ABI promise.
    const std::string built = "DPDK " + std::to_string(RTE_VER_YEAR) + "." + std::to_string(RTE_VER_MONTH) + "." +
                              std::to_string(RTE_VER_MINOR);
    if (built != rte_version()) {
        IPOIB_LOG(ERR, "%s: built against %s, running %s: refusing to load", name, built.c_str(), rte_version());
        return -ENOTSUP;
    }
    if (rte_eal_process_type() != RTE_PROC_PRIMARY) {
        IPOIB_LOG(ERR, "%s: secondary processes are not supported", name);
        return -ENOTSUP;
    }
    Config cfg;
    std::string err;
    if (!parse_devargs(rte_vdev_device_args(vdev), &cfg, &err)) {
        IPOIB_LOG(ERR, "%s: %s", name, err.c_str());
        return -EINVAL;
    }
    std::lock_guard<std::mutex> g(g_mu);
    Hca *h = get_hca(cfg, &err);
    if (!h) {
        IPOIB_LOG(ERR, "%s: %s", name, err.c_str());
        return -ENODEV;
    }
    if (cfg.port > h->ctx->num_ports()) {
        IPOIB_LOG(ERR, "%s: devarg port=%u: %s has %u port(s)", name, cfg.port, h->ctx->name().c_str(),
                  h->ctx->num_ports());
        put_hca(h);
        return -EINVAL;
    }
    {
        std::lock_guard<std::mutex> lk(h->mu);
        for (Port *o : h->ports)
            if (o->cfg.port == cfg.port && (o->cfg.pkey & 0x7fff) == (cfg.pkey & 0x7fff)) {
                IPOIB_LOG(ERR, "%s: %s port %u P_Key %s is already %s", name, h->ctx->name().c_str(), cfg.port,
                          hex16(cfg.pkey).c_str(), o->name.c_str());
                put_hca(h);
                return -EEXIST;
            }
    }
    rte_eth_dev *dev = rte_eth_vdev_allocate(vdev, sizeof(Port *));
    if (!dev) {
        put_hca(h);
        return -ENOMEM;
    }
    auto *p = new Port();
    *static_cast<Port **>(dev->data->dev_private) = p;
    p->dev = dev;
    p->port_id = dev->data->port_id;
    p->name = name;
    p->cfg = cfg;
    p->hca = h;
    const std::string ring = "ipoib_req_" + std::to_string(p->port_id);
    p->requests = rte_ring_create_elem(ring.c_str(), sizeof(Request), 1024, rte_socket_id(), RING_F_SC_DEQ);
    if (cfg.l2 == L2Mode::ipoib) {
        rte_mbuf_dynfield f{};
        rte_strscpy(f.name, RTE_PMD_IPOIB_DYNFIELD_NAME, sizeof f.name);
        f.size = sizeof(struct rte_pmd_ipoib_addr);
        f.align = alignof(struct rte_pmd_ipoib_addr);
        p->dynfield = rte_mbuf_dynfield_register(&f);
    }
    const wire::Mac mac = wire::mac_from_guid(wire::guid_from_gid(h->cp.port_gid(cfg.port)));
    std::memcpy(p->mac.addr_bytes, mac.raw.data(), 6);
    if (!p->requests || (cfg.l2 == L2Mode::ipoib && p->dynfield < 0)) {
        IPOIB_LOG(ERR, "%s: cannot allocate its request ring or mbuf field", name);
        rte_ring_free(p->requests);
        delete p;
        rte_eth_dev_release_port(dev);
        put_hca(h);
        return -ENOMEM;
    }
    dev->data->mac_addrs = &p->mac;
    dev->data->mtu = p->mtu;
    dev->data->dev_flags |= RTE_ETH_DEV_INTR_LSC | RTE_ETH_DEV_AUTOFILL_QUEUE_XSTATS;
    dev->dev_ops = &kOps;
    dev->rx_pkt_burst = rx_burst;
    dev->tx_pkt_burst = tx_burst;
    {
        std::lock_guard<std::mutex> lk(h->mu);
        h->ports.push_back(p);
    }
    rte_eth_dev_probing_finish(dev);
    IPOIB_LOG(INFO, "%s: port %u on %s port %u, P_Key %s, MAC " RTE_ETHER_ADDR_PRT_FMT ", l2=%s", name, p->port_id,
              h->ctx->name().c_str(), cfg.port, cfg.pkey ? hex16(cfg.pkey).c_str() : "index 0",
              RTE_ETHER_ADDR_BYTES(&p->mac), cfg.l2 == L2Mode::eth ? "eth" : "ipoib");
    return 0;
}

int remove(rte_vdev_device *vdev) {
    rte_eth_dev *dev = rte_eth_dev_allocated(rte_vdev_device_name(vdev));
    if (!dev)
        return 0;
    if (*static_cast<Port **>(dev->data->dev_private))
        dev_close(dev);
    return rte_eth_dev_release_port(dev);
}

// Constant-initialised: the registration constructor below runs before any
// dynamic initialiser of this file would.
rte_vdev_driver g_driver = {{}, {}, probe, remove, nullptr, nullptr, 0};

// ---------------------------------------------------------------------------
// Telemetry: /ipoib/ports, /ipoib/mcg,<port>, /ipoib/path,<port>

Port *telemetry_port(const char *params) {
    if (!params || !*params)
        return nullptr;
    const int id = std::atoi(params);
    for (Hca *h : g_hcas)
        for (Port *p : h->ports)
            if (p->port_id == id)
                return p;
    return nullptr;
}

int tm_ports(const char *, const char *, rte_tel_data *d) {
    std::lock_guard<std::mutex> g(g_mu);
    rte_tel_data_start_dict(d);
    for (Hca *h : g_hcas) {
        std::lock_guard<std::mutex> lk(h->mu);
        for (Port *p : h->ports) {
            rte_tel_data *x = rte_tel_data_alloc();
            rte_tel_data_start_dict(x);
            rte_tel_data_add_dict_string(x, "name", p->name.c_str());
            rte_tel_data_add_dict_string(x, "hca", h->ctx->name().c_str());
            rte_tel_data_add_dict_int(x, "hca_port", p->cfg.port);
            rte_tel_data_add_dict_string(x, "pkey", hex16(p->iface ? p->iface->pkey() : p->cfg.pkey).c_str());
            rte_tel_data_add_dict_string(x, "state", p->iface ? ctrl::to_string(p->iface->state()) : "stopped");
            rte_tel_data_add_dict_string(x, "link", p->link_up ? "up" : "down");
            rte_tel_data_add_dict_int(x, "lid", p->lid);
            rte_tel_data_add_dict_u64(x, "qpn", p->qpn);
            rte_tel_data_add_dict_string(x, "hwaddr", wire::to_string(p->hwaddr).c_str());
            char mac[RTE_ETHER_ADDR_FMT_SIZE];
            rte_ether_format_addr(mac, sizeof mac, &p->mac);
            rte_tel_data_add_dict_string(x, "mac", mac);
            rte_tel_data_add_dict_int(x, "mtu", p->mtu);
            rte_tel_data_add_dict_string(x, "l2", p->cfg.l2 == L2Mode::eth ? "eth" : "ipoib");
            rte_tel_data_add_dict_string(x, "broadcast", wire::to_string(p->bcast_mgid).c_str());
            rte_tel_data_add_dict_container(d, std::to_string(p->port_id).c_str(), x, 0);
        }
    }
    return 0;
}

int tm_mcg(const char *, const char *params, rte_tel_data *d) {
    std::lock_guard<std::mutex> g(g_mu);
    Port *p = telemetry_port(params);
    if (!p)
        return -EINVAL;
    std::lock_guard<std::mutex> lk(p->hca->mu);
    // Keyed by number: telemetry names cannot hold ':' (GIDs, MACs), and
    // arrays cannot hold dictionaries.
    rte_tel_data_start_dict(d);
    int idx = 0;
    if (!p->iface)
        return 0;
    const auto &b = p->iface->broadcast();
    auto add = [&](const std::string &mgid, std::uint16_t mlid, const char *state, unsigned js, unsigned joins,
                   unsigned fails, const std::string &err) {
        rte_tel_data *x = rte_tel_data_alloc();
        rte_tel_data_start_dict(x);
        rte_tel_data_add_dict_string(x, "mgid", mgid.c_str());
        rte_tel_data_add_dict_string(x, "mlid", hex16(mlid).c_str());
        rte_tel_data_add_dict_string(x, "state", state);
        rte_tel_data_add_dict_int(x, "join_state", static_cast<int>(js));
        rte_tel_data_add_dict_int(x, "joins", static_cast<int>(joins));
        rte_tel_data_add_dict_int(x, "failures", static_cast<int>(fails));
        if (!err.empty())
            rte_tel_data_add_dict_string(x, "last_error", err.c_str());
        rte_tel_data_add_dict_container(d, std::to_string(idx++).c_str(), x, 0);
    };
    add(wire::to_string(b.mgid), b.mlid, p->iface->up() ? "joined (broadcast)" : ctrl::to_string(p->iface->state()),
        ctrl::kFullMember, static_cast<unsigned>(p->iface->counters().joins), 0, "");
    for (auto &gv : p->iface->groups())
        add(wire::to_string(gv.mgid), gv.mlid, gv.joined ? "joined" : "joining", gv.join_state, gv.joins, gv.failures,
            gv.last_error);
    return 0;
}

int tm_path(const char *, const char *params, rte_tel_data *d) {
    std::lock_guard<std::mutex> g(g_mu);
    Port *p = telemetry_port(params);
    if (!p)
        return -EINVAL;
    std::lock_guard<std::mutex> lk(p->hca->mu);
    rte_tel_data_start_dict(d);  // keyed by number, as /ipoib/mcg
    int idx = 0;
    const std::uint64_t now = now_ms();
    Neigh *slots = p->neigh.slots();
    static const char *states[] = {"empty", "incomplete", "resolved", "failed"};
    for (std::uint32_t i = 0; i < NeighTable::kSize; ++i) {
        Neigh &n = slots[i];
        if (n.state == kNeighEmpty)
            continue;
        rte_tel_data *x = rte_tel_data_alloc();
        rte_tel_data_start_dict(x);
        char mac[RTE_ETHER_ADDR_FMT_SIZE];
        rte_ether_format_addr(mac, sizeof mac, reinterpret_cast<const rte_ether_addr *>(n.mac));
        rte_tel_data_add_dict_string(x, "neighbour", mac);
        rte_tel_data_add_dict_string(x, "state", states[n.state & 3]);
        rte_tel_data_add_dict_string(x, "gid", wire::to_string(n.gid).c_str());
        rte_tel_data_add_dict_u64(x, "qpn", n.qpn);
        rte_tel_data_add_dict_int(x, "lid", n.dlid);
        rte_tel_data_add_dict_int(x, "sl", n.sl);
        rte_tel_data_add_dict_string(x, "kind", n.is_static ? "static" : "learned");
        const std::uint64_t last = std::max(n.used_ms.load(std::memory_order_relaxed), n.created_ms);
        rte_tel_data_add_dict_u64(x, "idle_s", (now - last) / 1000);
        rte_tel_data_add_dict_container(d, std::to_string(idx++).c_str(), x, 0);
    }
    for (auto &[k, e] : p->hca->cp.paths().entries()) {
        if (k.pkey != (p->iface ? p->iface->pkey() : 0))
            continue;
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
        rte_tel_data_add_dict_container(d, std::to_string(idx++).c_str(), x, 0);
    }
    return 0;
}

} // namespace

} // namespace ipoib::pmd

// Registration (C linkage names, as DPDK expects).
RTE_INIT(ipoib_pmd_register) {
    ipoib::pmd::g_driver.driver.name = "net_ipoib";
    rte_vdev_register(&ipoib::pmd::g_driver);
    rte_telemetry_register_cmd("/ipoib/ports", ipoib::pmd::tm_ports, "net_ipoib ports: HCA, P_Key, state, addresses");
    rte_telemetry_register_cmd("/ipoib/mcg", ipoib::pmd::tm_mcg,
                               "Multicast groups of a net_ipoib port. Parameters: int port_id");
    rte_telemetry_register_cmd("/ipoib/path", ipoib::pmd::tm_path,
                               "Neighbours and paths of a net_ipoib port. Parameters: int port_id");
}

// What dpdk-pmdinfo.py reads (pmdinfogen is not shipped, and C++ mangles its markers).
extern "C" {
__attribute__((used)) const char ipoib_pmd_info[] =
    "PMD_INFO_STRING= {\"name\" : \"net_ipoib\", \"params\" : \""
    "provider=<soft|verbs> dev=<device> port=<1|2> pkey=<p_key> mode=<datagram> l2=<eth|ipoib> "
    "rxq_size=<16-1024> txq_size=<16-1024> neigh=<mac/hwaddr> capture=<pcap file> fabric=<name> "
    "allmulti=<0|1> neigh_timeout=<seconds> gid_index=<0-255> bcast_qkey=<q_key> bcast_mtu=<256-4096>\", "
    "\"pci_ids\" : []}";
}
