// SPDX-License-Identifier: BSD-3-Clause
// What every provider does the same way, written once: the error convention
// (negative errno + last_error()), port-number and P_Key-index rules, the
// Q_Key of a send, the MTU check, completions a provider makes itself, the
// GRH a receiver finds in its buffer, P_Key matching, option values.
// Internal to lib/hca.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/provider.hpp"
#include "ipoib/hca/rc.hpp"

namespace ipoib::hca::common {

// A spinlock for std::lock_guard (and try_lock): a provider's own data path
// takes it once per call, never per packet; a waiter yields.
class SpinLock {
  public:
    void lock() noexcept {
        while (flag_.test_and_set(std::memory_order_acquire))
            std::this_thread::yield();
    }
    bool try_lock() noexcept { return !flag_.test_and_set(std::memory_order_acquire); }
    void unlock() noexcept { flag_.clear(std::memory_order_release); }

  private:
    std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

// The part of a Context every provider implements alike. Errors: a call
// that fails returns fail(-errno, message) (or nullptr after fail(...)), and
// the message stays in last_error() until the next failure.
class ContextBase : public Context {
  public:
    const std::string &name() const noexcept override { return name_; }
    std::uint8_t num_ports() const noexcept override { return nports_; }
    const std::string &last_error() const noexcept override { return error_; }

    int fail(int code, std::string msg) noexcept {
        error_ = std::move(msg);
        return code;
    }
    bool valid_port(std::uint8_t port) const noexcept { return port >= 1 && port <= nports_; }
    // fail(-EINVAL, "no port N on NAME")
    int no_port(std::uint8_t port) noexcept;
    // The P_Key query rule: index 0..kMaxPkeys-1 of an existing port, else
    // -EINVAL; an index past the port's table (tbl_len entries) reads as 0,
    // an empty entry (devices answer anything there). Returns <0 on error,
    // 0 if *out was set to empty, 1 if the caller reads entry `index`.
    int pkey_index_rule(std::uint8_t port, int index, int tbl_len, std::uint16_t *out) noexcept;

    // The checks of create_cq and create_ud_qp every provider that keeps its
    // own queues makes: false (after fail(-EINVAL, ...)) if they do not hold.
    bool check_cq_depth(int depth, int max) noexcept;
    // (With the queue counts against caps(), their CQs, and check_rss.)
    bool check_qp_init(const QpInit &init, std::uint32_t max_recv_wr) noexcept;
    bool check_qp_queues(const QpInit &init) noexcept;
    // Hash fields known, every redirection entry naming one of the QP's receive queues.
    bool check_rss(const RssConf &rss, std::uint32_t num_recv_queues) noexcept;

    // The checks of create_rc_qp every provider that keeps its own queues
    // makes (port, CQs, depths; with an SRQ, whose CQ is srq_cq, recv_cq
    // must be it): false after fail(-EINVAL, ...) if they do not hold.
    bool check_rc_qp_init(const RcQpInit &init, const Cq *srq_cq, std::uint32_t max_send_wr,
                          std::uint32_t max_recv_wr) noexcept;

    // A provider without reliable connections (rc.hpp): nullptr after
    // fail(-EOPNOTSUPP, "<name>: no reliable connections (connected mode)").
    std::unique_ptr<Srq> create_srq(const SrqInit &init) noexcept override;
    std::unique_ptr<RcQp> create_rc_qp(const RcQpInit &init) noexcept override;
    std::unique_ptr<Cm> open_cm(std::uint8_t port) noexcept override;

  protected:
    std::string name_;
    std::string error_;
    std::uint8_t nports_ = 0;
};

// A memory registration that is only a record (the software HCAs reach the memory directly).
class PlainMr final : public Mr {
  public:
    PlainMr(void *a, std::size_t l, std::uint32_t k) : addr_(a), len_(l), key_(k) {}
    std::uint32_t lkey() const noexcept override { return key_; }
    void *addr() const noexcept override { return addr_; }
    std::size_t length() const noexcept override { return len_; }

