// SPDX-License-Identifier: BSD-3-Clause
// The control plane's state machines without a fabric: ControlPlane driven
// through run_once() with an in-memory SA (fake_sa.hpp), a fake HCA
// (fake_hca.hpp) and a clock the test moves. Each case checks one of the
// rules control_plane.hpp states (Linux ipoib's), or documents what the
// code does today where it departs from them ("today:").
#include "rig.hpp"

using namespace ipoib;
using namespace ipoib::ctrl;
using namespace ipoib::ctrl::test;

// ---------------------------------------------------------------------------
// The seam itself

TEST_CASE("ctrl unit: ControlPlane opens the injected SA, points it at the SM, closes it on stop", "[ctrl]") {
    Rig r(1, false);
    SECTION("opened, told the SM's LID and SL, closed") {
        r.hca.port(1).attr.sm_lid = 7;
        r.hca.port(1).attr.sm_sl = 3;
        r.open();
        CHECK(&r.cp.sa() == &r.sa);
        CHECK(r.sa.opens == 1);
        CHECK(r.sa.is_open());
        CHECK(r.sa.opened_with.timeout_ms == 123);
        CHECK(r.sa.sm_lid == 7);
        CHECK(r.sa.sm_sl == 3);
        CHECK(r.cp.management() == Management::sa);
        r.cp.stop();
        CHECK(r.sa.closes == 1);
        CHECK_FALSE(r.sa.is_open());
    }
    SECTION("an SA that cannot be opened fails ControlPlane::open with its message") {
        r.sa.fail_open = true;
        std::string err;
        CHECK_FALSE(r.cp.open(r.hca, r.config(), &err));
        CHECK(err == "fake SA: open refused");
    }
}

// ---------------------------------------------------------------------------
// Broadcast group first

TEST_CASE("ctrl unit: the broadcast group is probed, then joined, before any other group", "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    i->join(kGroupA);  // wanted before the interface is up: must wait
    r.run();
    REQUIRE(r.sa.requests.size() == 1);
    const SaRequest &probe = r.sa.requests[0];
    CHECK(probe.method == SaMethod::mcm_get_table);
    CHECK(probe.mgid() == kBcast8001);
    CHECK(probe.comp_mask == kMcmMgid);
    CHECK(i->state() == IfaceState::probing);
    r.run(3);
    CHECK(r.sa.requests.size() == 1);  // one request at a time

    REQUIRE(r.sa.answer(probe.id, {}, {bcast_record()}));
    r.run();
    REQUIRE(r.sa.requests.size() == 2);
    const SaRequest &join = r.sa.requests[1];
    CHECK(join.method == SaMethod::join);
    CHECK(join.mgid() == kBcast8001);
    CHECK(join.join_state() == kFullMember);
    CHECK(join.mcm.port_gid == r.cp.port_gid(1));
    CHECK(join.comp_mask == (kMcmMgid | kMcmPortGid | kMcmJoinState));
    CHECK(i->state() == IfaceState::joining);
    r.run(3);
    CHECK(r.sa.requests.size() == 2);
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 0);

    REQUIRE(r.sa.answer(join.id, {}, {bcast_record()}));
    r.run();
    CHECK(i->up());
    r.run();
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 1);  // only now
}

