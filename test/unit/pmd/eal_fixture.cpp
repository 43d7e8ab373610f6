// SPDX-License-Identifier: BSD-3-Clause
#include "eal_fixture.hpp"

#include <rte_eal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

namespace ipoib::test {

void ensure_eal() {
    // 512 MB: several ports' neighbour tables at once (10.5 MiB each at the
    // default neigh_max) besides the mbuf pools; --no-huge memory is only
    // touched where it is used.
    static int rc = [] {
        static std::string prefix = "--file-prefix=ipoib-unit-" + std::to_string(getpid());
        static const char *argv[] = {"test-pmd-unit", "--no-huge", "-m", "512",  "--no-pci", "--no-shconf",
                                     "--no-telemetry", prefix.c_str(), "--log-level=lib.eal:error", nullptr};
        return rte_eal_init(static_cast<int>(std::size(argv)) - 1, const_cast<char **>(argv));
    }();
    REQUIRE(rc >= 0);
}

rte_mempool *pool(const char *name, unsigned n, std::uint16_t room) {
    ensure_eal();
    rte_mempool *mp = rte_mempool_lookup(name);
    if (!mp)
        mp = rte_pktmbuf_pool_create(name, n, 0, 0, static_cast<std::uint16_t>(room + RTE_PKTMBUF_HEADROOM),
                                     SOCKET_ID_ANY);
    REQUIRE(mp != nullptr);
    return mp;
}

std::vector<std::uint8_t> bytes_of(const rte_mbuf *m) {
    std::vector<std::uint8_t> out;
    for (const rte_mbuf *s = m; s; s = s->next) {
        const auto *p = rte_pktmbuf_mtod(s, const std::uint8_t *);
        out.insert(out.end(), p, p + s->data_len);
    }
    return out;
}

rte_mbuf *mbuf_with(rte_mempool *mp, const std::vector<std::uint8_t> &data) {
    rte_mbuf *m = rte_pktmbuf_alloc(mp);
    REQUIRE(m != nullptr);
    char *p = rte_pktmbuf_append(m, static_cast<std::uint16_t>(data.size()));
    REQUIRE(p != nullptr);
    std::memcpy(p, data.data(), data.size());
    return m;
}

} // namespace ipoib::test
