// SPDX-License-Identifier: BSD-3-Clause
// Fuzz ND option translation. Byte 0 picks the direction, byte 1 scales the
// output capacity; the rest is an IPv6 packet. The checksum gate would keep
// the fuzzer from ever reaching the option walker, so when byte 0 asks for
// it (bit 1) the ICMPv6 checksum of the input is fixed up first.
#include <vector>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace fz;
    if (size < 2)
        return 0;
    const auto dir = (data[0] & 1) ? NdDirection::eth_to_ib : NdDirection::ib_to_eth;
    std::vector<std::uint8_t> pkt(data + 2, data + size);
    if ((data[0] & 2) && pkt.size() >= kIPv6HeaderLen + 4) {
        const std::size_t plen = load_be16(&pkt[4]);
        if (pkt.size() >= kIPv6HeaderLen + plen && plen >= 4) {
            pkt[42] = pkt[43] = 0;
            const Bytes b(pkt);
            store_be16(&pkt[42], icmpv6_checksum(b.subspan(8, 16), b.subspan(24, 16), b.subspan(40, plen)));
        }
    }
    const std::size_t cap = (pkt.size() + nd_max_growth(pkt, dir)) * data[1] / 255;
    std::vector<std::uint8_t> out(cap);
    const AddrMapper map = mapper();
    auto r = nd_translate(pkt, out, dir, map);
    if (!r.ok())
        return 0;
    FUZZ_CHECK(r.value <= out.size());
    FUZZ_CHECK(r.value == kIPv6HeaderLen + load_be16(&out[4]));
    const Bytes o(out.data(), r.value);
    FUZZ_CHECK(icmpv6_checksum(o.subspan(8, 16), o.subspan(24, 16), o.subspan(40)) == 0);
    if (dir == NdDirection::eth_to_ib) {
        // Ethernet -> IPoIB -> Ethernet gives the packet back (minus padding).
        std::vector<std::uint8_t> back(r.value);
        auto b = nd_translate(o, back, NdDirection::ib_to_eth, map);
        FUZZ_CHECK(b.ok());
        const std::size_t orig = kIPv6HeaderLen + load_be16(&pkt[4]);
        FUZZ_CHECK(b.value == orig && std::memcmp(back.data(), pkt.data(), orig) == 0);
    }
    return 0;
}
