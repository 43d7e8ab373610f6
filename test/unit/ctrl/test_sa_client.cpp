// SPDX-License-Identifier: BSD-3-Clause
// SaClient over the fake kernel MAD layer of fake_umad.hpp (a link-time seam:
// this executable defines libibumad's functions). What only the real
// transport shows: how requests are handed to the kernel (response timeout,
// retries, TIDs) and what the client does with what it reads back (answers
// of the wrong class/attribute/method, the kernel's timeouts, a message
// larger than its buffer).
#include <catch2/catch.hpp>
#include <cerrno>
#include <string>
#include <vector>

#include "fake_umad.hpp"
#include "ipoib/ctrl/sa.hpp"
#include "ipoib/wire/hwaddr.hpp"

using namespace ipoib;
using namespace ipoib::ctrl;
using namespace ipoib::ctrl::test;

namespace {

const Gid kSgid = wire::parse_gid_text("fe80::2:c903:0:101").value;
const Gid kDgid = wire::parse_gid_text("fe80::2:c903:0:202").value;
const Gid kMgid = wire::parse_gid_text("ff12:401b:8001::ffff:ffff").value;

constexpr std::uint8_t kGet = 0x01, kSet = 0x02, kGetTable = 0x12, kDelete = 0x15;

struct Client {
    SaClient sa;
    explicit Client(int timeout_ms = 40, int retries = 1) {
        reset_fake_umad();
        SaConfig c;
        c.timeout_ms = timeout_ms;
        c.retries = retries;
        std::string err;
        INFO(err);
        REQUIRE(sa.open(c, &err));
        sa.set_sm(1, 0);
    }
    // poll until `done` or `ms` of real time passed
    template <class Pred>
    bool poll_until(Pred done, int ms = 2000) {
        const std::uint64_t end = monotonic_ms() + static_cast<std::uint64_t>(ms);
        while (!done() && monotonic_ms() < end)
            sa.poll(5);
        return done();
    }
};

std::vector<std::uint8_t> path_data(const Gid &dgid, std::uint16_t pkey) {
    std::vector<std::uint8_t> d(64);
    std::uint64_t mask;
    encode_path_query(kSgid, dgid, pkey, d.data(), &mask);
    return d;
}

std::vector<std::uint8_t> mcm_data(const Gid &mgid) {
    McMemberRecord r{};
    r.mgid = mgid;
    r.port_gid = kSgid;
    r.qkey = kIpoibQkey;
    r.mlid = 0xc001;
    r.mtu = 4;
    std::vector<std::uint8_t> d(56);
    encode_mcm(r, d.data());
    return d;
}

} // namespace

// ---------------------------------------------------------------------------
// Finding 2: requests go to the kernel with a response timeout.

TEST_CASE("sa unit: every request is sent with a response timeout, no kernel retries; the answer completes it",
          "[sa][umad]") {
    Client c(40, 1);
    int path_calls = 0, join_calls = 0, leave_calls = 0, table_calls = 0;
    SaStatus path_st{-1}, join_st{-1}, leave_st{-1}, table_st{-1};
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &) { ++path_calls, path_st = s; });
    McMemberRecord m{};
    m.mgid = kMgid;
    m.port_gid = kSgid;
    m.join_state = kFullMember;
    c.sa.join(m, kMcmMgid | kMcmPortGid, [&](SaStatus s, const std::vector<McMemberRecord> &) { ++join_calls, join_st = s; });
    c.sa.leave(m, kMcmMgid | kMcmPortGid, [&](SaStatus s, const std::vector<McMemberRecord> &) { ++leave_calls, leave_st = s; });
    c.sa.query_mcmembers(m, kMcmMgid, [&](SaStatus s, const std::vector<McMemberRecord> &) { ++table_calls, table_st = s; });
    auto &k = fake_umad();
    REQUIRE(k.sent.size() == 4);
    for (auto &s : k.sent) {
        INFO("method 0x" << std::hex << int(s.method()));
        CHECK(s.timeout_ms == 40);  // the kernel waits for the answer this long
        CHECK(s.retries == 0);      // and does not resend: SaClient does
    }
    CHECK(k.sent[0].method() == kGet);
    CHECK(k.sent[1].method() == kSet);
    CHECK(k.sent[2].method() == kDelete);
    CHECK(k.sent[3].method() == kGetTable);
    k.respond(FakeUmad::answer_to(k.sent[0], 0, path_data(kDgid, 0xffff)));
    k.respond(FakeUmad::answer_to(k.sent[1], 0, mcm_data(kMgid)));
    k.respond(FakeUmad::answer_to(k.sent[2], 0, mcm_data(kMgid)));
    k.respond(FakeUmad::answer_to(k.sent[3], 0, mcm_data(kMgid), 7));
    CHECK(k.dropped_answers == 0);  // the kernel had a request waiting for each
    REQUIRE(c.poll_until([&] { return path_calls && join_calls && leave_calls && table_calls; }, 30));
    CHECK(path_st.ok());
    CHECK(join_st.ok());
    CHECK(leave_st.ok());
    CHECK(table_st.ok());
    CHECK(c.sa.outstanding() == 0);
}

