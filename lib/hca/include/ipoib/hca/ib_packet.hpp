// SPDX-License-Identifier: BSD-3-Clause
// InfiniBand packets as they appear on a link (IBA 1.3 chapters 5-9), for
// wire captures of the software HCA: LRH, optional GRH, BTH, DETH, payload
// (padded to 4 bytes), ICRC and VCRC.
//
// CRCs, as this project reads the specification (IBA 7.8):
// - ICRC: CRC-32 (Ethernet polynomial, reflected, initial ones, final
//   complement) over the packet from the LRH to the end of the payload with
//   the variant fields set to ones: the whole LRH (8 bytes), GRH TClass,
//   FlowLabel and HopLmt, BTH Resv8a. Stored least significant byte first,
//   like Ethernet's FCS (and like Linux rxe's ICRC on RoCE).
// - VCRC: CRC-16, polynomial x^16+x^12+x^3+x+1 (0x100b), reflected,
//   initial ones, final complement, over LRH..ICRC; least significant byte first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca {

inline constexpr std::uint8_t kOpUdSendOnly = 0x64;
// Reliable Connection SENDs (IBA Table 38): a message is one ONLY packet, or
// FIRST, MIDDLE..., LAST cut at the path MTU. They carry no DETH.
inline constexpr std::uint8_t kOpRcSendFirst = 0x00;
inline constexpr std::uint8_t kOpRcSendMiddle = 0x01;
inline constexpr std::uint8_t kOpRcSendLast = 0x02;
inline constexpr std::uint8_t kOpRcSendOnly = 0x04;
// The transport of an opcode is its top three bits: 000 RC, 011 UD.
constexpr bool opcode_has_deth(std::uint8_t op) noexcept { return (op & 0xe0) == 0x60; }
inline constexpr std::size_t kLrhLen = 8, kGrhWireLen = 40, kBthLen = 12, kDethLen = 8;
inline constexpr std::size_t kIcrcLen = 4, kVcrcLen = 2;

struct UdPacketMeta {
    std::uint8_t vl = 0;
    std::uint8_t sl = 0;
    std::uint16_t dlid = 0;
    std::uint16_t slid = 0;
    std::uint16_t pkey = 0;
    std::uint32_t dest_qp = 0;
    std::uint32_t src_qp = 0;
    std::uint32_t qkey = 0;
    std::uint32_t psn = 0;
    // The BTH opcode (UD SEND only by default; an RC SEND opcode: no DETH,
    // qkey and src_qp unused) and its AckReq bit.
    std::uint8_t opcode = kOpUdSendOnly;
    bool ack_req = false;
    bool grh = false;
    std::uint8_t traffic_class = 0;
    std::uint32_t flow_label = 0;
    std::uint8_t hop_limit = 0;
    Gid sgid{}, dgid{};
};

// Bytes a SEND packet of `payload_len` takes on the wire (with a DETH for UD).
std::size_t ud_packet_len(const UdPacketMeta &m, std::size_t payload_len) noexcept;

// Build the packet into `out` (at least ud_packet_len bytes) from a gather
// list; returns the length, 0 if `out` is too small.
std::size_t build_ud_packet(const UdPacketMeta &m, const Sge *sg, std::uint32_t nsge, std::size_t payload_len,
                            std::span<std::uint8_t> out) noexcept;

std::uint32_t ib_icrc(std::span<const std::uint8_t> pkt_without_crcs) noexcept;
std::uint16_t ib_vcrc(std::span<const std::uint8_t> pkt_through_icrc) noexcept;

} // namespace ipoib::hca
