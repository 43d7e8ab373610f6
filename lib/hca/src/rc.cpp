// SPDX-License-Identifier: BSD-3-Clause
// rc.hpp's names, and Context's answers where a provider has no reliable
// connections.
#include "ipoib/hca/rc.hpp"

namespace ipoib::hca {

const char *to_string(RcState s) noexcept {
    switch (s) {
    case RcState::init: return "INIT";
    case RcState::rtr: return "RTR";
    case RcState::rts: return "RTS";
    case RcState::error: return "ERR";
    }
    return "?";
}

const char *to_string(CmEventType t) noexcept {
    switch (t) {
    case CmEventType::req_received: return "REQ received";
    case CmEventType::rep_received: return "REP received";
    case CmEventType::rtu_received: return "RTU received";
    case CmEventType::rej_received: return "REJ received";
    case CmEventType::mra_received: return "MRA received";
    case CmEventType::dreq_received: return "DREQ received";
    case CmEventType::drep_received: return "DREP received";
    case CmEventType::req_error: return "REQ unanswered";
    case CmEventType::rep_error: return "REP unconfirmed";
    case CmEventType::dreq_error: return "DREQ unanswered";
    }
    return "?";
}

std::unique_ptr<Srq> Context::create_srq(const SrqInit &) noexcept { return nullptr; }
std::unique_ptr<RcQp> Context::create_rc_qp(const RcQpInit &) noexcept { return nullptr; }
std::unique_ptr<Cm> Context::open_cm(std::uint8_t) noexcept { return nullptr; }

} // namespace ipoib::hca
