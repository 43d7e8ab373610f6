// SPDX-License-Identifier: BSD-3-Clause
// The memory-region cache (ipoib_mr.hpp): DPDK's memory registered with the
// in-process HCA (which registers any memory), lookups at and across range
// boundaries, memory events adding and removing ranges, the per-queue
// lookup's invalidation, and a provider that cannot register DPDK memory.
#include <rte_malloc.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <vector>

#include "../ctrl/fake_hca.hpp"
#include "eal_fixture.hpp"
#include "ipoib_mr.hpp"

using namespace ipoib;
using namespace ipoib::pmd;

namespace {

std::unique_ptr<hca::Context> inproc(const char *name) {
    auto o = hca::open_device("inproc", name, "");
    REQUIRE(o.ctx);
    return std::move(o.ctx);
}

std::uintptr_t addr_of(const void *p) { return reinterpret_cast<std::uintptr_t>(p); }

} // namespace

TEST_CASE("MR cache: DPDK's memory is registered at open, and found by address") {
    test::ensure_eal();
    auto ctx = inproc("mr-open");
    MrCache c;
    REQUIRE(c.open(ctx.get(), "test_mr_open"));
    CHECK(c.active());
    CHECK(c.regions() >= 1);
    CHECK(c.ranges() == c.regions());

    // Memory from DPDK's heap, and an mbuf's buffer: registered.
    void *buf = rte_malloc("mr_test", 8192, 64);
    REQUIRE(buf);
    MrRange r;
    REQUIRE(c.find(addr_of(buf), 8192, &r));
    CHECK(r.lkey != 0);
    CHECK(r.start <= addr_of(buf));
    CHECK(addr_of(buf) + 8192 <= r.end);
    rte_mempool *mp = test::pool("mr_pool", 64);
    rte_mbuf *m = rte_pktmbuf_alloc(mp);
    REQUIRE(m);
    MrRange rm;
    CHECK(c.find(addr_of(m->buf_addr), m->buf_len, &rm));
    rte_pktmbuf_free(m);

    // Memory outside DPDK (the process heap): not.
    std::vector<std::uint8_t> heap(4096);
    CHECK_FALSE(c.find(addr_of(heap.data()), 16, &r));
    rte_free(buf);

    c.close();
    CHECK_FALSE(c.active());
    CHECK(c.regions() == 0);
    CHECK_FALSE(c.find(addr_of(buf), 1, &r));
}

TEST_CASE("MR cache: memory events add and remove ranges; lookups respect their boundaries") {
    test::ensure_eal();
    auto ctx = inproc("mr-events");
    MrCache c;
    REQUIRE(c.open(ctx.get(), "test_mr_events"));
    const std::size_t regions0 = c.regions();

    // A range DPDK would have allocated later (here: memory of our own, 64 KiB).
    constexpr std::size_t kLen = 64 * 1024, kQuarter = kLen / 4;
    std::vector<std::uint8_t> mem(kLen + 2 * 4096);
    const std::uintptr_t a = (addr_of(mem.data()) + 4095) & ~std::uintptr_t{4095};
    MrRange r;
    REQUIRE_FALSE(c.find(a, 1, &r));
    const std::uint64_t gen0 = c.generation();
    c.on_alloc(reinterpret_cast<void *>(a), kLen);
    CHECK(c.generation() != gen0);
    CHECK(c.regions() == regions0 + 1);
    REQUIRE(c.find(a, 1, &r));
    const std::uint32_t lkey = r.lkey;
    CHECK(lkey != 0);
    CHECK(r.start == a);
    CHECK(r.end == a + kLen);
    CHECK(c.find(a + kLen - 1, 1, &r));     // the last byte
    CHECK(c.find(a, kLen, &r));             // the whole range
    CHECK_FALSE(c.find(a + kLen - 1, 2, &r));  // one byte past its end
    CHECK_FALSE(c.find(a + kLen, 1, &r));
    CHECK_FALSE(c.find(a - 1, 2, &r));        // from one byte before it

    // The same range announced again (the walk at open and an event may overlap): no second MR.
    c.on_alloc(reinterpret_cast<void *>(a), kLen);
    CHECK(c.regions() == regions0 + 1);

    // A queue's lookup: a hit is kept; a change of the table empties it.
    MrLookup q;
    CHECK(q.lkey(&c, a + 100, 100) == lkey);
    CHECK(q.lkey(&c, a + 200, 100) == lkey);  // from its own slots
    CHECK(q.lkey(nullptr, a + 200, 100) == 0);  // no cache: unregistered

    // The second quarter freed: it leaves the table; the rest keeps the MR and its lkey.
    c.on_free(reinterpret_cast<void *>(a + kQuarter), kQuarter);
    CHECK(c.regions() == regions0 + 1);
    CHECK(c.ranges() == c.regions() + 1);  // the MR's range is two pieces now
    CHECK(q.lkey(&c, a + kQuarter, 16) == 0);  // the queue's slot was dropped with the change
    CHECK(q.lkey(&c, a + 100, 100) == lkey);
    CHECK(c.find(a + kQuarter - 16, 16, &r));
    CHECK_FALSE(c.find(a + kQuarter - 16, 17, &r));
    CHECK_FALSE(c.find(a + 2 * kQuarter - 1, 1, &r));
    REQUIRE(c.find(a + 2 * kQuarter, 2 * kQuarter, &r));
    CHECK(r.lkey == lkey);

    // Freed again, from before its start to past its end: the rest goes, and the MR with it.
    c.on_free(reinterpret_cast<void *>(a - 4096), kLen + 8192);
    CHECK(c.regions() == regions0);
    CHECK_FALSE(c.find(a, 1, &r));
    CHECK_FALSE(c.find(a + 2 * kQuarter, 1, &r));
    CHECK(q.lkey(&c, a + 100, 100) == 0);

    // Memory freed that was never registered: nothing changes.
    const std::uint64_t gen1 = c.generation();
    c.on_free(reinterpret_cast<void *>(a), kLen);
    CHECK(c.generation() == gen1);
}

TEST_CASE("MR cache: a provider that cannot register DPDK's memory leaves it inactive and empty") {
    test::ensure_eal();
    ctrl::test::FakeHca fake;  // reg_mr answers nullptr, as the software HCA does for memory not its own
    MrCache c;
    CHECK_FALSE(c.open(&fake, "test_mr_fake"));
    CHECK_FALSE(c.active());
    CHECK(c.regions() == 0);
    CHECK(c.failures() == 1);  // tried once, then gave up
    void *buf = rte_malloc("mr_test_fake", 256, 64);
    REQUIRE(buf);
    MrRange r;
    CHECK_FALSE(c.find(addr_of(buf), 1, &r));
    MrLookup q;
    CHECK(q.lkey(&c, addr_of(buf), 1) == 0);
    c.on_alloc(buf, 256);  // events change nothing either
    CHECK(c.regions() == 0);
    rte_free(buf);
}
