// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/wire/nd.hpp"

#include <cstring>

namespace ipoib::wire {

namespace {

constexpr std::uint8_t kOptSourceLla = 1;
constexpr std::uint8_t kOptTargetLla = 2;

// Length of the fixed part of each ND message, 0 for non-ND ICMPv6 types.
constexpr std::size_t nd_fixed_len(std::uint8_t type) noexcept {
    switch (type) {
    case 133: return 8;   // Router Solicitation
    case 134: return 16;  // Router Advertisement
    case 135: return 24;  // Neighbor Solicitation
    case 136: return 24;  // Neighbor Advertisement
    case 137: return 40;  // Redirect
    default: return 0;
    }
}

std::uint32_t sum16(Bytes b, std::uint32_t acc) noexcept {
    std::size_t i = 0;
    for (; i + 1 < b.size(); i += 2)
        acc += load_be16(&b[i]);
    if (i < b.size())
        acc += std::uint32_t{b[i]} << 8;
    return acc;
}

} // namespace

std::uint16_t icmpv6_checksum(Bytes src16, Bytes dst16, Bytes icmp) noexcept {
    return ipv6_upper_checksum(src16, dst16, kIpProtoIcmpv6, icmp);
}

std::uint16_t ipv6_upper_checksum(Bytes src16, Bytes dst16, std::uint8_t next_header, Bytes msg) noexcept {
    std::uint32_t acc = 0;
    acc = sum16(src16.first(16), acc);
    acc = sum16(dst16.first(16), acc);
    const std::uint32_t len = static_cast<std::uint32_t>(msg.size());
    acc += len >> 16;
    acc += len & 0xffff;
    acc += next_header;
    acc = sum16(msg, acc);
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return static_cast<std::uint16_t>(~acc);
}

std::size_t nd_max_growth(Bytes in, NdDirection dir) noexcept {
    // Every 8-byte Ethernet LLA option becomes a 24-byte IPoIB one.
    return dir == NdDirection::eth_to_ib ? 2 * in.size() : 0;
}

Result<std::size_t> nd_translate(Bytes in, MutBytes out, NdDirection dir, const AddrMapper &map) noexcept {
    using R = Result<std::size_t>;
    if (in.size() < kIPv6HeaderLen)
        return R::fail(Error::truncated);
    if ((in[0] >> 4) != 6)
        return R::fail(Error::bad_ipv6);
    const std::size_t plen = load_be16(&in[4]);
    if (in.size() < kIPv6HeaderLen + plen)
        return R::fail(Error::truncated);
    if (in[6] != kIpProtoIcmpv6 || plen < 1)
        return R::fail(Error::not_nd);
    const Bytes msg = in.subspan(kIPv6HeaderLen, plen);
    const std::size_t fixed = nd_fixed_len(msg[0]);
    if (fixed == 0)
        return R::fail(Error::not_nd);
    if (plen < fixed)
        return R::fail(Error::truncated);
    const Bytes src = in.subspan(8, 16), dst = in.subspan(24, 16);
    if (icmpv6_checksum(src, dst, msg) != 0)
        return R::fail(Error::bad_icmp_checksum);

    const std::size_t head = kIPv6HeaderLen + fixed;
    if (out.size() < head)
        return R::fail(Error::no_space);
    std::memcpy(out.data(), in.data(), head);
    std::size_t o = head;

    const std::uint8_t lla_len_in = dir == NdDirection::eth_to_ib ? 1 : 3;
    for (std::size_t i = fixed; i < plen;) {
        if (plen - i < 2)
            return R::fail(Error::bad_nd_option);
        const std::uint8_t type = msg[i];
        const std::size_t len = std::size_t{msg[i + 1]} * 8;
        if (len == 0 || len > plen - i)
            return R::fail(Error::bad_nd_option);
        const std::uint8_t *opt = &msg[i];

        if (type == kOptSourceLla || type == kOptTargetLla) {
            if (msg[i + 1] != lla_len_in)
                return R::fail(Error::bad_nd_option);
            if (dir == NdDirection::eth_to_ib) {
                Mac mac;
                std::memcpy(mac.raw.data(), opt + 2, 6);
                HwAddr hw;
                if (!map.to_hw(mac, &hw))
                    return R::fail(Error::unmapped_address);
                if (out.size() - o < kNdOptIbLen)
                    return R::fail(Error::no_space);
                out[o] = type;
                out[o + 1] = 3;
                out[o + 2] = out[o + 3] = 0;
                std::memcpy(&out[o + 4], hw.raw.data(), kHwAddrLen);
                o += kNdOptIbLen;
            } else {
                HwAddr hw;
                std::memcpy(hw.raw.data(), opt + 4, kHwAddrLen);
                Mac mac;
                if (!map.to_mac(hw, &mac))
                    return R::fail(Error::unmapped_address);
                if (out.size() - o < kNdOptEthLen)
                    return R::fail(Error::no_space);
                out[o] = type;
                out[o + 1] = 1;
                std::memcpy(&out[o + 2], mac.raw.data(), 6);
                o += kNdOptEthLen;
            }
        } else {
            if (out.size() - o < len)
                return R::fail(Error::no_space);
            std::memcpy(&out[o], opt, len);
            o += len;
        }
        i += len;
    }

    const std::size_t new_plen = o - kIPv6HeaderLen;
    if (new_plen > 0xffff)
        return R::fail(Error::too_long);
    store_be16(&out[4], static_cast<std::uint16_t>(new_plen));
    out[kIPv6HeaderLen + 2] = out[kIPv6HeaderLen + 3] = 0;
    const std::uint16_t ck = icmpv6_checksum(src, dst, Bytes(out.data() + kIPv6HeaderLen, new_plen));
    store_be16(&out[kIPv6HeaderLen + 2], ck);
    return {o};
}

} // namespace ipoib::wire
