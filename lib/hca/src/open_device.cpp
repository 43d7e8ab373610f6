// SPDX-License-Identifier: BSD-3-Clause
// Provider selection and device options.
#include <cstdlib>
#include <string>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca {

namespace soft {
std::unique_ptr<Context> open_soft(const std::string &device, const std::string &fabric, const std::string &capture,
                                   std::uint32_t poll_ms, bool fault_stall, std::string *err);
}
namespace verbs {
std::unique_ptr<Context> open_verbs(const std::string &device, std::string *err);
}

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
    case WcStatus::aborted: return "aborted (sender died)";
    case WcStatus::general_err: return "general error";
    }
    return "?";
}

OpenResult open_device(const std::string &provider, const std::string &device, const std::string &options) {
    OpenResult r;
    std::string fabric, capture, node = device;
    std::uint32_t poll_ms = 100;
    bool fault_stall = false;
    // key=value[,key=value...]
    std::size_t pos = 0;
    while (pos < options.size()) {
        std::size_t end = options.find(',', pos);
        if (end == std::string::npos)
            end = options.size();
        const std::string kv = options.substr(pos, end - pos);
        pos = end + 1;
        if (kv.empty())
            continue;
        const std::size_t eq = kv.find('=');
        const std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
        if (eq == std::string::npos || v.empty()) {
            r.error = "option '" + kv + "': expected key=value";
            return r;
        }
        if (k == "fabric") {
            fabric = v;
        } else if (k == "capture") {
            capture = v;
        } else if (k == "poll_ms") {
            char *e = nullptr;
            const unsigned long ms = std::strtoul(v.c_str(), &e, 10);
            if (*e || ms < 1 || ms > 60000) {
                r.error = "option poll_ms=" + v + ": expected 1..60000";
                return r;
            }
            poll_ms = static_cast<std::uint32_t>(ms);
        } else if (k == "fault" && v == "stall_after_claim") {
            fault_stall = true;  // tests only: the sender stops for good after claiming a receive slot
        } else {
            r.error = "unknown option '" + k + "' (known: fabric, capture, poll_ms, fault)";
            return r;
        }
    }
    if (provider == "soft") {
        if (node.empty()) {
            const char *h = std::getenv("SIM_HOST");
            node = h ? h : "";
        }
        if (fabric.empty()) {
            const char *s = std::getenv("IBSIM_SOCKNAME");
            fabric = s ? s : "";
        }
        if (fabric.empty()) {
            r.error = "soft provider: no fabric name (option fabric=, or IBSIM_SOCKNAME)";
            return r;
        }
        for (char c : fabric)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
                r.error = "soft provider: fabric name '" + fabric + "' may only hold letters, digits, '_', '-'";
                return r;
            }
        r.ctx = soft::open_soft(node, fabric, capture, poll_ms, fault_stall, &r.error);
        return r;
    }
    if (provider == "verbs") {
        if (!fabric.empty() || !capture.empty() || fault_stall) {
            r.error = "verbs provider: options fabric, capture and fault belong to the soft provider";
            return r;
        }
        r.ctx = verbs::open_verbs(node, &r.error);
        return r;
    }
    r.error = "unknown HCA provider '" + provider + "' (known: soft, verbs)";
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