TEST_CASE("ctrl unit: on_link(true) only after the broadcast join; its parameters become the interface's",
          "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    std::vector<std::string> groups;
    i->on_group = [&](const Gid &m, const McMemberRecord &, bool j) {
        groups.push_back((j ? "+" : "-") + wire::to_string(m));
    };
    McMemberRecord probe = bcast_record();
    McMemberRecord answer = bcast_record();
    answer.qkey = 0x0b1c;  // the join's answer, not the probe's, is what counts
    answer.mtu = 3;
    answer.mlid = 0xc007;
    answer.sl = 2;
    answer.rate = 6;
    answer.traffic_class = 5;
    answer.flow_label = 0x12345;
    answer.hop_limit = 7;

    r.run();
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::mcm_get_table)->id, {}, {probe}));
    r.run();
    CHECK(r.link.empty());
    CHECK_FALSE(i->up());
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::join)->id, {}, {answer}));
    r.run();
    CHECK(r.link == std::vector<bool>{true});
    CHECK(groups == std::vector<std::string>{"+ff12:401b:8001::ffff:ffff"});
    const BroadcastParams &b = i->broadcast();
    CHECK(b.mgid == kBcast8001);
    CHECK(b.qkey == 0x0b1c);
    CHECK(b.mtu == 3);
    CHECK(b.mlid == 0xc007);
    CHECK(b.sl == 2);
    CHECK(b.rate == 6);
    CHECK(b.traffic_class == 5);
    CHECK(b.flow_label == 0x12345);
    CHECK(b.hop_limit == 7);
    CHECK(i->counters().joins == 1);

    // Every other group is joined (created) with exactly those parameters.
    i->join(kGroupA);
    r.run();
    const SaRequest *j = r.sa.last(SaMethod::join, kGroupA);
    REQUIRE(j);
    CHECK(j->mcm.qkey == 0x0b1c);
    CHECK(j->mcm.mtu == 3);
    CHECK(j->mcm.mtu_selector == kSelectorExactly);
    CHECK(j->mcm.rate == 6);
    CHECK(j->mcm.rate_selector == kSelectorExactly);
    CHECK(j->mcm.sl == 2);
    CHECK(j->mcm.traffic_class == 5);
    CHECK(j->mcm.flow_label == 0x12345);
    CHECK(j->mcm.hop_limit == 7);
    CHECK(j->mcm.pkey == 0x8001);
    CHECK(j->mcm.scope == 2);
    CHECK(j->join_state() == kFullMember);
    CHECK(j->comp_mask == (kMcmMgid | kMcmPortGid | kMcmQkey | kMcmMtuSel | kMcmMtu | kMcmTclass | kMcmPkey |
                           kMcmRateSel | kMcmRate | kMcmSl | kMcmFlowLabel | kMcmHopLimit | kMcmScope |
                           kMcmJoinState));
}

TEST_CASE("ctrl unit: broadcast group absent: counted, logged once, retried after 1 s doubling to 16 s",
          "[ctrl][mcast][backoff]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.run();
    const std::uint64_t waits[] = {1000, 2000, 4000, 8000, 16000, 16000};
    std::uint64_t n = 0;
    for (std::uint64_t wait : waits) {
        INFO("wait " << wait);
        SaRequest *probe = r.sa.last(SaMethod::mcm_get_table);
        REQUIRE(probe);
        REQUIRE_FALSE(probe->answered);
        // Alternately the two ways an SA says "not there": no records, or an empty table.
        if (n % 2)
            REQUIRE(r.sa.answer(probe->id, SaStatus{kSaStatusNoRecords}));
        else
            REQUIRE(r.sa.answer(probe->id, {}));
        r.run();
        ++n;
        CHECK(i->counters().broadcast_absent == n);
        CHECK(i->state() == IfaceState::port_down);
        const std::size_t sent = r.sa.requests.size();
        r.advance(wait - 1);
        r.run();
        CHECK(r.sa.requests.size() == sent);
        r.advance(1);
        r.run();
        CHECK(r.sa.requests.size() == sent + 1);
    }
    CHECK(r.sa.count(SaMethod::join) == 0);
    CHECK_FALSE(i->up());
    CHECK(r.logged("IPoIB broadcast group ff12:401b:8001::ffff:ffff absent") == 1);
    CHECK(r.link.empty());
}

TEST_CASE("ctrl unit: broadcast MTU above the port's maximum: refused, counted, not joined", "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.run();
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::mcm_get_table)->id, {}, {bcast_record(kBcast8001, 5)}));
    r.run();
    CHECK(i->counters().broadcast_mtu_too_big == 1);
    CHECK(r.sa.count(SaMethod::join) == 0);
    CHECK(i->state() == IfaceState::port_down);
    CHECK(r.logged("IPoIB broadcast group MTU 4096 greater than port's maximum MTU 2048") == 1);
    // Retried after the backoff; a port that can carry 4096 takes it.
    r.hca.port(1).attr.max_mtu = hca::Mtu::mtu4096;
    r.hca.event(hca::EventType::lid_change);  // makes the control plane re-read the port
    r.run();
    r.bring_up(i, bcast_record(kBcast8001, 5));
    CHECK(i->broadcast().mtu == 5);
    CHECK(r.logged("recovered: the broadcast group is joined, interface up") == 1);
}

