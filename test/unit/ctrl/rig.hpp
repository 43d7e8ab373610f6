// SPDX-License-Identifier: BSD-3-Clause
// The fixture of the control-plane unit tests: a ControlPlane opened on a
// FakeHca and a FakeSa with the TestClock, and the records and helpers the
// cases share (test_control_plane.cpp, test_reliability.cpp).
#pragma once

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fake_hca.hpp"
#include "fake_sa.hpp"
#include "ipoib/ctrl/control_plane.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/mgid.hpp"

namespace ipoib::ctrl::test {

inline constexpr std::uint64_t kStart = 1'000'000;  // the test clock's start (ms)

inline Gid gid(const char *text) {
    auto r = wire::parse_gid_text(text);
    REQUIRE(r.ok());
    return r.value;
}

inline const Gid kBcast8001 = wire::parse_gid_text("ff12:401b:8001::ffff:ffff").value;
inline const Gid kBcastFfff = wire::parse_gid_text("ff12:401b:ffff::ffff:ffff").value;
inline const Gid kGroupA = wire::parse_gid_text("ff12:401b:8001::1:203").value;    // 224.1.2.3
inline const Gid kGroupB = wire::parse_gid_text("ff12:601b:8001::1:ff00:b").value; // ff02::1:ff00:b
inline const Gid kPeer = wire::parse_gid_text("fe80::2:c903:0:202").value;

// The broadcast group's record as an SA answers it.
inline McMemberRecord bcast_record(const Gid &mgid = kBcast8001, std::uint8_t mtu = 4) {
    McMemberRecord r{};
    r.mgid = mgid;
    r.qkey = kIpoibQkey;
    r.mlid = 0xc001;
    r.mtu = mtu;
    r.mtu_selector = kSelectorExactly;
    r.pkey = static_cast<std::uint16_t>((mgid.raw[4] << 8) | mgid.raw[5]);
    r.rate = 3;
    r.sl = 0;
    r.hop_limit = 0;
    r.scope = 2;
    r.join_state = kFullMember;
    return r;
}

// Another group's record, with the broadcast group's parameters.
inline McMemberRecord group_record(const Gid &mgid, const McMemberRecord &b, std::uint16_t mlid = 0xc010) {
    McMemberRecord r = b;
    r.mgid = mgid;
    r.mlid = mlid;
    return r;
}

struct Rig {
    FakeHca hca;
    FakeSa sa;
    std::vector<std::string> log;
    std::vector<bool> link;  // on_link calls of every iface() made
    ControlPlane cp;         // declared last: stopped and destroyed before the rest

    explicit Rig(int ports = 1, bool open_now = true) : hca(ports) {
        TestClock::now = kStart;
        sa.clock = &TestClock::now;
        if (open_now)
            open();
    }
    // The destructor's stop() reports leaves: not to the test's locals, gone by then.
    ~Rig() {
        for (auto &i : cp.interfaces())
            i->on_group = nullptr;
        cp.on_path = nullptr;
    }
    CpConfig config() {
        CpConfig c;
        c.sa.timeout_ms = 123;
        c.sa_service = &sa;
        c.now_ms = TestClock::now_ms;
        c.log = [this](LogLevel, const char *topic, const std::string &m) {
            log.push_back(std::string(topic) + ": " + m);
        };
        return c;
    }
    void open() {
        std::string err;
        INFO(err);
        REQUIRE(cp.open(hca, config(), &err));
    }
    Interface *iface(std::uint16_t pkey = 0x8001, bool allmulti = false) {
        IfaceConfig c;
        c.pkey = pkey;
        c.allmulti = allmulti;
        std::string err;
        Interface *i = cp.add_interface(c, &err);
        INFO(err);
        REQUIRE(i);
        i->on_link = [this](bool up) { link.push_back(up); };
        return i;
    }
    void run(int n = 1) {
        for (int k = 0; k < n; ++k)
            cp.run_once(0);
    }
    void advance(std::uint64_t ms) { TestClock::now += ms; }
    std::size_t logged(const std::string &s) const {
        std::size_t n = 0;
        for (auto &l : log)
            n += l.find(s) != std::string::npos;
        return n;
    }
    // Probe answered with `probe`, join answered with `joined`: the interface comes up.
    void bring_up(Interface *i, const McMemberRecord &probe, const McMemberRecord &joined) {
        bring_up_attempt(i, probe, joined);
        REQUIRE(i->up());
    }
    void bring_up(Interface *i, const McMemberRecord &rec = bcast_record()) { bring_up(i, rec, rec); }
    // Probe answered with `probe`, join answered with `joined`, whatever comes of it.
    void bring_up_attempt(Interface *i, const McMemberRecord &probe, const McMemberRecord &joined) {
        run();
        SaRequest *p = sa.last(SaMethod::mcm_get_table, probe.mgid);
        REQUIRE(p);
        REQUIRE(sa.answer(p->id, {}, {probe}));
        run();
        SaRequest *j = sa.last(SaMethod::join, probe.mgid);
        REQUIRE(j);
        REQUIRE(sa.answer(j->id, {}, {joined}));
        run();
        (void)i;
    }
    // Join `mgid` (full member) on an up interface and answer with the broadcast group's parameters.
    void join_group(Interface *i, const Gid &mgid) {
        i->join(mgid);
        run();
        SaRequest *j = sa.last(SaMethod::join, mgid);
        REQUIRE(j);
        REQUIRE(sa.answer(j->id, {}, {group_record(mgid, bcast_record(i->broadcast().mgid))}));
        run();
    }
};

inline const GroupView *find_group(const std::vector<GroupView> &v, const Gid &mgid) {
    for (auto &g : v)
        if (g.mgid == mgid)
            return &g;
    return nullptr;
}

inline bool joined(const Interface *i, const Gid &mgid) {
    const auto v = i->groups();
    const GroupView *g = find_group(v, mgid);
    return g && g->joined;
}


} // namespace ipoib::ctrl::test
