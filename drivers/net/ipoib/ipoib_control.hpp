// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib control path: the HCAs this process has open (shared by their
// ports), the control thread of each, and what it does for a port: the UD QP
// and its receive buffers, address handles, link state, multicast attach,
// neighbour resolution and ageing, requests from the fast path.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "ipoib_port.hpp"

namespace ipoib::pmd {

// The registry of open HCAs. Probe, close and telemetry hold the mutex.
std::mutex &hca_registry_mutex() noexcept;
const std::vector<Hca *> &hca_registry() noexcept;

// Open (or share) the HCA a port's config names and start its control
// thread. Caller holds hca_registry_mutex(). nullptr with *err on failure.
Hca *hca_get(const Config &cfg, std::string *err);
// Drop a reference; the last one stops the control thread and closes the HCA.
void hca_put(Hca *h);

// ethdev start/stop/close, control side. Caller holds p->hca->mu.
// What the port's attributes say the port can do: max_mtu, link_mbps (at probe and at each link up).
void port_read_rates(Port *p);
int port_control_start(Port *p);
void port_control_stop(Port *p);
void port_release_resources(Port *p);
// The QP and what refers to it (neighbours, joined groups' entries), to be
// made again at the next start: a new QPN.
void port_release_qp(Port *p);
// dev_start (Hca::mu held, fast path stopped): the QP's queues for nrx RX
// and ntx TX queues, RX completion events or not (a QP or CQs of another
// layout are released, to be made again), their completion queues made now
// (the RX interrupt fds exist from the start), and which send queue each TX
// queue posts to; rx_mbufs: the receive mode (a QP posted in the other mode
// is released too). False (logged) if the CQs cannot be made.
bool prepare_queues(Port *p, std::uint16_t nrx, std::uint16_t ntx, bool rx_events, bool rx_mbufs);

} // namespace ipoib::pmd
