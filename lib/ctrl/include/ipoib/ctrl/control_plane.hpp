// SPDX-License-Identifier: BSD-3-Clause
// The IPoIB control plane of one HCA: SA client, path cache, port monitor
// and one multicast state machine per interface (port x P_Key), following
// Linux ipoib's rules (RFC 4391):
//
// - The broadcast group ff1S:401b:<pkey>::ffff:ffff is probed (it must
//   exist; the SM creates it), then joined as full member. Until that join
//   succeeds the interface is down and nothing else is joined. Its Q_Key,
//   MTU, SL, rate, traffic class, flow label and hop limit become the
//   interface's; every other group is joined (created) with them and must
//   match them.
// - Send-only full-member joins happen when the fast path first transmits to
//   a group; failed joins back off (1 s doubling to 16 s).
// - Port events flush at Linux ipoib's levels: SM change and GID change
//   (and a membership the SA lost) a light flush: no leaves, every group
//   rejoined, paths invalid, the link kept up unless the rejoin fails; port
//   active / error and LID change a normal flush: groups left, link down,
//   restart; P_Key change a heavy flush: nothing if the P_Key is where it
//   was, else a restart on its new index (on_pkey_index), or down while it
//   is gone. A periodic audit of the broadcast membership notices an SM
//   that restarted and forgot us.
// - Allmulticast (Solaris ibd's multicast promiscuous mode) joins every
//   IPoIB group of the partition the SA lists, as non-member.
// - On stop, every group is left.
//
// Everything runs on one control thread (run_once); the fast path talks to
// it only through lock-free request rings (request_path, request_sendonly).
//
// Seams for tests: CpConfig::sa_service replaces the libibumad SaClient with
// any SaService (an in-memory SA in test/unit/ctrl), CpConfig::now_ms the
// monotonic clock; with a fake hca::Context the whole state machine runs
// without a fabric. Numbers (timeouts, backoff, intervals, ring size) are
// in constants.hpp, with the layer's error convention.
//
// Management: on an InfiniBand port all of the above goes through the SA.
// A RoCE (Ethernet link layer) port has no SM and no SA: in static
// management the broadcast group "exists" with the parameters configured
// (IfaceConfig::static_*: Q_Key 0x0b1b and the port's active MTU unless
// set), every join succeeds at once with those parameters (the provider's
// multicast attach joins the IP group on the netdev), and a path is the
// destination GID itself (no LID; the address handle carries a GRH).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ipoib/ctrl/constants.hpp"
#include "ipoib/ctrl/sa.hpp"
#include "ipoib/hca/hca.hpp"

namespace ipoib::ctrl {

enum class LogLevel : std::uint8_t { error, warning, notice, info, debug };
// topic: "ipoib" (interface and path events) or "ipoib.mcast" (multicast).
using LogFn = std::function<void(LogLevel, const char *topic, const std::string &msg)>;

enum class IfaceState : std::uint8_t {
    stopped,
    port_down,       // waiting for the port to be ACTIVE
    pkey_missing,    // waiting for the P_Key to appear in the port's table
    probing,         // asking the SA whether the broadcast group exists and fits
    joining,         // broadcast join sent
    up,
};
const char *to_string(IfaceState s);

inline constexpr std::uint32_t kDefaultStaticQkey = kIpoibQkey;

struct IfaceConfig {
    std::uint8_t port = 1;
    std::uint16_t pkey = 0;  // 0: the P_Key at index 0, as Linux does
    // Static management only: the broadcast group's Q_Key and MTU (bytes; 0:
    // the port's active MTU). The interface MTU is this minus the 4-byte header.
    std::uint32_t static_qkey = kDefaultStaticQkey;
    std::uint32_t static_mtu = 0;
    bool allmulti = false;
    std::uint32_t allmulti_poll_ms = kAllmultiPollMs;
    std::uint32_t audit_ms = kAuditMs;
};

struct BroadcastParams {
    Gid mgid{};
    std::uint16_t mlid = 0;
    std::uint32_t qkey = 0;
    std::uint8_t mtu = 0, rate = 0, sl = 0, traffic_class = 0, hop_limit = 0;
    std::uint32_t flow_label = 0;
};

struct GroupView {
    Gid mgid;
    std::uint16_t mlid;
    std::uint8_t join_state;  // JoinState bits requested
    bool joined;
    std::uint32_t joins, failures;
    std::string last_error;
};

struct IfaceCounters {
    std::uint64_t broadcast_absent, broadcast_mtu_too_big, port_not_active, pkey_missing, sa_timeouts;
    std::uint64_t joins, join_failures, leaves, flushes, memberships_lost, param_mismatch;
    std::uint64_t bad_answers;  // join answers for another MGID than the one asked: refused
    std::uint64_t bad_mtu;      // MTU codes naming no MTU (IBA: 1..5) in SA answers, and group MTUs above the port's: refused
    std::uint64_t pkey_moves;        // heavy flushes that moved the QP to the P_Key's new index
    std::uint64_t pkey_move_failed;  // ... that on_pkey_index could not do (the interface waited, then tried again)
};

class ControlPlane;

class Interface {
  public:
    IfaceState state() const { return state_; }
    bool up() const { return state_ == IfaceState::up; }
    // Unique within its ControlPlane, never reused: what SA callbacks and the
    // fast-path ring hold instead of a pointer (ControlPlane::find_interface).
    std::uint64_t id() const { return id_; }
    const std::string &name() const { return name_; }
    std::uint16_t pkey() const { return pkey_; }
    int pkey_index() const { return pkey_index_; }
    const BroadcastParams &broadcast() const { return bcast_; }
    std::vector<GroupView> groups() const;
    const IfaceCounters &counters() const { return counters_; }

