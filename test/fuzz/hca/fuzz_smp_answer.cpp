// SPDX-License-Identifier: BSD-3-Clause
// Fuzz what the software HCA reads from the SM by SMP (lib/hca/src/soft/
// smp_client.hpp): the decoders of PortInfo, NodeInfo and a P_KeyTable
// block. Input: the local port number (1 byte), then a PortInfo, a NodeInfo
// and a P_KeyTable block (64 bytes each, zeros past the end of the input).
// Checked against the IBA layout read here by offset (not through libibmad's
// field tables) and the rules written down again here: an answer is taken
// exactly when it is valid, a refused one leaves the snapshot as it was and
// says why, and what is taken is what the bytes say, or (for a DOWN port,
// whose other fields may be anything, IBA C14-24.2.1) harmless.
#include <cstdint>
#include <cstring>
#include <string>

#include "../wire/fuzz_common.hpp"
#include "soft/smp_client.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::soft;

namespace {

std::uint16_t be16(const std::uint8_t *b) { return static_cast<std::uint16_t>(b[0] << 8 | b[1]); }
std::uint64_t be64(const std::uint8_t *b) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v = v << 8 | b[i];
    return v;
}

bool unicast(std::uint32_t lid) { return lid >= 1 && lid < kMulticastLidBase; }
bool mtu_code(std::uint32_t c) { return c >= 1 && c <= 5; }

// PortInfo (IBA 14.2.5.6) by offset.
struct Pi {
    std::uint64_t prefix;
    std::uint16_t lid, sm_lid;
    std::uint8_t state, phys, lmc, neigh_mtu, sm_sl, mtu_cap;
    explicit Pi(const std::uint8_t *b)
        : prefix(be64(b + 8)), lid(be16(b + 16)), sm_lid(be16(b + 18)), state(b[32] & 0xf),
          phys(static_cast<std::uint8_t>(b[33] >> 4)), lmc(b[34] & 7), neigh_mtu(static_cast<std::uint8_t>(b[36] >> 4)),
          sm_sl(b[36] & 0xf), mtu_cap(b[41] & 0xf) {}
    // What a port that is not DOWN may answer.
    bool valid() const {
        if (state < 1 || state > 4 || phys < 1 || phys > 7)
            return false;
        if (state == 1)  // DOWN: only PortState and PortPhysicalState mean anything
            return true;
        if (lid >= kMulticastLidBase || (lid == 0 && state >= 3) || sm_lid >= kMulticastLidBase)
            return false;
        if (lid && lid + (1u << lmc) - 1 >= kMulticastLidBase)
            return false;
        return mtu_code(mtu_cap) && mtu_code(neigh_mtu) && neigh_mtu <= mtu_cap && (prefix >> 56) != 0xff;
    }
};

PortAttr sentinel() {
    PortAttr a;
    a.state = PortState::armed;
    a.link_layer = LinkLayer::infiniband;
    a.phys_state = 0x5a;
    a.lid = 0xa5a5;
    a.sm_lid = 0x5a5a;
    a.sm_sl = 0xee;
    a.lmc = 0xdd;
    a.max_mtu = Mtu::mtu512;
    a.active_mtu = Mtu::mtu256;
    a.subnet_prefix = 0x0123456789abcdefull;
    a.port_guid = 0xfedcba9876543210ull;
    a.pkey_tbl_len = 77;
    a.gid_tbl_len = 3;
    a.port_num = 0xcafe;
    return a;
}

bool same(const PortAttr &a, const PortAttr &b) {
    return a.state == b.state && a.link_layer == b.link_layer && a.phys_state == b.phys_state && a.lid == b.lid &&
           a.sm_lid == b.sm_lid && a.sm_sl == b.sm_sl && a.lmc == b.lmc && a.max_mtu == b.max_mtu &&
           a.active_mtu == b.active_mtu && a.subnet_prefix == b.subnet_prefix && a.port_guid == b.port_guid &&
           a.pkey_tbl_len == b.pkey_tbl_len && a.gid_tbl_len == b.gid_tbl_len && a.port_num == b.port_num;
}

