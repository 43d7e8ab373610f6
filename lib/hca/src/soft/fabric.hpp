// SPDX-License-Identifier: BSD-3-Clause
// Attaching a process to the software HCA's shared fabric state, and the
// shared-memory segments (alloc_dma) that receive buffers live in.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../proc_start_time.hpp"
#include "shm_layout.hpp"

namespace ipoib::hca::soft {

// One process's attachment: the mapped FabricShm, its proc slot, its own
// segments and the peers' segments it has mapped.
class Fabric {
  public:
    ~Fabric();
    // Create or open "/ipoibsoft.<name>" and claim a proc slot.
    bool attach(const std::string &name, std::string *err);

    FabricShm *shm() const noexcept { return shm_; }
    const std::string &name() const noexcept { return name_; }
    std::uint32_t proc() const noexcept { return proc_; }
    std::uint32_t gen() const noexcept { return gen_; }

    // This process's ident (shm_layout.hpp): its slot and that slot's generation.
    std::uint32_t ident() const noexcept { return soft::ident(proc_, gen_); }
    // Is the incarnation `id` of a process slot still alive? False if the slot
    // is free or held by another incarnation. Syscalls: only for the slow path.
    bool ident_alive(std::uint32_t id) const noexcept;

    // Local segments.
    void *alloc_segment(std::size_t len, std::string *err);
    bool free_segment(void *p);
    // The segment holding [addr, addr+len), or false.
    bool find_local(const void *addr, std::size_t len, std::uint32_t *key, std::uint8_t **base,
                    std::size_t *size = nullptr) const;

    // Base address of any process's segment (mapped on first use, and again
    // when its owner has allocated another under that index). nullptr if the
    // key names no segment the fabric has now (freed, or garbage).
    std::uint8_t *segment_base(std::uint32_t key, std::uint32_t *size) noexcept;

    // Reclaim the slots of processes that died without closing: their QPs,
    // group memberships and segments (/dev/shm objects).
    void collect_dead();

    // The multicast group table, under the group lock. Attach QP slot qp_slot
    // to the group of mgid (16 bytes), creating it if needed, with MLID mlid
    // (the MLID of the last attach: the SM's latest); detach it (the last
    // member's detach frees the group). 0, or a negative errno with *err set
    // (-ENOSPC: no free group; -ENOENT: not a member; -EBUSY: the lock is
    // held by a live process for over a second).
    int group_attach(const std::uint8_t *mgid, std::uint16_t mlid, std::uint32_t qp_slot, std::string *err);
    int group_detach(const std::uint8_t *mgid, std::uint32_t qp_slot, std::string *err);
    // Remove QP slot qp_slot from every group (its QP is gone).
    void group_drop_member(std::uint32_t qp_slot) noexcept;

  private:
    static bool word_alive(std::uint64_t w, std::uint64_t start_time) noexcept;
    std::string segment_name(std::uint32_t proc, std::uint32_t idx, std::uint32_t serial) const;
    bool lock_groups() noexcept;
    void unlock_groups() noexcept;

    struct LocalSeg {
        std::uint8_t *base = nullptr;
        std::size_t size = 0;
        std::uint32_t key = 0;
        std::uint32_t serial = 0;
    };
    struct RemoteSeg {
        std::uint8_t *base = nullptr;
        std::uint32_t size = 0;
        std::uint32_t serial = 0;  // the owner's serial for this index when mapped
    };

    std::string name_;
    FabricShm *shm_ = nullptr;
    std::uint32_t proc_ = kMaxProcs;
    std::uint32_t gen_ = 0;
    std::uint64_t live_word_ = 0;  // this process's slot word
    std::vector<LocalSeg> local_;
    std::array<RemoteSeg, kMaxProcs * kMaxSegsPerProc> remote_{};
};

using hca::proc_start_time;  // ../proc_start_time.hpp

} // namespace ipoib::hca::soft
