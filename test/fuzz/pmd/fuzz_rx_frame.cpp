// SPDX-License-Identifier: BSD-3-Clause
// Fuzz target: a received IB datagram through net_ipoib's receive step
// (rx_frame): the GRH area, the IPoIB header, ARP/ND translation, scatter.
// Input: byte 0 flags (bit 0 native mode, bit 1 GRH present, bit 2 RoCE,
// bit 3 scatter), bytes 1-2 source LID, 3-5 source QPN, then 40 bytes of GRH
// area if bit 1, then the datagram. Whatever comes, rx_frame returns a
// well-formed mbuf chain or nothing (counted), and frees what it does not return.
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring_elem.h>

#include <cstring>
#include <memory>
#include <vector>

#include "../wire/fuzz_common.hpp"
#include "ipoib_rxtx.hpp"
#include "rte_pmd_ipoib.h"

using namespace ipoib;
using namespace ipoib::pmd;

namespace {

rte_mempool *g_pool;
Port *g_port;

std::uint64_t rx_total(const RxStats &s) {
    return s.packets + s.errors + s.nombuf + s.loopback_discard + s.unsupported_ethertype + s.translate_errors +
           s.bad_frames + s.too_long;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    static const char *argv[] = {"fuzz_rx_frame", "--no-huge", "-m", "64", "--no-pci", "--no-shconf",
                                 "--no-telemetry", "--log-level=lib.eal:error", nullptr};
    if (rte_eal_init(static_cast<int>(std::size(argv)) - 1, const_cast<char **>(argv)) < 0)
        std::abort();
    g_pool = rte_pktmbuf_pool_create("fuzz", 256, 0, 0, 512 + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
    g_port = new Port();
    PortData &fp = g_port->fp;
    fp.requests = rte_ring_create_elem("fuzz_req", sizeof(Request), 64, SOCKET_ID_ANY, RING_F_SC_DEQ);
    rte_mbuf_dynfield f{};
    rte_strscpy(f.name, RTE_PMD_IPOIB_DYNFIELD_NAME, sizeof f.name);
    f.size = sizeof(struct rte_pmd_ipoib_addr);
    f.align = alignof(struct rte_pmd_ipoib_addr);
    fp.dynfield = rte_mbuf_dynfield_register(&f);
    if (!g_pool || !fp.requests || fp.dynfield < 0)
        std::abort();
    fp.lid = 1;
    fp.qpn = 0x48;
    fp.mtu = 4092;
    wire::Gid gid{};
    gid.raw[0] = 0xfe;
    gid.raw[1] = 0x80;
    gid.raw[15] = 1;
    fp.hwaddr = wire::make_hwaddr(0, fp.qpn, gid).value;
    fp.bcast_mgid = wire::broadcast_mgid(0xffff).value;
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    if (size < 6)
        return 0;
    const std::uint8_t flags = data[0];
    const bool grh = flags & 2;
    if (grh && size < 6 + hca::kGrhLen)
        return 0;
    g_port->fp.l2 = flags & 1 ? L2Mode::ipoib : L2Mode::eth;
    g_port->fp.roce = flags & 4;
    std::unique_ptr<RxQueue> q(rx_queue_create(g_port, 0, g_pool, flags & 8));
    // The receive buffer: GRH area, then the datagram (the HCA never writes more than it holds).
    std::vector<std::uint8_t> buf(hca::kGrhLen);
    std::size_t at = 6;
    if (grh) {
        std::memcpy(buf.data(), data + at, hca::kGrhLen);
        at += hca::kGrhLen;
    }
    buf.insert(buf.end(), data + at, data + size);
    hca::Wc wc{};
    wc.status = hca::WcStatus::success;
    wc.opcode = hca::WcOpcode::recv;
    wc.wc_flags = grh ? hca::kWcGrh : 0;
    wc.byte_len = static_cast<std::uint32_t>(buf.size());
    wc.slid = static_cast<std::uint16_t>(data[1] << 8 | data[2]);
    wc.src_qp = std::uint32_t{data[3]} << 16 | std::uint32_t{data[4]} << 8 | data[5];
    const unsigned before = rte_mempool_avail_count(g_pool);
    rte_mbuf *m = rx_frame(q.get(), wc, buf.data());
    FUZZ_CHECK(rx_total(q->st) == 1);  // every frame delivered or counted once
    if (m) {
        std::uint32_t sum = 0, segs = 0;
        for (rte_mbuf *s = m; s; s = s->next, ++segs)
            sum += s->data_len;
        FUZZ_CHECK(sum == m->pkt_len && segs == m->nb_segs);
        FUZZ_CHECK(q->scatter || segs == 1);
        if (g_port->fp.l2 == L2Mode::eth)
            FUZZ_CHECK(m->pkt_len >= RTE_ETHER_HDR_LEN);
        rte_pktmbuf_free(m);
    }
    // Nothing leaked: what the pool misses is the queue's cache of fresh mbufs (freed with the queue).
    FUZZ_CHECK(rte_mempool_avail_count(g_pool) + q->nspare_mbufs == before);
    Request r;
    while (rte_ring_sc_dequeue_elem(g_port->fp.requests, &r, sizeof r) == 0) {
    }
    return 0;
}
