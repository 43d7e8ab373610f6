// SPDX-License-Identifier: BSD-3-Clause
// Fuzz what SaClient reads back from the SA (lib/ctrl/src/sa_client.cpp):
// SaClient runs over test/unit/ctrl's link-time model of libibumad and the
// kernel's MAD layer (fake_umad.cpp, linked into this target), with a path
// query, a join, a leave and a table query pending; the input is a sequence
// of messages put into the client's receive queue (what umad2sim does with
// whatever arrives), each followed or not by a poll. Checked: a request
// completes at most once and only from poll(), never after it was cancelled;
// poll() counts what it completed and outstanding() what is left; a failed
// request carries no records, a successful path query exactly one, a join or
// leave at most one; the records are what the bytes say (decoded again here
// from the IBA offsets, independently of libibmad) and encode back the same.
// The first bytes are also given straight to decode_path and decode_mcm.
//
// A message (15 bytes, then its body):
//   op      bits 0-1: the request kind whose answer header (class, version,
//                     method, attribute) is written over the body (bit 5)
//           bits 2-3: the slot whose TID is used: 0 the newest request, 1 the
//                     one before...
//           bit 4: keep that slot's TID (low 32 bits; the high half from tid)
//           bit 5: write the header of bits 0-1 (else the body's own is used)
//           bit 6: a umad status: `ustatus`, or ETIMEDOUT if it is 0
//           bit 7: poll after this message
//   mode    bits 0-1: length: 0 one MAD (256), 1 1 + larg % 256, 2 256 + larg
//                     (RMPP-sized, up to past the 64 KiB buffer), 3 oversized
//                     (past the receive buffer: read off with a buffer of its
//                     size; one past kSaMaxDrainLen, never read off, costs 16 MiB
//                     an execution and is left to test/unit/ctrl)
//           bit 2: a callback of the next poll closes the client (as a port
//                  stop does): no other callback runs; later requests fail
//           bit 3: cancel the slot of op bits 2-3 first
//           bit 4: each callback of the next poll submits a request of its kind
//           bit 5: the request's method instead of the response's (a request
//                  handed back by the kernel)
//           bit 6: each callback of the next poll cancels the next live request
//           bit 7: deliver the message twice
//   larg (u16 LE), ustatus (u8), tid (u64 LE), nbody (u16 LE), body: the MAD
//   from byte 0; past the body, the bytes from its offset 56 on repeat (many
//   records), or zeros.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../../unit/ctrl/fake_umad.hpp"
#include "../wire/fuzz_common.hpp"
#include "ipoib/ctrl/sa.hpp"

using namespace ipoib;
using namespace ipoib::ctrl;
using namespace ipoib::ctrl::test;

namespace {

constexpr std::size_t kSaHdr = 56;  // MAD header + SA header: records start here
constexpr std::size_t kMcmLen = 53;  // IB_SA_MCM_RECSZ
constexpr int kMaxMessages = 16;

struct Input {
    const std::uint8_t *p;
    std::size_t n;
    std::uint8_t u8() {
        if (n == 0)
            return 0;
        --n;
        return *p++;
    }
    std::uint64_t le(int bytes) {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i)
            v |= std::uint64_t{u8()} << (8 * i);
        return v;
    }
};

std::uint16_t be16(const std::uint8_t *b) { return static_cast<std::uint16_t>(b[0] << 8 | b[1]); }
std::uint32_t be32(const std::uint8_t *b) { return std::uint32_t{be16(b)} << 16 | be16(b + 2); }

// PathRecord (IBA 15.2.5.16) by offset: what decode_path must have read.
bool path_is(const PathRecord &p, const std::uint8_t *rec) {
    return std::memcmp(p.dgid.raw.data(), rec + 8, 16) == 0 && std::memcmp(p.sgid.raw.data(), rec + 24, 16) == 0 &&
           p.dlid == be16(rec + 40) && p.slid == be16(rec + 42) &&
           p.flow_label == ((be32(rec + 44) >> 8) & 0xfffff) && p.hop_limit == rec[47] &&
           p.traffic_class == rec[48] && p.reversible == bool(rec[49] & 0x80) && p.pkey == be16(rec + 50) &&
           p.sl == (rec[53] & 0xf) && p.mtu == (rec[54] & 0x3f) && p.rate == (rec[55] & 0x3f) &&
           p.packet_life == (rec[56] & 0x3f);
}

