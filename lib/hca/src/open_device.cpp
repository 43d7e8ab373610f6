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
        r.error = "verbs provider: not built yet";
        return r;
    }
    r.error = "unknown HCA provider '" + provider + "' (known: soft, verbs)";
    return r;
}

} // namespace ipoib::hca
