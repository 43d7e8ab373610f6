// SPDX-License-Identifier: BSD-3-Clause
// Subnet Administration for the control plane.
//
// SaService is what the control plane needs from the SA: PathRecord
// queries, MCMemberRecord join / leave / table queries, all asynchronous,
// answered through callbacks run from poll() on the control thread.
// SaClient implements it over libibumad; unit tests implement it in memory
// (test/unit/ctrl/fake_sa.hpp) and hand it to ControlPlane through
// CpConfig::sa_service. The calls are virtual: the control path only.
//
// SaClient runs on one control thread; nothing blocks: requests are sent at
// once and their callbacks run from poll() when the answer, an error or the
// final timeout arrives. Requests are matched on the low 32 bits of the TID
// (the high half is the kernel's, or umad2sim's, to rewrite). Each request
// is retried on timeout with exponential backoff (timeout doubles per try,
// capped at 16 s). Outcomes follow lib/ctrl's error convention
// (constants.hpp): SaStatus 0 ok, > 0 MAD status, < 0 -errno.
//
// What is read back is checked: an answer must carry the SA class, the
// attribute asked for and the response method of the request (GetResp for
// Get and Set, GetTableResp, DeleteResp); anything else with a pending TID is
// dropped and counted (bad_answers) and the request stays outstanding. An
// answer larger than the receive buffer (umad_recv: ENOSPC, the kernel keeps
// it queued) is read off with a buffer of its size and its request fails
// with -EMSGSIZE (too_big), so it cannot block the answers behind it.
//
// Every request MAD goes to the kernel with the try's timeout as its
// response timeout and no kernel retries: a MAD sent with timeout 0 expects
// no response, and the kernel's MAD layer drops the SA's answer to it.
// The kernel reports a try that timed out (the request comes back with
// status ETIMEDOUT); SaClient then resends at once. Its own timer, the
// try's timeout plus kSaTimerSlackMs, covers transports that report nothing
// (umad2sim).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ipoib/ctrl/constants.hpp"
#include "ipoib/wire/types.hpp"

namespace ipoib::ctrl {

using wire::Gid;

struct PathRecord {
    Gid dgid{}, sgid{};
    std::uint16_t dlid = 0, slid = 0;
    std::uint16_t pkey = 0;
    std::uint8_t sl = 0;
    std::uint8_t mtu = 0;   // IB MTU code (4 = 2048)
    std::uint8_t rate = 0;  // IB rate code
    std::uint8_t packet_life = 0;
    std::uint8_t hop_limit = 0;
    std::uint8_t traffic_class = 0;
    std::uint32_t flow_label = 0;
    bool reversible = false;
};

enum JoinState : std::uint8_t {
    kFullMember = 0x1,
    kNonMember = 0x2,
    kSendOnlyNonMember = 0x4,
    kSendOnlyFullMember = 0x8,
};

struct McMemberRecord {
    Gid mgid{}, port_gid{};
    std::uint32_t qkey = 0;
    std::uint16_t mlid = 0;
    std::uint8_t mtu = 0;  // code, selector in mtu_selector
    std::uint8_t mtu_selector = 0;
    std::uint8_t traffic_class = 0;
    std::uint16_t pkey = 0;
    std::uint8_t rate = 0;
    std::uint8_t rate_selector = 0;
    std::uint8_t packet_life = 0;
    std::uint8_t sl = 0;
    std::uint32_t flow_label = 0;
    std::uint8_t hop_limit = 0;
    std::uint8_t scope = 0;
    std::uint8_t join_state = 0;
};

// MCMemberRecord component mask bits (IBA 15.2.5.17).
enum : std::uint64_t {
    kMcmMgid = 1ull << 0, kMcmPortGid = 1ull << 1, kMcmQkey = 1ull << 2, kMcmMlid = 1ull << 3,
    kMcmMtuSel = 1ull << 4, kMcmMtu = 1ull << 5, kMcmTclass = 1ull << 6, kMcmPkey = 1ull << 7,
    kMcmRateSel = 1ull << 8, kMcmRate = 1ull << 9, kMcmLifeSel = 1ull << 10, kMcmLife = 1ull << 11,
    kMcmSl = 1ull << 12, kMcmFlowLabel = 1ull << 13, kMcmHopLimit = 1ull << 14, kMcmScope = 1ull << 15,
    kMcmJoinState = 1ull << 16,
};

// PathRecord component mask bits (IBA 15.2.5.16) the path query uses.
enum : std::uint64_t {
    kPrDgid = 1ull << 2, kPrSgid = 1ull << 3, kPrReversible = 1ull << 11, kPrNumbPath = 1ull << 12,
    kPrPkey = 1ull << 13,
};

// Outcome of a request (lib/ctrl's error convention, constants.hpp): status 0
// is success; > 0 is the MAD status word from the SA (kSaStatusNoRecords...);
// < 0 a local -errno (-ETIMEDOUT after the last retry).
struct SaStatus {
    int status = 0;
    bool ok() const { return status == 0; }
    // e.g. "SA status 0x0200: request invalid", "SA not answering (timed out)"
    std::string message() const;
};

// Milliseconds of CLOCK_MONOTONIC: SaClient's timeouts, and the control
// plane's clock unless CpConfig::now_ms says otherwise.
std::uint64_t monotonic_ms();

struct SaConfig {
    const char *ca_name = nullptr;  // nullptr: the first CA
    int port = 0;                   // 0: the first active port
    int timeout_ms = kSaTimeoutMs;  // first try; doubles per retry, capped at kSaMaxTimeoutMs
    int retries = kSaRetries;
};

struct SaCounters {
    std::uint64_t sent, answered, retried, timed_out, errors, unmatched;
    std::uint64_t kernel_timeouts;  // tries the kernel reported timed out (ETIMEDOUT), each resent at once
    std::uint64_t bad_answers;      // a pending request's TID, but not its class/attribute/response method: dropped
    std::uint64_t too_big;          // answers larger than the receive buffer (ENOSPC): read off, request failed
};

// The SA as the control plane uses it. One control thread; no call blocks
// except poll(), for at most its timeout.
class SaService {
  public:
    using PathCallback = std::function<void(SaStatus, const std::vector<PathRecord> &)>;
    using McmCallback = std::function<void(SaStatus, const std::vector<McMemberRecord> &)>;