// MCMemberRecord (IBA 15.2.5.17) by offset: what decode_mcm must have read.
bool mcm_is(const McMemberRecord &r, const std::uint8_t *rec) {
    return std::memcmp(r.mgid.raw.data(), rec, 16) == 0 && std::memcmp(r.port_gid.raw.data(), rec + 16, 16) == 0 &&
           r.qkey == be32(rec + 32) && r.mlid == be16(rec + 36) && r.mtu == (rec[38] & 0x3f) &&
           r.mtu_selector == rec[38] >> 6 && r.traffic_class == rec[39] && r.pkey == be16(rec + 40) &&
           r.rate == (rec[42] & 0x3f) && r.rate_selector == rec[42] >> 6 && r.packet_life == (rec[43] & 0x3f) &&
           r.sl == rec[44] >> 4 && r.flow_label == ((be32(rec + 44) >> 8) & 0xfffff) && r.hop_limit == rec[47] &&
           r.scope == rec[48] >> 4 && r.join_state == (rec[48] & 0xf);
}

// encode_mcm gives back what decode_mcm read from `rec`.
void check_mcm_roundtrip(const McMemberRecord &r, const std::uint8_t *rec) {
    std::uint8_t back[64] = {};
    encode_mcm(r, back);
    FUZZ_CHECK(std::memcmp(back, rec, 43) == 0);           // up to PacketLifeTime
    FUZZ_CHECK(back[43] == (rec[43] & 0x3f));              // its selector is not kept
    FUZZ_CHECK(std::memcmp(back + 44, rec + 44, 5) == 0);  // SL, FlowLabel, HopLimit, Scope, JoinState
    for (std::size_t i = 49; i < kMcmLen; ++i)
        FUZZ_CHECK(back[i] == 0);  // ProxyJoin and reserved: not ours to send
}

// A message delivered: its TID (low half: what requests are matched on), length, first bytes.
struct Delivered {
    std::uint32_t tid;
    std::size_t len;
    std::uint8_t head[kSaHdr + 64];
};

enum Kind : std::uint8_t { kPath, kJoin, kLeave, kTable };
constexpr std::uint8_t kRequestMethod[] = {0x01, 0x02, 0x15, 0x12};   // Get, Set, Delete, GetTable
constexpr std::uint8_t kResponseMethod[] = {0x81, 0x81, 0x95, 0x92};  // GetResp, GetResp, DeleteResp, GetTableResp
constexpr std::uint16_t kAttr[] = {0x0035, 0x0038, 0x0038, 0x0038};   // PathRecord, MCMemberRecord

struct Slot {
    Kind kind;
    std::uint64_t id = 0;
    int calls = 0;
    bool cancelled = false;
};

struct Harness {
    SaClient sa;
    std::vector<Slot> slots;
    std::size_t live = 0;  // submitted, not completed, not cancelled
    int callbacks = 0;     // during the current poll
    bool in_poll = false;
    bool resubmit = false, cancel_next = false, close = false;
    std::vector<Delivered> delivered;

    // The first record of a message delivered with this request's TID, long enough to hold one.
    template <class Is>
    bool from_some_answer(std::size_t i, std::size_t rec_len, Is is) const {
        for (auto &d : delivered)
            if (d.tid == static_cast<std::uint32_t>(slots[i].id) && d.len >= kSaHdr + rec_len && is(d.head + kSaHdr))
                return true;
        return false;
    }

