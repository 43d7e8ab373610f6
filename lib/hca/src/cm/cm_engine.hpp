// SPDX-License-Identifier: BSD-3-Clause
// The connection manager every provider that sends its own MADs shares (the
// software HCA, the in-process one): rc.hpp's Cm, implemented over a
// MadTransport that carries 256-byte MADs between ports' QP1s. It speaks the
// CM class (0x07) of IBA chapter 12 as the kernel's ib_cm does: REQ, REP,
// RTU, REJ, MRA, DREQ, DREP encoded per IBA 12.6 (cm_mad.hpp), with
// retransmission after the response timeouts, duplicate detection and
// time-wait. Internal to lib/hca.
#pragma once

#include <cstdint>
#include <memory>

#include "ipoib/hca/rc.hpp"

namespace ipoib::hca::cm {

inline constexpr std::size_t kMadSize = 256;
inline constexpr std::uint32_t kGsiQkey = 0x80010000u;

// A peer port: the source of a MAD received, the destination of one sent
// (always its QP1).
struct MadAddr {
    std::uint16_t lid = 0;
    std::uint32_t qpn = 1;
    std::uint16_t pkey_index = 0;
    std::uint8_t sl = 0;
    bool global = false;
    Gid gid{};
};

class MadTransport {
  public:
    virtual ~MadTransport() = default;
    // Send one MAD (kMadSize bytes) to the port's QP1: 0, or <0.
    virtual int send(const MadAddr &to, const std::uint8_t *mad) noexcept = 0;
    // Non-blocking: the number of bytes received into mad (1..kMadSize; a
    // MAD is kMadSize bytes, anything shorter is malformed and dropped by the
    // CM) with its source, 0 if none, <0 on error.
    virtual int recv(std::uint8_t *mad, MadAddr *from) noexcept = 0;
};

// What the CM puts in its MADs about this side.
struct LocalPort {
    std::uint16_t lid = 0;
    Gid gid{};
    std::uint64_t ca_guid = 0;  // host order (REQ's Local CA GUID)
};

// Microseconds on some monotonic clock; tests pass their own to run timers fast.
using ClockUs = std::uint64_t (*)() noexcept;

// What the engine did with the MADs it saw (read with cm_counters()).
struct CmCounters {
    std::uint64_t mads_sent = 0;      // every MAD handed to the transport, retransmissions included
    std::uint64_t mads_received = 0;  // every MAD taken from it, malformed ones included
    std::uint64_t send_errors = 0;    // the transport refused a MAD (the timers retry REQ/REP/DREQ)
    // Malformed MADs, dropped: shorter than a MAD, a base or class version
    // other than 1 / 2, not the CM class, not SEND, an attribute the CM does
    // not take (LAP, APR, SIDR, ClassPortInfo, unknown).
    std::uint64_t dropped_short = 0;
    std::uint64_t dropped_bad_version = 0;
    std::uint64_t dropped_bad_class = 0;
    std::uint64_t dropped_bad_method = 0;
    std::uint64_t dropped_unknown_attr = 0;
    // Well-formed but for no communication ID, or not expected in its state
    // (a REP for an ID that did not send a REQ, a late RTU, ...): dropped.
    std::uint64_t dropped_unmatched = 0;
    std::uint64_t duplicates = 0;        // a REQ, REP or DREQ seen again (answered again or ignored)
    std::uint64_t retransmits = 0;       // REQ, REP, DREQ re-sent after their timeout
    std::uint64_t timeouts = 0;          // req_error, rep_error, dreq_error reported
    std::uint64_t rej_no_listener = 0;   // REJ invalid_service_id sent for a REQ nobody listens to
    std::uint64_t drep_for_unknown = 0;  // DREP sent for a DREQ of an ID not (or no longer) known
};

// The counters of a Cm made by make_cm_engine (0), -EINVAL for another Cm.
int cm_counters(const Cm &cm, CmCounters *out) noexcept;

std::unique_ptr<Cm> make_cm_engine(std::unique_ptr<MadTransport> transport, const LocalPort &port,
                                   ClockUs clock = nullptr);

} // namespace ipoib::hca::cm
