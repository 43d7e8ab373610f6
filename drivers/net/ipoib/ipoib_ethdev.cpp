// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib: probe/remove, the ethdev operations table and the device-level
// operations (configure, info, start, stop, close, link, MTU). Queue setup,
// stats, telemetry, the control thread and the fast path are in their own
// files (see ipoib_ethdev.hpp and ipoib_port.hpp).
#include <bus_vdev_driver.h>
#include <ethdev_vdev.h>
#include <rte_malloc.h>
#include <rte_bus_vdev.h>
#include <rte_interrupts.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring_elem.h>
#include <rte_version.h>

#include <algorithm>
#include <cstring>

#include "ipoib_control.hpp"
#include "ipoib_ethdev.hpp"
#include "ipoib_offload.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::pmd {

RTE_LOG_REGISTER(logtype, pmd.net.ipoib, NOTICE);
RTE_LOG_REGISTER(logtype_mcast, pmd.net.ipoib.mcast, NOTICE);
#ifdef IPOIB_DATA_DEBUG
RTE_LOG_REGISTER(logtype_data, pmd.net.ipoib.data, NOTICE);
#endif

namespace {

// Queues the port offers: the devarg's cap, and for RX the HCA's receive
// queues per QP (RSS). TX queues beyond the HCA's send queues per QP share
// one (ipoib_port.hpp's locking rules).
std::uint16_t max_rx_queues(const Port *p) noexcept {
    return static_cast<std::uint16_t>(std::min<std::uint32_t>(p->cfg.max_queues, p->hca->ctx->caps().max_recv_queues));
}
std::uint16_t max_tx_queues(const Port *p) noexcept { return p->cfg.max_queues; }

int dev_configure(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    if (dev->data->nb_rx_queues > max_rx_queues(p) || dev->data->nb_tx_queues > max_tx_queues(p)) {
        IPOIB_LOG(ERR, "%s: %u RX / %u TX queues asked, %u / %u offered (devarg max_queues; RX: %s has %u receive "
                  "queues per QP)", p->name.c_str(), dev->data->nb_rx_queues, dev->data->nb_tx_queues,
                  max_rx_queues(p), max_tx_queues(p), p->hca->ctx->name().c_str(),
                  p->hca->ctx->caps().max_recv_queues);
        return -EINVAL;
    }
    return rss_configure(dev);
}

int dev_infos_get(rte_eth_dev *dev, rte_eth_dev_info *info) noexcept {
    const Port *p = port_of(dev);
    info->max_mac_addrs = 1;
    // Known before the first join: the port's MTU bounds the broadcast group's
    // (a bigger group is refused). The MTU in use is the group's (mtu_set).
    const std::uint32_t max_mtu = p->cfg.connected ? std::uint32_t{kCmMtu} : p->max_mtu.load(std::memory_order_relaxed);
    info->max_rx_pktlen = max_mtu + (p->cfg.l2 == L2Mode::eth ? RTE_ETHER_HDR_LEN : wire::kEncapLen);
    info->min_mtu = RTE_ETHER_MIN_MTU;
    info->max_mtu = static_cast<std::uint16_t>(max_mtu);
    info->max_rx_queues = max_rx_queues(p);
    info->max_tx_queues = max_tx_queues(p);
    info->min_rx_bufsize = 64;
    const bool rss = info->max_rx_queues > 1;
    info->rx_offload_capa = kRxOffloadCapa | (rss ? RTE_ETH_RX_OFFLOAD_RSS_HASH : 0);
    info->tx_offload_capa = kTxOffloadCapa;
    info->rx_queue_offload_capa = info->rx_offload_capa;
    info->tx_queue_offload_capa = kTxOffloadCapa;
    if (rss) {
        info->reta_size = hca::kRssRetaSize;
        info->hash_key_size = hca::kRssKeyLen;
        info->flow_type_rss_offloads = rss_offloads();
    }
    info->rx_desc_lim.nb_max = kQueueDepthMax;
    info->rx_desc_lim.nb_min = kQueueDepthMin;
    info->rx_desc_lim.nb_align = 1;
    info->tx_desc_lim = info->rx_desc_lim;
    // One queue of each unless the application asks for more (as most PMDs suggest).
    info->default_rxportconf = {.burst_size = kBurstMax, .ring_size = static_cast<std::uint16_t>(p->cfg.rxq_size),
                                .nb_queues = 1};
    info->default_txportconf = {.burst_size = kBurstMax, .ring_size = static_cast<std::uint16_t>(p->cfg.txq_size),
                                .nb_queues = 1};
    info->speed_capa = rte_eth_speed_bitflag(p->link_mbps.load(std::memory_order_relaxed), RTE_ETH_LINK_FULL_DUPLEX);
    return 0;
}

const std::uint32_t *supported_ptypes(rte_eth_dev *) noexcept { return kSupportedPtypes; }

int dev_start(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    p->started_us.store(now_us(), std::memory_order_relaxed);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    for (std::uint16_t i = 0; i < dev->data->nb_rx_queues; ++i)
        if (i >= p->rxq.size() || !p->rxq[i]) {
            IPOIB_LOG(ERR, "%s: RX queue %u is not set up", p->name.c_str(), i);
            return -EINVAL;
        }
    for (std::uint16_t i = 0; i < dev->data->nb_tx_queues; ++i)
        if (i >= p->txq.size() || !p->txq[i]) {
            IPOIB_LOG(ERR, "%s: TX queue %u is not set up", p->name.c_str(), i);
            return -EINVAL;
        }
    // Zero copy where the HCA can reach DPDK's memory: mbufs sent where they
    // lie and, where the mbufs fit, received into (rx_burst_mbufs).
    p->fp.mrs = p->cfg.zero_copy && p->hca->mrs.active() ? &p->hca->mrs : nullptr;
    std::string why;
    const std::uint16_t nrx = std::max<std::uint16_t>(dev->data->nb_rx_queues, 1);
    const bool rx_mbufs = dev->data->nb_rx_queues > 0 && rx_mbufs_possible(p, nrx, &why);
    if (!prepare_queues(p, dev->data->nb_rx_queues, dev->data->nb_tx_queues, dev->data->dev_conf.intr_conf.rxq,
                        rx_mbufs))
        return -ENOMEM;
    dev->rx_pkt_burst = rx_mbufs ? rx_burst_mbufs : rx_burst;
    IPOIB_LOG(INFO, "%s: %s", p->name.c_str(),
              rx_mbufs ? "zero copy: sends and receives use the mbufs where they lie"
                       : ("receives into the driver's receive pool (" + why + "): frames over rx_copy_max=" +
                          std::to_string(p->cfg.rx_copy_max) + " lent, shorter ones copied into mbufs" +
                          (p->fp.mrs ? "; sends use the mbufs where they lie" : "; sends go through the provider"))
                             .c_str());
    if (const int rc = rx_intr_install(dev); rc != 0)
        return rc;
    if (const int rc = port_control_start(p); rc != 0)
        return rc;
    p->started = true;
    for (std::uint16_t i = 0; i < dev->data->nb_rx_queues; ++i)
        dev->data->rx_queue_state[i] = RTE_ETH_QUEUE_STATE_STARTED;
    for (std::uint16_t i = 0; i < dev->data->nb_tx_queues; ++i)
        dev->data->tx_queue_state[i] = RTE_ETH_QUEUE_STATE_STARTED;
    return 0;
}

int dev_stop(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    port_control_stop(p);
    rx_intr_uninstall(dev);
    drop_pending(dev);
    p->started = false;
    p->lsc_pending = false;  // the application stopped the port: its link going down is no event to it
    dev->data->dev_started = 0;
    for (std::uint16_t i = 0; i < dev->data->nb_rx_queues; ++i)
        dev->data->rx_queue_state[i] = RTE_ETH_QUEUE_STATE_STOPPED;
    for (std::uint16_t i = 0; i < dev->data->nb_tx_queues; ++i)
        dev->data->tx_queue_state[i] = RTE_ETH_QUEUE_STATE_STOPPED;
    rte_eth_link link{};
    rte_eth_linkstatus_set(dev, &link);
    return 0;
}

int dev_close(rte_eth_dev *dev) noexcept {
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
        std::lock_guard<std::mutex> g(hca_registry_mutex());
        Hca *h = p->hca;
        {
            std::lock_guard<std::mutex> lk(h->mu);
            h->ports.erase(std::remove(h->ports.begin(), h->ports.end(), p), h->ports.end());
            port_release_resources(p);
        }
        hca_put(h);
    }
    rte_ring_free(p->fp.requests);
    pmtu_release(&p->fp);
    rte_intr_instance_free(dev->intr_handle);
    dev->intr_handle = nullptr;
    delete p;
    *static_cast<Port **>(dev->data->dev_private) = nullptr;
    return 0;
}

