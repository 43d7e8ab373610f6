// SPDX-License-Identifier: BSD-3-Clause
// A link-time seam under SaClient: test-sa-unit defines libibumad's
// functions itself (fake_umad.cpp), so SaClient runs unchanged against an
// in-memory model of the kernel's MAD layer (ib_umad + ib_mad) instead of
// /dev/infiniband/umad*. The model keeps the kernel's rules that matter to
// an SA client and that umad2sim does not model:
//
// - A request sent with timeout_ms 0 expects no response: it completes at
//   once, and an answer arriving for it is dropped (ib_find_send_mad only
//   matches sends still waiting, i.e. sent with a timeout).
// - A request sent with a timeout waits for its answer; when the timeout
//   passes without one, the request comes back to the reader with status
//   ETIMEDOUT and only its 24-byte MAD header (user_mad's send_handler).
// - A request whose TID equals that of a request still waiting is refused
//   with EINVAL (user_mad's is_duplicate()).
// - A message larger than the reader's buffer is not consumed: read()
//   fails with ENOSPC after copying the header, whose length field says how
//   much is needed (ib_umad_read requeues it at the head of the queue).
//
// Time is CLOCK_MONOTONIC, as SaClient's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace ipoib::ctrl::test {

struct UmadSent {
    std::vector<std::uint8_t> mad;  // 256 bytes as written
    int timeout_ms = 0;
    int retries = 0;
    std::uint16_t dlid = 0;
    std::uint64_t tid() const;
    std::uint8_t method() const { return mad.at(3); }
    std::uint16_t attr() const;
};

struct FakeUmad {
    // ---- what the test reads ------------------------------------------------
    std::vector<UmadSent> sent;  // every umad_send the model accepted
    int refused_duplicates = 0;  // EINVAL: TID of a request still waiting
    int dropped_answers = 0;     // answers that found no request waiting for them
    int kernel_timeouts = 0;     // requests returned with ETIMEDOUT
    int enospc = 0;              // reads refused with ENOSPC
    int opens = 0, closes = 0;
    bool is_open = false;

    // ---- what the test does -------------------------------------------------
    // An answer from the wire: delivered if a request with its TID (and class)
    // is waiting for one, which it completes; dropped otherwise.
    void respond(const std::vector<std::uint8_t> &mad);
    // A message put straight into the reader's queue (what umad2sim does with
    // every answer, whatever was sent): any size, any content.
    void deliver(const std::vector<std::uint8_t> &mad, std::uint32_t status = 0);
    std::size_t queued() const { return queue_.size(); }

    // The answer an SA would send to `req`: its header with the response
    // method, `status`, and `data` from the SA payload on (offset 56).
    static std::vector<std::uint8_t> answer_to(const UmadSent &req, std::uint16_t status,
                                               const std::vector<std::uint8_t> &data = {},
                                               std::uint16_t attr_offset_words = 0);

    // ---- the model (used by the umad_* functions) ---------------------------
    struct Waiting {
        std::uint64_t tid;
        std::uint8_t mgmt_class;
        std::uint64_t deadline_ms;
        std::vector<std::uint8_t> mad;
    };
    struct Queued {
        std::vector<std::uint8_t> mad;
        std::uint32_t status;
    };
    void expire();                     // waiting requests past their deadline come back ETIMEDOUT
    std::uint64_t next_deadline() const;
    std::deque<Queued> queue_;
    std::vector<Waiting> waiting_;
};

FakeUmad &fake_umad();
void reset_fake_umad();

} // namespace ipoib::ctrl::test