    void submit(Kind k) {
        const std::size_t i = slots.size();
        slots.push_back({k});
        const Gid sgid = wire::parse_gid_text("fe80::2:c903:0:101").value;
        McMemberRecord m{};
        m.mgid = wire::parse_gid_text("ff12:401b:8001::ffff:ffff").value;
        m.port_gid = sgid;
        m.join_state = kFullMember;
        auto mcb = [this, i](SaStatus st, const std::vector<McMemberRecord> &recs) { on_mcm(i, st, recs); };
        std::uint64_t id = 0;
        switch (k) {
        case kPath:
            id = sa.query_path(sgid, wire::parse_gid_text("fe80::2:c903:0:202").value, 0xffff,
                               [this, i](SaStatus st, const std::vector<PathRecord> &recs) { on_path(i, st, recs); });
            break;
        case kJoin: id = sa.join(m, kMcmMgid | kMcmPortGid, mcb); break;
        case kLeave: id = sa.leave(m, kMcmMgid | kMcmPortGid, mcb); break;
        case kTable: id = sa.query_mcmembers(m, kMcmMgid, mcb); break;
        }
        FUZZ_CHECK(id != 0);
        slots[i].id = id;
        ++live;
    }

    void cancel(std::size_t i) {
        if (slots[i].calls || slots[i].cancelled)
            return;
        sa.cancel(slots[i].id);
        slots[i].cancelled = true;
        --live;
    }

    // What every completion must satisfy, and what the poll asked callbacks to do.
    void completed(std::size_t i, SaStatus st, std::size_t nrecs) {
        FUZZ_CHECK(in_poll);                      // callbacks run from poll() only
        FUZZ_CHECK(!slots[i].cancelled);          // never after cancel()
        FUZZ_CHECK(slots[i].calls == 0);          // once
        ++slots[i].calls;
        --live;
        ++callbacks;
        // ok, a MAD status word, or -errno (ours, or the umad status of 1..255 this target sends)
        FUZZ_CHECK(st.status >= -255 && st.status <= 0xffff);
        FUZZ_CHECK(!st.message().empty());
        if (!st.ok())
            FUZZ_CHECK(nrecs == 0);
        const Kind k = slots[i].kind;
        if (resubmit)
            submit(k);
        if (cancel_next)
            for (std::size_t j = 1; j < slots.size(); ++j) {
                const std::size_t n = (i + j) % slots.size();
                if (!slots[n].calls && !slots[n].cancelled) {
                    cancel(n);
                    break;
                }
            }
        if (close) {
            sa.close();  // drops every outstanding request without its callback
            for (auto &s : slots)
                s.cancelled |= s.calls == 0;
            live = 0;
            close = false;
        }
    }

    void on_path(std::size_t i, SaStatus st, const std::vector<PathRecord> &recs) {
        FUZZ_CHECK(slots[i].kind == kPath);
        if (st.ok())
            FUZZ_CHECK(recs.size() == 1);  // a Get answered without a record is NO_RECORDS
        for (auto &p : recs) {
            FUZZ_CHECK(p.mtu <= 0x3f && p.rate <= 0x3f && p.sl <= 15 && p.flow_label <= 0xfffff);
            FUZZ_CHECK(from_some_answer(i, 64, [&](const std::uint8_t *rec) { return path_is(p, rec); }));
        }
        completed(i, st, recs.size());
    }

    void on_mcm(std::size_t i, SaStatus st, const std::vector<McMemberRecord> &recs) {
        FUZZ_CHECK(slots[i].kind != kPath);
        if (slots[i].kind != kTable)
            FUZZ_CHECK(recs.size() <= 1);
        for (auto &r : recs) {
            std::uint8_t enc[64] = {};
            encode_mcm(r, enc);
            FUZZ_CHECK(mcm_is(r, enc));  // within the fields' widths: encodes and decodes to itself
        }
        if (!recs.empty())
            FUZZ_CHECK(from_some_answer(i, kMcmLen, [&](const std::uint8_t *rec) { return mcm_is(recs[0], rec); }));
        completed(i, st, recs.size());
    }

    void poll() {
        callbacks = 0;
        in_poll = true;
        const int r = sa.poll(0);
        in_poll = false;
        FUZZ_CHECK(r == callbacks);
        FUZZ_CHECK(sa.outstanding() == live);
        resubmit = cancel_next = close = false;
    }
};

