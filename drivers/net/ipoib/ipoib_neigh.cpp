// SPDX-License-Identifier: BSD-3-Clause
// Neighbour table, control-thread side: the only writer. Each write bumps the
// entry's sequence number to odd, changes it, and back to even, so fast-path
// readers (ipoib_rxtx.cpp) retry instead of seeing half an entry.
#include <cstring>

#include "ipoib_ethdev.hpp"

namespace ipoib::pmd {

namespace {
template <class E, class F>
void seq_write(E &e, F &&fn) {
    e.seq.fetch_add(1, std::memory_order_acq_rel);
    std::atomic_thread_fence(std::memory_order_release);
    fn(e);
    e.seq.fetch_add(1, std::memory_order_release);
}
std::uint32_t idx_slot(std::uint16_t lid, std::uint32_t qpn) {
    const std::uint32_t key = std::uint32_t{lid} << 24 ^ qpn;
    return (key * 2654435761u) >> 22;
}
} // namespace

Neigh *NeighTable::find(const wire::Mac &mac) {
    std::uint32_t i = hash(mac.raw.data()) & (kSize - 1);
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        Neigh &n = slots_[i];
        if (n.state == kNeighEmpty)
            return nullptr;
        if (std::memcmp(n.mac, mac.raw.data(), 6) == 0)
            return &n;
    }
    return nullptr;
}

Neigh *NeighTable::find_or_add(const wire::Mac &mac) {
    if (Neigh *n = find(mac))
        return n;
    std::uint32_t i = hash(mac.raw.data()) & (kSize - 1);
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        Neigh &n = slots_[i];
        if (n.state != kNeighEmpty)
            continue;
        seq_write(n, [&](Neigh &e) {
            std::memcpy(e.mac, mac.raw.data(), 6);
            e.state = kNeighIncomplete;
            e.is_static = 0;
            e.ah = nullptr;
            e.gid = wire::Gid{};
            e.created_ms = 0;
            e.used_ms.store(0, std::memory_order_relaxed);
        });
        return &n;
    }
    return nullptr;  // neighbourhood of this hash is full
}

void NeighTable::write(Neigh *n, const std::function<void(Neigh &)> &fn) { seq_write(*n, fn); }

// Removing from linear probing without tombstones: re-insert the rest of the
// cluster. Readers may miss an entry for the duration (they then ask again).
void NeighTable::remove(Neigh *n) {
    std::uint32_t i = static_cast<std::uint32_t>(n - slots_);
    seq_write(*n, [](Neigh &e) { e.state = kNeighEmpty; });
    for (std::uint32_t j = (i + 1) & (kSize - 1); slots_[j].state != kNeighEmpty; j = (j + 1) & (kSize - 1)) {
        Neigh &m = slots_[j];
        const std::uint32_t home = hash(m.mac) & (kSize - 1);
        // Does m's probe sequence from `home` pass through the hole at i before j?
        const bool move = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
        if (!move)
            continue;
        Neigh &hole = slots_[i];
        seq_write(hole, [&](Neigh &e) {
            std::memcpy(e.mac, m.mac, 6);
            e.state = m.state;
            e.sl = m.sl;
            e.is_static = m.is_static;
            e.dlid = m.dlid;
            e.qpn = m.qpn;
            e.gid = m.gid;
            e.ah = m.ah;
            e.created_ms = m.created_ms;
            e.used_ms.store(m.used_ms.load(std::memory_order_relaxed), std::memory_order_relaxed);
        });
        seq_write(m, [](Neigh &e) { e.state = kNeighEmpty; });
        i = j;
    }
}

void NeighTable::index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac) {
    std::uint32_t i = idx_slot(lid, qpn);
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        RxIndex &x = idx_[i];
        if (x.used && !(x.lid == lid && x.qpn == qpn))
            continue;
        seq_write(x, [&](RxIndex &e) {
            e.used = 1;
            e.lid = lid;
            e.qpn = qpn;
            std::memcpy(e.mac, mac.raw.data(), 6);
        });
        return;
    }
}

void NeighTable::unindex(std::uint16_t lid, std::uint32_t qpn) {
    // Index entries are left in place but pointed nowhere: cheaper than a
    // cluster rebuild, and a sender that comes back re-learns its slot.
    std::uint32_t i = idx_slot(lid, qpn);
    for (std::uint32_t probe = 0; probe < 16; ++probe, i = (i + 1) & (kSize - 1)) {
        RxIndex &x = idx_[i];
        if (!x.used)
            return;
        if (x.lid == lid && x.qpn == qpn) {
            seq_write(x, [](RxIndex &e) { e.lid = 0; e.qpn = 0; });
            return;
        }
    }
}

} // namespace ipoib::pmd
