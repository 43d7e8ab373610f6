// SPDX-License-Identifier: BSD-3-Clause
// CM MAD encoding (lib/hca/src/cm/cm_mad): every message round-trips, and
// chosen bytes sit where IBA vol 1 12.6's tables put them (offsets computed
// by hand here: MAD offset = 24 + the table's byte offset).
#include <catch2/catch.hpp>

#include <array>
#include <cstring>

#include "cm/cm_mad.hpp"

using namespace ipoib;
using namespace ipoib::hca;
using namespace ipoib::hca::cm;

namespace {

template <std::size_t N> std::array<std::uint8_t, N> pattern(std::uint8_t seed) {
    std::array<std::uint8_t, N> a{};
    for (std::size_t i = 0; i < N; ++i)
        a[i] = static_cast<std::uint8_t>(seed + i * 7);
    return a;
}

Gid gid(std::uint8_t last) {
    Gid g;
    g.raw = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x0a, 0xbc, last};
    return g;
}

using Mad = std::array<std::uint8_t, kMadSize>;
using Bytes = std::vector<std::uint8_t>;

Bytes at(const Mad &mad, std::size_t off, std::size_t n) { return Bytes(mad.begin() + off, mad.begin() + off + n); }

void check_header_bytes(const Mad &mad, std::uint16_t attr, std::uint64_t tid) {
    CHECK(mad[0] == 1);     // base version
    CHECK(mad[1] == 0x07);  // CM class
    CHECK(mad[2] == 2);     // class version
    CHECK(mad[3] == 0x03);  // SEND
    CHECK(mad[4] == 0);     // status
    CHECK(mad[5] == 0);
    for (int i = 0; i < 8; ++i)
        CHECK(mad[8 + i] == static_cast<std::uint8_t>(tid >> (56 - 8 * i)));
    CHECK(mad[16] == attr >> 8);
    CHECK(mad[17] == (attr & 0xff));
    MadHeader h;
    REQUIRE(check_header(mad.data(), mad.size(), &h) == MadCheck::ok);
    CHECK(h.tid == tid);
    CHECK(h.attr_id == attr);
}

ReqMsg sample_req() {
    ReqMsg m;
    m.local_comm_id = 0x11223344;
    m.service_id = 0x1000000000abcdefull;
    m.local_ca_guid = 0x0002c90300aabbccull;
    m.local_qkey = 0x0b1b0000;
    m.local_qpn = 0xabcdef;
    m.responder_resources = 0x42;
    m.local_eecn = 0x123456;
    m.initiator_depth = 0x24;
    m.remote_eecn = 0x654321;
    m.remote_cm_response_timeout = 20;
    m.transport = CmTransport::uc;
    m.end_to_end_flow_control = true;
    m.starting_psn = 0xfedcba;
    m.local_cm_response_timeout = 19;
    m.retry_count = 5;
    m.pkey = 0x8001;
    m.path_mtu = 4;
    m.rdc_exists = true;
    m.rnr_retry_count = 6;
    m.max_cm_retries = 15;
    m.srq = true;
    m.extended_transport = 0;
    m.primary = CmPathFields{.local_lid = 0x0102,
                             .remote_lid = 0x0304,
                             .local_gid = gid(0x01),
                             .remote_gid = gid(0x02),
                             .flow_label = 0xabcde,
                             .packet_rate = 0x3f,
                             .traffic_class = 0x5a,
                             .hop_limit = 0x40,
                             .sl = 0xa,
                             .subnet_local = true,
                             .local_ack_timeout = 18};
    m.alternate = CmPathFields{.local_lid = 0x0506,
                               .remote_lid = 0x0708,
                               .local_gid = gid(0x03),
                               .remote_gid = gid(0x04),
                               .flow_label = 0x12345,
                               .packet_rate = 3,
                               .traffic_class = 1,
                               .hop_limit = 2,
                               .sl = 3,
                               .subnet_local = false,
                               .local_ack_timeout = 31};
    m.private_data = pattern<kCmReqPrivateData>(0x10);
    return m;
}

} // namespace

