// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/wire/membership.hpp"

#include <cstring>

namespace ipoib::wire {

namespace {

constexpr std::uint8_t kIgmpV1Report = 0x12, kIgmpV2Report = 0x16, kIgmpLeave = 0x17, kIgmpV3Report = 0x22;
constexpr std::size_t kIgmpLen = 8, kIgmpV3Head = 8, kIgmpV3Record = 8;
constexpr std::size_t kMldV1Len = 24, kMldV2Head = 8, kMldV2Record = 20;
enum RecordType : std::uint8_t {
    kModeIsInclude = 1,
    kModeIsExclude = 2,
    kChangeToInclude = 3,
    kChangeToExclude = 4,
    kAllowNew = 5,
    kBlockOld = 6,
};

bool multicast4(const std::uint8_t *a) { return (a[0] & 0xf0) == 0xe0; }
bool multicast6(const std::uint8_t *a) { return a[0] == 0xff; }

void add(GroupChanges &out, const std::uint8_t *addr, bool v6, bool join) {
    if (!(v6 ? multicast6(addr) : multicast4(addr)))
        return;
    if (out.n == kMaxGroupChanges) {
        out.truncated = true;
        return;
    }
    GroupChange &c = out.change[out.n++];
    std::memcpy(c.group.data(), addr, v6 ? 16 : 4);
    c.ipv6 = v6;
    c.join = join;
}

// A v3/v2 record: true = join, false = leave, no value = no change.
int record_effect(std::uint8_t type, std::uint16_t nsrc) {
    switch (type) {
    case kModeIsExclude:
    case kChangeToExclude: return 1;
    case kModeIsInclude:
    case kChangeToInclude:
    case kAllowNew: return nsrc ? 1 : 0;
    case kBlockOld: return -1;
    default: return -1;  // unknown record types are ignored (RFC 3376 4.2.12)
    }
}

std::uint16_t sum16(Bytes b) {
    std::uint32_t s = 0;
    for (std::size_t i = 0; i + 1 < b.size(); i += 2)
        s += load_be16(b.data() + i);
    if (b.size() & 1)
        s += std::uint32_t{b[b.size() - 1]} << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return static_cast<std::uint16_t>(s);
}

// Records of a v3 / v2 report: type, aux words, source count, group, sources.
Result<GroupChanges> records(Bytes b, std::size_t head, std::size_t rec_fixed, std::size_t addr_len, bool v6) {
    GroupChanges out;
    const std::uint16_t count = load_be16(b.data() + 6);
    std::size_t off = head;
    for (unsigned r = 0; r < count; ++r) {
        if (off + rec_fixed > b.size())
            return Result<GroupChanges>::fail(Error::truncated);
        const std::uint8_t type = b[off];
        const std::size_t aux = std::size_t{b[off + 1]} * 4;
        const std::uint16_t nsrc = load_be16(b.data() + off + 2);
        const std::size_t len = rec_fixed + std::size_t{nsrc} * addr_len + aux;
        if (off + len > b.size())
            return Result<GroupChanges>::fail(Error::truncated);
        if (const int e = record_effect(type, nsrc); e >= 0)
            add(out, b.data() + off + 4, v6, e == 1);
        off += len;
    }
    return Result<GroupChanges>{out};
}

} // namespace

Result<GroupChanges> parse_igmp(Bytes b) noexcept {
    if (b.size() < kIgmpLen)
        return Result<GroupChanges>::fail(Error::truncated);
    if (sum16(b) != 0xffff)
        return Result<GroupChanges>::fail(Error::bad_icmp_checksum);
    GroupChanges out;
    switch (b[0]) {
    case kIgmpV1Report:
    case kIgmpV2Report: add(out, b.data() + 4, false, true); return Result<GroupChanges>{out};
    case kIgmpLeave: add(out, b.data() + 4, false, false); return Result<GroupChanges>{out};
    case kIgmpV3Report: return records(b, kIgmpV3Head, kIgmpV3Record, 4, false);
    default: return Result<GroupChanges>::fail(Error::not_multicast);
    }
}

Result<GroupChanges> parse_mld(Bytes b) noexcept {
    if (b.empty() || (b[0] != kMldReport && b[0] != kMldDone && b[0] != kMldv2Report))
        return Result<GroupChanges>::fail(Error::not_nd);
    GroupChanges out;
    if (b[0] == kMldv2Report)
        return b.size() < kMldV2Head ? Result<GroupChanges>::fail(Error::truncated)
                                     : records(b, kMldV2Head, kMldV2Record, 16, true);
    if (b.size() < kMldV1Len)
        return Result<GroupChanges>::fail(Error::truncated);
    add(out, b.data() + 8, true, b[0] == kMldReport);
    return Result<GroupChanges>{out};
}

} // namespace ipoib::wire