TEST_CASE("sa unit: SaClient's timer runs longer than the kernel's timeout; the kernel's ETIMEDOUT ends a try",
          "[sa][umad]") {
    Client c(30, 2);
    int calls = 0;
    SaStatus st;
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &) { ++calls, st = s; });
    // The kernel gives the TID up first, so a resend with the same TID is never a duplicate.
    CHECK(c.sa.next_timeout_ms() > 30);
    REQUIRE(c.poll_until([&] { return calls > 0; }, 3000));
    CHECK(st.status == -ETIMEDOUT);
    auto &k = fake_umad();
    REQUIRE(k.sent.size() == 3);  // first try and two retries, one TID
    CHECK(k.sent[0].tid() == k.sent[1].tid());
    CHECK(k.sent[1].tid() == k.sent[2].tid());
    CHECK(k.sent[0].timeout_ms == 30);  // doubling per try
    CHECK(k.sent[1].timeout_ms == 60);
    CHECK(k.sent[2].timeout_ms == 120);
    CHECK(k.refused_duplicates == 0);
    CHECK(k.kernel_timeouts == 3);
    CHECK(c.sa.counters().kernel_timeouts == 3);
    CHECK(c.sa.counters().retried == 2);
    CHECK(c.sa.counters().timed_out == 1);
}

TEST_CASE("sa unit: an answer after a retry is matched (same TID)", "[sa][umad]") {
    Client c(30, 2);
    int calls = 0;
    SaStatus st{-1};
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &) { ++calls, st = s; });
    auto &k = fake_umad();
    REQUIRE(c.poll_until([&] { return k.sent.size() == 2; }, 1000));
    k.respond(FakeUmad::answer_to(k.sent[1], 0, path_data(kDgid, 0xffff)));
    REQUIRE(c.poll_until([&] { return calls > 0; }, 100));
    CHECK(st.ok());
    CHECK(k.refused_duplicates == 0);
}

// ---------------------------------------------------------------------------
// Finding 8: what is read back is checked.

