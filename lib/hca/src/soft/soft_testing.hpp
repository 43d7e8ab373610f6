// SPDX-License-Identifier: BSD-3-Clause
// Test-only hooks of the software HCA. Not part of the public interface:
// production code never includes this, and no device option reaches it.
// Tests reach it through the hca_testing dependency (lib/hca/meson.build),
// e.g. the "fault" provider of test/integration/hca_peer.
#pragma once

#include <cstdint>

#include <memory>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::cm {
class MadTransport;
}

namespace ipoib::hca::soft {

struct FabricShm;

// Arm the stall-after-claim fault on a soft-HCA context: from now on, a send
// from this context claims the destination's receive slot and then waits
// without writing it: forever (ms = 0), so that a test can kill or stop the
// process holding a claimed slot, or for ms milliseconds, after which it
// finishes the send (a sender that comes back late). Returns false if ctx is
// not a soft-HCA context.
bool arm_stall_after_claim(Context &ctx, std::uint32_t ms = 0) noexcept;

// How long a receive slot claimed by a live sender may block the receive
// queues of ctx before the receiver skips it (the default is the soft HCA's
// kStalledSlotMs). Returns false if ctx is not a soft-HCA context.
bool set_stall_ms(Context &ctx, std::uint32_t ms) noexcept;

// Process-wide: the next fabric attach of this process pauses ms
// milliseconds between claiming its process slot and publishing who it is
// (a slow start), so that a test can look at the slot in that window.
void set_attach_pause_ms(std::uint32_t ms) noexcept;

// Process-wide: creating a multicast group (the first attach of an MGID)
// takes us microseconds longer, between taking a free entry of the group
// table and publishing the group, so that a test can have several processes
// attach a new MGID at once (0: no pause).
void set_group_create_pause_us(std::uint32_t us) noexcept;

// The fabric's shared state as ctx has it mapped (shm_layout.hpp), for tests
// that write into it what a buggy peer could, and ctx's process slot.
// nullptr / false if ctx is not a soft-HCA context.
FabricShm *fabric_shm(Context &ctx) noexcept;

// The GSI mailbox transport of ctx's port (gsi.hpp), the one open_cm gives
// the CM engine, for tests that carry MADs without the engine. nullptr if
// ctx is not a soft-HCA context or has no such port.
std::unique_ptr<cm::MadTransport> gsi_transport(Context &ctx, std::uint8_t port) noexcept;
bool fabric_proc(Context &ctx, std::uint32_t *proc, std::uint32_t *gen) noexcept;

} // namespace ipoib::hca::soft
