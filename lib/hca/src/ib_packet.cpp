// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/hca/ib_packet.hpp"

#include <array>
#include <cstring>

#include "ipoib/wire/types.hpp"

namespace ipoib::hca {

namespace {

using wire::store_be16;
using wire::store_be32;

constexpr std::array<std::uint32_t, 256> make_crc32_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
    std::array<std::uint16_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint16_t c = static_cast<std::uint16_t>(i);
        for (int k = 0; k < 8; ++k)
            c = (c & 1) ? static_cast<std::uint16_t>(0xd008u ^ (c >> 1)) : static_cast<std::uint16_t>(c >> 1);
        t[i] = c;
    }
    return t;
}
constexpr auto kCrc32 = make_crc32_table();
constexpr auto kCrc16 = make_crc16_table();  // 0x100b reflected = 0xd008

std::uint32_t crc32_update(std::uint32_t c, const std::uint8_t *p, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i)
        c = kCrc32[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c;
}

} // namespace

std::uint32_t ib_icrc(std::span<const std::uint8_t> pkt) noexcept {
    if (pkt.size() < kLrhLen + kBthLen)
        return 0;
    const bool grh = (pkt[1] & 0x3) == 3;
    std::uint32_t c = 0xffffffffu;
    static constexpr std::uint8_t ones[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    c = crc32_update(c, ones, 8);  // the LRH is variant as a whole
    std::size_t off = kLrhLen;
    if (grh) {
        if (pkt.size() < kLrhLen + kGrhWireLen + kBthLen)
            return 0;
        std::uint8_t g[kGrhWireLen];
        std::memcpy(g, pkt.data() + off, kGrhWireLen);
        g[0] |= 0x0f;  // TClass (low nibble of byte 0, high nibble of byte 1) and FlowLabel
        g[1] = g[2] = g[3] = 0xff;
        g[7] = 0xff;  // HopLmt
        c = crc32_update(c, g, kGrhWireLen);
        off += kGrhWireLen;
    }
    std::uint8_t b[kBthLen];
    std::memcpy(b, pkt.data() + off, kBthLen);
    b[4] = 0xff;  // Resv8a
    c = crc32_update(c, b, kBthLen);
    off += kBthLen;
    c = crc32_update(c, pkt.data() + off, pkt.size() - off);
    return ~c;
}

std::uint16_t ib_vcrc(std::span<const std::uint8_t> pkt) noexcept {
    std::uint16_t c = 0xffff;
    for (auto byte : pkt)
        c = static_cast<std::uint16_t>(kCrc16[(c ^ byte) & 0xff] ^ (c >> 8));
    return static_cast<std::uint16_t>(~c);
}

std::size_t ud_packet_len(const UdPacketMeta &m, std::size_t payload_len) noexcept {
    const std::size_t padded = (payload_len + 3) & ~std::size_t{3};
    return kLrhLen + (m.grh ? kGrhWireLen : 0) + kBthLen + (opcode_has_deth(m.opcode) ? kDethLen : 0) + padded +
           kIcrcLen + kVcrcLen;
}

std::size_t build_ud_packet(const UdPacketMeta &m, const Sge *sg, std::uint32_t nsge, std::size_t payload_len,
                            std::span<std::uint8_t> out) noexcept {
    const std::size_t total = ud_packet_len(m, payload_len);
    if (out.size() < total)
        return 0;
    const std::size_t pad = ((payload_len + 3) & ~std::size_t{3}) - payload_len;
    const std::size_t deth = opcode_has_deth(m.opcode) ? kDethLen : 0;
    std::uint8_t *p = out.data();
    // LRH: VL|LVer, SL|Rsv|LNH, DLID, Rsv|PktLen (4-byte words, LRH..ICRC), SLID.
    p[0] = static_cast<std::uint8_t>(m.vl << 4);
    p[1] = static_cast<std::uint8_t>(m.sl << 4 | (m.grh ? 3 : 2));
    store_be16(p + 2, m.dlid);
    store_be16(p + 4, static_cast<std::uint16_t>(((total - kVcrcLen) / 4) & 0x7ff));
    store_be16(p + 6, m.slid);
    std::size_t off = kLrhLen;
    if (m.grh) {
        store_be32(p + off, 6u << 28 | std::uint32_t{m.traffic_class} << 20 | (m.flow_label & 0xfffff));
        store_be16(p + off + 4, static_cast<std::uint16_t>(kBthLen + deth + payload_len + pad + kIcrcLen));
        p[off + 6] = 0x1b;
        p[off + 7] = m.hop_limit;
        std::memcpy(p + off + 8, m.sgid.raw.data(), 16);
        std::memcpy(p + off + 24, m.dgid.raw.data(), 16);
        off += kGrhWireLen;
    }
    // BTH: OpCode, SE|M|PadCnt|TVer, P_Key, Resv8a|DestQP, A|Resv7|PSN.
    p[off] = m.opcode;
    p[off + 1] = static_cast<std::uint8_t>(pad << 4);
    store_be16(p + off + 2, m.pkey);
    store_be32(p + off + 4, m.dest_qp & 0xffffff);
    store_be32(p + off + 8, (m.ack_req ? 0x80000000u : 0u) | (m.psn & 0xffffff));
    off += kBthLen;
    if (deth) {
        // DETH: Q_Key, Resv8|SrcQP.
        store_be32(p + off, m.qkey);
        store_be32(p + off + 4, m.src_qp & 0xffffff);
        off += kDethLen;
    }
    for (std::uint32_t i = 0; i < nsge; ++i) {
        std::memcpy(p + off, reinterpret_cast<const void *>(static_cast<std::uintptr_t>(sg[i].addr)), sg[i].length);
        off += sg[i].length;
    }
    std::memset(p + off, 0, pad);
    off += pad;
    const std::uint32_t icrc = ib_icrc({p, off});
    for (int i = 0; i < 4; ++i)
        p[off + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(icrc >> (8 * i));
    off += kIcrcLen;
    const std::uint16_t vcrc = ib_vcrc({p, off});
    p[off] = static_cast<std::uint8_t>(vcrc);
    p[off + 1] = static_cast<std::uint8_t>(vcrc >> 8);
    return off + kVcrcLen;
}

} // namespace ipoib::hca
