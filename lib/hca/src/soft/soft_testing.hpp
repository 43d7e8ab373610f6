// SPDX-License-Identifier: BSD-3-Clause
// Test-only hooks of the software HCA. Not part of the public interface:
// production code never includes this, and no device option reaches it.
// Tests reach it through the hca_testing dependency (lib/hca/meson.build),
// e.g. the "fault" provider of test/integration/hca_peer.
#pragma once

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::soft {

// Arm the stall-after-claim fault on a soft-HCA context: from now on, a send
// from this context claims the destination's receive slot and then spins
// forever without writing it, so that a test can kill the process holding a
// claimed slot (the receiver must complete it as `aborted`). Returns false
// if ctx is not a soft-HCA context.
bool arm_stall_after_claim(Context &ctx) noexcept;

} // namespace ipoib::hca::soft
