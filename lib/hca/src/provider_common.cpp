// SPDX-License-Identifier: BSD-3-Clause
#include "provider_common.hpp"
#include "ipoib/wire/hwaddr.hpp"

#include <dlfcn.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ipoib::hca::common {

int ContextBase::no_port(std::uint8_t port) noexcept {
    return fail(-EINVAL, "no port " + std::to_string(port) + " on " + name_);
}

int ContextBase::pkey_index_rule(std::uint8_t port, int index, int tbl_len, std::uint16_t *out) noexcept {
    if (!valid_port(port) || index < 0 || index >= static_cast<int>(kMaxPkeys))
        return fail(-EINVAL, "P_Key index " + std::to_string(index) + " out of range");
    if (index >= tbl_len) {
        *out = 0;
        return 0;
    }
    return 1;
}

bool ContextBase::check_cq_depth(int depth, int max) noexcept {
    if (depth >= 1 && depth <= max)
        return true;
    fail(-EINVAL, "create_cq: depth " + std::to_string(depth) + " out of range 1.." + std::to_string(max));
    return false;
}

bool ContextBase::check_qp_init(const QpInit &init, std::uint32_t max_recv_wr) noexcept {
    if (!init.send_cq || !init.recv_cq)
        fail(-EINVAL, "create_ud_qp: send and receive CQs are required");
    else if (!valid_port(init.port_num))
        fail(-EINVAL, "create_ud_qp: no port " + std::to_string(init.port_num));
    else if (init.max_recv_wr < 1 || init.max_recv_wr > max_recv_wr)
        fail(-EINVAL, "create_ud_qp: max_recv_wr must be 1.." + std::to_string(max_recv_wr));
    else
        return check_qp_queues(init);
    return false;
}

bool ContextBase::check_qp_queues(const QpInit &init) noexcept {
    const DeviceCaps c = caps();
    if (init.num_send_queues < 1 || init.num_send_queues > c.max_send_queues)
        return fail(-EINVAL, "create_ud_qp: " + std::to_string(init.num_send_queues) + " send queues (" + name_ +
                                 " has 1.." + std::to_string(c.max_send_queues) + " per QP)"),
               false;
    if (init.num_recv_queues < 1 || init.num_recv_queues > c.max_recv_queues)
        return fail(-EINVAL, "create_ud_qp: " + std::to_string(init.num_recv_queues) + " receive queues (" + name_ +
                                 " has 1.." + std::to_string(c.max_recv_queues) + " per QP)"),
               false;
    for (std::uint32_t i = 0; init.num_send_queues > 1 && i < init.num_send_queues; ++i)
        if (!init.send_cqs || !init.send_cqs[i])
            return fail(-EINVAL, "create_ud_qp: send queue " + std::to_string(i) + " has no CQ"), false;
    for (std::uint32_t i = 0; init.num_recv_queues > 1 && i < init.num_recv_queues; ++i)
        if (!init.recv_cqs || !init.recv_cqs[i])
            return fail(-EINVAL, "create_ud_qp: receive queue " + std::to_string(i) + " has no CQ"), false;
    return init.num_recv_queues == 1 || check_rss(init.rss, init.num_recv_queues);
}

bool ContextBase::check_rss(const RssConf &rss, std::uint32_t num_recv_queues) noexcept {
    if (rss.fields & ~kRssAllFields) {
        char b[64];
        std::snprintf(b, sizeof b, "RSS: unknown hash fields 0x%x", rss.fields & ~kRssAllFields);
        return fail(-EINVAL, b), false;
    }
    for (std::uint32_t i = 0; i < kRssRetaSize; ++i)
        if (rss.reta[i] >= num_recv_queues)
            return fail(-EINVAL, "RSS: redirection entry " + std::to_string(i) + " names queue " +
                                     std::to_string(rss.reta[i]) + " of " + std::to_string(num_recv_queues)),
                   false;
    return true;
}

std::uint32_t send_length(const SendWr &wr, std::uint32_t max_sge) noexcept {
    std::uint32_t total = 0;
    for (std::uint32_t i = 0; i < std::min(wr.num_sge, max_sge); ++i)
        total += wr.sg_list[i].length;
    return total;
}

