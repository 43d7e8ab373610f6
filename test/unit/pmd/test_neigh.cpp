// SPDX-License-Identifier: BSD-3-Clause
// The fast path's address tables: neighbours, receive index, groups.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>

#include "eal_fixture.hpp"
#include "ipoib_neigh.hpp"

using namespace ipoib;
using namespace ipoib::pmd;

namespace {

wire::Mac mac(std::uint32_t n) {
    return wire::Mac{{0x02, 0x00, static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
                      static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)}};
}

void put(NeighTable &t, const wire::Mac &m, std::uint16_t dlid, std::uint32_t qpn) {
    Neigh *n = t.find_or_add(m);
    REQUIRE(n);
    t.write(n, [&](Neigh &e) {
        e.state = NeighState::resolved;
        e.dlid = dlid;
        e.qpn = qpn;
    });
}

// MACs whose home slot in t is the same as mac(0)'s.
std::vector<wire::Mac> colliding(const NeighTable &t, std::size_t count) {
    std::vector<wire::Mac> out;
    const std::uint32_t home = t.mac_slot(mac(0).raw.data());
    for (std::uint32_t i = 0; out.size() < count; ++i)
        if (t.mac_slot(mac(i).raw.data()) == home)
            out.push_back(mac(i));
    return out;
}

// A table with room for `max` neighbours (rte_zmalloc: the EAL is up).
std::unique_ptr<NeighTable> table(std::uint32_t max = 1024) {
    test::ensure_eal();
    auto t = std::make_unique<NeighTable>();
    REQUIRE(t->init(max, SOCKET_ID_ANY));
    return t;
}

} // namespace

TEST_CASE("neighbour table: insert, look up, delete") {
    auto t = table();
    NeighSnapshot s{};
    CHECK_FALSE(t->lookup(mac(1), &s, 0));
    put(*t, mac(1), 7, 0x123);
    REQUIRE(t->lookup(mac(1), &s, 5000));
    CHECK(s.state == NeighState::resolved);
    CHECK(s.dlid == 7);
    CHECK(s.qpn == 0x123);
    CHECK(t->find(mac(1))->used_ms.load() == 5000);  // the fast path stamps its use
    CHECK(t->find_or_add(mac(1)) == t->find(mac(1)));  // no duplicate
    t->remove(t->find(mac(1)));
    CHECK_FALSE(t->lookup(mac(1), &s, 0));
    CHECK(t->find(mac(1)) == nullptr);
}

TEST_CASE("neighbour table: deleting from a collision cluster keeps the rest reachable") {
    auto t = table();
    const auto macs = colliding(*t, 6);
    for (std::size_t i = 0; i < macs.size(); ++i)
        put(*t, macs[i], static_cast<std::uint16_t>(i + 1), static_cast<std::uint32_t>(i + 100));
    t->remove(t->find(macs[0]));
    t->remove(t->find(macs[3]));
    NeighSnapshot s{};
    for (std::size_t i = 0; i < macs.size(); ++i) {
        INFO("neighbour " << i);
        const bool gone = i == 0 || i == 3;
        REQUIRE(t->lookup(macs[i], &s, 0) == !gone);
        if (!gone)
            CHECK(s.qpn == i + 100);
    }
    // The freed slots are used again.
    put(*t, macs[0], 9, 900);
    REQUIRE(t->lookup(macs[0], &s, 0));
    CHECK(s.qpn == 900);
}

TEST_CASE("neighbour table: a full probe window refuses new neighbours") {
    auto t = table();
    const auto macs = colliding(*t, kNeighProbe + 1);
    for (std::uint32_t i = 0; i < kNeighProbe; ++i)
        put(*t, macs[i], 1, i);
    CHECK(t->find_or_add(macs[kNeighProbe]) == nullptr);
    t->remove(t->find(macs[2]));
    CHECK(t->find_or_add(macs[kNeighProbe]) != nullptr);
}

TEST_CASE("neighbour table: 100,000 neighbours inserted, found, half removed, the rest still found") {
    constexpr std::uint32_t kMax = 100000;
    auto t = table(kMax);
    CHECK(t->capacity() == kMax);
    CHECK(t->slots() == kMax * kNeighSlotsPerEntry);
    // Spread over the MAC space as GUID-derived MACs of a big fabric are (and some sequential).
    auto m = [](std::uint32_t i) { return mac(i < kMax / 2 ? i : i * 2654435761u); };
    for (std::uint32_t i = 0; i < kMax; ++i) {
        INFO("neighbour " << i);
        put(*t, m(i), static_cast<std::uint16_t>(i), i);
    }
    CHECK(t->size() == kMax);
    NeighSnapshot s{};
    std::uint32_t found = 0;
    for (std::uint32_t i = 0; i < kMax; ++i)
        found += t->lookup(m(i), &s, 0) && s.qpn == i && s.dlid == static_cast<std::uint16_t>(i);
    CHECK(found == kMax);
    CHECK_FALSE(t->lookup(mac(0xfeedbeef), &s, 0));
    for (std::uint32_t i = 0; i < kMax; i += 2)
        t->remove(t->find(m(i)));
    CHECK(t->size() == kMax / 2);
    std::uint32_t kept = 0, gone = 0;
    for (std::uint32_t i = 0; i < kMax; ++i) {
        const bool hit = t->lookup(m(i), &s, 0);
        kept += (i % 2) && hit && s.qpn == i;
        gone += !(i % 2) && !hit;
    }
    CHECK(kept == kMax / 2);
    CHECK(gone == kMax / 2);
    for (std::uint32_t i = 0; i < kMax; i += 2)  // the removed come back
        put(*t, m(i), 1, i + 1);
    CHECK(t->size() == kMax);
    t->clear();
    CHECK(t->size() == 0);
    CHECK_FALSE(t->lookup(m(1), &s, 0));
}

