// SPDX-License-Identifier: BSD-3-Clause
// libibumad's functions as SaClient calls them, over the in-memory kernel
// model of fake_umad.hpp. Linked into test-sa-unit only: the executable's
// definitions take precedence over libibumad.so for the code linked into it.
#include "fake_umad.hpp"

#include <endian.h>
#include <infiniband/umad.h>
#include <infiniband/umad_str.h>
#include <infiniband/umad_types.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ipoib/ctrl/sa.hpp"

namespace ipoib::ctrl::test {

namespace {

constexpr int kFd = 42;
constexpr std::size_t kMadHdrLen = 24;

FakeUmad g_umad;

bool is_response(const std::vector<std::uint8_t> &mad) { return mad.size() > 3 && (mad[3] & 0x80); }

std::uint64_t tid_of(const std::vector<std::uint8_t> &mad) {
    std::uint64_t v;
    std::memcpy(&v, mad.data() + 8, 8);
    return be64toh(v);
}

} // namespace

std::uint64_t UmadSent::tid() const { return tid_of(mad); }
std::uint16_t UmadSent::attr() const { return static_cast<std::uint16_t>(mad.at(16) << 8 | mad.at(17)); }

FakeUmad &fake_umad() { return g_umad; }
void reset_fake_umad() { g_umad = FakeUmad{}; }

void FakeUmad::respond(const std::vector<std::uint8_t> &mad) {
    expire();
    const std::uint64_t tid = tid_of(mad);
    auto it = std::find_if(waiting_.begin(), waiting_.end(),
                           [&](const Waiting &w) { return w.tid == tid && w.mgmt_class == mad[1]; });
    if (!is_response(mad) || it == waiting_.end()) {
        ++dropped_answers;
        return;
    }
    waiting_.erase(it);
    queue_.push_back({mad, 0});
}

void FakeUmad::deliver(const std::vector<std::uint8_t> &mad, std::uint32_t status) { queue_.push_back({mad, status}); }

std::vector<std::uint8_t> FakeUmad::answer_to(const UmadSent &req, std::uint16_t status,
                                              const std::vector<std::uint8_t> &data, std::uint16_t attr_offset) {
    std::vector<std::uint8_t> m(req.mad.begin(), req.mad.begin() + 56);
    m.resize(std::max<std::size_t>(256, 56 + data.size()), 0);
    std::copy(data.begin(), data.end(), m.begin() + 56);
    const std::uint8_t method = req.method();
    m[3] = method == 0x12 ? 0x92 : method == 0x15 ? 0x95 : 0x81;
    m[4] = static_cast<std::uint8_t>(status >> 8);
    m[5] = static_cast<std::uint8_t>(status);
    m[44] = static_cast<std::uint8_t>(attr_offset >> 8);  // SA header: attr_offset (8-byte words)
    m[45] = static_cast<std::uint8_t>(attr_offset);
    return m;
}

void FakeUmad::expire() {
    const std::uint64_t now = monotonic_ms();
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (it->deadline_ms > now) {
            ++it;
            continue;
        }
        // user_mad's send_handler: the request's header only, status ETIMEDOUT.
        ++kernel_timeouts;
        queue_.push_back({std::vector<std::uint8_t>(it->mad.begin(), it->mad.begin() + kMadHdrLen), ETIMEDOUT});
        it = waiting_.erase(it);
    }
}

std::uint64_t FakeUmad::next_deadline() const {
    std::uint64_t d = ~0ull;
    for (auto &w : waiting_)
        d = std::min(d, w.deadline_ms);
    return d;
}

} // namespace ipoib::ctrl::test

using ipoib::ctrl::test::g_umad;

