// SPDX-License-Identifier: BSD-3-Clause
// Fuzz what the software HCA reads from shared memory another process
// writes (lib/hca/src/soft/rx_slot.hpp): a receive slot as the receiver
// finds it at its cursor, and a posted buffer descriptor as a sender finds
// it. Input: a 40-byte RqSlot image, then the receiver's lap (4 bytes), the
// length it posted (4), the sender's segment size (4) and message length (4).
#include <cstdint>
#include <cstring>

#include "../wire/fuzz_common.hpp"
#include "soft/rx_slot.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::soft;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    constexpr std::size_t kIn = sizeof(RqSlot) + 4 + 4 + 4 + 4;
    std::uint8_t in[kIn] = {};
    std::memcpy(in, data, size < kIn ? size : kIn);
    alignas(RqSlot) std::uint8_t image[sizeof(RqSlot)];
    std::memcpy(image, in, sizeof image);
    const auto &slot = *reinterpret_cast<const RqSlot *>(image);
    std::uint32_t lap, posted_len, seg_size, msg_len;
    std::memcpy(&lap, in + 40, 4);
    std::memcpy(&posted_len, in + 44, 4);
    std::memcpy(&seg_size, in + 48, 4);
    std::memcpy(&msg_len, in + 52, 4);
    std::uint64_t state;
    std::memcpy(&state, image, 8);

    // The receiver.
    Wc wc{};
    const RxSlotView v = read_rx_slot(slot, state);
    const RxVerdict r = parse_rx_slot(v, lap, posted_len, &wc);
    if (r == RxVerdict::wait)
        FUZZ_CHECK(state == slot_word(lap, 0, kPosted));
    if (r == RxVerdict::claimed)
        FUZZ_CHECK(slot_kind(state) == kClaimed && slot_lap(state) == lap);
    if (r == RxVerdict::done) {
        FUZZ_CHECK(slot_kind(state) == kDone);
        if (wc.status == WcStatus::success) {
            // What a consumer may rely on: the length covers the GRH area and stays in the buffer.
            FUZZ_CHECK(wc.byte_len >= kGrhLen && wc.byte_len <= posted_len);
            FUZZ_CHECK(wc.src_qp <= 0xffffff && wc.sl <= 15 && (wc.wc_flags & ~(kWcGrh | kWcRssHash)) == 0);
            FUZZ_CHECK((wc.wc_flags & kWcRssHash) || wc.rss_hash == 0);  // a hash only where the flag says
            FUZZ_CHECK(v.status == kRxOk);
        } else {
            FUZZ_CHECK(wc.status == WcStatus::loc_len_err && wc.byte_len == 0 && v.status == kRxTooLong);
        }
    }

    // The sender.
    const std::uint32_t offset = v.byte_len, length = v.src_qp;  // any two words of the image
    const RxStatus s = check_rx_buffer(offset, length, seg_size, msg_len);
    if (s == kRxOk) {
        FUZZ_CHECK(std::uint64_t{offset} + kGrhLen + msg_len <= seg_size);
        FUZZ_CHECK(std::uint64_t{kGrhLen} + msg_len <= length);
    } else if (s == kRxTooLong) {
        FUZZ_CHECK(std::uint64_t{offset} + length <= seg_size && length >= kGrhLen);
    }
    return 0;
}
