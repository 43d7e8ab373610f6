// SPDX-License-Identifier: BSD-3-Clause
// CM MADs between the software HCA's ports (gsi.hpp). A mailbox is a bounded
// queue of sequence-stamped cells in shared memory: a put claims the cell
// of its index by CAS on `put` once the cell is empty for that lap, writes
// the MAD and marks it full; a take claims by CAS on `take` once it is full
// and marks it empty for the next lap. Any process may put; the port's CM
// takes. Every value read from the mailbox is bounded (tries, lengths): a
// peer that writes garbage there costs MADs, never a crash or a hang.
#include "gsi.hpp"

#include <cerrno>
#include <cstring>

#include "ipoib/hca/ib_packet.hpp"
#include "soft_context.hpp"
#include "soft_testing.hpp"

namespace ipoib::hca::soft {

namespace {

constexpr std::uint32_t kTries = 2 * kGsiMailboxDepth;  // CASes lost before giving up (busy or garbage)
constexpr std::uint32_t kGsiQpn = 1;

class GsiTransport final : public cm::MadTransport {
  public:
    GsiTransport(Fabric &f, std::uint32_t port_idx, Capture *cap, bool owner)
        : fabric_(f), port_idx_(port_idx), capture_(cap), owner_(owner) {}
    ~GsiTransport() override {
        if (!owner_)
            return;
        std::uint32_t me = fabric_.ident();  // the mailbox is free for the next CM of this port
        fabric_.shm()->gsi[port_idx_].owner.compare_exchange_strong(me, 0, std::memory_order_acq_rel);
    }

    int send(const cm::MadAddr &to, const std::uint8_t *mad) noexcept override {
        FabricShm *shm = fabric_.shm();
        const PortEntry &me = shm->ports[port_idx_];
        const auto active = static_cast<std::uint8_t>(PortState::active);
        if (me.state.load(std::memory_order_acquire) != active)
            return -ENETDOWN;
        // The destination port: by LID, or by GID when the address is global
        // or has no LID (as the CM engine addresses a global path).
        const bool by_gid = to.global || to.lid == 0;
        std::uint32_t pi = kMaxPorts;
        for (std::uint32_t i = 0; i < kMaxPorts; ++i) {
            const PortEntry &p = shm->ports[i];
            if (!p.guid.load(std::memory_order_acquire))
                continue;
            if (by_gid ? my_gid(p) == to.gid : p.lid.load(std::memory_order_relaxed) == to.lid) {
                pi = i;
                break;
            }
        }
        if (pi == kMaxPorts || shm->ports[pi].state.load(std::memory_order_acquire) != active)
            return -EHOSTUNREACH;  // lost in the fabric, as a MAD to a dead port is
        GsiMailbox &mb = shm->gsi[pi];
        std::uint64_t pos = mb.put.load(std::memory_order_acquire);
        for (std::uint32_t t = 0; t < kTries; ++t) {
            GsiCell &c = mb.cells[pos % kGsiMailboxDepth];
            const std::uint64_t lap = pos / kGsiMailboxDepth;
            const std::uint64_t seq = c.seq.load(std::memory_order_acquire);
            if (seq == 2 * lap) {
                if (!mb.put.compare_exchange_strong(pos, pos + 1, std::memory_order_acq_rel))
                    continue;  // pos now holds the new value
                const std::uint16_t my_lid = me.lid.load(std::memory_order_relaxed);
                c.slid = my_lid;
                c.pkey_index = to.pkey_index;
                c.src_qp = kGsiQpn;
                c.sl = to.sl;
                c.global = to.global;
                const Gid sgid = my_gid(me);
                std::memcpy(c.sgid, sgid.raw.data(), 16);
                std::memcpy(c.mad, mad, kGsiMadLen);
                c.seq.store(2 * lap + 1, std::memory_order_release);
                if (capture_)
                    record(me, to, sgid, mad);
                return 0;
            }
            if (seq < 2 * lap) {
                // Not yet taken in the lap before: the mailbox is full.
                mb.drops.fetch_add(1, std::memory_order_relaxed);
                return -ENOBUFS;
            }
            pos = mb.put.load(std::memory_order_acquire);  // another put took it
        }
        mb.drops.fetch_add(1, std::memory_order_relaxed);
        return -EBUSY;
    }

