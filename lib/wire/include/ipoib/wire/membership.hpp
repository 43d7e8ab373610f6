// SPDX-License-Identifier: BSD-3-Clause
// IP multicast membership reports, as a host's IP stack sends them: IGMPv1/v2
// (RFC 2236) and IGMPv3 (RFC 3376), MLDv1 (RFC 2710) and MLDv2 (RFC 3810).
// An IPoIB interface receives a group only after a full-member join of its
// exact MGID (RFC 4391 section 4), which Ethernet's multicast MACs cannot
// name (23 or 32 bits of the group); the reports carry the whole address.
//
// What a report means for the group's membership (source lists cannot be
// honoured by an IB multicast group, so any wanted source means "join"):
//   IGMPv1/v2 report, MLDv1 report              -> join
//   IGMPv2 leave, MLDv1 done                    -> leave
//   v3/v2 record MODE_IS_EXCLUDE, CHANGE_TO_EXCLUDE  -> join
//   MODE_IS_INCLUDE, CHANGE_TO_INCLUDE, ALLOW   -> join if it names sources, else leave
//   BLOCK_OLD_SOURCES                           -> no change
#pragma once

#include <array>
#include <cstdint>

#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::uint8_t kIpProtoIgmp = 2;
inline constexpr std::uint8_t kMldReport = 131, kMldDone = 132, kMldv2Report = 143;

struct GroupChange {
    std::array<std::uint8_t, 16> group{};  // IPv4: the first 4 bytes
    bool ipv6 = false;
    bool join = false;
};

// At most this many group records of one report are reported (a v3/v2 report
// may carry more: the rest are ignored and the result says so).
inline constexpr unsigned kMaxGroupChanges = 16;

struct GroupChanges {
    GroupChange change[kMaxGroupChanges];
    unsigned n = 0;
    bool truncated = false;  // records beyond kMaxGroupChanges were left out
};

// An IGMP message (the IPv4 payload). not_multicast: a query or another
// message that changes no membership; truncated / bad_icmp_checksum for
// malformed ones. Group addresses that are not multicast are skipped.
Result<GroupChanges> parse_igmp(Bytes igmp) noexcept;

// An ICMPv6 message (after the IPv6 header and its extension headers):
// MLD reports and done messages; not_nd (any other ICMPv6 type: leave it
// alone), truncated for malformed ones. The ICMPv6 checksum is not checked
// (the sender is the local stack).
Result<GroupChanges> parse_mld(Bytes icmp6) noexcept;

} // namespace ipoib::wire
