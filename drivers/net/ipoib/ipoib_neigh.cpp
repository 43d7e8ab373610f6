// SPDX-License-Identifier: BSD-3-Clause
// Neighbour table and receive index, control-thread side: the only writer
// (see ipoib_neigh.hpp for the sequence-lock protocol).
#include "ipoib_neigh.hpp"

namespace ipoib::pmd {

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
    std::uint32_t i = mac_slot(mac.raw.data());
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        Neigh &n = slots_[i];
        if (n.state != NeighState::empty)
            continue;
        seq_write(n, [&](Neigh &e) {
            std::memcpy(e.mac, mac.raw.data(), 6);
            e.state = NeighState::incomplete;
            e.is_static = 0;
            e.ah = nullptr;
            e.gid = wire::Gid{};
            e.created_ms = 0;
            e.retry_ms = 0;
            e.backoff_ms = 0;
            e.used_ms.store(0, std::memory_order_relaxed);
        });
        return &n;
    }
    return nullptr;  // the neighbourhood of this hash is full
}

// Removing from linear probing without tombstones: re-insert the rest of the
// cluster. Readers may miss an entry for the duration (they then ask again).
void NeighTable::remove(Neigh *n) noexcept {
    std::uint32_t i = static_cast<std::uint32_t>(n - slots_);
    seq_write(*n, [](Neigh &e) { e.state = NeighState::empty; });
    for (std::uint32_t j = next(i); slots_[j].state != NeighState::empty; j = next(j)) {
        Neigh &m = slots_[j];
        const std::uint32_t home = mac_slot(m.mac);
        // Does m's probe sequence from `home` pass through the hole at i before j?
        const bool move = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
        if (!move)
            continue;
        seq_write(slots_[i], [&](Neigh &e) {
            std::memcpy(e.mac, m.mac, 6);
            e.state = m.state;
            e.sl = m.sl;
            e.is_static = m.is_static;
            e.dlid = m.dlid;
            e.qpn = m.qpn;
            e.gid = m.gid;
            e.ah = m.ah;
            e.created_ms = m.created_ms;
            e.retry_ms = m.retry_ms;
            e.backoff_ms = m.backoff_ms;
            e.used_ms.store(m.used_ms.load(std::memory_order_relaxed), std::memory_order_relaxed);
        });
        seq_write(m, [](Neigh &e) { e.state = NeighState::empty; });
        i = j;
    }
}

bool NeighTable::index(std::uint16_t lid, std::uint32_t qpn, const wire::Mac &mac) noexcept {
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
    seq_write(*free, [&](RxIndex &e) {
        e.used = kIndexLive;
        e.lid = lid;
        e.qpn = qpn;
        std::memcpy(e.mac, mac.raw.data(), 6);
    });
    return true;
}

void NeighTable::clear() noexcept {
    for (Neigh &n : slots_)
        if (n.state != NeighState::empty)
            seq_write(n, [](Neigh &e) { e.state = NeighState::empty; });
    for (RxIndex &x : idx_)
        if (x.used != kIndexEmpty)
            seq_write(x, [](RxIndex &e) { e.used = kIndexEmpty; });
}

void NeighTable::unindex(std::uint16_t lid, std::uint32_t qpn) noexcept {
    // A deleted entry stays a tombstone: lookups probe past it, inserts reuse it.
    std::uint32_t i = index_slot(lid, qpn);
    for (std::uint32_t probe = 0; probe < kNeighProbe; ++probe, i = next(i)) {
        RxIndex &x = idx_[i];
        if (x.used == kIndexEmpty)
            return;
        if (x.used == kIndexLive && x.lid == lid && x.qpn == qpn) {
            seq_write(x, [](RxIndex &e) { e.used = kIndexDeleted; });
            return;
        }
    }
}

} // namespace ipoib::pmd
