// SPDX-License-Identifier: BSD-3-Clause
// ctrl-helper: another host for the control-plane tests. Joins the given
// IPv4 groups on P_Key PKEY (full member) and stays until stdin closes.
//   ctrl-helper PKEY GROUP...     (as a umad2sim client, SIM_HOST set)
#include <arpa/inet.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "ipoib/ctrl/control_plane.hpp"
#include "ipoib/wire/mgid.hpp"

int main(int argc, char **argv) {
    using namespace ipoib;
    if (argc < 3)
        return 2;
    auto o = hca::open_device("soft", "", "");
    if (!o.ctx) {
        std::fprintf(stderr, "ctrl-helper: %s\n", o.error.c_str());
        return 1;
    }
    ctrl::ControlPlane cp;
    std::string err;
    ctrl::CpConfig cfg;
    if (!cp.open(*o.ctx, cfg, &err))
        return std::fprintf(stderr, "ctrl-helper: %s\n", err.c_str()), 1;
    ctrl::IfaceConfig ic;
    ic.pkey = static_cast<std::uint16_t>(std::strtoul(argv[1], nullptr, 0));
    auto *i = cp.add_interface(ic, &err);
    if (!i)
        return std::fprintf(stderr, "ctrl-helper: %s\n", err.c_str()), 1;
    for (int n = 0; n < 500 && !i->up(); ++n)
        cp.run_once(10);
    for (int a = 2; a < argc; ++a) {
        unsigned char addr[4];
        inet_pton(AF_INET, argv[a], addr);
        i->join(wire::ipv4_mcast_mgid(wire::Bytes(addr, 4), i->broadcast().mgid).value);
    }
    std::size_t joined = 0;
    for (int n = 0; n < 500 && joined < static_cast<std::size_t>(argc - 2); ++n) {
        cp.run_once(10);
        joined = 0;
        for (auto &g : i->groups())
            joined += g.joined;
    }
    std::printf("joined %zu\n", joined);
    std::fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    cp.stop();
    return 0;
}
