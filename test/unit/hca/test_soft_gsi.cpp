// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's GSI mailboxes (lib/hca/src/soft/gsi.*): CM MADs carried
// from one port to another through the fabric's shared memory. No managed
// fabric: two Fabric attachments of this process stand for two processes,
// and the test writes the two port entries an SMP read would publish.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ipoib/hca/ib_packet.hpp"
#include "soft/capture.hpp"
#include "soft/fabric.hpp"
#include "soft/gsi.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::soft;

namespace {

struct GsiFabric {
    std::string name;
    std::unique_ptr<Fabric> a, b;  // two "processes"
    GsiFabric() {
        static int n = 0;
        name = "unit-gsi-" + std::to_string(getpid()) + "-" + std::to_string(++n);
        a = std::make_unique<Fabric>();
        b = std::make_unique<Fabric>();
        std::string err;
        INFO(err);
        REQUIRE(a->attach(name, &err));
        REQUIRE(b->attach(name, &err));
        port(0, 0x100003, 3);
        port(1, 0x100005, 5);
    }
    ~GsiFabric() {
        a.reset();
        b.reset();
        shm_unlink(("/ipoibsoft." + name).c_str());
    }
    // What publishing a port's SMP read writes: GUID, LID, state, P_Keys.
    void port(std::uint32_t slot, std::uint64_t guid, std::uint16_t lid) {
        PortEntry &p = a->shm()->ports[slot];
        p.guid.store(guid);
        p.subnet_prefix.store(0xfe80000000000000ull);
        p.pkeys[0].store(0xffff);
        p.lid.store(lid);
        p.active_mtu.store(static_cast<std::uint8_t>(Mtu::mtu2048));
        p.state.store(static_cast<std::uint8_t>(PortState::active));
    }
};

std::vector<std::uint8_t> mad(std::uint32_t n) {
    std::vector<std::uint8_t> m(cm::kMadSize);
    for (std::size_t i = 0; i < m.size(); ++i)
        m[i] = static_cast<std::uint8_t>(n * 7 + i);
    m[0] = 1, m[1] = 0x07, m[2] = 2, m[3] = 0x03;
    std::memcpy(m.data() + 8, &n, 4);
    return m;
}

} // namespace

TEST_CASE("soft gsi: a MAD sent from one port's transport is received by the other's, with its source") {
    GsiFabric f;
    auto ta = make_gsi_transport(*f.a, 0, nullptr);
    auto tb = make_gsi_transport(*f.b, 1, nullptr);
    REQUIRE(ta);
    REQUIRE(tb);
    cm::MadAddr to;
    to.lid = 5;
    for (std::uint32_t i = 0; i < 3; ++i)
        REQUIRE(ta->send(to, mad(i).data()) == 0);
    for (std::uint32_t i = 0; i < 3; ++i) {
        std::vector<std::uint8_t> got(cm::kMadSize);
        cm::MadAddr from;
        REQUIRE(tb->recv(got.data(), &from) == static_cast<int>(cm::kMadSize));
        CHECK(got == mad(i));  // in order, byte for byte
        CHECK(from.lid == 3);
        CHECK(from.qpn == 1);
        CHECK(from.pkey_index == 0);
        CHECK(from.gid.raw[0] == 0xfe);
        CHECK(from.gid.raw[15] == 0x03);  // GUID 0x100003
    }
    std::vector<std::uint8_t> got(cm::kMadSize);
    cm::MadAddr from;
    CHECK(tb->recv(got.data(), &from) == 0);  // nothing more
    CHECK(ta->recv(got.data(), &from) == 0);  // nothing for the sender's own port
}

TEST_CASE("soft gsi: a full mailbox refuses (counted), and order holds across many laps") {
    GsiFabric f;
    auto ta = make_gsi_transport(*f.a, 0, nullptr);
    auto tb = make_gsi_transport(*f.b, 1, nullptr);
    cm::MadAddr to;
    to.lid = 5;
    for (std::uint32_t i = 0; i < kGsiMailboxDepth; ++i)
        REQUIRE(ta->send(to, mad(i).data()) == 0);
    CHECK(ta->send(to, mad(999).data()) == -ENOBUFS);
    CHECK(f.a->shm()->gsi[1].drops.load() == 1);
    std::vector<std::uint8_t> got(cm::kMadSize);
    cm::MadAddr from;
    REQUIRE(tb->recv(got.data(), &from) == static_cast<int>(cm::kMadSize));
    CHECK(got == mad(0));
    CHECK(ta->send(to, mad(kGsiMailboxDepth).data()) == 0);  // room for one again
    // 1000 more in bursts of 10, from two senders' threads of one port each.
    std::uint32_t next_send = kGsiMailboxDepth + 1, next_recv = 1, wrong = 0;
    while (next_recv < kGsiMailboxDepth + 1001) {
        for (int k = 0; k < 10 && next_send < kGsiMailboxDepth + 1001; ++k)
            if (ta->send(to, mad(next_send).data()) == 0)
                ++next_send;
        while (tb->recv(got.data(), &from) > 0)
            wrong += got != mad(next_recv++);
    }
    CHECK(wrong == 0);
}

