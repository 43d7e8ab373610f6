// SPDX-License-Identifier: BSD-3-Clause
// The numbers of lib/ctrl, in one place (the way Linux's ipoib.h keeps its
// enum), and the layer's conventions.
//
// Error convention of lib/ctrl:
// - An SA request's outcome is an SaStatus (sa.hpp): status 0 is success;
//   > 0 is the 16-bit MAD status word the SA answered (the SA class status
//   in bits 8-15, e.g. kSaStatusNoRecords); < 0 is a local -errno
//   (-ETIMEDOUT once the last retry timed out, -EINVAL for an answer the
//   control plane refused). SaStatus::message() words it for logs.
// - Set-up calls (SaService::open, ControlPlane::open, add_interface)
//   return bool (or nullptr) and, on failure, put a sentence into the
//   caller's std::string *err (never null).
// - Nothing in lib/ctrl throws; waiting states are not errors: they are an
//   IfaceState, a counter and one notice-level log line per occurrence.
//
// Time is in milliseconds throughout: a monotonic clock (CpConfig::now_ms).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ipoib::ctrl {

// ---- IPoIB (RFC 4391) -------------------------------------------------------
// The Q_Key IPoIB broadcast groups carry (OpenSM's default for ipoib
// partitions, and what a RoCE port without SA uses).
inline constexpr std::uint32_t kIpoibQkey = 0x0b1b;
// P_Key bits: the full-member bit and the partition number.
inline constexpr std::uint16_t kPkeyFullMember = 0x8000;
inline constexpr std::uint16_t kPkeyMask = 0x7fff;

// ---- SA client (sa.hpp) -----------------------------------------------------
inline constexpr int kSaTimeoutMs = 500;        // first try of a request
inline constexpr int kSaMaxTimeoutMs = 16000;   // a request's timeout doubles per retry up to this
inline constexpr int kSaRetries = 3;            // resends after the first try
// Each try is handed to the kernel with its timeout as the MAD's response
// timeout (umad_send timeout_ms; retries 0: SaClient resends, the kernel
// does not). SaClient's own timer for the try runs this much longer, so the
// kernel, which reports its timeout (ETIMEDOUT) and frees the TID, always
// decides first: a late answer is still matched, and the resend (same TID)
// is never refused as a duplicate of a send the kernel still holds.
inline constexpr int kSaTimerSlackMs = 100;
inline constexpr std::size_t kMadLen = 256;     // one MAD (what an SA answer holds without RMPP)
inline constexpr std::size_t kSaRecvBufLen = 64 * 1024;  // an RMPP-reassembled table answer
// A larger answer (umad_recv: ENOSPC) is read off with a buffer of its size,
// up to this; beyond it the umad port is reopened to get rid of it.
inline constexpr std::size_t kSaMaxDrainLen = 16 * 1024 * 1024;
inline constexpr std::uint32_t kGsiQkey = 0x80010000;    // QP1's well-known Q_Key
// MAD status word "SA status 0x03: no records" (IBA 15.2.1.1: class status in bits 8-15).
inline constexpr int kSaStatusNoRecords = 0x03 << 8;
// MCMemberRecord MTU / rate selector "exactly" (IBA 15.2.5.17).
inline constexpr std::uint8_t kSelectorExactly = 2;

// ---- Interface state machine (control_plane.hpp) ----------------------------
// Waiting states and failed joins retry after a backoff: 1 s, doubling, capped at 16 s.
inline constexpr std::uint32_t kBackoffStartMs = 1000;
inline constexpr std::uint32_t kBackoffMaxMs = 16000;
// A missing P_Key is looked for again this often.
inline constexpr std::uint32_t kPkeyRecheckMs = 1000;
// The broadcast membership audit (notices an SM that restarted and forgot us).
inline constexpr std::uint32_t kAuditMs = 2000;
// Allmulticast: how often the partition's groups are listed.
inline constexpr std::uint32_t kAllmultiPollMs = 5000;
// stop(): how long the SA's acknowledgements of the leaves are waited for.
inline constexpr int kStopTimeoutMs = 1000;
// stop(): each wait for those acknowledgements.
inline constexpr int kStopPollMs = 10;

// ---- Static management (RoCE: no SA) -----------------------------------------
inline constexpr std::uint8_t kStaticMcastHopLimit = 1;  // a group's record: link-local
inline constexpr std::uint8_t kStaticPathHopLimit = 64;  // a path's GRH hop limit

// ---- Path cache ----------------------------------------------------------------
// Entries at most (CpConfig::path_cache_max); then the least recently updated
// invalid entry, else valid one, makes room.
inline constexpr std::size_t kPathCacheMax = 4096;

// ---- Fast-path request ring ---------------------------------------------------
inline constexpr std::size_t kRequestRingSize = 1024;  // a power of two
static_assert((kRequestRingSize & (kRequestRingSize - 1)) == 0);

} // namespace ipoib::ctrl
