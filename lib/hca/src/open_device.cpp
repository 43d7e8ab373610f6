// SPDX-License-Identifier: BSD-3-Clause
// open_device: the provider by name (registry.cpp), its options checked
// against the keys it lists; names of the interface's enums; the IPoIB GID.
#include <string>
#include <vector>

#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/provider.hpp"

namespace ipoib::hca {

const char *to_string(PortState s) noexcept {
    switch (s) {
    case PortState::nop: return "NOP";
    case PortState::down: return "DOWN";
    case PortState::init: return "INIT";
    case PortState::armed: return "ARMED";
    case PortState::active: return "ACTIVE";
    }
    return "?";
}

const char *to_string(EventType e) noexcept {
    switch (e) {
    case EventType::port_active: return "PORT_ACTIVE";
    case EventType::port_error: return "PORT_ERR";
    case EventType::lid_change: return "LID_CHANGE";
    case EventType::pkey_change: return "PKEY_CHANGE";
    case EventType::sm_change: return "SM_CHANGE";
    case EventType::gid_change: return "GID_CHANGE";
    }
    return "?";
}

const char *to_string(WcStatus s) noexcept {
    switch (s) {
    case WcStatus::success: return "success";
    case WcStatus::loc_len_err: return "local length error";
    case WcStatus::loc_qp_op_err: return "local QP operation error";
    case WcStatus::wr_flush_err: return "flushed";
    case WcStatus::aborted: return "aborted (sender died or stalled)";
    case WcStatus::general_err: return "general error";
    case WcStatus::retry_exc_err: return "transport retries exceeded (peer gone)";
    case WcStatus::rnr_retry_exc_err: return "RNR retries exceeded (peer has no receive posted)";
    }
    return "?";
}

namespace {

bool has_option(const Provider &p, std::string_view key) noexcept {
    for (const ProviderOption &o : p.options)
        if (key == o.key)
            return true;
    return false;
}

std::string names(const std::vector<const Provider *> &ps) {
    std::string s;
    for (const Provider *p : ps)
        s += (s.empty() ? "" : ", ") + std::string(p->name);
    return s;
}

} // namespace

OpenResult open_device(const std::string &provider, const std::string &device, const std::string &options) {
    OpenResult r;
    const Provider *p = find_provider(provider);
    if (!p) {
        r.error = "unknown HCA provider '" + provider + "' (known: " + names(providers()) + ")";
        return r;
    }
    ProviderOptions opts;
    if (!ProviderOptions::parse(options, &opts, &r.error))
        return r;
    for (const auto &[key, value] : opts.items()) {
        if (has_option(*p, key))
            continue;
        std::vector<const Provider *> owners;
        for (const Provider *q : providers())
            if (q != p && has_option(*q, key))
                owners.push_back(q);
        if (!owners.empty()) {
            std::string who;
            for (std::size_t i = 0; i < owners.size(); ++i)
                who += (i == 0 ? "" : i + 1 == owners.size() ? " or " : ", ") + std::string(owners[i]->name);
            r.error = std::string(p->name) + " provider: option " + key + " belongs to the " + who + " provider";
            return r;
        }
        std::string known;
        for (const ProviderOption &o : p->options)
            known += (known.empty() ? "" : ", ") + std::string(o.key);
        r.error = std::string(p->name) + " provider: unknown option '" + key + "' (" +
                  (known.empty() ? "it takes none" : "known: " + known) + ")";
        return r;
    }
    r.ctx = p->open(device, opts, &r.error);
    if (!r.ctx && r.error.empty())
        r.error = std::string(p->name) + " provider: cannot open '" + device + "'";
    if (r.ctx)
        r.error.clear();
    return r;
}

int ipoib_gid_index(Context &ctx, std::uint8_t port) noexcept {
    PortAttr pa;
    if (const int r = ctx.query_port(port, &pa); r != 0)
        return r;
    if (pa.link_layer != LinkLayer::ethernet)
        return 0;
    int first_v2 = -1, first_v6 = -1;
    for (int i = 0; i < pa.gid_tbl_len; ++i) {
        Gid g;
        GidType t;
        if (ctx.query_gid(port, i, &g) != 0 || g == Gid{} || ctx.query_gid_type(port, i, &t) != 0 ||
            t != GidType::roce_v2)
            continue;
        if (first_v2 < 0)
            first_v2 = i;
        if (is_ipv4_mapped(g))
            continue;
        if (g.raw[0] == 0xfe && (g.raw[1] & 0xc0) == 0x80)
            return i;
        if (first_v6 < 0)
            first_v6 = i;
    }
    return first_v6 >= 0 ? first_v6 : first_v2 >= 0 ? first_v2 : 0;
}

} // namespace ipoib::hca
