// SPDX-License-Identifier: BSD-3-Clause
// Integration tests of lib/ctrl against OpenSM on ibsim. Runs as a client on
// Hca1 of a fabric made by run-in-fabric.sh (3 HCAs; partitions below);
// every membership and path claim is checked with saquery run as a separate
// process, with the SM key where the SA wants it.
//
// Partitions: 0x7fff default and 0x8001 (IPoIB, MTU 2048), 0x8005 (IPoIB, MTU
// 4096: larger than the simulated ports'), 0x8006 (no IPoIB: no broadcast
// group). 0x8009 is not configured at all.
#include <arpa/inet.h>
#include <dirent.h>
#include <infiniband/umad.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "ipoib/ctrl/control_plane.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/mgid.hpp"

using namespace ipoib;
using namespace ipoib::ctrl;
using Clock = std::chrono::steady_clock;

namespace {

std::string sh(const std::string &cmd) {
    std::string out;
    FILE *p = popen(cmd.c_str(), "r");
    if (!p)
        return out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    pclose(p);
    return out;
}

// A diag run as another host of the fabric (same umad2sim preload and socket).
std::string on(const std::string &host, const std::string &cmd) {
    return sh("SIM_HOST=" + host + " timeout 30 " + cmd + " 2>&1");
}

int tool(const std::string &args) {
    const char *t = std::getenv("IPOIB_FABRIC_TOOL");
    return std::system(("env -u LD_PRELOAD " + std::string(t ? t : "false") + " " + args + " >/dev/null 2>&1").c_str());
}

std::string fabric_dir() { return std::getenv("IPOIB_FABRIC_DIR") ? std::getenv("IPOIB_FABRIC_DIR") : ""; }

std::string field(const std::string &text, const std::string &name) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex("\\s" + name + "\\.+(\\S+)")))
        return m[1];
    return "";
}

// Is `gid` a member of `mgid` according to the SA (trusted query)? Returns the JoinState or -1.
int member_state(const std::string &mgid, const std::string &gid) {
    const std::string out = on("Hca2", "saquery --smkey 1 MCMR --mgid " + mgid + " --gid " + gid);
    if (field(out, "PortGid") != gid)
        return -1;
    return static_cast<int>(std::stoul(field(out, "JoinState"), nullptr, 0));
}

struct Logged {
    std::vector<std::string> lines;
    LogFn fn() {
        return [this](LogLevel, const char *topic, const std::string &m) {
            lines.push_back(std::string(topic) + ": " + m);
            std::fprintf(stderr, "  [%s] %s\n", topic, m.c_str());
        };
    }
    bool has(const std::string &s) const {
        for (auto &l : lines)
            if (l.find(s) != std::string::npos)
                return true;
        return false;
    }
};

struct Host {
    hca::OpenResult dev;
    ControlPlane cp;
    Logged log;
    std::string gid;
    explicit Host(const std::string &options = "poll_ms=50") {
        dev = hca::open_device("soft", "", options);
        REQUIRE(dev.ctx);
        CpConfig cfg;
        cfg.sa.timeout_ms = 200;
        cfg.sa.retries = 2;
        cfg.log = log.fn();
        std::string err;
        REQUIRE(cp.open(*dev.ctx, cfg, &err));
        gid = wire::to_string(cp.port_gid(1));
    }
    Interface *iface(std::uint16_t pkey, bool allmulti = false, std::uint32_t audit_ms = 500) {
        IfaceConfig c;
        c.pkey = pkey;
        c.allmulti = allmulti;
        c.allmulti_poll_ms = 300;
        c.audit_ms = audit_ms;
        std::string err;
        Interface *i = cp.add_interface(c, &err);
        INFO(err);
        REQUIRE(i);
        return i;
    }
    bool run_until(const std::function<bool()> &pred, int ms = 5000) {
        const auto end = Clock::now() + std::chrono::milliseconds(ms);
        while (Clock::now() < end) {
            if (pred())
                return true;
            cp.run_once(10);
        }
        return pred();
    }
};