TEST_CASE("ctrl unit: SA silent or failing while probing: counted, logged once, retried", "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.run();
    REQUIRE(r.sa.drop(r.sa.last(SaMethod::mcm_get_table)->id));
    r.run();
    CHECK(i->counters().sa_timeouts == 1);
    CHECK(r.logged("SA not answering: cannot probe the IPoIB broadcast group") == 1);
    r.advance(kBackoffStartMs);
    r.run();
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::mcm_get_table)->id, SaStatus{0x0200}));
    r.run();
    CHECK(i->counters().broadcast_absent == 0);  // an SA error is not "absent"
    CHECK(r.logged("probing the IPoIB broadcast group ff12:401b:8001::ffff:ffff failed: SA status 0x0200") == 1);
    r.advance(2 * kBackoffStartMs);
    r.run();
    // The broadcast join silent too: a join failure and an SA timeout.
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::mcm_get_table)->id, {}, {bcast_record()}));
    r.run();
    REQUIRE(r.sa.drop(r.sa.last(SaMethod::join)->id));
    r.run();
    CHECK(i->counters().join_failures == 1);
    CHECK(i->counters().sa_timeouts == 2);
    CHECK(r.logged("joining the IPoIB broadcast group ff12:401b:8001::ffff:ffff failed") == 1);
    CHECK_FALSE(i->up());
}

// ---------------------------------------------------------------------------
// Port and P_Key

TEST_CASE("ctrl unit: the P_Key: index 0 or the configured one; missing -> waiting state, re-checked every second",
          "[ctrl][pkey]") {
    SECTION("missing at start, then added") {
        Rig r;
        Interface *i = r.iface(0x8009);
        for (int k = 0; k < 5; ++k) {
            r.run();
            r.advance(kPkeyRecheckMs);
        }
        CHECK(i->state() == IfaceState::pkey_missing);
        CHECK(i->counters().pkey_missing == 1);  // counted once per occurrence, not per re-check
        CHECK(r.sa.requests.empty());
        CHECK(r.logged("P_Key 0x8009 is not in port 1's P_Key table") == 1);
        r.hca.port(1).pkeys.push_back(0x8009);
        r.hca.sync();
        r.run();
        CHECK(i->state() == IfaceState::probing);
        CHECK(i->pkey() == 0x8009);
        CHECK(i->pkey_index() == 2);
        REQUIRE(r.sa.last(SaMethod::mcm_get_table));
        CHECK(wire::to_string(r.sa.last(SaMethod::mcm_get_table)->mgid()) == "ff12:401b:8009::ffff:ffff");
    }
    SECTION("removed by a P_Key change event") {
        Rig r;
        Interface *i = r.iface(0x8001);
        r.bring_up(i);
        r.hca.port(1).pkeys = {0xffff};
        r.hca.sync();
        r.hca.event(hca::EventType::pkey_change);
        r.run();
        CHECK(r.link == std::vector<bool>{true, false});
        CHECK(i->state() == IfaceState::pkey_missing);
        CHECK(i->counters().pkey_missing == 1);
    }
    SECTION("which entry: index 0 by default, a full-member entry preferred") {
        Rig r;
        r.hca.port(1).pkeys = {0xffff, 0x0001, 0x8001};
        r.hca.sync();
        Interface *def = r.iface(0);
        Interface *p1 = r.iface(0x0001);
        r.run();
        CHECK(def->pkey() == 0xffff);
        CHECK(def->pkey_index() == 0);
        CHECK(p1->pkey() == 0x8001);
        CHECK(p1->pkey_index() == 2);
        CHECK(r.sa.count(SaMethod::mcm_get_table, kBcastFfff) == 1);
        CHECK(r.sa.count(SaMethod::mcm_get_table, kBcast8001) == 1);
    }
}

TEST_CASE("ctrl unit: port not active: waiting state, counted once; ACTIVE event starts the probe", "[ctrl][port]") {
    Rig r(1, false);
    r.hca.port(1).attr.state = hca::PortState::init;
    r.open();  // the control plane reads the port at open
    Interface *i = r.iface(0x8001);
    r.run(3);
    r.advance(5000);
    r.run(3);
    CHECK(i->state() == IfaceState::port_down);
    CHECK(i->counters().port_not_active == 1);
    CHECK(r.logged("port 1 is not active (INIT)") == 1);
    CHECK(r.sa.requests.empty());
    r.hca.port(1).attr.state = hca::PortState::active;
    r.hca.event(hca::EventType::port_active);
    r.run();
    CHECK(r.cp.counters().port_events == 1);
    CHECK(i->state() == IfaceState::probing);
}

