// SPDX-License-Identifier: BSD-3-Clause
// What the software HCA makes of a receive slot: the checks a receiver
// applies to a slot another process wrote, and a sender to the buffer
// descriptor a receiver posted. Both sides read memory another process
// writes (shm_layout.hpp), so every value is bounded here before it is
// used; nothing else of a slot is trusted. Pure functions over values read
// once, so that a fuzz target (test/fuzz/hca/fuzz_rx_slot.cpp) and unit
// tests call exactly what the data path calls.
#pragma once

#include <cstdint>

#include "shm_layout.hpp"

namespace ipoib::hca::soft {

// One load of a plain field another process may be writing: what is checked
// is what is used (the compiler may not load it again).
template <class T>
inline T load_once(const T &v) noexcept {
    return __atomic_load_n(&v, __ATOMIC_RELAXED);
}

// The fields of a receive slot a sender writes, each read once.
struct RxSlotView {
    std::uint64_t state;
    std::uint32_t byte_len;
    std::uint32_t src_qp;
    std::uint16_t slid;
    std::uint8_t sl;
    std::uint8_t flags;
    std::uint8_t status;
    std::uint32_t rss_hash = 0;
};

inline RxSlotView read_rx_slot(const RqSlot &s, std::uint64_t state) noexcept {
    return RxSlotView{state,           load_once(s.byte_len), load_once(s.src_qp), load_once(s.slid),
                      load_once(s.sl), load_once(s.flags),    load_once(s.status), load_once(s.rss_hash)};
}

enum class RxVerdict : std::uint8_t {
    wait,     // posted by the receiver, no sender has it yet
    claimed,  // a sender is writing it (slot_owner(state) says who)
    done,     // *wc holds the completion (success, or a local length error)
    bad,      // it holds what no correct process writes: complete it in error, count it
};

inline constexpr std::uint32_t kMaxQpn = 0xffffff;  // QPNs are 24 bits
inline constexpr std::uint8_t kMaxSl = 15;

// The receiver's reading of the state word of the slot at its cursor, whose
// lap is `lap`. done: the fields are to be read (parse_rx_fields); a slot
// that is not done is never read further (a sender may be writing it).
inline RxVerdict classify_rx_slot(std::uint64_t state, std::uint32_t lap) noexcept {
    if (slot_lap(state) != lap)
        return RxVerdict::bad;  // the receiver posted this lap; nobody writes another
    switch (slot_kind_raw(state)) {
    case kPosted:
        // Exactly what the receiver wrote: a sender's claim is a CAS from it.
        return slot_owner(state) == 0 ? RxVerdict::wait : RxVerdict::bad;
    case kClaimed:
        return RxVerdict::claimed;
    case kDone:
        return RxVerdict::done;
    default:
        return RxVerdict::bad;
    }
}

// The fields of a done slot into which the receiver posted a buffer of
// posted_len bytes (its own copy: the slot's length field is shared memory
// too). done: sets wc's status, byte_len, src_qp, slid, sl and wc_flags; a
// success has kGrhLen <= byte_len <= posted_len, a local length error
// byte_len 0. bad: anything a correct sender does not write.
inline RxVerdict parse_rx_fields(const RxSlotView &v, std::uint32_t posted_len, Wc *wc) noexcept {
    switch (v.status) {
    case kRxOk:
        if (v.byte_len < kGrhLen || v.byte_len > posted_len || v.src_qp > kMaxQpn || v.sl > kMaxSl ||
            (v.flags & ~(kWcGrh | kWcRssHash)) != 0)
            return RxVerdict::bad;
        wc->status = WcStatus::success;
        wc->byte_len = v.byte_len;
        wc->src_qp = v.src_qp;
        wc->slid = v.slid;  // a value, not an index: passed on as it is
        wc->sl = v.sl;
        wc->wc_flags = v.flags;
        wc->rss_hash = (v.flags & kWcRssHash) ? v.rss_hash : 0;
        return RxVerdict::done;
    case kRxTooLong:
        wc->status = WcStatus::loc_len_err;
        wc->byte_len = 0;
        wc->src_qp = 0;
        wc->slid = 0;
        wc->sl = 0;
        wc->wc_flags = 0;
        wc->rss_hash = 0;
        return RxVerdict::done;
    default:  // kRxBadBuffer (the sender found the descriptor corrupt), or garbage
        return RxVerdict::bad;
    }
}

// Both, on a view read at once (tests and the fuzz target; the receiver
// calls the two steps, reading the fields only of a done slot).
inline RxVerdict parse_rx_slot(const RxSlotView &v, std::uint32_t lap, std::uint32_t posted_len, Wc *wc) noexcept {
    const RxVerdict k = classify_rx_slot(v.state, lap);
    return k == RxVerdict::done ? parse_rx_fields(v, posted_len, wc) : k;
}

// The sender's check of a posted buffer descriptor (offset and length are
// the receiver's, so garbage to the sender) against the segment it names
// (seg_size bytes mapped; 0: no such segment), for a message of msg_len
// bytes after the GRH area. kRxOk: [offset, offset + kGrhLen + msg_len)
// lies inside both the buffer and the segment.
inline RxStatus check_rx_buffer(std::uint32_t offset, std::uint32_t length, std::uint64_t seg_size,
                                std::uint32_t msg_len) noexcept {
    if (seg_size == 0 || length < kGrhLen || std::uint64_t{offset} + length > seg_size)
        return kRxBadBuffer;
    return std::uint64_t{kGrhLen} + msg_len <= length ? kRxOk : kRxTooLong;
}

// The values of a destination QP's entry a sender indexes with.
inline bool valid_port_idx(std::uint32_t idx) noexcept { return idx < kMaxPorts; }
inline bool valid_rq_depth(std::uint32_t depth) noexcept { return depth >= 1 && depth <= kRqDepth; }
inline bool valid_nrq(std::uint32_t n) noexcept { return n <= kMaxQueues; }
// A port's active MTU code (Mtu: 1..5).
inline bool valid_mtu_code(std::uint8_t m) noexcept {
    return m >= static_cast<std::uint8_t>(Mtu::mtu256) && m <= static_cast<std::uint8_t>(Mtu::mtu4096);
}

} // namespace ipoib::hca::soft
