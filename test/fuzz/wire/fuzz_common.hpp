// SPDX-License-Identifier: BSD-3-Clause
// Shared pieces of the wire-format fuzz targets: a bijective address mapper
// (so translations can be checked by translating back) and a check macro
// that aborts, which libFuzzer reports as a crash with its input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ipoib/wire.hpp"

#define FUZZ_CHECK(cond)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

namespace fz {
using namespace ipoib::wire;

// MAC m <-> 00:00:00:00 fe80::m0:m1:m2:ff:fe:m3:m4:m5; anything else is unmapped.
inline bool to_hw(void *, const Mac &m, HwAddr *out) {
    HwAddr h;
    h.raw[4] = 0xfe;
    h.raw[5] = 0x80;
    h.raw[12] = m.raw[0];
    h.raw[13] = m.raw[1];
    h.raw[14] = m.raw[2];
    h.raw[15] = 0xff;
    h.raw[16] = 0xfe;
    h.raw[17] = m.raw[3];
    h.raw[18] = m.raw[4];
    h.raw[19] = m.raw[5];
    *out = h;
    return true;
}
inline bool to_mac(void *, const HwAddr &h, Mac *out) {
    HwAddr probe;
    Mac m{{h.raw[12], h.raw[13], h.raw[14], h.raw[17], h.raw[18], h.raw[19]}};
    to_hw(nullptr, m, &probe);
    if (!(probe == h))
        return false;
    *out = m;
    return true;
}
inline AddrMapper mapper() { return AddrMapper{nullptr, &to_hw, &to_mac}; }
} // namespace fz
