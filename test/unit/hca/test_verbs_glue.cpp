// SPDX-License-Identifier: BSD-3-Clause
// The verbs glue table's completeness check (the provider refuses a glue
// with a null entry, by name). No rdma-core device needed.
#include <catch2/catch.hpp>

#include <cstring>
#include <set>
#include <string>

#include "verbs/verbs_glue.hpp"

using namespace ipoib::hca::verbs;

TEST_CASE("verbs glue: every entry is listed once, and a null one is named") {
    std::set<std::size_t> offsets;
    for (const GlueEntry &e : kGlueEntries)
        offsets.insert(e.offset);
    CHECK(offsets.size() == std::size(kGlueEntries));

    Glue g;
    std::memset(&g, 0xa5, sizeof g);  // every entry non-null
    std::string missing;
    CHECK(glue_complete(g, &missing));
    for (const GlueEntry &e : kGlueEntries) {
        Glue h = g;
        void (*null)() = nullptr;
        std::memcpy(reinterpret_cast<unsigned char *>(&h) + e.offset, &null, sizeof null);
        CHECK(!glue_complete(h, &missing));
        CHECK(missing == e.name);
    }
    CHECK(std::string(kGlueEntries[0].name) == "get_device_list");
    CHECK(kGlueEntries[0].offset == offsetof(Glue, get_device_list));
}
