// SPDX-License-Identifier: BSD-3-Clause
// The address tables the fast path reads and the control thread writes:
// neighbours (MAC -> IPoIB address and address handle), the receive index
// (sender LID/QPN -> the MAC it is known by) and the joined multicast groups
// (MGID -> address handle).
//
// Concurrency: the control thread is the only writer. Each entry carries a
// sequence number: a writer makes it odd, changes the entry, makes it even
// again; a reader copies the entry and retries if the number was odd or
// changed. Lookups are inline (fast path); writes are in ipoib_neigh.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#include "ipoib/hca/hca.hpp"
#include "ipoib/wire.hpp"
#include "ipoib_defs.hpp"

namespace ipoib::pmd {

// --- sequence locks ---

inline constexpr int kSeqReadTries = 4;

// Copy an entry under its sequence number; false if a writer kept it busy.
template <class F>
inline bool seq_read(const std::atomic<std::uint32_t> &seq, F &&copy) noexcept {
    for (int tries = 0; tries < kSeqReadTries; ++tries) {
        const std::uint32_t s1 = seq.load(std::memory_order_acquire);
        if (s1 & 1)
            continue;
        copy();
        std::atomic_thread_fence(std::memory_order_acquire);
        if (seq.load(std::memory_order_relaxed) == s1)
            return true;
    }
    return false;
}

template <class E, class F>
inline void seq_write(E &e, F &&fn) noexcept {
    e.seq.fetch_add(1, std::memory_order_acq_rel);
    std::atomic_thread_fence(std::memory_order_release);
    fn(e);
    e.seq.fetch_add(1, std::memory_order_release);
}

// --- neighbours ---

enum class NeighState : std::uint8_t { empty = 0, incomplete = 1, resolved = 2, failed = 3 };
const char *to_string(NeighState s) noexcept;

struct Neigh {
    std::atomic<std::uint32_t> seq;
    std::uint8_t mac[6];
    NeighState state;
    std::uint8_t sl;
    std::uint8_t is_static;
    std::uint16_t dlid;
    std::uint32_t qpn;
    wire::Gid gid;  // zero if unknown
    hca::Ah *ah;
    std::atomic<std::uint64_t> used_ms;  // written by the fast path (relaxed)
    std::uint64_t created_ms;
    std::uint64_t retry_ms;    // failed: when the fast path may ask for it again
    std::uint32_t backoff_ms;  // control thread only: the wait after the next failure
};

// What the fast path copies out of a Neigh.
struct NeighSnapshot {
    NeighState state;
    std::uint8_t sl;
    std::uint16_t dlid;
    std::uint32_t qpn;
    hca::Ah *ah;
    wire::Gid gid;
    std::uint64_t retry_ms;
};

enum : std::uint8_t { kIndexEmpty = 0, kIndexLive = 1, kIndexDeleted = 2 };  // RxIndex::used

struct RxIndex {  // (key, QPN) of a sender -> the MAC it is known by
    std::atomic<std::uint32_t> seq;
    std::uint8_t used;  // kIndex*
    std::uint8_t mac[6];
    std::uint16_t lid;
    std::uint32_t qpn;
};

class NeighTable {
  public:
    static constexpr std::uint32_t kSize = kNeighSlots;
    static_assert((kSize & (kSize - 1)) == 0, "power of two");

    // --- fast path ---

    // The neighbour known by `mac`; refreshes its last-use stamp.
    bool lookup(const wire::Mac &mac, NeighSnapshot *out, std::uint64_t now) noexcept {
        std::uint32_t i = mac_slot(mac.raw.data());
        for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
            Neigh &n = slots_[i];
            bool match = false;
            NeighSnapshot s{};
            if (!seq_read(n.seq, [&] {
                    match = n.state != NeighState::empty && std::memcmp(n.mac, mac.raw.data(), 6) == 0;
                    s = NeighSnapshot{n.state, n.sl, n.dlid, n.qpn, n.ah, n.gid, n.retry_ms};
                }))
                return false;
            if (s.state == NeighState::empty)
                return false;
            if (match) {
                *out = s;
                if (n.used_ms.load(std::memory_order_relaxed) + kUsedStampMs < now)
                    n.used_ms.store(now, std::memory_order_relaxed);
                return true;
            }
        }
        return false;
    }

