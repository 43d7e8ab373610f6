// SPDX-License-Identifier: BSD-3-Clause
// cm-capture PCAP: two CM engines (ports LID 1 and LID 2) hold a connected-mode
// IPoIB conversation over an in-memory MAD wire, and every MAD is written to
// PCAP as the software HCA's capture writes packets (soft/capture.hpp: UD
// SEND only to QP1 from QP1, DETH Q_Key 0x80010000, user link type 147):
//   A -> B  REQ  service 0x1000000000000000 | 0x000123, QPN 0x000123, PSN 0xabcdef,
//                private data as Linux ipoib_cm: QPN 0x000123, receive size 65524
//   B -> A  MRA  (service timeout 10)
//   B -> A  REP  QPN 0x000456, PSN 0x654321, private data: QPN 0x000456, 65524
//   A -> B  RTU
//   A -> B  DREQ, B -> A DREP
//   A -> B  REQ  service 0x2000000000000001 (not listened), B -> A REJ reason 8
// test_cm_tshark.py reads the capture with tshark and checks the fields.
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "cm/cm_engine.hpp"
#include "soft/capture.hpp"

using namespace ipoib;
using namespace ipoib::hca;
using namespace ipoib::hca::cm;

namespace {

struct Wire {
    std::deque<std::vector<std::uint8_t>> to[2];  // to[0]: toward A (LID 1), to[1]: toward B (LID 2)
    soft::Capture capture;
    std::uint32_t psn = 0;
};

class CapturingEnd final : public MadTransport {
  public:
    CapturingEnd(Wire *w, int side) : w_(w), side_(side) {}
    int send(const MadAddr &to, const std::uint8_t *mad) noexcept override {
        UdPacketMeta m;
        m.sl = to.sl;
        m.slid = static_cast<std::uint16_t>(side_ + 1);
        m.dlid = to.lid;
        m.pkey = 0xffff;
        m.dest_qp = to.qpn;
        m.src_qp = 1;
        m.qkey = kGsiQkey;
        m.psn = w_->psn++;
        Sge sg{reinterpret_cast<std::uintptr_t>(mad), static_cast<std::uint32_t>(kMadSize), 0};
        w_->capture.record(m, &sg, 1, kMadSize);
        w_->to[1 - side_].emplace_back(mad, mad + kMadSize);
        return 0;
    }
    int recv(std::uint8_t *mad, MadAddr *from) noexcept override {
        auto &q = w_->to[side_];
        if (q.empty())
            return 0;
        std::memcpy(mad, q.front().data(), kMadSize);
        q.pop_front();
        *from = MadAddr{.lid = static_cast<std::uint16_t>(2 - side_), .qpn = 1};
        return static_cast<int>(kMadSize);
    }

  private:
    Wire *w_;
    int side_;
};

bool next_event(Cm &cm, CmEventType want, CmEvent *ev) {
    for (int i = 0; i < 100; ++i) {
        if (cm.get_event(ev) != 1)
            continue;
        if (ev->type == want)
            return true;
        std::fprintf(stderr, "cm-capture: got %s, wanted %s\n", to_string(ev->type), to_string(want));
        return false;
    }
    std::fprintf(stderr, "cm-capture: no %s\n", to_string(want));
    return false;
}

// Linux ipoib_cm's private data: the UD QPN and the receive buffer size, big-endian.
std::vector<std::uint8_t> ipoib_private_data(std::uint32_t qpn) {
    constexpr std::uint32_t kRecvSize = 65520 + 4;
    return {static_cast<std::uint8_t>(qpn >> 24), static_cast<std::uint8_t>(qpn >> 16),
            static_cast<std::uint8_t>(qpn >> 8),  static_cast<std::uint8_t>(qpn),
            static_cast<std::uint8_t>(kRecvSize >> 24), static_cast<std::uint8_t>(kRecvSize >> 16),
            static_cast<std::uint8_t>(kRecvSize >> 8),  static_cast<std::uint8_t>(kRecvSize)};
}

Gid gid_of(std::uint8_t node) {
    Gid g;
    g.raw = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, node};
    return g;
}

} // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: cm-capture PCAP\n");
        return 2;
    }
    Wire wire;
    std::string err;
    if (!wire.capture.open(argv[1], &err)) {
        std::fprintf(stderr, "cm-capture: %s\n", err.c_str());
        return 1;
    }
    auto a = make_cm_engine(std::make_unique<CapturingEnd>(&wire, 0),
                            LocalPort{.lid = 1, .gid = gid_of(1), .ca_guid = 0x0002c9030000000aull});
    auto b = make_cm_engine(std::make_unique<CapturingEnd>(&wire, 1),
                            LocalPort{.lid = 2, .gid = gid_of(2), .ca_guid = 0x0002c9030000000bull});
    constexpr std::uint64_t kIpoibService = 0x1000000000000000ull;
    if (b->listen(kIpoibService, ~0xffffffull) != 0)
        return 1;

    const auto req_pd = ipoib_private_data(0x000123);
    CmReqParam req{.service_id = kIpoibService | 0x000123,
                   .path = CmPath{.slid = 1, .dlid = 2, .sgid = gid_of(1), .dgid = gid_of(2), .packet_life_time = 14},
                   .local_qpn = 0x000123,
                   .starting_psn = 0xabcdef,
                   .private_data = req_pd.data(),
                   .private_data_len = static_cast<std::uint8_t>(req_pd.size()),
                   .retry_count = 0,
                   .rnr_retry_count = 0};
    std::uint32_t ida = 0;
    CmEvent ev;
    if (a->send_req(req, &ida) != 0 || !next_event(*b, CmEventType::req_received, &ev))
        return 1;
    const std::uint32_t idb = ev.id;
    const auto rep_pd = ipoib_private_data(0x000456);
    if (b->send_mra(idb, 10) != 0 ||
        b->send_rep(idb, CmRepParam{.local_qpn = 0x000456,
                                    .starting_psn = 0x654321,
                                    .private_data = rep_pd.data(),
                                    .private_data_len = static_cast<std::uint8_t>(rep_pd.size())}) != 0)
        return 1;
    if (!next_event(*a, CmEventType::mra_received, &ev) || !next_event(*a, CmEventType::rep_received, &ev) ||
        a->send_rtu(ida) != 0 || !next_event(*b, CmEventType::rtu_received, &ev))
        return 1;
    if (a->send_dreq(ida) != 0 || !next_event(*b, CmEventType::dreq_received, &ev) || b->send_drep(idb) != 0 ||
        !next_event(*a, CmEventType::drep_received, &ev))
        return 1;
    req.service_id = 0x2000000000000001ull;
    std::uint32_t ida2 = 0;
    if (a->send_req(req, &ida2) != 0 || b->get_event(&ev) != 0 ||  // B's CM answers it, no event
        !next_event(*a, CmEventType::rej_received, &ev) || ev.rej_reason != 8)
        return 1;
    std::printf("A id 0x%08x, B id 0x%08x, rejected A id 0x%08x, %llu packets\n", ida, idb, ida2,
                static_cast<unsigned long long>(wire.capture.written()));
    return wire.capture.written() == 8 ? 0 : 1;
}
