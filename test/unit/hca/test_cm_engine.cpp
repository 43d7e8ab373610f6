// SPDX-License-Identifier: BSD-3-Clause
// The shared CM engine (lib/hca/src/cm/cm_engine): two engines joined by an
// in-memory MAD wire (a queue each way, MADs of chosen attributes dropped on
// demand) and a fake clock that the tests move past the CM's timeouts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <vector>

#include "cm/cm_engine.hpp"
#include "cm/cm_mad.hpp"

using namespace ipoib;
using namespace ipoib::hca;
using namespace ipoib::hca::cm;

namespace {

std::uint64_t g_now_us = 1'000'000;
std::uint64_t fake_clock() noexcept { return g_now_us; }

constexpr std::uint16_t kAttrReq = 0x10, kAttrMra = 0x11, kAttrRej = 0x12, kAttrRep = 0x13, kAttrRtu = 0x14,
                        kAttrDreq = 0x15, kAttrDrep = 0x16;

// Both directions of the wire between port A (LID 1) and port B (LID 2).
struct Wire {
    struct Mad {
        std::vector<std::uint8_t> bytes;
        MadAddr from;
    };
    std::deque<Mad> to[2];                       // to[0]: toward A, to[1]: toward B
    std::map<std::uint16_t, int> sent[2];        // by attribute, what each side sent (dropped ones too)
    std::map<std::uint16_t, int> drop_next[2];   // by attribute: how many of the next ones from side i are lost
    std::vector<std::uint8_t> last_sent[2];      // the last MAD each side sent
};

class WireEnd final : public MadTransport {
  public:
    WireEnd(Wire *w, int side, std::uint16_t lid) : w_(w), side_(side), lid_(lid) {}
    int send(const MadAddr &to, const std::uint8_t *mad) noexcept override {
        const std::uint16_t attr = static_cast<std::uint16_t>((mad[16] << 8) | mad[17]);
        ++w_->sent[side_][attr];
        w_->last_sent[side_].assign(mad, mad + kMadSize);
        if (to.qpn != 1 || to.lid != (side_ == 0 ? 2 : 1))
            return -EHOSTUNREACH;  // the engine must answer where the MAD came from
        if (auto it = w_->drop_next[side_].find(attr); it != w_->drop_next[side_].end() && it->second > 0) {
            --it->second;
            return 0;  // lost on the way
        }
        w_->to[1 - side_].push_back({{mad, mad + kMadSize}, MadAddr{.lid = lid_, .qpn = 1}});
        return 0;
    }
    int recv(std::uint8_t *mad, MadAddr *from) noexcept override {
        auto &q = w_->to[side_];
        if (q.empty())
            return 0;
        const auto n = q.front().bytes.size();
        std::memcpy(mad, q.front().bytes.data(), n);
        *from = q.front().from;
        q.pop_front();
        return static_cast<int>(n);
    }

  private:
    Wire *w_;
    int side_;
    std::uint16_t lid_;
};

Gid gid_of(std::uint8_t node) {
    Gid g;
    g.raw = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, node};
    return g;
}

struct Pair {
    Wire wire;
    std::unique_ptr<Cm> a, b;
    std::vector<CmEvent> ev_a, ev_b;
    Pair() {
        a = make_cm_engine(std::make_unique<WireEnd>(&wire, 0, 1),
                           LocalPort{.lid = 1, .gid = gid_of(1), .ca_guid = 0x0002c9030000000aull}, fake_clock);
        b = make_cm_engine(std::make_unique<WireEnd>(&wire, 1, 2),
                           LocalPort{.lid = 2, .gid = gid_of(2), .ca_guid = 0x0002c9030000000bull}, fake_clock);
    }
    // Run both engines until neither has anything more to say.
    void pump() {
        for (int idle = 0; idle < 3;) {
            CmEvent e;
            bool any = false;
            while (a->get_event(&e) == 1)
                ev_a.push_back(e), any = true;
            while (b->get_event(&e) == 1)
                ev_b.push_back(e), any = true;
            idle = any || !wire.to[0].empty() || !wire.to[1].empty() ? 0 : idle + 1;
        }
    }
    CmCounters counters(const Cm &cm) {
        CmCounters c;
        REQUIRE(cm_counters(cm, &c) == 0);
        return c;
    }
};

