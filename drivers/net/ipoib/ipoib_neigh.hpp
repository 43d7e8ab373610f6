// SPDX-License-Identifier: BSD-3-Clause
// The address tables the fast path reads and the control thread writes:
// neighbours (MAC -> IPoIB address and address handle), the receive index
// (sender LID/QPN -> the MAC it is known by) and the joined multicast groups
// (MGID -> address handle).
//
// Sizes: neighbours and senders up to the devarg neigh_max each (see
// NeighTable); groups kMcastSlots.
//
// Concurrency: the control thread is the only writer. Each entry carries a
// sequence number: a writer makes it odd, changes the entry, makes it even
// again; a reader copies the entry and retries if the number was odd or
// changed. Lookups are inline (fast path); writes are in ipoib_neigh.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

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

// One slot of the neighbour table: one cache line, everything the fast path
// reads and the control thread keeps about a neighbour.
struct alignas(64) Neigh {
    std::atomic<std::uint32_t> seq;
    std::uint8_t mac[6];
    NeighState state;
    std::uint8_t sl;
    std::uint16_t dlid;
    std::uint8_t is_static;
    std::uint8_t hw_flags;     // byte 0 of its 20-byte address as last announced (wire::kHwFlagRc)
    std::uint32_t qpn;
    std::uint32_t backoff_ms;  // control thread only: the wait after the next failure
    hca::Ah *ah;
    wire::Gid gid;  // zero if unknown
    // Last use (the fast path writes it, relaxed, at most every kUsedStampMs),
    // or the creation time until the first use: what ageing compares.
    std::atomic<std::uint64_t> used_ms;
    std::uint64_t retry_ms;    // failed: when the fast path may ask for it again
};
static_assert(sizeof(Neigh) == 64, "one cache line per neighbour");

// What the fast path copies out of a Neigh.
struct NeighSnapshot {
    NeighState state;
    std::uint8_t hw_flags;
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

// Open addressing with linear probing over kNeighSlotsPerEntry slots per
// neighbour the table may hold (devarg neigh_max), so it is at most half
// full: a lookup reads its home slot's cache line and, rarely, the next ones;
// probing never goes further than kNeighProbe slots (an insert whose window
// is full is refused, as one beyond neigh_max is: the caller counts it). The
// slots come from rte_zmalloc on the port's socket (init); a table not
// initialised holds nothing and finds nothing.
class NeighTable {
  public:
    NeighTable() = default;
    NeighTable(const NeighTable &) = delete;
    NeighTable &operator=(const NeighTable &) = delete;
    ~NeighTable() { release(); }

    // Room for `max` neighbours (and as many indexed senders) on NUMA socket
    // `socket` (SOCKET_ID_ANY: any). False if the memory cannot be had.
    bool init(std::uint32_t max, int socket) noexcept;
    void release() noexcept;
    // Bytes init(max) takes: what doc/net_ipoib.md reports for neigh_max.
    static std::size_t bytes_for(std::uint32_t max) noexcept {
        return std::size_t{max} * kNeighSlotsPerEntry * (sizeof(Neigh) + sizeof(RxIndex));
    }
    std::uint32_t capacity() const noexcept { return max_; }
    std::uint32_t size() const noexcept { return count_; }  // neighbours held (control thread)
    std::uint32_t slots() const noexcept { return nslots_; }

    // --- fast path ---