TEST_CASE("sa unit: answers of another class, attribute or method are dropped; the right one completes",
          "[sa][umad]") {
    Client c(500, 0);
    int calls = 0;
    SaStatus st{-1};
    std::vector<PathRecord> got;
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &r) {
        ++calls, st = s, got = r;
    });
    auto &k = fake_umad();
    REQUIRE(k.sent.size() == 1);
    const UmadSent &req = k.sent[0];
    auto wrong_class = FakeUmad::answer_to(req, 0, path_data(wire::parse_gid_text("fe80::bad:1").value, 0xffff));
    wrong_class[1] = 0x04;  // performance management, same TID
    auto wrong_attr = FakeUmad::answer_to(req, 0, path_data(wire::parse_gid_text("fe80::bad:2").value, 0xffff));
    wrong_attr[16] = 0x00, wrong_attr[17] = 0x38;  // MCMemberRecord
    auto wrong_method = FakeUmad::answer_to(req, 0, path_data(wire::parse_gid_text("fe80::bad:3").value, 0xffff));
    wrong_method[3] = 0x92;  // GetTableResp to a Get
    // umad2sim (and a confused SA) put them in our queue with the request's TID.
    k.deliver(wrong_class);
    k.deliver(wrong_attr);
    k.deliver(wrong_method);
    c.sa.poll(0);
    CHECK(calls == 0);
    CHECK(c.sa.outstanding() == 1);
    CHECK(c.sa.counters().bad_answers == 3);
    k.respond(FakeUmad::answer_to(req, 0, path_data(kDgid, 0xffff)));
    REQUIRE(c.poll_until([&] { return calls > 0; }, 100));
    CHECK(st.ok());
    REQUIRE(got.size() == 1);
    CHECK(got[0].dgid == kDgid);
}

TEST_CASE("sa unit: an answer larger than the receive buffer (ENOSPC) does not wedge the client", "[sa][umad]") {
    Client c(500, 0);
    int big_calls = 0, next_calls = 0;
    SaStatus big_st{-1}, next_st{-1};
    McMemberRecord q{};
    q.pkey = 0x8001;
    c.sa.query_mcmembers(q, kMcmPkey, [&](SaStatus s, const std::vector<McMemberRecord> &) { ++big_calls, big_st = s; });
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &) { ++next_calls, next_st = s; });
    auto &k = fake_umad();
    REQUIRE(k.sent.size() == 2);
    // A table answer the kernel reassembled (RMPP) into more than 64 KiB.
    std::vector<std::uint8_t> records;
    for (int n = 0; n < 1300; ++n) {
        auto d = mcm_data(kMgid);
        records.insert(records.end(), d.begin(), d.end());
    }
    k.respond(FakeUmad::answer_to(k.sent[0], 0, records, 7));
    k.respond(FakeUmad::answer_to(k.sent[1], 0, path_data(kDgid, 0xffff)));
    REQUIRE(c.poll_until([&] { return next_calls > 0; }, 200));
    CHECK(next_st.ok());
    CHECK(k.queued() == 0);  // the big one was read off the queue, not left at its head
    REQUIRE(c.poll_until([&] { return big_calls > 0; }, 1000));
    CHECK(big_st.status == -EMSGSIZE);
    CHECK(c.sa.counters().too_big == 1);
    CHECK(k.opens == 1);  // read off, no need to reopen the port
}

TEST_CASE("sa unit: a message that cannot be read off even with its size is left behind with the port",
          "[sa][umad]") {
    Client c(200, 1);
    int calls = 0;
    SaStatus st{-1};
    c.sa.query_path(kSgid, kDgid, 0xffff, [&](SaStatus s, const std::vector<PathRecord> &) { ++calls, st = s; });
    auto &k = fake_umad();
    // Claims more than kSaMaxDrainLen: not worth a buffer. The port is
    // reopened (its queue goes with it) and the request resent on its timer.
    std::vector<std::uint8_t> huge(kSaMaxDrainLen + 256, 0);
    std::copy(k.sent[0].mad.begin(), k.sent[0].mad.begin() + 24, huge.begin());
    huge[3] = 0x81;
    k.deliver(huge);
    c.sa.poll(0);
    CHECK(k.opens == 2);
    CHECK(k.closes == 1);
    CHECK(c.sa.counters().too_big == 1);
    CHECK(k.queued() == 0);
    REQUIRE(c.poll_until([&] { return k.sent.size() == 2; }, 2000));  // the resend on the new port
    k.respond(FakeUmad::answer_to(k.sent[1], 0, path_data(kDgid, 0xffff)));
    REQUIRE(c.poll_until([&] { return calls > 0; }, 200));
    CHECK(st.ok());
}
