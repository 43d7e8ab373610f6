// SPDX-License-Identifier: BSD-3-Clause
// Test-only hooks of the in-process HCA (provider "inproc"). Not part of the
// public interface; tests reach it through the hca_testing dependency.
#pragma once

#include <cstdint>
#include <vector>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::inproc {

// Set the port state of ctx's device (as a cable pulled or plugged in): every
// context open on the device gets PORT_ERR or PORT_ACTIVE from
// get_port_event when the port leaves or enters ACTIVE; sends from a port
// that is not ACTIVE complete with loc_qp_op_err, messages to it are dropped
// (counted drop_port_down). Returns 0, or -EINVAL if ctx is not an inproc context.
int set_port_state(Context &ctx, PortState state) noexcept;

// Replace the P_Key table of ctx's device (as an SM does): every context open
// on it gets a PKEY_CHANGE event. A QP's P_Key is the entry at its index, so
// a QP whose entry is emptied or changed sends and receives with the new value
// until it moves (Qp::set_pkey_index). 0, or -EINVAL (not inproc; 1..64 entries).
int set_pkeys(Context &ctx, const std::vector<std::uint16_t> &pkeys) noexcept;

} // namespace ipoib::hca::inproc
