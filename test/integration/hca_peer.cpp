// SPDX-License-Identifier: BSD-3-Clause
// hca-peer: one process on one (simulated) HCA, driven line by line on stdin
// by the integration tests; answers each command with one JSON line.
//
//   hca-peer PROVIDER [OPTIONS] [DEVICE]  soft: device from $SIM_HOST; verbs: the first
//   hca-peer PROVIDER OPTIONS DEV1,DEV2    several devices in this process (inproc):
//                                          {"devices":[ready line of each]}; commands start with @DEVn
//
// PROVIDER is any registered provider, and "fault" (fault_provider.cpp,
// tests only): the soft provider with fault=stall_after_claim.
//
//   port P                                      port attributes, IPoIB GID, P_Key table
//   caps                                        the device's DeviceCaps:
//                                               {"max_send_queues":S,"max_recv_queues":R}
//   qp NAME port=P pkey_index=I qkey=K rq=N [cq=D] [sq=S]
//      [rxq=R] [txq=T] [rss_fields=F] [rss_key=HEX] [reta=LIST]
//                                               create a UD QP with its CQ (depth D, default
//                                               N + 1024; send queue S) and N buffers.
//                                               rxq/txq: R receive queues (N buffers each) and
//                                               T send queues, each with its own CQ of depth D
//                                               (queue 0 of either kind: the one CQ above);
//                                               RSS: fields F (hca.hpp kRss*, default all), a
//                                               40-byte key of 80 hex digits (default the RSS
//                                               spec's 6d5a56da...6a42b73bbeac01fa), redirection
//                                               table LIST (comma separated, repeated to 128
//                                               entries; default entry i = i % R). Without
//                                               rxq/txq QpInit is as before (one queue each)
//   rss NAME [fields=F] [key=HEX] [reta=LIST]   set_rss: the QP's RSS with these changed
//   post NAME n=N [size=S] [queue=R]            post N receive buffers of S bytes (queue=R:
//                                               receive queue R's, by post_recv_queue)
//   send NAME dlid=L dqpn=Q qkey=K size=S count=C [sl=N] [mgid=G | dgid=G] [sge=N] [burst=B]
//      [queue=S] [ipv4udp=SRC,DST,SPORT,DPORT]
//                                               (with a GID the address has a GRH, from the IPoIB GID;
//                                               burst: B WRs per post_send, the rest retried after
//                                               reaping; the reply then has "first_post": how many
//                                               the first post_send took, and "reaped";
//                                               queue=S: on send queue S by post_send_queue, its
//                                               completions from its CQ; ipv4udp: each payload an
//                                               IPoIB IPv4/UDP frame of that flow, see below)
//   recv NAME count=C timeout_ms=T [queue=R] [repost=1]
//                                               poll until C receive completions or timeout
//                                               (queue=R: receive queue R's CQ; repost: post
//                                               each buffer again, on the same queue). Reply:
//                                               "received", "bad_payload", "grh", "src_qps",
//                                               "slids", "lens", "sgids", "statuses"; and per
//                                               successful completion, in order, "hashes" (its
//                                               rss_hash with kWcRssHash, else null) and "flows"
//                                               ("SRC,DST,SPORT,DPORT" for an IPv4/UDP frame,
//                                               else null); "hashed", "ipv4udp": how many of each
//   attach NAME mgid=G mlid=M / detach NAME mgid=G mlid=M
//   counters NAME / pcounters P                 QP / port counters
//   events timeout_ms=T                         port events seen within T ms
//   sendloop NAME dlid=L dqpn=Q qkey=K size=S   send until killed (prints {"looping":true} first)
//   realloc NAME                                free NAME's buffer pool, allocate and register a new one
//   quit
//
// With the test-only "fault" provider (the soft HCA's test hooks, soft_testing.hpp),
// commands that write into the fabric's shared memory what a buggy peer could:
//   fabric                                      this process's slot: {"proc":P,"gen":G}
//   corrupt NAME what=W value=V                 W: proc_start_time (this process's entry);
//                                               qp_port_idx, qp_rq_depth, rq_head (NAME's QP entry);
//                                               done_byte_len, done_status, done_kind, posted_kind
//                                               (every slot of NAME's receive ring in that state)
//
// Payloads carry a pattern (4-byte sequence number, then (seq + i) & 0xff)
// that `recv` verifies byte for byte. With ipv4udp= a payload is an IPoIB
// IPv4/UDP frame instead: the 4-byte encapsulation header 0800 0000, a
// 20-byte IPv4 header (valid checksum, DF, identification = sequence
// number), an 8-byte UDP header (checksum 0), then the pattern; `recv`
// recognises such a frame (08 00 00 00 45 .. protocol 17: no pattern payload
// starts so) and verifies its header checksum, lengths and pattern.
#include <arpa/inet.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fault_provider.hpp"
#include "ipoib/hca/hca.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "soft/shm_layout.hpp"
#include "soft/soft_testing.hpp"
#include "cm/cm_engine.hpp"
#include "ipoib/hca/rc.hpp"

using namespace ipoib;
using namespace ipoib::hca;

