// SPDX-License-Identifier: BSD-3-Clause
// Neighbour-table scale: the cost per packet of net_ipoib's transmit path
// (the driver's own tx_burst: neighbour lookup by destination MAC, IPoIB
// encapsulation, work requests, completions) when destinations are drawn at
// random from N resolved neighbours, for N = 10 ... 100,000. In-process: the
// port's fields the control thread would publish are set by hand, and the
// HCA is a stand-in whose send queue completes every work request at once
// (one virtual call per burst, as a provider's), so what is measured is the
// driver. Prints ns/packet (min and median of the runs) and the ratio to
// N = 10; writes the same as CSV. Asserts nothing.
//
// Pages: DPDK applications run on hugepages. Given a hugetlbfs directory
// (HUGE_DIR, with 64 MB of free 2 MB pages), the bench's memory is there;
// without one it runs with --no-huge (EAL's memory is a memfd of 4 KB pages),
// and at N >= 10,000 the 16.8 MB table also costs TLB misses (more pages
// than the TLB holds) that a hugepage-backed table does not.
//
// usage: neigh-bench [RUNS (7)] [PACKETS per run (4000000)] [CSV file or ""]
//                    [NEIGH_MAX (100000); N above it are skipped] [HUGE_DIR]
#include <rte_eal.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_ring_elem.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ipoib_port.hpp"
#include "ipoib_rxtx.hpp"

using namespace ipoib;
using namespace ipoib::pmd;

namespace {

constexpr std::uint32_t kTableMaxDefault = 100000;  // neigh_max of the port in every run
constexpr std::uint16_t kBurst = 32;
constexpr std::size_t kSequence = 1u << 20;  // destinations drawn per N (cycled)
constexpr std::uint32_t kNs[] = {10, 100, 1000, 10000, 100000};

class BenchAh : public hca::Ah {
  public:
    const hca::AhAttr &attr() const noexcept override { return a_; }

  private:
    hca::AhAttr a_;
};

// A send CQ whose completions are the work requests just posted.
class InstantCq : public hca::Cq {
  public:
    int poll(hca::Wc *wc, int n) noexcept override {
        int k = 0;
        for (; k < n && head_ != tail_; ++k, ++head_)
            wc[k] = hca::Wc{.wr_id = ring_[head_ % kRing], .status = hca::WcStatus::success};
        return k;
    }
    void complete(std::uint64_t wr_id) noexcept { ring_[tail_++ % kRing] = wr_id; }

  private:
    static constexpr std::uint32_t kRing = 4096;
    std::uint64_t ring_[kRing];
    std::uint64_t head_ = 0, tail_ = 0;
};

class InstantQp : public hca::Qp {
  public:
    explicit InstantQp(InstantCq *cq) : cq_(cq) {}
    std::uint32_t qp_num() const noexcept override { return 0x48; }
    int post_recv(const hca::RecvWr *, int) noexcept override { return -EOPNOTSUPP; }
    int post_send(const hca::SendWr *wr, int n) noexcept override {
        for (int i = 0; i < n; ++i)
            cq_->complete(wr[i].wr_id);
        sent += static_cast<std::uint64_t>(n);
        return n;
    }
    int set_qkey(std::uint32_t) noexcept override { return 0; }
    int set_pkey_index(std::uint16_t) noexcept override { return 0; }
    int attach_mcast(const hca::Gid &, std::uint16_t) noexcept override { return 0; }
    int detach_mcast(const hca::Gid &, std::uint16_t) noexcept override { return 0; }
    hca::QpCounters counters() const noexcept override { return {}; }
    std::uint64_t sent = 0;

  private:
    InstantCq *cq_;
};

wire::Mac mac_of(std::uint64_t v) {
    wire::Mac m;
    for (int i = 0; i < 6; ++i)
        m.raw[i] = static_cast<std::uint8_t>(v >> (8 * (5 - i)));
    m.raw[0] = static_cast<std::uint8_t>((m.raw[0] & 0xfc) | 0x02);  // locally administered unicast
    return m;
}

struct Result {
    std::uint32_t n;
    std::vector<double> ns;  // per run
};

} // namespace