constexpr std::uint64_t kIpoibService = 0x1000000000000000ull;
constexpr std::uint8_t kPacketLife = 14;  // 67 ms

CmReqParam req_param(std::uint32_t qpn, const std::vector<std::uint8_t> *pd = nullptr) {
    CmReqParam p;
    p.service_id = kIpoibService | qpn;
    p.path = CmPath{.slid = 1,
                    .dlid = 2,
                    .sgid = gid_of(1),
                    .dgid = gid_of(2),
                    .pkey = 0xffff,
                    .sl = 3,
                    .mtu = Mtu::mtu2048,
                    .packet_life_time = kPacketLife};
    p.local_qpn = qpn;
    p.starting_psn = 0xabcdef;
    p.max_cm_retries = 3;
    if (pd) {
        p.private_data = pd->data();
        p.private_data_len = static_cast<std::uint8_t>(pd->size());
    }
    return p;
}

// The REQ retransmission interval the engine should use: 2 * packet life time
// + remote CM response timeout (20), in microseconds.
std::uint64_t req_interval_us() { return 2 * ((4096ull << kPacketLife) / 1000) + (4096ull << 20) / 1000; }

std::vector<std::uint8_t> bytes(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::uint8_t>(seed + 3 * i);
    return v;
}

// REQ from A, REP from B, RTU from A; returns (A's id, B's id).
std::pair<std::uint32_t, std::uint32_t> connect(Pair &p) {
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    REQUIRE(p.ev_b[0].type == CmEventType::req_received);
    const std::uint32_t idb = p.ev_b[0].id;
    REQUIRE(p.b->send_rep(idb, CmRepParam{.local_qpn = 0x000456, .starting_psn = 0x111111}) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    REQUIRE(p.ev_a[0].type == CmEventType::rep_received);
    REQUIRE(p.a->send_rtu(ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 2);
    REQUIRE(p.ev_b[1].type == CmEventType::rtu_received);
    p.ev_a.clear();
    p.ev_b.clear();
    return {ida, idb};
}

} // namespace

TEST_CASE("cm engine: REQ, REP, RTU with private data, QPNs and PSNs arriving right", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);  // any QPN under the IPoIB prefix
    const auto req_pd = bytes(kCmReqPrivateData, 1);
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123, &req_pd), &ida) == 0);
    CHECK(ida != 0);
    p.pump();
    CHECK(p.ev_a.empty());
    REQUIRE(p.ev_b.size() == 1);
    const CmEvent req = p.ev_b[0];  // a copy: ev_b grows
    CHECK(req.type == CmEventType::req_received);
    CHECK(req.id != 0);
    CHECK(req.service_id == (kIpoibService | 0x123));
    CHECK(req.remote_qpn == 0x000123);
    CHECK(req.starting_psn == 0xabcdef);
    CHECK(req.responder_resources == 4);
    REQUIRE(req.private_data_len == kCmReqPrivateData);
    CHECK(std::vector<std::uint8_t>(req.private_data, req.private_data + kCmReqPrivateData) == req_pd);
    // The path as B sees it: its own LID and GID as source.
    CHECK(req.path.slid == 2);
    CHECK(req.path.dlid == 1);
    CHECK(req.path.sgid == gid_of(2));
    CHECK(req.path.dgid == gid_of(1));
    CHECK(req.path.pkey == 0xffff);
    CHECK(req.path.sl == 3);
    CHECK(req.path.mtu == Mtu::mtu2048);
    CHECK(req.path.packet_life_time == kPacketLife);
    CHECK_FALSE(req.path.global);

    const auto rep_pd = bytes(kCmRepPrivateData, 2);
    REQUIRE(p.b->send_rep(req.id, CmRepParam{.local_qpn = 0x000456,
                                             .starting_psn = 0x654321,
                                             .private_data = rep_pd.data(),
                                             .private_data_len = static_cast<std::uint8_t>(rep_pd.size()),
                                             .rnr_retry_count = 7}) == 0);
    CHECK(p.b->send_rep(req.id, CmRepParam{}) == -EINVAL);  // once
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    const CmEvent rep = p.ev_a[0];
    CHECK(rep.type == CmEventType::rep_received);
    CHECK(rep.id == ida);
    CHECK(rep.service_id == (kIpoibService | 0x123));
    CHECK(rep.remote_qpn == 0x000456);
    CHECK(rep.starting_psn == 0x654321);
    CHECK(rep.rnr_retry_count == 7);
    REQUIRE(rep.private_data_len == kCmRepPrivateData);
    CHECK(std::vector<std::uint8_t>(rep.private_data, rep.private_data + kCmRepPrivateData) == rep_pd);

    const auto rtu_pd = bytes(10, 3);
    REQUIRE(p.a->send_rtu(ida, rtu_pd.data(), 10) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 2);
    CHECK(p.ev_b[1].type == CmEventType::rtu_received);
    CHECK(p.ev_b[1].id == req.id);
    CHECK(std::vector<std::uint8_t>(p.ev_b[1].private_data, p.ev_b[1].private_data + 10) == rtu_pd);
    CHECK(p.ev_a.size() == 1);

    // Long after: no retransmission of anything, nothing more to say.
    g_now_us += 100 * req_interval_us();
    p.pump();
    CHECK(p.ev_a.size() == 1);
    CHECK(p.ev_b.size() == 2);
    const CmCounters ca = p.counters(*p.a), cb = p.counters(*p.b);
    CHECK(ca.mads_sent == 2);
    CHECK(cb.mads_sent == 1);
    CHECK(ca.mads_received == 1);
    CHECK(cb.mads_received == 2);
    CHECK(ca.retransmits + cb.retransmits == 0);
    CHECK(ca.dropped_unmatched + cb.dropped_unmatched == 0);
}