Gid ipv4_group(const Interface *i, const char *addr) {
    unsigned char a[4];
    inet_pton(AF_INET, addr, a);
    return wire::ipv4_mcast_mgid(wire::Bytes(a, 4), i->broadcast().mgid).value;
}

Gid ipv6_group(const Interface *i, const char *addr) {
    unsigned char a[16];
    inet_pton(AF_INET6, addr, a);
    return wire::ipv6_mcast_mgid(wire::Bytes(a, 16), i->broadcast().mgid).value;
}

bool joined(const Interface *i, const Gid &mgid) {
    for (auto &g : i->groups())
        if (g.mgid == mgid)
            return g.joined;
    return false;
}

std::size_t count_dir(const char *path) {
    std::size_t n = 0;
    if (DIR *d = opendir(path)) {
        while (readdir(d))
            ++n;
        closedir(d);
    }
    return n;
}

} // namespace

TEST_CASE("ctrl: the fabric's umad_send check is loaded: a request without a response timeout fails",
          "[ctrl][umad]") {
    // The clients of this fabric preload test/integration/umad_send_check.so
    // (meson: IPOIB_UMAD_SEND_CHECK). Without it, a request sent with
    // timeout 0 (which a real kernel would never answer) would pass here.
    REQUIRE(std::getenv("IPOIB_UMAD_SEND_CHECK"));
    REQUIRE(umad_init() == 0);
    const int port = umad_open_port(nullptr, 0);
    REQUIRE(port >= 0);
    const int agent = umad_register(port, 0x03, 2, 1, nullptr);
    REQUIRE(agent >= 0);
    std::vector<std::uint8_t> buf(umad_size() + 256, 0);
    auto *mad = static_cast<std::uint8_t *>(umad_get_mad(buf.data()));
    mad[0] = 1;     // base version
    mad[1] = 0x03;  // SA class
    mad[2] = 2;     // class version
    mad[3] = 0x01;  // Get
    mad[16] = 0x00, mad[17] = 0x35;  // PathRecord
    umad_set_addr(buf.data(), 1, 1, 0, 0x80010000);
    CHECK(umad_send(port, agent, buf.data(), 256, 0, 0) == -EINVAL);
    umad_unregister(port, agent);
    umad_close_port(port);
}

TEST_CASE("ctrl: paths to every other HCA, as OpenSM reports them", "[ctrl][path]") {
    Host h;
    for (const char *peer : {"Hca2", "Hca3"}) {
        const std::string st = on(peer, "ibstat");
        std::smatch m;
        REQUIRE(std::regex_search(st, m, std::regex("Port GUID: 0x([0-9a-f]+)")));
        const std::uint64_t guid = std::stoull(m[1], nullptr, 16);
        char dgid_text[64];
        std::snprintf(dgid_text, sizeof dgid_text, "fe80::%x:%x", static_cast<unsigned>(guid >> 16),
                      static_cast<unsigned>(guid & 0xffff));
        const Gid dgid = wire::parse_gid_text(dgid_text).value;
        const std::string sa = on("Hca2", "saquery --sgid-to-dgid " + h.gid + "-" + dgid_text);
        INFO(peer << " " << dgid_text << "\n" << sa);

        bool done = false;
        SaStatus status;
        PathRecord rec;
        h.cp.on_path = [&](const Gid &g, std::uint16_t pk, SaStatus s, const PathRecord *r) {
            if (g == dgid && pk == 0xffff) {
                done = true;
                status = s;
                if (r)
                    rec = *r;
            }
        };
        REQUIRE(h.cp.request_path(dgid, 0xffff));
        REQUIRE(h.run_until([&] { return done; }));
        REQUIRE(status.ok());
        CHECK(rec.dgid == dgid);
        CHECK(std::to_string(rec.dlid) == field(sa, "dlid"));
        CHECK(std::to_string(rec.slid) == field(sa, "slid"));
        CHECK(rec.mtu == (std::stoul(field(sa, "mtu"), nullptr, 0) & 0x3f));
        CHECK(rec.rate == (std::stoul(field(sa, "rate"), nullptr, 0) & 0x3f));
        CHECK(rec.pkey == 0xffff);
        CHECK(rec.reversible);
        // Asked again: answered from the cache, no SA round trip.
        done = false;
        const auto sent = h.cp.sa().counters().sent;
        h.cp.request_path(dgid, 0xffff);
        REQUIRE(h.run_until([&] { return done; }, 1000));
        CHECK(h.cp.sa().counters().sent == sent);
        CHECK(h.cp.counters().path_cache_hits >= 1);
    }
    // A GID nobody has: a clear failure, counted.
    bool done = false;
    SaStatus status;
    h.cp.on_path = [&](const Gid &, std::uint16_t, SaStatus s, const PathRecord *) { done = true, status = s; };
    h.cp.request_path(wire::parse_gid_text("fe80::dead:beef").value, 0xffff);
    REQUIRE(h.run_until([&] { return done; }));
    CHECK_FALSE(status.ok());
    CHECK(h.cp.counters().path_failed == 1);
    INFO(status.message());
    CHECK(status.message().find("SA status") != std::string::npos);
}