    // Control thread: join (full member) / leave an IP multicast group's MGID.
    void join(const Gid &mgid);
    void leave(const Gid &mgid);

    // Called on the control thread.
    // The link: up once the broadcast group is joined, down when it is lost.
    // A light flush (SM change, GID change, lost membership) keeps it up
    // while the groups are rejoined; only a failed rejoin takes it down.
    std::function<void(bool up)> on_link;
    std::function<void(const Gid &mgid, const McMemberRecord &rec, bool joined)> on_group;
    // The interface's P_Key moved to another index of the port's P_Key table
    // (P_Key change event, or found elsewhere on a restart): a QP created
    // with pkey_index() must move there. Called while the link is down,
    // before the broadcast group is joined again (heavy flush). If the P_Key
    // is gone, on_link(false) and the interface waits (pkey_missing).
    // Returns false if the QP could not move: the interface stays down (a
    // notice, pkey_move_failed) and tries again after kPkeyRecheckMs.
    std::function<bool(int new_index)> on_pkey_index;
    // A flush restarts the interface (not called when it is removed). light:
    // the SA forgot us (paths invalid, groups rejoined, addresses unchanged);
    // else the port or its partition changed (normal or heavy): every path
    // the user holds may be wrong (LIDs move) and must be resolved again.
    std::function<void(bool light)> on_flush;

  private:
    friend class ControlPlane;
    // The waiting-state messages, each logged once per occurrence.
    enum class Notice : std::int8_t {
        none = -1,
        probe_sa_silent,
        probe_failed,
        broadcast_absent,
        broadcast_mtu_too_big,
        bad_mtu,
        broadcast_join_failed,
        port_not_active,
        pkey_missing,
        pkey_move_failed,
        allmulti_static,
    };
    struct Group {
        Gid mgid;
        std::uint8_t join_state = kFullMember;
        bool wanted = true;  // false: leave it
        bool joined = false;
        bool in_flight = false;
        std::uint16_t mlid = 0;
        McMemberRecord rec{};
        std::uint32_t joins = 0, failures = 0;
        std::uint32_t backoff_ms = 0;
        std::uint64_t next_try_ms = 0;
        std::string last_error;
    };

    Interface(ControlPlane *cp, const IfaceConfig &cfg, std::uint64_t id);
    // The interface `id` if it still exists (and, with `gen`, has not been
    // flushed since): how an SA callback finds its interface.
    static Interface *alive(ControlPlane *cp, std::uint64_t id);
    static Interface *alive(ControlPlane *cp, std::uint64_t id, std::uint64_t gen);
    void tick(std::uint64_t now);
    void flush(const char *why, bool restart, bool light = false);
    void pkey_changed();
    bool find_pkey(int *index, std::uint16_t *value) const;
    void report_link(bool up);
    void start_probe();
    void on_probe(SaStatus st, const std::vector<McMemberRecord> &recs);
    void on_bcast_join(SaStatus st, const std::vector<McMemberRecord> &recs);
    bool refuse_mtu(std::uint8_t code, std::uint64_t now);
    void join_group(Group &g, std::uint64_t now);
    void on_group_join(const std::array<std::uint8_t, 16> &key, SaStatus st, const std::vector<McMemberRecord> &recs);
    void on_audit(SaStatus st, const std::vector<McMemberRecord> &recs);
    void group_joined(Group &g, const McMemberRecord &rec);
    McMemberRecord static_record(const Gid &mgid, std::uint8_t join_state) const;
    void send_leave(const Gid &mgid, std::uint8_t join_state);
    void leave_all(bool send_leaves);
    void retry_later(std::uint64_t now);
    void log(LogLevel l, const char *topic, const std::string &m) const;
    void notice_once(Notice key, const std::string &m);

