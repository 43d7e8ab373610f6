// SPDX-License-Identifier: BSD-3-Clause
// Fuzz the encapsulation header parser and writer.
#include <vector>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace fz;
    auto r = parse_encap(Bytes(data, size));
    if (size < kEncapLen) {
        FUZZ_CHECK(r.err == Error::truncated);
        return 0;
    }
    FUZZ_CHECK(r.ok() == ethertype_allowed(r.value));
    // Write into a buffer whose size the input chooses, so short ones are hit.
    std::vector<std::uint8_t> out(data[2] % 8);
    Error e = write_encap(out, r.value);
    if (!ethertype_allowed(r.value))
        FUZZ_CHECK(e == Error::unsupported_ethertype);
    else if (out.size() < kEncapLen)
        FUZZ_CHECK(e == Error::no_space);
    else {
        FUZZ_CHECK(e == Error::ok);
        auto back = parse_encap(out);
        FUZZ_CHECK(back.ok() && back.value == r.value && out[2] == 0 && out[3] == 0);
    }
    return 0;
}
