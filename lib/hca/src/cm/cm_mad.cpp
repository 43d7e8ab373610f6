// SPDX-License-Identifier: BSD-3-Clause
// CM MAD encoding and decoding (cm_mad.hpp has the layout).
#include "cm_mad.hpp"

#include <cstring>

namespace ipoib::hca::cm {

namespace {

// Big-endian accessors on the MAD; `o` is a MAD offset.
void put8(std::uint8_t *p, std::size_t o, std::uint8_t v) { p[o] = v; }
void put16(std::uint8_t *p, std::size_t o, std::uint16_t v) {
    p[o] = static_cast<std::uint8_t>(v >> 8);
    p[o + 1] = static_cast<std::uint8_t>(v);
}
void put32(std::uint8_t *p, std::size_t o, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        p[o + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
void put64(std::uint8_t *p, std::size_t o, std::uint64_t v) {
    put32(p, o, static_cast<std::uint32_t>(v >> 32));
    put32(p, o + 4, static_cast<std::uint32_t>(v));
}
std::uint16_t get16(const std::uint8_t *p, std::size_t o) {
    return static_cast<std::uint16_t>((p[o] << 8) | p[o + 1]);
}
std::uint32_t get32(const std::uint8_t *p, std::size_t o) {
    return (std::uint32_t{p[o]} << 24) | (std::uint32_t{p[o + 1]} << 16) | (std::uint32_t{p[o + 2]} << 8) | p[o + 3];
}
std::uint64_t get64(const std::uint8_t *p, std::size_t o) {
    return (std::uint64_t{get32(p, o)} << 32) | get32(p, o + 4);
}
// A 24-bit value in the top of a 32-bit word, with an 8-bit value in its low byte.
void put24_8(std::uint8_t *p, std::size_t o, std::uint32_t hi24, std::uint8_t lo8) {
    put32(p, o, ((hi24 & 0xffffffu) << 8) | lo8);
}
std::uint32_t get24(const std::uint8_t *p, std::size_t o) { return get32(p, o) >> 8; }
template <std::size_t N> void put_bytes(std::uint8_t *p, std::size_t o, const std::array<std::uint8_t, N> &a) {
    std::memcpy(p + o, a.data(), N);
}
template <std::size_t N> void get_bytes(const std::uint8_t *p, std::size_t o, std::array<std::uint8_t, N> *a) {
    std::memcpy(a->data(), p + o, N);
}
std::uint8_t bit(bool b) { return b ? 1 : 0; }

// Message offset -> MAD offset.
constexpr std::size_t M(std::size_t off) { return kMadHeaderSize + off; }

void put_header(std::uint8_t *mad, CmAttr attr, std::uint64_t tid) {
    std::memset(mad, 0, kMadSize);
    put8(mad, 0, kMadBaseVersion);
    put8(mad, 1, kCmMgmtClass);
    put8(mad, 2, kCmClassVersion);
    put8(mad, 3, kMadMethodSend);
    put64(mad, 8, tid);
    put16(mad, 16, static_cast<std::uint16_t>(attr));
}

void put_path(std::uint8_t *mad, std::size_t o, const CmPathFields &p) {
    put16(mad, o, p.local_lid);
    put16(mad, o + 2, p.remote_lid);
    std::memcpy(mad + o + 4, p.local_gid.raw.data(), 16);
    std::memcpy(mad + o + 20, p.remote_gid.raw.data(), 16);
    put32(mad, o + 36, ((p.flow_label & 0xfffffu) << 12) | (p.packet_rate & 0x3fu));
    put8(mad, o + 40, p.traffic_class);
    put8(mad, o + 41, p.hop_limit);
    put8(mad, o + 42, static_cast<std::uint8_t>(((p.sl & 0xf) << 4) | (bit(p.subnet_local) << 3)));
    put8(mad, o + 43, static_cast<std::uint8_t>((p.local_ack_timeout & 0x1f) << 3));
}

void get_path(const std::uint8_t *mad, std::size_t o, CmPathFields *p) {
    p->local_lid = get16(mad, o);
    p->remote_lid = get16(mad, o + 2);
    std::memcpy(p->local_gid.raw.data(), mad + o + 4, 16);
    std::memcpy(p->remote_gid.raw.data(), mad + o + 20, 16);
    const std::uint32_t w = get32(mad, o + 36);
    p->flow_label = w >> 12;
    p->packet_rate = w & 0x3f;
    p->traffic_class = mad[o + 40];
    p->hop_limit = mad[o + 41];
    p->sl = mad[o + 42] >> 4;
    p->subnet_local = (mad[o + 42] >> 3) & 1;
    p->local_ack_timeout = mad[o + 43] >> 3;
}

} // namespace

const char *to_string(CmAttr a) noexcept {
    switch (a) {
    case CmAttr::req: return "REQ";
    case CmAttr::mra: return "MRA";
    case CmAttr::rej: return "REJ";
    case CmAttr::rep: return "REP";
    case CmAttr::rtu: return "RTU";
    case CmAttr::dreq: return "DREQ";
    case CmAttr::drep: return "DREP";
    }
    return "?";
}

const char *to_string(MadCheck c) noexcept {
    switch (c) {
    case MadCheck::ok: return "ok";
    case MadCheck::short_mad: return "short MAD";
    case MadCheck::bad_base_version: return "bad base version";
    case MadCheck::bad_class: return "not the CM class";
    case MadCheck::bad_class_version: return "bad class version";
    case MadCheck::bad_method: return "not SEND";
    case MadCheck::unknown_attr: return "unknown attribute";
    }
    return "?";
}

void encode(const ReqMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::req, tid);
    put32(mad, M(0), m.local_comm_id);
    put64(mad, M(8), m.service_id);
    put64(mad, M(16), m.local_ca_guid);
    put32(mad, M(28), m.local_qkey);
    put24_8(mad, M(32), m.local_qpn, m.responder_resources);
    put24_8(mad, M(36), m.local_eecn, m.initiator_depth);
    put24_8(mad, M(40), m.remote_eecn,
            static_cast<std::uint8_t>(((m.remote_cm_response_timeout & 0x1f) << 3) |
                                      ((static_cast<std::uint8_t>(m.transport) & 3) << 1) |
                                      bit(m.end_to_end_flow_control)));
    put24_8(mad, M(44), m.starting_psn,
            static_cast<std::uint8_t>(((m.local_cm_response_timeout & 0x1f) << 3) | (m.retry_count & 7)));
    put16(mad, M(48), m.pkey);
    put8(mad, M(50), static_cast<std::uint8_t>(((m.path_mtu & 0xf) << 4) | (bit(m.rdc_exists) << 3) |
                                               (m.rnr_retry_count & 7)));
    put8(mad, M(51), static_cast<std::uint8_t>(((m.max_cm_retries & 0xf) << 4) | (bit(m.srq) << 3) |
                                               (m.extended_transport & 7)));
    put_path(mad, M(52), m.primary);
    put_path(mad, M(96), m.alternate);
    put_bytes(mad, M(140), m.private_data);
}

void decode(const std::uint8_t *mad, ReqMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->service_id = get64(mad, M(8));
    m->local_ca_guid = get64(mad, M(16));
    m->local_qkey = get32(mad, M(28));
    m->local_qpn = get24(mad, M(32));
    m->responder_resources = mad[M(35)];
    m->local_eecn = get24(mad, M(36));
    m->initiator_depth = mad[M(39)];
    m->remote_eecn = get24(mad, M(40));
    m->remote_cm_response_timeout = mad[M(43)] >> 3;
    m->transport = static_cast<CmTransport>((mad[M(43)] >> 1) & 3);
    m->end_to_end_flow_control = mad[M(43)] & 1;
    m->starting_psn = get24(mad, M(44));
    m->local_cm_response_timeout = mad[M(47)] >> 3;
    m->retry_count = mad[M(47)] & 7;
    m->pkey = get16(mad, M(48));
    m->path_mtu = mad[M(50)] >> 4;
    m->rdc_exists = (mad[M(50)] >> 3) & 1;
    m->rnr_retry_count = mad[M(50)] & 7;
    m->max_cm_retries = mad[M(51)] >> 4;
    m->srq = (mad[M(51)] >> 3) & 1;
    m->extended_transport = mad[M(51)] & 7;
    get_path(mad, M(52), &m->primary);
    get_path(mad, M(96), &m->alternate);
    get_bytes(mad, M(140), &m->private_data);
}

void encode(const MraMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::mra, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put8(mad, M(8), static_cast<std::uint8_t>((static_cast<std::uint8_t>(m.message_mraed) & 3) << 6));
    put8(mad, M(9), static_cast<std::uint8_t>((m.service_timeout & 0x1f) << 3));
    put_bytes(mad, M(10), m.private_data);
}

void decode(const std::uint8_t *mad, MraMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    m->message_mraed = static_cast<CmMsgKind>(mad[M(8)] >> 6);
    m->service_timeout = mad[M(9)] >> 3;
    get_bytes(mad, M(10), &m->private_data);
}

void encode(const RejMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::rej, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put8(mad, M(8), static_cast<std::uint8_t>((static_cast<std::uint8_t>(m.message_rejected) & 3) << 6));
    put8(mad, M(9), static_cast<std::uint8_t>((m.reject_info_length & 0x7f) << 1));
    put16(mad, M(10), m.reason);
    put_bytes(mad, M(12), m.ari);
    put_bytes(mad, M(84), m.private_data);
}

void decode(const std::uint8_t *mad, RejMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    m->message_rejected = static_cast<CmMsgKind>(mad[M(8)] >> 6);
    m->reject_info_length = mad[M(9)] >> 1;
    m->reason = get16(mad, M(10));
    get_bytes(mad, M(12), &m->ari);
    get_bytes(mad, M(84), &m->private_data);
}

void encode(const RepMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::rep, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put32(mad, M(8), m.local_qkey);
    put24_8(mad, M(12), m.local_qpn, 0);
    put24_8(mad, M(16), m.local_eecn, 0);
    put24_8(mad, M(20), m.starting_psn, 0);
    put8(mad, M(24), m.responder_resources);
    put8(mad, M(25), m.initiator_depth);
    put8(mad, M(26), static_cast<std::uint8_t>(((m.target_ack_delay & 0x1f) << 3) | ((m.failover_accepted & 3) << 1) |
                                               bit(m.end_to_end_flow_control)));
    put8(mad, M(27), static_cast<std::uint8_t>(((m.rnr_retry_count & 7) << 5) | (bit(m.srq) << 4)));
    put64(mad, M(28), m.local_ca_guid);
    put_bytes(mad, M(36), m.private_data);
}

void decode(const std::uint8_t *mad, RepMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    m->local_qkey = get32(mad, M(8));
    m->local_qpn = get24(mad, M(12));
    m->local_eecn = get24(mad, M(16));
    m->starting_psn = get24(mad, M(20));
    m->responder_resources = mad[M(24)];
    m->initiator_depth = mad[M(25)];
    m->target_ack_delay = mad[M(26)] >> 3;
    m->failover_accepted = (mad[M(26)] >> 1) & 3;
    m->end_to_end_flow_control = mad[M(26)] & 1;
    m->rnr_retry_count = mad[M(27)] >> 5;
    m->srq = (mad[M(27)] >> 4) & 1;
    m->local_ca_guid = get64(mad, M(28));
    get_bytes(mad, M(36), &m->private_data);
}

void encode(const RtuMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::rtu, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put_bytes(mad, M(8), m.private_data);
}

void decode(const std::uint8_t *mad, RtuMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    get_bytes(mad, M(8), &m->private_data);
}

void encode(const DreqMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::dreq, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put24_8(mad, M(8), m.remote_qpn_eecn, 0);
    put_bytes(mad, M(12), m.private_data);
}

void decode(const std::uint8_t *mad, DreqMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    m->remote_qpn_eecn = get24(mad, M(8));
    get_bytes(mad, M(12), &m->private_data);
}

void encode(const DrepMsg &m, std::uint64_t tid, std::uint8_t *mad) noexcept {
    put_header(mad, CmAttr::drep, tid);
    put32(mad, M(0), m.local_comm_id);
    put32(mad, M(4), m.remote_comm_id);
    put_bytes(mad, M(8), m.private_data);
}

void decode(const std::uint8_t *mad, DrepMsg *m) noexcept {
    m->local_comm_id = get32(mad, M(0));
    m->remote_comm_id = get32(mad, M(4));
    get_bytes(mad, M(8), &m->private_data);
}

MadCheck check_header(const std::uint8_t *mad, std::size_t len, MadHeader *h) noexcept {
    if (len < kMadSize)
        return MadCheck::short_mad;
    h->base_version = mad[0];
    h->mgmt_class = mad[1];
    h->class_version = mad[2];
    h->method = mad[3];
    h->status = get16(mad, 4);
    h->class_specific = get16(mad, 6);
    h->tid = get64(mad, 8);
    h->attr_id = get16(mad, 16);
    h->attr_mod = get32(mad, 20);
    if (h->base_version != kMadBaseVersion)
        return MadCheck::bad_base_version;
    if (h->mgmt_class != kCmMgmtClass)
        return MadCheck::bad_class;
    if (h->class_version != kCmClassVersion)
        return MadCheck::bad_class_version;
    if (h->method != kMadMethodSend)
        return MadCheck::bad_method;
    switch (static_cast<CmAttr>(h->attr_id)) {
    case CmAttr::req:
    case CmAttr::mra:
    case CmAttr::rej:
    case CmAttr::rep:
    case CmAttr::rtu:
    case CmAttr::dreq:
    case CmAttr::drep: return MadCheck::ok;
    }
    return MadCheck::unknown_attr;
}

} // namespace ipoib::hca::cm