TEST_CASE("ctrl unit: port error flushes (on_link(false), no leaves on a dead port); ACTIVE rejoins",
          "[ctrl][port][flush]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    r.join_group(i, kGroupA);
    REQUIRE(joined(i, kGroupA));
    REQUIRE(r.cp.request_sendonly(i, kGroupB));
    r.run();
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::join, kGroupB)->id, {},
                        {group_record(kGroupB, bcast_record(), 0xc011)}));
    r.run();
    REQUIRE(joined(i, kGroupB));
    std::vector<std::string> left;
    i->on_group = [&](const Gid &m, const McMemberRecord &, bool j) {
        if (!j)
            left.push_back(wire::to_string(m));
    };

    r.hca.port(1).attr.state = hca::PortState::down;
    r.hca.event(hca::EventType::port_error);
    r.run();
    CHECK(r.link == std::vector<bool>{true, false});
    CHECK(i->counters().flushes == 1);
    CHECK(i->state() == IfaceState::port_down);
    CHECK(r.sa.count(SaMethod::leave) == 0);  // the port is down: nobody to tell
    CHECK(left.size() == 3);                  // both groups and the broadcast group detached
    CHECK(find_group(i->groups(), kGroupA));  // full membership kept, to rejoin
    CHECK_FALSE(find_group(i->groups(), kGroupB));  // send-only: re-made on the next transmit
    CHECK(i->counters().port_not_active == 1);

    r.hca.port(1).attr.state = hca::PortState::active;
    r.hca.event(hca::EventType::port_active);
    r.run();
    CHECK(i->counters().flushes == 2);
    CHECK(r.link == std::vector<bool>{true, false});  // a flush of a down interface says nothing
    r.bring_up(i);
    CHECK(r.link == std::vector<bool>{true, false, true});
    r.run();
    const SaRequest *rejoin = r.sa.last(SaMethod::join, kGroupA);
    REQUIRE(rejoin);
    CHECK_FALSE(rejoin->answered);
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 2);
    CHECK(r.sa.count(SaMethod::join, kGroupB) == 1);
}

TEST_CASE("ctrl unit: SM change: the SA is pointed at the new SM; a light flush (no leaves, link kept up)",
          "[ctrl][port][flush]") {
    // Linux ipoib: SM change / client reregister -> light flush (paths invalid,
    // multicast rejoined, no leave). hca::EventType has no client-reregister
    // event: the verbs provider reports IBV_EVENT_CLIENT_REREGISTER as
    // sm_change. The flush levels one by one: test_reliability.cpp.
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    r.join_group(i, kGroupA);
    r.sa.add_path([] {
        PathRecord p;
        p.dgid = kPeer;
        p.pkey = 0x8001;
        p.dlid = 9;
        p.mtu = 4;  // 2048: an answer without an MTU code is refused
        return p;
    }());
    REQUIRE(r.cp.request_path(kPeer, 0x8001));
    r.run();
    REQUIRE(r.cp.paths().find(kPeer, 0x8001));
    REQUIRE(r.cp.paths().find(kPeer, 0x8001)->valid);

    r.hca.port(1).attr.sm_lid = 42;
    r.hca.port(1).attr.sm_sl = 1;
    r.hca.event(hca::EventType::sm_change);
    r.run();
    CHECK(r.sa.sm_lid == 42);  // the SA is asked where the new SM is
    CHECK(r.sa.sm_sl == 1);
    CHECK(i->counters().flushes == 1);
    CHECK(r.link == std::vector<bool>{true});
    CHECK(r.sa.count(SaMethod::leave) == 0);
    CHECK_FALSE(r.cp.paths().find(kPeer, 0x8001)->valid);
    CHECK(i->state() == IfaceState::probing);  // started over at once
    r.bring_up(i);
    r.run();
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 2);
    CHECK(r.link == std::vector<bool>{true});
}

TEST_CASE("ctrl unit: answers from before a flush are ignored", "[ctrl][flush]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.run();
    SaRequest *old_probe = r.sa.last(SaMethod::mcm_get_table);
    REQUIRE(old_probe);
    r.hca.event(hca::EventType::lid_change);
    r.run();  // flush, then a new probe at once
    REQUIRE(r.sa.count(SaMethod::mcm_get_table) == 2);
    REQUIRE(r.sa.answer(old_probe->id, {}, {bcast_record()}));
    r.run();
    CHECK(r.sa.count(SaMethod::join) == 0);
    CHECK(i->state() == IfaceState::probing);
}

// ---------------------------------------------------------------------------
// Other groups