    virtual ~SaService() = default;

    // Ready the service (SaClient: open the umad port and register the SA
    // class agent). false with *err set on failure.
    virtual bool open(const SaConfig &cfg, std::string *err) = 0;
    // Drop every outstanding request without running its callback; release
    // what open() took. Safe to call when not open.
    virtual void close() = 0;
    virtual bool is_open() const = 0;

    // Where the SA is (from the port's PortInfo: SM LID and SM SL).
    virtual void set_sm(std::uint16_t lid, std::uint8_t sl) = 0;

    // Each returns a request id (never 0). A request that could not be sent
    // at all still completes: its callback runs from a later poll() with the
    // error. Callbacks run from poll() only, never from inside these calls.
    virtual std::uint64_t query_path(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, PathCallback cb) = 0;
    // SubnAdmSet MCMemberRecord; JoinState is added to comp_mask.
    virtual std::uint64_t join(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) = 0;
    // SubnAdmDelete MCMemberRecord; JoinState is added to comp_mask.
    virtual std::uint64_t leave(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) = 0;
    // GetTable MCMemberRecord (at most what fits one MAD where the fabric has no RMPP).
    virtual std::uint64_t query_mcmembers(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) = 0;
    // Forget a request: its callback never runs.
    virtual void cancel(std::uint64_t id) = 0;

    // Receive answers and expire requests; waits up to timeout_ms for the
    // first answer. Runs callbacks. Returns how many requests completed.
    virtual int poll(int timeout_ms) = 0;
    virtual std::size_t outstanding() const = 0;
    // Milliseconds until the next request times out (-1: none pending).
    virtual int next_timeout_ms() const = 0;
    virtual const SaCounters &counters() const = 0;
};

// SaService over libibumad (a real port, or ibsim through umad2sim).
class SaClient final : public SaService {
  public:
    SaClient() = default;
    SaClient(const SaClient &) = delete;
    SaClient &operator=(const SaClient &) = delete;
    ~SaClient() override;

    bool open(const SaConfig &cfg, std::string *err) override;
    void close() override;
    bool is_open() const override { return portid_ >= 0; }

    void set_sm(std::uint16_t lid, std::uint8_t sl) override { sm_lid_ = lid, sm_sl_ = sl; }
    std::uint16_t sm_lid() const { return sm_lid_; }

    std::uint64_t query_path(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, PathCallback cb) override;
    std::uint64_t join(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override;
    std::uint64_t leave(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override;
    std::uint64_t query_mcmembers(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override;
    void cancel(std::uint64_t id) override;

    int poll(int timeout_ms) override;
    std::size_t outstanding() const override { return pending_.size(); }
    int next_timeout_ms() const override;
    const SaCounters &counters() const override { return counters_; }

  private:
    struct Pending {
        std::uint64_t id;
        std::uint8_t method;
        std::uint16_t attr;
        std::vector<std::uint8_t> mad;  // 256 bytes, ready to resend
        int tries;
        int timeout_ms;
        std::uint64_t deadline_ms;
        PathCallback path_cb;
        McmCallback mcm_cb;
    };
    std::uint64_t submit(std::uint8_t method, std::uint16_t attr, std::uint64_t comp_mask, const std::uint8_t *rec,
                         std::size_t rec_len, PathCallback pcb, McmCallback mcb);
    bool transmit(Pending &p);
    void complete(Pending &p, SaStatus st, const std::uint8_t *mad, std::size_t len);
    bool answers(const Pending &p, const std::uint8_t *mad) const;
    int receive(std::uint8_t *umad, int len);
    int skip_oversized(int need);
    void reopen();

    SaConfig cfg_;
    int portid_ = -1;
    int agent_ = -1;
    std::uint16_t sm_lid_ = 0;
    std::uint8_t sm_sl_ = 0;
    std::uint32_t next_tid_ = 1;
    std::uint32_t tid_salt_ = 0;
    std::unordered_map<std::uint32_t, Pending> pending_;  // by low 32 bits of the TID
    std::vector<std::uint8_t> rxbuf_;
    SaCounters counters_{};
};

// Wire (de)serialisation, exposed for tests.
void encode_path_query(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, std::uint8_t *rec64,
                       std::uint64_t *comp_mask);
PathRecord decode_path(const std::uint8_t *rec64);
void encode_mcm(const McMemberRecord &r, std::uint8_t *rec);
McMemberRecord decode_mcm(const std::uint8_t *rec);

} // namespace ipoib::ctrl
