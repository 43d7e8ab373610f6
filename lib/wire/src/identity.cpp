// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/wire/identity.hpp"

#include <cstring>

namespace ipoib::wire {

Guid guid_from_u64(std::uint64_t v) noexcept {
    Guid g;
    for (int i = 7; i >= 0; --i, v >>= 8)
        g[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
    return g;
}

std::uint64_t guid_to_u64(const Guid &g) noexcept {
    std::uint64_t v = 0;
    for (auto b : g)
        v = v << 8 | b;
    return v;
}

Guid guid_from_gid(const Gid &gid) noexcept {
    Guid g;
    std::memcpy(g.data(), gid.raw.data() + 8, 8);
    return g;
}

std::array<std::uint8_t, 8> ipv6_iid_from_guid(const Guid &g) noexcept {
    std::array<std::uint8_t, 8> iid = g;
    iid[0] ^= 0x02;  // invert the universal/local bit: modified EUI-64
    return iid;
}

std::array<std::uint8_t, 16> ipv6_link_local_from_guid(const Guid &g) noexcept {
    std::array<std::uint8_t, 16> a{};
    a[0] = 0xfe;
    a[1] = 0x80;
    const auto iid = ipv6_iid_from_guid(g);
    std::memcpy(a.data() + 8, iid.data(), 8);
    return a;
}

Mac mac_from_guid(const Guid &g) noexcept {
    Mac m;
    m.raw = {g[0], g[1], g[2], g[5], g[6], g[7]};
    m.raw[0] = static_cast<std::uint8_t>((m.raw[0] & ~0x01) | 0x02);  // unicast, locally administered
    return m;
}

} // namespace ipoib::wire
