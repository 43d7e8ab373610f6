// SPDX-License-Identifier: BSD-3-Clause
// Helpers for the wire-format tests: hex vectors and a small address table
// standing in for the PMD's neighbour table.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>

#include "ipoib/wire.hpp"

namespace wt {

using namespace ipoib::wire;

inline std::vector<std::uint8_t> hex(std::string_view s) {
    std::vector<std::uint8_t> out;
    int hi = -1;
    for (char c : s) {
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            continue;  // spaces and separators are for the reader
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<std::uint8_t>(hi << 4 | v));
            hi = -1;
        }
    }
    return out;
}

inline HwAddr hw(std::string_view text) {
    auto r = parse_hwaddr_text(text);
    return r.value;
}

inline Mac mac(std::string_view s) {
    auto b = hex(s);
    Mac m;
    for (std::size_t i = 0; i < 6 && i < b.size(); ++i)
        m.raw[i] = b[i];
    return m;
}

// Two hosts: A (02:00:00:00:00:0a) and B (02:00:00:00:00:0b), as in the
// captures the vectors come from, each with an IPoIB address.
struct Table {
    struct Entry {
        Mac mac;
        HwAddr hw;
    };
    std::vector<Entry> entries{
        {mac("02:00:00:00:00:0a"), hw("80:00:00:48:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de")},
        {mac("02:00:00:00:00:0b"), hw("00:00:04:05:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0b:00:01")},
    };
    int lookups = 0;

    static bool to_hw(void *ctx, const Mac &m, HwAddr *out) {
        auto *t = static_cast<Table *>(ctx);
        ++t->lookups;
        for (auto &e : t->entries)
            if (e.mac == m) {
                *out = e.hw;
                return true;
            }
        return false;
    }
    static bool to_mac(void *ctx, const HwAddr &h, Mac *out) {
        auto *t = static_cast<Table *>(ctx);
        ++t->lookups;
        for (auto &e : t->entries)
            if (e.hw == h) {
                *out = e.mac;
                return true;
            }
        return false;
    }
    AddrMapper mapper() { return AddrMapper{this, &Table::to_hw, &Table::to_mac}; }
};

} // namespace wt

// Print wire errors by name in failed assertions.
namespace Catch {
template <>
struct StringMaker<ipoib::wire::Error> {
    static std::string convert(ipoib::wire::Error e) { return ipoib::wire::describe(e); }
};
} // namespace Catch
