// SPDX-License-Identifier: BSD-3-Clause
// RoCE v2 UD packets as the xdp provider puts them on an Ethernet link and
// reads them from it (IBA Annex A17): Ethernet, IPv4 or IPv6, UDP to port
// 4791, BTH, DETH, the payload padded to 4 bytes, ICRC.
//
// The ICRC, as Annex A17.3.3 defines it and Linux rxe computes it: CRC-32
// (Ethernet's) over 8 bytes of ones (the LRH a RoCE v2 packet does not
// have), then the IP header with its variant fields set to ones (IPv4: TOS,
// TTL, header checksum; IPv6: traffic class, flow label, hop limit), the
// UDP header with its checksum set to ones, the BTH with Resv8a set to ones,
// and the rest of the packet up to the ICRC; stored least significant byte first.
//
// The UDP source port carries entropy for ECMP (A17.4.1.1: 0xC000 and up);
// the UDP checksum is 0 over IPv4 and computed over IPv6 (a receiver may
// check it there). Pure functions, no state: unit-tested in test_roce_packet.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::xdp {

inline constexpr std::uint16_t kRoceV2Port = 4791;
inline constexpr std::size_t kEthLen = 14, kIpv4Len = 20, kIpv6Len = 40, kUdpLen = 8;
inline constexpr std::size_t kBthLen = 12, kDethLen = 8, kIcrcLen = 4;
inline constexpr std::uint8_t kOpUdSendOnly = 0x64;
inline constexpr std::uint8_t kOpUdSendOnlyImm = 0x65;

// The bytes before the payload, and the most a packet adds to it (headers, pad, ICRC).
constexpr std::size_t roce_header_len(bool ipv4) noexcept {
    return kEthLen + (ipv4 ? kIpv4Len : kIpv6Len) + kUdpLen + kBthLen + kDethLen;
}
constexpr std::size_t roce_overhead(bool ipv4) noexcept { return roce_header_len(ipv4) + 3 + kIcrcLen; }

// A UD SEND's addressing and header fields.
struct RoceSend {
    std::uint8_t dmac[6];
    std::uint8_t smac[6];
    bool ipv4;        // the GIDs are IPv4-mapped (::ffff:a.b.c.d)
    Gid sgid, dgid;   // the IP source and destination
    std::uint8_t traffic_class, hop_limit;
    std::uint32_t flow_label;  // IPv6 only
    std::uint16_t udp_sport;
    std::uint16_t ip_id;       // IPv4 only
    std::uint16_t pkey;
    std::uint32_t dest_qp, src_qp, qkey, psn;
};

// Write the headers of a packet carrying payload_len bytes into frame
// (roce_header_len bytes); the caller then puts the payload right after
// them and calls roce_finish. Returns the header length.
std::size_t roce_write_headers(const RoceSend &s, std::uint32_t payload_len, std::uint8_t *frame) noexcept;
// Pad the payload, fill the UDP checksum (IPv6) and the ICRC; returns the frame's length.
std::size_t roce_finish(std::uint8_t *frame, bool ipv4, std::uint32_t payload_len) noexcept;

// The ICRC of a packet whose IP header starts at l3 and whose ICRC field
// starts at l3 + len (everything from the IP header up to the ICRC).
std::uint32_t roce_icrc(const std::uint8_t *l3, std::size_t len, bool ipv4) noexcept;

// A received packet, parsed.
struct RoceRecv {
    bool ipv4;
    const std::uint8_t *l3;  // the IP header
    Gid sgid, dgid;          // IPv4: mapped
    std::uint8_t opcode, traffic_class, hop_limit;
    std::uint32_t flow_label;
    std::uint16_t pkey;
    std::uint32_t dest_qp, psn, qkey, src_qp;
    const std::uint8_t *payload;
    std::uint32_t payload_len;
};
enum class RoceParse : std::uint8_t {
    ok,
    not_roce,     // not IP/UDP to 4791 (the XDP program lets these pass; never expected here)
    malformed,    // lengths that disagree, a header cut short, a BTH version other than 0
    bad_icrc,
    not_ud_send,  // an opcode this provider does not take (only UD SEND Only)
};
const char *to_string(RoceParse r) noexcept;
// Parse (and check the ICRC of) one Ethernet frame.
RoceParse roce_parse(const std::uint8_t *frame, std::size_t len, RoceRecv *out) noexcept;

// The Ethernet address of a multicast group (IPv6: 33:33 + its last 4
// bytes; IPv4-mapped: 01:00:5e + its low 23 bits).
void multicast_mac(const Gid &mgid, std::uint8_t mac[6]) noexcept;
// A multicast GID: ff00::/8, or an IPv4-mapped 224.0.0.0/4 address.
bool is_multicast_gid(const Gid &g) noexcept;

} // namespace ipoib::hca::xdp
