// SPDX-License-Identifier: BSD-3-Clause
// insn-bench: the work a PMD's rx_burst and tx_burst do per packet, measured
// on a fixed number of packets sent from one port to another in this one
// process (no second process, no second core: nothing else runs the bursts).
//
//   insn-bench EAL_ARGS -- --pair LABEL=TXDEV,RXDEV [--pair ...]
//                          [--sizes 64,1500] [--packets N] [--warmup N]
//
// For each pair and frame size: the receiving port sends one broadcast frame
// to the sending port, whose receive gives the MAC the receiver is known by
// (net_ipoib: the LID/QPN MAC it learned); frames to that MAC are sent until
// they arrive (the neighbour resolved, its address handle made), then a
// warm-up, then the measured phase: N frames (IPv4/UDP, Ethernet size SIZE)
// in bursts of 32, each burst received on the other port before the next is
// sent. Every call of rx_burst/tx_burst goes through bench_rx_burst /
// bench_tx_burst (never inlined): under valgrind --tool=callgrind
// --collect-atstart=no --toggle-collect=bench_rx_burst --toggle-collect=bench_tx_burst
// only what runs inside them is counted, and each measured phase is one
// callgrind dump named "LABEL SIZE" (its inclusive cost minus the wrappers'
// own is the PMD's). Run natively, the same phases print TSC cycles per
// packet spent in the bursts instead, the least of 5 phases (still noisy on a
// shared machine).
// Prints one "phase" line per measurement; asserts nothing.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>
#include <valgrind/callgrind.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::uint16_t kBurst = 32;
constexpr std::uint16_t kRingSize = 1024;
constexpr std::uint32_t kPoolSize = 16384;
// A burst not received after this many empty polls in a row is counted lost.
constexpr std::uint32_t kMaxEmptyPolls = 100000;
// Native runs: measured phases per size whose least cycles per packet is printed.
constexpr int kCycleRuns = 5;

struct Pair {
    std::string label;
    std::uint16_t tx_port = 0;
    std::uint16_t rx_port = 0;
};

struct Options {
    std::vector<Pair> pairs;
    std::vector<std::uint32_t> sizes{64, 1500};
    std::uint32_t packets = 32768;
    std::uint32_t warmup = 4096;
};

// What one measured phase saw.
struct PhaseResult {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t bad = 0;          // received with the wrong length or sequence number
    std::uint64_t empty_polls = 0;  // rx_burst calls that returned nothing
    std::uint64_t tx_calls = 0;
    std::uint64_t rx_calls = 0;
    std::uint64_t tx_cycles = 0;
    std::uint64_t rx_cycles = 0;
};

int die(const char *fmt, const char *what) {
    std::fprintf(stderr, "insn-bench: ");
    std::fprintf(stderr, fmt, what);
    std::fprintf(stderr, "\n");
    return 1;
}

} // namespace

// The measured calls: the ethdev inline wrapper and the PMD's burst function.
// extern "C" and noinline so callgrind's --toggle-collect finds them by name.
extern "C" __attribute__((noinline)) std::uint16_t bench_tx_burst(std::uint16_t port, rte_mbuf **pkts,
                                                                  std::uint16_t n) {
    return rte_eth_tx_burst(port, 0, pkts, n);
}

extern "C" __attribute__((noinline)) std::uint16_t bench_rx_burst(std::uint16_t port, rte_mbuf **pkts,
                                                                  std::uint16_t n) {
    return rte_eth_rx_burst(port, 0, pkts, n);
}

namespace {

bool parse_options(int argc, char **argv, Options *o) {
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return false;
        const std::string v = argv[++i];
        if (a == "--pair") {
            const auto eq = v.find('='), comma = v.find(',');
            if (eq == std::string::npos || comma == std::string::npos || comma < eq)
                return false;
            Pair p{.label = v.substr(0, eq)};
            const std::string tx = v.substr(eq + 1, comma - eq - 1), rx = v.substr(comma + 1);
            if (rte_eth_dev_get_port_by_name(tx.c_str(), &p.tx_port) != 0 ||
                rte_eth_dev_get_port_by_name(rx.c_str(), &p.rx_port) != 0) {
                std::fprintf(stderr, "insn-bench: no port named %s or %s\n", tx.c_str(), rx.c_str());
                return false;
            }
            o->pairs.push_back(p);
        } else if (a == "--sizes") {
            o->sizes.clear();
            for (const char *s = v.c_str(); *s;) {
                char *end = nullptr;
                const unsigned long n = std::strtoul(s, &end, 10);
                if (end == s || n < 60 || n > 9000)
                    return false;
                o->sizes.push_back(static_cast<std::uint32_t>(n));
                s = *end == ',' ? end + 1 : end;
            }
        } else if (a == "--packets") {
            o->packets = static_cast<std::uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
        } else if (a == "--warmup") {
            o->warmup = static_cast<std::uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
        } else {
            return false;
        }
    }
    return !o->pairs.empty() && o->packets >= kBurst;
}

