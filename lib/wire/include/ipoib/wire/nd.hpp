// SPDX-License-Identifier: BSD-3-Clause
// IPv6 Neighbour Discovery link-layer address options between Ethernet and
// IPoIB (RFC 4861 section 4.6.1, RFC 4391 section 9.2).
//
//   Ethernet form: type (1 = source, 2 = target), length 1, 6-byte MAC         (8 bytes)
//   IPoIB form:    type, length 3, 2 reserved zero bytes, 20-byte address     (24 bytes)
//
// nd_translate takes a whole IPv6 packet (from its fixed header), and if it is
// an ICMPv6 RS, RA, NS, NA or Redirect carried directly after the IPv6 header,
// writes a copy with every source/target link-layer address option rewritten,
// the IPv6 payload length adjusted and the ICMPv6 checksum recomputed. Other
// options are copied unchanged. The input checksum must be right (a packet with
// a bad one is refused, not repaired). Anything that is not ND returns not_nd:
// the caller forwards such a packet untouched.
#pragma once

#include "ipoib/wire/addr_map.hpp"
#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::size_t kIPv6HeaderLen = 40;
inline constexpr std::uint8_t kIpProtoIcmpv6 = 58;
inline constexpr std::size_t kNdOptEthLen = 8;
inline constexpr std::size_t kNdOptIbLen = 24;

enum class NdDirection : std::uint8_t { eth_to_ib, ib_to_eth };

// The most an ND packet can grow in this direction: callers size `out` with
// in.size() + nd_max_growth(...).
std::size_t nd_max_growth(Bytes in, NdDirection dir) noexcept;

// Returns the length of the translated packet in `out`. `in` and `out` must not overlap.
Result<std::size_t> nd_translate(Bytes in, MutBytes out, NdDirection dir, const AddrMapper &map) noexcept;

// ICMPv6 checksum of `icmp` (the ICMPv6 message, checksum field included as it
// is) under the IPv6 pseudo-header of src/dst. A message whose checksum field
// is right sums to zero.
std::uint16_t icmpv6_checksum(Bytes src16, Bytes dst16, Bytes icmp) noexcept;
// The same for any upper-layer protocol of IPv6 (RFC 8200 8.1): UDP is 17.
std::uint16_t ipv6_upper_checksum(Bytes src16, Bytes dst16, std::uint8_t next_header, Bytes msg) noexcept;

} // namespace ipoib::wire
