// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib in DPDK's multi-process model: a secondary process (dpdk-proc-info,
// dpdk-dumpcap, dpdk-pdump, an application's own secondary) attaches to the
// ethdev its primary probed.
//
// What a secondary reaches of a port is dev->data (shared memory, written by
// the primary: link, MAC, MTU, queue counts) and the primary's answers: the
// port's state (queues, counters, the HCA and its control plane) lives in the
// primary's heap, reachable from no other process. So the secondary's ops ask
// the primary over DPDK's IPC (rte_mp, one request per call) and the primary
// answers by calling its own ops on the port and writing the result into a
// buffer the secondary allocated in DPDK's shared memory (its address in the
// request; the primary checks that it is DPDK memory of the size needed).
// stats, xstats, their reset, dev_info and link answer with the primary's
// values; xstats names and packet types need no primary.
//
// The data path stays in the primary: the HCA's queues, completion queues
// and receive buffers belong to its provider objects. rx_burst/tx_burst in a
// secondary receive and send nothing, and say so once (the mbufs given to
// tx_burst stay the caller's). Frames reach a secondary through pdump: the
// primary's ethdev callbacks copy what its rx_burst/tx_burst carry.
#include <bus_vdev_driver.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_string_fns.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "ipoib_control.hpp"
#include "ipoib_ethdev.hpp"
#include "ipoib_mp.hpp"
#include "ipoib_offload.hpp"
#include "ipoib_port.hpp"