int start_port(std::uint16_t port, rte_mempool *mp) {
    const rte_eth_conf conf{};
    int rc = rte_eth_dev_configure(port, 1, 1, &conf);
    if (rc == 0)
        rc = rte_eth_rx_queue_setup(port, 0, kRingSize, rte_eth_dev_socket_id(port), nullptr, mp);
    if (rc == 0)
        rc = rte_eth_tx_queue_setup(port, 0, kRingSize, rte_eth_dev_socket_id(port), nullptr);
    if (rc == 0)
        rc = rte_eth_dev_start(port);
    return rc;
}

bool wait_link_up(std::uint16_t port, double seconds) {
    const std::uint64_t end = rte_get_tsc_cycles() + static_cast<std::uint64_t>(seconds * rte_get_tsc_hz());
    while (rte_get_tsc_cycles() < end) {
        rte_eth_link link{};
        if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP)
            return true;
        rte_delay_us_sleep(10000);
    }
    return false;
}

// An Ethernet/IPv4/UDP frame of `size` bytes from `src` to `dst`, sequence number `seq` after the UDP header.
rte_mbuf *make_frame(rte_mempool *mp, const rte_ether_addr &src, const rte_ether_addr &dst, std::uint32_t size,
                     std::uint32_t seq) {
    rte_mbuf *m = rte_pktmbuf_alloc(mp);
    if (!m)
        return nullptr;
    auto *p = rte_pktmbuf_mtod(m, std::uint8_t *);
    auto *eh = reinterpret_cast<rte_ether_hdr *>(p);
    eh->dst_addr = dst;
    eh->src_addr = src;
    eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    auto *ip = reinterpret_cast<rte_ipv4_hdr *>(eh + 1);
    const std::uint32_t l3 = size - RTE_ETHER_HDR_LEN;
    *ip = rte_ipv4_hdr{};
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(l3));
    ip->time_to_live = 64;
    ip->next_proto_id = IPPROTO_UDP;
    const bool bcast = rte_is_broadcast_ether_addr(&dst);
    ip->src_addr = rte_cpu_to_be_32(RTE_IPV4(198, 18, 0, 1));
    ip->dst_addr = bcast ? RTE_BE32(0xffffffff) : rte_cpu_to_be_32(RTE_IPV4(198, 18, 0, 2));
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    auto *udp = reinterpret_cast<rte_udp_hdr *>(ip + 1);
    udp->src_port = rte_cpu_to_be_16(9);
    udp->dst_port = rte_cpu_to_be_16(9);
    udp->dgram_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(l3 - sizeof(rte_ipv4_hdr)));
    udp->dgram_cksum = 0;
    auto *payload = reinterpret_cast<std::uint8_t *>(udp + 1);
    std::memcpy(payload, &seq, sizeof seq);
    const std::uint32_t hdrs = RTE_ETHER_HDR_LEN + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr) + sizeof seq;
    std::memset(payload + sizeof seq, static_cast<int>(seq & 0xff), size - hdrs);
    m->data_len = static_cast<std::uint16_t>(size);
    m->pkt_len = size;
    return m;
}

std::uint32_t frame_seq(const rte_mbuf *m) {
    std::uint32_t seq;
    std::memcpy(&seq, rte_pktmbuf_mtod_offset(m, const std::uint8_t *,
                                              RTE_ETHER_HDR_LEN + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr)),
                sizeof seq);
    return seq;
}

// The MAC `rx` is known by on `tx`: rx sends a broadcast, tx receives it.
bool learn_peer_mac(const Pair &p, rte_mempool *mp, rte_ether_addr *out) {
    rte_ether_addr rx_mac, bcast;
    rte_eth_macaddr_get(p.rx_port, &rx_mac);
    std::memset(bcast.addr_bytes, 0xff, sizeof bcast.addr_bytes);
    for (int attempt = 0; attempt < 200; ++attempt) {
        rte_mbuf *m = make_frame(mp, rx_mac, bcast, 64, 0);
        if (m && rte_eth_tx_burst(p.rx_port, 0, &m, 1) != 1)
            rte_pktmbuf_free(m);
        for (int poll = 0; poll < 100; ++poll) {
            rte_mbuf *got[kBurst];
            const std::uint16_t n = rte_eth_rx_burst(p.tx_port, 0, got, kBurst);
            bool found = false;
            for (std::uint16_t k = 0; k < n; ++k) {
                const auto *eh = rte_pktmbuf_mtod(got[k], const rte_ether_hdr *);
                if (!found && rte_is_broadcast_ether_addr(&eh->dst_addr) &&
                    eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
                    *out = eh->src_addr;
                    found = true;
                }
            }
            rte_pktmbuf_free_bulk(got, n);
            if (found)
                return true;
            rte_delay_us_sleep(1000);  // (sleeping: the control threads run, under valgrind too)
        }
    }
    return false;
}

