// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's shared fabric state (lib/hca/src/soft/fabric.*) without
// a managed fabric: process slots, segments, the multicast group table. A
// fabric here is only its POSIX shared memory, so several Fabric objects of
// this process (and forked children) stand for several processes.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "soft/fabric.hpp"
#include "soft/soft_testing.hpp"

using namespace ipoib::hca::soft;

namespace {

// A fabric name of its own, and nothing of it left in /dev/shm afterwards.
struct TestFabric {
    std::string name;
    TestFabric() {
        static int n = 0;
        name = "unit-" + std::to_string(getpid()) + "-" + std::to_string(++n);
    }
    ~TestFabric() {
        for (const auto &f : files())
            shm_unlink(("/" + f).c_str());
    }
    // Its objects in /dev/shm (the fabric's and the segments).
    std::set<std::string> files() const {
        std::set<std::string> out;
        if (DIR *d = opendir("/dev/shm")) {
            const std::string prefix = "ipoibsoft." + name;
            while (dirent *e = readdir(d))
                if (std::string(e->d_name) == prefix || std::string(e->d_name).rfind(prefix + ".", 0) == 0)
                    out.insert(e->d_name);
            closedir(d);
        }
        return out;
    }
    std::unique_ptr<Fabric> attach() const {
        auto f = std::make_unique<Fabric>();
        std::string err;
        INFO(err);
        REQUIRE(f->attach(name, &err));
        return f;
    }
};

std::array<std::uint8_t, 16> mgid(std::uint32_t i) {
    std::array<std::uint8_t, 16> g{0xff, 0x12, 0x40, 0x1b};
    std::memcpy(g.data() + 12, &i, 4);
    return g;
}

// Live groups of the table holding this MGID.
int entries_of(const Fabric &f, const std::array<std::uint8_t, 16> &g) {
    int n = 0;
    for (const auto &e : f.shm()->groups)
        n += e.state.load() == kGroupLive && std::memcmp(e.mgid, g.data(), 16) == 0;
    return n;
}

} // namespace

TEST_CASE("soft fabric: many processes attaching one new MGID at once make one group") {
    TestFabric tf;
    constexpr int kThreads = 8, kRounds = 40;
    set_group_create_pause_us(500);  // widen the window between looking up and creating
    std::vector<std::unique_ptr<Fabric>> fs;
    for (int i = 0; i < kThreads; ++i)
        fs.push_back(tf.attach());
    int duplicated = 0, failed = 0;
    for (int round = 0; round < kRounds; ++round) {
        const auto g = mgid(1000 + static_cast<std::uint32_t>(round));
        std::barrier sync(kThreads);
        std::atomic<int> errors{0};
        std::vector<std::thread> ts;
        for (int i = 0; i < kThreads; ++i)
            ts.emplace_back([&, i] {
                std::string err;
                sync.arrive_and_wait();
                if (fs[static_cast<std::size_t>(i)]->group_attach(g.data(), 0xc001, static_cast<std::uint32_t>(i), &err))
                    ++errors;
            });
        for (auto &th : ts)
            th.join();
        duplicated += entries_of(*fs[0], g) > 1;
        failed += errors.load();
        std::string err;
        for (int i = 0; i < kThreads; ++i)
            fs[static_cast<std::size_t>(i)]->group_detach(g.data(), static_cast<std::uint32_t>(i), &err);
    }
    set_group_create_pause_us(0);
    INFO(kRounds << " rounds of " << kThreads << " concurrent attaches");
    CHECK(failed == 0);
    CHECK(duplicated == 0);
}

TEST_CASE("soft fabric: 1000 distinct MGIDs attached and detached one after the other") {
    TestFabric tf;
    auto f = tf.attach();
    int first_failure = -1;
    std::string err;
    for (std::uint32_t i = 0; i < 1000 && first_failure < 0; ++i) {
        const auto g = mgid(i);
        if (f->group_attach(g.data(), static_cast<std::uint16_t>(0xc000 + i), 3, &err) != 0 ||
            f->group_detach(g.data(), 3, &err) != 0)
            first_failure = static_cast<int>(i);
    }
    INFO(err);
    CHECK(first_failure == -1);
    int live = 0;
    for (const auto &e : f->shm()->groups)
        live += e.state.load() == kGroupLive;
    CHECK(live == 0);  // no member, no group
}

