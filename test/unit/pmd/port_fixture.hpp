// SPDX-License-Identifier: BSD-3-Clause
// A net_ipoib port for in-process tests of the RX and TX steps: the fields
// the control thread would publish, set by hand; its request ring is real.
#pragma once

#include <rte_ip.h>
#include <rte_ring_elem.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "eal_fixture.hpp"
#include "ipoib_port.hpp"
#include "ipoib_rxtx.hpp"
#include "rte_pmd_ipoib.h"

namespace ipoib::test {

inline wire::Gid gid_of(std::uint8_t last) {
    wire::Gid g{};
    const std::uint8_t v[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x0a, 0xbc, last};
    std::memcpy(g.raw.data(), v, 16);
    return g;
}

class FakeAh : public hca::Ah {
  public:
    explicit FakeAh(std::uint16_t dlid) { a_.dlid = dlid; }
    const hca::AhAttr &attr() const noexcept override { return a_; }

  private:
    hca::AhAttr a_;
};

inline constexpr std::uint32_t kOurQpn = 0x48, kPeerQpn = 0x49;
inline constexpr std::uint16_t kOurLid = 1, kPeerLid = 2;

struct TestPort {
    std::unique_ptr<pmd::Port> port = std::make_unique<pmd::Port>();
    pmd::PortData &fp = port->fp;
    FakeAh bcast{0xc000};

    explicit TestPort(pmd::L2Mode l2 = pmd::L2Mode::eth) {
        ensure_eal();
        static int n = 0;
        const std::string name = "test_req_" + std::to_string(n++);
        fp.requests = rte_ring_create_elem(name.c_str(), sizeof(pmd::Request), 64, SOCKET_ID_ANY, RING_F_SC_DEQ);
        REQUIRE(fp.requests);
        REQUIRE(fp.neigh.init(port->cfg.neigh_max, SOCKET_ID_ANY));
        fp.l2 = l2;
        fp.lid = kOurLid;
        fp.qpn = kOurQpn;
        fp.mtu = 2044;
        fp.hwaddr = wire::make_hwaddr(0, kOurQpn, gid_of(1)).value;
        const wire::Mac m = wire::mac_from_guid(wire::guid_from_gid(gid_of(1)));
        std::memcpy(fp.mac.addr_bytes, m.raw.data(), 6);
        fp.bcast_mgid = wire::broadcast_mgid(0xffff).value;
        fp.bcast_ah = &bcast;
        if (l2 == pmd::L2Mode::ipoib) {
            rte_mbuf_dynfield f{};
            rte_strscpy(f.name, RTE_PMD_IPOIB_DYNFIELD_NAME, sizeof f.name);
            f.size = sizeof(struct rte_pmd_ipoib_addr);
            f.align = alignof(struct rte_pmd_ipoib_addr);
            fp.dynfield = rte_mbuf_dynfield_register(&f);
            REQUIRE(fp.dynfield >= 0);
        }
    }
    ~TestPort() { rte_ring_free(fp.requests); }

    std::vector<pmd::Request> requests() {
        std::vector<pmd::Request> out;
        pmd::Request r;
        while (rte_ring_sc_dequeue_elem(fp.requests, &r, sizeof r) == 0)
            out.push_back(r);
        return out;
    }
};

// An IPv4 header (valid checksum) + UDP header + payload of n bytes 0, 1, 2...
inline std::vector<std::uint8_t> ipv4_udp(std::uint32_t dst, std::size_t n, std::uint8_t proto = IPPROTO_UDP) {
    std::vector<std::uint8_t> b(20 + 8 + n);
    auto *ip = reinterpret_cast<rte_ipv4_hdr *>(b.data());
    ip->version_ihl = 0x45;
    ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(b.size()));
    ip->time_to_live = 64;
    ip->next_proto_id = proto;
    ip->src_addr = rte_cpu_to_be_32(0x0a000001);
    ip->dst_addr = rte_cpu_to_be_32(dst);
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    b[20 + 1] = 9;  // UDP ports 9 -> 9
    b[20 + 3] = 9;
    b[20 + 5] = static_cast<std::uint8_t>(8 + n);
    b[20 + 4] = static_cast<std::uint8_t>((8 + n) >> 8);
    for (std::size_t i = 0; i < n; ++i)
        b[28 + i] = static_cast<std::uint8_t>(i);
    return b;
}

} // namespace ipoib::test