int main(int argc, char **argv) {
    const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
    const std::uint64_t packets = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 4000000;
    const char *csv = argc > 3 && *argv[3] ? argv[3] : nullptr;
    const std::uint32_t kTableMax =
        argc > 4 ? static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10)) : kTableMaxDefault;

    const std::string huge_dir = argc > 5 ? argv[5] : "";
    const std::string prefix = "--file-prefix=neigh-bench-" + std::to_string(getpid());
    const std::string huge_arg = "--huge-dir=" + huge_dir;
    std::vector<const char *> eal = {"neigh-bench", "--no-pci", "--no-shconf", "--no-telemetry", "-l", "0",
                                     "--log-level=lib.eal:error", prefix.c_str()};
    if (huge_dir.empty()) {
        eal.insert(eal.end(), {"--no-huge", "-m", "256"});
    } else {
        eal.insert(eal.end(), {huge_arg.c_str(), "-m", "64", "--in-memory"});
    }
    eal.push_back(nullptr);
    if (rte_eal_init(static_cast<int>(eal.size()) - 1, const_cast<char **>(eal.data())) < 0) {
        std::fprintf(stderr, "neigh-bench: EAL init failed\n");
        return 1;
    }

    auto port = std::make_unique<Port>();
    PortData &fp = port->fp;
    fp.requests = rte_ring_create_elem("neigh_bench_req", sizeof(Request), 1024, SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (!fp.requests || !fp.neigh.init(kTableMax, SOCKET_ID_ANY)) {
        std::fprintf(stderr, "neigh-bench: no memory for the request ring or the table\n");
        return 1;
    }
    fp.l2 = L2Mode::eth;
    fp.mtu = 2044;
    fp.qpn = 0x48;
    const rte_ether_addr own{{0x02, 0x02, 0xc9, 0x0a, 0xbc, 0x01}};
    fp.mac = own;
    BenchAh bcast;
    fp.bcast_ah = &bcast;
    InstantCq cq;
    InstantQp qp(&cq);
    fp.tx_cqs[0] = &cq;
    fp.link_up.store(true);
    fp.qp_ready.store(&qp);
    std::unique_ptr<TxQueue> q(tx_queue_create(&fp, 0, 512));
    fp.txqs[0] = q.get();

    rte_mempool *mp = rte_pktmbuf_pool_create("neigh_bench", 1023, 0, 0, 2048 + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
    if (!mp) {
        std::fprintf(stderr, "neigh-bench: no mbuf pool\n");
        return 1;
    }
    // One burst of 64-byte frames (60 without the FCS): Ethernet + IPv4 + UDP, reused for every burst.
    rte_mbuf *burst[kBurst];
    for (auto &m : burst) {
        m = rte_pktmbuf_alloc(mp);
        auto *f = reinterpret_cast<std::uint8_t *>(rte_pktmbuf_append(m, 60));
        std::memset(f, 0, 60);
        std::memcpy(f + 6, own.addr_bytes, 6);
        f[12] = 0x08;
        auto *ip = reinterpret_cast<rte_ipv4_hdr *>(f + 14);
        ip->version_ihl = 0x45;
        ip->total_length = rte_cpu_to_be_16(46);
        ip->time_to_live = 64;
        ip->next_proto_id = IPPROTO_UDP;
        ip->src_addr = rte_cpu_to_be_32(0x0a000001);
        ip->dst_addr = rte_cpu_to_be_32(0x0a000002);
        ip->hdr_checksum = rte_ipv4_cksum(ip);
    }

    std::mt19937_64 rng(13);
    std::vector<BenchAh> ahs(1024);  // shared by neighbours, as the driver shares one per (LID, SL)
    std::vector<Result> results;
    for (std::uint32_t n : kNs)
        if (n <= kTableMax)
            results.push_back(Result{n, {}});
    std::vector<std::uint64_t> dest(kSequence);
    std::vector<wire::Mac> macs;

    std::printf("net_ipoib TX, destinations drawn at random from N resolved neighbours "
                "(table neigh_max=%u, %u slots, %zu bytes on %s), 64-byte frames, bursts of %u, %d runs x %llu packets\n",
                kTableMax, fp.neigh.slots(), NeighTable::bytes_for(kTableMax),
                huge_dir.empty() ? "4 KB pages (--no-huge)" : "2 MB hugepages", kBurst, runs, static_cast<unsigned long long>(packets));
    for (int r = 0; r < runs; ++r) {
        for (Result &res : results) {  // every N once per round: drifts of a shared machine spread over all
            fp.neigh.clear();
            macs.clear();
            for (std::uint32_t i = 0; i < res.n; ++i) {
                wire::Mac m = mac_of(rng());
                while (fp.neigh.find(m))  // drawn twice: another one
                    m = mac_of(rng());
                Neigh *e = fp.neigh.find_or_add(m);
                if (!e) {
                    std::fprintf(stderr, "neigh-bench: N=%u: neighbour %u refused (probe window full)\n", res.n, i);
                    return 1;
                }
                fp.neigh.write(e, [&](Neigh &x) {
                    x.state = NeighState::resolved;
                    x.dlid = static_cast<std::uint16_t>(1 + i % 48000);
                    x.qpn = 0x100 + i;
                    x.sl = 0;
                    x.ah = &ahs[i % ahs.size()];
                });
                macs.push_back(m);
            }
            std::uniform_int_distribution<std::uint32_t> pick(0, res.n - 1);
            for (auto &d : dest) {
                const wire::Mac &m = macs[pick(rng)];
                std::uint64_t v = 0;
                std::memcpy(&v, m.raw.data(), 6);
                d = v;
            }
            auto send = [&](std::uint64_t count, std::size_t &at) {
                std::uint64_t sent = 0;
                while (sent < count) {
                    for (rte_mbuf *m : burst) {
                        std::memcpy(rte_pktmbuf_mtod(m, std::uint8_t *), &dest[at], 6);
                        at = (at + 1) & (kSequence - 1);
                        rte_mbuf_refcnt_update(m, 1);  // the completion's free leaves it to us
                    }
                    const std::uint16_t k = tx_burst(q.get(), burst, kBurst);
                    for (std::uint16_t j = k; j < kBurst; ++j)
                        rte_mbuf_refcnt_update(burst[j], -1);
                    sent += k;
                }
                return sent;
            };
            std::size_t at = 0;
            send(kSequence, at);  // warm: every destination touched once
            const std::uint64_t before = qp.sent;
            const auto t0 = std::chrono::steady_clock::now();
            const std::uint64_t sent = send(packets, at);
            const auto t1 = std::chrono::steady_clock::now();
            if (qp.sent - before != sent || q->st.unresolved_queued || q->st.unresolved_drop) {
                std::fprintf(stderr, "neigh-bench: N=%u: %llu frames not sent as unicast to a resolved neighbour\n",
                             res.n, static_cast<unsigned long long>(sent - (qp.sent - before)));
                return 1;
            }
            res.ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(sent));
        }
    }

    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    };
    const double base_min = *std::min_element(results[0].ns.begin(), results[0].ns.end());
    const double base_med = median(results[0].ns);
    FILE *out = csv ? std::fopen(csv, "w") : nullptr;
    if (out)
        std::fprintf(out, "neighbours,ns_per_packet,ns_per_packet_min,ns_per_packet_max,ratio_to_n10,"
                          "ratio_min_to_n10,runs,packets_per_run,pages\n");
    std::printf("%10s %12s %12s %12s %14s %14s\n", "N", "ns/pkt min", "ns/pkt med", "ns/pkt max", "min/min(N=10)",
                "med/med(N=10)");
    for (const Result &res : results) {
        const double mn = *std::min_element(res.ns.begin(), res.ns.end());
        const double mx = *std::max_element(res.ns.begin(), res.ns.end());
        const double md = median(res.ns);
        std::printf("%10u %12.1f %12.1f %12.1f %14.3f %14.3f\n", res.n, mn, md, mx, mn / base_min, md / base_med);
        if (out)
            std::fprintf(out, "%u,%.2f,%.2f,%.2f,%.4f,%.4f,%d,%llu,%s\n", res.n, md, mn, mx, md / base_med,
                         mn / base_min, runs, static_cast<unsigned long long>(packets), huge_dir.empty() ? "4k" : "2m");
    }
    if (out)
        std::fclose(out);
    for (rte_mbuf *m : burst)
        rte_pktmbuf_free(m);
    fp.qp_ready.store(nullptr);
    q.reset();
    rte_ring_free(fp.requests);
    fp.neigh.release();
    rte_eal_cleanup();
    return 0;
}