void write_grh(std::uint8_t *buf, const AhAttr &ah, const Gid &sgid, std::uint32_t payload_len) noexcept {
    constexpr std::uint32_t kIpVer6 = 6u << 28;
    constexpr std::uint8_t kNextHeaderBth = 0x1b;
    constexpr std::uint32_t kBthDethIcrc = 12 + 8 + 4;
    wire::store_be32(buf, kIpVer6 | std::uint32_t{ah.traffic_class} << 20 | (ah.flow_label & 0xfffff));
    wire::store_be16(buf + 4, static_cast<std::uint16_t>(payload_len + kBthDethIcrc));
    buf[6] = kNextHeaderBth;
    buf[7] = ah.hop_limit;
    std::memcpy(buf + 8, sgid.raw.data(), 16);
    std::memcpy(buf + 24, ah.dgid.raw.data(), 16);
}

bool option_uint(const ProviderOptions &opts, const char *key, std::uint32_t lo, std::uint32_t hi,
                 std::uint32_t def, std::uint32_t *out, std::string *err) {
    const std::string *v = opts.find(key);
    if (!v) {
        *out = def;
        return true;
    }
    char *end = nullptr;
    errno = 0;
    const unsigned long n = std::strtoul(v->c_str(), &end, 10);
    if (*end || errno || v->front() == '-' || n < lo || n > hi) {
        *err = "option " + std::string(key) + "=" + *v + ": expected " + std::to_string(lo) + ".." +
               std::to_string(hi);
        return false;
    }
    *out = static_cast<std::uint32_t>(n);
    return true;
}

std::unique_ptr<Srq> ContextBase::create_srq(const SrqInit &) noexcept {
    fail(-EOPNOTSUPP, name_ + ": no reliable connections (connected mode)");
    return nullptr;
}
std::unique_ptr<RcQp> ContextBase::create_rc_qp(const RcQpInit &) noexcept {
    fail(-EOPNOTSUPP, name_ + ": no reliable connections (connected mode)");
    return nullptr;
}
std::unique_ptr<Cm> ContextBase::open_cm(std::uint8_t) noexcept {
    fail(-EOPNOTSUPP, name_ + ": no connection manager (connected mode)");
    return nullptr;
}

bool ContextBase::check_rc_qp_init(const RcQpInit &init, const Cq *srq_cq, std::uint32_t max_send_wr,
                                   std::uint32_t max_recv_wr) noexcept {
    if (!valid_port(init.port_num)) {
        no_port(init.port_num);
        return false;
    }
    if (!init.send_cq || !init.recv_cq) {
        fail(-EINVAL, "create_rc_qp: send_cq and recv_cq are needed");
        return false;
    }
    if (init.max_send_wr == 0 || init.max_send_wr > max_send_wr) {
        fail(-EINVAL, "create_rc_qp: max_send_wr 1.." + std::to_string(max_send_wr));
        return false;
    }
    if (init.srq && srq_cq != init.recv_cq) {
        fail(-EINVAL, "create_rc_qp: recv_cq must be the SRQ's CQ");
        return false;
    }
    if (!init.srq && (init.max_recv_wr == 0 || init.max_recv_wr > max_recv_wr || init.max_recv_sge == 0 ||
                      init.max_recv_sge > kMaxRcRecvSge)) {
        fail(-EINVAL, "create_rc_qp: max_recv_wr 1.." + std::to_string(max_recv_wr) + ", max_recv_sge 1.." +
                          std::to_string(kMaxRcRecvSge));
        return false;
    }
    return true;
}

IpGroups::~IpGroups() {
    if (sock4_ >= 0)
        close(sock4_);
    if (sock6_ >= 0)
        close(sock6_);
}