TEST_CASE("soft gsi: concurrent senders into one mailbox lose nothing and mix nothing") {
    GsiFabric f;
    auto tb = make_gsi_transport(*f.b, 1, nullptr);
    constexpr std::uint32_t kPerSender = 2000;
    std::vector<std::thread> ts;
    for (std::uint32_t s = 0; s < 2; ++s)
        ts.emplace_back([&, s] {
            Fabric mine;  // a third and fourth "process"
            std::string err;
            if (!mine.attach(f.name, &err))
                return;
            auto t = make_gsi_transport(mine, 0, nullptr);
            cm::MadAddr to;
            to.lid = 5;
            for (std::uint32_t i = 0; i < kPerSender;) {
                if (t->send(to, mad(s << 16 | i).data()) == 0)
                    ++i;
                else
                    std::this_thread::yield();
            }
        });
    std::uint32_t next[2] = {0, 0}, bad = 0, got_n = 0;
    std::vector<std::uint8_t> got(cm::kMadSize);
    cm::MadAddr from;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got_n < 2 * kPerSender && std::chrono::steady_clock::now() < deadline) {
        if (tb->recv(got.data(), &from) <= 0) {
            std::this_thread::yield();
            continue;
        }
        std::uint32_t id;
        std::memcpy(&id, got.data() + 8, 4);
        const std::uint32_t s = id >> 16;
        bad += s > 1 || got != mad(id) || (id & 0xffff) != next[s & 1];  // per sender in order, intact
        ++next[s & 1];
        ++got_n;
    }
    for (auto &t : ts)
        t.join();
    CHECK(got_n == 2 * kPerSender);
    CHECK(bad == 0);
}

TEST_CASE("soft gsi: no port with the LID, a port down, garbage in the mailbox") {
    GsiFabric f;
    auto ta = make_gsi_transport(*f.a, 0, nullptr);
    auto tb = make_gsi_transport(*f.b, 1, nullptr);
    cm::MadAddr to;
    to.lid = 77;
    CHECK(ta->send(to, mad(0).data()) == -EHOSTUNREACH);
    to.lid = 5;
    f.a->shm()->ports[1].state.store(static_cast<std::uint8_t>(PortState::down));
    CHECK(ta->send(to, mad(0).data()) == -EHOSTUNREACH);
    f.a->shm()->ports[1].state.store(static_cast<std::uint8_t>(PortState::active));
    f.a->shm()->ports[0].state.store(static_cast<std::uint8_t>(PortState::down));
    CHECK(ta->send(to, mad(0).data()) == -ENETDOWN);
    f.a->shm()->ports[0].state.store(static_cast<std::uint8_t>(PortState::active));
    // A buggy peer's writes: the cells' stamps and the indexes. Calls return, bounded.
    GsiMailbox &mb = f.a->shm()->gsi[1];
    for (auto &c : mb.cells)
        c.seq.store(0xdeadbeefdeadbeefull);
    mb.put.store(12345);
    mb.take.store(~0ull - 3);
    std::vector<std::uint8_t> got(cm::kMadSize);
    cm::MadAddr from;
    CHECK(tb->recv(got.data(), &from) == 0);
    CHECK(ta->send(to, mad(0).data()) < 0);
    // Stamps that claim a MAD with a source index out of range: bounded when passed on.
    for (std::uint32_t i = 0; i < kGsiMailboxDepth; ++i)
        mb.cells[i].seq.store(2 * (i / kGsiMailboxDepth));  // empty for lap 0
    mb.put.store(0);
    mb.take.store(0);
    REQUIRE(ta->send(to, mad(1).data()) == 0);
    mb.cells[0].pkey_index = 5000;
    mb.cells[0].src_qp = 0xffffffff;
    REQUIRE(tb->recv(got.data(), &from) == static_cast<int>(cm::kMadSize));
    CHECK(from.pkey_index == 0);
    CHECK(from.qpn == 0xffffff);
}

TEST_CASE("soft gsi: a MAD sent is captured as a UD SEND ONLY to QP1 with the GSI Q_Key") {
    GsiFabric f;
    char path[] = "/tmp/gsi-capture-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    unlink(path);  // Capture creates it
    Capture cap;
    std::string err;
    REQUIRE(cap.open(path, &err));
    auto ta = make_gsi_transport(*f.a, 0, &cap);
    cm::MadAddr to;
    to.lid = 5;
    const auto m = mad(42);
    REQUIRE(ta->send(to, m.data()) == 0);
    std::ifstream in(path, std::ios::binary);
    const std::vector<std::uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    unlink(path);
    const std::size_t len = kLrhLen + kBthLen + kDethLen + cm::kMadSize + kIcrcLen + kVcrcLen;
    REQUIRE(file.size() == 24 + 16 + len);
    const std::uint8_t *p = file.data() + 40;
    CHECK((p[2] << 8 | p[3]) == 5);   // DLID
    CHECK((p[6] << 8 | p[7]) == 3);   // SLID
    CHECK(p[8] == kOpUdSendOnly);
    CHECK((p[10] << 8 | p[11]) == 0xffff);  // BTH P_Key (table index 0)
    CHECK((p[13] << 16 | p[14] << 8 | p[15]) == 1);  // BTH destination QP1
    CHECK((std::uint32_t{p[20]} << 24 | p[21] << 16 | p[22] << 8 | p[23]) == cm::kGsiQkey);
    CHECK((p[25] << 16 | p[26] << 8 | p[27]) == 1);  // source QP1
    CHECK(std::memcmp(p + 28, m.data(), cm::kMadSize) == 0);
    CHECK(ib_icrc({p, len - kIcrcLen - kVcrcLen}) ==
          (std::uint32_t{p[len - 6]} | p[len - 5] << 8 | p[len - 4] << 16 | std::uint32_t{p[len - 3]} << 24));
}