TEST_CASE("ctrl: broadcast groups of two partitions, IP groups, send-only, leave", "[ctrl][mcast]") {
    Host h;
    Interface *def = h.iface(0);  // index 0: the default partition
    Interface *p1 = h.iface(0x8001);
    std::vector<std::string> link;
    def->on_link = [&](bool up) { link.push_back(up ? "up" : "down"); };
    REQUIRE(h.run_until([&] { return def->up() && p1->up(); }));
    CHECK(link == std::vector<std::string>{"up"});
    CHECK(def->pkey() == 0xffff);
    CHECK(p1->pkey() == 0x8001);
    for (Interface *i : {def, p1}) {
        CHECK(i->broadcast().qkey == 0x0b1b);
        CHECK(i->broadcast().mtu == 4);
        CHECK(i->broadcast().mlid >= 0xc000);
        CHECK(member_state(wire::to_string(i->broadcast().mgid), h.gid) == kFullMember);
    }
    CHECK(wire::to_string(def->broadcast().mgid) == "ff12:401b:ffff::ffff:ffff");
    CHECK(wire::to_string(p1->broadcast().mgid) == "ff12:401b:8001::ffff:ffff");

    // IPv4 and IPv6 groups, created with the broadcast group's parameters.
    const Gid g4 = ipv4_group(p1, "224.1.2.3"), g6 = ipv6_group(p1, "ff02::1:ff00:b");
    CHECK(wire::to_string(g4) == "ff12:401b:8001::1:203");
    CHECK(wire::to_string(g6) == "ff12:601b:8001::1:ff00:b");
    std::vector<std::string> attached;
    p1->on_group = [&](const Gid &m, const McMemberRecord &r, bool j) {
        attached.push_back((j ? "+" : "-") + wire::to_string(m));
        if (j)
            CHECK(r.qkey == 0x0b1b);
    };
    p1->join(g4);
    p1->join(g6);
    REQUIRE(h.run_until([&] { return joined(p1, g4) && joined(p1, g6); }));
    CHECK(member_state(wire::to_string(g4), h.gid) == kFullMember);
    CHECK(member_state(wire::to_string(g6), h.gid) == kFullMember);
    const std::string rec = on("Hca2", "saquery MCMR --mgid " + wire::to_string(g4));
    CHECK(field(rec, "qkey") == "0xb1b");

    // Send-only: asked for by the fast path through the ring.
    const Gid so = ipv4_group(p1, "239.1.1.1");
    REQUIRE(h.cp.request_sendonly(p1, so));
    REQUIRE(h.run_until([&] { return joined(p1, so); }));
    CHECK(member_state(wire::to_string(so), h.gid) == kSendOnlyFullMember);

    // Leave removes the membership.
    p1->leave(g4);
    REQUIRE(h.run_until([&] { return member_state(wire::to_string(g4), h.gid) == -1; }));
    CHECK(std::find(attached.begin(), attached.end(), "-" + wire::to_string(g4)) != attached.end());
    CHECK(member_state(wire::to_string(g6), h.gid) == kFullMember);

    // Stop leaves everything, the broadcast groups included.
    h.cp.stop();
    CHECK(member_state(wire::to_string(g6), h.gid) == -1);
    CHECK(member_state("ff12:401b:8001::ffff:ffff", h.gid) == -1);
    CHECK(member_state("ff12:401b:ffff::ffff:ffff", h.gid) == -1);
}