TEST_CASE("cm engine: a REQ rejected by the consumer", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService | 0x123) == 0);
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    const auto pd = bytes(kCmRejPrivateData, 9);
    REQUIRE(p.b->send_rej(p.ev_b[0].id, CmRejReason::consumer, pd.data(), static_cast<std::uint8_t>(pd.size())) == 0);
    CHECK(p.b->send_rep(p.ev_b[0].id, CmRepParam{}) == -EINVAL);  // gone
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::rej_received);
    CHECK(p.ev_a[0].id == ida);
    CHECK(p.ev_a[0].rej_reason == 28);
    CHECK(std::vector<std::uint8_t>(p.ev_a[0].private_data, p.ev_a[0].private_data + pd.size()) == pd);
    CHECK(p.a->send_rtu(ida) == -EINVAL);  // gone
    g_now_us += 100 * req_interval_us();   // and no REQ retransmitted after the REJ
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 1);
    CHECK(p.ev_a.size() == 1);

    // An ID destroyed while the consumer decides is rejected for it (consumer reason).
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 2);
    p.b->destroy_id(p.ev_b[1].id);
    p.pump();
    REQUIRE(p.ev_a.size() == 2);
    CHECK(p.ev_a[1].type == CmEventType::rej_received);
    CHECK(p.ev_a[1].id == ida);
    CHECK(p.ev_a[1].rej_reason == 28);
}

TEST_CASE("cm engine: a REQ for a service nobody listens to is rejected by the CM (reason 8)", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService | 0x999) == 0);  // another QPN, exact match
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    CHECK(p.ev_b.empty());
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::rej_received);
    CHECK(p.ev_a[0].id == ida);
    CHECK(p.ev_a[0].rej_reason == static_cast<std::uint16_t>(CmRejReason::invalid_service_id));
    CHECK(p.counters(*p.b).rej_no_listener == 1);
    // The REJ's TID is the REQ's, its local comm ID 0, its remote one A's.
    MadHeader h;
    REQUIRE(check_header(p.wire.last_sent[1].data(), kMadSize, &h) == MadCheck::ok);
    RejMsg rej;
    decode(p.wire.last_sent[1].data(), &rej);
    CHECK(rej.local_comm_id == 0);
    CHECK(rej.remote_comm_id == ida);
    CHECK(rej.message_rejected == CmMsgKind::req);

    // Unlistened: the same for the one that was listened to.
    REQUIRE(p.b->unlisten(kIpoibService | 0x999) == 0);
    CHECK(p.b->unlisten(kIpoibService | 0x999) == -ENOENT);
    REQUIRE(p.a->send_req(req_param(0x000999), &ida) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() == 2);
    CHECK(p.ev_a[1].rej_reason == 8);
    CHECK(p.counters(*p.b).rej_no_listener == 2);
}

