// SPDX-License-Identifier: BSD-3-Clause
// Basic value types and the error model shared by every IPoIB wire-format function.
//
// Everything in ipoib::wire is a pure function over byte spans: no allocation,
// no exceptions, no I/O, no global state. Every parser checks lengths before it
// reads, every writer checks capacity before it writes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace ipoib::wire {

using Bytes = std::span<const std::uint8_t>;
using MutBytes = std::span<std::uint8_t>;

// Why a wire function refused its input. Stable values: counters are indexed by them.
enum class Error : std::uint8_t {
    ok = 0,
    truncated,          // input shorter than the format needs
    no_space,           // output buffer too small
    bad_text,           // textual form does not parse
    bad_qpn,            // QPN does not fit in 24 bits
    bad_pkey,           // P_Key 0x0000 / 0x8000 (no partition) refused
    bad_scope,          // multicast scope nibble 0 or 0xf
    not_multicast,      // address / GID is not a multicast one
    unsupported_ethertype,
    bad_arp_format,     // htype/ptype/hlen/plen do not describe the expected ARP flavour
    bad_arp_op,
    bad_ipv6,           // version / payload length inconsistent
    not_nd,             // not an ICMPv6 ND message: leave the packet alone
    bad_icmp_checksum,
    bad_nd_option,      // zero-length, overrunning or wrongly sized option
    too_long,           // result would not fit the protocol's length field
    unmapped_address,   // the address mapper knows no translation for an address
    count_              // number of codes; keep last
};

// A short, stable, human-readable reason ("truncated input", ...).
const char *describe(Error e) noexcept;

// Value-or-error; the value is meaningful only when err == Error::ok.
template <class T>
struct Result {
    T value{};
    Error err = Error::ok;

    constexpr bool ok() const noexcept { return err == Error::ok; }
    constexpr explicit operator bool() const noexcept { return ok(); }
    static constexpr Result fail(Error e) noexcept { return Result{T{}, e}; }
};

// 16-byte InfiniBand GID, network byte order.
struct Gid {
    std::array<std::uint8_t, 16> raw{};
    friend constexpr bool operator==(const Gid &, const Gid &) = default;
    constexpr bool is_multicast() const noexcept { return raw[0] == 0xff; }
};

// 6-byte Ethernet MAC.
struct Mac {
    std::array<std::uint8_t, 6> raw{};
    friend constexpr bool operator==(const Mac &, const Mac &) = default;
    constexpr bool is_zero() const noexcept {
        for (auto b : raw)
            if (b)
                return false;
        return true;
    }
    constexpr bool is_broadcast() const noexcept {
        for (auto b : raw)
            if (b != 0xff)
                return false;
        return true;
    }
    constexpr bool is_multicast() const noexcept { return raw[0] & 0x01; }
};

// Big-endian helpers (the wire is big-endian; these compile to bswap+load).
constexpr std::uint16_t load_be16(const std::uint8_t *p) noexcept {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
constexpr std::uint32_t load_be32(const std::uint8_t *p) noexcept {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
constexpr void store_be16(std::uint8_t *p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}
constexpr void store_be32(std::uint8_t *p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}

} // namespace ipoib::wire