TEST_CASE("ctrl: failure cases keep the interface down, with a message and a counter", "[ctrl][failures]") {
    Host h;
    Interface *absent = h.iface(0x8006);
    Interface *big = h.iface(0x8005);
    Interface *missing = h.iface(0x8009);
    h.run_until([&] {
        return absent->counters().broadcast_absent && big->counters().broadcast_mtu_too_big &&
               missing->counters().pkey_missing;
    });
    CHECK(absent->counters().broadcast_absent >= 1);
    CHECK(h.log.has("IPoIB broadcast group ff12:401b:8006::ffff:ffff absent"));
    CHECK(big->counters().broadcast_mtu_too_big >= 1);
    CHECK(h.log.has("IPoIB broadcast group MTU 4096 greater than port's maximum MTU 2048"));
    CHECK(missing->counters().pkey_missing == 1);
    CHECK(h.log.has("P_Key 0x8009 is not in port 1's P_Key table"));
    for (Interface *i : {absent, big, missing})
        CHECK_FALSE(i->up());
    // Each message once, not per retry.
    int n = 0;
    for (auto &l : h.log.lines)
        n += l.find("8006::ffff:ffff absent") != std::string::npos;
    CHECK(n == 1);
}

TEST_CASE("ctrl: port down and up in ibsim: down, then rejoined", "[ctrl][port]") {
    Host h;
    Interface *i = h.iface(0x8001);
    REQUIRE(h.run_until([&] { return i->up(); }));
    const Gid g = ipv4_group(i, "224.5.6.7");
    i->join(g);
    REQUIRE(h.run_until([&] { return joined(i, g); }));

    REQUIRE(tool("port " + fabric_dir() + " Hca1 1 down --wait 5") == 0);
    REQUIRE(h.run_until([&] { return i->state() == IfaceState::port_down && i->counters().port_not_active; }));
    CHECK(h.log.has("port 1 is not active"));
    REQUIRE(tool("port " + fabric_dir() + " Hca1 1 up --wait 15") == 0);
    CHECK_FALSE(i->up());  // nothing runs until the control thread polls again
    const auto t0 = Clock::now();
    REQUIRE(h.run_until([&] { return i->up() && joined(i, g); }, 10000));
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "  rejoined %.4f s after the relink was seen\n", s);
    CHECK(h.log.has("recovered"));
    CHECK(member_state("ff12:401b:8001::ffff:ffff", h.gid) == kFullMember);
    CHECK(member_state(wire::to_string(g), h.gid) == kFullMember);
}

