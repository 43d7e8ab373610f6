// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/wire/hwaddr.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace ipoib::wire {

const char *describe(Error e) noexcept {
    switch (e) {
    case Error::ok: return "ok";
    case Error::truncated: return "truncated input";
    case Error::no_space: return "output buffer too small";
    case Error::bad_text: return "malformed text form";
    case Error::bad_qpn: return "QPN does not fit in 24 bits";
    case Error::bad_pkey: return "invalid P_Key (0x0000 and 0x8000 name no partition)";
    case Error::bad_scope: return "invalid multicast scope";
    case Error::not_multicast: return "not a multicast address";
    case Error::unsupported_ethertype: return "EtherType not carried by IPoIB";
    case Error::bad_arp_format: return "unexpected ARP hardware/protocol type or length";
    case Error::bad_arp_op: return "unsupported ARP opcode";
    case Error::bad_ipv6: return "malformed IPv6 header";
    case Error::not_nd: return "not an IPv6 neighbour discovery message";
    case Error::bad_icmp_checksum: return "bad ICMPv6 checksum";
    case Error::bad_nd_option: return "malformed ND option";
    case Error::too_long: return "result too long for its length field";
    case Error::unmapped_address: return "no mapping for link-layer address";
    case Error::count_: break;
    }
    return "unknown error";
}

Result<HwAddr> make_hwaddr(std::uint8_t flags, std::uint32_t qpn, const Gid &gid) noexcept {
    if (qpn > kQpnMask)
        return Result<HwAddr>::fail(Error::bad_qpn);
    HwAddr a;
    a.raw[0] = flags;
    a.raw[1] = static_cast<std::uint8_t>(qpn >> 16);
    a.raw[2] = static_cast<std::uint8_t>(qpn >> 8);
    a.raw[3] = static_cast<std::uint8_t>(qpn);
    std::memcpy(a.raw.data() + 4, gid.raw.data(), 16);
    return {a};
}

Result<HwAddr> parse_hwaddr(Bytes in) noexcept {
    if (in.size() < kHwAddrLen)
        return Result<HwAddr>::fail(Error::truncated);
    HwAddr a;
    std::memcpy(a.raw.data(), in.data(), kHwAddrLen);
    return {a};
}

Error write_hwaddr(const HwAddr &a, MutBytes out) noexcept {
    if (out.size() < kHwAddrLen)
        return Error::no_space;
    std::memcpy(out.data(), a.raw.data(), kHwAddrLen);
    return Error::ok;
}

Error format_hwaddr(const HwAddr &a, std::span<char> out) noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    if (out.size() < kHwAddrTextLen + 1)
        return Error::no_space;
    char *p = out.data();
    for (std::size_t i = 0; i < kHwAddrLen; ++i) {
        if (i)
            *p++ = ':';
        *p++ = digits[a.raw[i] >> 4];
        *p++ = digits[a.raw[i] & 0xf];
    }
    *p = '\0';
    return Error::ok;
}

std::string to_string(const HwAddr &a) {
    char buf[kHwAddrTextLen + 1];
    format_hwaddr(a, buf);
    return std::string(buf, kHwAddrTextLen);
}

namespace {
int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
} // namespace

Result<HwAddr> parse_hwaddr_text(std::string_view text) noexcept {
    if (text.size() != kHwAddrTextLen)
        return Result<HwAddr>::fail(Error::bad_text);
    HwAddr a;
    for (std::size_t i = 0; i < kHwAddrLen; ++i) {
        const std::size_t at = i * 3;
        if (i && text[at - 1] != ':')
            return Result<HwAddr>::fail(Error::bad_text);
        const int hi = hex_value(text[at]);
        const int lo = hex_value(text[at + 1]);
        if (hi < 0 || lo < 0)
            return Result<HwAddr>::fail(Error::bad_text);
        a.raw[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return {a};
}

Error format_gid(const Gid &g, std::span<char> out) noexcept {
    if (out.size() < kGidTextSize)
        return Error::no_space;
    if (!inet_ntop(AF_INET6, g.raw.data(), out.data(), static_cast<socklen_t>(out.size())))
        return Error::no_space;
    return Error::ok;
}

std::string to_string(const Gid &g) {
    char buf[kGidTextSize];
    format_gid(g, buf);
    return std::string(buf);
}

Result<Gid> parse_gid_text(std::string_view text) noexcept {
    char buf[kGidTextSize];
    if (text.empty() || text.size() >= sizeof buf)
        return Result<Gid>::fail(Error::bad_text);
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    Gid g;
    if (inet_pton(AF_INET6, buf, g.raw.data()) != 1)
        return Result<Gid>::fail(Error::bad_text);
    return {g};
}

} // namespace ipoib::wire
