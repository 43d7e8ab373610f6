// SPDX-License-Identifier: BSD-3-Clause
// The software HCA's shared state: one POSIX shared-memory object per fabric
// ("/ipoibsoft.<fabric>"), mapped by every process that opens a device on it.
//
// Ports, QPs and multicast groups live in fixed tables; the data path is
// lock-free (one CAS per run of slots on a ring head, counters added per run).
//
// Receive queues are rings of posted buffer descriptors that *senders* fill:
// a sender takes a run of posted slots for a burst's messages to one
// destination with one CAS on the ring's head, marks them CLAIMED, copies
// each message straight into the receiver's buffer (shared memory the
// receiver allocated with alloc_dma), writes the completion fields and marks
// the slot DONE (plain stores: the slots are the sender's alone; it checks
// first that the receiver has not given up on one meanwhile). The
// receiving process completes slots in order from its CQ. A slot is never
// reachable by two senders; a sender that dies or stalls holding one is
// skipped by the receiver (see soft_hca.cpp).
//
// Threat model: a peer process may be buggy, crash or be stopped (not root).
// Anything read here that another process writes may be garbage: every
// index, count, length and state read from this memory is bounded before it
// is used (rx_slot.hpp for the receive slots; doc/soft-hca.md has the list).
#pragma once

#include <atomic>
#include <cstdint>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca::soft {

inline constexpr std::uint32_t kMagic = 0x49504f53;  // "IPOS"
// 8: reliable connections (RC QP entries, the RC receive-ring table for SRQs
// and RC QPs' own receive queues) and the per-port GSI mailboxes.
inline constexpr std::uint32_t kLayoutVersion = 8;
inline constexpr std::uint32_t kMaxProcs = 32;
inline constexpr std::uint32_t kMaxPorts = 32;
inline constexpr std::uint32_t kQpSlotBits = 7;
inline constexpr std::uint32_t kMaxQps = 1u << kQpSlotBits;  // 128
inline constexpr std::uint32_t kRqDepth = 1024;              // max posted receives per QP
inline constexpr std::uint32_t kMaxGroups = 128;
inline constexpr std::uint32_t kMaxSegsPerProc = 64;
inline constexpr std::uint32_t kMaxRcRings = 32;     // SRQs + RC QPs with their own receive queue
inline constexpr std::uint32_t kRcRqDepth = 1024;    // max posted receives per RC ring
inline constexpr std::uint32_t kMaxRcSge = 33;       // rc.hpp kMaxRcRecvSge
inline constexpr std::uint32_t kGsiMailboxDepth = 64;  // MADs waiting per port

// An incarnation of a process slot: generation (16 bits, never 0) << 8 | slot.
// It names the owner of receive slots, QPs and the group-table lock, so that
// a process that takes over a dead one's slot is never taken for it.
constexpr std::uint32_t ident(std::uint32_t proc, std::uint32_t gen) noexcept {
    return (gen & 0xffff) << 8 | (proc & 0xff);
}
constexpr std::uint32_t ident_proc(std::uint32_t id) noexcept { return id & 0xff; }
constexpr std::uint32_t ident_gen(std::uint32_t id) noexcept { return (id >> 8) & 0xffff; }

// RQ slot state word: lap (32 bits) | sender ident (24) | kind (8).
// Ring index i belongs to lap i / depth + 1 (mod 2^32: laps are compared by
// difference), so the all-zero initial state reads as "not posted yet" for
// the first lap.
enum SlotKind : std::uint8_t { kNotPosted = 0, kPosted = 1, kClaimed = 2, kDone = 3, kConsumed = 4 };
constexpr std::uint64_t slot_word(std::uint32_t lap, std::uint32_t owner, SlotKind k) noexcept {
    return std::uint64_t{lap} << 32 | std::uint64_t{owner & 0xffffff} << 8 | k;
}
constexpr std::uint32_t slot_lap(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
constexpr std::uint32_t slot_owner(std::uint64_t w) noexcept { return (w >> 8) & 0xffffff; }
constexpr std::uint8_t slot_kind_raw(std::uint64_t w) noexcept { return static_cast<std::uint8_t>(w & 0xff); }
constexpr SlotKind slot_kind(std::uint64_t w) noexcept { return static_cast<SlotKind>(w & 0xff); }
// The lap of ring index idx, and how far lap a is ahead of lap b (negative: behind).
constexpr std::uint32_t lap_of(std::uint64_t idx, std::uint32_t depth) noexcept {
    return static_cast<std::uint32_t>(idx / depth + 1);
}
constexpr std::int32_t lap_diff(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b); }

