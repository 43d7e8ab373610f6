// SPDX-License-Identifier: BSD-3-Clause
#include "capture.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ipoib::hca::soft {

namespace {
constexpr std::uint32_t kRecordHeader = 16;
constexpr std::size_t kMaxPacket = 8192;

void put32(std::uint8_t *p, std::uint32_t v) { std::memcpy(p, &v, 4); }  // pcap: host order
} // namespace

Capture::~Capture() {
    if (fd_ >= 0)
        close(fd_);
}

bool Capture::open(const std::string &path, std::string *err) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
        std::uint8_t hdr[24];
        put32(hdr, 0xa1b2c3d4);
        hdr[4] = 2, hdr[5] = 0, hdr[6] = 4, hdr[7] = 0;  // version 2.4 (little-endian shorts)
        put32(hdr + 8, 0);
        put32(hdr + 12, 0);
        put32(hdr + 16, 65535);
        put32(hdr + 20, kPcapLinkType);
        if (write(fd_, hdr, sizeof hdr) != static_cast<ssize_t>(sizeof hdr)) {
            *err = "capture " + path + ": " + std::strerror(errno);
            return false;
        }
    } else if (errno == EEXIST) {
        // Another process of the fabric created it: append to it.
        fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        struct stat st {};
        for (int i = 0; fd_ >= 0 && i < 1000 && fstat(fd_, &st) == 0 && st.st_size < 24; ++i)
            usleep(1000);
    }
    if (fd_ < 0) {
        *err = "capture " + path + ": " + std::strerror(errno);
        return false;
    }
    buf_.resize(kRecordHeader + kMaxPacket);
    return true;
}

void Capture::record(const UdPacketMeta &m, const Sge *sg, std::uint32_t nsge, std::uint32_t len) noexcept {
    std::lock_guard<std::mutex> lk(mu_);  // send queues of several threads share the record buffer
    const std::size_t n =
        build_ud_packet(m, sg, nsge, len, std::span<std::uint8_t>(buf_.data() + kRecordHeader, kMaxPacket));
    if (n == 0)
        return;
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    put32(buf_.data(), static_cast<std::uint32_t>(ts.tv_sec));
    put32(buf_.data() + 4, static_cast<std::uint32_t>(ts.tv_nsec / 1000));
    put32(buf_.data() + 8, static_cast<std::uint32_t>(n));
    put32(buf_.data() + 12, static_cast<std::uint32_t>(n));
    if (write(fd_, buf_.data(), kRecordHeader + n) == static_cast<ssize_t>(kRecordHeader + n))
        ++written_;
}

} // namespace ipoib::hca::soft