TEST_CASE("ctrl unit: send-only join on request_sendonly: join state 0x8, reported through on_group",
          "[ctrl][mcast][sendonly]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    std::vector<std::string> seen;
    i->on_group = [&](const Gid &m, const McMemberRecord &rec, bool j) {
        seen.push_back((j ? "+" : "-") + wire::to_string(m) + " " + std::to_string(rec.mlid));
    };
    REQUIRE(r.cp.request_sendonly(i, kGroupA));
    REQUIRE(r.cp.request_sendonly(i, kGroupA));  // asked twice: one join
    r.run();
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 1);
    SaRequest *j = r.sa.last(SaMethod::join, kGroupA);
    REQUIRE(j);
    CHECK(j->join_state() == kSendOnlyFullMember);
    REQUIRE(r.sa.answer(j->id, {}, {group_record(kGroupA, bcast_record(), 0xc022)}));
    r.run();
    CHECK(seen == std::vector<std::string>{"+ff12:401b:8001::1:203 " + std::to_string(0xc022)});
    const auto groups = i->groups();
    const GroupView *g = find_group(groups, kGroupA);
    REQUIRE(g);
    CHECK(g->joined);
    CHECK(g->join_state == kSendOnlyFullMember);
    CHECK(g->mlid == 0xc022);
}

TEST_CASE("ctrl unit: a failed group join backs off per group, 1 s doubling to 16 s", "[ctrl][mcast][backoff]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    REQUIRE(r.cp.request_sendonly(i, kGroupA));
    r.run();
    const std::uint64_t waits[] = {1000, 2000, 4000, 8000, 16000, 16000};
    std::uint32_t n = 0;
    for (std::uint64_t wait : waits) {
        INFO("wait " << wait);
        SaRequest *j = r.sa.last(SaMethod::join, kGroupA);
        REQUIRE(j);
        REQUIRE(r.sa.answer(j->id, SaStatus{0x0200}));
        r.run();
        ++n;
        const auto groups = i->groups();
        const GroupView *g = find_group(groups, kGroupA);
        REQUIRE(g);
        CHECK(g->failures == n);
        CHECK(g->last_error == "SA status 0x0200: request invalid");
        const std::size_t sent = r.sa.count(SaMethod::join, kGroupA);
        r.advance(wait - 1);
        r.run();
        CHECK(r.sa.count(SaMethod::join, kGroupA) == sent);
        r.advance(1);
        r.run();
        CHECK(r.sa.count(SaMethod::join, kGroupA) == sent + 1);
    }
    CHECK(i->counters().join_failures == n);
    CHECK(i->up());  // the interface stays up
}

TEST_CASE("ctrl unit: a group whose Q_Key/MTU differ from the broadcast group's is left and retried",
          "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    i->join(kGroupA);
    r.run();
    McMemberRecord wrong = group_record(kGroupA, bcast_record());
    wrong.qkey = 0x1234;
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::join, kGroupA)->id, {}, {wrong}));
    r.run();
    CHECK(i->counters().param_mismatch == 1);
    CHECK(i->counters().join_failures == 1);
    CHECK_FALSE(joined(i, kGroupA));
    const SaRequest *l = r.sa.last(SaMethod::leave, kGroupA);
    REQUIRE(l);
    CHECK(l->join_state() == kFullMember);
    const auto groups = i->groups();
    CHECK(find_group(groups, kGroupA)->last_error == "group parameters (Q_Key/MTU) differ from the broadcast group's");
    r.advance(kBackoffStartMs);
    r.run();
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 2);
}

TEST_CASE("ctrl unit: Interface::leave sends a leave and reports the group gone", "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    r.join_group(i, kGroupA);
    bool gone = false;
    i->on_group = [&](const Gid &m, const McMemberRecord &, bool j) { gone = m == kGroupA && !j; };
    i->leave(kGroupA);
    r.run();
    const SaRequest *l = r.sa.last(SaMethod::leave, kGroupA);
    REQUIRE(l);
    CHECK(l->join_state() == kFullMember);
    CHECK(l->mcm.port_gid == r.cp.port_gid(1));
    CHECK(l->comp_mask == (kMcmMgid | kMcmPortGid | kMcmJoinState));
    CHECK(gone);
    CHECK_FALSE(find_group(i->groups(), kGroupA));
    r.run();  // the SA's acknowledgement
    CHECK(i->counters().leaves == 1);
}