// Receive-side outcome the sender leaves for the receiver.
enum RxStatus : std::uint8_t {
    kRxOk = 0,
    kRxTooLong = 1,    // the message does not fit the posted buffer
    kRxBadBuffer = 2,  // the slot's buffer descriptor names no segment, or lies outside it
};

// One cache line each: a sender writing one slot and the receiver reading
// the one before it never share a line.
struct alignas(64) RqSlot {
    std::atomic<std::uint64_t> state;
    // Written by the receiver before POSTED:
    std::uint32_t seg_key;
    std::uint32_t offset;
    std::uint32_t length;
    // Written by the sender before DONE:
    std::uint32_t byte_len;
    std::uint32_t src_qp;
    std::uint16_t slid;
    std::uint16_t pkey_index;  // unused: the receiver knows its own
    std::uint8_t sl;
    std::uint8_t flags;   // kWcGrh, kWcRssHash
    std::uint8_t status;  // RxStatus
    std::uint8_t pad_;
    std::uint32_t rss_hash;  // with kWcRssHash
};
static_assert(sizeof(RqSlot) == 64);

enum QpCounter : std::uint32_t {
    kQpTxPackets, kQpTxBytes, kQpTxErrors, kQpRxPackets, kQpRxBytes,
    kQpDropNoBuffer, kQpDropQkey, kQpDropPkey, kQpDropTooLong, kQpDropPortDown, kQpDropAborted,
    kQpRxBadSlot, kQpDropStalled, kQpTxLate,
    kQpCounterCount
};

enum PortCounter : std::uint32_t {
    kPortTxPackets, kPortTxBytes, kPortRxPackets, kPortRxBytes,
    kPortDropNoQp, kPortDropPkey, kPortDropPortDown, kPortDropNoBuffer, kPortDropQkey, kPortDropTooLong,
    kPortTxMtuExceeded, kPortTxPortDown, kPortRxBadSlot,
    kPortCounterCount
};

