// SPDX-License-Identifier: BSD-3-Clause
// The "fault" HCA provider, for tests only (linked into hca-peer, never into
// the library): the soft provider plus fault injection and test hooks.
#pragma once

namespace ipoib::test {

// Register provider "fault": the soft provider's options plus
//   fault=stall_after_claim  a send from the device claims the destination's
//                            receive slot, then stalls for good (a test kills
//                            or stops it there), or fault_ms ms (it comes back late);
//   fault=slow_attach        attaching to the fabric pauses fault_ms ms
//                            (default 1000) between claiming a process slot
//                            and publishing who holds it;
//   stall_ms=N               how long a slot claimed by a live sender may
//                            block this device's receive queues.
// Returns false if it could not be registered.
bool register_fault_provider();

} // namespace ipoib::test
