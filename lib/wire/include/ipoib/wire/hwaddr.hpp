// SPDX-License-Identifier: BSD-3-Clause
// The 20-byte IPoIB hardware address (RFC 4391 section 9.1.1):
//
//   byte 0      flags: 0x80 = RC (connected mode) capable, 0x40 = UC capable, rest reserved
//   bytes 1-3   24-bit QP number
//   bytes 4-19  16-byte port GID
//
// and its text form as Linux prints it: 20 colon-separated lower-case hex
// pairs, e.g. "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de".
#pragma once

#include <string>
#include <string_view>

#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

inline constexpr std::size_t kHwAddrLen = 20;
inline constexpr std::uint8_t kHwFlagRc = 0x80;
inline constexpr std::uint8_t kHwFlagUc = 0x40;
inline constexpr std::uint32_t kQpnMask = 0xffffff;
inline constexpr std::uint32_t kMulticastQpn = 0xffffff;  // QPN carried by multicast addresses
// Characters in the text form, without terminator: 20 pairs and 19 colons.
inline constexpr std::size_t kHwAddrTextLen = kHwAddrLen * 3 - 1;
// Characters a GID's text form can need, with terminator (INET6_ADDRSTRLEN).
inline constexpr std::size_t kGidTextSize = 46;

struct HwAddr {
    std::array<std::uint8_t, kHwAddrLen> raw{};

    friend constexpr bool operator==(const HwAddr &, const HwAddr &) = default;

    constexpr std::uint8_t flags() const noexcept { return raw[0]; }
    constexpr bool rc_capable() const noexcept { return raw[0] & kHwFlagRc; }
    constexpr bool uc_capable() const noexcept { return raw[0] & kHwFlagUc; }
    constexpr std::uint32_t qpn() const noexcept {
        return (std::uint32_t{raw[1]} << 16) | (std::uint32_t{raw[2]} << 8) | raw[3];
    }
    constexpr Gid gid() const noexcept {
        Gid g;
        for (std::size_t i = 0; i < 16; ++i)
            g.raw[i] = raw[4 + i];
        return g;
    }
    constexpr bool is_zero() const noexcept {
        for (auto b : raw)
            if (b)
                return false;
        return true;
    }
};

// Build an address; fails with bad_qpn if qpn does not fit in 24 bits.
Result<HwAddr> make_hwaddr(std::uint8_t flags, std::uint32_t qpn, const Gid &gid) noexcept;

// Read an address from the first 20 bytes of `in` (truncated if shorter).
Result<HwAddr> parse_hwaddr(Bytes in) noexcept;

// Write the 20 bytes to `out` (no_space if shorter).
Error write_hwaddr(const HwAddr &a, MutBytes out) noexcept;

// Text form. `out` must hold kHwAddrTextLen + 1 bytes; it is NUL-terminated.
Error format_hwaddr(const HwAddr &a, std::span<char> out) noexcept;
std::string to_string(const HwAddr &a);

// Parse the text form: exactly 20 two-digit hex bytes separated by ':' (either case).
Result<HwAddr> parse_hwaddr_text(std::string_view text) noexcept;

// GID text form, as IPv6 addresses are written (RFC 5952), e.g. "fe80::2:c903:a:bcde".
Error format_gid(const Gid &g, std::span<char> out) noexcept;
std::string to_string(const Gid &g);
Result<Gid> parse_gid_text(std::string_view text) noexcept;

} // namespace ipoib::wire