namespace {

struct PeerQp {
    std::unique_ptr<Cq> cq;  // send queue 0's and receive queue 0's
    // The CQs of receive queues 1.. (rxq=) and of send queues 1.. (txq=);
    // before qp: the QP goes first.
    std::vector<std::unique_ptr<Cq>> rcqs, scqs;
    std::unique_ptr<Qp> qp;
    std::uint8_t *pool = nullptr;
    std::unique_ptr<Mr> mr;
    // nbuf = rq * nrq buffers; receive queue r owns buffers [r * rq, (r + 1) * rq).
    std::uint32_t nbuf = 0, bufsize = 0, rq = 0;
    std::uint32_t nrq = 1, nsq = 1;
    std::vector<std::uint32_t> next;  // per receive queue: its next buffer
    std::uint8_t port = 1;
    std::map<std::uint32_t, std::unique_ptr<Ah>> ahs;
    // Per receive queue: its completions reaped while sending (receive queue 0
    // shares send queue 0's CQ), for the next `recv`.
    std::vector<std::vector<Wc>> stash;
    RssConf rss{};  // what the QP was created with or last set_rss
    Cq &rcq(std::uint32_t r) { return r == 0 || r > rcqs.size() ? *cq : *rcqs[r - 1]; }
    Cq &scq(std::uint32_t s) { return s == 0 || s > scqs.size() ? *cq : *scqs[s - 1]; }
};

// Reliable connections (rc.hpp): receives of `sge` buffers of `size` bytes
// each, receive i in buffers [i * sge, (i + 1) * sge) of one alloc_dma pool.
struct RcPool {
    std::unique_ptr<Cq> cq;
    std::uint8_t *mem = nullptr;
    std::unique_ptr<Mr> mr;
    std::uint32_t n = 0, sge = 1, size = 0;
};
struct PeerSrq {
    RcPool pool;
    std::unique_ptr<Srq> srq;
};
struct PeerRc {
    std::unique_ptr<Cq> scq;
    RcPool own;              // without an SRQ
    std::string srq;         // its SRQ's name, or empty
    std::unique_ptr<RcQp> qp;
    std::vector<std::uint8_t> tx;  // send buffer
    std::uint32_t next_seq = 0;
};

struct Device {
    std::unique_ptr<Context> ctx;
    std::map<std::string, PeerQp> qps;
    std::map<std::string, PeerSrq> srqs;
    std::map<std::string, PeerRc> rcs;  // after srqs: an RC QP goes before its SRQ
    std::unique_ptr<cm::MadTransport> gsi;
    std::unique_ptr<Cm> cm;  // open_cm(1)
};

std::map<std::string, std::string> kv(std::istringstream &in) {
    std::map<std::string, std::string> m;
    std::string w;
    while (in >> w) {
        auto eq = w.find('=');
        if (eq != std::string::npos)
            m[w.substr(0, eq)] = w.substr(eq + 1);
    }
    return m;
}

unsigned long num(const std::map<std::string, std::string> &m, const char *k, unsigned long def) {
    auto it = m.find(k);
    return it == m.end() ? def : std::strtoul(it->second.c_str(), nullptr, 0);
}

void fill(std::uint8_t *p, std::uint32_t len, std::uint32_t seq) {
    for (std::uint32_t i = 0; i < len; ++i)
        p[i] = static_cast<std::uint8_t>((seq + i) & 0xff);
    if (len >= 4)
        std::memcpy(p, &seq, 4);
}

bool check(const std::uint8_t *p, std::uint32_t len) {
    if (len < 4)
        return true;
    std::uint32_t seq;
    std::memcpy(&seq, p, 4);
    for (std::uint32_t i = 4; i < len; ++i)
        if (p[i] != static_cast<std::uint8_t>((seq + i) & 0xff))
            return false;
    return true;
}

// Microsoft's RSS specification's verification key (the default rss_key).
constexpr char kSpecRssKey[] = "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c"
                               "6a42b73bbeac01fa";

bool parse_key(const std::string &hex, std::uint8_t (&key)[kRssKeyLen]) {
    if (hex.size() != 2 * kRssKeyLen)
        return false;
    for (std::uint32_t i = 0; i < kRssKeyLen; ++i) {
        char *end = nullptr;
        const std::string byte = hex.substr(2 * i, 2);
        const unsigned long v = std::strtoul(byte.c_str(), &end, 16);
        if (*end != '\0' || !std::isxdigit(static_cast<unsigned char>(byte[0])))
            return false;
        key[i] = static_cast<std::uint8_t>(v);
    }
    return true;
}

// reta=A,B,...: the entries, repeated to fill the table (reta=3: every entry 3).
bool parse_reta(const std::string &list, std::uint16_t (&reta)[kRssRetaSize]) {
    std::vector<std::uint16_t> v;
    std::istringstream in(list);
    std::string item;
    while (std::getline(in, item, ',')) {
        char *end = nullptr;
        const unsigned long q = std::strtoul(item.c_str(), &end, 0);
        if (item.empty() || *end != '\0' || q > 0xffff)
            return false;
        v.push_back(static_cast<std::uint16_t>(q));
    }
    if (v.empty() || v.size() > kRssRetaSize)
        return false;
    for (std::uint32_t i = 0; i < kRssRetaSize; ++i)
        reta[i] = v[i % v.size()];
    return true;
}

// An IPoIB IPv4/UDP frame (send ... ipv4udp=SRC,DST,SPORT,DPORT): the 4-byte
// encapsulation header (ethertype 0x0800, 2 reserved bytes), a 20-byte IPv4
// header (DF, TTL 64, identification = the message's sequence number, a
// valid checksum), an 8-byte UDP header (checksum 0: none), then the pattern
// (4-byte sequence number, ...) as any other payload.
struct Ipv4Udp {
    std::uint8_t src[4], dst[4];
    std::uint16_t sport, dport;
};
constexpr std::uint32_t kIpv4UdpHdrs = 4 + 20 + 8;

bool parse_ipv4udp(const std::string &text, Ipv4Udp *f) {
    std::vector<std::string> parts;
    std::istringstream in(text);
    std::string item;
    while (std::getline(in, item, ','))
        parts.push_back(item);
    if (parts.size() != 4 || inet_pton(AF_INET, parts[0].c_str(), f->src) != 1 ||
        inet_pton(AF_INET, parts[1].c_str(), f->dst) != 1)
        return false;
    for (int i = 2; i < 4; ++i) {
        char *end = nullptr;
        const unsigned long port = std::strtoul(parts[static_cast<std::size_t>(i)].c_str(), &end, 0);
        if (parts[static_cast<std::size_t>(i)].empty() || *end != '\0' || port > 0xffff)
            return false;
        (i == 2 ? f->sport : f->dport) = static_cast<std::uint16_t>(port);
    }
    return true;
}

void put16(std::uint8_t *p, std::uint32_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}

std::uint16_t ip_checksum(const std::uint8_t *p, std::uint32_t len) {
    std::uint32_t sum = 0;
    for (std::uint32_t i = 0; i + 1 < len; i += 2)
        sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum);
}

// len >= kIpv4UdpHdrs.
void fill_ipv4udp(std::uint8_t *p, std::uint32_t len, std::uint32_t seq, const Ipv4Udp &f) {
    std::memset(p, 0, kIpv4UdpHdrs);
    put16(p, 0x0800);
    std::uint8_t *ip = p + 4;
    ip[0] = 0x45;
    put16(ip + 2, len - 4);
    put16(ip + 4, seq & 0xffff);
    put16(ip + 6, 0x4000);  // DF, not a fragment
    ip[8] = 64;
    ip[9] = 17;  // UDP
    std::memcpy(ip + 12, f.src, 4);
    std::memcpy(ip + 16, f.dst, 4);
    put16(ip + 10, ip_checksum(ip, 20));
    std::uint8_t *udp = ip + 20;
    put16(udp, f.sport);
    put16(udp + 2, f.dport);
    put16(udp + 4, len - 24);
    fill(p + kIpv4UdpHdrs, len - kIpv4UdpHdrs, seq);
}

// Is the payload a frame fill_ipv4udp wrote (by its start: a pattern payload
// starts with its sequence number, and only sequence 8 starts 08 00 00 00,
// followed by 12, not 0x45)? Then *flow "SRC,DST,SPORT,DPORT" and whether the
// frame is intact (header checksum, lengths, the pattern after the headers).
bool is_ipv4udp(const std::uint8_t *p, std::uint32_t len, std::string *flow, bool *intact) {
    if (len < kIpv4UdpHdrs || p[0] != 0x08 || p[1] != 0 || p[2] != 0 || p[3] != 0 || p[4] != 0x45 || p[13] != 17)
        return false;
    const std::uint8_t *ip = p + 4, *udp = p + 24;
    char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, ip + 12, a, sizeof a);
    inet_ntop(AF_INET, ip + 16, b, sizeof b);
    *flow = std::string(a) + "," + b + "," + std::to_string(udp[0] << 8 | udp[1]) + "," +
            std::to_string(udp[2] << 8 | udp[3]);
    *intact = ip_checksum(ip, 20) == 0 && static_cast<std::uint32_t>(ip[2] << 8 | ip[3]) == len - 4 &&
              static_cast<std::uint32_t>(udp[4] << 8 | udp[5]) == len - 24 &&
              check(p + kIpv4UdpHdrs, len - kIpv4UdpHdrs);
    return true;
}

std::string err_json(const std::string &msg) {
    std::string s = "{\"error\":\"";
    for (char c : msg)
        s += (c == '"' || c == '\\') ? '\'' : c;
    return s + "\"}";
}

