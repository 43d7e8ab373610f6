// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib device arguments: the table, its parsers, and what is derived
// from it (valid keys, error messages, the pmdinfo string).
#include <rte_ether.h>
#include <rte_kvargs.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "ipoib/hca/provider.hpp"
#include "ipoib_devargs.hpp"

namespace ipoib::pmd {

namespace {

bool parse_uint(std::string_view v, unsigned long lo, unsigned long hi, unsigned long *out) {
    const std::string s(v);
    if (s.empty() || s[0] == '-')
        return false;
    char *end = nullptr;
    errno = 0;
    const unsigned long x = std::strtoul(s.c_str(), &end, 0);
    if (errno || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

bool fail(std::string *expected, std::string what) {
    *expected = std::move(what);
    return false;
}

// Any provider registered with lib/hca (see ipoib/hca/provider.hpp).
bool parse_provider(std::string_view v, Config &c, std::string *e) {
    if (!hca::find_provider(v)) {
        std::string known;
        for (const hca::Provider *p : hca::providers())
            known += (known.empty() ? "" : ", ") + std::string(p->name);
        return fail(e, "expected an HCA provider: " + known);
    }
    c.provider = v;
    return true;
}

bool parse_dev(std::string_view v, Config &c, std::string *e) {
    if (v.empty() || v.size() > 63)
        return fail(e, "expected a device name");
    c.device = v;
    return true;
}

bool parse_port(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, 2, &x))
        return fail(e, "expected port 1 or 2");
    c.port = static_cast<std::uint8_t>(x);
    return true;
}

bool parse_pkey(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, 0xffff, &x) || !wire::pkey_valid(static_cast<std::uint16_t>(x)))
        return fail(e, "expected a P_Key (0x0001-0xffff, not 0x8000)");
    c.pkey = static_cast<std::uint16_t>(x);
    return true;
}

bool parse_mode(std::string_view v, Config &c, std::string *e) {
    if (v == "connected")
        c.connected = true;
    else if (v == "datagram")
        c.connected = false;
    else
        return fail(e, "expected datagram or connected");
    return true;
}

bool parse_max_conns(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, kMaxConnsMax, &x))
        return fail(e, "expected 1-" + std::to_string(kMaxConnsMax));
    c.max_conns = static_cast<std::uint32_t>(x);
    return true;
}

bool parse_icrc_csum(std::string_view v, Config &c, std::string *e) {
    if (v != "0" && v != "1")
        return fail(e, "expected 0 or 1");
    c.icrc_csum = v == "1";
    return true;
}

bool parse_cm_idle(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, 86400, &x))
        return fail(e, "expected 1-86400 (seconds)");
    c.cm_idle_s = static_cast<std::uint32_t>(x);
    return true;
}

bool parse_l2(std::string_view v, Config &c, std::string *e) {
    if (v == "eth")
        c.l2 = L2Mode::eth;
    else if (v == "ipoib")
        c.l2 = L2Mode::ipoib;
    else
        return fail(e, "expected eth (Ethernet emulation) or ipoib (native)");
    return true;
}

bool parse_depth(std::string_view v, std::uint16_t *out, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, kQueueDepthMin, kQueueDepthMax, &x) || (x & (x - 1)))
        return fail(e, "expected a power of two, " + std::to_string(kQueueDepthMin) + "-" +
                           std::to_string(kQueueDepthMax));
    *out = static_cast<std::uint16_t>(x);
    return true;
}
bool parse_rxq_size(std::string_view v, Config &c, std::string *e) { return parse_depth(v, &c.rxq_size, e); }
bool parse_txq_size(std::string_view v, Config &c, std::string *e) { return parse_depth(v, &c.txq_size, e); }

bool parse_rx_copy_max(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 0, 65535, &x))
        return fail(e, "expected 0-65535 (bytes)");
    c.rx_copy_max = static_cast<std::uint16_t>(x);
    return true;
}

bool parse_max_queues(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, hca::kMaxQueues, &x))
        return fail(e, "expected 1-" + std::to_string(hca::kMaxQueues));
    c.max_queues = static_cast<std::uint16_t>(x);
    return true;
}

