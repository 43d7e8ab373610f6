// SPDX-License-Identifier: BSD-3-Clause
// The CM MADs of IBA vol 1 chapter 12.6: REQ, MRA, REJ, REP, RTU, DREQ, DREP
// as 256-byte MADs (the common MAD header of 13.4.3, then the message from
// byte 24), every field at its bit position in the tables of 12.6 (the
// kernel's include/rdma/ibta_vol1_c12.h names the same positions). A field of
// n bits that is "first" in a byte or word takes its most significant bits
// (big-endian, as all of IBA). Internal to lib/hca (the CM engine, tests).
//
// Offsets below are of the message, i.e. from MAD byte 24.
//   REQ   0 local comm ID, 8 service ID, 16 local CA GUID, 28 local Q_Key,
//         32 local QPN:24|responder resources:8, 36 local EECN:24|initiator depth:8,
//         40 remote EECN:24|remote CM response timeout:5|transport service type:2|E2E flow control:1,
//         44 starting PSN:24|local CM response timeout:5|retry count:3,
//         48 P_Key:16, 50 path MTU:4|RDC exists:1|RNR retry count:3,
//         51 max CM retries:4|SRQ:1|extended transport type:3,
//         52..95 primary path, 96..139 alternate path, 140 private data (92)
//   path  +0 local port LID, +2 remote port LID, +4 local GID, +20 remote GID,
//         +36 flow label:20|reserved:6|packet rate:6, +40 traffic class,
//         +41 hop limit, +42 SL:4|subnet local:1, +43 local ACK timeout:5
//   MRA   0 local, 4 remote comm ID, 8 message MRAed:2, 9 service timeout:5, 10 private data (222)
//   REJ   0, 4, 8 message rejected:2, 9 reject info length:7, 10 reason:16, 12 ARI (72), 84 private data (148)
//   REP   0, 4, 8 local Q_Key, 12 local QPN:24, 16 local EECN:24, 20 starting PSN:24,
//         24 responder resources, 25 initiator depth,
//         26 target ACK delay:5|failover accepted:2|E2E flow control:1,
//         27 RNR retry count:3|SRQ:1, 28 local CA GUID, 36 private data (196)
//   RTU   0, 4, 8 private data (224)
//   DREQ  0, 4, 8 remote QPN/EECN:24, 12 private data (220)
//   DREP  0, 4, 8 private data (224)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "cm_engine.hpp"
#include "ipoib/hca/rc.hpp"

namespace ipoib::hca::cm {

inline constexpr std::size_t kMadHeaderSize = 24;
inline constexpr std::uint8_t kMadBaseVersion = 1;
inline constexpr std::uint8_t kCmMgmtClass = 0x07;
inline constexpr std::uint8_t kCmClassVersion = 2;
inline constexpr std::uint8_t kMadMethodSend = 0x03;

enum class CmAttr : std::uint16_t {
    req = 0x0010,
    mra = 0x0011,
    rej = 0x0012,
    rep = 0x0013,
    rtu = 0x0014,
    dreq = 0x0015,
    drep = 0x0016,
};
const char *to_string(CmAttr a) noexcept;

// REQ's transport service type; REJ's "message rejected" and MRA's "message MRAed".
enum class CmTransport : std::uint8_t { rc = 0, uc = 1, rd = 2 };
enum class CmMsgKind : std::uint8_t { req = 0, rep = 1, other = 2 };  // other: LAP for MRA

inline constexpr std::size_t kCmMraPrivateData = 222;
inline constexpr std::size_t kCmRejAriLen = 72;

// The 13.4.3 common header of a MAD.
struct MadHeader {
    std::uint8_t base_version = kMadBaseVersion;
    std::uint8_t mgmt_class = kCmMgmtClass;
    std::uint8_t class_version = kCmClassVersion;
    std::uint8_t method = kMadMethodSend;
    std::uint16_t status = 0;
    std::uint16_t class_specific = 0;
    std::uint64_t tid = 0;
    std::uint16_t attr_id = 0;
    std::uint32_t attr_mod = 0;
};

// A path of the REQ (primary or alternate), as the requester sees it.
struct CmPathFields {
    std::uint16_t local_lid = 0, remote_lid = 0;
    Gid local_gid{}, remote_gid{};
    std::uint32_t flow_label = 0;  // 20 bits
    std::uint8_t packet_rate = 0;  // 6 bits (IBA rate encoding)
    std::uint8_t traffic_class = 0;
    std::uint8_t hop_limit = 0;
    std::uint8_t sl = 0;  // 4 bits
    bool subnet_local = true;
    std::uint8_t local_ack_timeout = 0;  // 5 bits
    friend bool operator==(const CmPathFields &, const CmPathFields &) = default;
};

struct ReqMsg {
    std::uint32_t local_comm_id = 0;
    std::uint64_t service_id = 0;
    std::uint64_t local_ca_guid = 0;
    std::uint32_t local_qkey = 0;
    std::uint32_t local_qpn = 0;  // 24 bits
    std::uint8_t responder_resources = 0;
    std::uint32_t local_eecn = 0;  // 24 bits
    std::uint8_t initiator_depth = 0;
    std::uint32_t remote_eecn = 0;  // 24 bits
    std::uint8_t remote_cm_response_timeout = 0;  // 5 bits
    CmTransport transport = CmTransport::rc;      // 2 bits
    bool end_to_end_flow_control = false;
    std::uint32_t starting_psn = 0;              // 24 bits
    std::uint8_t local_cm_response_timeout = 0;  // 5 bits
    std::uint8_t retry_count = 0;                // 3 bits
    std::uint16_t pkey = 0;
    std::uint8_t path_mtu = 0;  // 4 bits (Mtu's encoding)
    bool rdc_exists = false;
    std::uint8_t rnr_retry_count = 0;  // 3 bits
    std::uint8_t max_cm_retries = 0;   // 4 bits
    bool srq = false;
    std::uint8_t extended_transport = 0;  // 3 bits
    CmPathFields primary, alternate;      // an alternate path with both LIDs 0: none
    std::array<std::uint8_t, kCmReqPrivateData> private_data{};
    friend bool operator==(const ReqMsg &, const ReqMsg &) = default;
};

struct MraMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    CmMsgKind message_mraed = CmMsgKind::req;
    std::uint8_t service_timeout = 0;  // 5 bits
    std::array<std::uint8_t, kCmMraPrivateData> private_data{};
    friend bool operator==(const MraMsg &, const MraMsg &) = default;
};