// corrupt NAME what=W value=V: write into the fabric's shared memory what a
// buggy peer could (the soft HCA through the fault provider only).
std::string corrupt(Context &ctx, PeerQp &q, std::map<std::string, std::string> &m) {
    soft::FabricShm *shm = soft::fabric_shm(ctx);
    if (!shm)
        return err_json("corrupt: not a soft-HCA device (use the fault provider)");
    soft::QpEntry &e = shm->qps[soft::qpn_slot(q.qp->qp_num())];
    const std::string what = m["what"];
    const auto v = num(m, "value", 0);
    int n = 0;
    auto each_slot = [&](soft::SlotKind kind, auto &&f) {
        for (auto &s : e.rq)
            if (soft::slot_kind(s.state.load()) == kind) {
                f(s);
                ++n;
            }
    };
    if (what == "proc_start_time") {  // this process's own entry: others may judge it dead
        std::uint32_t p = 0, g = 0;
        soft::fabric_proc(ctx, &p, &g);
        shm->procs[p].start_time.store(v);
        n = 1;
    } else if (what == "qp_port_idx") {
        e.port_idx.store(static_cast<std::uint32_t>(v));
        n = 1;
    } else if (what == "qp_rq_depth") {
        e.rq_depth.store(static_cast<std::uint32_t>(v));
        n = 1;
    } else if (what == "rq_head") {
        e.rq_head.store(v);
        n = 1;
    } else if (what == "done_byte_len") {
        each_slot(soft::kDone, [&](soft::RqSlot &s) { s.byte_len = static_cast<std::uint32_t>(v); });
    } else if (what == "done_status") {
        each_slot(soft::kDone, [&](soft::RqSlot &s) { s.status = static_cast<std::uint8_t>(v); });
    } else if (what == "done_kind" || what == "posted_kind") {
        each_slot(what == "done_kind" ? soft::kDone : soft::kPosted, [&](soft::RqSlot &s) {
            s.state.store((s.state.load() & ~std::uint64_t{0xff}) | (v & 0xff));
        });
    } else {
        return err_json("corrupt: unknown what=" + what);
    }
    return "{\"corrupted\":" + std::to_string(n) + "}";
}

bool make_pool(Context &ctx, RcPool &p, std::uint32_t n, std::uint32_t sge, std::uint32_t size) {
    p.cq = ctx.create_cq(static_cast<int>(n + 1024));
    p.n = n;
    p.sge = sge;
    p.size = size;
    p.mem = static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{n} * sge * size));
    if (!p.cq || !p.mem)
        return false;
    p.mr = ctx.reg_mr(p.mem, std::size_t{n} * sge * size);
    return p.mr != nullptr;
}

template <class Q>
int post_pool(Q &q, RcPool &p, std::uint32_t i) {
    Sge sg[kMaxRcRecvSge];
    for (std::uint32_t k = 0; k < p.sge; ++k)
        sg[k] = Sge{reinterpret_cast<std::uintptr_t>(p.mem + (std::size_t{i} * p.sge + k) * p.size), p.size,
                    p.mr->lkey()};
    const RcRecvWr wr{i, sg, p.sge};
    return q.post_recv(&wr, 1);
}

const char *status_name(WcStatus s) { return to_string(s); }

std::string statuses_json(const std::map<std::string, int> &st) {
    std::string o = "{";
    bool first = true;
    for (auto &[k, v] : st) {
        o += (first ? "\"" : ",\"") + k + "\":" + std::to_string(v);
        first = false;
    }
    return o + "}";
}

