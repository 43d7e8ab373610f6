// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/wire/arp.hpp"

#include <cstring>

#include "ipoib/wire/encap.hpp"

namespace ipoib::wire {

namespace {

constexpr std::size_t kArpFixedLen = 8;  // htype, ptype, hlen, plen, op
constexpr std::uint8_t kIPv4Len = 4;

// Checks the fixed part for the flavour (htype, hlen) and returns the opcode.
Result<std::uint16_t> check_fixed(Bytes in, std::uint16_t htype, std::uint8_t hlen) noexcept {
    const std::size_t need = kArpFixedLen + 2 * (hlen + kIPv4Len);
    if (in.size() < need)
        return Result<std::uint16_t>::fail(Error::truncated);
    if (load_be16(&in[0]) != htype || load_be16(&in[2]) != kEtherTypeIPv4 || in[4] != hlen ||
        in[5] != kIPv4Len)
        return Result<std::uint16_t>::fail(Error::bad_arp_format);
    const std::uint16_t op = load_be16(&in[6]);
    if (op < 1 || op > 4)  // ARP request/reply, RARP request/reply
        return Result<std::uint16_t>::fail(Error::bad_arp_op);
    return {op};
}

void write_fixed(std::uint8_t *out, std::uint16_t htype, std::uint8_t hlen, std::uint16_t op) noexcept {
    store_be16(out, htype);
    store_be16(out + 2, kEtherTypeIPv4);
    out[4] = hlen;
    out[5] = kIPv4Len;
    store_be16(out + 6, op);
}

} // namespace

Result<std::size_t> arp_eth_to_ib(Bytes in, MutBytes out, const AddrMapper &map) noexcept {
    auto op = check_fixed(in, kArpHtypeEthernet, 6);
    if (!op)
        return Result<std::size_t>::fail(op.err);
    if (out.size() < kIbArpLen)
        return Result<std::size_t>::fail(Error::no_space);

    Mac sha, tha;
    std::memcpy(sha.raw.data(), &in[8], 6);
    std::memcpy(tha.raw.data(), &in[18], 6);

    HwAddr ib_sha, ib_tha;  // ib_tha stays zero for an unknown target
    if (!map.to_hw(sha, &ib_sha))
        return Result<std::size_t>::fail(Error::unmapped_address);
    if (!tha.is_zero() && !tha.is_broadcast() && !map.to_hw(tha, &ib_tha))
        return Result<std::size_t>::fail(Error::unmapped_address);

    std::uint8_t *o = out.data();
    write_fixed(o, kArpHtypeInfiniBand, kHwAddrLen, op.value);
    std::memcpy(o + 8, ib_sha.raw.data(), kHwAddrLen);
    std::memcpy(o + 28, &in[14], 4);  // sender IP
    std::memcpy(o + 32, ib_tha.raw.data(), kHwAddrLen);
    std::memcpy(o + 52, &in[24], 4);  // target IP
    return {kIbArpLen};
}

Result<std::size_t> arp_ib_to_eth(Bytes in, MutBytes out, const AddrMapper &map) noexcept {
    auto op = check_fixed(in, kArpHtypeInfiniBand, kHwAddrLen);
    if (!op)
        return Result<std::size_t>::fail(op.err);
    if (out.size() < kEthArpLen)
        return Result<std::size_t>::fail(Error::no_space);

    HwAddr sha, tha;
    std::memcpy(sha.raw.data(), &in[8], kHwAddrLen);
    std::memcpy(tha.raw.data(), &in[32], kHwAddrLen);

    Mac eth_sha, eth_tha;
    if (!map.to_mac(sha, &eth_sha))
        return Result<std::size_t>::fail(Error::unmapped_address);
    if (!tha.is_zero() && !map.to_mac(tha, &eth_tha))
        return Result<std::size_t>::fail(Error::unmapped_address);

    std::uint8_t *o = out.data();
    write_fixed(o, kArpHtypeEthernet, 6, op.value);
    std::memcpy(o + 8, eth_sha.raw.data(), 6);
    std::memcpy(o + 14, &in[28], 4);
    std::memcpy(o + 18, eth_tha.raw.data(), 6);
    std::memcpy(o + 24, &in[52], 4);
    return {kEthArpLen};
}

} // namespace ipoib::wire