TEST_CASE("cm mad: REQ round-trips with every field at its IBA offset", "[cm_mad]") {
    const ReqMsg m = sample_req();
    Mad mad;
    mad.fill(0xee);  // every byte is written, reserved ones as 0
    encode(m, 0x0102030405060708ull, mad.data());
    check_header_bytes(mad, 0x0010, 0x0102030405060708ull);
    ReqMsg back;
    decode(mad.data(), &back);
    CHECK(back == m);

    const std::vector<std::uint8_t> at24{0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0};  // local comm ID, reserved
    CHECK(at(mad, 24, 8) == at24);
    CHECK(mad[32] == 0x10);  // service ID, big-endian
    CHECK(mad[39] == 0xef);
    CHECK(mad[40] == 0x00);  // local CA GUID
    CHECK(mad[47] == 0xcc);
    CHECK(mad[52] == 0x0b);  // local Q_Key at 28
    CHECK(mad[53] == 0x1b);
    // 32: local QPN (24) | responder resources (8)
    CHECK(at(mad, 56, 4) == Bytes{0xab, 0xcd, 0xef, 0x42});
    // 36: local EECN | initiator depth
    CHECK(at(mad, 60, 4) == Bytes{0x12, 0x34, 0x56, 0x24});
    // 40: remote EECN | timeout 20 (10100) | transport UC (01) | E2E (1) = 1010 0011
    CHECK(at(mad, 64, 4) == Bytes{0x65, 0x43, 0x21, 0xa3});
    // 44: starting PSN | local timeout 19 (10011) | retry 5 (101) = 1001 1101
    CHECK(at(mad, 68, 4) == Bytes{0xfe, 0xdc, 0xba, 0x9d});
    CHECK(mad[72] == 0x80);  // P_Key
    CHECK(mad[73] == 0x01);
    CHECK(mad[74] == 0x4e);  // MTU 4 | RDC 1 | RNR 6 = 0100 1 110
    CHECK(mad[75] == 0xf8);  // max CM retries 15 | SRQ 1 | ext 0 = 1111 1 000
    // primary path at 52 (MAD 76)
    CHECK(mad[76] == 0x01);
    CHECK(mad[77] == 0x02);
    CHECK(mad[78] == 0x03);
    CHECK(mad[79] == 0x04);
    CHECK(mad[80] == 0xfe);   // local GID
    CHECK(mad[95] == 0x01);
    CHECK(mad[111] == 0x02);  // remote GID ends at 87 (MAD 111)
    // 88: flow label 0xabcde (20) | reserved (6) | rate 0x3f (6)
    CHECK(at(mad, 112, 4) == Bytes{0xab, 0xcd, 0xe0, 0x3f});
    CHECK(mad[116] == 0x5a);  // traffic class
    CHECK(mad[117] == 0x40);  // hop limit
    CHECK(mad[118] == 0xa8);  // SL 10 | subnet local
    CHECK(mad[119] == 0x90);  // local ACK timeout 18 << 3
    // alternate path at 96 (MAD 120)
    CHECK(mad[120] == 0x05);
    CHECK(mad[163] == 0xf8);  // ACK timeout 31 << 3
    CHECK(mad[162] == 0x30);  // SL 3, not subnet local
    // private data at 140 (MAD 164), 92 bytes to the end
    CHECK(mad[164] == 0x10);
    CHECK(mad[255] == static_cast<std::uint8_t>(0x10 + 91 * 7));
}

TEST_CASE("cm mad: REP round-trips with its fields at their offsets", "[cm_mad]") {
    RepMsg m;
    m.local_comm_id = 0xa1a2a3a4;
    m.remote_comm_id = 0x11223344;
    m.local_qkey = 0x01020304;
    m.local_qpn = 0x000456;
    m.local_eecn = 0x0000ff;
    m.starting_psn = 0x654321;
    m.responder_resources = 4;
    m.initiator_depth = 1;
    m.target_ack_delay = 17;
    m.failover_accepted = 2;
    m.end_to_end_flow_control = true;
    m.rnr_retry_count = 7;
    m.srq = true;
    m.local_ca_guid = 0x0002c90300ddeeffull;
    m.private_data = pattern<kCmRepPrivateData>(0x33);
    Mad mad;
    mad.fill(0xee);
    encode(m, 77, mad.data());
    check_header_bytes(mad, 0x0013, 77);
    RepMsg back;
    decode(mad.data(), &back);
    CHECK(back == m);
    CHECK(mad[24] == 0xa1);
    CHECK(mad[28] == 0x11);  // remote comm ID at 4
    CHECK(mad[32] == 0x01);  // local Q_Key at 8
    CHECK(at(mad, 36, 4) == Bytes{0x00, 0x04, 0x56, 0x00});
    CHECK(at(mad, 44, 4) == Bytes{0x65, 0x43, 0x21, 0x00});
    CHECK(mad[48] == 4);
    CHECK(mad[49] == 1);
    CHECK(mad[50] == 0x8d);  // ack delay 17 (10001) | failover 2 (10) | E2E 1 = 1000 1101
    CHECK(mad[51] == 0xf0);  // RNR 7 (111) | SRQ 1 | reserved = 1111 0000
    CHECK(mad[52] == 0x00);  // local CA GUID at 28
    CHECK(mad[59] == 0xff);
    CHECK(mad[60] == 0x33);  // private data at 36, 196 bytes
    CHECK(mad[255] == static_cast<std::uint8_t>(0x33 + 195 * 7));
}