// RC commands (rc.hpp), the soft HCA's and any provider's that has them:
//   srq NAME n=N sge=S size=B                   an SRQ with its CQ, N receives of S buffers of B bytes posted
//   rcqp NAME [srq=S | n=N sge=S size=B] [sq=D] [pkey_index=I]
//                                               an RC QP (its send CQ; its own receive queue and CQ,
//                                               N receives posted, or the SRQ's) -> {"qpn":Q}
//   rcconnect NAME dlid=L dqpn=Q [rpsn=P] [lpsn=P] [rnr_retry=R] [min_rnr=T] [mtu=M]
//   rcsend NAME size=S count=C [sge=G] [timeout_ms=T] [pattern=0]
//                                               C messages of S bytes (pattern, sequence numbers go on
//                                               across calls), gathered from G entries; waits up to T ms
//                                               for their completions: "statuses", "completed", "us"
//                                               (pattern=0: payloads not written, for measuring)
//   rcpoll NAME count=C timeout_ms=T            more send completions ("statuses", "completed")
//   rcrecv NAME count=C timeout_ms=T [repost=1] [verify=0]
//                                               receive completions of NAME (an RC QP's own queue or an
//                                               SRQ): "received", "bad_payload", "lens", "seqs",
//                                               "src_qps", "qp_nums", "slids", "statuses"
//   rcerror NAME / rcstate NAME / rccounters NAME
//   cm open | listen sid=S | req NAME dlid=L sid=S psn=P | rep id=I NAME psn=P | rtu id=I | rej id=I
//      | dreq id=I | drep id=I | event timeout_ms=T | counters
//                                               the port's connection manager (open_cm(1)): NAME is the
//                                               RC QP whose QPN a REQ or REP carries; event: the next
//                                               CmEvent {"type","id","service_id","remote_qpn","psn",
//                                               "slid","dlid","rej_reason","pd"} or {"type":null}
//   madsend dlid=L service_id=S                 a CM REQ MAD (IBA 12.6.5) through the GSI transport
//   madrecv timeout_ms=T                        one MAD: {"got":1,"slid":..,"qpn":..,"attr":..,"service_id":..}
std::string run_rc(Device &dev, const std::string &cmd, std::istringstream &in) {
    Context &ctx = *dev.ctx;
    std::ostringstream out;
    if (cmd == "cm") {
        std::string sub;
        in >> sub;
        if (sub == "open") {
            auto c = ctx.open_cm(1);  // (a second one fails: the first stays)
            if (!c)
                return err_json(ctx.last_error());
            dev.cm = std::move(c);
            return "{\"ok\":true}";
        }
        if (!dev.cm)
            return err_json("cm: not open");
        std::string qpname;
        if (sub == "req" || sub == "rep")
            in >> qpname;
        auto m = kv(in);
        const auto id = static_cast<std::uint32_t>(num(m, "id", 0));
        auto qpn_of = [&](const std::string &n) -> std::uint32_t {
            auto it = dev.rcs.find(n);
            return it == dev.rcs.end() ? 0 : it->second.qp->qp_num();
        };
        const std::uint8_t pd[4] = {0xde, 0xad, 0xbe, 0xef};
        int r = 0;
        if (sub == "listen") {
            r = dev.cm->listen(num(m, "sid", 0));
        } else if (sub == "req") {
            CmReqParam p;
            p.service_id = num(m, "sid", 0);
            PortAttr pa;
            ctx.query_port(1, &pa);
            p.path.slid = pa.lid;
            p.path.dlid = static_cast<std::uint16_t>(num(m, "dlid", 0));
            ctx.query_gid(1, 0, &p.path.sgid);
            p.path.mtu = Mtu::mtu2048;
            p.path.packet_life_time = 10;
            p.local_qpn = qpn_of(qpname);
            p.starting_psn = static_cast<std::uint32_t>(num(m, "psn", 0));
            p.private_data = pd;
            p.private_data_len = sizeof pd;
            p.rnr_retry_count = 7;
            std::uint32_t nid = 0;
            r = dev.cm->send_req(p, &nid);
            if (r == 0)
                return "{\"id\":" + std::to_string(nid) + "}";
        } else if (sub == "rep") {
            CmRepParam p;
            p.local_qpn = qpn_of(qpname);
            p.starting_psn = static_cast<std::uint32_t>(num(m, "psn", 0));
            p.rnr_retry_count = 7;
            r = dev.cm->send_rep(id, p);
        } else if (sub == "rtu") {
            r = dev.cm->send_rtu(id);
        } else if (sub == "rej") {
            r = dev.cm->send_rej(id, CmRejReason::consumer);
        } else if (sub == "dreq") {
            r = dev.cm->send_dreq(id);
        } else if (sub == "drep") {
            r = dev.cm->send_drep(id);
        } else if (sub == "counters") {
            cm::CmCounters c;
            cm::cm_counters(*dev.cm, &c);
            out << "{\"mads_sent\":" << c.mads_sent << ",\"mads_received\":" << c.mads_received
                << ",\"send_errors\":" << c.send_errors << ",\"retransmits\":" << c.retransmits << "}";
            return out.str();
        } else if (sub == "event") {
            const auto deadline =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
            CmEvent ev{};
            int got = 0;
            while ((got = dev.cm->get_event(&ev)) == 0 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            if (got != 1)
                return "{\"type\":null}";
            std::string hex;
            for (std::uint8_t i = 0; i < ev.private_data_len && i < 8; ++i) {
                char b[3];
                std::snprintf(b, sizeof b, "%02x", ev.private_data[i]);
                hex += b;
            }
            out << "{\"type\":\"" << to_string(ev.type) << "\",\"id\":" << ev.id << ",\"service_id\":"
                << ev.service_id << ",\"remote_qpn\":" << ev.remote_qpn << ",\"psn\":" << ev.starting_psn
                << ",\"slid\":" << ev.path.slid << ",\"dlid\":" << ev.path.dlid << ",\"rej_reason\":"
                << ev.rej_reason << ",\"pd\":\"" << hex << "\"}";
            return out.str();
        } else {
            return err_json("cm: unknown " + sub);
        }
        return r == 0 ? "{\"ok\":true}" : err_json("cm " + sub + ": " + std::to_string(r) + " " + ctx.last_error());
    }
    if (cmd == "madsend" || cmd == "madrecv") {
        auto m = kv(in);
        if (!dev.gsi)
            dev.gsi = soft::gsi_transport(ctx, 1);
        if (!dev.gsi)
            return err_json("no GSI transport (not a soft-HCA device)");
        if (cmd == "madsend") {
            std::uint8_t mad[cm::kMadSize] = {};
            mad[0] = 1;     // base version
            mad[1] = 0x07;  // CM class
            mad[2] = 2;     // class version
            mad[3] = 0x03;  // Send
            const std::uint64_t tid = 0x1234;
            for (int i = 0; i < 8; ++i)
                mad[8 + i] = static_cast<std::uint8_t>(tid >> (56 - 8 * i));
            mad[16] = 0x00, mad[17] = 0x10;  // attribute ConnectRequest
            std::uint8_t *req = mad + 24;
            req[0] = 0, req[1] = 0, req[2] = 0x12, req[3] = 0x34;  // local communication ID
            const std::uint64_t sid = num(m, "service_id", 0x1000000000000048ull);
            for (int i = 0; i < 8; ++i)
                req[8 + i] = static_cast<std::uint8_t>(sid >> (56 - 8 * i));
            cm::MadAddr to;
            to.lid = static_cast<std::uint16_t>(num(m, "dlid", 0));
            const int r = dev.gsi->send(to, mad);
            out << "{\"sent\":" << (r == 0 ? 1 : 0) << ",\"rc\":" << r << "}";
        } else {
            const auto deadline =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
            std::uint8_t mad[cm::kMadSize];
            cm::MadAddr from;
            int r = 0;
            while ((r = dev.gsi->recv(mad, &from)) == 0 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            std::uint64_t sid = 0;
            for (int i = 0; i < 8; ++i)
                sid = sid << 8 | mad[24 + 8 + i];
            out << "{\"got\":" << (r > 0 ? 1 : 0) << ",\"len\":" << r;
            if (r > 0)
                out << ",\"slid\":" << from.lid << ",\"qpn\":" << from.qpn << ",\"class\":" << int(mad[1])
                    << ",\"attr\":" << (mad[16] << 8 | mad[17]) << ",\"service_id\":" << sid;
            out << "}";
        }
        return out.str();
    }
    std::string name;
    in >> name;
    auto m = kv(in);
    if (cmd == "srq") {
        PeerSrq &q = dev.srqs[name];
        if (!make_pool(ctx, q.pool, static_cast<std::uint32_t>(num(m, "n", 64)),
                       static_cast<std::uint32_t>(num(m, "sge", 1)), static_cast<std::uint32_t>(num(m, "size", 2048))))
            return err_json(ctx.last_error());
        SrqInit init;
        init.cq = q.pool.cq.get();
        init.max_wr = q.pool.n;
        init.max_sge = q.pool.sge;
        q.srq = ctx.create_srq(init);
        if (!q.srq)
            return err_json(ctx.last_error());
        for (std::uint32_t i = 0; i < q.pool.n; ++i)
            if (post_pool(*q.srq, q.pool, i) != 1)
                return err_json("srq: post_recv: " + ctx.last_error());
        return "{\"ok\":true}";
    }
    if (cmd == "rcqp") {
        PeerRc &q = dev.rcs[name];
        q.scq = ctx.create_cq(static_cast<int>(num(m, "sq", 256) + 64));
        RcQpInit init;
        init.send_cq = q.scq.get();
        init.max_send_wr = static_cast<std::uint32_t>(num(m, "sq", 256));
        init.pkey_index = static_cast<std::uint16_t>(num(m, "pkey_index", 0));
        if (m.count("srq")) {
            auto it = dev.srqs.find(m["srq"]);
            if (it == dev.srqs.end())
                return err_json("rcqp: no SRQ " + m["srq"]);
            q.srq = m["srq"];
            init.srq = it->second.srq.get();
            init.recv_cq = it->second.pool.cq.get();
        } else {
            if (!make_pool(ctx, q.own, static_cast<std::uint32_t>(num(m, "n", 64)),
                           static_cast<std::uint32_t>(num(m, "sge", 1)),
                           static_cast<std::uint32_t>(num(m, "size", 2048))))
                return err_json(ctx.last_error());
            init.recv_cq = q.own.cq.get();
            init.max_recv_wr = q.own.n;
            init.max_recv_sge = q.own.sge;
        }
        q.qp = ctx.create_rc_qp(init);
        if (!q.qp) {
            const std::string e = ctx.last_error();
            dev.rcs.erase(name);
            return err_json(e);
        }
        if (q.srq.empty())
            for (std::uint32_t i = 0; i < q.own.n; ++i)
                if (post_pool(*q.qp, q.own, i) != 1)
                    return err_json("rcqp: post_recv: " + ctx.last_error());
        return "{\"qpn\":" + std::to_string(q.qp->qp_num()) + "}";
    }
    // The receive side of NAME: an SRQ, or an RC QP's own queue.
    if (cmd == "rcrecv") {
        RcPool *pool = nullptr;
        Srq *srq = nullptr;
        RcQp *own = nullptr;
        if (auto it = dev.srqs.find(name); it != dev.srqs.end()) {
            pool = &it->second.pool;
            srq = it->second.srq.get();
        } else if (auto jt = dev.rcs.find(name); jt != dev.rcs.end() && jt->second.srq.empty()) {
            pool = &jt->second.own;
            own = jt->second.qp.get();
        } else {
            return err_json("rcrecv: no SRQ or RC QP with its own receive queue named " + name);
        }
        const auto want = num(m, "count", 1);
        const bool repost = num(m, "repost", 0) != 0;
        const bool verify = num(m, "verify", 1) != 0;  // 0: a benchmark's run, payloads not read
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
        std::map<std::string, int> st;
        std::set<std::uint32_t> lens, srcs, qpns, slids;
        std::string seqs = "[";
        unsigned long got = 0, bad = 0;
        std::vector<std::uint8_t> msg;
        while (got < want && std::chrono::steady_clock::now() < deadline) {
            Wc wc[32];
            const int k = pool->cq->poll(wc, static_cast<int>(std::min<unsigned long>(32, want - got)));
            if (k <= 0) {
                std::this_thread::yield();
                continue;
            }
            for (int i = 0; i < k; ++i) {
                ++got;
                ++st[status_name(wc[i].status)];
                const auto idx = static_cast<std::uint32_t>(wc[i].wr_id);
                if (wc[i].status == WcStatus::success && idx < pool->n && !verify) {
                    lens.insert(wc[i].byte_len);
                } else if (wc[i].status == WcStatus::success && idx < pool->n) {
                    // The message, gathered back from the receive's buffers in order.
                    const std::uint32_t len = wc[i].byte_len;
                    msg.assign(pool->mem + std::size_t{idx} * pool->sge * pool->size,
                               pool->mem + std::size_t{idx} * pool->sge * pool->size + len);
                    if (!check(msg.data(), len))
                        ++bad;
                    std::uint32_t seq = 0;
                    if (len >= 4)
                        std::memcpy(&seq, msg.data(), 4);
                    seqs += (seqs.size() > 1 ? "," : "") + std::to_string(seq);
                    lens.insert(len);
                    srcs.insert(wc[i].src_qp);
                    slids.insert(wc[i].slid);
                }
                qpns.insert(wc[i].qp_num);
                if (repost && idx < pool->n) {
                    const int r = srq ? post_pool(*srq, *pool, idx) : post_pool(*own, *pool, idx);
                    (void)r;
                }
            }
        }
        auto list = [](const std::set<std::uint32_t> &v) {
            std::string o = "[";
            for (auto x : v)
                o += (o.size() > 1 ? "," : "") + std::to_string(x);
            return o + "]";
        };
        out << "{\"received\":" << got << ",\"bad_payload\":" << bad << ",\"statuses\":" << statuses_json(st)
            << ",\"lens\":" << list(lens) << ",\"src_qps\":" << list(srcs) << ",\"qp_nums\":" << list(qpns)
            << ",\"slids\":" << list(slids) << ",\"seqs\":" << seqs << "]}";
        return out.str();
    }
    auto it = dev.rcs.find(name);
    if (it == dev.rcs.end())
        return err_json(cmd + ": no RC QP " + name);
    PeerRc &q = it->second;
    if (cmd == "rcconnect") {
        RcConnect c;
        c.path.dlid = static_cast<std::uint16_t>(num(m, "dlid", 0));
        c.remote_qpn = static_cast<std::uint32_t>(num(m, "dqpn", 0));
        c.remote_psn = static_cast<std::uint32_t>(num(m, "rpsn", 0));
        c.local_psn = static_cast<std::uint32_t>(num(m, "lpsn", 0));
        c.rnr_retry = static_cast<std::uint8_t>(num(m, "rnr_retry", 7));
        c.min_rnr_timer = static_cast<std::uint8_t>(num(m, "min_rnr", 12));
        switch (num(m, "mtu", 2048)) {
        case 256: c.path_mtu = Mtu::mtu256; break;
        case 512: c.path_mtu = Mtu::mtu512; break;
        case 1024: c.path_mtu = Mtu::mtu1024; break;
        case 4096: c.path_mtu = Mtu::mtu4096; break;
        default: c.path_mtu = Mtu::mtu2048; break;
        }
        if (q.qp->connect(c) != 0)
            return err_json(ctx.last_error());
        return "{\"state\":\"" + std::string(to_string(q.qp->state())) + "\"}";
    }
    if (cmd == "rcstate")
        return "{\"state\":\"" + std::string(to_string(q.qp->state())) + "\"}";
    if (cmd == "rcerror") {
        q.qp->set_error();
        return "{\"state\":\"" + std::string(to_string(q.qp->state())) + "\"}";
    }
    if (cmd == "rccounters") {
        const QpCounters c = q.qp->counters();
        out << "{\"tx_packets\":" << c.tx_packets << ",\"tx_bytes\":" << c.tx_bytes << ",\"tx_errors\":"
            << c.tx_errors << ",\"rx_packets\":" << c.rx_packets << ",\"rx_bytes\":" << c.rx_bytes
            << ",\"drop_no_buffer\":" << c.drop_no_buffer << ",\"drop_too_long\":" << c.drop_too_long << "}";
        return out.str();
    }
    if (cmd == "rcsend" || cmd == "rcpoll") {
        const auto count = num(m, "count", 1);
        const auto size = static_cast<std::uint32_t>(num(m, "size", 0));
        const auto nsge = static_cast<std::uint32_t>(std::max<unsigned long>(1, num(m, "sge", 1)));
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 2000));
        std::map<std::string, int> st;
        const bool pattern = num(m, "pattern", 1) != 0;  // 0: a benchmark's run, payloads not written
        unsigned long posted = cmd == "rcpoll" ? count : 0, done = 0;
        const auto t0 = std::chrono::steady_clock::now();
        int first_rc = 0;
        // Each message its own buffer (they may wait behind an RNR, read later).
        if (cmd == "rcsend")
            q.tx.resize(std::size_t{count} * std::max<std::uint32_t>(size, 1));
        while (done < count && std::chrono::steady_clock::now() < deadline) {
            if (posted < count) {
                SendWr wrs[16];
                Sge sgs[16][kMaxRcSendSge];  // (a reliable connection's gather list is the longer)
                int n = 0;
                for (; n < 16 && posted + static_cast<unsigned long>(n) < count; ++n) {
                    std::uint8_t *buf = q.tx.data() + (posted + static_cast<unsigned long>(n)) * std::max<std::uint32_t>(size, 1);
                    if (pattern)
                        fill(buf, size, q.next_seq + static_cast<std::uint32_t>(n));
                    const std::uint32_t g = std::min<std::uint32_t>(nsge, kMaxRcSendSge);
                    std::uint32_t off = 0;
                    for (std::uint32_t k = 0; k < g; ++k) {
                        const std::uint32_t l = k + 1 == g ? size - off : size / g;
                        sgs[n][k] = Sge{reinterpret_cast<std::uintptr_t>(buf + off), l, 0};
                        off += l;
                    }
                    wrs[n] = SendWr{posted + static_cast<unsigned long>(n), sgs[n], g, nullptr, 0, 0, true};
                }
                const int r = q.qp->post_send(wrs, n);
                if (r < 0 && posted == 0)
                    return err_json(ctx.last_error());
                if (r < 0)
                    first_rc = r;
                if (r > 0) {
                    posted += static_cast<unsigned long>(r);
                    q.next_seq += static_cast<std::uint32_t>(r);
                }
            }
            Wc wc[32];
            const int k = q.scq->poll(wc, 32);
            for (int i = 0; i < k; ++i) {
                ++done;
                ++st[status_name(wc[i].status)];
            }
            if (k <= 0)
                std::this_thread::yield();
        }
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
        out << "{\"posted\":" << posted << ",\"completed\":" << done << ",\"us\":" << us.count()
            << ",\"statuses\":" << statuses_json(st)
            << ",\"post_rc\":" << first_rc << ",\"state\":\"" << to_string(q.qp->state()) << "\"}";
        return out.str();
    }
    return err_json("unknown command '" + cmd + "'");
}

