// SPDX-License-Identifier: BSD-3-Clause
// net_ipoib memory-region cache (see ipoib_mr.hpp): DPDK's memory registered
// with the HCA, kept current with DPDK's memory events, published to the
// fast path as a sequence-locked sorted table.
#include "ipoib_mr.hpp"

#include <rte_eal_memconfig.h>
#include <rte_errno.h>
#include <rte_memory.h>

#include <algorithm>

#include "ipoib_defs.hpp"
#include "ipoib_neigh.hpp"  // seq_read

namespace ipoib::pmd {

namespace {

// A VA-contiguous run of allocated segments.
struct Run {
    std::uintptr_t start, end;
};

int collect_run(const rte_memseg_list *, const rte_memseg *ms, std::size_t len, void *arg) {
    auto *runs = static_cast<std::vector<Run> *>(arg);
    const auto start = reinterpret_cast<std::uintptr_t>(ms->addr);
    runs->push_back(Run{start, start + len});
    return 0;
}

void mem_event(rte_mem_event type, const void *addr, std::size_t len, void *arg) {
    auto *c = static_cast<MrCache *>(arg);
    if (type == RTE_MEM_EVENT_ALLOC)
        c->on_alloc(addr, len);
    else
        c->on_free(addr, len);
}

} // namespace

bool MrCache::open(hca::Context *ctx, const std::string &name) {
    close();
    ctx_ = ctx;
    event_name_ = name;
    // Hold the memory hotplug lock (read) from the walk to the subscription:
    // no allocation slips between them.
    rte_mcfg_mem_read_lock();
    std::vector<Run> runs;
    rte_memseg_contig_walk_thread_unsafe(collect_run, &runs);
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const Run &r : runs) {
            add_locked(r.start, r.end);
            if (regions_.empty())
                break;  // the provider cannot register DPDK memory: no point trying the rest
        }
        if (!regions_.empty())
            publish_locked();
    }
    bool ok = !regions_.empty();
    if (ok) {
        if (rte_mem_event_callback_register(event_name_.c_str(), mem_event, this) == 0)
            subscribed_ = true;
        else if (rte_errno != ENOTSUP)  // legacy memory (and --no-huge) never changes: nothing to follow
            IPOIB_LOG(WARNING, "MR cache %s: cannot follow memory events (%s): memory DPDK adds later is "
                      "not registered (sent through the provider's bounce buffers)", event_name_.c_str(),
                      rte_strerror(rte_errno));
    }
    rte_mcfg_mem_read_unlock();
    if (ok) {
        active_.store(true, std::memory_order_release);
        IPOIB_LOG(INFO, "MR cache %s: %zu MRs over DPDK's memory (%zu ranges)%s", event_name_.c_str(), regions(),
                  ranges(), subscribed_ ? ", following memory events" : "");
    } else {
        IPOIB_LOG(INFO, "MR cache %s: %s cannot register DPDK's memory (%s): mbufs are sent and received "
                  "through the provider's and the driver's own buffers", event_name_.c_str(), ctx->name().c_str(),
                  ctx->last_error().c_str());
    }
    return ok;
}

void MrCache::close() {
    if (subscribed_)
        rte_mem_event_callback_unregister(event_name_.c_str(), this);
    subscribed_ = false;
    std::lock_guard<std::mutex> lk(mu_);
    active_.store(false, std::memory_order_release);
    pieces_.clear();
    publish_locked();
    regions_.clear();
}