TEST_CASE("cm mad: RTU, DREQ, DREP round-trip", "[cm_mad]") {
    Mad mad;
    RtuMsg rtu{.local_comm_id = 1, .remote_comm_id = 2, .private_data = pattern<kCmRtuPrivateData>(5)};
    encode(rtu, 3, mad.data());
    check_header_bytes(mad, 0x0014, 3);
    RtuMsg rtu_back;
    decode(mad.data(), &rtu_back);
    CHECK(rtu_back == rtu);
    CHECK(mad[27] == 1);
    CHECK(mad[31] == 2);
    CHECK(mad[32] == 5);  // private data at 8, 224 bytes
    CHECK(mad[255] == static_cast<std::uint8_t>(5 + 223 * 7));

    DreqMsg dreq{.local_comm_id = 0x01020304,
                 .remote_comm_id = 0x05060708,
                 .remote_qpn_eecn = 0xabcdef,
                 .private_data = pattern<kCmDreqPrivateData>(9)};
    encode(dreq, 4, mad.data());
    check_header_bytes(mad, 0x0015, 4);
    DreqMsg dreq_back;
    decode(mad.data(), &dreq_back);
    CHECK(dreq_back == dreq);
    CHECK(at(mad, 32, 4) == Bytes{0xab, 0xcd, 0xef, 0x00});
    CHECK(mad[36] == 9);  // private data at 12, 220 bytes

    DrepMsg drep{.local_comm_id = 7, .remote_comm_id = 8, .private_data = pattern<kCmDrepPrivateData>(11)};
    encode(drep, 5, mad.data());
    check_header_bytes(mad, 0x0016, 5);
    DrepMsg drep_back;
    decode(mad.data(), &drep_back);
    CHECK(drep_back == drep);
    CHECK(mad[32] == 11);
}

TEST_CASE("cm mad: REJ and MRA round-trip", "[cm_mad]") {
    Mad mad;
    RejMsg rej;
    rej.local_comm_id = 0;
    rej.remote_comm_id = 0x11223344;
    rej.message_rejected = CmMsgKind::rep;
    rej.reject_info_length = 72;
    rej.reason = 28;
    rej.ari = pattern<kCmRejAriLen>(0x40);
    rej.private_data = pattern<kCmRejPrivateData>(0x50);
    encode(rej, 6, mad.data());
    check_header_bytes(mad, 0x0012, 6);
    RejMsg rej_back;
    decode(mad.data(), &rej_back);
    CHECK(rej_back == rej);
    CHECK(mad[32] == 0x40);  // message REJected 1 (REP) in the top 2 bits
    CHECK(mad[33] == 0x90);  // reject info length 72 << 1
    CHECK(mad[34] == 0x00);  // reason 28
    CHECK(mad[35] == 28);
    CHECK(mad[36] == 0x40);   // ARI at 12
    CHECK(mad[108] == 0x50);  // private data at 84, 148 bytes
    CHECK(mad[255] == static_cast<std::uint8_t>(0x50 + 147 * 7));

    MraMsg mra;
    mra.local_comm_id = 9;
    mra.remote_comm_id = 10;
    mra.message_mraed = CmMsgKind::other;
    mra.service_timeout = 24;
    mra.private_data = pattern<kCmMraPrivateData>(1);
    encode(mra, 7, mad.data());
    check_header_bytes(mad, 0x0011, 7);
    MraMsg mra_back;
    decode(mad.data(), &mra_back);
    CHECK(mra_back == mra);
    CHECK(mad[32] == 0x80);  // message MRAed 2 in the top 2 bits
    CHECK(mad[33] == 0xc0);  // service timeout 24 << 3
    CHECK(mad[34] == 1);     // private data at 10, 222 bytes
}

TEST_CASE("cm mad: headers that are not CM SENDs are told apart", "[cm_mad]") {
    Mad mad;
    encode(RtuMsg{}, 1, mad.data());
    MadHeader h;
    CHECK(check_header(mad.data(), kMadSize - 1, &h) == MadCheck::short_mad);
    CHECK(check_header(mad.data(), 0, &h) == MadCheck::short_mad);
    Mad bad = mad;
    bad[0] = 2;
    CHECK(check_header(bad.data(), kMadSize, &h) == MadCheck::bad_base_version);
    bad = mad;
    bad[1] = 0x03;  // SA
    CHECK(check_header(bad.data(), kMadSize, &h) == MadCheck::bad_class);
    bad = mad;
    bad[2] = 1;
    CHECK(check_header(bad.data(), kMadSize, &h) == MadCheck::bad_class_version);
    bad = mad;
    bad[3] = 0x81;  // GetResp
    CHECK(check_header(bad.data(), kMadSize, &h) == MadCheck::bad_method);
    for (std::uint16_t attr : {0x0001, 0x0017, 0x0018, 0x0019, 0x001a, 0x0020}) {  // ClassPortInfo, SIDR, LAP, APR...
        bad = mad;
        bad[16] = static_cast<std::uint8_t>(attr >> 8);
        bad[17] = static_cast<std::uint8_t>(attr);
        CHECK(check_header(bad.data(), kMadSize, &h) == MadCheck::unknown_attr);
    }
    CHECK(check_header(mad.data(), kMadSize, &h) == MadCheck::ok);
}