void drain(std::uint16_t port) {
    rte_mbuf *got[kBurst];
    for (std::uint16_t n; (n = rte_eth_rx_burst(port, 0, got, kBurst)) != 0;)
        rte_pktmbuf_free_bulk(got, n);
}

// Send `count` frames tx -> rx in bursts, each received before the next is sent.
// `measure`: time the bursts (natively; under valgrind the cycles mean nothing).
PhaseResult run_phase(const Pair &p, rte_mempool *mp, const rte_ether_addr &dst, std::uint32_t size,
                      std::uint32_t count, bool measure, std::uint32_t max_empty_polls = kMaxEmptyPolls) {
    PhaseResult r;
    rte_ether_addr src;
    rte_eth_macaddr_get(p.tx_port, &src);
    rte_mbuf *burst[kBurst];
    rte_mbuf *got[kBurst];
    std::uint32_t next_seq = 0, expect_seq = 0;
    while (r.sent < count) {
        const auto n = static_cast<std::uint16_t>(std::min<std::uint64_t>(kBurst, count - r.sent));
        std::uint16_t built = 0;
        while (built < n && (burst[built] = make_frame(mp, src, dst, size, next_seq + built)))
            ++built;
        if (built < n) {
            rte_pktmbuf_free_bulk(burst, built);
            std::fprintf(stderr, "insn-bench: mbuf pool empty\n");
            break;
        }
        std::uint16_t done = 0;
        while (done < n) {
            const std::uint64_t t0 = measure ? rte_rdtsc_precise() : 0;
            const std::uint16_t k = bench_tx_burst(p.tx_port, burst + done, n - done);
            if (measure)
                r.tx_cycles += rte_rdtsc_precise() - t0;
            ++r.tx_calls;
            done += k;
        }
        next_seq += n;
        r.sent += n;
        std::uint32_t empty = 0;
        while (r.received < r.sent && empty < max_empty_polls) {
            const std::uint64_t t0 = measure ? rte_rdtsc_precise() : 0;
            const std::uint16_t k = bench_rx_burst(p.rx_port, got, kBurst);
            if (measure)
                r.rx_cycles += rte_rdtsc_precise() - t0;
            ++r.rx_calls;
            if (k == 0) {
                ++r.empty_polls;
                ++empty;
                continue;
            }
            empty = 0;
            for (std::uint16_t j = 0; j < k; ++j) {
                r.bad += got[j]->pkt_len != size || frame_seq(got[j]) != expect_seq;
                ++expect_seq;
            }
            r.received += k;
            rte_pktmbuf_free_bulk(got, k);
        }
        if (r.received < r.sent)  // lost: the phase ends (and says so)
            break;
    }
    return r;
}

// Every non-zero extended statistic of a port, to stderr: where lost frames went.
void print_xstats(std::uint16_t port) {
    const int n = rte_eth_xstats_get(port, nullptr, 0);
    if (n <= 0)
        return;
    std::vector<rte_eth_xstat> values(static_cast<std::size_t>(n));
    std::vector<rte_eth_xstat_name> names(static_cast<std::size_t>(n));
    if (rte_eth_xstats_get(port, values.data(), n) != n || rte_eth_xstats_get_names(port, names.data(), n) != n)
        return;
    for (const rte_eth_xstat &x : values)
        if (x.value)
            std::fprintf(stderr, "  port %u %s: %lu\n", port, names[x.id].name, x.value);
}

std::uint64_t xstat(std::uint16_t port, const char *name) {
    std::uint64_t id = 0, value = 0;
    if (rte_eth_xstats_get_id_by_name(port, name, &id) != 0 || rte_eth_xstats_get_by_id(port, &id, &value, 1) != 1)
        return 0;
    return value;
}

} // namespace