TEST_CASE("ctrl unit: remove_interface leaves every group and takes the link down", "[ctrl][mcast]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    r.join_group(i, kGroupA);
    r.cp.remove_interface(i);
    CHECK(r.cp.interfaces().empty());
    CHECK(r.link == std::vector<bool>{true, false});
    const SaRequest *lb = r.sa.last(SaMethod::leave, kBcast8001);
    const SaRequest *la = r.sa.last(SaMethod::leave, kGroupA);
    REQUIRE(lb);
    REQUIRE(la);
    CHECK(lb->join_state() == kFullMember);
    CHECK(la->join_state() == kFullMember);
    r.run();  // the acknowledgements find the interface gone (test_reliability.cpp)
    CHECK(r.sa.outstanding() == 0);
}

TEST_CASE("ctrl unit: stop leaves every group, waits for the SA's acknowledgements, closes the SA",
          "[ctrl][mcast]") {
    Rig r;
    Interface *def = r.iface(0);
    Interface *p1 = r.iface(0x8001);
    r.bring_up(def, bcast_record(kBcastFfff));
    r.bring_up(p1);
    r.join_group(p1, kGroupA);
    const std::uint64_t t0 = TestClock::now;
    r.cp.stop();
    CHECK(r.sa.count(SaMethod::leave, kBcastFfff) == 1);
    CHECK(r.sa.count(SaMethod::leave, kBcast8001) == 1);
    CHECK(r.sa.count(SaMethod::leave, kGroupA) == 1);
    CHECK(r.sa.closes == 1);
    CHECK(r.sa.outstanding() == 0);
    CHECK(TestClock::now == t0);  // acknowledged at once: no waiting
    CHECK(r.cp.interfaces().empty());

    // An SA that does not acknowledge: stop() waits its timeout, then drops the requests.
    Rig q;
    q.sa.auto_leave = false;
    Interface *i = q.iface(0x8001);
    q.bring_up(i);
    const std::uint64_t t1 = TestClock::now;
    q.cp.stop(300);
    CHECK(q.sa.count(SaMethod::leave, kBcast8001) == 1);
    CHECK(TestClock::now >= t1 + 300);
    CHECK(TestClock::now < t1 + 300 + 2 * kStopPollMs);
    CHECK(q.sa.outstanding() == 0);
    CHECK(q.sa.closes == 1);
}

TEST_CASE("ctrl unit: the audit notices a lost membership and rejoins; SA silence reported once",
          "[ctrl][audit]") {
    Rig r;
    Interface *i = r.iface(0x8001);
    r.bring_up(i);
    const std::size_t tables = r.sa.count(SaMethod::mcm_get_table);
    r.advance(kAuditMs - 1);
    r.run();
    CHECK(r.sa.count(SaMethod::mcm_get_table) == tables);
    r.advance(1);
    r.run();
    SaRequest *audit = r.sa.last(SaMethod::mcm_get_table);
    REQUIRE(r.sa.count(SaMethod::mcm_get_table) == tables + 1);
    CHECK(audit->comp_mask == (kMcmMgid | kMcmPortGid));
    CHECK(audit->mcm.port_gid == r.cp.port_gid(1));

    // Silent twice: one timeout counted, one warning.
    REQUIRE(r.sa.drop(audit->id));
    r.run();
    r.advance(kAuditMs);
    r.run();
    REQUIRE(r.sa.drop(r.sa.last(SaMethod::mcm_get_table)->id));
    r.run();
    CHECK(i->counters().sa_timeouts == 1);
    CHECK(r.logged("SA not answering (broadcast membership audit)") == 1);
    CHECK(i->up());

    // Back, and it no longer lists us: flush and rejoin.
    r.advance(kAuditMs);
    r.run();
    REQUIRE(r.sa.answer(r.sa.last(SaMethod::mcm_get_table)->id, {}));
    r.run();
    CHECK(r.logged("SA answering again") == 1);
    CHECK(i->counters().memberships_lost == 1);
    CHECK(r.logged("the SA no longer lists us in the broadcast group") == 1);
    // A light flush, as for a client reregister: nothing to leave, the link stays up.
    CHECK(r.link == std::vector<bool>{true});
    CHECK(r.sa.count(SaMethod::leave, kBcast8001) == 0);
    r.run();
    CHECK(i->state() == IfaceState::probing);
    r.bring_up(i);
    CHECK(r.link == std::vector<bool>{true});
}