namespace ipoib::pmd {

namespace {

// A secondary's own state of one port (dev->process_private).
struct SecondaryPort {
    char name[RTE_ETH_NAME_MAX_LEN];
    std::size_t len;
    alignas(RTE_CACHE_LINE_SIZE) unsigned char buf[];  // the primary writes its answers here
};

std::size_t answer_size() {
    return std::max({sizeof(rte_eth_stats), sizeof(rte_eth_dev_info),
                     sizeof(rte_eth_xstat) * static_cast<std::size_t>(xstats_get_names(nullptr, nullptr, 0))});
}

// --- primary ---

std::atomic<std::uint64_t> g_bad_requests{0};  // malformed requests (wrong size, buffer, port, op)

// The buffer the request names, if it is DPDK memory of at least len bytes.
void *request_buffer(const MpRequest &r) {
    void *p = reinterpret_cast<void *>(static_cast<std::uintptr_t>(r.buf));
    const rte_memseg_list *msl = p ? rte_mem_virt2memseg_list(p) : nullptr;
    if (!msl || r.len == 0)
        return nullptr;
    const auto start = reinterpret_cast<std::uintptr_t>(msl->base_va);
    const auto a = static_cast<std::uintptr_t>(r.buf);
    return a + r.len <= start + msl->len ? p : nullptr;
}

int answer(const MpRequest &r) {
    void *buf = request_buffer(r);
    if (!buf)
        return -EFAULT;
    // The port, found by name among the live ones: closing deletes a port
    // only after taking it out of its HCA's list under this mutex.
    std::lock_guard<std::mutex> g(hca_registry_mutex());
    const Port *port = nullptr;
    for (Hca *h : hca_registry())
        for (Port *p : h->ports)
            if (std::strncmp(p->name.c_str(), r.name, sizeof r.name) == 0)
                port = p;
    if (!port)
        return -ENODEV;
    rte_eth_dev *dev = &rte_eth_devices[port->fp.port_id];
    switch (r.op) {
    case MpOp::stats:
        if (r.len < sizeof(rte_eth_stats))
            return -EINVAL;
        std::memset(buf, 0, sizeof(rte_eth_stats));
        return dev->dev_ops->stats_get(dev, static_cast<rte_eth_stats *>(buf));
    case MpOp::stats_reset:
        return dev->dev_ops->stats_reset(dev);
    case MpOp::xstats:
        return dev->dev_ops->xstats_get(dev, static_cast<rte_eth_xstat *>(buf),
                                        static_cast<unsigned>(r.len / sizeof(rte_eth_xstat)));
    case MpOp::dev_info:
        if (r.len < sizeof(rte_eth_dev_info))
            return -EINVAL;
        std::memset(buf, 0, sizeof(rte_eth_dev_info));
        return dev->dev_ops->dev_infos_get(dev, static_cast<rte_eth_dev_info *>(buf));
    case MpOp::link:
        return dev->dev_ops->link_update(dev, 0);
    }
    return -EINVAL;
}

int on_request(const rte_mp_msg *msg, const void *peer) noexcept {
    rte_mp_msg reply{};
    rte_strscpy(reply.name, kMpAction, sizeof reply.name);
    reply.len_param = sizeof(MpReply);
    const MpReply rep{.rc = mp_answer(msg->param, msg->len_param)};
    std::memcpy(reply.param, &rep, sizeof rep);
    return rte_mp_reply(&reply, static_cast<const char *>(peer));
}

// --- secondary ---

SecondaryPort *secondary_of(const rte_eth_dev *dev) { return static_cast<SecondaryPort *>(dev->process_private); }

// Ask the primary; its answer is in sp->buf. Returns the op's result or -errno.
int ask(rte_eth_dev *dev, MpOp op) {
    SecondaryPort *sp = secondary_of(dev);
    rte_mp_msg msg{};
    rte_strscpy(msg.name, kMpAction, sizeof msg.name);
    MpRequest r{.op = op, .len = static_cast<std::uint32_t>(sp->len),
                .buf = reinterpret_cast<std::uintptr_t>(sp->buf), .name = {}};
    rte_strscpy(r.name, sp->name, sizeof r.name);
    std::memcpy(msg.param, &r, sizeof r);
    msg.len_param = sizeof r;
    struct rte_mp_reply replies{};
    timespec ts{.tv_sec = kMpTimeoutSec, .tv_nsec = 0};
    if (rte_mp_request_sync(&msg, &replies, &ts) != 0 || replies.nb_received != 1) {
        IPOIB_LOG(ERR, "%s: the primary process did not answer (%s)", sp->name, rte_strerror(rte_errno));
        std::free(replies.msgs);
        return -EIO;
    }
    MpReply rep{};
    std::memcpy(&rep, replies.msgs[0].param, sizeof rep);
    std::free(replies.msgs);
    return rep.rc;
}

int sec_stats_get(rte_eth_dev *dev, rte_eth_stats *s) noexcept {
    const std::uint64_t nombuf = s->rx_nombuf;  // ethdev's own count (the primary's dev->data)
    const int rc = ask(dev, MpOp::stats);
    if (rc == 0) {
        std::memcpy(s, secondary_of(dev)->buf, sizeof *s);
        s->rx_nombuf += nombuf;
    }
    return rc;
}

int sec_stats_reset(rte_eth_dev *dev) noexcept { return ask(dev, MpOp::stats_reset); }

int sec_xstats_get(rte_eth_dev *dev, rte_eth_xstat *x, unsigned n) noexcept {
    const int rc = ask(dev, MpOp::xstats);
    if (rc > 0 && x && n >= static_cast<unsigned>(rc))
        std::memcpy(x, secondary_of(dev)->buf, sizeof *x * static_cast<unsigned>(rc));
    return rc;
}

int sec_dev_infos_get(rte_eth_dev *dev, rte_eth_dev_info *info) noexcept {
    const int rc = ask(dev, MpOp::dev_info);
    if (rc != 0)
        return rc;
    // Only the scalar fields the primary's dev_infos_get sets: the pointers
    // ethdev fills (device, driver_name, dev_flags) are this process's.
    const auto *a = reinterpret_cast<const rte_eth_dev_info *>(secondary_of(dev)->buf);
    info->max_mac_addrs = a->max_mac_addrs;
    info->max_rx_pktlen = a->max_rx_pktlen;
    info->min_mtu = a->min_mtu;
    info->max_mtu = a->max_mtu;
    info->max_rx_queues = a->max_rx_queues;
    info->max_tx_queues = a->max_tx_queues;
    info->min_rx_bufsize = a->min_rx_bufsize;
    info->rx_offload_capa = a->rx_offload_capa;
    info->tx_offload_capa = a->tx_offload_capa;
    info->rx_queue_offload_capa = a->rx_queue_offload_capa;
    info->tx_queue_offload_capa = a->tx_queue_offload_capa;
    info->reta_size = a->reta_size;
    info->hash_key_size = a->hash_key_size;
    info->flow_type_rss_offloads = a->flow_type_rss_offloads;
    info->rx_desc_lim = a->rx_desc_lim;
    info->tx_desc_lim = a->tx_desc_lim;
    info->default_rxportconf = a->default_rxportconf;
    info->default_txportconf = a->default_txportconf;
    info->speed_capa = a->speed_capa;
    return 0;
}

int sec_link_update(rte_eth_dev *dev, int) noexcept {
    const int rc = ask(dev, MpOp::link);  // dev->data->dev_link, shared, is then the primary's
    return rc < 0 ? rc : 0;
}

int sec_promiscuous(rte_eth_dev *) noexcept { return 0; }  // IPoIB unicast has no promiscuity (as the primary)

int sec_close(rte_eth_dev *dev) noexcept {
    remove_secondary(dev);
    return 0;
}

// The burst functions get the primary's queue pointers (dev->data is shared),
// which mean nothing here: the refusals are counted per process.
std::atomic<std::uint64_t> g_bursts_refused{0};
std::atomic<bool> g_refusal_logged{false};

void refused(const char *what) {
    g_bursts_refused.fetch_add(1, std::memory_order_relaxed);
    if (!g_refusal_logged.exchange(true))
        IPOIB_LOG(ERR, "%s in a secondary process: not supported, nothing is %s (a port's queues live in the "
                  "primary process; see doc/net_ipoib.md, Multi-process)", what,
                  what[0] == 'r' ? "received" : "sent and the mbufs stay the caller's");
}

std::uint16_t sec_rx_burst(void *, rte_mbuf **, std::uint16_t) noexcept {
    refused("rx_burst");
    return 0;
}
std::uint16_t sec_tx_burst(void *, rte_mbuf **, std::uint16_t) noexcept {
    refused("tx_burst");
    return 0;
}

const std::uint32_t *sec_ptypes(rte_eth_dev *) noexcept { return kSupportedPtypes; }

// In eth_dev_ops' declaration order.
constexpr eth_dev_ops kSecondaryOps = {
    .dev_close = sec_close,
    .link_update = sec_link_update,
    .promiscuous_enable = sec_promiscuous,
    .promiscuous_disable = sec_promiscuous,
    .stats_get = sec_stats_get,
    .stats_reset = sec_stats_reset,
    .xstats_get = sec_xstats_get,
    .xstats_reset = sec_stats_reset,
    .xstats_get_names = xstats_get_names,
    .dev_infos_get = sec_dev_infos_get,
    .dev_supported_ptypes_get = sec_ptypes,
};

} // namespace

int mp_primary_init() noexcept {
    static std::once_flag once;
    static int rc = 0;
    std::call_once(once, [] {
        rc = rte_mp_action_register(kMpAction, on_request);
        if (rc != 0 && rte_errno == ENOTSUP)
            rc = 0;  // --no-shconf / in-memory: no process can attach anyway
        if (rc != 0)
            IPOIB_LOG(ERR, "cannot register the multi-process action %s: %s", kMpAction, rte_strerror(rte_errno));
    });
    return rc;
}

int mp_answer(const void *param, int len) noexcept {
    if (len != static_cast<int>(sizeof(MpRequest))) {
        g_bad_requests.fetch_add(1, std::memory_order_relaxed);
        IPOIB_LOG(ERR, "multi-process request of %d bytes, not %zu: refused", len, sizeof(MpRequest));
        return -EINVAL;
    }
    MpRequest r;
    std::memcpy(&r, param, sizeof r);
    r.name[sizeof r.name - 1] = '\0';
    const int rc = answer(r);
    if (rc == -EFAULT || rc == -EINVAL) {
        g_bad_requests.fetch_add(1, std::memory_order_relaxed);
        IPOIB_LOG(ERR, "%s: multi-process request op %u: %s", r.name, static_cast<unsigned>(r.op),
                  rc == -EFAULT ? "its buffer is not DPDK memory of the size given" : "malformed");
    }
    return rc;
}

std::uint64_t mp_bad_requests() noexcept { return g_bad_requests.load(std::memory_order_relaxed); }
std::uint64_t mp_bursts_refused() noexcept { return g_bursts_refused.load(std::memory_order_relaxed); }

void remove_secondary(rte_eth_dev *dev) noexcept {
    rte_free(dev->process_private);
    dev->process_private = nullptr;
}

int probe_secondary(rte_vdev_device *vdev) noexcept {
    const char *name = rte_vdev_device_name(vdev);
    rte_eth_dev *dev = rte_eth_dev_attach_secondary(name);
    if (!dev) {
        IPOIB_LOG(ERR, "%s: secondary process: the primary has no such port", name);
        return -ENODEV;
    }
    const std::size_t len = answer_size();
    auto *sp = static_cast<SecondaryPort *>(rte_zmalloc_socket(name, sizeof(SecondaryPort) + len,
                                                                 RTE_CACHE_LINE_SIZE, vdev->device.numa_node));
    if (!sp) {
        IPOIB_LOG(ERR, "%s: secondary process: no memory for the port's answers", name);
        rte_eth_dev_release_port(dev);
        return -ENOMEM;
    }
    new (sp) SecondaryPort{};
    rte_strscpy(sp->name, name, sizeof sp->name);
    sp->len = len;
    dev->process_private = sp;
    dev->device = &vdev->device;
    dev->dev_ops = &kSecondaryOps;
    dev->rx_pkt_burst = sec_rx_burst;
    dev->tx_pkt_burst = sec_tx_burst;
    rte_eth_dev_probing_finish(dev);
    IPOIB_LOG(INFO, "%s: attached as a secondary process (port %u): stats, xstats, dev_info and link from the "
              "primary; no data path here", name, dev->data->port_id);
    return 0;
}

} // namespace ipoib::pmd
