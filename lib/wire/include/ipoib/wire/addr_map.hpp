// SPDX-License-Identifier: BSD-3-Clause
// The mapping between 6-byte Ethernet MACs and 20-byte IPoIB addresses that the
// ARP and ND translators consult. The owner (the PMD's neighbour table) decides
// what a mapping is; the translators only call it. A plain pair of function
// pointers plus context: no virtual call, no allocation, usable from C callbacks.
#pragma once

#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/types.hpp"

namespace ipoib::wire {

struct AddrMapper {
    void *ctx = nullptr;
    // MAC seen in an Ethernet frame -> IPoIB address to put on the wire.
    bool (*mac_to_hw)(void *ctx, const Mac &mac, HwAddr *out) = nullptr;
    // IPoIB address seen on the wire -> MAC to show the Ethernet side.
    // The owner may learn (create) a mapping here.
    bool (*hw_to_mac)(void *ctx, const HwAddr &hw, Mac *out) = nullptr;

    bool to_hw(const Mac &m, HwAddr *out) const noexcept { return mac_to_hw && mac_to_hw(ctx, m, out); }
    bool to_mac(const HwAddr &h, Mac *out) const noexcept { return hw_to_mac && hw_to_mac(ctx, h, out); }
};

} // namespace ipoib::wire