TEST_CASE("neighbour table: beyond neigh_max a new neighbour is refused, known ones are still found") {
    constexpr std::uint32_t kMax = 1000;
    auto t = table(kMax);
    for (std::uint32_t i = 0; i < kMax; ++i)
        put(*t, mac(i), 1, i);
    CHECK(t->find_or_add(mac(kMax)) == nullptr);  // full: the caller counts it (xstat neigh_table_full)
    CHECK(t->find_or_add(mac(7)) == t->find(mac(7)));  // a known one is still found, not refused
    NeighSnapshot s{};
    CHECK_FALSE(t->lookup(mac(kMax), &s, 0));
    t->remove(t->find(mac(3)));
    REQUIRE(t->find_or_add(mac(kMax)) != nullptr);  // room again
    CHECK(t->size() == kMax);
}

TEST_CASE("receive index: 100,000 senders, and no more than neigh_max") {
    constexpr std::uint32_t kMax = 100000;
    auto t = table(kMax);
    auto lid = [](std::uint32_t i) { return static_cast<std::uint16_t>(1 + i % 48000); };
    for (std::uint32_t i = 0; i < kMax; ++i) {
        INFO("sender " << i);
        REQUIRE(t->index(lid(i), 0x100 + i, mac(i)));
    }
    CHECK_FALSE(t->index(1, 0xffffff, mac(kMax)));  // full
    wire::Mac out{};
    std::uint32_t found = 0;
    for (std::uint32_t i = 0; i < kMax; ++i)
        found += t->mac_for(lid(i), 0x100 + i, &out) && out == mac(i);
    CHECK(found == kMax);
    t->unindex(lid(5), 0x105);
    CHECK(t->index(1, 0xffffff, mac(kMax)));  // room again
}

TEST_CASE("neighbour table: the neighbours of a GID (a path answer's) among 100,000, as GIDs change and go") {
    constexpr std::uint32_t kMax = 100000;
    auto t = table(kMax);
    auto gid = [](std::uint32_t i) {
        wire::Gid g{};
        g.raw[0] = 0xfe;
        g.raw[1] = 0x80;
        for (int k = 0; k < 4; ++k)
            g.raw[12 + k] = static_cast<std::uint8_t>(i >> (8 * (3 - k)));
        return g;
    };
    for (std::uint32_t i = 0; i < kMax; ++i) {
        Neigh *n = t->find_or_add(mac(i));
        REQUIRE(n);
        t->write(n, [&](Neigh &e) { e.gid = gid(i / 2); });  // two MACs per GID (e.g. a GUID MAC and a LID/QPN one)
    }
    auto macs_of = [&](std::uint32_t g) {
        std::vector<wire::Mac> out;
        t->for_each_with_gid(gid(g), [&](Neigh &n) {
            wire::Mac m;
            std::memcpy(m.raw.data(), n.mac, 6);
            out.push_back(m);
        });
        std::sort(out.begin(), out.end(), [](const wire::Mac &a, const wire::Mac &b) { return a.raw < b.raw; });
        return out;
    };
    CHECK(macs_of(777) == std::vector<wire::Mac>{mac(1554), mac(1555)});
    t->remove(t->find(mac(1554)));  // gone: not found by its GID
    CHECK(macs_of(777) == std::vector<wire::Mac>{mac(1555)});
    t->write(t->find(mac(1555)), [&](Neigh &e) { e.gid = gid(kMax); });  // moved to another GID
    CHECK(macs_of(777).empty());
    CHECK(macs_of(kMax) == std::vector<wire::Mac>{mac(1555)});
    put(*t, mac(1554), 1, 1);  // back, without a GID yet
    CHECK(macs_of(777).empty());
    t->clear();
    CHECK(macs_of(kMax).empty());
}

TEST_CASE("neighbour table: not initialised, it holds and finds nothing") {
    NeighTable t;
    NeighSnapshot s{};
    wire::Mac out{};
    CHECK_FALSE(t.lookup(mac(1), &s, 0));
    CHECK(t.find_or_add(mac(1)) == nullptr);
    CHECK_FALSE(t.index(1, 2, mac(1)));
    CHECK_FALSE(t.mac_for(1, 2, &out));
}