TEST_CASE("ctrl: OpenSM stopped and restarted: SA silence reported, memberships restored", "[ctrl][sm]") {
    Host h;
    Interface *i = h.iface(0x8001, false, 300);
    REQUIRE(h.run_until([&] { return i->up(); }));
    const Gid g = ipv4_group(i, "224.7.7.7");
    i->join(g);
    REQUIRE(h.run_until([&] { return joined(i, g); }));

    REQUIRE(tool("sm " + fabric_dir() + " stop") == 0);
    // A new interface cannot come up while the SA is silent.
    Interface *late = h.iface(0);
    REQUIRE(h.run_until([&] { return late->counters().sa_timeouts > 0 && i->counters().sa_timeouts > 0; }, 10000));
    CHECK_FALSE(late->up());
    CHECK(h.log.has("SA not answering"));

    REQUIRE(tool("sm " + fabric_dir() + " start") == 0);
    const auto t0 = Clock::now();
    REQUIRE(h.run_until(
        [&] {
            return late->up() && i->up() && joined(i, g) && i->counters().memberships_lost > 0;
        },
        20000));
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "  rejoined %.2f s after OpenSM restarted\n", s);
    CHECK(s < 10.0);
    CHECK(member_state("ff12:401b:8001::ffff:ffff", h.gid) == kFullMember);
    CHECK(member_state(wire::to_string(g), h.gid) == kFullMember);
    CHECK(member_state("ff12:401b:ffff::ffff:ffff", h.gid) == kFullMember);
}

TEST_CASE("ctrl: allmulticast joins the partition's other IPoIB groups", "[ctrl][allmulti]") {
    // Another host creates two groups on p1.
    const char *helper_bin = std::getenv("CTRL_HELPER");
    REQUIRE(helper_bin);
    // Its output goes to stderr: stdout is this test's TAP stream.
    FILE *helper = popen(("SIM_HOST=Hca2 exec " + std::string(helper_bin) + " 0x8001 224.20.0.1 224.20.0.2 1>&2").c_str(), "w");
    REQUIRE(helper);
    Host h;
    Interface *i = h.iface(0x8001, true);
    Gid a, b;
    REQUIRE(h.run_until([&] {
        if (!i->up())
            return false;
        a = ipv4_group(i, "224.20.0.1");
        b = ipv4_group(i, "224.20.0.2");
        return joined(i, a) && joined(i, b);
    }, 10000));
    CHECK(member_state(wire::to_string(a), h.gid) == kNonMember);
    CHECK(member_state(wire::to_string(b), h.gid) == kNonMember);
    h.cp.stop();
    pclose(helper);
}

TEST_CASE("ctrl: 1000 start/stop cycles leak no thread, fd or memory", "[ctrl][leak]") {
    auto dev = hca::open_device("soft", "", "");
    REQUIRE(dev.ctx);
    auto cycle = [&](bool bring_up) {
        ControlPlane cp;
        CpConfig cfg;
        cfg.log = [](LogLevel, const char *, const std::string &) {};
        std::string err;
        REQUIRE(cp.open(*dev.ctx, cfg, &err));
        IfaceConfig ic;
        ic.pkey = 0x8001;
        Interface *i = cp.add_interface(ic, &err);
        REQUIRE(i);
        if (bring_up)
            for (int n = 0; n < 500 && !i->up(); ++n)
                cp.run_once(5);
        if (bring_up)
            REQUIRE(i->up());
        cp.stop();
    };
    for (int k = 0; k < 20; ++k)  // warm-up: caches, first mappings
        cycle(k % 10 == 0);
    const std::size_t fds = count_dir("/proc/self/fd"), threads = count_dir("/proc/self/task");
    const std::size_t heap = mallinfo2().uordblks;
    const auto t0 = Clock::now();
    for (int k = 0; k < 1000; ++k)
        cycle(k % 10 == 0);  // every tenth cycle also joins and leaves the broadcast group
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "  1000 cycles in %.2f s\n", s);
    CHECK(count_dir("/proc/self/fd") == fds);
    CHECK(count_dir("/proc/self/task") == threads);
    const std::size_t heap_after = mallinfo2().uordblks;
    INFO("heap in use before " << heap << ", after " << heap_after);
    CHECK(heap_after <= heap + 64 * 1024);
    // ibsim still has client slots: a fresh attach works.
    CHECK(on("Hca3", "ibstat").find("Active") != std::string::npos);
}