TEST_CASE("cm engine: a lost REQ is sent again after its timeout, then connects", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);
    p.wire.drop_next[0][kAttrReq] = 1;
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    CHECK(p.ev_b.empty());
    g_now_us += req_interval_us() - 1000;  // not yet
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 1);
    g_now_us += 2000;
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 2);
    REQUIRE(p.ev_b.size() == 1);
    REQUIRE(p.b->send_rep(p.ev_b[0].id, CmRepParam{.local_qpn = 0x456}) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::rep_received);
    REQUIRE(p.a->send_rtu(ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 2);
    CHECK(p.ev_b[1].type == CmEventType::rtu_received);
    CHECK(p.counters(*p.a).retransmits == 1);
}

TEST_CASE("cm engine: a REQ never answered ends in req_error after max_cm_retries", "[cm_engine]") {
    Pair p;
    p.wire.drop_next[0][kAttrReq] = 1000;
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);  // max_cm_retries 3
    for (int i = 0; i < 3; ++i) {
        g_now_us += req_interval_us() + 1;
        p.pump();
        CHECK(p.wire.sent[0][kAttrReq] == 2 + i);
        CHECK(p.ev_a.empty());
    }
    g_now_us += req_interval_us() + 1;
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 4);  // the first and 3 retries
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::req_error);
    CHECK(p.ev_a[0].id == ida);
    CHECK(p.ev_a[0].service_id == (kIpoibService | 0x123));
    CHECK(p.a->send_rtu(ida) == -EINVAL);
    g_now_us += 10 * req_interval_us();
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 4);
    CHECK(p.ev_a.size() == 1);
    CHECK(p.counters(*p.a).timeouts == 1);
    CHECK(p.counters(*p.a).retransmits == 3);
}

TEST_CASE("cm engine: a duplicate REQ gets the REP again, a duplicate REP the RTU again", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);
    std::uint32_t ida = 0;
    auto param = req_param(0x000123);
    param.local_cm_response_timeout = 22;  // B's REP interval (17 s) longer than A's REQ one (4.4 s)
    REQUIRE(p.a->send_req(param, &ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    p.wire.drop_next[1][kAttrRep] = 1;  // B's first REP is lost: A sends its REQ again
    REQUIRE(p.b->send_rep(p.ev_b[0].id, CmRepParam{.local_qpn = 0x456, .starting_psn = 0x42}) == 0);
    p.pump();
    CHECK(p.ev_a.empty());
    g_now_us += req_interval_us() + 1;  // A's REQ timer (B's REP timer is longer: RTU pending)
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 2);
    CHECK(p.wire.sent[1][kAttrRep] == 2);  // the duplicate REQ answered with the REP again
    CHECK(p.ev_b.size() == 1);             // and no second req_received
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::rep_received);
    CHECK(p.ev_a[0].starting_psn == 0x42);
    CHECK(p.counters(*p.b).duplicates == 1);

    p.wire.drop_next[0][kAttrRtu] = 1;  // A's RTU lost: B sends its REP again, A answers with the RTU
    REQUIRE(p.a->send_rtu(ida) == 0);
    p.pump();
    CHECK(p.ev_b.size() == 1);
    g_now_us += 2 * ((4096ull << kPacketLife) / 1000) + (4096ull << 22) / 1000 + 1;  // B's REP interval
    p.pump();
    CHECK(p.wire.sent[1][kAttrRep] == 3);
    CHECK(p.wire.sent[0][kAttrRtu] == 2);
    REQUIRE(p.ev_b.size() == 2);
    CHECK(p.ev_b[1].type == CmEventType::rtu_received);
    CHECK(p.ev_a.size() == 1);  // no second rep_received
    CHECK(p.counters(*p.a).duplicates == 1);
}

