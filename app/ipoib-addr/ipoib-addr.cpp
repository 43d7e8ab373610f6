// SPDX-License-Identifier: BSD-3-Clause
// ipoib-addr: the IPoIB addresses of a port, computed by lib/wire.
//
//   ipoib-addr --guid 0x0002c903000abcde [--qpn 0x48] [--pkey 0x8001] [--rc]
//              [--scope 2] [--group 224.1.2.3] [--group ff02::1]
//
// Prints the 20-byte hardware address as Linux shows it, the partition's
// broadcast address, the IPv6 link-local address, the MAC an Ethernet-
// emulating port shows, and the MGID of each IP multicast group given.
#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ipoib/wire.hpp"

namespace {

using namespace ipoib::wire;

#ifndef IPOIB_VERSION
#define IPOIB_VERSION "unknown"
#endif

constexpr const char *kUsage = "usage: ipoib-addr --guid GUID [--qpn QPN] [--pkey PKEY] [--rc] [--scope S]\n"
                               "                  [--subnet-prefix PREFIX] [--group IP]...\n";

// A wrong command line: the reason and the usage, on stderr, exit status 2.
int usage(const char *msg) {
    std::fprintf(stderr, "ipoib-addr: %s\n%s", msg, kUsage);
    return 2;
}

// --help: on stdout, exit status 0.
int help() {
    std::printf("%s\n"
                "Print the IPoIB addresses that RFC 4391 and Linux ipoib derive for a port: the\n"
                "20-byte hardware address, the partition's broadcast address, the IPv6\n"
                "link-local address, the MAC an Ethernet-emulating net_ipoib port shows, and\n"
                "the multicast GID of each IP group given.\n"
                "\n"
                "Options:\n"
                "  --guid GUID            the port GUID (64 bits, e.g. 0x0002c903000abcde); required\n"
                "  --qpn QPN              the IPoIB UD QP number in the hardware address (24 bits; default 0)\n"
                "  --pkey PKEY            the partition key (16 bits; default 0xffff); the full-membership\n"
                "                         bit is set in the broadcast and multicast GIDs, as Linux does\n"
                "  --rc                   set the connected-mode flag (RFC 4755) in the hardware address\n"
                "  --scope S              the multicast scope nibble of the broadcast and multicast GIDs\n"
                "                         (4 bits; default 2, link-local; 5 site-local, 8 organisation,\n"
                "                         14 global: Linux ipoib's mcast scope setting)\n"
                "  --subnet-prefix PREFIX the port's subnet prefix for its GID and link-local address\n"
                "                         (default fe80::)\n"
                "  --group IP             an IPv4 or IPv6 multicast group: print its MGID (repeatable)\n"
                "  --version              print the version\n"
                "  -h, --help             print this help\n"
                "\n"
                "Example: ipoib-addr --guid 0x0002c903000abcde --qpn 0x48 --pkey 0x8001 --group ff02::1\n",
                kUsage);
    return 0;
}

bool parse_uint(const char *s, unsigned long long max, unsigned long long *out) {
    if (!s || !*s)
        return false;
    char *end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 0);
    if (errno || *end || v > max || s[0] == '-')
        return false;
    *out = v;
    return true;
}

} // namespace

int main(int argc, char **argv) {
    unsigned long long guid = 0, qpn = 0, pkey = 0xffff, scope = kScopeLinkLocal;
    bool have_guid = false, rc = false;
    std::string prefix = "fe80::";
    std::vector<std::string> groups;

    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
        auto need = [&](const char *what) {
            if (!v) {
                std::fprintf(stderr, "ipoib-addr: %s needs a value\n", what);
                std::exit(2);
            }
            ++i;
            return v;
        };
        if (a == "--guid") {
            if (!parse_uint(need("--guid"), ~0ULL, &guid))
                return usage("--guid: not a 64-bit number");
            have_guid = true;
        } else if (a == "--qpn") {
            if (!parse_uint(need("--qpn"), kQpnMask, &qpn))
                return usage("--qpn: not a 24-bit number");
        } else if (a == "--pkey") {
            if (!parse_uint(need("--pkey"), 0xffff, &pkey))
                return usage("--pkey: not a 16-bit number");
        } else if (a == "--scope") {
            if (!parse_uint(need("--scope"), 0xf, &scope))
                return usage("--scope: not a 4-bit number");
        } else if (a == "--subnet-prefix") {
            prefix = need("--subnet-prefix");
        } else if (a == "--group") {
            groups.emplace_back(need("--group"));
        } else if (a == "--rc") {
            rc = true;
        } else if (a == "-h" || a == "--help") {
            return help();
        } else if (a == "--version") {
            std::printf("ipoib-addr %s\n", IPOIB_VERSION);
            return 0;
        } else {
            return usage(("unknown argument " + a).c_str());
        }
    }
    if (!have_guid)
        return usage("--guid is required");

    auto bcast = broadcast_mgid(static_cast<std::uint16_t>(pkey), static_cast<std::uint8_t>(scope));
    if (!bcast) {
        std::fprintf(stderr, "ipoib-addr: P_Key 0x%04llx / scope %llu: %s\n", pkey, scope, describe(bcast.err));
        return 1;
    }
    auto pfx = parse_gid_text(prefix);
    if (!pfx) {
        std::fprintf(stderr, "ipoib-addr: --subnet-prefix %s: %s\n", prefix.c_str(), describe(pfx.err));
        return 1;
    }
    const Guid g = guid_from_u64(guid);
    Gid port_gid = pfx.value;
    std::memcpy(port_gid.raw.data() + 8, g.data(), 8);
    auto hw = make_hwaddr(rc ? kHwFlagRc : 0, static_cast<std::uint32_t>(qpn), port_gid);

    Gid ll;
    ll.raw = ipv6_link_local_from_guid(g);
    const Mac mac = mac_from_guid(g);
    std::printf("port GUID 0x%016llx, QPN 0x%06llx, P_Key 0x%04llx\n", guid, qpn, pkey);
    std::printf("  hardware address  %s\n", to_string(hw.value).c_str());
    std::printf("  broadcast         %s\n", to_string(multicast_hwaddr(bcast.value)).c_str());
    std::printf("  broadcast MGID    %s\n", to_string(bcast.value).c_str());
    std::printf("  IPv6 link-local   %s\n", to_string(ll).c_str());
    std::printf("  emulated MAC      %02x:%02x:%02x:%02x:%02x:%02x\n", mac.raw[0], mac.raw[1], mac.raw[2],
                mac.raw[3], mac.raw[4], mac.raw[5]);

    int rc_exit = 0;
    for (const auto &grp : groups) {
        unsigned char buf[16];
        Result<Gid> m;
        if (inet_pton(AF_INET, grp.c_str(), buf) == 1)
            m = ipv4_mcast_mgid(Bytes(buf, 4), bcast.value);
        else if (inet_pton(AF_INET6, grp.c_str(), buf) == 1)
            m = ipv6_mcast_mgid(Bytes(buf, 16), bcast.value);
        else
            m = Result<Gid>::fail(Error::bad_text);
        if (!m) {
            std::fprintf(stderr, "ipoib-addr: group %s: %s\n", grp.c_str(), describe(m.err));
            rc_exit = 1;
            continue;
        }
        std::printf("  group %-15s MGID %s\n", grp.c_str(), to_string(m.value).c_str());
    }
    return rc_exit;
}