    ControlPlane *cp_;
    std::uint64_t id_;
    IfaceConfig cfg_;
    std::string name_;
    IfaceState state_ = IfaceState::stopped;
    std::uint16_t pkey_ = 0;
    int pkey_index_ = -1;
    BroadcastParams bcast_{};
    std::map<std::array<std::uint8_t, 16>, Group> groups_;
    IfaceCounters counters_{};
    std::uint32_t backoff_ms_ = 0;
    std::uint64_t next_try_ms_ = 0;
    std::uint64_t next_audit_ms_ = 0, next_allmulti_ms_ = 0;
    std::uint64_t generation_ = 0;  // bumped on flush: stale answers are ignored
    bool request_in_flight_ = false, audit_in_flight_ = false, sa_silent_ = false;
    bool link_reported_ = false;  // what on_link last said
    Notice last_notice_ = Notice::none;  // the waiting-state message last logged
    bool troubled_ = false;  // a problem was reported since the interface was last up
};

struct PathEntry {
    PathRecord rec;
    bool valid = false;
    bool pending = false;
    std::uint64_t updated_ms = 0;
    std::uint32_t failures = 0;
    std::uint32_t epoch = 0;  // bumped when invalidated: an answer asked for before is stale
};

// Paths by (DGID, P_Key, local port), bounded: when full, a new entry evicts
// the least recently updated invalid entry, else the least recently updated
// valid one; entries with a query outstanding are never evicted.
class PathCache {
  public:
    struct Key {
        std::array<std::uint8_t, 16> dgid;
        std::uint16_t pkey;
        std::uint8_t port = 1;
        bool operator<(const Key &o) const {
            return dgid != o.dgid ? dgid < o.dgid : pkey != o.pkey ? pkey < o.pkey : port < o.port;
        }
    };
    PathEntry *find(const Gid &dgid, std::uint16_t pkey, std::uint8_t port = 1);
    // The entry, made if absent (evicting one if full); nullptr if the cache
    // is full of entries being resolved.
    PathEntry *get(const Gid &dgid, std::uint16_t pkey, std::uint8_t port = 1);
    void invalidate(const Gid &dgid);
    void invalidate_port(std::uint8_t port);
    void invalidate_all();
    std::size_t size() const { return map_.size(); }
    std::size_t max_size() const { return max_; }
    void set_max_size(std::size_t n) { max_ = n ? n : 1; }
    std::uint64_t evictions() const { return evictions_; }
    const std::map<Key, PathEntry> &entries() const { return map_; }

  private:
    bool evict_one();
    std::map<Key, PathEntry> map_;
    std::size_t max_ = kPathCacheMax;
    std::uint64_t evictions_ = 0;
};

enum class Management : std::uint8_t {
    automatic,  // by the port's link layer: InfiniBand -> sa, Ethernet -> static_roce
    sa,         // SA queries and joins over libibumad
    static_roce,
};
const char *to_string(Management m);

// The control plane's clock: milliseconds, monotonic.
using ClockFn = std::uint64_t (*)();

struct CpConfig {
    SaConfig sa;
    Management mgmt = Management::automatic;
    int gid_index = -1;  // the port GID's index; -1: hca::ipoib_gid_index()
    LogFn log;           // default: stderr
    // The SA to use (not owned; must outlive the ControlPlane). nullptr: the
    // built-in SaClient over libibumad. Either way ControlPlane::open() opens
    // it with `sa` (SA management only) and stop() closes it.
    SaService *sa_service = nullptr;
    // Time for backoffs, audits and stop()'s wait. nullptr: monotonic_ms.
    ClockFn now_ms = nullptr;
    // Path cache entries at most (PathCache).
    std::size_t path_cache_max = kPathCacheMax;
};

struct CpCounters {
    std::uint64_t path_requests, path_resolved, path_failed, path_cache_hits, ring_full, port_events;
    std::uint64_t path_evictions;   // entries evicted to make room (PathCache bound)
    std::uint64_t path_cache_full;  // requests refused: the cache full of paths being resolved
    std::uint64_t path_bad_answers; // path answers for another DGID or P_Key: refused
};

class ControlPlane {
  public:
    ControlPlane() = default;
    ControlPlane(const ControlPlane &) = delete;
    ControlPlane &operator=(const ControlPlane &) = delete;
    ~ControlPlane();