TEST_CASE("ctrl unit: allmulticast joins the partition's other IPoIB groups as non-member", "[ctrl][allmulti]") {
    Rig r;
    Interface *i = r.iface(0x8001, true);
    r.bring_up(i);
    r.run();
    SaRequest *list = r.sa.last(SaMethod::mcm_get_table);
    REQUIRE(list);
    CHECK(list->comp_mask == kMcmPkey);
    CHECK(list->mcm.pkey == 0x8001);
    McMemberRecord not_ipoib = bcast_record();
    not_ipoib.mgid = gid("ff12:1234:8001::1");
    REQUIRE(r.sa.answer(list->id, {},
                        {bcast_record(), group_record(kGroupA, bcast_record()), not_ipoib}));
    r.run(2);
    CHECK(r.sa.count(SaMethod::join, kGroupA) == 1);
    CHECK(r.sa.last(SaMethod::join, kGroupA)->join_state() == kNonMember);
    CHECK(r.sa.count(SaMethod::join, not_ipoib.mgid) == 0);
    CHECK(r.sa.count(SaMethod::join, kBcast8001) == 1);  // only the interface's own join
    auto listings = [&] {
        std::size_t n = 0;
        for (auto &q : r.sa.requests)
            n += q.method == SaMethod::mcm_get_table && q.comp_mask == kMcmPkey;
        return n;
    };
    CHECK(listings() == 1);
    r.advance(kAllmultiPollMs - 1);
    r.run();
    CHECK(listings() == 1);
    r.advance(1);
    r.run();
    CHECK(listings() == 2);
}

TEST_CASE("ctrl unit: the model SA brings two interfaces up and back after an SM restart", "[ctrl][audit]") {
    // The fake's auto_mcast mode: a tiny SA answering joins and tables itself.
    Rig r;
    r.sa.auto_mcast = true;
    r.sa.add_group(bcast_record());
    r.sa.add_group(bcast_record(kBcastFfff));
    Interface *def = r.iface(0);
    Interface *p1 = r.iface(0x8001);
    r.run(4);
    REQUIRE(def->up());
    REQUIRE(p1->up());
    p1->join(kGroupA);
    r.run(3);
    CHECK(joined(p1, kGroupA));
    CHECK(r.sa.groups.count(kGroupA.raw));  // created with the broadcast group's parameters
    CHECK(r.sa.groups[kGroupA.raw].qkey == kIpoibQkey);
    // The SM restarts and forgets every member: the next audit rejoins.
    r.sa.members.clear();
    r.advance(kAuditMs);
    r.run(6);
    CHECK(p1->counters().memberships_lost == 1);
    CHECK(def->counters().memberships_lost == 1);
    CHECK(p1->up());
    CHECK(def->up());
    CHECK(joined(p1, kGroupA));
}

// ---------------------------------------------------------------------------
// Paths

TEST_CASE("ctrl unit: request_path resolves through the SA, reports the record, caches it", "[ctrl][path]") {
    Rig r;
    r.iface(0x8001);
    PathRecord p;
    p.dgid = kPeer;
    p.sgid = r.cp.port_gid(1);
    p.pkey = 0xffff;
    p.dlid = 9;
    p.slid = 2;
    p.mtu = 4;
    p.rate = 3;
    p.reversible = true;
    r.sa.add_path(p);
    int calls = 0;
    PathRecord got;
    SaStatus status{-1};
    r.cp.on_path = [&](const Gid &g, std::uint16_t pk, SaStatus st, const PathRecord *rec) {
        ++calls;
        CHECK(g == kPeer);
        CHECK(pk == 0xffff);
        status = st;
        if (rec)
            got = *rec;
    };
    REQUIRE(r.cp.request_path(kPeer, 0xffff));
    r.run();
    REQUIRE(calls == 1);
    CHECK(status.ok());
    CHECK(got.dlid == 9);
    CHECK(got.mtu == 4);
    const SaRequest *q = r.sa.last(SaMethod::path_get, kPeer);
    REQUIRE(q);
    CHECK(q->sgid == r.cp.port_gid(1));
    CHECK(q->pkey == 0xffff);
    CHECK(r.cp.counters().path_requests == 1);
    CHECK(r.cp.counters().path_resolved == 1);

    // Asked again: from the cache, no SA request.
    REQUIRE(r.cp.request_path(kPeer, 0xffff));
    r.run();
    CHECK(calls == 2);
    CHECK(r.sa.count(SaMethod::path_get) == 1);
    CHECK(r.cp.counters().path_cache_hits == 1);
    // A flush invalidates the cache: asked again, resolved again.
    r.hca.event(hca::EventType::lid_change);
    r.run();
    REQUIRE(r.cp.request_path(kPeer, 0xffff));
    r.run();
    CHECK(calls == 3);
    CHECK(r.sa.count(SaMethod::path_get) == 2);

    // Requests for a path already being resolved share one SA query.
    r.sa.auto_paths = false;
    const Gid other = gid("fe80::2:c903:0:303");
    for (int k = 0; k < 3; ++k)
        REQUIRE(r.cp.request_path(other, 0xffff));
    r.run();
    CHECK(r.sa.count(SaMethod::path_get, other) == 1);
    p.dgid = other;
    REQUIRE(r.sa.answer_path(r.sa.last(SaMethod::path_get, other)->id, {}, {p}));
    calls = 0;
    r.cp.on_path = [&](const Gid &, std::uint16_t, SaStatus, const PathRecord *) { ++calls; };
    r.run();
    CHECK(calls == 1);  // today: one on_path per answer, not one per request
    CHECK(r.cp.paths().find(other, 0xffff)->valid);
}

