// SPDX-License-Identifier: BSD-3-Clause
#include "xdp_netdev.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <thread>

#include "ipoib/wire/hwaddr.hpp"

namespace ipoib::hca::xdp {

namespace {

constexpr std::uint16_t kDiscardPort = 9;  // where the datagram that starts resolution goes (RFC 863)
constexpr int kResolvePollMs = 5;

class Fd {  // a file descriptor closed on scope exit
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0)
            close(fd_);
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

Gid mapped_v4(const in_addr &a) {
    Gid g{};
    g.raw[10] = g.raw[11] = 0xff;
    std::memcpy(&g.raw[12], &a, 4);
    return g;
}

// One rtnetlink neighbour dump, looking for ip on ifindex in a usable state.
bool neigh_lookup(int ifindex, const Gid &ip, std::uint8_t mac[6]) {
    Fd s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (s.get() < 0)
        return false;
    const bool v4 = is_ipv4_mapped(ip);
    struct {
        nlmsghdr h;
        ndmsg m;
    } req{};
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_GETNEIGH;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = 1;
    req.m.ndm_family = v4 ? AF_INET : AF_INET6;
    req.m.ndm_ifindex = ifindex;
    if (send(s.get(), &req, sizeof req, 0) < 0)
        return false;
    const std::uint8_t *want = v4 ? &ip.raw[12] : ip.raw.data();
    const std::size_t want_len = v4 ? 4 : 16;
    alignas(nlmsghdr) char buf[16384];
    bool found = false;
    for (;;) {
        const ssize_t n = recv(s.get(), buf, sizeof buf, 0);
        if (n <= 0)
            return found;
        auto left = static_cast<unsigned>(n);
        for (auto *h = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
                return found;
            if (h->nlmsg_type != RTM_NEWNEIGH)
                continue;
            const auto *m = static_cast<const ndmsg *>(NLMSG_DATA(h));
            if (m->ndm_ifindex != ifindex ||
                !(m->ndm_state & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)))
                continue;
            const std::uint8_t *dst = nullptr, *ll = nullptr;
            std::size_t ll_len = 0, dst_len = 0;
            int alen = static_cast<int>(RTM_PAYLOAD(h));
            for (auto *a = reinterpret_cast<rtattr *>(const_cast<ndmsg *>(m) + 1); RTA_OK(a, alen);
                 a = RTA_NEXT(a, alen)) {
                if (a->rta_type == NDA_DST) {
                    dst = static_cast<const std::uint8_t *>(RTA_DATA(a));
                    dst_len = RTA_PAYLOAD(a);
                } else if (a->rta_type == NDA_LLADDR) {
                    ll = static_cast<const std::uint8_t *>(RTA_DATA(a));
                    ll_len = RTA_PAYLOAD(a);
                }
            }
            if (dst && ll && dst_len == want_len && ll_len == 6 && std::memcmp(dst, want, want_len) == 0) {
                std::memcpy(mac, ll, 6);
                found = true;  // read on to the end of the dump
            }
        }
    }
}

// A datagram to ip's discard port from the device: the kernel resolves the neighbour to send it.
void start_resolution(const std::string &ifname, int ifindex, const Gid &ip) {
    const bool v4 = is_ipv4_mapped(ip);
    Fd s(socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (s.get() < 0)
        return;
    setsockopt(s.get(), SOL_SOCKET, SO_BINDTODEVICE, ifname.c_str(), static_cast<socklen_t>(ifname.size()));
    const char byte = 0;
    if (v4) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(kDiscardPort);
        std::memcpy(&a.sin_addr, &ip.raw[12], 4);
        sendto(s.get(), &byte, 1, MSG_DONTWAIT, reinterpret_cast<sockaddr *>(&a), sizeof a);
    } else {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(kDiscardPort);
        std::memcpy(&a.sin6_addr, ip.raw.data(), 16);
        a.sin6_scope_id = static_cast<std::uint32_t>(ifindex);
        sendto(s.get(), &byte, 1, MSG_DONTWAIT, reinterpret_cast<sockaddr *>(&a), sizeof a);
    }
}

} // namespace

