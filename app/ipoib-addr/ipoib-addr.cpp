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

int usage(const char *msg) {
    if (msg)
        std::fprintf(stderr, "ipoib-addr: %s\n", msg);
    std::fprintf(stderr,
                 "usage: ipoib-addr --guid GUID [--qpn QPN] [--pkey PKEY] [--rc] [--scope S]\n"
                 "                  [--subnet-prefix PREFIX] [--group IP]...\n");
    return 2;
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
            usage(nullptr);
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