extern "C" {

int umad_init(void) { return 0; }

int umad_open_port(const char *, int) {
    ++g_umad.opens;
    g_umad.is_open = true;
    return ipoib::ctrl::test::kFd;
}

int umad_close_port(int) {
    ++g_umad.closes;
    g_umad.is_open = false;
    g_umad.queue_.clear();  // the file is gone, and what was queued on it
    g_umad.waiting_.clear();
    return 0;
}

int umad_register(int, int, int, uint8_t, long *) { return 0; }
int umad_unregister(int, int) { return 0; }

size_t umad_size(void) { return sizeof(struct ib_user_mad); }
void *umad_get_mad(void *umad) { return static_cast<struct ib_user_mad *>(umad)->data; }
int umad_status(void *umad) { return static_cast<int>(static_cast<struct ib_user_mad *>(umad)->status); }

int umad_set_addr(void *umad, int dlid, int dqp, int sl, int qkey) {
    auto *m = static_cast<struct ib_user_mad *>(umad);
    m->addr.lid = htobe16(static_cast<std::uint16_t>(dlid));
    m->addr.qpn = htobe32(static_cast<std::uint32_t>(dqp));
    m->addr.sl = static_cast<std::uint8_t>(sl);
    m->addr.qkey = htobe32(static_cast<std::uint32_t>(qkey));
    return 0;
}

int umad_send(int fd, int, void *umad, int length, int timeout_ms, int retries) {
    using namespace ipoib::ctrl::test;
    if (fd != kFd || !g_umad.is_open || length < 24)
        return -EINVAL;
    auto *m = static_cast<struct ib_user_mad *>(umad);
    UmadSent s;
    s.mad.assign(m->data, m->data + length);
    s.timeout_ms = timeout_ms;
    s.retries = retries;
    s.dlid = be16toh(m->addr.lid);
    g_umad.expire();
    const std::uint64_t tid = s.tid();
    if (!is_response(s.mad)) {
        for (auto &w : g_umad.waiting_)
            if (w.tid == tid && w.mgmt_class == s.mad[1]) {
                ++g_umad.refused_duplicates;  // user_mad: is_duplicate()
                errno = EINVAL;
                return -EINVAL;
            }
        if (timeout_ms > 0)
            g_umad.waiting_.push_back({tid, s.mad[1], ipoib::ctrl::monotonic_ms() + static_cast<std::uint64_t>(timeout_ms),
                                       s.mad});
        // timeout 0: no response expected; the send is complete, nothing waits.
    }
    g_umad.sent.push_back(std::move(s));
    return 0;
}

int umad_poll(int fd, int timeout_ms) {
    using namespace ipoib::ctrl::test;
    if (fd != kFd)
        return -EINVAL;
    const std::uint64_t end = timeout_ms < 0 ? ~0ull : ipoib::ctrl::monotonic_ms() + static_cast<std::uint64_t>(timeout_ms);
    for (;;) {
        g_umad.expire();
        if (!g_umad.queue_.empty())
            return 0;
        const std::uint64_t now = ipoib::ctrl::monotonic_ms();
        const std::uint64_t until = std::min(end, g_umad.next_deadline());
        if (now >= end || until == ~0ull)
            return -ETIMEDOUT;
        const std::uint64_t ms = until > now ? until - now : 0;
        timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000};
        nanosleep(&ts, nullptr);
    }
}

int umad_recv(int fd, void *umad, int *length, int) {
    using namespace ipoib::ctrl::test;
    if (fd != kFd || !umad || !length)
        return -EINVAL;
    g_umad.expire();
    auto *m = static_cast<struct ib_user_mad *>(umad);
    if (g_umad.queue_.empty()) {
        errno = EAGAIN;
        return -EAGAIN;
    }
    const FakeUmad::Queued &q = g_umad.queue_.front();
    const int need = static_cast<int>(q.mad.size());
    m->agent_id = 0;
    m->status = q.status;
    m->length = static_cast<std::uint32_t>(sizeof(struct ib_user_mad) + q.mad.size());
    if (need > *length) {
        // ib_umad_read: header and first segment copied, ENOSPC, message kept at the head.
        std::memcpy(m->data, q.mad.data(), std::min<std::size_t>(static_cast<std::size_t>(*length), 256));
        ++g_umad.enospc;
        *length = need;  // libibumad: *length = mad->length - umad_size()
        errno = ENOSPC;
        return -ENOSPC;
    }
    std::memcpy(m->data, q.mad.data(), q.mad.size());
    *length = need;
    g_umad.queue_.pop_front();
    return 0;
}

const char *umad_common_mad_status_str(__be16) { return "fake MAD status"; }

} // extern "C"
