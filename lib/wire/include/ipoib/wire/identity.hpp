// SPDX-License-Identifier: BSD-3-Clause
// Identities derived from a port GUID (8 bytes, network order).
//
// - IPv6 interface identifier (RFC 4391 section 8): the GUID as a modified
//   EUI-64, i.e. with the universal/local bit (0x02 of byte 0) inverted.
// - The MAC an Ethernet-emulating port shows: the EUI-64 folded to 48 bits by
//   dropping its two middle bytes (bytes 3 and 4, "ff:fe" in a MAC-derived
//   EUI-64), made unicast and locally administered (byte 0: clear 0x01, set 0x02).
//   Two GUIDs that differ only in bytes 3-4 fold to the same MAC; the user of
//   this mapping must detect that collision.
#pragma once

#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

using Guid = std::array<std::uint8_t, 8>;

Guid guid_from_u64(std::uint64_t host_order) noexcept;
std::uint64_t guid_to_u64(const Guid &g) noexcept;

// The port GUID carried in a port GID's low half (bytes 8-15, unchanged:
// an IB GID holds the GUID itself, not the modified EUI-64).
Guid guid_from_gid(const Gid &gid) noexcept;

std::array<std::uint8_t, 8> ipv6_iid_from_guid(const Guid &g) noexcept;
// fe80::<iid>
std::array<std::uint8_t, 16> ipv6_link_local_from_guid(const Guid &g) noexcept;
Mac mac_from_guid(const Guid &g) noexcept;

} // namespace ipoib::wire