    bool open(hca::Context &ctx, const CpConfig &cfg, std::string *err);
    Interface *add_interface(const IfaceConfig &cfg, std::string *err);
    // Leaves the interface's groups and destroys it at once. Requests it has
    // outstanding (SA answers, fast-path ring entries) are ignored when they
    // come back: they refer to it by id, never by pointer.
    void remove_interface(Interface *i);
    // The interface with this id, nullptr once removed.
    Interface *find_interface(std::uint64_t id) const;
    // Leave every group of every interface (waiting up to timeout_ms for the
    // SA to acknowledge), then close. Also done by the destructor.
    void stop(int timeout_ms = kStopTimeoutMs);

    // One step of the control thread: port events, SA answers, timers,
    // fast-path requests. Waits at most max_wait_ms.
    void run_once(int max_wait_ms);

    // Fast path, lock-free, never blocks: ask for a path / a send-only join.
    // Results arrive through on_path / Interface::on_group on the control thread.
    // request_sendonly reads iface's id (the pointer must be valid during the
    // call); the ring holds the id, so the interface may be removed before
    // the ring is drained.
    // A path is resolved from local `port` (its GID is the SGID; answers are
    // matched by DGID, P_Key and port). port 0: the port of the first
    // interface with this P_Key, else of the first interface, else 1.
    bool request_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port = 0);
    bool request_sendonly(Interface *iface, const Gid &mgid);
    // Path results, with and without the local port (either, or both, may be set).
    std::function<void(const Gid &dgid, std::uint16_t pkey, SaStatus st, const PathRecord *rec)> on_path;
    std::function<void(std::uint8_t port, const Gid &dgid, std::uint16_t pkey, SaStatus st, const PathRecord *rec)>
        on_port_path;

    PathCache &paths() { return paths_; }
    // The SA in use: CpConfig::sa_service, or the built-in SaClient.
    SaService &sa() { return *sa_; }
    const CpCounters &counters() const { return counters_; }
    const std::vector<std::unique_ptr<Interface>> &interfaces() const { return ifaces_; }
    hca::Context &hca() { return *ctx_; }
    const hca::PortAttr &port_attr(std::uint8_t port) const { return ports_.at(port - 1); }
    Gid port_gid(std::uint8_t port) const;
    int gid_index(std::uint8_t port) const { return gid_index_.at(port - 1); }
    Management management() const { return mgmt_; }
    bool is_static() const { return mgmt_ == Management::static_roce; }
    void log(LogLevel l, const char *topic, const std::string &m) const;

  private:
    friend class Interface;
    enum class RequestKind : std::uint8_t {
        path,           // resolve (gid, pkey)
        sendonly_join,  // send-only join of gid on iface
    };
    struct Request {
        RequestKind kind;
        std::uint8_t port;       // path: the local port (0: by P_Key)
        std::uint16_t pkey;
        std::uint64_t iface_id;  // sendonly_join: Interface::id()
        Gid gid;
    };
    // Bounded MPSC ring (Vyukov): producers claim with CAS on the tail.
    struct Cell {
        std::atomic<std::uint64_t> seq;
        Request req;
    };
    bool push(const Request &r);
    bool pop(Request *r);
    void refresh_ports();
    void resolve_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port);
    void ask_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port, PathEntry &e);
    void report_path(std::uint8_t port, const Gid &dgid, std::uint16_t pkey, SaStatus st, const PathRecord *rec);
    std::uint8_t path_port(std::uint16_t pkey) const;
    std::uint64_t now() const { return clock_(); }

    hca::Context *ctx_ = nullptr;
    CpConfig cfg_;
    SaClient sa_client_;            // the built-in SA
    SaService *sa_ = &sa_client_;   // the one in use
    ClockFn clock_ = monotonic_ms;
    PathCache paths_;
    std::vector<hca::PortAttr> ports_;
    std::vector<int> gid_index_;  // per port
    Management mgmt_ = Management::sa;
    std::vector<std::unique_ptr<Interface>> ifaces_;
    std::uint64_t next_iface_id_ = 1;
    std::unique_ptr<Cell[]> ring_;
    alignas(64) std::atomic<std::uint64_t> ring_tail_{0};
    alignas(64) std::uint64_t ring_head_ = 0;
    CpCounters counters_{};
    bool open_ = false;
};

} // namespace ipoib::ctrl
