// SPDX-License-Identifier: BSD-3-Clause
// Fuzz the multicast mappings: bytes 0-1 P_Key, byte 2 scope, then an address.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace fz;
    if (size < 3)
        return 0;
    const std::uint16_t pkey = load_be16(data);
    const std::uint8_t scope = data[2];
    const Bytes addr(data + 3, size - 3);

    auto b = broadcast_mgid(pkey, scope);
    FUZZ_CHECK(b.ok() == (pkey_valid(pkey) && scope >= 1 && scope <= 14));
    if (!b.ok())
        return 0;
    FUZZ_CHECK(is_ipoib_mgid(b.value));
    FUZZ_CHECK(mgid_pkey(b.value).value == (pkey | 0x8000));
    FUZZ_CHECK(mgid_scope(b.value).value == scope);

    for (auto r : {ipv4_mcast_mgid(addr, b.value), ipv6_mcast_mgid(addr, b.value)}) {
        if (!r.ok())
            continue;
        FUZZ_CHECK(is_ipoib_mgid(r.value));
        FUZZ_CHECK(mgid_pkey(r.value).value == (pkey | 0x8000));
        FUZZ_CHECK(mgid_scope(r.value).value == scope);
        FUZZ_CHECK(multicast_hwaddr(r.value).qpn() == kMulticastQpn);
    }
    return 0;
}
