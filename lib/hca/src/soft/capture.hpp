// SPDX-License-Identifier: BSD-3-Clause
// pcap capture of the packets a software-HCA context sends, as InfiniBand
// link packets (ipoib/hca/ib_packet.hpp) under user link type 147, which
// tshark decodes with its "infiniband" dissector once mapped (doc/soft-hca.md).
// Several processes may append to one file: each record is one write() to an
// O_APPEND descriptor. Capture is a debugging aid and costs a syscall per
// packet; the send queues of one context (several threads) take a lock to record.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "ipoib/hca/ib_packet.hpp"

namespace ipoib::hca::soft {

inline constexpr std::uint32_t kPcapLinkType = 147;  // LINKTYPE_USER0

class Capture {
  public:
    ~Capture();
    bool open(const std::string &path, std::string *err);
    void record(const UdPacketMeta &m, const Sge *sg, std::uint32_t nsge, std::uint32_t len) noexcept;
    std::uint64_t written() const noexcept { return written_; }  // (read once senders are done)

  private:
    int fd_ = -1;
    std::mutex mu_;
    std::vector<std::uint8_t> buf_;
    std::uint64_t written_ = 0;
};

} // namespace ipoib::hca::soft
