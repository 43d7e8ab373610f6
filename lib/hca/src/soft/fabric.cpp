// SPDX-License-Identifier: BSD-3-Clause
#include "fabric.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>

#include "soft_testing.hpp"

namespace ipoib::hca::soft {

namespace {
constexpr std::uint32_t kMaxPid = 4194304;  // PID_MAX_LIMIT: a larger pid in a process entry is garbage
// The group lock: spins before yielding, how often a holder's liveness is
// checked (syscalls) while waiting, and how long a live holder may keep it.
constexpr int kGroupLockSpins = 64;
constexpr auto kGroupLockCheck = std::chrono::milliseconds(1);
constexpr auto kGroupLockTimeout = std::chrono::milliseconds(1000);

std::atomic<std::uint32_t> g_attach_pause_ms{0};        // test hooks (soft_testing.hpp)
std::atomic<std::uint32_t> g_group_create_pause_us{0};

bool no_members(const GroupEntry &g) noexcept {
    for (const auto &m : g.members)
        if (m.load(std::memory_order_acquire))
            return false;
    return true;
}
} // namespace

void set_attach_pause_ms(std::uint32_t ms) noexcept { g_attach_pause_ms.store(ms); }
void set_group_create_pause_us(std::uint32_t us) noexcept { g_group_create_pause_us.store(us); }

Fabric::~Fabric() {
    while (!local_.empty())
        free_segment(local_.back().base);
    for (auto &r : remote_)
        if (r.base)
            munmap(r.base, r.size);
    if (shm_) {
        if (proc_ < kMaxProcs) {  // free the slot if it is still ours
            std::uint64_t w = live_word_;
            shm_->procs[proc_].word.compare_exchange_strong(w, proc_word(0, gen_, kProcFree),
                                                            std::memory_order_acq_rel);
        }
        munmap(shm_, sizeof(FabricShm));
    }
}

bool Fabric::attach(const std::string &name, std::string *err) {
    name_ = name;
    const std::string path = "/ipoibsoft." + name;
    bool creator = false;
    int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
        creator = true;
        if (ftruncate(fd, sizeof(FabricShm)) != 0) {
            *err = "ftruncate " + path + ": " + std::strerror(errno);
            close(fd);
            shm_unlink(path.c_str());
            return false;
        }
    } else if (errno == EEXIST) {
        fd = shm_open(path.c_str(), O_RDWR, 0600);
        // Wait for the creator to size it.
        struct stat st {};
        for (int i = 0; fd >= 0 && i < 2000; ++i) {
            if (fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= sizeof(FabricShm))
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    if (fd < 0) {
        *err = "shm_open " + path + ": " + std::strerror(errno);
        return false;
    }
    void *m = mmap(nullptr, sizeof(FabricShm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        *err = "mmap " + path + ": " + std::strerror(errno);
        return false;
    }
    shm_ = static_cast<FabricShm *>(m);
    if (creator) {
        // Fresh pages are zero, which is every table's empty state.
        shm_->version = kLayoutVersion;
        shm_->size = sizeof(FabricShm);
        shm_->next_qp_gen.store(1, std::memory_order_relaxed);
        shm_->magic.store(kMagic, std::memory_order_release);
    } else {
        for (int i = 0; i < 2000 && shm_->magic.load(std::memory_order_acquire) != kMagic; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (shm_->magic.load(std::memory_order_acquire) != kMagic || shm_->version != kLayoutVersion ||
            shm_->size != sizeof(FabricShm)) {
            *err = path + ": not a software-HCA fabric of this version (stale? remove it)";
            return false;
        }
    }

    collect_dead();
    // Claim a free process slot: FREE -> CLAIMING (a CAS) says "taken, identity
    // coming" (a CLAIMING slot is alive while its pid is); the start time is
    // published before LIVE, so whoever sees LIVE also sees this process's.
    const std::uint32_t me = static_cast<std::uint32_t>(getpid());
    const std::uint64_t start = proc_start_time(static_cast<int>(me));
    for (std::uint32_t p = 0; p < kMaxProcs; ++p) {
        ProcEntry &e = shm_->procs[p];
        std::uint64_t w = e.word.load(std::memory_order_acquire);
        if (proc_state(w) != kProcFree)
            continue;
        std::uint32_t gen = (proc_gen(w) + 1) & 0xffff;
        gen += gen == 0;  // never 0: an ident is never 0
        if (!e.word.compare_exchange_strong(w, proc_word(me, gen, kProcClaiming), std::memory_order_acq_rel))
            continue;
        proc_ = p;
        gen_ = gen;
        if (const std::uint32_t ms = g_attach_pause_ms.exchange(0)) [[unlikely]]
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        e.start_time.store(start, std::memory_order_relaxed);
        live_word_ = proc_word(me, gen, kProcLive);
        e.word.store(live_word_, std::memory_order_release);
        return true;
    }
    *err = "software-HCA fabric " + name + " has no free process slot (" + std::to_string(kMaxProcs) + " in use)";
    return false;
}

// Is the process of slot word w (start time st) alive? Syscalls: slow path only.
bool Fabric::word_alive(std::uint64_t w, std::uint64_t st) noexcept {
    const std::uint32_t pid = proc_pid(w);
    if (pid == 0 || pid > kMaxPid)
        return false;  // garbage (kill() of 0 or a negative pid would test a whole process group)
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
        return false;
    if (proc_state(w) == kProcClaiming)
        return true;  // still publishing who it is: its pid is all there is
    if (proc_state(w) != kProcLive)
        return false;  // garbage
    return st == 0 || proc_start_time(static_cast<int>(pid)) == st;
}

bool Fabric::ident_alive(std::uint32_t id) const noexcept {
    const std::uint32_t p = ident_proc(id), gen = ident_gen(id);
    if (p >= kMaxProcs || gen == 0)
        return false;
    const ProcEntry &e = shm_->procs[p];
    const std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (proc_state(w) == kProcFree || proc_gen(w) != gen)
        return false;  // that incarnation is gone, whoever holds the slot now
    return word_alive(w, e.start_time.load(std::memory_order_relaxed));
}

void Fabric::collect_dead() {
    for (std::uint32_t p = 0; p < kMaxProcs; ++p) {
        ProcEntry &e = shm_->procs[p];
        const std::uint64_t w = e.word.load(std::memory_order_acquire);
        if (proc_state(w) == kProcFree || word_alive(w, e.start_time.load(std::memory_order_relaxed)))
            continue;
        // What the dead incarnation owned, by its ident (never the slot's next owner's):
        // its QPs, freed and dropped from their groups.
        const std::uint32_t id = soft::ident(p, proc_gen(w));
        for (std::uint32_t q = 0; q < kMaxQps; ++q) {
            QpEntry &qe = shm_->qps[q];
            if (qe.owner.load(std::memory_order_acquire) != id)
                continue;
            group_drop_member(q);
            qe.qpn.store(0, std::memory_order_release);
            std::uint32_t expected = id;
            qe.owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
        }
        // Its RC receive rings (SRQs, RC QPs' own receive queues).
        for (auto &rr : shm_->rc_rings) {
            std::uint32_t expected = id;
            rr.owner.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
        }
        // Its segments: removed from /dev/shm (peers' mappings stay valid until they let go).
        for (std::uint32_t i = 0; i < kMaxSegsPerProc; ++i) {
            std::uint32_t serial = e.seg_serial[i].load(std::memory_order_acquire);
            if (!serial)
                continue;
            shm_unlink(segment_name(p, i, serial).c_str());
            e.seg_serial[i].compare_exchange_strong(serial, 0, std::memory_order_acq_rel);
        }
        std::uint64_t expected = w;  // unless it changed meanwhile
        e.word.compare_exchange_strong(expected, proc_word(0, proc_gen(w), kProcFree), std::memory_order_acq_rel);
    }
}

// A lock for the group table (attach and detach: control path; senders read
// the table without it). A dead holder's lock is taken over; a live one that
// keeps it longer than kGroupLockTimeout (a stopped process) makes the
// caller give up (-EBUSY) rather than wait for good.
bool Fabric::lock_groups() noexcept {
    const std::uint32_t me = ident();
    auto &lock = shm_->group_lock;
    const auto start = std::chrono::steady_clock::now();
    auto checked = start;
    for (int spins = 0;; ++spins) {
        std::uint32_t holder = 0;
        if (lock.compare_exchange_weak(holder, me, std::memory_order_acq_rel))
            return true;
        if (spins < kGroupLockSpins)
            continue;
        std::this_thread::yield();
        const auto now = std::chrono::steady_clock::now();
        if (now - checked < kGroupLockCheck)
            continue;
        checked = now;
        if (holder && !ident_alive(holder) && lock.compare_exchange_strong(holder, me, std::memory_order_acq_rel))
            return true;  // its holder died (or it held garbage)
        if (now - start >= kGroupLockTimeout)
            return false;
    }
}

void Fabric::unlock_groups() noexcept {
    std::uint32_t me = ident();
    shm_->group_lock.compare_exchange_strong(me, 0, std::memory_order_acq_rel);
}

int Fabric::group_attach(const std::uint8_t *mgid, std::uint16_t mlid, std::uint32_t qp_slot, std::string *err) {
    if (qp_slot >= kMaxQps) {
        *err = "no QP slot " + std::to_string(qp_slot);
        return -EINVAL;
    }
    if (!lock_groups()) {
        *err = "the multicast group table is held by a process that does not let go";
        return -EBUSY;
    }
    GroupEntry *g = nullptr, *unused = nullptr;
    for (auto &e : shm_->groups) {
        if (e.state.load(std::memory_order_acquire) == kGroupLive) {
            if (!g && std::memcmp(e.mgid, mgid, 16) == 0) {
                g = &e;
                continue;
            }
            if (!no_members(e))
                continue;
            e.state.store(kGroupFree, std::memory_order_release);  // its members' QPs are gone: free it
        }
        if (!unused)
            unused = &e;
    }
    if (!g && unused) {
        if (const std::uint32_t us = g_group_create_pause_us.load(std::memory_order_relaxed)) [[unlikely]]
            std::this_thread::sleep_for(std::chrono::microseconds(us));
        g = unused;
        std::memcpy(g->mgid, mgid, 16);
        for (auto &m : g->members)
            m.store(0, std::memory_order_relaxed);
        g->mlid.store(mlid, std::memory_order_relaxed);
        g->state.store(kGroupLive, std::memory_order_release);
    }
    if (g) {
        // The MLID is the SM's latest: a group the SM moved (a re-join with a new
        // MLID) follows it, with every member.
        if (g->mlid.load(std::memory_order_relaxed) != mlid)
            g->mlid.store(mlid, std::memory_order_release);
        g->members[qp_slot / 64].fetch_or(std::uint64_t{1} << (qp_slot % 64), std::memory_order_acq_rel);
    }
    unlock_groups();
    if (!g) {
        *err = "all " + std::to_string(kMaxGroups) + " multicast groups of the fabric are in use";
        return -ENOSPC;
    }
    return 0;
}

int Fabric::group_detach(const std::uint8_t *mgid, std::uint32_t qp_slot, std::string *err) {
    if (qp_slot >= kMaxQps) {
        *err = "no QP slot " + std::to_string(qp_slot);
        return -EINVAL;
    }
    if (!lock_groups()) {
        *err = "the multicast group table is held by a process that does not let go";
        return -EBUSY;
    }
    const std::uint64_t bit = std::uint64_t{1} << (qp_slot % 64);
    int r = -ENOENT;
    for (auto &e : shm_->groups)
        if (e.state.load(std::memory_order_acquire) == kGroupLive && std::memcmp(e.mgid, mgid, 16) == 0 &&
            (e.members[qp_slot / 64].fetch_and(~bit, std::memory_order_acq_rel) & bit)) {
            if (no_members(e))
                e.state.store(kGroupFree, std::memory_order_release);  // the last member left
            r = 0;
        }
    unlock_groups();
    if (r)
        *err = "not attached";
    return r;
}

void Fabric::group_drop_member(std::uint32_t qp_slot) noexcept {
    for (auto &g : shm_->groups)
        g.members[qp_slot / 64].fetch_and(~(std::uint64_t{1} << (qp_slot % 64)), std::memory_order_acq_rel);
}

std::string Fabric::segment_name(std::uint32_t proc, std::uint32_t idx, std::uint32_t serial) const {
    return "/ipoibsoft." + name_ + "." + std::to_string(proc) + "." + std::to_string(idx) + "." +
           std::to_string(serial);
}

// A segment's name and key carry a fabric-wide serial, published in the
// owner's process entry before the object exists and cleared after it is
// gone: a collector finds a dead process's segments there, and a peer knows
// its mapping is stale when the serial differs (a segment freed and
// allocated again under the same index).
void *Fabric::alloc_segment(std::size_t len, std::string *err) {
    std::uint32_t idx = 0;
    for (; idx < kMaxSegsPerProc; ++idx) {
        bool used = false;
        for (auto &s : local_)
            used |= seg_index(s.key) == idx;
        if (!used)
            break;
    }
    if (idx == kMaxSegsPerProc || len == 0 || len > 0xffffffffu) {
        *err = len == 0 || len > 0xffffffffu ? "alloc_dma: bad length" : "alloc_dma: too many segments";
        return nullptr;
    }
    std::uint32_t serial = 0;
    while (!serial)
        serial = shm_->next_seg_serial.fetch_add(1, std::memory_order_relaxed) + 1;
    std::atomic<std::uint32_t> &published = shm_->procs[proc_].seg_serial[idx];
    published.store(serial, std::memory_order_release);
    const std::string path = segment_name(proc_, idx, serial);
    shm_unlink(path.c_str());  // a stale one from an earlier fabric of that name
    int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(len)) != 0) {
        *err = "alloc_dma: " + path + ": " + std::strerror(errno);
        if (fd >= 0) {
            close(fd);
            shm_unlink(path.c_str());
        }
        published.store(0, std::memory_order_release);
        return nullptr;
    }
    void *m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        *err = "alloc_dma: mmap: " + std::string(std::strerror(errno));
        shm_unlink(path.c_str());
        published.store(0, std::memory_order_release);
        return nullptr;
    }
    local_.push_back({static_cast<std::uint8_t *>(m), len, seg_key(proc_, idx, serial), serial});
    return m;
}

bool Fabric::free_segment(void *p) {
    for (auto it = local_.begin(); it != local_.end(); ++it)
        if (it->base == p) {
            const std::uint32_t idx = seg_index(it->key);
            munmap(it->base, it->size);
            shm_unlink(segment_name(proc_, idx, it->serial).c_str());
            std::uint32_t serial = it->serial;
            shm_->procs[proc_].seg_serial[idx].compare_exchange_strong(serial, 0, std::memory_order_acq_rel);
            local_.erase(it);
            return true;
        }
    return false;
}

bool Fabric::find_local(const void *addr, std::size_t len, std::uint32_t *key, std::uint8_t **base,
                        std::size_t *size) const {
    const auto *a = static_cast<const std::uint8_t *>(addr);
    for (auto &s : local_)
        if (a >= s.base && a + len <= s.base + s.size && a + len >= a) {
            *key = s.key;
            *base = s.base;
            if (size)
                *size = s.size;
            return true;
        }
    return false;
}

// The data path: one load of the owner's published serial (a read-mostly
// line) and compares; syscalls only at first contact or after a change.
std::uint8_t *Fabric::segment_base(std::uint32_t key, std::uint32_t *size) noexcept {
    const std::uint32_t p = seg_proc(key), i = seg_index(key);
    if (p >= kMaxProcs || i >= kMaxSegsPerProc)
        return nullptr;
    const std::uint32_t serial = shm_->procs[p].seg_serial[i].load(std::memory_order_acquire);
    if (!serial || (serial & 0xffff) != seg_serial_bits(key))
        return nullptr;  // no such segment (any more)
    RemoteSeg &r = remote_[p * kMaxSegsPerProc + i];
    if (r.base && r.serial == serial) [[likely]] {
        *size = r.size;
        return r.base;
    }
    // First contact with this segment, or another one under its index: map it.
    if (r.base) {
        munmap(r.base, r.size);
        r = RemoteSeg{};
    }
    const int fd = shm_open(segment_name(p, i, serial).c_str(), O_RDWR, 0600);
    if (fd < 0)
        return nullptr;
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > 0xffffffffll) {
        close(fd);
        return nullptr;
    }
    void *m = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return nullptr;
    r = RemoteSeg{static_cast<std::uint8_t *>(m), static_cast<std::uint32_t>(st.st_size), serial};
    *size = r.size;
    return r.base;
}

} // namespace ipoib::hca::soft