// MAC/IPoIB-address, e.g. 02:00:00:10:00:05/00:00:01:80:fe:80:...:00:10:00:05
bool parse_neigh(std::string_view v, Config &c, std::string *e) {
    const auto slash = v.find('/');
    rte_ether_addr mac;
    if (slash == std::string_view::npos || rte_ether_unformat_addr(std::string(v.substr(0, slash)).c_str(), &mac))
        return fail(e, "expected MAC/20-byte-IPoIB-address");
    auto hw = wire::parse_hwaddr_text(std::string(v.substr(slash + 1)));
    if (!hw.ok())
        return fail(e, std::string("IPoIB address: ") + wire::describe(hw.err));
    Config::StaticNeigh n;
    std::memcpy(n.mac.raw.data(), mac.addr_bytes, 6);
    n.hw = hw.value;
    c.neighs.push_back(n);
    return true;
}

// Devargs that belong to the HCA provider: passed on as its options.
bool provider_option(std::string_view key, std::string_view v, Config &c, std::string *e) {
    if (v.empty() || v.find(',') != std::string_view::npos)
        return fail(e, "expected a value without commas");
    if (!c.provider_options.empty())
        c.provider_options += ',';
    c.provider_options.append(key).append("=").append(v);
    return true;
}
bool parse_capture(std::string_view v, Config &c, std::string *e) { return provider_option("capture", v, c, e); }
bool parse_fabric(std::string_view v, Config &c, std::string *e) { return provider_option("fabric", v, c, e); }
bool parse_xdp_queue(std::string_view v, Config &c, std::string *e) { return provider_option("queue", v, c, e); }
bool parse_xdp_mode(std::string_view v, Config &c, std::string *e) { return provider_option("xdp_mode", v, c, e); }

bool parse_allmulti(std::string_view v, Config &c, std::string *e) {
    if (v != "0" && v != "1")
        return fail(e, "expected 0 or 1");
    c.allmulti = v == "1";
    return true;
}

bool parse_zero_copy(std::string_view v, Config &c, std::string *e) {
    if (v != "0" && v != "1")
        return fail(e, "expected 0 or 1");
    c.zero_copy = v == "1";
    return true;
}

bool parse_neigh_timeout(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, 86400, &x))
        return fail(e, "expected seconds, 1-86400");
    c.neigh_timeout_s = static_cast<std::uint32_t>(x);
    return true;
}

bool parse_neigh_max(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, kNeighMaxMin, kNeighMaxMax, &x))
        return fail(e, "expected neighbours, " + std::to_string(kNeighMaxMin) + "-" + std::to_string(kNeighMaxMax));
    c.neigh_max = static_cast<std::uint32_t>(x);
    return true;
}

bool parse_gid_index(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 0, 255, &x))
        return fail(e, "expected a GID table index, 0-255");
    c.gid_index = static_cast<int>(x);
    return true;
}

bool parse_bcast_qkey(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 1, 0x7fffffff, &x))
        return fail(e, "expected a Q_Key, 0x1-0x7fffffff (the high bit marks controlled Q_Keys)");
    c.bcast_qkey = static_cast<std::uint32_t>(x);
    return true;
}

bool parse_bcast_mtu(std::string_view v, Config &c, std::string *e) {
    unsigned long x = 0;
    if (!parse_uint(v, 256, 4096, &x) || (x & (x - 1)))
        return fail(e, "expected an IB MTU: 256, 512, 1024, 2048 or 4096");
    c.bcast_mtu = static_cast<std::uint32_t>(x);
    return true;
}

