// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's GSI path for CM MADs (gsi.cpp): ibsim hands QP1
// requests only to the SM's client, so CM MADs travel between ports through
// the fabric's shared memory, one mailbox per port (shm_layout.hpp
// GsiMailbox): a MadTransport (cm/cm_engine.hpp) whose send finds the
// destination port by LID and puts the MAD in that port's mailbox, and whose
// recv takes from its own port's.
#pragma once

#include <cstdint>
#include <memory>

#include "../cm/cm_engine.hpp"
#include "capture.hpp"
#include "fabric.hpp"

namespace ipoib::hca::soft {

// The transport of the fabric's port slot port_idx (its LID, GID and P_Keys
// are read from the port entry on every send). capture: nullptr, or where
// each MAD sent is recorded as a UD SEND ONLY from QP1 to QP1 (Q_Key
// 0x80010000) so that tshark decodes the CM attributes. Not thread-safe
// (one CM per port and process: its control thread).
std::unique_ptr<cm::MadTransport> make_gsi_transport(Fabric &fabric, std::uint32_t port_idx, Capture *capture);

} // namespace ipoib::hca::soft
