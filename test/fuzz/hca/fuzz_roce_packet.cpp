// SPDX-License-Identifier: BSD-3-Clause
// Fuzz what the xdp provider reads off the wire (lib/hca/src/xdp/
// roce_packet.hpp): any Ethernet frame. Checked: the parser reads only the
// frame (ASan: the input is copied into a buffer of exactly its size); a
// packet it takes lies inside the frame, is a UD SEND, and built again from
// what was parsed (same addresses, QPNs, Q_Key, PSN, P_Key, payload) it
// parses back to the same fields.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../wire/fuzz_common.hpp"
#include "xdp/roce_packet.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::xdp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    auto frame = std::make_unique<std::uint8_t[]>(size ? size : 1);
    if (size)
        std::memcpy(frame.get(), data, size);
    RoceRecv r{};
    const RoceParse res = roce_parse(frame.get(), size, &r);
    if (res != RoceParse::ok)
        return 0;
    const std::uint8_t *begin = frame.get(), *end = frame.get() + size;
    FUZZ_CHECK(r.opcode == kOpUdSendOnly);
    FUZZ_CHECK(r.l3 > begin && r.l3 < end);
    FUZZ_CHECK(r.payload >= r.l3 && r.payload <= end && r.payload_len <= static_cast<std::size_t>(end - r.payload));
    FUZZ_CHECK(r.dest_qp <= 0xffffff && r.src_qp <= 0xffffff && r.psn <= 0xffffff);

    RoceSend s{};
    std::memcpy(s.dmac, begin, 6);
    std::memcpy(s.smac, begin + 6, 6);
    s.ipv4 = r.ipv4;
    s.sgid = r.sgid;
    s.dgid = r.dgid;
    s.traffic_class = r.traffic_class;
    s.hop_limit = r.hop_limit;
    s.flow_label = r.flow_label;
    s.udp_sport = 0xc000;
    s.pkey = r.pkey;
    s.dest_qp = r.dest_qp;
    s.src_qp = r.src_qp;
    s.qkey = r.qkey;
    s.psn = r.psn;
    std::vector<std::uint8_t> out(roce_overhead(r.ipv4) + r.payload_len);
    std::uint8_t *p = out.data() + roce_write_headers(s, r.payload_len, out.data());
    std::memcpy(p, r.payload, r.payload_len);
    out.resize(roce_finish(out.data(), r.ipv4, r.payload_len));
    RoceRecv b{};
    FUZZ_CHECK(roce_parse(out.data(), out.size(), &b) == RoceParse::ok);
    FUZZ_CHECK(b.ipv4 == r.ipv4 && b.sgid == r.sgid && b.dgid == r.dgid);
    FUZZ_CHECK(b.dest_qp == r.dest_qp && b.src_qp == r.src_qp && b.qkey == r.qkey && b.psn == r.psn &&
               b.pkey == r.pkey);
    FUZZ_CHECK(b.payload_len == r.payload_len && std::memcmp(b.payload, r.payload, r.payload_len) == 0);
    return 0;
}