// clang-format off
constexpr Devarg kDevargs[] = {
    {"provider", "<soft|verbs|xdp|inproc>", "`soft` \\| `verbs` \\| `xdp` \\| `inproc` (`soft`)",
     "HCA provider: the software HCA on a simulated fabric, rdma-core devices, RoCE v2 over AF_XDP on a network "
     "device, or the in-process HCA (tests)",
     parse_provider},
    {"dev", "<device>", "name (`$SIM_HOST`; verbs: the first device)",
     "the HCA: for `soft`, the simulated fabric node (`Hca1`); for `verbs`, the rdma-core device (`mlx5_0`, `rxe0`); "
     "for `xdp`, the network device (`eth0`); for `inproc`, any name (one device per name in the process)",
     parse_dev},
    {"port", "<1|2>", "1 \\| 2 (1)", "HCA port", parse_port},
    {"pkey", "<p_key>", "0x0001-0xffff, not 0x8000 (the P_Key at index 0)",
     "partition; the full-member entry of the port's table is preferred", parse_pkey},
    {"mode", "<datagram|connected>", "`datagram` \\| `connected` (`datagram`)",
     "connected: MTU 65520, unicast to peers that advertise it over Reliable Connections (RFC 4755; see Connected "
     "mode)", parse_mode},
    {"max_conns", "<1-65536>", "1-65536 (1024)",
     "connected mode: peers each TX queue connects to, and connections peers may open to the port", parse_max_conns},
    {"cm_idle", "<seconds>", "seconds (512)", "connected mode: connections peers opened and left idle this long are "
     "closed (Linux's 512 s)", parse_cm_idle},
    {"icrc_csum", "<0|1>", "0 \\| 1 (1)", "connected mode: offer peers \"IB CRC as checksum\" at connection setup; "
     "where both agree, checksums the application offloads are not computed (see Connected mode)", parse_icrc_csum},
    {"l2", "<eth|ipoib>", "`eth` \\| `ipoib` (`eth`)", "Ethernet emulation, or native IPoIB frames (see below)",
     parse_l2},
    {"rxq_size", "<16-1024>", "power of two 16-1024 (512)", "receive queue depth of the UD QP", parse_rxq_size},
    {"txq_size", "<16-1024>", "power of two 16-1024 (512)", "send queue depth of the UD QP; a TX queue keeps at most this many sends outstanding, whatever `nb_tx_desc` asks",
     parse_txq_size},
    {"rx_copy_max", "<0-65535>", "bytes 0-65535 (128)",
     "received frames up to this long are copied into the application's mbufs; longer ones are handed over in the "
     "HCA's receive buffer without a copy (software HCAs; 0: never copy)",
     parse_rx_copy_max},
    {"max_queues", "<1-16>", "1-16 (16)",
     "RX and TX queues the port offers at most (RX: also bounded by the HCA's receive queues per QP, RSS)",
     parse_max_queues},
    {"neigh", "<mac/hwaddr>", "`MAC/IPoIB-address` (repeatable)",
     "static neighbour for ARP-less applications; its path (LID) is resolved through the SA on first use",
     parse_neigh},
    {"capture", "<pcap file>", "file",
     "software HCA: write every packet sent to this pcap (IB link packets, DLT 147)", parse_capture},
    {"fabric", "<name>", "name (`$IBSIM_SOCKNAME`)", "software HCA: which simulated fabric", parse_fabric},
    {"queue", "<0-63>", "0-63 (0)", "xdp provider: the network device's receive queue its AF_XDP socket binds to",
     parse_xdp_queue},
    {"xdp_mode", "<auto|native|skb>", "`auto` \\| `native` \\| `skb` (`auto`)",
     "xdp provider: how its XDP program attaches (the driver's own XDP, else the generic one)", parse_xdp_mode},
    {"allmulti", "<0|1>", "0 \\| 1 (0)",
     "join every IPoIB multicast group of the partition (Solaris ibd's multicast promiscuous mode)", parse_allmulti},
    {"neigh_timeout", "<seconds>", "seconds (300)", "learned neighbours unused this long are forgotten",
     parse_neigh_timeout},
    {"neigh_max", "<16-4194304>", "16-4194304 (65536)",
     "neighbours the port holds (and senders it knows by address); 168 bytes each from the port's NUMA socket "
     "(10.5 MiB at the default); more are refused, counted in xstat `neigh_table_full` and logged",
     parse_neigh_max},
    {"gid_index", "<0-255>", "0-255 (InfiniBand: 0; RoCE: the first RoCE v2 IPv6 GID, link-local preferred)",
     "the port GID: the IPoIB address and every GRH's source; one per HCA", parse_gid_index},
    {"bcast_qkey", "<q_key>", "0x1-0x7fffffff (0x0b1b)", "RoCE (static management): the broadcast group's Q_Key",
     parse_bcast_qkey},
    {"bcast_mtu", "<256-4096>", "256 \\| 512 \\| 1024 \\| 2048 \\| 4096 (the port's active MTU)",
     "RoCE: the broadcast group's MTU; the port MTU is this minus 4", parse_bcast_mtu},
    {"zero_copy", "<0|1>", "0 \\| 1 (1)",
     "send and receive mbufs where they lie when the HCA can register DPDK's memory (verbs); 0: copy through the "
     "provider's bounce buffers and the driver's receive pool (see Zero copy, Receive buffers)", parse_zero_copy},
};
// clang-format on
constexpr std::size_t kNumDevargs = std::size(kDevargs);

