// SPDX-License-Identifier: BSD-3-Clause
// What the software HCA makes of a receive slot another process wrote, and of
// a buffer descriptor a receiver posted (lib/hca/src/soft/rx_slot.hpp): what
// a correct sender leaves is completed, anything else is refused.
#include <catch2/catch.hpp>

#include "soft/rx_slot.hpp"

using namespace ipoib::hca;
using namespace ipoib::hca::soft;

namespace {

constexpr std::uint32_t kLap = 7;
constexpr std::uint32_t kPostedLen = kGrhLen + 1000;

// A slot as a correct sender leaves it: 100 bytes from QPN 0x1234, LID 5, SL 3, GRH.
RxSlotView done_slot() {
    return RxSlotView{slot_word(kLap, 2, kDone), kGrhLen + 100, 0x1234, 5, 3, kWcGrh, kRxOk};
}

RxVerdict parse(const RxSlotView &v, Wc *wc = nullptr) {
    Wc local{};
    return parse_rx_slot(v, kLap, kPostedLen, wc ? wc : &local);
}

} // namespace

TEST_CASE("rx slot: what a correct sender leaves is completed as it is") {
    Wc wc{};
    REQUIRE(parse(done_slot(), &wc) == RxVerdict::done);
    CHECK(wc.status == WcStatus::success);
    CHECK(wc.byte_len == kGrhLen + 100);
    CHECK(wc.src_qp == 0x1234);
    CHECK(wc.slid == 5);
    CHECK(wc.sl == 3);
    CHECK(wc.wc_flags == kWcGrh);
    auto v = done_slot();
    v.byte_len = kGrhLen;  // an empty message
    CHECK(parse(v) == RxVerdict::done);
    v.byte_len = kPostedLen;  // exactly the buffer
    CHECK(parse(v) == RxVerdict::done);
    v.status = kRxTooLong;
    v.byte_len = 99999;
    REQUIRE(parse(v, &wc) == RxVerdict::done);
    CHECK(wc.status == WcStatus::loc_len_err);
    CHECK(wc.byte_len == 0);  // no length with an error
}

TEST_CASE("rx slot: posted and claimed slots wait") {
    CHECK(parse(RxSlotView{slot_word(kLap, 0, kPosted), 0, 0, 0, 0, 0, 0}) == RxVerdict::wait);
    CHECK(parse(RxSlotView{slot_word(kLap, 3, kClaimed), 0, 0, 0, 0, 0, 0}) == RxVerdict::claimed);
}

TEST_CASE("rx slot: values no correct process writes are refused") {
    auto bad = [](auto &&change) {
        auto v = done_slot();
        change(v);
        return parse(v) == RxVerdict::bad;
    };
    CHECK(bad([](RxSlotView &v) { v.byte_len = 10; }));                 // below the GRH area
    CHECK(bad([](RxSlotView &v) { v.byte_len = 0; }));
    CHECK(bad([](RxSlotView &v) { v.byte_len = kPostedLen + 1; }));     // past the posted buffer
    CHECK(bad([](RxSlotView &v) { v.byte_len = 0xffffffffu; }));
    CHECK(bad([](RxSlotView &v) { v.src_qp = 0x1000000; }));            // not 24 bits
    CHECK(bad([](RxSlotView &v) { v.sl = 16; }));
    CHECK(bad([](RxSlotView &v) { v.flags = 0x80; }));
    CHECK(bad([](RxSlotView &v) { v.status = 77; }));
    CHECK(bad([](RxSlotView &v) { v.status = kRxBadBuffer; }));         // the sender found the descriptor corrupt
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap + 1, 2, kDone); }));  // another lap
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap - 1, 2, kDone); }));
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap, 0, kNotPosted); }));
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap, 0, kConsumed); }));
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap, 0, kPosted) + 9 - kPosted; }));  // unknown kind
    CHECK(bad([](RxSlotView &v) { v.state = slot_word(kLap, 5, kPosted); }));  // posted, but not as posted
}

TEST_CASE("rx slot: a sender checks the posted buffer against its segment") {
    CHECK(check_rx_buffer(0, kGrhLen + 100, 4096, 100) == kRxOk);
    CHECK(check_rx_buffer(4096 - 140, 140, 4096, 100) == kRxOk);        // the segment's last bytes
    CHECK(check_rx_buffer(0, kGrhLen + 100, 4096, 101) == kRxTooLong);  // a message longer than the buffer
    CHECK(check_rx_buffer(0, kGrhLen + 100, 0, 10) == kRxBadBuffer);    // no such segment
    CHECK(check_rx_buffer(4000, 140, 4096, 10) == kRxBadBuffer);        // the buffer leaves the segment
    CHECK(check_rx_buffer(0xffffff00u, 0x200, 4096, 10) == kRxBadBuffer);  // offset + length wraps 32 bits
    CHECK(check_rx_buffer(0, 39, 4096, 0) == kRxBadBuffer);             // shorter than the GRH area
    CHECK(check_rx_buffer(0, 0xffffffffu, 4096, 10) == kRxBadBuffer);
    CHECK(valid_port_idx(kMaxPorts - 1));
    CHECK(!valid_port_idx(kMaxPorts));
    CHECK(!valid_rq_depth(0));
    CHECK(valid_rq_depth(kRqDepth));
    CHECK(!valid_rq_depth(kRqDepth + 1));
    CHECK(!valid_mtu_code(0));
    CHECK(valid_mtu_code(5));
    CHECK(!valid_mtu_code(6));
}