int link_update(rte_eth_dev *dev, int) noexcept {
    const Port *p = port_of(dev);
    rte_eth_link link{};
    const bool up = p->fp.link_up.load(std::memory_order_acquire);
    link.link_status = up ? RTE_ETH_LINK_UP : RTE_ETH_LINK_DOWN;
    link.link_duplex = RTE_ETH_LINK_FULL_DUPLEX;
    link.link_speed = up ? p->link_mbps.load(std::memory_order_relaxed) : RTE_ETH_SPEED_NUM_NONE;
    return rte_eth_linkstatus_set(dev, &link);
}

int promiscuous_toggle(rte_eth_dev *) noexcept { return 0; }  // IPoIB unicast has no promiscuity

int allmulticast_enable(rte_eth_dev *dev) noexcept {
    port_of(dev)->cfg.allmulti = true;  // takes effect at the next start
    return 0;
}
int allmulticast_disable(rte_eth_dev *dev) noexcept {
    port_of(dev)->cfg.allmulti = false;
    return 0;
}

int mtu_set(rte_eth_dev *dev, std::uint16_t mtu) noexcept {
    const Port *p = port_of(dev);
    if (mtu > p->fp.mtu) {
        IPOIB_LOG(ERR, "%s: MTU %u larger than the broadcast group allows (%u)", p->name.c_str(), mtu, p->fp.mtu);
        return -EINVAL;
    }
    return 0;
}