void port_info(std::uint8_t port, const std::uint8_t *buf) {
    const Pi pi(buf);
    const PortAttr before = sentinel();
    PortAttr a = before;
    std::string err;
    const bool ok = decode_port_info(buf, port, &a, &err);
    FUZZ_CHECK(ok == pi.valid());
    if (!ok) {
        FUZZ_CHECK(!err.empty() && same(a, before));
        return;
    }
    // Whatever the state: what the HCA reports is in range.
    FUZZ_CHECK(a.port_num == port && static_cast<unsigned>(a.state) == pi.state && a.phys_state == pi.phys);
    FUZZ_CHECK(a.lid < kMulticastLidBase && a.sm_lid < kMulticastLidBase);
    FUZZ_CHECK(mtu_code(static_cast<unsigned>(a.max_mtu)) && mtu_code(static_cast<unsigned>(a.active_mtu)));
    FUZZ_CHECK(a.sm_sl == pi.sm_sl && a.lmc == pi.lmc && a.subnet_prefix == pi.prefix);
    // Not PortInfo's: left as they were.
    FUZZ_CHECK(a.port_guid == before.port_guid && a.pkey_tbl_len == before.pkey_tbl_len &&
               a.gid_tbl_len == before.gid_tbl_len && a.link_layer == before.link_layer);
    if (pi.state != 1) {
        // A live port: exactly what it answered.
        FUZZ_CHECK(a.lid == pi.lid && a.sm_lid == pi.sm_lid);
        FUZZ_CHECK(static_cast<unsigned>(a.max_mtu) == pi.mtu_cap && static_cast<unsigned>(a.active_mtu) == pi.neigh_mtu);
    } else {
        // DOWN: its LIDs only if they are unicast ones, its MTUs only if they are codes.
        FUZZ_CHECK(a.lid == (unicast(pi.lid) ? pi.lid : 0) && a.sm_lid == (unicast(pi.sm_lid) ? pi.sm_lid : 0));
        if (mtu_code(pi.mtu_cap))
            FUZZ_CHECK(static_cast<unsigned>(a.max_mtu) == pi.mtu_cap);
        if (mtu_code(pi.neigh_mtu))
            FUZZ_CHECK(static_cast<unsigned>(a.active_mtu) == pi.neigh_mtu);
    }
}

// NodeInfo (IBA 14.2.5.3) by offset.
void node_info(const std::uint8_t *buf) {
    const std::uint64_t node_guid = be64(buf + 12), port_guid = be64(buf + 20);
    const std::uint8_t nports = buf[3];
    const NodeIdentity before{1, 2, 3};
    NodeIdentity n = before;
    std::string err;
    const bool ok = decode_node_info(buf, &n, &err);
    FUZZ_CHECK(ok == (node_guid != 0 && port_guid != 0 && nports != 0));
    if (ok)
        FUZZ_CHECK(n.node_guid == node_guid && n.port1_guid == port_guid && n.num_ports == nports);
    else
        FUZZ_CHECK(!err.empty() && n.node_guid == 1 && n.port1_guid == 2 && n.num_ports == 3);
}

void pkey_block(const std::uint8_t *buf) {
    std::uint16_t keys[34];
    keys[32] = keys[33] = 0x1234;
    decode_pkey_block(buf, keys);
    for (int i = 0; i < 32; ++i)
        FUZZ_CHECK(keys[i] == be16(buf + 2 * i));
    FUZZ_CHECK(keys[32] == 0x1234 && keys[33] == 0x1234);  // 32 entries, no more
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::uint8_t in[1 + 3 * kSmpDataLen] = {};
    std::memcpy(in, data, size < sizeof in ? size : sizeof in);
    port_info(in[0], in + 1);
    node_info(in + 1 + kSmpDataLen);
    pkey_block(in + 1 + 2 * kSmpDataLen);
    return 0;
}
