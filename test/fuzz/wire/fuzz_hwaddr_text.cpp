// SPDX-License-Identifier: BSD-3-Clause
// Fuzz the textual and binary hardware-address / GID parsers.
#include <cctype>
#include <string>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace fz;
    const std::string_view text(reinterpret_cast<const char *>(data), size);
    if (auto r = parse_hwaddr_text(text); r.ok()) {
        // Accepted text is exactly the canonical form, up to case.
        const std::string back = to_string(r.value);
        FUZZ_CHECK(back.size() == text.size());
        for (std::size_t i = 0; i < back.size(); ++i)
            FUZZ_CHECK(back[i] == std::tolower(static_cast<unsigned char>(text[i])));
    }
    if (auto g = parse_gid_text(text); g.ok()) {
        auto again = parse_gid_text(to_string(g.value));
        FUZZ_CHECK(again.ok() && again.value == g.value);
    }
    if (auto b = parse_hwaddr(Bytes(data, size)); b.ok()) {
        FUZZ_CHECK(size >= kHwAddrLen);
        FUZZ_CHECK(std::memcmp(b.value.raw.data(), data, kHwAddrLen) == 0);
        auto t = parse_hwaddr_text(to_string(b.value));
        FUZZ_CHECK(t.ok() && t.value == b.value);
    } else {
        FUZZ_CHECK(size < kHwAddrLen);
    }
    return 0;
}
