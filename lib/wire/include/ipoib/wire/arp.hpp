// SPDX-License-Identifier: BSD-3-Clause
// ARP/RARP translation between Ethernet and IPoIB (RFC 4391 section 9.1).
//
//   Ethernet ARP: htype 1,  ptype 0x0800, hlen 6,  plen 4 -> 28 bytes
//   IPoIB ARP:    htype 32, ptype 0x0800, hlen 20, plen 4 -> 56 bytes
//
// Both directions take the ARP payload (after the Ethernet header or the
// 4-byte IPoIB header) and write the translated payload to a separate buffer.
// Opcodes 1-4 (ARP and RARP request/reply) are translated; a zero target
// hardware address (and, Ethernet side, the broadcast MAC) stays "unknown",
// i.e. all zeros. Trailing bytes (Ethernet padding) are ignored.
#pragma once

#include "ipoib/wire/addr_map.hpp"
#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::size_t kEthArpLen = 28;
inline constexpr std::size_t kIbArpLen = 56;
inline constexpr std::uint16_t kArpHtypeEthernet = 1;
inline constexpr std::uint16_t kArpHtypeInfiniBand = 32;

// Returns the number of bytes written to `out` (kIbArpLen / kEthArpLen).
Result<std::size_t> arp_eth_to_ib(Bytes in, MutBytes out, const AddrMapper &map) noexcept;
Result<std::size_t> arp_ib_to_eth(Bytes in, MutBytes out, const AddrMapper &map) noexcept;

} // namespace ipoib::wire