TEST_CASE("cm engine: an MRA stretches the REQ's timeout by its service timeout", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);
    std::uint32_t ida = 0;
    REQUIRE(p.a->send_req(req_param(0x000123), &ida) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    const std::uint32_t idb = p.ev_b[0].id;
    constexpr std::uint8_t kServiceTimeout = 24;  // 4.096 us * 2^24 = 68.7 s
    REQUIRE(p.b->send_mra(idb, kServiceTimeout) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::mra_received);
    CHECK(p.ev_a[0].id == ida);
    g_now_us += 5 * req_interval_us();  // well past the REQ's own timeout (5 x 4.4 s), short of the MRA's 68.7 s
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 1);
    g_now_us += (4096ull << kServiceTimeout) / 1000;  // past it: the REQ is sent again, B answers with its MRA
    p.pump();
    CHECK(p.wire.sent[0][kAttrReq] == 2);
    CHECK(p.wire.sent[1][kAttrMra] == 2);
    CHECK(p.ev_b.size() == 1);
    // The consumer answers in the end; the connection is made.
    REQUIRE(p.b->send_rep(idb, CmRepParam{.local_qpn = 0x456}) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() >= 2);
    CHECK(p.ev_a.back().type == CmEventType::rep_received);
    REQUIRE(p.a->send_rtu(ida) == 0);
    p.pump();
    CHECK(p.ev_b.back().type == CmEventType::rtu_received);
}

TEST_CASE("cm engine: DREQ and DREP, and a DREQ for a forgotten ID answered by the CM", "[cm_engine]") {
    Pair p;
    auto [ida, idb] = connect(p);
    const auto pd = bytes(kCmDreqPrivateData, 4);
    REQUIRE(p.a->send_dreq(ida, pd.data(), static_cast<std::uint8_t>(pd.size())) == 0);
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    CHECK(p.ev_b[0].type == CmEventType::dreq_received);
    CHECK(p.ev_b[0].id == idb);
    CHECK(std::vector<std::uint8_t>(p.ev_b[0].private_data, p.ev_b[0].private_data + pd.size()) == pd);
    // The DREQ names B's QP.
    DreqMsg dreq;
    decode(p.wire.last_sent[0].data(), &dreq);
    CHECK(dreq.remote_qpn_eecn == 0x000456);
    REQUIRE(p.b->send_drep(idb) == 0);
    p.pump();
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::drep_received);
    CHECK(p.ev_a[0].id == ida);
    CHECK(p.a->send_dreq(ida) == -EINVAL);  // gone (in time-wait)
    CHECK(p.b->send_drep(idb) == -EINVAL);
    g_now_us += 10 * req_interval_us();  // time-wait over, nothing retransmitted
    p.pump();
    CHECK(p.wire.sent[0][kAttrDreq] == 1);
    CHECK(p.wire.sent[1][kAttrDrep] == 1);

    // A second connection whose passive side forgets its ID silently.
    p.ev_a.clear();
    p.ev_b.clear();
    REQUIRE(p.b->unlisten(kIpoibService) == 0);
    auto [ida2, idb2] = connect(p);
    p.b->destroy_id(idb2);
    CHECK(p.b->send_dreq(idb2) == -EINVAL);
    REQUIRE(p.a->send_dreq(ida2) == 0);
    p.pump();
    CHECK(p.ev_b.empty());
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::drep_received);
    CHECK(p.counters(*p.b).drep_for_unknown == 1);
}

TEST_CASE("cm engine: a DREQ never answered ends in dreq_error", "[cm_engine]") {
    Pair p;
    auto [ida, idb] = connect(p);
    (void)idb;
    p.wire.drop_next[0][kAttrDreq] = 1000;
    REQUIRE(p.a->send_dreq(ida) == 0);
    for (int i = 0; i < 3; ++i) {  // the REQ's max_cm_retries (3)
        g_now_us += req_interval_us() + 1;
        p.pump();
        CHECK(p.ev_a.empty());
    }
    g_now_us += req_interval_us() + 1;
    p.pump();
    CHECK(p.wire.sent[0][kAttrDreq] == 4);
    REQUIRE(p.ev_a.size() == 1);
    CHECK(p.ev_a[0].type == CmEventType::dreq_error);
    CHECK(p.ev_a[0].id == ida);
    CHECK(p.ev_b.empty());
}

