// SPDX-License-Identifier: BSD-3-Clause
// umad_send_check.so: an LD_PRELOAD interposer on libibumad's umad_send for
// the fabric tests. On a real kernel, a MAD sent with timeout_ms 0 expects
// no response: the MAD layer drops the answer, so a request sent that way
// never completes. umad2sim ignores the timeout and delivers the answer
// anyway, which would hide the mistake; this library brings the kernel's
// rule back: a request MAD (method Get, Set, GetTable or Delete) sent
// without a response timeout is refused (-EINVAL, the request never leaves)
// with a message on stderr, and counted; at exit the count is printed
// again. Everything else goes to the real umad_send.
//
//   LD_PRELOAD="umad_send_check.so libumad2sim.so" program ...
//
// It does not link libibumad: the real function is found with
// dlsym(RTLD_NEXT) at the first call, so any process may preload it.
//
// A fault for the fault suite (test/integration/pmd/test_faults.py): with
// IPOIB_UMAD_DROP_FILE=<path> in the environment, umad_recv also loses
// every SA answer (management class 0x03, a response method) it receives
// while <path> exists, as if the SA or the fabric dropped it: the MAD is
// read and discarded, and the call returns -ETIMEDOUT as for nothing
// received. Other MADs (SMPs: port state, P_Key table) pass. Each storm is
// announced once on stderr; at exit the number lost is printed.
#include <dlfcn.h>
#include <unistd.h>
#include <infiniband/umad.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

using SendFn = int (*)(int, int, void *, int, int, int);
using RecvFn = int (*)(int, void *, int *, int);

std::atomic<unsigned long> g_refused{0};
std::atomic<unsigned long> g_dropped{0};
std::atomic<bool> g_storm{false};

const char *request_name(std::uint8_t method) {
    switch (method) {
    case 0x01: return "Get";
    case 0x02: return "Set";
    case 0x12: return "GetTable";
    case 0x15: return "Delete";
    default: return nullptr;
    }
}

struct Report {
    ~Report() {
        if (const unsigned long n = g_refused.load())
            std::fprintf(stderr, "umad_send_check: %lu request MAD(s) sent without a response timeout were refused\n",
                         n);
        if (const unsigned long n = g_dropped.load())
            std::fprintf(stderr, "umad_send_check: %lu SA answer(s) dropped (IPOIB_UMAD_DROP_FILE)\n", n);
    }
} g_report;

} // namespace

extern "C" int umad_send(int portid, int agentid, void *umad, int length, int timeout_ms, int retries) {
    static const SendFn real = reinterpret_cast<SendFn>(dlsym(RTLD_NEXT, "umad_send"));
    if (umad && length >= 4 && timeout_ms == 0) {
        // The MAD follows struct ib_user_mad's header (what umad_get_mad() returns).
        const auto *mad = static_cast<const std::uint8_t *>(umad) + offsetof(struct ib_user_mad, data);
        const std::uint8_t mgmt_class = mad[1], method = mad[3];
        if (const char *name = request_name(method)) {
            const unsigned long n = ++g_refused;
            std::fprintf(stderr,
                         "umad_send_check: request MAD (class 0x%02x, method %s 0x%02x) sent with timeout_ms 0: "
                         "on a real kernel its answer would be dropped; refused (%lu so far)\n",
                         mgmt_class, name, method, n);
            errno = EINVAL;
            return -EINVAL;
        }
    }
    if (!real) {
        std::fprintf(stderr, "umad_send_check: the real umad_send is not loaded\n");
        errno = ENOSYS;
        return -ENOSYS;
    }
    return real(portid, agentid, umad, length, timeout_ms, retries);
}

extern "C" int umad_recv(int portid, void *umad, int *length, int timeout_ms) {
    static const RecvFn real = reinterpret_cast<RecvFn>(dlsym(RTLD_NEXT, "umad_recv"));
    static const char *const drop_file = std::getenv("IPOIB_UMAD_DROP_FILE");
    if (!real) {
        std::fprintf(stderr, "umad_send_check: the real umad_recv is not loaded\n");
        errno = ENOSYS;
        return -ENOSYS;
    }
    const int len_in = length ? *length : 0;
    const int r = real(portid, umad, length, timeout_ms);
    if (!drop_file || r < 0 || !umad || !length || *length < 4)
        return r;
    if (access(drop_file, F_OK) != 0) {
        g_storm.store(false);
        return r;
    }
    const auto *mad = static_cast<const std::uint8_t *>(umad) + offsetof(struct ib_user_mad, data);
    const std::uint8_t mgmt_class = mad[1], method = mad[3];
    if (mgmt_class != 0x03 || !(method & 0x80))
        return r;
    const unsigned long n = ++g_dropped;
    if (!g_storm.exchange(true))
        std::fprintf(stderr, "umad_send_check: %s exists: dropping SA answers (%lu so far)\n", drop_file, n);
    *length = len_in;
    errno = ETIMEDOUT;
    return -ETIMEDOUT;
}
