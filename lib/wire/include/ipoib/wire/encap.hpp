// SPDX-License-Identifier: BSD-3-Clause
// The 4-byte IPoIB encapsulation header (RFC 4391 section 6):
//
//   bytes 0-1  EtherType of the payload, network order
//   bytes 2-3  reserved: zero on send, ignored on receive
//
// Only IPv4, IPv6, ARP and RARP may be carried.
#pragma once

#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::size_t kEncapLen = 4;

inline constexpr std::uint16_t kEtherTypeIPv4 = 0x0800;
inline constexpr std::uint16_t kEtherTypeArp = 0x0806;
inline constexpr std::uint16_t kEtherTypeRarp = 0x8035;
inline constexpr std::uint16_t kEtherTypeIPv6 = 0x86dd;

// True for the EtherTypes IPoIB may carry.
constexpr bool ethertype_allowed(std::uint16_t ethertype) noexcept {
    return ethertype == kEtherTypeIPv4 || ethertype == kEtherTypeIPv6 ||
           ethertype == kEtherTypeArp || ethertype == kEtherTypeRarp;
}

// Read the header at the start of `in`. On unsupported_ethertype the value
// still holds the EtherType found, so callers can count it.
Result<std::uint16_t> parse_encap(Bytes in) noexcept;

// Write a header for `ethertype` (reserved bytes zeroed). Refuses EtherTypes
// IPoIB cannot carry and outputs shorter than kEncapLen.
Error write_encap(MutBytes out, std::uint16_t ethertype) noexcept;

} // namespace ipoib::wire