// Ethernet emulation: the MAC is the application's view only (the fabric
// knows the port by its 20-byte address, which ARP/ND translation keeps
// announcing), so the application may set it: received unicast frames then
// carry it as their destination. Set while the link is up (a bond making
// this port its active member), the port announces the application's
// addresses from its own 20-byte address (gratuitous ARP, unsolicited NA),
// so that peers move to it, as Linux bonding does on failover.
int mac_addr_set(rte_eth_dev *dev, rte_ether_addr *addr) noexcept {
    Port *p = port_of(dev);
    if (p->cfg.l2 != L2Mode::eth) {
        IPOIB_LOG(ERR, "%s: l2=ipoib: frames carry no MAC, the port is its 20-byte IPoIB address", p->name.c_str());
        return -ENOTSUP;
    }
    if (!rte_is_valid_assigned_ether_addr(addr)) {
        IPOIB_LOG(ERR, "%s: MAC " RTE_ETHER_ADDR_PRT_FMT " is not a unicast address", p->name.c_str(),
                  RTE_ETHER_ADDR_BYTES(addr));
        return -EINVAL;
    }
    std::lock_guard<std::mutex> lk(p->hca->mu);
    // The fast path's copy; ethdev writes dev->data->mac_addrs[0] (shared) once this returns.
    p->fp.mac = *addr;
    p->announce_pending = p->fp.link_up.load(std::memory_order_acquire);
    IPOIB_LOG(INFO, "%s: MAC " RTE_ETHER_ADDR_PRT_FMT "%s", p->name.c_str(), RTE_ETHER_ADDR_BYTES(addr),
              p->announce_pending ? " (announcing the application's addresses)" : "");
    return 0;
}

// In eth_dev_ops' declaration order (C++20 designated initialisers).
constexpr eth_dev_ops kOps = {
    .dev_configure = dev_configure,
    .dev_start = dev_start,
    .dev_stop = dev_stop,
    .dev_close = dev_close,
    .link_update = link_update,
    .promiscuous_enable = promiscuous_toggle,
    .promiscuous_disable = promiscuous_toggle,
    .allmulticast_enable = allmulticast_enable,
    .allmulticast_disable = allmulticast_disable,
    .mac_addr_set = mac_addr_set,
    .mtu_set = mtu_set,
    .stats_get = stats_get,
    .stats_reset = stats_reset,
    .xstats_get = xstats_get,
    .xstats_reset = stats_reset,
    .xstats_get_names = xstats_get_names,
    .dev_infos_get = dev_infos_get,
    .dev_supported_ptypes_get = supported_ptypes,
    .rx_queue_setup = rx_queue_setup,
    .rx_queue_release = rx_queue_release,
    .rx_queue_intr_enable = rx_queue_intr_enable,
    .rx_queue_intr_disable = rx_queue_intr_disable,
    .tx_queue_setup = tx_queue_setup,
    .tx_queue_release = tx_queue_release,
    .rss_hash_update = rss_hash_update,
    .rss_hash_conf_get = rss_hash_conf_get,
    .reta_update = reta_update,
    .reta_query = reta_query,
};

// --- probe / remove ---

