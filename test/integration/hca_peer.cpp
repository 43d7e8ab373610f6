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
//   qp NAME port=P pkey_index=I qkey=K rq=N [cq=D] [sq=S]
//                                               create a UD QP with its CQ (depth D, default
//                                               N + 1024; send queue S) and N buffers
//   post NAME n=N [size=S]                      post N receive buffers of S bytes
//   send NAME dlid=L dqpn=Q qkey=K size=S count=C [sl=N] [mgid=G | dgid=G] [sge=N] [burst=B]
//                                               (with a GID the address has a GRH, from the IPoIB GID;
//                                               burst: B WRs per post_send, the rest retried after
//                                               reaping; the reply then has "first_post": how many
//                                               the first post_send took, and "reaped")
//   recv NAME count=C timeout_ms=T              poll until C receive completions or timeout
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
// that `recv` verifies byte for byte.
#include <unistd.h>

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

using namespace ipoib;
using namespace ipoib::hca;

namespace {

struct PeerQp {
    std::unique_ptr<Cq> cq;
    std::unique_ptr<Qp> qp;
    std::uint8_t *pool = nullptr;
    std::unique_ptr<Mr> mr;
    std::uint32_t nbuf = 0, bufsize = 0, next = 0;
    std::uint8_t port = 1;
    std::map<std::uint32_t, std::unique_ptr<Ah>> ahs;
    std::vector<Wc> stash;  // receive completions reaped while sending, for the next `recv`
};

struct Device {
    std::unique_ptr<Context> ctx;
    std::map<std::string, PeerQp> qps;
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
        PeerQp &q = qps[name];
        q.port = static_cast<std::uint8_t>(num(m, "port", 1));
        const auto rq = static_cast<std::uint32_t>(num(m, "rq", 64));
        q.cq = ctx.create_cq(static_cast<int>(num(m, "cq", rq + 1024)));
        QpInit init;
        init.send_cq = q.cq.get();
        init.recv_cq = q.cq.get();
        init.port_num = q.port;
        init.pkey_index = static_cast<std::uint16_t>(num(m, "pkey_index", 0));
        init.qkey = static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b));
        init.max_recv_wr = rq;
        init.max_send_wr = static_cast<std::uint32_t>(num(m, "sq", init.max_send_wr));
        q.qp = q.cq ? ctx.create_ud_qp(init) : nullptr;
        if (!q.qp) {
            qps.erase(name);
            return err_json(ctx.last_error());
        }
        q.nbuf = rq;
        q.bufsize = static_cast<std::uint32_t>(num(m, "bufsize", kGrhLen + 4096));
        q.pool = static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{q.nbuf} * q.bufsize));
        q.mr = q.pool ? ctx.reg_mr(q.pool, std::size_t{q.nbuf} * q.bufsize) : nullptr;
        if (!q.mr)
            return err_json(ctx.last_error());
        out << "{\"qpn\":" << q.qp->qp_num() << "}";
    } else if (cmd == "post" || cmd == "send" || cmd == "recv" || cmd == "attach" || cmd == "detach" ||
               cmd == "counters" || cmd == "sendloop" || cmd == "realloc" || cmd == "corrupt") {
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
            q.next = 0;
            out << "{\"lkey\":" << q.mr->lkey() << "}";
        } else if (cmd == "corrupt") {
            return corrupt(ctx, q, m);
        } else if (cmd == "post") {
            const auto n = num(m, "n", q.nbuf);
            const auto size = static_cast<std::uint32_t>(num(m, "size", q.bufsize));
            int posted = 0;
            for (unsigned long i = 0; i < n; ++i) {
                const std::uint32_t b = q.next++ % q.nbuf;
                RecvWr wr{b, {reinterpret_cast<std::uintptr_t>(q.pool + std::size_t{b} * q.bufsize),
                              std::min(size, q.bufsize), q.mr->lkey()}};
                const int r = q.qp->post_recv(&wr, 1);
                if (r < 0) {
                    out << err_json(ctx.last_error());
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
            std::vector<std::uint8_t> payload(size + 64);
            std::map<std::string, int> statuses;
            if (cmd == "sendloop")
                std::cout << "{\"looping\":true}" << std::endl;
            // Reap send completions (a device completes them asynchronously);
            // receive completions met on the way (the CQ is shared) are kept for `recv`.
            unsigned long reaped = 0, posted = 0;
            auto reap = [&] {
                Wc wc[16];
                const int n = q.cq->poll(wc, 16);
                for (int k = 0; k < n; ++k) {
                    if (wc[k].opcode == WcOpcode::send) {
                        statuses[to_string(wc[k].status)]++;
                        ++reaped;
                    } else {
                        q.stash.push_back(wc[k]);
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
                    fill(bufs[i].data(), size, static_cast<std::uint32_t>(i));
                    sges[i] = {reinterpret_cast<std::uintptr_t>(bufs[i].data()), size, 0};
                    wrs[i] = SendWr{i, &sges[i], 1, ah.get(), static_cast<std::uint32_t>(num(m, "dqpn", 0)),
                                    static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b)), true};
                }
                long first = -1;
                unsigned long next = 0, idle = 0;
                while (next < count && idle < 100000) {
                    const int want = static_cast<int>(std::min(burst, count - next));
                    const int r = q.qp->post_send(&wrs[next], want);
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
                fill(payload.data(), size, static_cast<std::uint32_t>(i));
                Sge sg[kMaxSendSge];
                std::uint32_t off = 0;
                for (std::uint32_t s = 0; s < nsge; ++s) {
                    const std::uint32_t l = s + 1 == nsge ? size - off : size / nsge;
                    sg[s] = {reinterpret_cast<std::uintptr_t>(payload.data() + off), l, 0};
                    off += l;
                }
                SendWr wr{i, sg, nsge, ah.get(), static_cast<std::uint32_t>(num(m, "dqpn", 0)),
                          static_cast<std::uint32_t>(num(m, "qkey", 0x0b1b)), true};
                int r = q.qp->post_send(&wr, 1);
                for (int tries = 0; r == 0 && tries < 100000; ++tries) {  // send queue full: reap, retry
                    reap();
                    r = q.qp->post_send(&wr, 1);
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
            const auto want = num(m, "count", 1);
            const auto deadline =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(num(m, "timeout_ms", 1000));
            unsigned long got = 0, bad = 0, grh = 0;
            std::map<std::string, int> statuses;
            std::set<std::uint32_t> srcs, slids, lens;
            std::set<std::string> sgids;
            while (got < want && std::chrono::steady_clock::now() < deadline) {
                Wc wc[32];
                int n = 0;
                while (n < 32 && !q.stash.empty()) {
                    wc[n++] = q.stash.front();
                    q.stash.erase(q.stash.begin());
                }
                if (n == 0)
                    n = q.cq->poll(wc, 32);
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
                    if (!check(buf + kGrhLen, wc[i].byte_len - kGrhLen))
                        ++bad;
                }
                if (num(m, "repost", 0))
                    for (int i = 0; i < n; ++i)
                        if (wc[i].opcode == WcOpcode::recv) {
                            RecvWr wr{wc[i].wr_id,
                                      {reinterpret_cast<std::uintptr_t>(q.pool + wc[i].wr_id * q.bufsize),
                                       q.bufsize, q.mr->lkey()}};
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
            out << "}}";
        }
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
            << ",\"tx_port_down\":" << c.tx_port_down << ",\"rx_bad_slot\":" << c.rx_bad_slot << "}";
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
