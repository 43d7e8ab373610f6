// SPDX-License-Identifier: BSD-3-Clause
// Encapsulation header and multicast GID mapping.
#include <cstring>

#include "ipoib/wire/encap.hpp"
#include "ipoib/wire/mgid.hpp"

namespace ipoib::wire {

Result<std::uint16_t> parse_encap(Bytes in) noexcept {
    if (in.size() < kEncapLen)
        return Result<std::uint16_t>::fail(Error::truncated);
    const std::uint16_t type = load_be16(in.data());
    // The reserved half is ignored on receive (RFC 4391 section 6).
    return {type, ethertype_allowed(type) ? Error::ok : Error::unsupported_ethertype};
}

Error write_encap(MutBytes out, std::uint16_t ethertype) noexcept {
    if (!ethertype_allowed(ethertype))
        return Error::unsupported_ethertype;
    if (out.size() < kEncapLen)
        return Error::no_space;
    store_be16(out.data(), ethertype);
    out[2] = 0;
    out[3] = 0;
    return Error::ok;
}

namespace {

constexpr bool scope_valid(std::uint8_t scope) noexcept { return scope >= 0x1 && scope <= 0xe; }

// ff1S:<signature>:PPPP followed by zeros.
Gid mgid_prefix(std::uint8_t scope, std::uint16_t signature, std::uint16_t pkey_with_full) noexcept {
    Gid g;
    g.raw[0] = 0xff;
    g.raw[1] = static_cast<std::uint8_t>(0x10 | scope);  // flags: transient (T=1)
    store_be16(&g.raw[2], signature);
    store_be16(&g.raw[4], pkey_with_full);
    return g;
}

// Check that `b` is usable as an IPoIB broadcast MGID to derive groups from.
Error check_broadcast(const Gid &b) noexcept {
    if (!b.is_multicast())
        return Error::not_multicast;
    if (!scope_valid(b.raw[1] & 0xf))
        return Error::bad_scope;
    if (!pkey_valid(load_be16(&b.raw[4])))
        return Error::bad_pkey;
    return Error::ok;
}

Gid derived_prefix(const Gid &broadcast, std::uint16_t signature) noexcept {
    return mgid_prefix(broadcast.raw[1] & 0xf, signature, load_be16(&broadcast.raw[4]));
}

} // namespace

Result<Gid> broadcast_mgid(std::uint16_t pkey, std::uint8_t scope) noexcept {
    if (!pkey_valid(pkey))
        return Result<Gid>::fail(Error::bad_pkey);
    if (!scope_valid(scope))
        return Result<Gid>::fail(Error::bad_scope);
    Gid g = mgid_prefix(scope, kSignatureIPv4, pkey_full(pkey));
    g.raw[12] = g.raw[13] = g.raw[14] = g.raw[15] = 0xff;
    return {g};
}

HwAddr multicast_hwaddr(const Gid &mgid) noexcept {
    HwAddr a;
    a.raw[1] = a.raw[2] = a.raw[3] = 0xff;  // QPN 0xffffff, flags 0
    std::memcpy(a.raw.data() + 4, mgid.raw.data(), 16);
    return a;
}

Result<HwAddr> broadcast_hwaddr(std::uint16_t pkey, std::uint8_t scope) noexcept {
    auto g = broadcast_mgid(pkey, scope);
    if (!g)
        return Result<HwAddr>::fail(g.err);
    return {multicast_hwaddr(g.value)};
}

Result<std::uint8_t> mgid_scope(const Gid &mgid) noexcept {
    if (!mgid.is_multicast())
        return Result<std::uint8_t>::fail(Error::not_multicast);
    return {static_cast<std::uint8_t>(mgid.raw[1] & 0xf)};
}

Result<std::uint16_t> mgid_pkey(const Gid &mgid) noexcept {
    if (!mgid.is_multicast())
        return Result<std::uint16_t>::fail(Error::not_multicast);
    return {load_be16(&mgid.raw[4])};
}

bool is_ipoib_mgid(const Gid &mgid) noexcept {
    if (!mgid.is_multicast())
        return false;
    const std::uint16_t sig = load_be16(&mgid.raw[2]);
    return sig == kSignatureIPv4 || sig == kSignatureIPv6;
}

Result<Gid> ipv4_mcast_mgid(Bytes addr4, const Gid &broadcast) noexcept {
    if (addr4.size() < 4)
        return Result<Gid>::fail(Error::truncated);
    if (Error e = check_broadcast(broadcast); e != Error::ok)
        return Result<Gid>::fail(e);
    const std::uint32_t a = load_be32(addr4.data());
    if (a == 0xffffffffu)  // limited broadcast: the broadcast group itself
        return {broadcast};
    if ((a >> 28) != 0xe)
        return Result<Gid>::fail(Error::not_multicast);
    Gid g = derived_prefix(broadcast, kSignatureIPv4);
    store_be32(&g.raw[12], a & 0x0fffffffu);
    return {g};
}

Result<Gid> ipv6_mcast_mgid(Bytes addr16, const Gid &broadcast) noexcept {
    if (addr16.size() < 16)
        return Result<Gid>::fail(Error::truncated);
    if (Error e = check_broadcast(broadcast); e != Error::ok)
        return Result<Gid>::fail(e);
    if (addr16[0] != 0xff)
        return Result<Gid>::fail(Error::not_multicast);
    Gid g = derived_prefix(broadcast, kSignatureIPv6);
    std::memcpy(&g.raw[6], addr16.data() + 6, 10);
    return {g};
}

Result<Gid> ipv4_mcast_mgid(Bytes addr4, std::uint16_t pkey, std::uint8_t scope) noexcept {
    auto b = broadcast_mgid(pkey, scope);
    if (!b)
        return b;
    return ipv4_mcast_mgid(addr4, b.value);
}

Result<Gid> ipv6_mcast_mgid(Bytes addr16, std::uint16_t pkey, std::uint8_t scope) noexcept {
    auto b = broadcast_mgid(pkey, scope);
    if (!b)
        return b;
    return ipv6_mcast_mgid(addr16, b.value);
}

} // namespace ipoib::wire
