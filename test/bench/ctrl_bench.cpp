// SPDX-License-Identifier: BSD-3-Clause
// ctrl-bench: SA PathRecord resolutions/s and MCMemberRecord joins/s against
// the fabric's SA (OpenSM), 16 requests outstanding. Run as a client on Hca1
// of a fabric with at least 2 HCAs (ctrl-bench.sh does that).
#include <chrono>
#include <cstdio>
#include <string>

#include "ipoib/ctrl/control_plane.hpp"
#include "ipoib/wire/hwaddr.hpp"

using namespace ipoib;
using namespace ipoib::ctrl;
using Clock = std::chrono::steady_clock;

int main(int argc, char **argv) {
    const int n_paths = argc > 1 ? std::atoi(argv[1]) : 5000;
    const int n_joins = argc > 2 ? std::atoi(argv[2]) : 1000;
    constexpr int kWindow = 16;
    auto dev = hca::open_device("soft", "", "");
    if (!dev.ctx)
        return std::fprintf(stderr, "ctrl-bench: %s\n", dev.error.c_str()), 1;
    SaClient sa;
    std::string err;
    SaConfig cfg;
    if (!sa.open(cfg, &err))
        return std::fprintf(stderr, "ctrl-bench: %s\n", err.c_str()), 1;
    hca::PortAttr pa;
    dev.ctx->query_port(1, &pa);
    sa.set_sm(pa.sm_lid, pa.sm_sl);
    Gid sgid;
    dev.ctx->query_gid(1, 0, &sgid);
    Gid dgid = sgid;
    dgid.raw[15] += 2;  // Hca2's port GUID follows Hca1's by two in ibsim's numbering

    int sent = 0, done = 0, failed = 0;
    auto t0 = Clock::now();
    while (done < n_paths) {
        while (sent < n_paths && sent - done < kWindow) {
            sa.query_path(sgid, dgid, 0xffff, [&](SaStatus st, const std::vector<PathRecord> &) {
                ++done;
                failed += !st.ok();
            });
            ++sent;
        }
        sa.poll(100);
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("path resolutions: %d in %.3f s: %.0f/s (%d failed)\n", n_paths, s, n_paths / s, failed);

    Gid bcast = wire::parse_gid_text("ff12:401b:ffff::ffff:ffff").value;
    McMemberRecord b{};
    b.mgid = bcast;
    b.port_gid = sgid;
    b.join_state = kFullMember;
    McMemberRecord params{};
    bool ok = false;
    sa.join(b, kMcmMgid | kMcmPortGid, [&](SaStatus st, const std::vector<McMemberRecord> &r) {
        ok = st.ok() && !r.empty();
        if (ok)
            params = r[0];
    });
    while (sa.outstanding())
        sa.poll(100);
    if (!ok)
        return std::fprintf(stderr, "ctrl-bench: broadcast join failed\n"), 1;

    auto group = [&](int k) {
        McMemberRecord r = params;
        r.mgid = wire::parse_gid_text("ff12:401b:ffff::2:0").value;
        r.mgid.raw[14] = static_cast<std::uint8_t>(k >> 8);
        r.mgid.raw[15] = static_cast<std::uint8_t>(k);
        r.port_gid = sgid;
        r.mtu_selector = r.rate_selector = 2;
        r.join_state = kFullMember;
        return r;
    };
    const std::uint64_t mask = kMcmMgid | kMcmPortGid | kMcmQkey | kMcmMtuSel | kMcmMtu | kMcmTclass | kMcmPkey |
                               kMcmRateSel | kMcmRate | kMcmSl | kMcmFlowLabel | kMcmHopLimit;
    for (const char *what : {"joins", "leaves"}) {
        const bool join = what[0] == 'j';
        sent = done = failed = 0;
        t0 = Clock::now();
        while (done < n_joins) {
            while (sent < n_joins && sent - done < kWindow) {
                auto cb = [&](SaStatus st, const std::vector<McMemberRecord> &) {
                    ++done;
                    failed += !st.ok();
                };
                if (join)
                    sa.join(group(sent), mask, cb);
                else
                    sa.leave(group(sent), kMcmMgid | kMcmPortGid, cb);
                ++sent;
            }
            sa.poll(100);
        }
        s = std::chrono::duration<double>(Clock::now() - t0).count();
        std::printf("multicast %s (new groups): %d in %.3f s: %.0f/s (%d failed)\n", what, n_joins, s, n_joins / s,
                    failed);
    }
    sa.leave(b, kMcmMgid | kMcmPortGid, [](SaStatus, const std::vector<McMemberRecord> &) {});
    while (sa.outstanding())
        sa.poll(100);
    return 0;
}
