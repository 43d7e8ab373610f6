// SPDX-License-Identifier: BSD-3-Clause
// A minimal in-memory hca::Context for control-plane unit tests: ports whose
// attributes, GIDs and P_Key tables the test sets, and a port event queue
// the test fills. Everything the control plane does not use (memory, CQs,
// QPs, AHs, counters) answers -ENOSYS / nullptr.
#pragma once

#include <cerrno>
#include <deque>
#include <string>
#include <vector>

#include "ipoib/hca/hca.hpp"

namespace ipoib::ctrl::test {

class FakeHca final : public hca::Context {
  public:
    struct Port {
        hca::PortAttr attr;
        std::vector<hca::Gid> gids;          // index -> GID
        std::vector<std::uint16_t> pkeys;    // index -> P_Key (0: empty slot)
    };

    explicit FakeHca(int nports = 1) {
        for (int p = 1; p <= nports; ++p) {
            Port port;
            port.attr.state = hca::PortState::active;
            port.attr.phys_state = 5;
            port.attr.lid = static_cast<std::uint16_t>(p + 1);
            port.attr.sm_lid = 1;
            port.attr.max_mtu = hca::Mtu::mtu2048;
            port.attr.active_mtu = hca::Mtu::mtu2048;
            port.attr.subnet_prefix = 0xfe80000000000000ull;
            port.attr.port_guid = 0x0002c90300000100ull + static_cast<std::uint64_t>(p);
            port.attr.port_num = static_cast<std::uint32_t>(p);
            hca::Gid g{};
            for (int i = 0; i < 8; ++i) {
                g.raw[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(port.attr.subnet_prefix >> (56 - 8 * i));
                g.raw[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(port.attr.port_guid >> (56 - 8 * i));
            }
            port.gids = {g};
            port.pkeys = {0xffff, 0x8001};
            ports.push_back(port);
        }
        sync();
    }

    // Keep the table lengths in PortAttr in step with the vectors.
    void sync() {
        for (auto &p : ports) {
            p.attr.pkey_tbl_len = static_cast<std::uint16_t>(p.pkeys.size());
            p.attr.gid_tbl_len = static_cast<std::uint16_t>(p.gids.size());
        }
    }
    Port &port(std::uint8_t n) { return ports.at(n - 1u); }
    void event(hca::EventType t, std::uint8_t port_num = 1) { events.push_back({t, port_num}); }

    std::vector<Port> ports;
    std::deque<hca::PortEvent> events;
    int port_queries = 0;

    const std::string &name() const noexcept override { return name_; }
    std::uint8_t num_ports() const noexcept override { return static_cast<std::uint8_t>(ports.size()); }
    int query_port(std::uint8_t p, hca::PortAttr *out) noexcept override {
        if (p < 1 || p > ports.size())
            return -EINVAL;
        ++port_queries;
        *out = ports[p - 1u].attr;
        return 0;
    }
    int query_gid(std::uint8_t p, int index, hca::Gid *out) noexcept override {
        if (p < 1 || p > ports.size() || index < 0 || static_cast<std::size_t>(index) >= ports[p - 1u].gids.size())
            return -EINVAL;
        *out = ports[p - 1u].gids[static_cast<std::size_t>(index)];
        return 0;
    }
    int query_pkey(std::uint8_t p, int index, std::uint16_t *out) noexcept override {
        if (p < 1 || p > ports.size() || index < 0 || static_cast<std::size_t>(index) >= ports[p - 1u].pkeys.size())
            return -EINVAL;
        *out = ports[p - 1u].pkeys[static_cast<std::size_t>(index)];
        return 0;
    }
    int get_port_event(hca::PortEvent *ev) noexcept override {
        if (events.empty())
            return 0;
        *ev = events.front();
        events.pop_front();
        return 1;
    }

    void *alloc_dma(std::size_t) noexcept override { return nullptr; }
    void free_dma(void *) noexcept override {}
    std::unique_ptr<hca::Mr> reg_mr(void *, std::size_t) noexcept override { return nullptr; }
    std::unique_ptr<hca::Cq> create_cq(int) noexcept override { return nullptr; }
    std::unique_ptr<hca::Qp> create_ud_qp(const hca::QpInit &) noexcept override { return nullptr; }
    std::unique_ptr<hca::Ah> create_ah(const hca::AhAttr &) noexcept override { return nullptr; }
    int port_counters(std::uint8_t, hca::PortCounters *) noexcept override { return -ENOSYS; }
    const std::string &last_error() const noexcept override { return error_; }

  private:
    std::string name_ = "fake0";
    std::string error_ = "not implemented by the fake HCA";
};

} // namespace ipoib::ctrl::test