    int recv(std::uint8_t *mad, cm::MadAddr *from) noexcept override {
        GsiMailbox &mb = fabric_.shm()->gsi[port_idx_];
        std::uint64_t pos = mb.take.load(std::memory_order_acquire);
        for (std::uint32_t t = 0; t < kTries; ++t) {
            GsiCell &c = mb.cells[pos % kGsiMailboxDepth];
            const std::uint64_t lap = pos / kGsiMailboxDepth;
            const std::uint64_t seq = c.seq.load(std::memory_order_acquire);
            if (seq == 2 * lap + 1) {
                if (!mb.take.compare_exchange_strong(pos, pos + 1, std::memory_order_acq_rel))
                    continue;
                cm::MadAddr a;
                a.lid = c.slid;
                a.qpn = c.src_qp & 0xffffff;
                a.pkey_index = static_cast<std::uint16_t>(c.pkey_index < kMaxPkeys ? c.pkey_index : 0);
                a.sl = c.sl & 0xf;
                a.global = c.global != 0;
                std::memcpy(a.gid.raw.data(), c.sgid, 16);
                std::memcpy(mad, c.mad, kGsiMadLen);
                c.seq.store(2 * (lap + 1), std::memory_order_release);
                *from = a;
                return static_cast<int>(kGsiMadLen);  // a cell always holds a whole MAD
            }
            if (seq == 2 * lap)
                return 0;  // empty
            pos = mb.take.load(std::memory_order_acquire);
        }
        return 0;
    }

  private:
    static Gid my_gid(const PortEntry &p) noexcept {
        Gid g{};
        const std::uint64_t prefix = p.subnet_prefix.load(std::memory_order_relaxed);
        const std::uint64_t guid = p.guid.load(std::memory_order_relaxed);
        for (int i = 0; i < 8; ++i) {
            g.raw[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(prefix >> (56 - 8 * i));
            g.raw[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(guid >> (56 - 8 * i));
        }
        return g;
    }

    // As a UD SEND ONLY from QP1 to QP1 with the GSI Q_Key: tshark's
    // InfiniBand dissector then decodes the MAD (CM class 0x07).
    void record(const PortEntry &me, const cm::MadAddr &to, const Gid &sgid, const std::uint8_t *mad) noexcept {
        UdPacketMeta m;
        m.sl = to.sl;
        m.dlid = to.lid;
        m.slid = me.lid.load(std::memory_order_relaxed);
        const std::uint16_t pk = to.pkey_index < kMaxPkeys ? me.pkeys[to.pkey_index].load(std::memory_order_relaxed) : 0;
        m.pkey = pk ? pk : 0xffff;
        m.dest_qp = kGsiQpn;
        m.src_qp = kGsiQpn;
        m.qkey = cm::kGsiQkey;
        m.psn = psn_;
        psn_ = (psn_ + 1) & 0xffffff;
        m.grh = to.global;
        m.sgid = sgid;
        m.dgid = to.gid;
        m.hop_limit = 0xff;
        const Sge sg{reinterpret_cast<std::uintptr_t>(mad), static_cast<std::uint32_t>(kGsiMadLen), 0};
        capture_->record(m, &sg, 1, kGsiMadLen);
    }

    Fabric &fabric_;
    std::uint32_t port_idx_;
    Capture *capture_;
    bool owner_;  // this transport holds the mailbox (open_cm's)
    std::uint32_t psn_ = 0;
};

} // namespace

std::unique_ptr<cm::MadTransport> make_gsi_transport(Fabric &fabric, std::uint32_t port_idx, Capture *capture) {
    if (!fabric.shm() || port_idx >= kMaxPorts)
        return nullptr;
    return std::make_unique<GsiTransport>(fabric, port_idx, capture, false);
}

std::unique_ptr<cm::MadTransport> gsi_transport(Context &ctx, std::uint8_t port) noexcept {
    auto *soft = dynamic_cast<SoftContext *>(&ctx);
    if (!soft || !soft->valid_port(port))
        return nullptr;
    return make_gsi_transport(soft->fabric, soft->port_idx[port - 1], soft->capture.get());
}

// The CM of a port: the shared engine (cm/cm_engine.hpp) over this port's
// GSI mailbox, which it holds (its owner word: one CM per port on the
// fabric; a dead holder's is taken over).
std::unique_ptr<Cm> SoftContext::open_cm(std::uint8_t port) noexcept {
    if (!valid_port(port)) {
        no_port(port);
        return nullptr;
    }
    const std::uint32_t pidx = port_idx[port - 1];
    auto &owner = fabric.shm()->gsi[pidx].owner;
    const std::uint32_t me = fabric.ident();
    std::uint32_t held = 0;
    while (!owner.compare_exchange_strong(held, me, std::memory_order_acq_rel)) {
        if (held == me || fabric.ident_alive(held)) {
            fail(-EBUSY, "open_cm: port " + std::to_string(port) + " of " + name_ +
                             " already has a connection manager" + (held == me ? "" : " (another process)"));
            return nullptr;
        }
        // A dead process's: take it over (held is what to replace).
    }
    auto transport = std::make_unique<GsiTransport>(fabric, pidx, capture.get(), true);
    Gid gid{};
    query_gid(port, 0, &gid);
    const PortEntry &pe = fabric.shm()->ports[pidx];
    const cm::LocalPort local{.lid = pe.lid.load(std::memory_order_relaxed), .gid = gid, .ca_guid = node_guid()};
    return cm::make_cm_engine(std::move(transport), local);
}

} // namespace ipoib::hca::soft
