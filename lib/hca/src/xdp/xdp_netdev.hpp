// SPDX-License-Identifier: BSD-3-Clause
// What the xdp provider reads from the Linux network device it runs on:
// index, Ethernet address, MTU, link state, IP addresses (its GID table),
// and the neighbour table (an address handle's destination MAC), through
// ioctl, getifaddrs and rtnetlink. Control path only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::xdp {

struct NetdevState {
    int ifindex = 0;
    std::uint8_t mac[6] = {};
    std::uint32_t mtu = 0;
    bool up = false;       // IFF_UP and IFF_RUNNING: the link carries packets
    std::vector<Gid> ips;  // its IPv6 addresses, then its IPv4 ones as ::ffff:a.b.c.d
};

// Read the device's state. false and *err if there is no such device.
bool netdev_read(const std::string &name, NetdevState *out, std::string *err);

// The default RoCE GID of an Ethernet address: fe80::/64 with the modified
// EUI-64 interface identifier (what Linux gives the device's link-local
// address and rdma_rxe its GID 0).
Gid eui64_link_local(const std::uint8_t mac[6]) noexcept;
// The Ethernet address inside such a GID (false if it is not one).
bool mac_from_eui64(const Gid &g, std::uint8_t mac[6]) noexcept;

// The Ethernet address of ip (IPv6, or IPv4-mapped) on the device from the
// kernel's neighbour table, asking the kernel to resolve it (a datagram to
// the discard port) and waiting up to timeout_ms when it is not there.
// false and *err if it is not resolved in time.
bool neigh_resolve(const std::string &ifname, int ifindex, const Gid &ip, int timeout_ms, std::uint8_t mac[6],
                   std::string *err);

} // namespace ipoib::hca::xdp