TEST_CASE("cm engine: malformed MADs are dropped and counted", "[cm_engine]") {
    Pair p;
    REQUIRE(p.b->listen(kIpoibService, ~0xffffffull) == 0);
    std::array<std::uint8_t, kMadSize> good{};
    ReqMsg req;
    req.local_comm_id = 0x5555;
    req.service_id = kIpoibService | 7;
    req.primary.local_lid = 1;
    req.primary.remote_lid = 2;
    encode(req, 1, good.data());
    auto inject = [&](std::vector<std::uint8_t> m) { p.wire.to[1].push_back({std::move(m), MadAddr{.lid = 1}}); };
    inject(std::vector<std::uint8_t>(good.begin(), good.begin() + 100));  // short
    auto bad = std::vector<std::uint8_t>(good.begin(), good.end());
    bad[2] = 1;  // class version 1
    inject(bad);
    bad = std::vector<std::uint8_t>(good.begin(), good.end());
    bad[0] = 2;  // base version
    inject(bad);
    bad = std::vector<std::uint8_t>(good.begin(), good.end());
    bad[17] = 0x19;  // LAP: not taken
    inject(bad);
    bad[17] = 0x99;  // unknown
    inject(bad);
    bad = std::vector<std::uint8_t>(good.begin(), good.end());
    bad[1] = 0x03;  // SA class
    inject(bad);
    bad = std::vector<std::uint8_t>(good.begin(), good.end());
    bad[3] = 0x81;  // a response method
    inject(bad);
    std::array<std::uint8_t, kMadSize> stray{};
    encode(RepMsg{.local_comm_id = 1, .remote_comm_id = 0x12345678}, 2, stray.data());  // REP for no ID
    inject({stray.begin(), stray.end()});
    encode(RtuMsg{.local_comm_id = 1, .remote_comm_id = 0x12345678}, 3, stray.data());
    inject({stray.begin(), stray.end()});
    p.pump();
    CHECK(p.ev_b.empty());
    CHECK(p.ev_a.empty());
    const CmCounters c = p.counters(*p.b);
    CHECK(c.mads_received == 9);
    CHECK(c.dropped_short == 1);
    CHECK(c.dropped_bad_version == 2);
    CHECK(c.dropped_unknown_attr == 2);
    CHECK(c.dropped_bad_class == 1);
    CHECK(c.dropped_bad_method == 1);
    CHECK(c.dropped_unmatched == 2);
    CHECK(c.mads_sent == 0);
    // The well-formed REQ itself is taken.
    inject({good.begin(), good.end()});
    p.pump();
    REQUIRE(p.ev_b.size() == 1);
    CHECK(p.ev_b[0].type == CmEventType::req_received);
    CHECK(p.ev_b[0].service_id == (kIpoibService | 7));
}

TEST_CASE("cm engine: communication IDs are distinct and arguments checked", "[cm_engine]") {
    Pair p;
    std::vector<std::uint32_t> ids;
    for (int i = 0; i < 200; ++i) {
        std::uint32_t id = 0;
        REQUIRE(p.a->send_req(req_param(static_cast<std::uint32_t>(i)), &id) == 0);
        CHECK(id != 0);
        ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
    for (auto id : ids)
        p.a->destroy_id(id);
    std::uint32_t id = 0;
    std::vector<std::uint8_t> too_long(kCmReqPrivateData + 1);
    auto bad = req_param(1);
    bad.private_data = too_long.data();
    bad.private_data_len = static_cast<std::uint8_t>(too_long.size());
    CHECK(p.a->send_req(bad, &id) == -EINVAL);
    CHECK(p.a->send_rep(12345, CmRepParam{}) == -EINVAL);
    CHECK(p.a->send_dreq(12345) == -EINVAL);
    CHECK(p.b->listen(kIpoibService) == 0);
    CHECK(p.b->listen(kIpoibService) == -EADDRINUSE);
}