struct RejMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    CmMsgKind message_rejected = CmMsgKind::req;
    std::uint8_t reject_info_length = 0;  // 7 bits, <= 72
    std::uint16_t reason = 0;
    std::array<std::uint8_t, kCmRejAriLen> ari{};
    std::array<std::uint8_t, kCmRejPrivateData> private_data{};
    friend bool operator==(const RejMsg &, const RejMsg &) = default;
};

struct RepMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    std::uint32_t local_qkey = 0;
    std::uint32_t local_qpn = 0;     // 24 bits
    std::uint32_t local_eecn = 0;    // 24 bits
    std::uint32_t starting_psn = 0;  // 24 bits
    std::uint8_t responder_resources = 0;
    std::uint8_t initiator_depth = 0;
    std::uint8_t target_ack_delay = 0;   // 5 bits
    std::uint8_t failover_accepted = 0;  // 2 bits
    bool end_to_end_flow_control = false;
    std::uint8_t rnr_retry_count = 0;  // 3 bits
    bool srq = false;
    std::uint64_t local_ca_guid = 0;
    std::array<std::uint8_t, kCmRepPrivateData> private_data{};
    friend bool operator==(const RepMsg &, const RepMsg &) = default;
};

struct RtuMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    std::array<std::uint8_t, kCmRtuPrivateData> private_data{};
    friend bool operator==(const RtuMsg &, const RtuMsg &) = default;
};

struct DreqMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    std::uint32_t remote_qpn_eecn = 0;  // 24 bits
    std::array<std::uint8_t, kCmDreqPrivateData> private_data{};
    friend bool operator==(const DreqMsg &, const DreqMsg &) = default;
};

struct DrepMsg {
    std::uint32_t local_comm_id = 0, remote_comm_id = 0;
    std::array<std::uint8_t, kCmDrepPrivateData> private_data{};
    friend bool operator==(const DrepMsg &, const DrepMsg &) = default;
};

// Encode a CM MAD (method SEND, the message's attribute ID) into mad
// (kMadSize bytes; every reserved bit zero).
void encode(const ReqMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const MraMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const RejMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const RepMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const RtuMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const DreqMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;
void encode(const DrepMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept;

// Why a received MAD is not a CM message this side can take.
enum class MadCheck : std::uint8_t {
    ok,
    short_mad,          // fewer than kMadSize bytes
    bad_base_version,   // not 1
    bad_class,          // not the CM class
    bad_class_version,  // not 2
    bad_method,         // not SEND
    unknown_attr,       // not one of CmAttr (LAP, APR, SIDR, ClassPortInfo...)
};
const char *to_string(MadCheck c) noexcept;

// Read the common header and check it is a CM MAD of a known attribute.
MadCheck check_header(const std::uint8_t *mad, std::size_t len, MadHeader *h) noexcept;

// Decode the message of a MAD whose header check_header() accepted (the
// attribute must match; the header is not looked at again).
void decode(const std::uint8_t *mad, ReqMsg *m) noexcept;
void decode(const std::uint8_t *mad, MraMsg *m) noexcept;
void decode(const std::uint8_t *mad, RejMsg *m) noexcept;
void decode(const std::uint8_t *mad, RepMsg *m) noexcept;
void decode(const std::uint8_t *mad, RtuMsg *m) noexcept;
void decode(const std::uint8_t *mad, DreqMsg *m) noexcept;
void decode(const std::uint8_t *mad, DrepMsg *m) noexcept;

} // namespace ipoib::hca::cm
