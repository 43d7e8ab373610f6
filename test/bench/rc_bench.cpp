// SPDX-License-Identifier: BSD-3-Clause
// rc-bench: reliable-connection throughput between two processes over an
// HCA provider (rc.hpp), and single-core memcpy bandwidth on the same
// machine for comparison.
//
//   rc-bench recv PROVIDER INFO SIZE SGE   an RC QP with its own receive queue of 256 receives
//                                          of SGE x 2048-byte buffers; "lid qpn" to INFO, the
//                                          sender's from INFO.s; receive until idle; print
//                                          messages/s and Gbit/s over the receive window
//   rc-bench send PROVIDER INFO SIZE SECONDS
//                                          messages of SIZE bytes in bursts of 16 (rnr_retry 7:
//                                          a send that finds no receive waits and is retried)
//   rc-bench memcpy SIZE SECONDS AREA      memcpy of SIZE bytes from one buffer into the next
//                                          place of an AREA-byte array, as a delivery does
//
// Connected by hand (QPNs exchanged through the files INFO and INFO.s, PSNs
// 0; INFO.r when the receiver is connected), as a CM would.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/rc.hpp"

using namespace ipoib::hca;
using Clock = std::chrono::steady_clock;

namespace {
constexpr int kBurst = 16;
constexpr std::uint32_t kRq = 256;
constexpr std::uint32_t kBuf = 2048;

int die(const char *what, const std::string &why) {
    std::fprintf(stderr, "rc-bench: %s: %s\n", what, why.c_str());
    return 1;
}

void publish(const std::string &path, unsigned lid, unsigned qpn) {
    std::ofstream(path + ".tmp") << lid << " " << qpn << "\n";
    std::rename((path + ".tmp").c_str(), path.c_str());
}

bool wait_for(const std::string &path, unsigned *lid, unsigned *qpn) {
    for (int i = 0; i < 5000; ++i) {
        if (std::ifstream(path) >> *lid >> *qpn)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

// What a message's delivery does: one source buffer of SIZE bytes (the
// sender's, cached) copied into the next of the receives, which cycle over
// AREA bytes (the receiver's ring of 256 receives).
int run_memcpy(std::size_t size, double seconds, std::size_t area) {
    area = std::max(area, size);
    std::vector<std::uint8_t> a(size, 1), b(area, 2);
    std::uint64_t bytes = 0;
    std::size_t off = 0;
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    while (Clock::now() < end)
        for (int k = 0; k < 64; ++k) {
            if (off + size > area)
                off = 0;
            std::memcpy(b.data() + off, a.data(), size);
            off += size;
            bytes += size;
        }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("memcpy %zu B: %.2f Gbit/s (%u)\n", size, bytes * 8 / s / 1e9, b[size / 2]);
    return 0;
}
} // namespace

int main(int argc, char **argv) {
    if (argc >= 5 && std::strcmp(argv[1], "memcpy") == 0)
        return run_memcpy(std::strtoul(argv[2], nullptr, 0), std::atof(argv[3]), std::strtoul(argv[4], nullptr, 0));
    if (argc < 6) {
        std::fprintf(stderr, "usage: rc-bench recv PROVIDER INFO SIZE SGE | send PROVIDER INFO SIZE SECONDS | "
                             "memcpy SIZE SECONDS AREA\n");
        return 2;
    }
    const bool sender = std::strcmp(argv[1], "send") == 0;
    const std::string info = argv[3], peer_info = sender ? info : info + ".s", my_info = sender ? info + ".s" : info;
    const auto size = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 0));
    auto o = open_device(argv[2], "", "");
    if (!o.ctx)
        return die("open", o.error);
    Context &ctx = *o.ctx;
    auto scq = ctx.create_cq(1024), rcq = ctx.create_cq(1024);
    const std::uint32_t sge = sender ? 1 : static_cast<std::uint32_t>(std::strtoul(argv[5], nullptr, 0));
    RcQpInit init;
    init.send_cq = scq.get();
    init.recv_cq = rcq.get();
    init.max_recv_wr = kRq;
    init.max_recv_sge = sge;
    auto qp = ctx.create_rc_qp(init);
    if (!qp)
        return die("create_rc_qp", ctx.last_error());
    PortAttr pa;
    ctx.query_port(1, &pa);
    std::uint8_t *pool = nullptr;
    std::unique_ptr<Mr> mr;
    if (!sender) {
        pool = static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{kRq} * sge * kBuf));
        mr = pool ? ctx.reg_mr(pool, std::size_t{kRq} * sge * kBuf) : nullptr;
        if (!mr)
            return die("alloc_dma", ctx.last_error());
    }
    std::vector<Sge> sgl(std::size_t{kRq} * sge);
    auto post = [&](std::uint64_t i) {
        for (std::uint32_t k = 0; k < sge; ++k)
            sgl[i * sge + k] = Sge{reinterpret_cast<std::uintptr_t>(pool + (i * sge + k) * kBuf), kBuf, mr->lkey()};
        const RcRecvWr wr{i, &sgl[i * sge], sge};
        return qp->post_recv(&wr, 1);
    };
    for (std::uint64_t i = 0; !sender && i < kRq; ++i)
        post(i);
    publish(my_info, pa.lid, qp->qp_num());
    unsigned lid = 0, qpn = 0;
    if (!wait_for(peer_info, &lid, &qpn))
        return die("connect", "the peer did not publish its address");
    RcConnect c;
    c.path.dlid = static_cast<std::uint16_t>(lid);
    c.remote_qpn = qpn;
    c.rnr_retry = 7;
    c.min_rnr_timer = 1;
    if (qp->connect(c) != 0)
        return die("connect", ctx.last_error());
    // The receiver says when it is connected (as its REP would): a send to a
    // QP not yet connected back fails (retry_exc_err).
    if (!sender)
        publish(info + ".r", 1, 1);
    else if (!wait_for(info + ".r", &lid, &qpn))
        return die("connect", "the receiver did not connect");

    if (!sender) {
        std::uint64_t n = 0, bytes = 0, errors = 0;
        Clock::time_point first{}, last{};
        Wc wc[32];
        const auto give_up = Clock::now() + std::chrono::seconds(120);
        // The clock only every 4096 empty polls (and per burst received):
        // reading it costs more than a message on some VMs.
        for (std::uint32_t idle = 0;;) {
            const int got = rcq->poll(wc, 32);
            if (got == 0) {
                if (++idle % 4096 == 0 &&
                    ((n && Clock::now() - last > std::chrono::milliseconds(500)) || Clock::now() > give_up))
                    break;
                continue;
            }
            last = Clock::now();
            if (!n)
                first = last;
            for (int i = 0; i < got; ++i) {
                errors += wc[i].status != WcStatus::success;
                bytes += wc[i].byte_len;
                post(wc[i].wr_id);
            }
            n += static_cast<std::uint64_t>(got);
        }
        const double s = std::chrono::duration<double>(last - first).count();
        std::printf("received %llu messages (%llu in error) in %.3f s: %.3f Mmsg/s, %.2f Gbit/s\n",
                    static_cast<unsigned long long>(n), static_cast<unsigned long long>(errors), s,
                    s > 0 ? n / s / 1e6 : 0.0, s > 0 ? bytes * 8 / s / 1e9 : 0.0);
        return 0;
    }
    const double seconds = std::atof(argv[5]);
    std::vector<std::uint8_t> payload(size, 0x5a);
    Sge sg{reinterpret_cast<std::uintptr_t>(payload.data()), size, 0};
    SendWr wr[kBurst];
    for (int i = 0; i < kBurst; ++i)
        wr[i] = SendWr{static_cast<std::uint64_t>(i), &sg, 1, nullptr, 0, 0, i == kBurst - 1};
    std::uint64_t sent = 0, failed = 0;
    Wc wc[kBurst];
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    for (std::uint32_t k = 0; qp->state() == RcState::rts && (++k % 256 != 0 || Clock::now() < end);) {
        const int r = qp->post_send(wr, kBurst);
        sent += r > 0 ? static_cast<std::uint64_t>(r) : 0;
        if (r == 0)  // the send queue is full of sends waiting for receives: let the receiver run
            std::this_thread::yield();
        for (int got; (got = scq->poll(wc, kBurst)) > 0;)
            for (int i = 0; i < got; ++i)
                failed += wc[i].status != WcStatus::success;
    }
    std::printf("sent %llu messages of %u bytes (%llu failed)\n", static_cast<unsigned long long>(sent), size,
                static_cast<unsigned long long>(failed));
    return 0;
}