    // The neighbour known by `mac`; refreshes its last-use stamp.
    bool lookup(const wire::Mac &mac, NeighSnapshot *out, std::uint64_t now) noexcept {
        if (!nslots_) [[unlikely]]
            return false;
        std::uint32_t i = mac_slot(mac.raw.data());
        for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
            Neigh &n = slots_[i];
            bool match = false;
            NeighSnapshot s{};
            if (!seq_read(n.seq, [&] {
                    match = n.state != NeighState::empty && std::memcmp(n.mac, mac.raw.data(), 6) == 0;
                    s = NeighSnapshot{n.state, n.hw_flags, n.sl, n.dlid, n.qpn, n.ah, n.gid, n.retry_ms};
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

    // Start loading the home slot of `mac` (a burst does this one frame ahead).
    void prefetch(const std::uint8_t *mac) const noexcept {
        if (nslots_)
            __builtin_prefetch(&slots_[mac_slot(mac)]);
    }

    // The MAC a sender (its key: LID, or folded GID on RoCE; and QPN) is known by.
    bool mac_for(std::uint16_t lid, std::uint32_t qpn, wire::Mac *out) const noexcept {
        if (!nslots_) [[unlikely]]
            return false;
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
    // nullptr if the table holds capacity() neighbours or the MAC's probe window is full.
    Neigh *find_or_add(const wire::Mac &mac) noexcept;
    template <class F>
    void write(Neigh *n, F &&fn) noexcept {
        const wire::Gid before = n->gid;
        seq_write(*n, fn);
        if (n->gid != before)
            regid(n->mac, before, n->gid);
    }
    void remove(Neigh *n) noexcept;
    void clear() noexcept;  // every neighbour and sender forgotten (the QP is made again)
    // False if the index holds capacity() senders or the sender's probe window is full of live entries.
    bool index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac) noexcept;
    void unindex(std::uint16_t lid, std::uint32_t qpn) noexcept;
    template <class F>
    void for_each(F &&fn) noexcept {  // every non-empty neighbour
        for (std::uint32_t i = 0; i < nslots_; ++i)
            if (slots_[i].state != NeighState::empty)
                fn(slots_[i]);
    }
    // Every neighbour with this GID (a path answer's), without walking the
    // table: fn may write them (not add or remove neighbours).
    template <class F>
    void for_each_with_gid(const wire::Gid &gid, F &&fn) noexcept {
        std::vector<wire::Mac> macs;
        for (auto [it, end] = by_gid_.equal_range(gid); it != end; ++it)
            macs.push_back(it->second);
        for (const wire::Mac &m : macs)
            if (Neigh *n = find(m); n && n->gid == gid)
                fn(*n);
    }

    // Home slots: a multiplicative hash of the key, its top 32 bits scaled to
    // the table (multiply-shift: any table size, no modulo).
    std::uint32_t mac_slot(const std::uint8_t *mac) const noexcept {
        std::uint64_t key = 0;
        std::memcpy(&key, mac, 6);
        return scale(key);
    }
    std::uint32_t index_slot(std::uint16_t lid, std::uint32_t qpn) const noexcept {
        return scale(std::uint64_t{lid} << 24 ^ qpn);
    }

  private:
    std::uint32_t scale(std::uint64_t key) const noexcept {
        const std::uint64_t h = (key * 0x9e3779b97f4a7c15ull) >> 32;
        return static_cast<std::uint32_t>((h * nslots_) >> 32);
    }
    std::uint32_t next(std::uint32_t i) const noexcept { return i + 1 == nslots_ ? 0 : i + 1; }
    // The neighbour known by `mac` had GID `before`, has `after` now (zero: none).
    void regid(const std::uint8_t *mac, const wire::Gid &before, const wire::Gid &after) noexcept;

    struct GidHash {
        std::size_t operator()(const wire::Gid &g) const noexcept {
            std::uint64_t a, b;
            std::memcpy(&a, g.raw.data(), 8);
            std::memcpy(&b, g.raw.data() + 8, 8);
            return static_cast<std::size_t>((a ^ b * 0x9e3779b97f4a7c15ull) >> 16);
        }
    };

    Neigh *slots_ = nullptr;
    RxIndex *idx_ = nullptr;
    std::uint32_t nslots_ = 0;  // of each array
    std::uint32_t max_ = 0;
    std::uint32_t count_ = 0;    // neighbours (control thread)
    std::uint32_t indexed_ = 0;  // live senders (control thread)
    // Control thread: the MACs of the neighbours with a (non-zero) GID, by GID.
    std::unordered_multimap<wire::Gid, wire::Mac, GidHash> by_gid_;
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