int main(int argc, char **argv) {
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0)
        return die("%s", "EAL initialisation failed");
    Options o;
    if (!parse_options(argc - eal - 1, argv + eal + 1, &o)) {
        std::fprintf(stderr, "usage: insn-bench EAL_ARGS -- --pair LABEL=TXDEV,RXDEV [--pair ...] "
                             "[--sizes 64,1500] [--packets N] [--warmup N]\n");
        rte_eal_cleanup();
        return 2;
    }
    rte_mempool *mp = rte_pktmbuf_pool_create("insn_bench", kPoolSize, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                              static_cast<int>(rte_socket_id()));
    if (!mp)
        return die("%s", "no mbuf pool");
    std::vector<std::uint16_t> started;
    for (const Pair &p : o.pairs)
        for (std::uint16_t port : {p.tx_port, p.rx_port}) {
            if (std::find(started.begin(), started.end(), port) != started.end())
                continue;  // (a port in two pairs)
            if (start_port(port, mp) != 0)
                return die("cannot start port of pair %s", p.label.c_str());
            started.push_back(port);
        }
    const bool under_valgrind = RUNNING_ON_VALGRIND;
    int status = 0;
    for (const Pair &p : o.pairs) {
        if (!wait_link_up(p.tx_port, 120) || !wait_link_up(p.rx_port, 120)) {
            std::fprintf(stderr, "insn-bench: %s: link not up\n", p.label.c_str());
            status = 1;
            continue;
        }
        rte_ether_addr dst;
        if (!learn_peer_mac(p, mp, &dst)) {
            std::fprintf(stderr, "insn-bench: %s: the receiver's broadcast never arrived\n", p.label.c_str());
            status = 1;
            continue;
        }
        drain(p.rx_port);
        CALLGRIND_START_INSTRUMENTATION;  // (start-up ran uninstrumented with --instr-atstart=no: faster)
        char mac[RTE_ETHER_ADDR_FMT_SIZE];
        rte_ether_format_addr(mac, sizeof mac, &dst);
        std::printf("pair %s: port %u -> port %u, destination MAC %s\n", p.label.c_str(), p.tx_port, p.rx_port, mac);
        for (std::uint32_t size : o.sizes) {
            // Until a whole burst arrives (the neighbour resolved: its address handle made by the
            // driver's control thread, which runs while this one sleeps), then the warm-up.
            bool resolved = false;
            const std::uint64_t deadline = rte_get_tsc_cycles() + 60 * rte_get_tsc_hz();
            while (!resolved && rte_get_tsc_cycles() < deadline) {
                resolved = run_phase(p, mp, dst, size, kBurst, false, 1000).received == kBurst;
                if (!resolved) {
                    rte_delay_us_sleep(50000);
                    drain(p.rx_port);
                }
            }
            if (!resolved) {
                std::printf("phase %s %u: unresolved (no burst arrived within 60 s)\n", p.label.c_str(), size);
                std::fflush(stdout);
                print_xstats(p.tx_port);
                status = 1;
                continue;
            }
            drain(p.rx_port);
            const PhaseResult warm = run_phase(p, mp, dst, size, o.warmup, false);
            if (warm.received != warm.sent)
                std::fprintf(stderr, "insn-bench: %s %u: warm-up lost frames (%lu of %lu received)\n",
                             p.label.c_str(), size, warm.received, warm.sent);
            drain(p.rx_port);
            const std::uint64_t held_before = xstat(p.tx_port, "tx_unresolved_queued");
            CALLGRIND_ZERO_STATS;
            const PhaseResult r = run_phase(p, mp, dst, size, o.packets, !under_valgrind);
            const std::string phase = p.label + " " + std::to_string(size);
            CALLGRIND_DUMP_STATS_AT(phase.c_str());
            const std::uint64_t held = xstat(p.tx_port, "tx_unresolved_queued") - held_before;
            std::printf("phase %s %u: sent %lu received %lu bad %lu held %lu tx_calls %lu rx_calls %lu "
                        "empty_polls %lu",
                        p.label.c_str(), size, r.sent, r.received, r.bad, held, r.tx_calls, r.rx_calls,
                        r.empty_polls);
            if (!under_valgrind) {
                // Cycles: the least of this phase and kCycleRuns - 1 more (what other work on the
                // machine adds to a run is never negative).
                double tx = static_cast<double>(r.tx_cycles) / static_cast<double>(r.sent);
                double rx = static_cast<double>(r.rx_cycles) / static_cast<double>(r.received ? r.received : 1);
                for (int run = 1; run < kCycleRuns; ++run) {
                    const PhaseResult again = run_phase(p, mp, dst, size, o.packets, true);
                    if (again.received != again.sent)
                        break;
                    tx = std::min(tx, static_cast<double>(again.tx_cycles) / static_cast<double>(again.sent));
                    rx = std::min(rx, static_cast<double>(again.rx_cycles) / static_cast<double>(again.received));
                }
                std::printf(" tx_cycles_per_packet %.1f rx_cycles_per_packet %.1f", tx, rx);
            }
            std::printf("\n");
            std::fflush(stdout);
            if (r.received != r.sent || r.bad) {
                std::fprintf(stderr, "insn-bench: %s: %lu of %lu frames received (%lu bad); the ports' counters:\n",
                             phase.c_str(), r.received, r.sent, r.bad);
                print_xstats(p.tx_port);
                print_xstats(p.rx_port);
                status = 1;
            }
        }
    }
    for (std::uint16_t port : started) {
        rte_eth_dev_stop(port);
        rte_eth_dev_close(port);
    }
    rte_mempool_free(mp);
    rte_eal_cleanup();
    return status;
}