void fuzz_decoders(const std::uint8_t *data, std::size_t size) {
    std::uint8_t rec[64] = {};
    std::memcpy(rec, data, size < sizeof rec ? size : sizeof rec);
    FUZZ_CHECK(path_is(decode_path(rec), rec));
    const McMemberRecord r = decode_mcm(rec);
    FUZZ_CHECK(mcm_is(r, rec));
    check_mcm_roundtrip(r, rec);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    fuzz_decoders(data, size);

    reset_fake_umad();
    Harness h;
    SaConfig cfg;
    cfg.timeout_ms = kSaMaxTimeoutMs;  // no try times out while an input runs
    cfg.retries = 1;
    std::string err;
    FUZZ_CHECK(h.sa.open(cfg, &err));
    h.sa.set_sm(1, 0);
    for (Kind k : {kPath, kJoin, kLeave, kTable})
        h.submit(k);
    FUZZ_CHECK(fake_umad().sent.size() == 4 && h.sa.outstanding() == 4);

    Input in{data, size};
    for (int m = 0; m < kMaxMessages && in.n > 0; ++m) {
        const std::uint8_t op = in.u8(), mode = in.u8();
        const auto larg = static_cast<std::uint16_t>(in.le(2));
        const std::uint8_t ustatus = in.u8();
        const std::uint64_t tid = in.le(8);
        const std::size_t nbody = std::min<std::size_t>(in.le(2), in.n);
        const std::uint8_t *body = in.p;
        in.p += nbody, in.n -= nbody;

        const auto kind = static_cast<Kind>(op & 3);
        const std::size_t back = (op >> 2) & 3;
        const std::size_t slot = h.slots.size() - 1 - std::min(back, h.slots.size() - 1);
        std::size_t len = 256;
        switch (mode & 3) {
        case 1: len = 1 + larg % 256; break;  // (the model copies no empty message)
        case 2: len = 256 + std::size_t{larg}; break;
        case 3: len = kSaRecvBufLen + 1 + larg; break;
        }
        std::vector<std::uint8_t> mad(len, 0);
        std::copy_n(body, std::min(len, nbody), mad.begin());
        if (nbody > kSaHdr)
            for (std::size_t i = nbody; i < len; i += nbody - kSaHdr)
                std::memcpy(mad.data() + i, body + kSaHdr, std::min(nbody - kSaHdr, len - i));
        std::uint8_t hdr[24] = {};
        std::copy_n(mad.begin(), std::min(len, sizeof hdr), hdr);
        std::uint64_t t = tid;
        if (op & 0x10)
            t = (tid & 0xffffffff00000000ull) | (h.slots[slot].id & 0xffffffffu);
        for (int i = 0; i < 8; ++i)
            hdr[8 + i] = static_cast<std::uint8_t>(t >> (56 - 8 * i));
        if (op & 0x20) {
            hdr[0] = 1;     // base version
            hdr[1] = 0x03;  // SubnAdm
            hdr[2] = 2;     // class version
            hdr[3] = mode & 0x20 ? kRequestMethod[kind] : kResponseMethod[kind];
            hdr[16] = static_cast<std::uint8_t>(kAttr[kind] >> 8);
            hdr[17] = static_cast<std::uint8_t>(kAttr[kind]);
        }
        std::copy_n(hdr, std::min(len, sizeof hdr), mad.begin());
        const std::uint32_t status = op & 0x40 ? (ustatus ? ustatus : ETIMEDOUT) : 0;

        if (len >= sizeof hdr) {
            Delivered d{static_cast<std::uint32_t>(t), len, {}};
            std::memcpy(d.head, mad.data(), std::min(len, sizeof d.head));
            h.delivered.push_back(d);
        }
        if (mode & 0x08)
            h.cancel(slot);
        fake_umad().deliver(mad, status);
        if (mode & 0x80)
            fake_umad().deliver(mad, status);
        h.resubmit = mode & 0x10;
        h.cancel_next = mode & 0x40;
        h.close = mode & 0x04;
        if (op & 0x80)
            h.poll();
    }
    h.poll();
    h.sa.close();  // outstanding requests are dropped without their callbacks
    FUZZ_CHECK(h.sa.outstanding() == 0);
    return 0;
}