bool netdev_read(const std::string &name, NetdevState *out, std::string *err) {
    NetdevState st;
    st.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
    if (st.ifindex == 0 || name.size() >= IFNAMSIZ) {
        *err = "no network device '" + name + "' (ip link)";
        return false;
    }
    Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq r{};
    std::memcpy(r.ifr_name, name.c_str(), name.size());
    if (s.get() < 0 || ioctl(s.get(), SIOCGIFHWADDR, &r) < 0) {
        *err = name + ": cannot read its address: " + std::strerror(errno);
        return false;
    }
    std::memcpy(st.mac, r.ifr_hwaddr.sa_data, 6);
    if (ioctl(s.get(), SIOCGIFMTU, &r) < 0) {
        *err = name + ": cannot read its MTU: " + std::strerror(errno);
        return false;
    }
    st.mtu = static_cast<std::uint32_t>(r.ifr_mtu);
    if (ioctl(s.get(), SIOCGIFFLAGS, &r) < 0) {
        *err = name + ": cannot read its flags: " + std::strerror(errno);
        return false;
    }
    // IFF_RUNNING follows the carrier through the kernel's link watch, up to
    // a second late; the carrier itself (sysfs) is current.
    bool carrier = r.ifr_flags & IFF_RUNNING;
    if (FILE *f = std::fopen(("/sys/class/net/" + name + "/carrier").c_str(), "r")) {
        int c = 0;
        if (std::fscanf(f, "%d", &c) == 1)
            carrier = c == 1;
        std::fclose(f);
    }
    st.up = (r.ifr_flags & IFF_UP) && carrier;
    ifaddrs *list = nullptr;
    if (getifaddrs(&list) == 0) {
        std::vector<Gid> v4;
        for (ifaddrs *a = list; a; a = a->ifa_next) {
            if (!a->ifa_addr || name != a->ifa_name)
                continue;
            if (a->ifa_addr->sa_family == AF_INET6) {
                Gid g;
                std::memcpy(g.raw.data(), &reinterpret_cast<sockaddr_in6 *>(a->ifa_addr)->sin6_addr, 16);
                st.ips.push_back(g);
            } else if (a->ifa_addr->sa_family == AF_INET) {
                v4.push_back(mapped_v4(reinterpret_cast<sockaddr_in *>(a->ifa_addr)->sin_addr));
            }
        }
        freeifaddrs(list);
        st.ips.insert(st.ips.end(), v4.begin(), v4.end());
    }
    *out = st;
    return true;
}

Gid eui64_link_local(const std::uint8_t mac[6]) noexcept {
    Gid g{};
    g.raw[0] = 0xfe;
    g.raw[1] = 0x80;
    g.raw[8] = mac[0] ^ 0x02;
    g.raw[9] = mac[1];
    g.raw[10] = mac[2];
    g.raw[11] = 0xff;
    g.raw[12] = 0xfe;
    g.raw[13] = mac[3];
    g.raw[14] = mac[4];
    g.raw[15] = mac[5];
    return g;
}

bool mac_from_eui64(const Gid &g, std::uint8_t mac[6]) noexcept {
    if (g.raw[0] != 0xfe || (g.raw[1] & 0xc0) != 0x80 || g.raw[11] != 0xff || g.raw[12] != 0xfe)
        return false;
    mac[0] = g.raw[8] ^ 0x02;
    mac[1] = g.raw[9];
    mac[2] = g.raw[10];
    mac[3] = g.raw[13];
    mac[4] = g.raw[14];
    mac[5] = g.raw[15];
    return true;
}

bool neigh_resolve(const std::string &ifname, int ifindex, const Gid &ip, int timeout_ms, std::uint8_t mac[6],
                   std::string *err) {
    if (neigh_lookup(ifindex, ip, mac))
        return true;
    start_resolution(ifname, ifindex, ip);
    for (int waited = 0; waited < timeout_ms; waited += kResolvePollMs) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kResolvePollMs));
        if (neigh_lookup(ifindex, ip, mac))
            return true;
    }
    *err = "no neighbour entry for " + wire::to_string(ip) + " on " + ifname + " after " +
           std::to_string(timeout_ms) + " ms (is it on this link? ip neigh show dev " + ifname + ")";
    return false;
}

} // namespace ipoib::hca::xdp