// One command on one device; returns the reply line.
std::string run(Device &dev, const std::string &cmd, std::istringstream &in) {
    Context &ctx = *dev.ctx;
    auto &qps = dev.qps;
    std::string name;
    std::ostringstream out;
    if (cmd == "port") {
        int p = 1;
        in >> p;
        PortAttr a;
        if (ctx.query_port(static_cast<std::uint8_t>(p), &a) != 0)
            return err_json(ctx.last_error());
        Gid g;
        const int gi = ipoib_gid_index(ctx, static_cast<std::uint8_t>(p));
        ctx.query_gid(static_cast<std::uint8_t>(p), gi, &g);
        out << "{\"state\":\"" << to_string(a.state) << "\",\"link_layer\":\""
            << (a.link_layer == LinkLayer::ethernet ? "ethernet" : "infiniband") << "\",\"gid_index\":" << gi
            << ",\"lid\":" << a.lid << ",\"sm_lid\":" << a.sm_lid
            << ",\"guid\":" << a.port_guid << ",\"mtu\":" << mtu_bytes(a.active_mtu) << ",\"gid\":\""
            << wire::to_string(g) << "\",\"pkeys\":[";
        bool first = true;
        for (int i = 0; i < static_cast<int>(kMaxPkeys); ++i) {
            std::uint16_t k;
            ctx.query_pkey(static_cast<std::uint8_t>(p), i, &k);
            if (k & 0x7fff) {
                out << (first ? "" : ",") << "[" << i << "," << k << "]";
                first = false;
            }
        }
        out << "]}";
    } else if (cmd == "qp") {
        in >> name;
        auto m = kv(in);
        // Several queues: rxq receive queues and txq send queues, each with a
        // CQ of its own (queue 0 of each kind on the one CQ as without them).
        const auto rxq = static_cast<std::uint32_t>(num(m, "rxq", 1));
        const auto txq = static_cast<std::uint32_t>(num(m, "txq", 1));
        if (rxq > 64 || txq > 64)
            return err_json("qp: rxq and txq at most 64 here");
        RssConf rss;
        rss.fields = static_cast<std::uint32_t>(num(m, "rss_fields", kRssAllFields));
        if (!parse_key(m.count("rss_key") ? m["rss_key"] : kSpecRssKey, rss.key))
            return err_json("qp: rss_key: expected 80 hex digits");
        for (std::uint32_t i = 0; i < kRssRetaSize; ++i)
            rss.reta[i] = static_cast<std::uint16_t>(rxq ? i % rxq : 0);
        if (m.count("reta") && !parse_reta(m["reta"], rss.reta))
            return err_json("qp: reta: expected up to 128 queue numbers, comma separated");
        PeerQp &q = qps[name];
        q.qp.reset();  // a QP of that name before: it goes before its CQs
        q.rcqs.clear();
        q.scqs.clear();
        q.port = static_cast<std::uint8_t>(num(m, "port", 1));
        const auto rq = static_cast<std::uint32_t>(num(m, "rq", 64));
        const int depth = static_cast<int>(num(m, "cq", rq + 1024));
        q.cq = ctx.create_cq(depth);
        std::vector<Cq *> rcqs{q.cq.get()}, scqs{q.cq.get()};
        bool cqs_ok = q.cq != nullptr;
        for (std::uint32_t i = 1; cqs_ok && i < rxq; ++i) {
            q.rcqs.push_back(ctx.create_cq(depth));
            rcqs.push_back(q.rcqs.back().get());
            cqs_ok = q.rcqs.back() != nullptr;
        }
        for (std::uint32_t i = 1; cqs_ok && i < txq; ++i) {
            q.scqs.push_back(ctx.create_cq(depth));
            scqs.push_back(q.scqs.back().get());
            cqs_ok = q.scqs.back() != nullptr;
        }
        QpInit init;
        init.send_cq = q.cq.get();
        init.recv_cq = q.cq.get();
        init.port_num = q.port;
        init.pkey_index = static_cast<std::uint16_t>(num(m, "pkey_index", 0));
        init.qkey = static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b));
        init.max_recv_wr = rq;
        init.max_send_wr = static_cast<std::uint32_t>(num(m, "sq", init.max_send_wr));
        if (m.count("rxq") || m.count("txq")) {
            init.num_recv_queues = rxq;
            init.num_send_queues = txq;
            init.recv_cqs = rxq > 1 ? rcqs.data() : nullptr;
            init.send_cqs = txq > 1 ? scqs.data() : nullptr;
            init.rss = rss;
        }
        q.qp = cqs_ok ? ctx.create_ud_qp(init) : nullptr;
        if (!q.qp) {
            qps.erase(name);
            return err_json(ctx.last_error());
        }
        q.nrq = rxq;
        q.nsq = txq;
        q.rss = rss;
        q.rq = rq;
        q.next.assign(rxq, 0);
        q.stash.assign(rxq, {});
        q.nbuf = rq * rxq;
        q.bufsize = static_cast<std::uint32_t>(num(m, "bufsize", kGrhLen + 4096));
        q.pool = static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{q.nbuf} * q.bufsize));
        q.mr = q.pool ? ctx.reg_mr(q.pool, std::size_t{q.nbuf} * q.bufsize) : nullptr;
        if (!q.mr)
            return err_json(ctx.last_error());
        out << "{\"qpn\":" << q.qp->qp_num() << "}";
    } else if (cmd == "post" || cmd == "send" || cmd == "recv" || cmd == "attach" || cmd == "detach" ||
               cmd == "counters" || cmd == "sendloop" || cmd == "realloc" || cmd == "corrupt" || cmd == "rss") {
        in >> name;
        auto it = qps.find(name);
        if (it == qps.end())
            return err_json("no QP " + name);
        PeerQp &q = it->second;
        auto m = kv(in);
        if (cmd == "realloc") {
            const std::size_t len = std::size_t{q.nbuf} * q.bufsize;
            q.mr.reset();
            ctx.free_dma(q.pool);
            q.pool = static_cast<std::uint8_t *>(ctx.alloc_dma(len));
            q.mr = q.pool ? ctx.reg_mr(q.pool, len) : nullptr;
            if (!q.mr)
                return err_json(ctx.last_error());
            q.next.assign(q.nrq, 0);
            out << "{\"lkey\":" << q.mr->lkey() << "}";
        } else if (cmd == "corrupt") {
            return corrupt(ctx, q, m);
        } else if (cmd == "rss") {
            // set_rss with what is given changed from the QP's last RssConf.
            RssConf rss = q.rss;
            rss.fields = static_cast<std::uint32_t>(num(m, "fields", rss.fields));
            if (m.count("key") && !parse_key(m["key"], rss.key))
                return err_json("rss: key: expected 80 hex digits");
            if (m.count("reta") && !parse_reta(m["reta"], rss.reta))
                return err_json("rss: reta: expected up to 128 queue numbers, comma separated");
            const int r = q.qp->set_rss(rss);
            if (r != 0)  // (the default set_rss refuses without a message: the code says it)
                return err_json("set_rss returned " + std::to_string(r) + ": " + ctx.last_error());
            q.rss = rss;
            out << "{\"ok\":true}";
        } else if (cmd == "post") {
            // queue=R: receive queue R's buffers, through post_recv_queue (a queue
            // the QP does not have: buffer 0, for the provider to refuse).
            const bool by_queue = m.count("queue") != 0;
            const auto rq = static_cast<std::uint32_t>(num(m, "queue", 0));
            const auto n = num(m, "n", q.rq);
            const auto size = static_cast<std::uint32_t>(num(m, "size", q.bufsize));
            int posted = 0;
            for (unsigned long i = 0; i < n; ++i) {
                const std::uint32_t b = rq < q.nrq ? rq * q.rq + q.next[rq]++ % q.rq : 0;
                RecvWr wr{b, {reinterpret_cast<std::uintptr_t>(q.pool + std::size_t{b} * q.bufsize),
                              std::min(size, q.bufsize), q.mr->lkey()}};
                const int r = by_queue ? q.qp->post_recv_queue(rq, &wr, 1) : q.qp->post_recv(&wr, 1);
                if (r < 0) {
                    // (A provider's default post_recv_queue refuses a queue it lacks
                    // without a message: the return code says it.)
                    out << err_json(by_queue ? "post_recv_queue(" + std::to_string(rq) + ") returned " +
                                                   std::to_string(r) + ": " + ctx.last_error()
                                             : ctx.last_error());
                    break;
                }
                posted += r;
            }
            if (out.str().empty())
                out << "{\"posted\":" << posted << "}";
        } else if (cmd == "attach" || cmd == "detach") {
            auto g = wire::parse_gid_text(m["mgid"]);
            const auto mlid = static_cast<std::uint16_t>(num(m, "mlid", 0));
            const int r = cmd == "attach" ? q.qp->attach_mcast(g.value, mlid) : q.qp->detach_mcast(g.value, mlid);
            out << (r == 0 ? "{\"ok\":true}" : err_json(ctx.last_error()));
        } else if (cmd == "counters") {
            const QpCounters c = q.qp->counters();
            out << "{\"tx_packets\":" << c.tx_packets << ",\"tx_bytes\":" << c.tx_bytes << ",\"tx_errors\":"
                << c.tx_errors << ",\"rx_packets\":" << c.rx_packets << ",\"rx_bytes\":" << c.rx_bytes
                << ",\"drop_no_buffer\":" << c.drop_no_buffer << ",\"drop_qkey\":" << c.drop_qkey
                << ",\"drop_pkey\":" << c.drop_pkey << ",\"drop_too_long\":" << c.drop_too_long
                << ",\"drop_port_down\":" << c.drop_port_down << ",\"drop_aborted\":" << c.drop_aborted
                << ",\"rx_errors\":" << c.rx_errors << ",\"rx_bad_slot\":" << c.rx_bad_slot
                << ",\"drop_stalled\":" << c.drop_stalled << ",\"tx_late\":" << c.tx_late << "}";
        } else if (cmd == "send" || cmd == "sendloop") {
            AhAttr aa;
            aa.dlid = static_cast<std::uint16_t>(num(m, "dlid", 0));
            aa.sl = static_cast<std::uint8_t>(num(m, "sl", 0));
            aa.port_num = q.port;
            if (m.count("mgid") || m.count("dgid")) {
                aa.is_global = true;
                aa.dgid = wire::parse_gid_text(m.count("mgid") ? m["mgid"] : m["dgid"]).value;
                aa.hop_limit = m.count("mgid") ? 1 : 64;
                const int gi = ipoib_gid_index(ctx, q.port);
                aa.sgid_index = static_cast<std::uint8_t>(gi > 0 ? gi : 0);
            }
            auto ah = ctx.create_ah(aa);
            if (!ah)
                return err_json(ctx.last_error());
            const auto size = static_cast<std::uint32_t>(num(m, "size", 64));
            const auto nsge = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(num(m, "sge", 1)));
            const auto count = cmd == "sendloop" ? ~0ul : num(m, "count", 1);
            Ipv4Udp flow{};
            const bool ipv4udp = m.count("ipv4udp") != 0;
            if (ipv4udp && !parse_ipv4udp(m["ipv4udp"], &flow))
                return err_json("send: ipv4udp: expected SRC,DST,SPORT,DPORT (IPv4 addresses, ports)");
            if (ipv4udp && size < kIpv4UdpHdrs)
                return err_json("send: ipv4udp needs size >= " + std::to_string(kIpv4UdpHdrs));
            auto make = [&](std::uint8_t *p, std::uint32_t seq) {
                if (ipv4udp)
                    fill_ipv4udp(p, size, seq, flow);
                else
                    fill(p, size, seq);
            };
            // queue=S: send queue S, through post_send_queue, its completions from its CQ.
            const bool by_queue = m.count("queue") != 0;
            const auto sq = static_cast<std::uint32_t>(num(m, "queue", 0));
            Cq &scq = q.scq(sq);
            auto post = [&](const SendWr *w, int n) {
                return by_queue ? q.qp->post_send_queue(sq, w, n) : q.qp->post_send(w, n);
            };
            std::vector<std::uint8_t> payload(size + 64);
            std::map<std::string, int> statuses;
            if (cmd == "sendloop")
                std::cout << "{\"looping\":true}" << std::endl;
            // Reap send completions (a device completes them asynchronously);
            // receive completions met on the way (the CQ is shared) are kept for `recv`.
            unsigned long reaped = 0, posted = 0;
            auto reap = [&] {
                Wc wc[16];
                const int n = scq.poll(wc, 16);
                for (int k = 0; k < n; ++k) {
                    if (wc[k].opcode == WcOpcode::send) {
                        statuses[to_string(wc[k].status)]++;
                        ++reaped;
                    } else {
                        q.stash[0].push_back(wc[k]);  // only queue 0's CQ has both kinds
                    }
                }
                return n;
            };
            const auto burst = num(m, "burst", 0);
            if (burst) {
                // B WRs per post_send from one buffer each; what a post does not take is posted
                // again after reaping. Every WR must complete exactly once.
                std::vector<std::vector<std::uint8_t>> bufs(count, std::vector<std::uint8_t>(size));
                std::vector<Sge> sges(count);
                std::vector<SendWr> wrs(count);
                for (unsigned long i = 0; i < count; ++i) {
                    make(bufs[i].data(), static_cast<std::uint32_t>(i));
                    sges[i] = {reinterpret_cast<std::uintptr_t>(bufs[i].data()), size, 0};
                    wrs[i] = SendWr{i, &sges[i], 1, ah.get(), static_cast<std::uint32_t>(num(m, "dqpn", 0)),
                                    static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b)), true};
                }
                long first = -1;
                unsigned long next = 0, idle = 0;
                while (next < count && idle < 100000) {
                    const int want = static_cast<int>(std::min(burst, count - next));
                    const int r = post(&wrs[next], want);
                    if (first < 0)
                        first = r;
                    if (r < 0) {
                        statuses["post refused"]++;
                        break;
                    }
                    next += static_cast<unsigned long>(r);
                    idle = r ? 0 : idle + 1;
                    reap();
                }
                posted = next;
                const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
                while (reaped < posted && std::chrono::steady_clock::now() < until)
                    if (!reap())
                        std::this_thread::yield();
                out << "{\"first_post\":" << first << ",\"posted\":" << posted << ",\"reaped\":" << reaped
                    << ",\"statuses\":{";
                bool first_s = true;
                for (auto &[k, v] : statuses) {
                    out << (first_s ? "" : ",") << "\"" << k << "\":" << v;
                    first_s = false;
                }
                out << "}}";
                return out.str();
            }
            for (unsigned long i = 0; i < count; ++i) {
                make(payload.data(), static_cast<std::uint32_t>(i));
                Sge sg[kMaxSendSge];
                std::uint32_t off = 0;
                for (std::uint32_t s = 0; s < nsge; ++s) {
                    const std::uint32_t l = s + 1 == nsge ? size - off : size / nsge;
                    sg[s] = {reinterpret_cast<std::uintptr_t>(payload.data() + off), l, 0};
                    off += l;
                }
                SendWr wr{i, sg, nsge, ah.get(), static_cast<std::uint32_t>(num(m, "dqpn", 0)),
                          static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b)), true};
                int r = post(&wr, 1);
                for (int tries = 0; r == 0 && tries < 100000; ++tries) {  // send queue full: reap, retry
                    reap();
                    r = post(&wr, 1);
                }
                if (r <= 0) {
                    statuses["post refused"]++;
                    continue;
                }
                ++posted;
                reap();
            }
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            while (reaped < posted && std::chrono::steady_clock::now() < until)
                if (!reap())
                    std::this_thread::yield();
            out << "{\"statuses\":{";
            bool first = true;
            for (auto &[k, v] : statuses) {
                out << (first ? "" : ",") << "\"" << k << "\":" << v;
                first = false;
            }
            out << "}}";
        } else {  // recv
            // queue=R: receive queue R's completions (its CQ).
            const auto rq = static_cast<std::uint32_t>(num(m, "queue", 0));
            if (rq >= q.nrq)
                return err_json("recv: QP " + name + " has no receive queue " + std::to_string(rq));
            auto &stash = q.stash[rq];
            const auto want = num(m, "count", 1);
            const auto deadline =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
            unsigned long got = 0, bad = 0, grh = 0, hashed = 0, ipv4udp = 0;
            std::map<std::string, int> statuses;
            std::set<std::uint32_t> srcs, slids, lens;
            std::set<std::string> sgids;
            std::string hashes = "[", flows = "[";  // per successful completion, in order
            while (got < want && std::chrono::steady_clock::now() < deadline) {
                Wc wc[32];
                int n = 0;
                while (n < 32 && !stash.empty()) {
                    wc[n++] = stash.front();
                    stash.erase(stash.begin());
                }
                if (n == 0)
                    n = q.rcq(rq).poll(wc, 32);
                if (n == 0) {
                    std::this_thread::yield();
                    continue;
                }
                for (int i = 0; i < n; ++i) {
                    if (wc[i].opcode != WcOpcode::recv)
                        continue;
                    ++got;
                    statuses[to_string(wc[i].status)]++;
                    if (wc[i].status != WcStatus::success)
                        continue;
                    const std::uint8_t *buf = q.pool + wc[i].wr_id * q.bufsize;
                    srcs.insert(wc[i].src_qp);
                    slids.insert(wc[i].slid);
                    lens.insert(wc[i].byte_len - kGrhLen);
                    if (wc[i].wc_flags & kWcGrh) {
                        ++grh;
                        Gid s;
                        std::memcpy(s.raw.data(), buf + 8, 16);
                        sgids.insert(wire::to_string(s));
                    }
                    const bool has_hash = wc[i].wc_flags & kWcRssHash;
                    hashed += has_hash;
                    hashes += (hashes.size() > 1 ? "," : "") +
                              (has_hash ? std::to_string(wc[i].rss_hash) : std::string("null"));
                    std::string flow;
                    bool intact = false;
                    if (is_ipv4udp(buf + kGrhLen, wc[i].byte_len - kGrhLen, &flow, &intact)) {
                        ++ipv4udp;
                        bad += !intact;
                        flows += (flows.size() > 1 ? ",\"" : "\"") + flow + "\"";
                    } else {
                        flows += flows.size() > 1 ? ",null" : "null";
                        if (!check(buf + kGrhLen, wc[i].byte_len - kGrhLen))
                            ++bad;
                    }
                }
                if (num(m, "repost", 0))
                    for (int i = 0; i < n; ++i)
                        if (wc[i].opcode == WcOpcode::recv) {
                            RecvWr wr{wc[i].wr_id,
                                      {reinterpret_cast<std::uintptr_t>(q.pool + wc[i].wr_id * q.bufsize),
                                       q.bufsize, q.mr->lkey()}};
                            if (m.count("queue"))
                                q.qp->post_recv_queue(rq, &wr, 1);
                            else
                                q.qp->post_recv(&wr, 1);
                        }
            }
            auto list = [&](const std::set<std::uint32_t> &s) {
                std::string r = "[";
                for (auto v : s)
                    r += (r.size() > 1 ? "," : "") + std::to_string(v);
                return r + "]";
            };
            out << "{\"received\":" << got << ",\"bad_payload\":" << bad << ",\"grh\":" << grh
                << ",\"src_qps\":" << list(srcs) << ",\"slids\":" << list(slids) << ",\"lens\":" << list(lens)
                << ",\"sgids\":[";
            bool first = true;
            for (auto &s : sgids) {
                out << (first ? "" : ",") << "\"" << s << "\"";
                first = false;
            }
            out << "],\"statuses\":{";
            first = true;
            for (auto &[k, v] : statuses) {
                out << (first ? "" : ",") << "\"" << k << "\":" << v;
                first = false;
            }
            out << "},\"hashed\":" << hashed << ",\"hashes\":" << hashes << "],\"ipv4udp\":" << ipv4udp
                << ",\"flows\":" << flows << "]}";
        }
    } else if (cmd == "srq" || cmd.starts_with("rc") || cmd == "madsend" || cmd == "madrecv" || cmd == "cm") {
        return run_rc(dev, cmd, in);
    } else if (cmd == "caps") {
        const DeviceCaps c = ctx.caps();
        out << "{\"max_send_queues\":" << c.max_send_queues << ",\"max_recv_queues\":" << c.max_recv_queues
            << "}";
    } else if (cmd == "pcounters") {
        int p = 1;
        in >> p;
        PortCounters c;
        if (ctx.port_counters(static_cast<std::uint8_t>(p), &c) != 0)
            return err_json(ctx.last_error());
        out << "{\"tx_packets\":" << c.tx_packets << ",\"rx_packets\":" << c.rx_packets << ",\"drop_no_qp\":"
            << c.drop_no_qp << ",\"drop_pkey\":" << c.drop_pkey << ",\"drop_port_down\":" << c.drop_port_down
            << ",\"drop_no_buffer\":" << c.drop_no_buffer << ",\"drop_qkey\":" << c.drop_qkey
            << ",\"drop_too_long\":" << c.drop_too_long << ",\"tx_mtu_exceeded\":" << c.tx_mtu_exceeded
            << ",\"tx_port_down\":" << c.tx_port_down << ",\"rx_bad_slot\":" << c.rx_bad_slot
            << ",\"rx_bad_icrc\":" << c.rx_bad_icrc << ",\"rx_malformed\":" << c.rx_malformed << "}";
    } else if (cmd == "fabric") {
        std::uint32_t p = 0, g = 0;
        if (!soft::fabric_proc(ctx, &p, &g))
            return err_json("fabric: not a soft-HCA device (use the fault provider)");
        out << "{\"proc\":" << p << ",\"gen\":" << g << "}";
    } else if (cmd == "events") {
        auto m = kv(in);
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
        out << "{\"events\":[";
        bool first = true;
        while (std::chrono::steady_clock::now() < deadline) {
            PortEvent ev;
            if (ctx.get_port_event(&ev) == 1) {
                out << (first ? "" : ",") << "[\"" << to_string(ev.type) << "\"," << int(ev.port_num) << "]";
                first = false;
            } else {
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        }
        out << "]}";
    } else {
        out << err_json("unknown command '" + cmd + "'");
    }
    return out.str();
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: hca-peer PROVIDER [OPTIONS] [DEVICE[,DEVICE...]]\n");
        return 2;
    }
    test::register_fault_provider();
    // One device, or several of this process (commands then start with @DEVICE).
    std::vector<std::string> names;
    const std::string list = argc > 3 ? argv[3] : "";
    for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t end = std::min(list.find(',', pos), list.size());
        names.push_back(list.substr(pos, end - pos));
        pos = end + 1;
    }
    std::map<std::string, Device> devs;
    std::string hello;
    for (const auto &n : names) {
        auto opened = open_device(argv[1], n, argc > 2 ? argv[2] : "");
        if (!opened.ctx) {
            std::cout << err_json(opened.error) << std::endl;
            return 1;
        }
        hello += std::string(hello.empty() ? "" : ",") + "{\"ready\":true,\"node\":\"" + opened.ctx->name() +
                 "\",\"ports\":" + std::to_string(opened.ctx->num_ports()) + "}";
        devs[n].ctx = std::move(opened.ctx);
    }
    // One line: {"ready":true,"node":...,"ports":N}, or {"devices":[one such per device]}.
    std::cout << (names.size() > 1 ? "{\"devices\":[" + hello + "]}" : hello) << std::endl;

    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string cmd;
        in >> cmd;
        Device *dev = &devs.begin()->second;
        if (names.size() > 1 || cmd.starts_with('@')) {
            auto it = devs.find(cmd.substr(cmd.starts_with('@') ? 1 : 0));
            if (!cmd.starts_with('@') || it == devs.end()) {
                std::cout << err_json("expected @DEVICE before the command, one of the devices opened") << std::endl;
                continue;
            }
            dev = &it->second;
            in >> cmd;
        }
        if (cmd == "quit")
            break;
        std::cout << run(*dev, cmd, in) << std::endl;
    }
    return 0;
}
