// SPDX-License-Identifier: BSD-3-Clause
// The glue tables' completeness check (a provider refuses a glue with a null
// entry, by name), for each glue: verbs (rdma-core) and xdp (libxdp, libbpf).
// No device needed.
#include <catch2/catch.hpp>

#include <cstring>
#include <set>
#include <span>
#include <string>

#include "provider_common.hpp"
#include "verbs/verbs_glue.hpp"
#include "xdp/xdp_glue.hpp"

using ipoib::hca::common::glue_missing;
using ipoib::hca::common::GlueEntry;

namespace {

template <typename Glue>
void check_table(std::span<const GlueEntry> entries, const char *first, std::size_t first_offset) {
    std::set<std::size_t> offsets;
    for (const GlueEntry &e : entries)
        offsets.insert(e.offset);
    CHECK(offsets.size() == entries.size());

    Glue g;
    std::memset(&g, 0xa5, sizeof g);  // every entry non-null
    CHECK(glue_missing(&g, entries) == nullptr);
    for (const GlueEntry &e : entries) {
        Glue h = g;
        void (*null)() = nullptr;
        std::memcpy(reinterpret_cast<unsigned char *>(&h) + e.offset, &null, sizeof null);
        const char *missing = glue_missing(&h, entries);
        REQUIRE(missing != nullptr);
        CHECK(std::string(missing) == e.name);
    }
    CHECK(std::string(entries[0].name) == first);
    CHECK(entries[0].offset == first_offset);
}

} // namespace

TEST_CASE("verbs glue: every entry is listed once, and a null one is named") {
    using ipoib::hca::verbs::Glue;
    check_table<Glue>(ipoib::hca::verbs::kGlueEntries, "get_device_list", offsetof(Glue, get_device_list));
}

TEST_CASE("xdp glue: every entry is listed once, and a null one is named") {
    using ipoib::hca::xdp::Glue;
    check_table<Glue>(ipoib::hca::xdp::kGlueEntries, "attach_program", offsetof(Glue, attach_program));
}
