// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib receive-side scaling: the port's hash key, hashed flow types and
// redirection table as the application sets them (dev_configure's rss_conf,
// reta_update, rss_hash_update), kept in the Port and given to the HCA's RSS
// QP (hca::RssConf): the HCA hashes, the driver only reads the result from
// the completion (ipoib_rx.cpp).
#include <cstring>
#include <mutex>

#include "ipoib_ethdev.hpp"
#include "ipoib_port.hpp"

namespace ipoib::pmd {

namespace {

// The default key: the one of Microsoft's RSS specification (its
// verification values are this key's), as many NIC drivers default to.
constexpr std::uint8_t kDefaultKey[hca::kRssKeyLen] = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

// DPDK's flow types -> what the HCA hashes (hca.hpp kRss*).
struct HfMap {
    std::uint64_t hf;
    std::uint32_t field;
};
constexpr HfMap kHfMap[] = {
    {RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_FRAG_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_OTHER, hca::kRssIpv4},
    {RTE_ETH_RSS_NONFRAG_IPV4_TCP, hca::kRssIpv4Tcp},
    {RTE_ETH_RSS_NONFRAG_IPV4_UDP, hca::kRssIpv4Udp},
    {RTE_ETH_RSS_IPV6 | RTE_ETH_RSS_FRAG_IPV6 | RTE_ETH_RSS_NONFRAG_IPV6_OTHER | RTE_ETH_RSS_IPV6_EX, hca::kRssIpv6},
    {RTE_ETH_RSS_NONFRAG_IPV6_TCP | RTE_ETH_RSS_IPV6_TCP_EX, hca::kRssIpv6Tcp},
    {RTE_ETH_RSS_NONFRAG_IPV6_UDP | RTE_ETH_RSS_IPV6_UDP_EX, hca::kRssIpv6Udp},
};

std::uint32_t fields_of(std::uint64_t hf) noexcept {
    std::uint32_t f = 0;
    for (const HfMap &m : kHfMap)
        if (hf & m.hf)
            f |= m.field;
    return f;
}

// The QP takes the new configuration now, if it exists (else when it is made).
int push_to_qp(Port *p) noexcept {
    if (!p->qp || p->rx_queues < 2)
        return 0;
    if (const int rc = p->qp->set_rss(p->rss); rc != 0) {
        IPOIB_LOG(ERR, "%s: the HCA refused the RSS configuration: %s", p->name.c_str(),
                  p->hca->ctx->last_error().c_str());
        return rc;
    }
    return 0;
}

// The application's view of the redirection table is the whole of it.
bool reta_size_ok(const Port *p, std::uint16_t size) noexcept {
    if (size == hca::kRssRetaSize)
        return true;
    IPOIB_LOG(ERR, "%s: redirection table of %u entries: it has %u", p->name.c_str(), size, hca::kRssRetaSize);
    return false;
}

} // namespace

std::uint64_t rss_offloads() noexcept {
    std::uint64_t hf = 0;
    for (const HfMap &m : kHfMap)
        hf |= m.hf;
    return hf;
}

int rss_configure(rte_eth_dev *dev) noexcept {
    Port *p = port_of(dev);
    const rte_eth_conf &conf = dev->data->dev_conf;
    const std::uint16_t nrx = dev->data->nb_rx_queues;
    const rte_eth_rss_conf &rc = conf.rx_adv_conf.rss_conf;
    const bool rss = conf.rxmode.mq_mode & RTE_ETH_MQ_RX_RSS_FLAG;
    if (conf.rxmode.mq_mode & ~RTE_ETH_MQ_RX_RSS_FLAG) {
        IPOIB_LOG(ERR, "%s: RX multi-queue mode 0x%x: only RSS is offered (no VMDq, DCB)", p->name.c_str(),
                  conf.rxmode.mq_mode);
        return -EINVAL;
    }
    if (nrx > 1 && !rss)
        IPOIB_LOG(WARNING, "%s: %u RX queues without mq_mode RSS: everything arrives on queue 0", p->name.c_str(), nrx);
    if (rc.rss_key && rc.rss_key_len != hca::kRssKeyLen) {
        IPOIB_LOG(ERR, "%s: RSS key of %u bytes: the hash key is %u bytes", p->name.c_str(), rc.rss_key_len,
                  hca::kRssKeyLen);
        return -EINVAL;
    }
    std::lock_guard<std::mutex> lk(p->hca->mu);
    std::memcpy(p->rss.key, rc.rss_key ? rc.rss_key : kDefaultKey, hca::kRssKeyLen);
    p->rss_hf = rss ? rc.rss_hf & rss_offloads() : 0;
    p->rss.fields = fields_of(p->rss_hf);
    // Without RSS every entry names queue 0; with it, the queues in turn (as ethdev's default).
    for (std::uint32_t i = 0; i < hca::kRssRetaSize; ++i)
        p->rss.reta[i] = static_cast<std::uint16_t>(rss && nrx ? i % nrx : 0);
    return 0;
}

int reta_update(rte_eth_dev *dev, rte_eth_rss_reta_entry64 *conf, std::uint16_t size) noexcept {
    Port *p = port_of(dev);
    if (!reta_size_ok(p, size))
        return -EINVAL;
    std::lock_guard<std::mutex> lk(p->hca->mu);
    hca::RssConf next = p->rss;
    for (std::uint32_t i = 0; i < size; ++i) {
        const rte_eth_rss_reta_entry64 &g = conf[i / RTE_ETH_RETA_GROUP_SIZE];
        if (!(g.mask >> (i % RTE_ETH_RETA_GROUP_SIZE) & 1))
            continue;
        const std::uint16_t q = g.reta[i % RTE_ETH_RETA_GROUP_SIZE];
        if (q >= dev->data->nb_rx_queues) {
            IPOIB_LOG(ERR, "%s: redirection entry %u: queue %u of %u", p->name.c_str(), i, q, dev->data->nb_rx_queues);
            return -EINVAL;
        }
        next.reta[i] = q;
    }
    const hca::RssConf prev = p->rss;
    p->rss = next;
    if (const int rc = push_to_qp(p); rc != 0) {
        p->rss = prev;
        return rc;
    }
    return 0;
}

int reta_query(rte_eth_dev *dev, rte_eth_rss_reta_entry64 *conf, std::uint16_t size) noexcept {
    Port *p = port_of(dev);
    if (!reta_size_ok(p, size))
        return -EINVAL;
    std::lock_guard<std::mutex> lk(p->hca->mu);
    for (std::uint32_t i = 0; i < size; ++i) {
        rte_eth_rss_reta_entry64 &g = conf[i / RTE_ETH_RETA_GROUP_SIZE];
        if (g.mask >> (i % RTE_ETH_RETA_GROUP_SIZE) & 1)
            g.reta[i % RTE_ETH_RETA_GROUP_SIZE] = p->rss.reta[i];
    }
    return 0;
}

int rss_hash_update(rte_eth_dev *dev, rte_eth_rss_conf *rc) noexcept {
    Port *p = port_of(dev);
    if (rc->rss_key && rc->rss_key_len != hca::kRssKeyLen) {
        IPOIB_LOG(ERR, "%s: RSS key of %u bytes: the hash key is %u bytes", p->name.c_str(), rc->rss_key_len,
                  hca::kRssKeyLen);
        return -EINVAL;
    }
    if (rc->rss_hf & ~rss_offloads()) {
        IPOIB_LOG(ERR, "%s: RSS hash types 0x%" PRIx64 " not offered (0x%" PRIx64 ")", p->name.c_str(), rc->rss_hf,
                  rss_offloads());
        return -EINVAL;
    }
    std::lock_guard<std::mutex> lk(p->hca->mu);
    const hca::RssConf prev = p->rss;
    const std::uint64_t prev_hf = p->rss_hf;
    if (rc->rss_key)
        std::memcpy(p->rss.key, rc->rss_key, hca::kRssKeyLen);
    p->rss_hf = rc->rss_hf;
    p->rss.fields = fields_of(p->rss_hf);
    if (const int r = push_to_qp(p); r != 0) {
        p->rss = prev;
        p->rss_hf = prev_hf;
        return r;
    }
    return 0;
}

int rss_hash_conf_get(rte_eth_dev *dev, rte_eth_rss_conf *rc) noexcept {
    Port *p = port_of(dev);
    std::lock_guard<std::mutex> lk(p->hca->mu);
    if (rc->rss_key) {
        if (rc->rss_key_len < hca::kRssKeyLen)
            return -EINVAL;
        std::memcpy(rc->rss_key, p->rss.key, hca::kRssKeyLen);
    }
    rc->rss_key_len = hca::kRssKeyLen;
    rc->rss_hf = p->rss_hf;
    return 0;
}

} // namespace ipoib::pmd