// The driver uses DPDK's internal driver structures, which have no ABI promise.
bool same_dpdk(const char *name) {
    const std::string built = "DPDK " + std::to_string(RTE_VER_YEAR) + "." + std::to_string(RTE_VER_MONTH) + "." +
                              std::to_string(RTE_VER_MINOR);
    if (built == rte_version())
        return true;
    IPOIB_LOG(ERR, "%s: built against %s, running %s: refusing to load", name, built.c_str(), rte_version());
    return false;
}

// Caller holds the registry mutex. A port of this HCA already serving (port, P_Key)?
const Port *duplicate_of(Hca *h, const Config &cfg) {
    std::lock_guard<std::mutex> lk(h->mu);
    for (const Port *o : h->ports)
        if (o->cfg.port == cfg.port && (o->cfg.pkey & 0x7fff) == (cfg.pkey & 0x7fff))
            return o;
    return nullptr;
}

// The Port object of a new ethdev: its request ring, mbuf field and MAC.
Port *new_port(rte_eth_dev *dev, const char *name, const Config &cfg, Hca *h) {
    auto *p = new Port();
    p->dev = dev;
    p->fp.port_id = dev->data->port_id;
    p->fp.l2 = cfg.l2;
    p->name = name;
    p->cfg = cfg;
    p->hca = h;
    const std::string ring = "ipoib_req_" + std::to_string(p->fp.port_id);
    p->fp.requests =
        rte_ring_create_elem(ring.c_str(), sizeof(Request), kRequestRingSize, rte_socket_id(), RING_F_SC_DEQ);
    if (cfg.l2 == L2Mode::ipoib) {
        rte_mbuf_dynfield f{};
        rte_strscpy(f.name, RTE_PMD_IPOIB_DYNFIELD_NAME, sizeof f.name);
        f.size = sizeof(struct rte_pmd_ipoib_addr);
        f.align = alignof(struct rte_pmd_ipoib_addr);
        p->fp.dynfield = rte_mbuf_dynfield_register(&f);
    }
    // Until a broadcast group says otherwise the MTU is IPoIB's usual 2044, or less on a smaller port.
    port_read_rates(p);
    p->fp.mtu = std::min(p->fp.mtu, p->max_mtu.load());
    p->fp.ud_mtu = p->fp.mtu;
    p->fp.connected = cfg.connected;
    if (cfg.connected)
        p->fp.mtu = kCmMtu;
    const wire::Mac mac = wire::mac_from_guid(wire::guid_from_gid(h->cp.port_gid(cfg.port)));
    std::memcpy(p->fp.mac.addr_bytes, mac.raw.data(), 6);
    const int socket = dev->data->numa_node >= 0 ? dev->data->numa_node : static_cast<int>(rte_socket_id());
    if (!p->fp.neigh.init(cfg.neigh_max, socket)) {
        IPOIB_LOG(ERR, "%s: cannot allocate its neighbour table (neigh_max=%u: %zu bytes on socket %d)", name,
                  cfg.neigh_max, NeighTable::bytes_for(cfg.neigh_max), socket);
        rte_ring_free(p->fp.requests);
        delete p;
        return nullptr;
    }
    if (!p->fp.requests || (cfg.l2 == L2Mode::ipoib && p->fp.dynfield < 0)) {
        IPOIB_LOG(ERR, "%s: cannot allocate its request ring or mbuf field", name);
        rte_ring_free(p->fp.requests);
        delete p;
        return nullptr;
    }
    if (cfg.connected && !pmtu_resources(&p->fp, name, socket)) {
        rte_ring_free(p->fp.requests);
        delete p;
        return nullptr;
    }
    return p;
}

std::string pkey_text(std::uint16_t pkey) {
    if (!pkey)
        return "index 0";
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", pkey);
    return b;
}

