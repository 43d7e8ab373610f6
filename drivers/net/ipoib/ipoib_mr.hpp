// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib memory-region cache: DPDK's memory registered with the HCA, so
// that mbufs are sent and received where they lie (no bounce copy), the way
// mlx5's MR cache works.
//
// - Control side (MrCache, one per HCA): at open, every VA-contiguous run of
//   allocated memory segments (rte_memseg_contig_walk over the memseg lists)
//   is registered with hca::Context::reg_mr; a memory event callback
//   (rte_mem_event_callback_register) registers memory DPDK allocates later
//   and forgets memory it frees. An MR is deregistered once all of its range
//   is freed; while part of it lives, that part keeps the MR's lkey (the
//   pages stay pinned by the registration, and the living part still maps
//   them), as mlx5 keeps an MR until its last memseg goes.
// - Published to the fast path as a sorted table of ranges {start, end,
//   lkey} under a sequence lock; every change bumps a generation number.
// - Fast path (MrLookup, one per queue, used by one thread): a few ranges hit
//   last, checked first; a miss searches the table (binary search, no lock,
//   no syscall); a changed generation empties the per-queue ranges.
// - A provider that cannot register DPDK memory (the software HCA registers
//   only its own alloc_dma segments): the first registration fails, the
//   cache stays empty and inactive, and lookups answer lkey 0 (the provider
//   then reaches the memory its own way, as before).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ipoib/hca/hca.hpp"

namespace ipoib::pmd {

inline constexpr std::uint32_t kMrRangesMax = 1024;  // ranges the fast path's table holds
inline constexpr std::uint32_t kMrLocalSlots = 4;    // ranges a queue keeps from its last hits

// One registered range: [start, end), its lkey.
struct MrRange {
    std::uintptr_t start = 0, end = 0;
    std::uint32_t lkey = 0;
};

class MrCache {
  public:
    MrCache() = default;
    MrCache(const MrCache &) = delete;
    MrCache &operator=(const MrCache &) = delete;
    ~MrCache() { close(); }

    // Register DPDK's memory with ctx and follow its changes. False if the
    // provider cannot register it (the cache stays inactive; not an error).
    // `name` names the memory event callback (unique per cache).
    bool open(hca::Context *ctx, const std::string &name);
    // Stop following memory events and deregister everything (control path;
    // no send or receive may use the cache's lkeys any more).
    void close();

    // Memory DPDK allocated / freed (the memory event callback calls these;
    // tests call them directly). Control path, any thread.
    void on_alloc(const void *addr, std::size_t len);
    void on_free(const void *addr, std::size_t len);

    bool active() const noexcept { return active_.load(std::memory_order_acquire); }
    std::uint64_t generation() const noexcept { return gen_.load(std::memory_order_acquire); }
    // The range holding [addr, addr + len), or false. Lock-free, for the fast path.
    bool find(std::uintptr_t addr, std::uint32_t len, MrRange *out) const noexcept;

    // Control side, for telemetry and tests.
    std::size_t ranges() const;
    std::size_t regions() const;  // MRs registered
    std::uint64_t failures() const;  // registrations the provider refused or the table could not hold

  private:
    struct Region {  // one MR and the pieces of its range still allocated
        std::unique_ptr<hca::Mr> mr;
        std::size_t live = 0;  // bytes of its range not freed yet
    };
    void add_locked(std::uintptr_t start, std::uintptr_t end);
    void publish_locked();

    hca::Context *ctx_ = nullptr;
    std::string event_name_;
    bool subscribed_ = false;
    mutable std::mutex mu_;                  // control side
    std::vector<std::unique_ptr<Region>> regions_;
    struct Piece {
        std::uintptr_t start, end;
        Region *region;
    };
    std::vector<Piece> pieces_;              // sorted by start, disjoint
    std::uint64_t failures_ = 0;

    // Published: the fast path's table.
    std::atomic<bool> active_{false};
    std::atomic<std::uint64_t> gen_{0};
    std::atomic<std::uint32_t> seq_{0};
    std::uint32_t count_ = 0;
    MrRange table_[kMrRangesMax];
};

// A queue's view of the cache: lkey for a piece of memory, 0 if it is not
// registered (or there is no cache). One thread.
struct MrLookup {
    std::uint64_t gen = ~std::uint64_t{0};
    MrRange hit[kMrLocalSlots]{};
    std::uint32_t next = 0;

    std::uint32_t lkey(const MrCache *c, std::uintptr_t addr, std::uint32_t len) noexcept {
        if (!c)
            return 0;
        if (const std::uint64_t g = c->generation(); g != gen) [[unlikely]] {
            for (MrRange &h : hit)
                h = MrRange{};
            gen = g;
        }
        for (const MrRange &h : hit)
            if (addr >= h.start && addr + len <= h.end)
                return h.lkey;
        MrRange r;
        if (!c->find(addr, len, &r))
            return 0;
        hit[next++ % kMrLocalSlots] = r;
        return r.lkey;
    }
};

} // namespace ipoib::pmd