// Process slot word: pid (32) | generation (16) << 8 | state (8).
// FREE keeps the last generation, so the next claim takes the one after it.
enum ProcState : std::uint8_t { kProcFree = 0, kProcClaiming = 1, kProcLive = 2 };
constexpr std::uint64_t proc_word(std::uint32_t pid, std::uint32_t gen, ProcState s) noexcept {
    return std::uint64_t{pid} << 32 | std::uint64_t{gen & 0xffff} << 8 | s;
}
constexpr std::uint32_t proc_pid(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
constexpr std::uint32_t proc_gen(std::uint64_t w) noexcept { return (w >> 8) & 0xffff; }
constexpr std::uint8_t proc_state(std::uint64_t w) noexcept { return static_cast<std::uint8_t>(w & 0xff); }

struct alignas(64) ProcEntry {
    // FREE -> CLAIMING (CAS by the claimer) -> LIVE (after start_time) -> FREE.
    std::atomic<std::uint64_t> word;
    std::atomic<std::uint64_t> start_time;  // /proc/<pid>/stat field 22 (PID reuse); valid while LIVE
    // The process's segments (alloc_dma): a fabric-wide serial per index, 0 = none.
    // A segment is named by (slot, index, serial); a sender's mapping of it is
    // valid while the serial it mapped is the one published here.
    std::atomic<std::uint32_t> seg_serial[kMaxSegsPerProc];
};

struct alignas(64) PortEntry {
    std::atomic<std::uint64_t> guid;  // 0 = free slot; host order
    std::atomic<std::uint32_t> refs;
    std::atomic<std::uint16_t> lid;
    std::atomic<std::uint8_t> state;       // PortState
    std::atomic<std::uint8_t> active_mtu;  // Mtu
    std::atomic<std::uint64_t> subnet_prefix;
    std::atomic<std::uint16_t> pkeys[kMaxPkeys];
    std::atomic<std::uint64_t> counters[kPortCounterCount];
};

// A QP-table entry is a QP (a destination, by its QPN) or one receive work
// queue of a QP with several (RSS): an entry of the same owner that only
// its QP's ring selection reaches (its qpn stays 0).
// kQpKindRc: one end of a reliable connection; it receives into the RC ring
// rc_ring names (an SRQ's or its own).
enum QpKind : std::uint32_t { kQpKindUd = 0, kQpKindRecvQueue = 1, kQpKindRc = 2 };

// An RC QP's state as its peers see it: only a connected QP receives.
enum RcWireState : std::uint32_t { kRcStateInit = 0, kRcStateRts = 1, kRcStateErr = 2 };

struct alignas(64) QpEntry {
    std::atomic<std::uint32_t> qpn;    // 0 = free, being set up, or a receive queue (senders skip it)
    std::atomic<std::uint32_t> owner;  // the owner's ident, 0 = free (set before qpn, cleared after)
    std::atomic<std::uint32_t> port_idx;
    std::atomic<std::uint32_t> qkey;
    std::atomic<std::uint16_t> pkey;
    std::atomic<std::uint16_t> pkey_index;
    std::atomic<std::uint32_t> rq_depth;
    std::atomic<std::uint32_t> kind;  // QpKind
    // Completion events of this ring's CQ: the receiver sets notify_armed
    // (arm_notify); the sender that completes a slot and finds it set clears
    // it and sends a datagram to the CQ's socket, named by the owner's ident
    // and notify_cq (the CQ's serial in its process; 0: the CQ has no events).
    std::atomic<std::uint32_t> notify_armed;
    std::atomic<std::uint32_t> notify_cq;
    // kQpKindRc only: RcWireState, the RC ring it receives into (< kMaxRcRings,
    // owned by the same process), the QPN it is connected to, and the RNR
    // timer code (IBA Table 45) its senders wait between RNR retries.
    std::atomic<std::uint32_t> rc_state;
    std::atomic<std::uint32_t> rc_ring;
    std::atomic<std::uint32_t> rc_remote_qpn;
    std::atomic<std::uint32_t> rc_min_rnr;
    // Receive-side scaling (the QP's owner writes it; senders read it without
    // a lock, a torn update only picks another of the QP's queues). nrq = 0:
    // the QP receives into its own ring. Else a message goes to the ring of
    // entry rq_slot[reta[hash % kRssRetaSize]], which must be a receive-queue
    // entry of the same owner; anything else is dropped as rx_bad_slot.
    alignas(64) std::atomic<std::uint32_t> nrq;
    std::atomic<std::uint32_t> rss_fields;  // hca.hpp kRss*
    std::atomic<std::uint64_t> rss_key[kRssKeyLen / 8];
    std::atomic<std::uint8_t> rq_slot[kMaxQueues];
    std::atomic<std::uint8_t> reta[kRssRetaSize];
    alignas(64) std::atomic<std::uint64_t> rq_head;  // first unclaimed index: senders take runs of slots by CAS on it
    alignas(64) std::atomic<std::uint64_t> counters[kQpCounterCount];
    alignas(64) RqSlot rq[kRqDepth];
};

// A group is created by the first attach of its MGID and freed by the detach
// of its last member (or the next attach or detach after its last member's
// QP is gone), both under the group lock. Senders read it without the lock.
enum GroupState : std::uint32_t { kGroupFree = 0, kGroupLive = 2 };

struct alignas(64) GroupEntry {
    std::atomic<std::uint32_t> state;
    std::atomic<std::uint16_t> mlid;
    std::uint8_t mgid[16];
    std::atomic<std::uint64_t> members[kMaxQps / 64];  // bit per QP slot
};

// ---- reliable connections ----
// A receive of an RC ring: up to kMaxRcSge buffers, the message scattered
// over them in order. The slot state word is a receive slot's (lap | owner |
// kind, above); a sender claims one slot per message by CAS on the ring head.
struct RcBufDesc {
    std::uint32_t seg_key;
    std::uint32_t offset;
    std::uint32_t length;
};
struct alignas(64) RcSlot {
    std::atomic<std::uint64_t> state;
    std::uint32_t num_sge;  // receiver, before POSTED
    // Written by the sender before DONE:
    std::uint32_t byte_len;
    std::uint32_t src_qp;
    std::uint32_t dst_qp;  // the RC QP it arrived on (an SRQ serves several)
    std::uint16_t slid;
    std::uint8_t status;  // RxStatus
    std::uint8_t pad_[5];
    RcBufDesc sge[kMaxRcSge];  // receiver, before POSTED
};
static_assert(sizeof(RcSlot) == 448);

// A shared receive queue, or an RC QP's own receive queue.
struct alignas(64) RcRingEntry {
    std::atomic<std::uint32_t> owner;  // ident, 0 = free
    std::atomic<std::uint32_t> depth;  // 1..kRcRqDepth
    std::atomic<std::uint32_t> notify_armed;  // as QpEntry's
    std::atomic<std::uint32_t> notify_cq;
    alignas(64) std::atomic<std::uint64_t> head;  // first unclaimed index
    alignas(64) RcSlot slots[kRcRqDepth];
};

// ---- the GSI path for CM MADs ----
// ibsim delivers QP1 requests only to the SM's client, so the software HCA
// carries CM MADs between ports itself: one mailbox per port slot, a bounded
// queue of sequence-stamped cells (any process puts, the port's CM takes).
inline constexpr std::size_t kGsiMadLen = 256;
struct alignas(64) GsiCell {
    // Lap L = index / kGsiMailboxDepth: 2L = empty for the put of that lap,
    // 2L + 1 = full for its take (all-zero memory: empty for lap 0).
    std::atomic<std::uint64_t> seq;
    std::uint16_t slid;
    std::uint16_t pkey_index;
    std::uint32_t src_qp;
    std::uint8_t sl;
    std::uint8_t global;
    std::uint8_t pad_[6];
    std::uint8_t sgid[16];
    std::uint8_t pad2_[16];
    std::uint8_t mad[kGsiMadLen];
};
static_assert(sizeof(GsiCell) == 320);
struct alignas(64) GsiMailbox {
    alignas(64) std::atomic<std::uint64_t> put;   // next index to fill
    alignas(64) std::atomic<std::uint64_t> take;  // next index to read
    std::atomic<std::uint64_t> drops;             // MADs refused: the mailbox was full
    std::atomic<std::uint32_t> owner;             // ident of the process whose CM takes from it, 0 = none
    alignas(64) GsiCell cells[kGsiMailboxDepth];
};

struct FabricShm {
    std::atomic<std::uint32_t> magic;  // set last, after initialisation
    std::uint32_t version;
    std::uint64_t size;
    std::atomic<std::uint32_t> next_qp_gen;
    std::atomic<std::uint32_t> next_seg_serial;
    // The group table's lock: the holder's ident, 0 = free. Attach and detach
    // (control path) take it; senders read the table without it.
    std::atomic<std::uint32_t> group_lock;
    ProcEntry procs[kMaxProcs];
    PortEntry ports[kMaxPorts];
    GroupEntry groups[kMaxGroups];
    QpEntry qps[kMaxQps];
    GsiMailbox gsi[kMaxPorts];  // by port slot
    RcRingEntry rc_rings[kMaxRcRings];
};

// QPN = generation << 7 | slot. Generations start at 1 and stay below 2^17 - 1,
// so QPNs never collide with QP0/QP1 or the multicast QPN 0xffffff.
constexpr std::uint32_t qpn_slot(std::uint32_t qpn) noexcept { return qpn & (kMaxQps - 1); }

// Segment keys (lkeys): proc slot (8 bits) | segment index (8) | low 16 bits of the segment's serial.
constexpr std::uint32_t seg_key(std::uint32_t proc, std::uint32_t idx, std::uint32_t serial) noexcept {
    return (proc & 0xff) << 24 | (idx & 0xff) << 16 | (serial & 0xffff);
}
constexpr std::uint32_t seg_proc(std::uint32_t key) noexcept { return key >> 24; }
constexpr std::uint32_t seg_index(std::uint32_t key) noexcept { return (key >> 16) & 0xff; }
constexpr std::uint32_t seg_serial_bits(std::uint32_t key) noexcept { return key & 0xffff; }

} // namespace ipoib::hca::soft