// --- the pmdinfo string, built at compile time from the table ---

constexpr std::string_view kInfoHead = "PMD_INFO_STRING= {\"name\" : \"net_ipoib\", \"params\" : \"";
constexpr std::string_view kInfoTail = "\", \"pci_ids\" : []}";

constexpr std::size_t pmdinfo_size() {
    std::size_t n = kInfoHead.size() + kInfoTail.size() + 1;
    for (const Devarg &d : kDevargs)
        n += std::string_view(d.name).size() + 1 + std::string_view(d.values).size() + 1;
    return n - 1;  // no space after the last
}

constexpr std::array<char, pmdinfo_size()> make_pmdinfo() {
    std::array<char, pmdinfo_size()> out{};
    std::size_t at = 0;
    auto put = [&](std::string_view s) {
        for (char ch : s)
            out[at++] = ch;
    };
    put(kInfoHead);
    for (std::size_t i = 0; i < kNumDevargs; ++i) {
        if (i)
            put(" ");
        put(kDevargs[i].name);
        put("=");
        put(kDevargs[i].values);
    }
    put(kInfoTail);
    out[at] = '\0';
    return out;
}

// The valid-keys list rte_kvargs wants (NULL-terminated).
constexpr std::array<const char *, kNumDevargs + 1> make_keys() {
    std::array<const char *, kNumDevargs + 1> k{};
    for (std::size_t i = 0; i < kNumDevargs; ++i)
        k[i] = kDevargs[i].name;
    k[kNumDevargs] = nullptr;
    return k;
}
constexpr auto kValidKeys = make_keys();

struct ParseCtx {
    const Devarg *arg;
    Config *cfg;
    std::string err;
};

int on_arg(const char *key, const char *value, void *opaque) {
    auto *c = static_cast<ParseCtx *>(opaque);
    const std::string_view v = value ? value : "";
    std::string expected;
    if (!c->arg->parse(v, *c->cfg, &expected)) {
        c->err = std::string("devarg ") + key + "=" + std::string(v) + ": " + expected;
        return -1;
    }
    return 0;
}

} // namespace

std::span<const Devarg> devargs() noexcept { return kDevargs; }

bool parse_devargs(const char *args, Config *cfg, std::string *err) {
    if (!args || !*args)
        return true;
    rte_kvargs *kv = rte_kvargs_parse(args, kValidKeys.data());
    if (!kv) {
        std::string known;
        for (const Devarg &d : kDevargs)
            known += (known.empty() ? "" : ", ") + std::string(d.name);
        *err = std::string("cannot parse devargs '") + args + "' (known: " + known + ")";
        return false;
    }
    ParseCtx c{nullptr, cfg, {}};
    for (const Devarg &d : kDevargs) {
        c.arg = &d;
        if (rte_kvargs_process(kv, d.name, on_arg, &c) < 0)
            break;
    }
    rte_kvargs_free(kv);
    if (!c.err.empty()) {
        *err = c.err;
        return false;
    }
    if (cfg->connected && cfg->l2 == L2Mode::ipoib) {
        *err = "devarg mode=connected: not available with l2=ipoib yet (native frames carry no connection); use l2=eth";
        return false;
    }
    return true;
}

} // namespace ipoib::pmd

// What dpdk-pmdinfo.py reads (pmdinfogen is not shipped, and C++ mangles its markers).
extern "C" {
__attribute__((used)) constexpr auto ipoib_pmd_info = ipoib::pmd::make_pmdinfo();
}

const char *ipoib::pmd::pmdinfo_string() noexcept { return ipoib_pmd_info.data(); }