int IpGroups::change(const Gid &mgid, unsigned ifindex, bool join, std::string *err) {
    const auto key = std::make_pair(mgid, ifindex);
    auto it = std::find_if(refs_.begin(), refs_.end(), [&](const auto &e) { return e.first == key; });
    if (join && it != refs_.end()) {
        ++it->second;
        return 0;
    }
    if (!join) {
        if (it == refs_.end())
            return 0;
        if (--it->second > 0)
            return 0;
        refs_.erase(it);
    }
    const auto &r = mgid.raw;
    const bool v4 = is_ipv4_mapped(mgid);
    int rc;
    if (v4) {
        if (sock4_ < 0)
            sock4_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ip_mreqn mr{};
        std::memcpy(&mr.imr_multiaddr, &r[12], 4);
        mr.imr_ifindex = static_cast<int>(ifindex);
        rc = sock4_ < 0 ? -1
                        : setsockopt(sock4_, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &mr, sizeof mr);
    } else {
        if (sock6_ < 0)
            sock6_ = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ipv6_mreq mr{};
        std::memcpy(&mr.ipv6mr_multiaddr, r.data(), 16);
        mr.ipv6mr_interface = ifindex;
        rc = sock6_ < 0 ? -1
                        : setsockopt(sock6_, IPPROTO_IPV6, join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &mr, sizeof mr);
    }
    if (rc != 0) {
        const int e = errno;
        char ifname[IF_NAMESIZE] = "?";
        if_indextoname(ifindex, ifname);
        *err = std::string("RoCE multicast: ") + (join ? "joining " : "leaving ") + wire::to_string(mgid) + " on " +
               ifname + ": " + std::strerror(e);
        return -e;
    }
    if (join)
        refs_.emplace_back(key, 1);
    return 0;
}

const char *glue_missing(const void *table, std::span<const GlueEntry> entries) noexcept {
    for (const GlueEntry &e : entries) {
        void (*fn)() = nullptr;
        std::memcpy(&fn, static_cast<const unsigned char *>(table) + e.offset, sizeof fn);
        if (!fn)
            return e.name;
    }
    return nullptr;
}

void *load_glue(const GlueSpec &spec, const void **table, std::string *err) {
    std::vector<std::string> tries;
    if (const char *e = secure_getenv(spec.env); e && *e)
        tries.emplace_back(e);
    Dl_info info{};
    std::string self;  // the object holding this code: the PMD, or a program linking it
    if (dladdr(reinterpret_cast<void *>(&load_glue), &info) && info.dli_fname)
        self = info.dli_fname;
    const auto slash = self.rfind('/');
    if (slash != std::string::npos && slash > 0) {
        const std::string dir = self.substr(0, slash);
        tries.push_back(dir + "-glue/" + spec.file);  // installed: <plugin dir>-glue/, as DPDK's mlx5
        tries.push_back(dir + "/" + spec.file);
    }
    // The build tree's copy, only for code that runs from that build tree: an
    // installed PMD never loads code from where it was once built.
    if (*spec.build_path && *spec.build_root && self.starts_with(spec.build_root))
        tries.emplace_back(spec.build_path);
    tries.emplace_back(spec.file);
    std::string why;  // every candidate's reason, so that a refused glue is not hidden by a later miss
    auto note = [&](const std::string &reason) { why += (why.empty() ? "" : "; ") + reason; };
    struct Header {
        std::uint32_t abi, size;
    };
    for (auto &path : tries) {
        if (path.find('/') != std::string::npos && access(path.c_str(), R_OK) != 0)
            continue;
        void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *d = dlerror();
            note(d ? d : path + ": cannot load");
            continue;
        }
        const auto *hdr = static_cast<const Header *>(dlsym(h, spec.symbol));
        if (!hdr || hdr->abi != spec.abi || hdr->size != spec.size) {
            note(path + ": not a matching glue (ABI " + std::to_string(hdr ? hdr->abi : 0) + ", want " +
                 std::to_string(spec.abi) + ")");
            dlclose(h);
            continue;
        }
        if (const char *missing = glue_missing(hdr, spec.entries)) {  // built from an incomplete table
            note(path + ": glue entry " + missing + " is null");
            dlclose(h);
            continue;
        }
        *table = hdr;
        return h;
    }
    *err = "cannot load " + std::string(spec.what) + " " + spec.file +
           (why.empty() ? std::string(" (not found; set ") + spec.env + ")" : ": " + why) + spec.hint;
    return nullptr;
}

} // namespace ipoib::hca::common
