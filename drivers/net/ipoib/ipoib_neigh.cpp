// SPDX-License-Identifier: BSD-3-Clause
// Neighbour table and receive index, control-thread side: the only writer
// (see ipoib_neigh.hpp for the sequence-lock protocol).
#include "ipoib_neigh.hpp"

#include <rte_malloc.h>

#include <new>

namespace ipoib::pmd {

bool NeighTable::init(std::uint32_t max, int socket) noexcept {
    release();
    const std::uint32_t n = max * kNeighSlotsPerEntry;
    auto *s = static_cast<Neigh *>(rte_zmalloc_socket("ipoib_neigh", std::size_t{n} * sizeof(Neigh), 64, socket));
    auto *x = static_cast<RxIndex *>(rte_zmalloc_socket("ipoib_rxindex", std::size_t{n} * sizeof(RxIndex), 64, socket));
    if (!s || !x) {
        rte_free(s);
        rte_free(x);
        return false;
    }
    for (std::uint32_t i = 0; i < n; ++i) {  // zeroed: empty, sequence 0
        new (&s[i]) Neigh{};
        new (&x[i]) RxIndex{};
    }
    slots_ = s;
    idx_ = x;
    nslots_ = n;
    max_ = max;
    count_ = indexed_ = 0;
    return true;
}

void NeighTable::regid(const std::uint8_t *m, const wire::Gid &before, const wire::Gid &after) noexcept {
    wire::Mac mac;
    std::memcpy(mac.raw.data(), m, 6);
    if (before != wire::Gid{})
        for (auto [it, end] = by_gid_.equal_range(before); it != end; ++it)
            if (it->second == mac) {
                by_gid_.erase(it);
                break;
            }
    if (after != wire::Gid{})
        by_gid_.emplace(after, mac);
}

void NeighTable::release() noexcept {
    rte_free(slots_);  // Neigh and RxIndex are trivially destructible
    rte_free(idx_);
    slots_ = nullptr;
    idx_ = nullptr;
    nslots_ = max_ = count_ = indexed_ = 0;
    by_gid_.clear();
}

const char *to_string(NeighState s) noexcept {
    switch (s) {
    case NeighState::empty: return "empty";
    case NeighState::incomplete: return "incomplete";
    case NeighState::resolved: return "resolved";
    case NeighState::failed: return "failed";
    }
    return "?";
}

Neigh *NeighTable::find(const wire::Mac &mac) noexcept {
    if (!nslots_)
        return nullptr;
    std::uint32_t i = mac_slot(mac.raw.data());
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        Neigh &n = slots_[i];
        if (n.state == NeighState::empty)
            return nullptr;
        if (std::memcmp(n.mac, mac.raw.data(), 6) == 0)
            return &n;
    }
    return nullptr;
}

Neigh *NeighTable::find_or_add(const wire::Mac &mac) noexcept {
    if (Neigh *n = find(mac))
        return n;
    if (count_ >= max_)
        return nullptr;  // neigh_max reached
    std::uint32_t i = mac_slot(mac.raw.data());
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        Neigh &n = slots_[i];
        if (n.state != NeighState::empty)
            continue;
        seq_write(n, [&](Neigh &e) {
            std::memcpy(e.mac, mac.raw.data(), 6);
            e.state = NeighState::incomplete;
            e.is_static = 0;
            e.hw_flags = 0;
            e.ah = nullptr;
            e.gid = wire::Gid{};
            e.retry_ms = 0;
            e.backoff_ms = 0;
            e.used_ms.store(0, std::memory_order_relaxed);
        });
        ++count_;
        return &n;
    }
    return nullptr;  // the neighbourhood of this hash is full
}

// Removing from linear probing without tombstones: re-insert the rest of the
// cluster. Readers may miss an entry for the duration (they then ask again).
void NeighTable::remove(Neigh *n) noexcept {
    std::uint32_t i = static_cast<std::uint32_t>(n - slots_);
    regid(n->mac, n->gid, wire::Gid{});
    seq_write(*n, [](Neigh &e) { e.state = NeighState::empty; });
    --count_;
    for (std::uint32_t j = next(i); slots_[j].state != NeighState::empty; j = next(j)) {
        Neigh &m = slots_[j];
        const std::uint32_t home = mac_slot(m.mac);
        // Does m's probe sequence from `home` pass through the hole at i before j?
        const bool move = (j > i) ? (home <= i || home > j) : (home <= i && home > j);  // (j < i: wrapped)
        if (!move)
            continue;
        seq_write(slots_[i], [&](Neigh &e) {
            std::memcpy(e.mac, m.mac, 6);
            e.state = m.state;
            e.sl = m.sl;
            e.is_static = m.is_static;
            e.hw_flags = m.hw_flags;
            e.dlid = m.dlid;
            e.qpn = m.qpn;
            e.gid = m.gid;
            e.ah = m.ah;
            e.retry_ms = m.retry_ms;
            e.backoff_ms = m.backoff_ms;
            e.used_ms.store(m.used_ms.load(std::memory_order_relaxed), std::memory_order_relaxed);
        });
        seq_write(m, [](Neigh &e) { e.state = NeighState::empty; });
        i = j;
    }
}

bool NeighTable::index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac) noexcept {
    if (!nslots_)
        return false;
    std::uint32_t i = index_slot(lid, qpn);
    RxIndex *free = nullptr;  // the first deleted or empty slot of the window
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        RxIndex &x = idx_[i];
        if (x.used == kIndexLive && x.lid == lid && x.qpn == qpn) {
            free = &x;  // known: updated in place
            break;
        }
        if (x.used != kIndexLive && !free)
            free = &x;
        if (x.used == kIndexEmpty)
            break;  // the key is not further on
    }
    if (!free)
        return false;
    if (free->used != kIndexLive) {
        if (indexed_ >= max_)
            return false;  // neigh_max senders
        ++indexed_;
    }
    seq_write(*free, [&](RxIndex &e) {
        e.used = kIndexLive;
        e.lid = lid;
        e.qpn = qpn;
        std::memcpy(e.mac, mac.raw.data(), 6);
    });
    return true;
}

void NeighTable::clear() noexcept {
    for (std::uint32_t i = 0; i < nslots_; ++i) {
        if (slots_[i].state != NeighState::empty)
            seq_write(slots_[i], [](Neigh &e) { e.state = NeighState::empty; });
        if (idx_[i].used != kIndexEmpty)
            seq_write(idx_[i], [](RxIndex &e) { e.used = kIndexEmpty; });
    }
    count_ = indexed_ = 0;
    by_gid_.clear();
}

void NeighTable::unindex(std::uint16_t lid, std::uint32_t qpn) noexcept {
    // A deleted entry stays a tombstone: lookups probe past it, inserts reuse it.
    if (!nslots_)
        return;
    std::uint32_t i = index_slot(lid, qpn);
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        RxIndex &x = idx_[i];
        if (x.used == kIndexEmpty)
            return;
        if (x.used == kIndexLive && x.lid == lid && x.qpn == qpn) {
            seq_write(x, [](RxIndex &e) { e.used = kIndexDeleted; });
            --indexed_;
            return;
        }
    }
}

} // namespace ipoib::pmd