    // The MAC a sender (its key: LID, or folded GID on RoCE; and QPN) is known by.
    bool mac_for(std::uint16_t lid, std::uint32_t qpn, wire::Mac *out) const noexcept {
        std::uint32_t i = index_slot(lid, qpn);
        for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
            const RxIndex &x = idx_[i];
            RxIndex c;
            if (!seq_read(x.seq, [&] {
                    c.used = x.used;
                    c.lid = x.lid;
                    c.qpn = x.qpn;
                    std::memcpy(c.mac, x.mac, 6);
                }))
                return false;
            if (c.used == kIndexEmpty)
                return false;
            if (c.used == kIndexLive && c.lid == lid && c.qpn == qpn) {
                std::memcpy(out->raw.data(), c.mac, 6);
                return true;
            }
        }
        return false;
    }

    // --- control thread (ipoib_neigh.cpp) ---

    Neigh *find(const wire::Mac &mac) noexcept;
    Neigh *find_or_add(const wire::Mac &mac) noexcept;
    template <class F>
    void write(Neigh *n, F &&fn) noexcept {
        seq_write(*n, fn);
    }
    void remove(Neigh *n) noexcept;
    void clear() noexcept;  // every neighbour and sender forgotten (the QP is made again)
    // False if the sender's probe window is full of live entries.
    bool index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac) noexcept;
    void unindex(std::uint16_t lid, std::uint32_t qpn) noexcept;
    template <class F>
    void for_each(F &&fn) noexcept {  // every non-empty neighbour
        for (Neigh &n : slots_)
            if (n.state != NeighState::empty)
                fn(n);
    }

    static std::uint32_t mac_slot(const std::uint8_t *mac) noexcept {  // FNV-1a
        std::uint32_t h = 2166136261u;
        for (int i = 0; i < 6; ++i)
            h = (h ^ mac[i]) * 16777619u;
        return h & (kSize - 1);
    }
    static std::uint32_t index_slot(std::uint16_t lid, std::uint32_t qpn) noexcept {  // Fibonacci hashing
        const std::uint32_t key = std::uint32_t{lid} << 24 ^ qpn;
        return (key * 2654435761u) >> (32 - kSizeBits);  // the top bits
    }

  private:
    static constexpr std::uint32_t kSizeBits = 10;
    static_assert(1u << kSizeBits == kSize);
    static std::uint32_t next(std::uint32_t i) noexcept { return (i + 1) & (kSize - 1); }

    Neigh slots_[kSize] = {};
    RxIndex idx_[kSize] = {};
};

// --- joined multicast groups ---

struct McEntry {
    std::atomic<std::uint32_t> seq;
    wire::Gid mgid;
    std::uint16_t mlid;
    hca::Ah *ah;
    std::uint8_t used;
};

class GroupTable {
  public:
    // Fast path: the address handle of a joined group, or nullptr.
    hca::Ah *find(const wire::Gid &mgid) const noexcept {
        for (const McEntry &e : slots_) {
            bool hit = false;
            hca::Ah *a = nullptr;
            if (seq_read(e.seq, [&] {
                    hit = e.used && e.mgid == mgid;
                    a = e.ah;
                }) &&
                hit && a)
                return a;
        }
        return nullptr;
    }
    // Control thread.
    // Add a group, or update it (joined again, e.g. a send-only member now a full one).
    bool add(const wire::Gid &mgid, std::uint16_t mlid, hca::Ah *ah) noexcept {
        for (McEntry &e : slots_)
            if (e.used && e.mgid == mgid) {
                seq_write(e, [&](McEntry &x) {
                    x.mlid = mlid;
                    x.ah = ah;
                });
                return true;
            }
        for (McEntry &e : slots_)
            if (!e.used) {
                seq_write(e, [&](McEntry &x) {
                    x.mgid = mgid;
                    x.mlid = mlid;
                    x.ah = ah;
                    x.used = 1;
                });
                return true;
            }
        return false;
    }
    template <class F>
    void for_each_mgid(F &&fn) const noexcept {  // control thread
        for (const McEntry &e : slots_)
            if (e.used)
                fn(e.mgid);
    }
    template <class F>
    void for_each_ah(F &&fn) const noexcept {  // control thread
        for (const McEntry &e : slots_)
            if (e.used && e.ah)
                fn(e.ah);
    }
    void remove(const wire::Gid &mgid) noexcept {
        for (McEntry &e : slots_)
            if (e.used && e.mgid == mgid)
                seq_write(e, [](McEntry &x) { x.used = 0; });
    }

  private:
    McEntry slots_[kMcastSlots] = {};
};

} // namespace ipoib::pmd
