// SPDX-License-Identifier: BSD-3-Clause
// IGMP and MLD membership reports -> group joins and leaves.
#include <catch2/catch.hpp>

#include <vector>

#include "ipoib/wire/membership.hpp"

using namespace ipoib::wire;

namespace {

// (push_back, not insert of an initializer list: g++ 12 warns falsely on those at -O2)
void append(std::vector<std::uint8_t> &m, std::initializer_list<std::uint8_t> bytes) {
    for (std::uint8_t b : bytes)
        m.push_back(b);
}
void append(std::vector<std::uint8_t> &m, const std::vector<std::uint8_t> &bytes) {
    for (std::uint8_t b : bytes)
        m.push_back(b);
}

void set_cksum(std::vector<std::uint8_t> &m) {
    m[2] = m[3] = 0;
    std::uint32_t s = 0;
    for (std::size_t i = 0; i + 1 < m.size(); i += 2)
        s += (std::uint32_t{m[i]} << 8) | m[i + 1];
    if (m.size() & 1)
        s += std::uint32_t{m.back()} << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    m[2] = static_cast<std::uint8_t>(~s >> 8);
    m[3] = static_cast<std::uint8_t>(~s);
}

std::vector<std::uint8_t> igmp(std::uint8_t type, std::vector<std::uint8_t> group) {
    std::vector<std::uint8_t> m{type, 0, 0, 0};
    append(m, group);
    set_cksum(m);
    return m;
}

// An IGMPv3 report; records as (type, group, source count).
std::vector<std::uint8_t> igmpv3(std::initializer_list<std::tuple<std::uint8_t, std::vector<std::uint8_t>, int>> recs) {
    std::vector<std::uint8_t> m{0x22, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(recs.size())};
    for (auto &[type, group, nsrc] : recs) {
        append(m, {type, 0, 0, static_cast<std::uint8_t>(nsrc)});
        append(m, group);
        for (int i = 0; i < nsrc; ++i)
            append(m, {10, 0, 0, static_cast<std::uint8_t>(i + 1)});
    }
    set_cksum(m);
    return m;
}

std::vector<std::uint8_t> v6group(std::uint8_t last) {
    return {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, last};
}

} // namespace

TEST_CASE("membership: IGMPv1/v2 reports join, leaves leave") {
    auto r = parse_igmp(igmp(0x16, {239, 1, 2, 3}));
    REQUIRE(r.ok());
    REQUIRE(r.value.n == 1);
    CHECK(r.value.change[0].join);
    CHECK(!r.value.change[0].ipv6);
    CHECK(r.value.change[0].group[0] == 239);
    CHECK(r.value.change[0].group[3] == 3);
    r = parse_igmp(igmp(0x12, {224, 5, 6, 7}));
    REQUIRE(r.ok());
    CHECK(r.value.n == 1);
    r = parse_igmp(igmp(0x17, {239, 1, 2, 3}));
    REQUIRE(r.ok());
    REQUIRE(r.value.n == 1);
    CHECK(!r.value.change[0].join);
}

TEST_CASE("membership: IGMP queries, bad checksums, short messages, unicast groups") {
    CHECK(parse_igmp(igmp(0x11, {0, 0, 0, 0})).err == Error::not_multicast);  // a query
    auto bad = igmp(0x16, {239, 1, 2, 3});
    bad[7] ^= 1;
    CHECK(parse_igmp(bad).err == Error::bad_icmp_checksum);
    CHECK(parse_igmp(std::vector<std::uint8_t>{0x16, 0, 0}).err == Error::truncated);
    auto uni = parse_igmp(igmp(0x16, {10, 0, 0, 1}));
    REQUIRE(uni.ok());
    CHECK(uni.value.n == 0);
}

TEST_CASE("membership: IGMPv3 records as RFC 3376 defines them, source lists or not") {
    auto r = parse_igmp(igmpv3({{2, {239, 0, 0, 1}, 0},     // MODE_IS_EXCLUDE {}: join
                                 {4, {239, 0, 0, 2}, 1},     // TO_EX: join
                                 {3, {239, 0, 0, 3}, 0},     // TO_IN {}: leave
                                 {1, {239, 0, 0, 4}, 2},     // IS_IN with sources: join
                                 {6, {239, 0, 0, 5}, 1},     // BLOCK: nothing
                                 {5, {239, 0, 0, 6}, 1}}));  // ALLOW: join
    REQUIRE(r.ok());
    REQUIRE(r.value.n == 5);
    const bool want[] = {true, true, false, true, true};
    const std::uint8_t last[] = {1, 2, 3, 4, 6};
    for (unsigned i = 0; i < 5; ++i) {
        CHECK(r.value.change[i].join == want[i]);
        CHECK(r.value.change[i].group[3] == last[i]);
    }
    auto cut = igmpv3({{2, {239, 0, 0, 1}, 3}});
    cut.resize(cut.size() - 4);  // the last source missing
    set_cksum(cut);
    CHECK(parse_igmp(cut).err == Error::truncated);
}

TEST_CASE("membership: more records than kept are reported as truncated") {
    std::vector<std::uint8_t> m{0x22, 0, 0, 0, 0, 0, 0, 20};
    for (std::uint8_t i = 0; i < 20; ++i)
        append(m, {2, 0, 0, 0, 239, 0, 0, i});
    set_cksum(m);
    auto r = parse_igmp(m);
    REQUIRE(r.ok());
    CHECK(r.value.n == kMaxGroupChanges);
    CHECK(r.value.truncated);
}

TEST_CASE("membership: MLDv1 report and done, MLDv2 records, other ICMPv6 left alone") {
    std::vector<std::uint8_t> v1{131, 0, 0, 0, 0, 0, 0, 0};
    const auto g = v6group(0x42);
    append(v1, g);
    auto r = parse_mld(v1);
    REQUIRE(r.ok());
    REQUIRE(r.value.n == 1);
    CHECK(r.value.change[0].ipv6);
    CHECK(r.value.change[0].join);
    CHECK(r.value.change[0].group == std::array<std::uint8_t, 16>{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0,
                                                                  0, 0x42});
    v1[0] = 132;
    r = parse_mld(v1);
    REQUIRE(r.ok());
    CHECK(!r.value.change[0].join);

    std::vector<std::uint8_t> v2{143, 0, 0, 0, 0, 0, 0, 2};
    for (auto [type, last] : {std::pair<std::uint8_t, std::uint8_t>{4, 0x10}, {3, 0x11}}) {
        append(v2, {type, 0, 0, 0});
        const auto gg = v6group(last);
        append(v2, gg);
    }
    r = parse_mld(v2);
    REQUIRE(r.ok());
    REQUIRE(r.value.n == 2);
    CHECK(r.value.change[0].join);
    CHECK(!r.value.change[1].join);
    CHECK(r.value.change[1].group[15] == 0x11);

    CHECK(parse_mld(std::vector<std::uint8_t>{135, 0, 0, 0}).err == Error::not_nd);  // a neighbour solicitation
    CHECK(parse_mld(std::vector<std::uint8_t>{131, 0, 0, 0}).err == Error::truncated);
    v2.resize(v2.size() - 3);
    CHECK(parse_mld(v2).err == Error::truncated);
}
