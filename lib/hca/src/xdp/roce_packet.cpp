// SPDX-License-Identifier: BSD-3-Clause
#include "roce_packet.hpp"

#include <zlib.h>

#include <cstring>

#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/nd.hpp"

namespace ipoib::hca::xdp {

namespace {

constexpr std::uint16_t kEtherIpv4 = 0x0800, kEtherIpv6 = 0x86dd, kEtherVlan = 0x8100;
constexpr std::uint8_t kIpProtoUdp = 17;
constexpr std::uint16_t kIpv4DontFragment = 0x4000;
constexpr std::uint8_t kMigReq = 0x00;  // BTH byte 1: M (migration state, unused by UD)

void put16(std::uint8_t *p, std::uint16_t v) noexcept { wire::store_be16(p, v); }
void put32(std::uint8_t *p, std::uint32_t v) noexcept { wire::store_be32(p, v); }
std::uint16_t get16(const std::uint8_t *p) noexcept { return wire::load_be16(p); }
std::uint32_t get32(const std::uint8_t *p) noexcept { return wire::load_be32(p); }

std::uint16_t ipv4_header_checksum(const std::uint8_t *h) noexcept {
    std::uint32_t acc = 0;
    for (int i = 0; i < 20; i += 2)
        acc += get16(h + i);
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return static_cast<std::uint16_t>(~acc);
}

std::uint32_t crc(std::uint32_t c, const std::uint8_t *p, std::size_t n) noexcept {
    return static_cast<std::uint32_t>(::crc32(c, p, static_cast<uInt>(n)));
}

} // namespace

std::size_t roce_write_headers(const RoceSend &s, std::uint32_t payload_len, std::uint8_t *f) noexcept {
    const std::uint32_t pad = (4 - (payload_len & 3)) & 3;
    const std::uint32_t udp_len = static_cast<std::uint32_t>(kUdpLen + kBthLen + kDethLen) + payload_len + pad +
                                  static_cast<std::uint32_t>(kIcrcLen);
    std::memcpy(f, s.dmac, 6);
    std::memcpy(f + 6, s.smac, 6);
    put16(f + 12, s.ipv4 ? kEtherIpv4 : kEtherIpv6);
    std::uint8_t *ip = f + kEthLen;
    std::uint8_t *udp;
    if (s.ipv4) {
        ip[0] = 0x45;
        ip[1] = s.traffic_class;
        put16(ip + 2, static_cast<std::uint16_t>(kIpv4Len + udp_len));
        put16(ip + 4, s.ip_id);
        put16(ip + 6, kIpv4DontFragment);
        ip[8] = s.hop_limit;
        ip[9] = kIpProtoUdp;
        put16(ip + 10, 0);
        std::memcpy(ip + 12, &s.sgid.raw[12], 4);
        std::memcpy(ip + 16, &s.dgid.raw[12], 4);
        put16(ip + 10, ipv4_header_checksum(ip));
        udp = ip + kIpv4Len;
    } else {
        put32(ip, 6u << 28 | std::uint32_t{s.traffic_class} << 20 | (s.flow_label & 0xfffff));
        put16(ip + 4, static_cast<std::uint16_t>(udp_len));
        ip[6] = kIpProtoUdp;
        ip[7] = s.hop_limit;
        std::memcpy(ip + 8, s.sgid.raw.data(), 16);
        std::memcpy(ip + 24, s.dgid.raw.data(), 16);
        udp = ip + kIpv6Len;
    }
    put16(udp, s.udp_sport);
    put16(udp + 2, kRoceV2Port);
    put16(udp + 4, static_cast<std::uint16_t>(udp_len));
    put16(udp + 6, 0);
    std::uint8_t *bth = udp + kUdpLen;
    bth[0] = kOpUdSendOnly;
    bth[1] = static_cast<std::uint8_t>(kMigReq | pad << 4);  // SE 0, M 1, PadCnt, TVer 0
    put16(bth + 2, s.pkey);
    put32(bth + 4, s.dest_qp & 0xffffff);  // Resv8a 0
    put32(bth + 8, s.psn & 0xffffff);      // AckReq 0
    std::uint8_t *deth = bth + kBthLen;
    put32(deth, s.qkey);
    put32(deth + 4, s.src_qp & 0xffffff);
    return static_cast<std::size_t>(deth + kDethLen - f);
}

std::size_t roce_finish(std::uint8_t *f, bool ipv4, std::uint32_t payload_len) noexcept {
    const std::size_t l3len = ipv4 ? kIpv4Len : kIpv6Len;
    const std::uint32_t pad = (4 - (payload_len & 3)) & 3;
    std::uint8_t *ip = f + kEthLen;
    std::uint8_t *udp = ip + l3len;
    std::uint8_t *end = udp + kUdpLen + kBthLen + kDethLen + payload_len;
    std::memset(end, 0, pad);
    end += pad;
    const std::uint32_t icrc = roce_icrc(ip, static_cast<std::size_t>(end - ip), ipv4);
    for (int i = 0; i < 4; ++i)
        end[i] = static_cast<std::uint8_t>(icrc >> (8 * i));
    end += kIcrcLen;
    if (!ipv4) {
        const std::size_t udp_len = static_cast<std::size_t>(end - udp);
        std::uint16_t c = wire::ipv6_upper_checksum({ip + 8, 16}, {ip + 24, 16}, kIpProtoUdp, {udp, udp_len});
        put16(udp + 6, c ? c : 0xffff);  // 0 means "no checksum"; its complement stands for it
    }
    return static_cast<std::size_t>(end - f);
}

std::uint32_t roce_icrc(const std::uint8_t *l3, std::size_t len, bool ipv4) noexcept {
    static constexpr std::uint8_t kOnes[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const std::size_t l3len = ipv4 ? kIpv4Len : kIpv6Len;
    std::uint8_t h[kIpv6Len + kUdpLen + kBthLen];
    std::memcpy(h, l3, l3len + kUdpLen + kBthLen);
    if (ipv4) {
        h[1] = 0xff;              // TOS
        h[8] = 0xff;              // TTL
        h[10] = h[11] = 0xff;     // header checksum
    } else {
        h[0] |= 0x0f;             // traffic class and flow label
        h[1] = h[2] = h[3] = 0xff;
        h[7] = 0xff;              // hop limit
    }
    std::uint8_t *udp = h + l3len;
    udp[6] = udp[7] = 0xff;       // UDP checksum
    udp[kUdpLen + 4] = 0xff;      // BTH Resv8a
    std::uint32_t c = crc(0, kOnes, sizeof kOnes);
    c = crc(c, h, l3len + kUdpLen + kBthLen);
    const std::size_t done = l3len + kUdpLen + kBthLen;
    return crc(c, l3 + done, len - done);
}

const char *to_string(RoceParse r) noexcept {
    switch (r) {
    case RoceParse::ok: return "ok";
    case RoceParse::not_roce: return "not RoCE v2";
    case RoceParse::malformed: return "malformed";
    case RoceParse::bad_icrc: return "bad ICRC";
    case RoceParse::not_ud_send: return "not a UD SEND";
    }
    return "?";
}

RoceParse roce_parse(const std::uint8_t *f, std::size_t len, RoceRecv *o) noexcept {
    if (len < kEthLen + kIpv4Len + kUdpLen)
        return RoceParse::not_roce;
    std::size_t off = kEthLen;
    std::uint16_t et = get16(f + 12);
    if (et == kEtherVlan) {
        et = get16(f + 16);
        off += 4;
    }
    const std::uint8_t *ip = f + off;
    std::size_t ip_end;  // where the IP packet ends (Ethernet may pad a short one)
    if (et == kEtherIpv4) {
        if (len < off + kIpv4Len + kUdpLen || ip[0] != 0x45 || ip[9] != kIpProtoUdp)
            return RoceParse::not_roce;
        o->ipv4 = true;
        o->sgid = Gid{};
        o->dgid = Gid{};
        o->sgid.raw[10] = o->sgid.raw[11] = o->dgid.raw[10] = o->dgid.raw[11] = 0xff;
        std::memcpy(&o->sgid.raw[12], ip + 12, 4);
        std::memcpy(&o->dgid.raw[12], ip + 16, 4);
        o->traffic_class = ip[1];
        o->hop_limit = ip[8];
        o->flow_label = 0;
        ip_end = off + get16(ip + 2);
        off += kIpv4Len;
    } else if (et == kEtherIpv6) {
        if (len < off + kIpv6Len + kUdpLen || (ip[0] >> 4) != 6 || ip[6] != kIpProtoUdp)
            return RoceParse::not_roce;
        o->ipv4 = false;
        std::memcpy(o->sgid.raw.data(), ip + 8, 16);
        std::memcpy(o->dgid.raw.data(), ip + 24, 16);
        const std::uint32_t w = get32(ip);
        o->traffic_class = static_cast<std::uint8_t>(w >> 20);
        o->flow_label = w & 0xfffff;
        o->hop_limit = ip[7];
        ip_end = off + kIpv6Len + get16(ip + 4);
        off += kIpv6Len;
    } else {
        return RoceParse::not_roce;
    }
    const std::uint8_t *udp = f + off;
    if (get16(udp + 2) != kRoceV2Port)
        return RoceParse::not_roce;
    const std::size_t udp_len = get16(udp + 4);
    if (ip_end > len || off + udp_len != ip_end || udp_len < kUdpLen + kBthLen + kIcrcLen)
        return RoceParse::malformed;
    const std::uint8_t *bth = udp + kUdpLen;
    o->l3 = ip;
    o->opcode = bth[0];
    if ((bth[1] & 0x0f) != 0)  // TVer
        return RoceParse::malformed;
    const std::size_t icrc_at = ip_end - kIcrcLen;
    const std::uint32_t want = roce_icrc(ip, icrc_at - static_cast<std::size_t>(ip - f), o->ipv4);
    const std::uint8_t *ic = f + icrc_at;
    const std::uint32_t got = std::uint32_t{ic[0]} | std::uint32_t{ic[1]} << 8 | std::uint32_t{ic[2]} << 16 |
                              std::uint32_t{ic[3]} << 24;
    if (want != got)
        return RoceParse::bad_icrc;
    if (o->opcode != kOpUdSendOnly)
        return RoceParse::not_ud_send;
    const std::size_t pad = (bth[1] >> 4) & 3;
    if (udp_len < kUdpLen + kBthLen + kDethLen + pad + kIcrcLen)
        return RoceParse::malformed;
    o->pkey = get16(bth + 2);
    o->dest_qp = get32(bth + 4) & 0xffffff;
    o->psn = get32(bth + 8) & 0xffffff;
    const std::uint8_t *deth = bth + kBthLen;
    o->qkey = get32(deth);
    o->src_qp = get32(deth + 4) & 0xffffff;
    o->payload = deth + kDethLen;
    o->payload_len = static_cast<std::uint32_t>(udp_len - kUdpLen - kBthLen - kDethLen - pad - kIcrcLen);
    return RoceParse::ok;
}

bool is_multicast_gid(const Gid &g) noexcept {
    return g.raw[0] == 0xff || (is_ipv4_mapped(g) && (g.raw[12] & 0xf0) == 0xe0);
}

void multicast_mac(const Gid &g, std::uint8_t mac[6]) noexcept {
    if (is_ipv4_mapped(g)) {
        mac[0] = 0x01, mac[1] = 0x00, mac[2] = 0x5e;
        mac[3] = g.raw[13] & 0x7f, mac[4] = g.raw[14], mac[5] = g.raw[15];
    } else {
        mac[0] = mac[1] = 0x33;
        std::memcpy(mac + 2, &g.raw[12], 4);
    }
}

} // namespace ipoib::hca::xdp
