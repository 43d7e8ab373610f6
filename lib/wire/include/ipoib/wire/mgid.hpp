// SPDX-License-Identifier: BSD-3-Clause
// IPoIB multicast GIDs (RFC 4391 section 4):
//
//   ff1S:401b:PPPP:0000:0000:0000:ffff:ffff   broadcast group of P_Key PPPP, scope S
//   ff1S:401b:PPPP:0000:0000:000X:XXXX:XXXX   IPv4 group: low 28 bits of the address
//   ff1S:601b:PPPP:XXXX:XXXX:XXXX:XXXX:XXXX   IPv6 group: last 10 bytes (80 bits)
//
// PPPP is the P_Key with the full-membership bit (0x8000) set: the broadcast
// group of a partition is the same for full and limited members. IP groups
// take P_Key and scope from the interface's broadcast GID, as Linux does.
#pragma once

#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::uint16_t kPkeyFullMember = 0x8000;
inline constexpr std::uint16_t kSignatureIPv4 = 0x401b;
inline constexpr std::uint16_t kSignatureIPv6 = 0x601b;
inline constexpr std::uint8_t kScopeLinkLocal = 0x2;

// A P_Key names a partition unless its low 15 bits are zero (0x0000, 0x8000).
constexpr bool pkey_valid(std::uint16_t pkey) noexcept { return (pkey & 0x7fff) != 0; }
constexpr std::uint16_t pkey_full(std::uint16_t pkey) noexcept { return pkey | kPkeyFullMember; }

// Broadcast MGID for `pkey` at `scope` (1..14). bad_pkey / bad_scope otherwise.
Result<Gid> broadcast_mgid(std::uint16_t pkey, std::uint8_t scope = kScopeLinkLocal) noexcept;

// The broadcast hardware address: flags 0, QPN 0xffffff, broadcast MGID.
Result<HwAddr> broadcast_hwaddr(std::uint16_t pkey, std::uint8_t scope = kScopeLinkLocal) noexcept;

// Multicast hardware address (flags 0, QPN 0xffffff) for a multicast GID.
HwAddr multicast_hwaddr(const Gid &mgid) noexcept;

// Scope nibble and P_Key of an IPoIB MGID (not_multicast if byte 0 is not 0xff).
Result<std::uint8_t> mgid_scope(const Gid &mgid) noexcept;
Result<std::uint16_t> mgid_pkey(const Gid &mgid) noexcept;

// True if `mgid` carries the IPv4 or IPv6 IPoIB signature.
bool is_ipoib_mgid(const Gid &mgid) noexcept;

// IPv4 group address (4 bytes, network order) -> MGID, P_Key and scope from
// `broadcast`. 224.0.0.0/4 maps as above; 255.255.255.255 maps to the
// broadcast MGID itself; any other address is not_multicast.
Result<Gid> ipv4_mcast_mgid(Bytes addr4, const Gid &broadcast) noexcept;
// IPv6 group address (16 bytes, ff00::/8) -> MGID.
Result<Gid> ipv6_mcast_mgid(Bytes addr16, const Gid &broadcast) noexcept;

// Conveniences that first build the broadcast MGID of (pkey, scope).
Result<Gid> ipv4_mcast_mgid(Bytes addr4, std::uint16_t pkey, std::uint8_t scope = kScopeLinkLocal) noexcept;
Result<Gid> ipv6_mcast_mgid(Bytes addr16, std::uint16_t pkey, std::uint8_t scope = kScopeLinkLocal) noexcept;

} // namespace ipoib::wire