TEST_CASE("ctrl unit: a path the SA cannot resolve is reported with its status, counted", "[ctrl][path]") {
    Rig r;
    std::vector<int> statuses;
    int with_record = 0;
    r.cp.on_path = [&](const Gid &, std::uint16_t, SaStatus st, const PathRecord *rec) {
        statuses.push_back(st.status);
        with_record += rec != nullptr;
    };
    REQUIRE(r.cp.request_path(kPeer, 0xffff));  // not in the table: "no records"
    r.run();
    r.sa.auto_paths = false;
    const Gid other = gid("fe80::2:c903:0:303");
    REQUIRE(r.cp.request_path(other, 0xffff));
    r.run();
    REQUIRE(r.sa.drop(r.sa.last(SaMethod::path_get, other)->id));
    r.run();
    CHECK(statuses == std::vector<int>{kSaStatusNoRecords, -ETIMEDOUT});
    CHECK(with_record == 0);
    CHECK(r.cp.counters().path_failed == 2);
    CHECK(r.cp.paths().find(kPeer, 0xffff)->failures == 1);
    CHECK_FALSE(r.cp.paths().find(kPeer, 0xffff)->valid);
    CHECK(r.logged("not resolved: SA status 0x0300: no records") == 1);
    CHECK(r.logged("not resolved: SA not answering") == 1);
}

TEST_CASE("ctrl unit: the fast-path ring refuses when full, counted, and drains on run_once", "[ctrl][ring]") {
    Rig r;
    r.sa.auto_paths = false;
    for (std::size_t k = 0; k < kRequestRingSize; ++k)
        REQUIRE(r.cp.request_path(kPeer, 0xffff));
    CHECK_FALSE(r.cp.request_path(kPeer, 0xffff));
    CHECK(r.cp.counters().ring_full == 1);
    r.run();
    CHECK(r.cp.counters().path_requests == kRequestRingSize);
    CHECK(r.cp.request_path(kPeer, 0xffff));
}

// ---------------------------------------------------------------------------
// Static management (RoCE): no SA at all

TEST_CASE("ctrl unit: a RoCE port is managed statically: no SA opened, up at once with the configured Q_Key",
          "[ctrl][static]") {
    Rig r(1, false);
    r.hca.port(1).attr.link_layer = hca::LinkLayer::ethernet;
    r.hca.port(1).pkeys = {0xffff};
    r.hca.sync();
    r.open();
    CHECK(r.cp.is_static());
    CHECK(r.sa.opens == 0);
    Interface *i = r.iface(0);
    r.run();
    CHECK(i->up());
    CHECK(r.link == std::vector<bool>{true});
    CHECK(i->broadcast().qkey == kIpoibQkey);
    CHECK(i->broadcast().mtu == static_cast<std::uint8_t>(hca::Mtu::mtu2048));
    PathRecord got;
    r.cp.on_path = [&](const Gid &, std::uint16_t, SaStatus, const PathRecord *rec) { got = *rec; };
    REQUIRE(r.cp.request_path(kPeer, 0xffff));
    r.run();
    CHECK(got.dgid == kPeer);
    CHECK(got.hop_limit == kStaticPathHopLimit);
    CHECK(r.sa.requests.empty());
}
