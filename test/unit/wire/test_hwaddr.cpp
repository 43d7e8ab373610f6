// SPDX-License-Identifier: BSD-3-Clause
#include <catch2/catch.hpp>

#include "fixtures.hpp"

using namespace wt;

// As `ip link` prints a ConnectX port in connected mode: RC flag, QPN 0x000048,
// GID fe80::2:c903:a:bcde.
static constexpr std::string_view kLinuxText = "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de";

TEST_CASE("hwaddr: fields of a known address", "[hwaddr]") {
    auto bytes = hex("80000048 fe800000000000000002c903000abcde");
    auto r = parse_hwaddr(bytes);
    REQUIRE(r.ok());
    CHECK(r.value.flags() == 0x80);
    CHECK(r.value.rc_capable());
    CHECK_FALSE(r.value.uc_capable());
    CHECK(r.value.qpn() == 0x48);
    CHECK(to_string(r.value.gid()) == "fe80::2:c903:a:bcde");
    CHECK(to_string(r.value) == kLinuxText);
}

TEST_CASE("hwaddr: make packs flags, 24-bit QPN and GID", "[hwaddr]") {
    auto gid = parse_gid_text("fe80::2:c903:a:bcde");
    REQUIRE(gid.ok());
    auto a = make_hwaddr(kHwFlagRc | kHwFlagUc, 0xabcdef, gid.value);
    REQUIRE(a.ok());
    CHECK(a.value.raw[0] == 0xc0);
    CHECK(a.value.raw[1] == 0xab);
    CHECK(a.value.raw[2] == 0xcd);
    CHECK(a.value.raw[3] == 0xef);
    CHECK(a.value.qpn() == 0xabcdef);
    CHECK(a.value.gid() == gid.value);
    CHECK(to_string(a.value) == "c0:ab:cd:ef:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de");
}

TEST_CASE("hwaddr: QPN wider than 24 bits is refused", "[hwaddr][malformed]") {
    CHECK(make_hwaddr(0, 0x1000000, Gid{}).err == Error::bad_qpn);
    CHECK(make_hwaddr(0, 0xffffffff, Gid{}).err == Error::bad_qpn);
    CHECK(make_hwaddr(0, 0xffffff, Gid{}).ok());
}

TEST_CASE("hwaddr: truncated binary input and short output", "[hwaddr][malformed]") {
    auto bytes = hex("80000048 fe800000000000000002c903000abcde");
    for (std::size_t n = 0; n < kHwAddrLen; ++n)
        CHECK(parse_hwaddr(Bytes(bytes.data(), n)).err == Error::truncated);
    std::vector<std::uint8_t> out(kHwAddrLen - 1, 0xee);
    CHECK(write_hwaddr(hw(kLinuxText), out) == Error::no_space);
    for (auto b : out)
        CHECK(b == 0xee);  // nothing written
    out.resize(kHwAddrLen);
    CHECK(write_hwaddr(hw(kLinuxText), out) == Error::ok);
    CHECK(out == bytes);
}

TEST_CASE("hwaddr: text round trip and case", "[hwaddr]") {
    auto r = parse_hwaddr_text("80:00:00:48:FE:80:00:00:00:00:00:00:00:02:C9:03:00:0A:BC:DE");
    REQUIRE(r.ok());
    CHECK(to_string(r.value) == kLinuxText);
    char small[kHwAddrTextLen];
    CHECK(format_hwaddr(r.value, small) == Error::no_space);
}

TEST_CASE("hwaddr: malformed text is refused", "[hwaddr][malformed]") {
    const char *bad[] = {
        "",
        "80:00:00:48",
        "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc",      // 19 bytes
        "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de:",  // trailing colon
        "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:dg",   // not hex
        "80-00-00-48-fe-80-00-00-00-00-00-00-00-02-c9-03-00-0a-bc-de",   // wrong separator
        "8:000:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de",   // misplaced colon
        "80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de:00",
    };
    for (const char *s : bad) {
        INFO(s);
        CHECK(parse_hwaddr_text(s).err == Error::bad_text);
    }
}

TEST_CASE("gid: text forms", "[gid]") {
    auto g = parse_gid_text("ff12:401b:ffff::ffff:ffff");
    REQUIRE(g.ok());
    CHECK(g.value.is_multicast());
    CHECK(g.value.raw[0] == 0xff);
    CHECK(g.value.raw[1] == 0x12);
    CHECK(g.value.raw[4] == 0xff);
    CHECK(g.value.raw[15] == 0xff);
    CHECK(to_string(g.value) == "ff12:401b:ffff::ffff:ffff");
    CHECK(parse_gid_text("").err == Error::bad_text);
    CHECK(parse_gid_text("fe80::1::2").err == Error::bad_text);
    CHECK(parse_gid_text("10.0.0.1").err == Error::bad_text);
    CHECK(parse_gid_text(std::string(100, '1')).err == Error::bad_text);
}

TEST_CASE("describe: every error has a distinct message", "[errors]") {
    std::vector<std::string> seen;
    for (int e = 0; e < static_cast<int>(Error::count_); ++e) {
        std::string d = describe(static_cast<Error>(e));
        CHECK(d != "unknown error");
        for (auto &s : seen)
            CHECK(s != d);
        seen.push_back(d);
    }
}
