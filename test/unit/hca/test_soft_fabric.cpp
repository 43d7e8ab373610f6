// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's shared fabric state (lib/hca/src/soft/fabric.*) without
// a managed fabric: process slots. A
// fabric here is only its POSIX shared memory, so several Fabric objects of
// this process (and forked children) stand for several processes.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>

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

} // namespace

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
