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
    // Non-blocking: 1 and one MAD (kMadSize bytes) with its source, 0 if none, <0 on error.
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

std::unique_ptr<Cm> make_cm_engine(std::unique_ptr<MadTransport> transport, const LocalPort &port,
                                   ClockUs clock = nullptr);

} // namespace ipoib::hca::cm