  private:
    void *addr_;
    std::size_t len_;
    std::uint32_t key_;
};

// The Q_Key a UD send carries: the work request's, or the sending QP's own
// when the request's high bit is set (the IBA rule, as ibv_post_send has it).
constexpr std::uint32_t send_qkey(std::uint32_t wr_qkey, std::uint32_t qp_qkey) noexcept {
    return (wr_qkey & kUseQpQkey) ? qp_qkey : wr_qkey;
}

// Total bytes of a send (at most max_sge entries are looked at: kMaxSendSge
// for UD, kMaxRcSendSge for a reliable connection's).
std::uint32_t send_length(const SendWr &wr, std::uint32_t max_sge = kMaxSendSge) noexcept;

// A UD message must fit one packet of the port's active MTU; a longer one
// completes with a local length error and is not sent.
constexpr bool exceeds_mtu(std::uint32_t len, std::uint32_t mtu_bytes) noexcept { return len > mtu_bytes; }

// Two P_Keys let a packet through if their partition numbers are equal (and
// not 0) and at least one of them is a full member (IBA 10.9.3).
inline constexpr std::uint16_t kPkeyPartitionMask = 0x7fff;
inline constexpr std::uint16_t kPkeyFullMember = 0x8000;
constexpr bool pkey_match(std::uint16_t a, std::uint16_t b) noexcept {
    return (a & kPkeyPartitionMask) != 0 && (a & kPkeyPartitionMask) == (b & kPkeyPartitionMask) &&
           ((a | b) & kPkeyFullMember);
}

// A send completion (success or error) for a work request on QP qpn.
constexpr Wc send_wc(std::uint64_t wr_id, WcStatus status, std::uint32_t qpn) noexcept {
    return Wc{wr_id, status, WcOpcode::send, 0, 0, 0, qpn, 0, 0, 0, 0};
}

// Completions a provider makes itself (the software HCAs' sends; a send the
// verbs provider refuses before the device sees it): a bounded FIFO, returned
// by the CQ's next poll. Not thread-safe (one poller, as a CQ).
//
// A send completion is never dropped: a provider reserves its place before it
// accepts the work request (reserve(), false when the queue is full: the
// request is not accepted, as ibv_post_send fails with ENOMEM when the send
// queue is full), then pushes it (push_reserved) or gives the place back
// (unreserve: a successful unsignaled send). Other completions (push) only
// take places nobody has reserved.
class WcQueue {
  public:
    explicit WcQueue(std::size_t capacity) : ring_(capacity) {}
    // Room for one completion that push_reserved will add; false when full.
    bool reserve() noexcept {
        if (full())
            return false;
        ++reserved_;
        return true;
    }
    // Room for up to n: how many were reserved.
    int reserve_n(int n) noexcept {
        const std::size_t room = ring_.size() - count_ - reserved_;
        const std::size_t k = static_cast<std::size_t>(n) < room ? static_cast<std::size_t>(n) : room;
        reserved_ += k;
        return static_cast<int>(k);
    }
    void unreserve() noexcept { --reserved_; }
    void push_reserved(const Wc &wc) noexcept {
        --reserved_;
        put(wc);
    }
    // False (and nothing queued) when full, reserved places included.
    bool push(const Wc &wc) noexcept {
        if (full())
            return false;
        put(wc);
        return true;
    }
    // Move up to n completions into wc; returns how many.
    int pop(Wc *wc, int n) noexcept {
        int got = 0;
        while (got < n && count_) {
            wc[got++] = ring_[head_];
            head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
            --count_;
        }
        return got;
    }
    bool empty() const noexcept { return count_ == 0; }
    bool full() const noexcept { return count_ + reserved_ >= ring_.size(); }

  private:
    void put(const Wc &wc) noexcept {
        const std::size_t i = head_ + count_;
        ring_[i < ring_.size() ? i : i - ring_.size()] = wc;
        ++count_;
    }
    std::vector<Wc> ring_;
    std::size_t head_ = 0, count_ = 0, reserved_ = 0;
};

// Write the GRH (IBA 8.3) a UD receiver finds in the first kGrhLen bytes of
// its buffer: IPVer 6, traffic class and flow label from the address,
// PayLen (BTH + DETH + payload + ICRC), NxtHdr 0x1b (BTH), hop limit, SGID, DGID.
void write_grh(std::uint8_t *buf, const AhAttr &ah, const Gid &sgid, std::uint32_t payload_len) noexcept;

// RoCE multicast: attaching a QP to a multicast GID also joins the IP group
// behind it on the port's network device (IPV6_JOIN_GROUP, or
// IP_ADD_MEMBERSHIP for an IPv4-mapped GID), so that the device's filter
// and the switches (MLD/IGMP snooping) let the group's packets in, as the
// kernel's RoCE drivers do. Counted per (group, device): joined on the
// first attach, left on the last detach. Not thread-safe (control path).
class IpGroups {
  public:
    IpGroups() = default;
    ~IpGroups();
    IpGroups(const IpGroups &) = delete;
    IpGroups &operator=(const IpGroups &) = delete;
    // 0, or a negative errno with *err saying what failed.
    int change(const Gid &mgid, unsigned ifindex, bool join, std::string *err);

  private:
    int sock4_ = -1, sock6_ = -1;
    std::vector<std::pair<std::pair<Gid, unsigned>, int>> refs_;  // ((mgid, ifindex), attachments)
};

// A glue: a shared object a provider dlopen()s when a device is opened, so
// that the driver has no link-time dependency on the libraries behind it
// (verbs: rdma-core; xdp: libxdp and libbpf). It exports one table of
// function pointers whose first two fields are its ABI number and its size.
struct GlueEntry {  // one function pointer of a table, by name (for the check that none is null)
    const char *name;
    std::size_t offset;
};
#ifndef IPOIB_BUILD_ROOT
#define IPOIB_BUILD_ROOT ""  // set by meson: the build tree, with a trailing '/'
#endif
struct GlueSpec {
    const char *env;         // $VAR naming the file to load (ignored in set-uid/set-gid processes)
    const char *file;        // its file name, looked for in DIR-glue/ then DIR/, DIR holding the object with
                             // this code (the PMD), then the build tree's copy, then by soname (ld.so's path)
    const char *build_path;  // the build tree's copy ("" if none)
    const char *build_root;  // tried only when this code's object lies under this directory
    const char *symbol;      // the table's symbol
    std::uint32_t abi;       // the table's first field must be this
    std::uint32_t size;      // and its second sizeof(the table)
    std::span<const GlueEntry> entries;
    const char *what;        // "the rdma-core glue", for messages
    const char *hint;        // appended to the error when nothing loads
};
// The name of the first null entry of a table, or nullptr if none is null.
const char *glue_missing(const void *table, std::span<const GlueEntry> entries) noexcept;
// Load the first candidate whose table matches (ABI, size, no null entry):
// returns the dlopen handle and *table; else nullptr and *err naming every
// candidate's reason.
void *load_glue(const GlueSpec &spec, const void **table, std::string *err);

// A decimal option value in [lo, hi], def if the option is absent.
// On a bad value: false, *err = "option KEY=VALUE: expected LO..HI".
bool option_uint(const ProviderOptions &opts, const char *key, std::uint32_t lo, std::uint32_t hi,
                 std::uint32_t def, std::uint32_t *out, std::string *err);

} // namespace ipoib::hca::common