TEST_CASE("receive index: sender to MAC, unindexed, its slot reused") {
    auto t = table();
    wire::Mac out{};
    CHECK_FALSE(t->mac_for(5, 0x10, &out));
    t->index(5, 0x10, mac(1));
    t->index(6, 0x10, mac(2));
    REQUIRE(t->mac_for(5, 0x10, &out));
    CHECK(out == mac(1));
    REQUIRE(t->mac_for(6, 0x10, &out));
    CHECK(out == mac(2));
    t->index(5, 0x10, mac(3));  // re-learned: updated in place
    REQUIRE(t->mac_for(5, 0x10, &out));
    CHECK(out == mac(3));
    t->unindex(5, 0x10);
    CHECK_FALSE(t->mac_for(5, 0x10, &out));
    REQUIRE(t->mac_for(6, 0x10, &out));  // its neighbour in the table is untouched
    t->index(5, 0x10, mac(4));           // the sender comes back
    REQUIRE(t->mac_for(5, 0x10, &out));
    CHECK(out == mac(4));
}

TEST_CASE("receive index: senders that come and go never fill it") {
    auto t = table();
    wire::Mac out{};
    for (std::uint32_t i = 0; i < 20 * t->slots(); ++i) {
        const auto lid = static_cast<std::uint16_t>(1 + i % 4000);
        INFO("sender " << i);
        REQUIRE(t->index(lid, i, mac(i)));
        REQUIRE(t->mac_for(lid, i, &out));
        CHECK(out == mac(i));
        t->unindex(lid, i);
        REQUIRE_FALSE(t->mac_for(lid, i, &out));
    }
}

TEST_CASE("receive index: a deleted entry does not hide the ones behind it, nor duplicate them") {
    auto t = table();
    // Three senders in one probe window.
    std::vector<std::pair<std::uint16_t, std::uint32_t>> keys;
    const std::uint32_t home = t->index_slot(1, 0);
    for (std::uint32_t q = 0; keys.size() < 3; ++q)
        if (t->index_slot(1, q) == home)
            keys.emplace_back(1, q);
    for (std::size_t k = 0; k < keys.size(); ++k)
        REQUIRE(t->index(keys[k].first, keys[k].second, mac(static_cast<std::uint32_t>(k))));
    t->unindex(keys[0].first, keys[0].second);
    wire::Mac out{};
    REQUIRE(t->mac_for(keys[2].first, keys[2].second, &out));  // found past the tombstone
    CHECK(out == mac(2));
    REQUIRE(t->index(keys[2].first, keys[2].second, mac(9)));  // re-learned: updated, not added again
    t->unindex(keys[2].first, keys[2].second);
    CHECK_FALSE(t->mac_for(keys[2].first, keys[2].second, &out));  // no stale copy left behind
}

TEST_CASE("neighbour table: readers never see half an entry while the control thread writes") {
    auto t = table();
    put(*t, mac(1), 0, 0);  // already what the invariant below asks (a reader may run before any write)
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> reads{0}, torn{0};
    std::thread reader([&] {
        NeighSnapshot s{};
        while (!stop.load(std::memory_order_relaxed)) {
            if (!t->lookup(mac(1), &s, 0))
                continue;  // a busy entry: the fast path asks again later
            ++reads;
            // The writer keeps qpn == dlid * 3 and every GID byte == dlid's low byte.
            bool ok = s.qpn == std::uint32_t{s.dlid} * 3;
            for (auto b : s.gid.raw)
                ok = ok && b == static_cast<std::uint8_t>(s.dlid);
            torn += !ok;
        }
    });
    Neigh *n = t->find(mac(1));
    for (std::uint32_t i = 0; i < 200000; ++i) {
        const auto v = static_cast<std::uint16_t>(i);
        t->write(n, [&](Neigh &e) {
            e.dlid = v;
            e.gid.raw.fill(static_cast<std::uint8_t>(v));
            e.qpn = std::uint32_t{v} * 3;
        });
    }
    // Let the reader see the final state too.
    while (reads.load() < 1000)
        std::this_thread::yield();
    stop = true;
    reader.join();
    CHECK(reads.load() > 0);
    CHECK(torn.load() == 0);
}

TEST_CASE("group table: add, find, remove, full") {
    auto g = std::make_unique<GroupTable>();
    wire::Gid a{}, b{};
    a.raw[0] = b.raw[0] = 0xff;
    a.raw[15] = 1;
    b.raw[15] = 2;
    auto *ah = reinterpret_cast<hca::Ah *>(0x1000);
    CHECK(g->find(a) == nullptr);
    REQUIRE(g->add(a, 0xc001, ah));
    CHECK(g->find(a) == ah);
    CHECK(g->find(b) == nullptr);
    g->remove(a);
    CHECK(g->find(a) == nullptr);
    for (std::uint32_t i = 0; i < kMcastSlots; ++i) {
        wire::Gid x = a;
        x.raw[14] = static_cast<std::uint8_t>(i);
        REQUIRE(g->add(x, 0xc000, ah));
    }
    CHECK_FALSE(g->add(b, 0xc000, ah));
}