int probe(rte_vdev_device *vdev) noexcept {
    const char *name = rte_vdev_device_name(vdev);
    if (!same_dpdk(name))
        return -ENOTSUP;
    if (rte_eal_process_type() != RTE_PROC_PRIMARY)
        return probe_secondary(vdev);
    mp_primary_init();  // a failure is logged; the port works, secondaries cannot ask about it
    Config cfg;
    std::string err;
    if (!parse_devargs(rte_vdev_device_args(vdev), &cfg, &err)) {
        IPOIB_LOG(ERR, "%s: %s", name, err.c_str());
        return -EINVAL;
    }
    std::lock_guard<std::mutex> g(hca_registry_mutex());
    Hca *h = hca_get(cfg, &err);
    if (!h) {
        IPOIB_LOG(ERR, "%s: %s", name, err.c_str());
        return -ENODEV;
    }
    int rc = 0;
    if (cfg.port > h->ctx->num_ports()) {
        IPOIB_LOG(ERR, "%s: devarg port=%u: %s has %u port(s)", name, cfg.port, h->ctx->name().c_str(),
                  h->ctx->num_ports());
        rc = -EINVAL;
    } else if (h->cp.port_gid(cfg.port) == wire::Gid{}) {
        IPOIB_LOG(ERR, "%s: %s port %u has no GID at index %d%s", name, h->ctx->name().c_str(), cfg.port,
                  h->cp.gid_index(cfg.port), cfg.gid_index >= 0 ? " (devarg gid_index)" : "");
        rc = -EINVAL;
    } else if (const Port *o = duplicate_of(h, cfg)) {
        IPOIB_LOG(ERR, "%s: %s port %u P_Key %s is already %s", name, h->ctx->name().c_str(), cfg.port,
                  pkey_text(cfg.pkey).c_str(), o->name.c_str());
        rc = -EEXIST;
    }
    rte_eth_dev *dev = rc ? nullptr : rte_eth_vdev_allocate(vdev, sizeof(Port *));
    // The MAC in DPDK's shared memory (secondary processes read dev->data), freed by ethdev with the
    // port, also when the probe fails below; fp.mac is the fast path's copy.
    if (dev) {
        dev->data->mac_addrs = static_cast<rte_ether_addr *>(
            rte_zmalloc_socket(name, sizeof(rte_ether_addr), 0, vdev->device.numa_node));
        if (!dev->data->mac_addrs)
            IPOIB_LOG(ERR, "%s: no memory for the port's MAC", name);
    }
    Port *p = dev && dev->data->mac_addrs ? new_port(dev, name, cfg, h) : nullptr;
    if (!p) {
        if (dev)
            rte_eth_dev_release_port(dev);
        hca_put(h);
        return rc ? rc : -ENOMEM;
    }
    *static_cast<Port **>(dev->data->dev_private) = p;
    // RX interrupts: one fd per RX queue once started with intr_conf.rxq (ipoib_intr.cpp).
    dev->intr_handle = rte_intr_instance_alloc(RTE_INTR_INSTANCE_F_SHARED);
    dev->data->mac_addrs[0] = p->fp.mac;
    dev->data->mtu = p->fp.mtu;
    dev->data->dev_flags |= RTE_ETH_DEV_INTR_LSC | RTE_ETH_DEV_AUTOFILL_QUEUE_XSTATS;
    dev->dev_ops = &kOps;
    dev->rx_pkt_burst = rx_burst;
    dev->tx_pkt_burst = tx_burst;
    {
        std::lock_guard<std::mutex> lk(h->mu);
        h->ports.push_back(p);
    }
    rte_eth_dev_probing_finish(dev);
    IPOIB_LOG(INFO, "%s: port %u on %s port %u, P_Key %s, MAC " RTE_ETHER_ADDR_PRT_FMT ", l2=%s", name,
              p->fp.port_id, h->ctx->name().c_str(), cfg.port, pkey_text(cfg.pkey).c_str(),
              RTE_ETHER_ADDR_BYTES(&p->fp.mac), cfg.l2 == L2Mode::eth ? "eth" : "ipoib");
    return 0;
}

int remove(rte_vdev_device *vdev) noexcept {
    rte_eth_dev *dev = rte_eth_dev_allocated(rte_vdev_device_name(vdev));
    if (!dev)
        return 0;
    if (rte_eal_process_type() != RTE_PROC_PRIMARY) {
        remove_secondary(dev);
        return rte_eth_dev_release_port(dev);
    }
    if (*static_cast<Port **>(dev->data->dev_private))
        dev_close(dev);
    return rte_eth_dev_release_port(dev);
}

// Constant-initialised: the registration constructor below runs before any
// dynamic initialiser of this file would. The name is set there (no nested
// designators in C++).
rte_vdev_driver g_driver = {
    .next = {},
    .driver = {},
    .probe = probe,
    .remove = remove,
    .dma_map = nullptr,
    .dma_unmap = nullptr,
    .drv_flags = 0,
};

} // namespace

} // namespace ipoib::pmd

// Registration (C linkage names, as DPDK expects).
RTE_INIT(ipoib_pmd_register) {
    ipoib::pmd::g_driver.driver.name = "net_ipoib";
    rte_vdev_register(&ipoib::pmd::g_driver);
    ipoib::pmd::telemetry_register();
}
