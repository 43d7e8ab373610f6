// SPDX-License-Identifier: BSD-3-Clause
// Fuzz ARP translation in both directions. Byte 0 picks the direction and
// byte 1 the output capacity; the rest is the ARP payload.
#include <vector>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace fz;
    if (size < 2)
        return 0;
    const bool eth_to_ib = data[0] & 1;
    const Bytes in(data + 2, size - 2);
    std::vector<std::uint8_t> out(data[1] % 80);  // exact size: ASan sees any overrun
    const AddrMapper map = mapper();

    if (eth_to_ib) {
        auto r = arp_eth_to_ib(in, out, map);
        if (!r.ok())
            return 0;
        FUZZ_CHECK(r.value == kIbArpLen && in.size() >= kEthArpLen);
        std::vector<std::uint8_t> back(kEthArpLen);
        auto b = arp_ib_to_eth(Bytes(out.data(), r.value), back, map);
        FUZZ_CHECK(b.ok());
        // Round trip restores the payload, except that a broadcast target MAC
        // comes back as the all-zero "unknown" one.
        Mac tha;
        std::memcpy(tha.raw.data(), in.data() + 18, 6);
        if (!tha.is_broadcast())
            FUZZ_CHECK(std::memcmp(back.data(), in.data(), kEthArpLen) == 0);
    } else {
        auto r = arp_ib_to_eth(in, out, map);
        if (!r.ok())
            return 0;
        FUZZ_CHECK(r.value == kEthArpLen && in.size() >= kIbArpLen);
        std::vector<std::uint8_t> back(kIbArpLen);
        FUZZ_CHECK(arp_eth_to_ib(Bytes(out.data(), r.value), back, map).ok());
        // Same exception the other way: a target that maps to the zero or
        // broadcast MAC reads as "unknown" on the way back.
        Mac tha;
        std::memcpy(tha.raw.data(), out.data() + 18, 6);
        if (!tha.is_zero() && !tha.is_broadcast())
            FUZZ_CHECK(std::memcmp(back.data(), in.data(), kIbArpLen) == 0);
    }
    return 0;
}