// Register [start, end) as one MR (the parts not registered yet: a memory
// event may repeat what the walk at open saw).
void MrCache::add_locked(std::uintptr_t start, std::uintptr_t end) {
    for (const Piece &p : pieces_)
        if (p.start < end && start < p.end) {
            if (p.start <= start && end <= p.end)
                return;  // already registered
            if (start < p.start)
                add_locked(start, p.start);
            if (p.end < end)
                add_locked(p.end, end);
            return;
        }
    if (pieces_.size() >= kMrRangesMax) {
        ++failures_;
        IPOIB_LOG(WARNING, "MR cache %s: %u ranges already: [%#lx, %#lx) not registered (sent through bounce "
                  "buffers)", event_name_.c_str(), kMrRangesMax, static_cast<unsigned long>(start),
                  static_cast<unsigned long>(end));
        return;
    }
    auto mr = ctx_->reg_mr(reinterpret_cast<void *>(start), end - start);
    if (!mr) {
        ++failures_;
        return;
    }
    auto region = std::make_unique<Region>(Region{std::move(mr), end - start});
    const Piece piece{start, end, region.get()};
    regions_.push_back(std::move(region));
    pieces_.insert(std::upper_bound(pieces_.begin(), pieces_.end(), piece,
                                    [](const Piece &a, const Piece &b) { return a.start < b.start; }),
                   piece);
}

// The table the fast path reads, from pieces_ (sorted, disjoint).
void MrCache::publish_locked() {
    seq_.fetch_add(1, std::memory_order_acq_rel);
    std::atomic_thread_fence(std::memory_order_release);
    count_ = static_cast<std::uint32_t>(std::min<std::size_t>(pieces_.size(), kMrRangesMax));
    for (std::uint32_t i = 0; i < count_; ++i)
        table_[i] = MrRange{pieces_[i].start, pieces_[i].end, pieces_[i].region->mr->lkey()};
    seq_.fetch_add(1, std::memory_order_release);
    gen_.fetch_add(1, std::memory_order_acq_rel);
}

void MrCache::on_alloc(const void *addr, std::size_t len) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ctx_ || !active_.load(std::memory_order_relaxed))
        return;
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    add_locked(start, start + len);
    publish_locked();
}

// Freed memory leaves the table at once; an MR goes when its whole range has.
// Nothing in flight can use freed memory (no mbuf lives there), so the MR
// may be deregistered as soon as the table no longer hands its lkey out.
void MrCache::on_free(const void *addr, std::size_t len) {
    std::lock_guard<std::mutex> lk(mu_);
    const auto a = reinterpret_cast<std::uintptr_t>(addr), b = a + len;
    std::vector<Piece> kept;
    kept.reserve(pieces_.size() + 1);
    bool changed = false;
    for (const Piece &p : pieces_) {
        if (p.end <= a || b <= p.start) {
            kept.push_back(p);
            continue;
        }
        changed = true;
        p.region->live -= std::min(p.end, b) - std::max(p.start, a);
        if (p.start < a)
            kept.push_back(Piece{p.start, a, p.region});
        if (b < p.end)
            kept.push_back(Piece{b, p.end, p.region});
    }
    if (!changed)
        return;
    pieces_ = std::move(kept);
    publish_locked();
    std::erase_if(regions_, [](const std::unique_ptr<Region> &r) { return r->live == 0; });
}

bool MrCache::find(std::uintptr_t addr, std::uint32_t len, MrRange *out) const noexcept {
    bool found = false;
    MrRange r{};
    const bool read = seq_read(seq_, [&] {
        // The last range starting at or before addr.
        std::uint32_t lo = 0, hi = std::min(count_, kMrRangesMax);
        while (lo < hi) {
            const std::uint32_t mid = (lo + hi) / 2;
            if (table_[mid].start <= addr)
                lo = mid + 1;
            else
                hi = mid;
        }
        found = lo > 0 && addr + len <= table_[lo - 1].end;
        if (found)
            r = table_[lo - 1];
    });
    if (!read || !found)
        return false;
    *out = r;
    return true;
}

std::size_t MrCache::ranges() const {
    std::lock_guard<std::mutex> lk(mu_);
    return pieces_.size();
}

std::size_t MrCache::regions() const {
    std::lock_guard<std::mutex> lk(mu_);
    return regions_.size();
}

std::uint64_t MrCache::failures() const {
    std::lock_guard<std::mutex> lk(mu_);
    return failures_;
}

} // namespace ipoib::pmd