TEST_CASE("soft fabric: a group's MLID changed by the SM: re-attach, and members follow") {
    TestFabric tf;
    auto f = tf.attach();
    const auto g = mgid(7);
    std::string err;
    REQUIRE(f->group_attach(g.data(), 0xc010, 1, &err) == 0);
    REQUIRE(f->group_detach(g.data(), 1, &err) == 0);
    INFO(err);
    CHECK(f->group_attach(g.data(), 0xc011, 1, &err) == 0);  // the last member left and came back
    // Another member joins with the MLID the SM gives now: one group, both members, the new MLID.
    CHECK(f->group_attach(g.data(), 0xc012, 2, &err) == 0);
    CHECK(entries_of(*f, g) == 1);
    for (const auto &e : f->shm()->groups)
        if (e.state.load() == kGroupLive && std::memcmp(e.mgid, g.data(), 16) == 0) {
            CHECK(e.mlid.load() == 0xc012);
            CHECK(e.members[0].load() == 0b110);
        }
    CHECK(f->group_detach(g.data(), 3, &err) == -ENOENT);  // not a member
}

TEST_CASE("soft fabric: a segment allocated again is never served from a stale mapping") {
    TestFabric tf;
    auto a = tf.attach(), b = tf.attach();
    std::string err;
    auto *p1 = static_cast<std::uint8_t *>(a->alloc_segment(8192, &err));
    REQUIRE(p1);
    std::uint32_t key1 = 0, key2 = 0, size = 0;
    std::uint8_t *base = nullptr;
    REQUIRE(a->find_local(p1, 8192, &key1, &base));
    std::uint8_t *via_b = b->segment_base(key1, &size);  // the peer maps it (first contact)
    REQUIRE(via_b);
    std::memcpy(via_b + 100, "one", 4);
    CHECK(std::memcmp(p1 + 100, "one", 4) == 0);

    REQUIRE(a->free_segment(p1));
    auto *p2 = static_cast<std::uint8_t *>(a->alloc_segment(8192, &err));
    REQUIRE(p2);
    REQUIRE(a->find_local(p2, 8192, &key2, &base));
    INFO("key before " << key1 << ", after " << key2);
    via_b = b->segment_base(key2, &size);
    REQUIRE(via_b);
    std::memcpy(via_b + 100, "two", 4);
    CHECK(std::memcmp(p2 + 100, "two", 4) == 0);  // the peer wrote into the new segment
    if (key1 != key2)
        CHECK(b->segment_base(key1, &size) == nullptr);  // the old key reaches nothing
}

TEST_CASE("soft fabric: a crashed process's segments are removed by the next process that attaches") {
    TestFabric tf;
    auto keep = tf.attach();  // the fabric stays
    const std::set<std::string> before = tf.files();
    const pid_t child = fork();
    if (child == 0) {
        Fabric f;
        std::string err;
        const bool ok = f.attach(tf.name, &err) && f.alloc_segment(4096, &err) && f.alloc_segment(4096, &err);
        _exit(ok ? 0 : 1);  // no destructors: as if it crashed
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    std::set<std::string> left;
    for (const auto &f : tf.files())
        if (!before.count(f))
            left.insert(f);
    REQUIRE(left.size() == 2);  // the crashed child's two segments
    auto next = tf.attach();
    for (const auto &f : tf.files())
        CHECK(!left.count(f));
}

TEST_CASE("soft fabric: a process still attaching is not judged dead, nor its slot given away") {
    TestFabric tf;
    auto keep = tf.attach();
    tf.attach().reset();  // a process came and went: its slot holds an old start time
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t child = fork();
    if (child == 0) {
        set_attach_pause_ms(600);  // claims a slot, then pauses before saying who it is
        Fabric f;
        std::string err;
        std::uint32_t proc = f.attach(tf.name, &err) ? f.proc() : 999;
        (void)!write(fds[1], &proc, sizeof proc);
        usleep(200 * 1000);
        _exit(0);
    }
    usleep(200 * 1000);  // the child is in its pause
    auto other = tf.attach();  // collects the dead (the child must not be one) and takes a slot
    std::uint32_t child_proc = 999;
    REQUIRE(read(fds[0], &child_proc, sizeof child_proc) == static_cast<ssize_t>(sizeof child_proc));
    int status = 0;
    waitpid(child, &status, 0);
    close(fds[0]);
    close(fds[1]);
    INFO("child in slot " << child_proc << ", the process started meanwhile in " << other->proc());
    CHECK(child_proc != 999);
    CHECK(child_proc != other->proc());
}
