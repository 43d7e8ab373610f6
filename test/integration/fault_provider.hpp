// SPDX-License-Identifier: BSD-3-Clause
// The "fault" HCA provider, for tests only (linked into hca-peer, never into
// the library): the soft provider plus fault injection.
#pragma once

namespace ipoib::test {

// Register provider "fault": the soft provider's options plus
// fault=stall_after_claim (a send from the device claims the destination's
// receive slot and then stalls for good, for a test to kill it there).
// Returns false if it could not be registered.
bool register_fault_provider();

} // namespace ipoib::test
