// SPDX-License-Identifier: BSD-3-Clause
// hca-bench: UD message rate between two processes over an HCA provider.
//
//   hca-bench recv PROVIDER INFO_FILE      write "lid qpn" to INFO_FILE, receive until idle,
//                                          print messages/s and Gbit/s over the receive window
//   hca-bench send PROVIDER INFO_FILE SIZE SECONDS
//
// Bursts of 32 on both sides; the receiver reposts every buffer it reaps. UD
// has no flow control: what the receiver cannot take is dropped and reported.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "ipoib/hca/hca.hpp"

using namespace ipoib::hca;
using Clock = std::chrono::steady_clock;

namespace {
constexpr int kBurst = 32;
constexpr std::uint32_t kRq = 1024;
constexpr std::uint32_t kBuf = kGrhLen + 2048;

int die(const char *what, const std::string &why) {
    std::fprintf(stderr, "hca-bench: %s: %s\n", what, why.c_str());
    return 1;
}
} // namespace

int main(int argc, char **argv) {
    if (argc < 4 || (std::strcmp(argv[1], "send") == 0 && argc < 6)) {
        std::fprintf(stderr, "usage: hca-bench recv|send PROVIDER INFO_FILE [SIZE SECONDS]\n");
        return 2;
    }
    const bool sender = std::strcmp(argv[1], "send") == 0;
    auto o = open_device(argv[2], "", "");
    if (!o.ctx)
        return die("open", o.error);
    Context &ctx = *o.ctx;
    auto cq = ctx.create_cq(4096);
    QpInit init;
    init.send_cq = init.recv_cq = cq.get();
    init.qkey = 0x0b1b;
    init.max_recv_wr = kRq;
    auto qp = ctx.create_ud_qp(init);
    if (!qp)
        return die("create_ud_qp", ctx.last_error());
    PortAttr pa;
    ctx.query_port(1, &pa);

    if (!sender) {
        auto *pool = static_cast<std::uint8_t *>(ctx.alloc_dma(std::size_t{kRq} * kBuf));
        auto mr = pool ? ctx.reg_mr(pool, std::size_t{kRq} * kBuf) : nullptr;
        if (!mr)
            return die("alloc_dma", ctx.last_error());
        std::vector<RecvWr> wrs(kRq);
        for (std::uint32_t i = 0; i < kRq; ++i)
            wrs[i] = RecvWr{i, {reinterpret_cast<std::uintptr_t>(pool + std::size_t{i} * kBuf), kBuf, mr->lkey()}};
        qp->post_recv(wrs.data(), static_cast<int>(kRq));
        {
            std::ofstream(std::string(argv[3]) + ".tmp") << pa.lid << " " << qp->qp_num() << "\n";
            std::rename((std::string(argv[3]) + ".tmp").c_str(), argv[3]);
        }
        std::uint64_t n = 0, bytes = 0;
        Clock::time_point first{}, last{};
        Wc wc[kBurst];
        RecvWr re[kBurst];
        const auto give_up = Clock::now() + std::chrono::seconds(60);
        while (Clock::now() < give_up) {
            const int got = cq->poll(wc, kBurst);
            if (got == 0) {
                if (n && Clock::now() - last > std::chrono::milliseconds(500))
                    break;
                continue;
            }
            last = Clock::now();
            if (!n)
                first = last;
            for (int i = 0; i < got; ++i) {
                bytes += wc[i].byte_len - kGrhLen;
                re[i] = RecvWr{wc[i].wr_id,
                               {reinterpret_cast<std::uintptr_t>(pool + wc[i].wr_id * kBuf), kBuf, mr->lkey()}};
            }
            n += static_cast<std::uint64_t>(got);
            qp->post_recv(re, got);
        }
        const double s = std::chrono::duration<double>(last - first).count();
        const QpCounters c = qp->counters();
        std::printf("received %llu messages (%llu dropped: no buffer) in %.3f s: %.3f Mmsg/s, %.2f Gbit/s\n",
                    static_cast<unsigned long long>(n), static_cast<unsigned long long>(c.drop_no_buffer), s,
                    s > 0 ? n / s / 1e6 : 0.0, s > 0 ? bytes * 8 / s / 1e9 : 0.0);
        return 0;
    }

    const auto size = static_cast<std::uint32_t>(std::atoi(argv[4]));
    const double seconds = std::atof(argv[5]);
    unsigned lid = 0, qpn = 0;
    for (int i = 0; i < 5000 && !(std::ifstream(argv[3]) >> lid >> qpn); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!qpn)
        return die("send", "receiver did not publish its address");
    AhAttr aa;
    aa.dlid = static_cast<std::uint16_t>(lid);
    auto ah = ctx.create_ah(aa);
    std::vector<std::uint8_t> payload(size, 0x5a);
    Sge sg{reinterpret_cast<std::uintptr_t>(payload.data()), size, 0};
    SendWr wr[kBurst];
    for (int i = 0; i < kBurst; ++i)
        wr[i] = SendWr{static_cast<std::uint64_t>(i), &sg, 1, ah.get(), qpn, 0x0b1b, i == kBurst - 1};
    std::uint64_t sent = 0;
    Wc wc[kBurst];
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
        for (int k = 0; k < 64; ++k) {
            sent += static_cast<std::uint64_t>(qp->post_send(wr, kBurst));
            while (cq->poll(wc, kBurst) > 0) {
            }
        }
    }
    std::printf("sent %llu messages of %u bytes\n", static_cast<unsigned long long>(sent), size);
    return 0;
}
