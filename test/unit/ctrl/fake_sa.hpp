// SPDX-License-Identifier: BSD-3-Clause
// An in-memory SaService for control-plane unit tests. It records every
// request (method, record with MGID and join state, component mask), and the
// test decides each answer: a status with records, a drop (the final
// timeout, -ETIMEDOUT), or nothing yet. Some requests can be answered
// automatically: leaves (ok), path queries (from the `paths` table), and,
// with `auto_mcast`, joins and MCMemberRecord tables from a small model of
// the SA's groups. As with SaClient, callbacks run from poll() only.
//
// Time: with `clock` set, a poll(t) that delivers nothing advances *clock
// by t, as if it had waited (so ControlPlane::stop() ends its wait).
#pragma once

#include <array>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ipoib/ctrl/sa.hpp"

namespace ipoib::ctrl::test {

// A clock the test sets, for CpConfig::now_ms.
struct TestClock {
    static inline std::uint64_t now = 0;
    static std::uint64_t now_ms() { return now; }
};

enum class SaMethod : std::uint8_t { path_get, join, leave, mcm_get_table };

struct SaRequest {
    std::uint64_t id = 0;
    SaMethod method{};
    std::uint64_t comp_mask = 0;  // as the SA receives it (JoinState added to joins and leaves)
    McMemberRecord mcm{};         // join, leave, GetTable: the record sent
    Gid sgid{}, dgid{};           // path query
    std::uint16_t pkey = 0;       // path query
    bool answered = false;        // an answer (or drop) is scheduled or delivered
    bool done = false;            // the callback ran, or the request was cancelled / closed
    bool cancelled = false;

    const Gid &mgid() const { return mcm.mgid; }
    std::uint8_t join_state() const { return mcm.join_state; }
};

class FakeSa final : public SaService {
  public:
    using GidKey = std::array<std::uint8_t, 16>;

    // ---- what the test sets -------------------------------------------------
    std::uint64_t *clock = nullptr;
    bool auto_leave = true;   // leaves answered ok at the next poll
    bool auto_paths = true;   // path queries answered from `paths` (absent: status "no records")
    bool auto_mcast = false;  // joins and GetTables answered from `groups` / members
    std::map<std::pair<GidKey, std::uint16_t>, PathRecord> paths;  // (DGID, P_Key) -> record
    std::map<GidKey, McMemberRecord> groups;                      // the SA's groups (auto_mcast)
    bool fail_open = false;

    // ---- what the test reads ------------------------------------------------
    std::deque<SaRequest> requests;  // every request, in the order sent (stable references)
    SaConfig opened_with{};
    int opens = 0, closes = 0, set_sm_calls = 0;
    std::uint16_t sm_lid = 0;
    std::uint8_t sm_sl = 0;
    std::set<std::pair<GidKey, GidKey>> members;  // (MGID, port GID) the SA lists (auto_mcast)

    void add_path(const PathRecord &r) { paths[{r.dgid.raw, r.pkey}] = r; }
    void add_group(const McMemberRecord &r) { groups[r.mgid.raw] = r; }

    // Schedule the answer of request `id` for the next poll(). false if the
    // request is unknown, already answered or gone.
    bool answer(std::uint64_t id, SaStatus st, std::vector<McMemberRecord> recs = {}) {
        return schedule(id, st, std::move(recs), {});
    }
    bool answer_path(std::uint64_t id, SaStatus st, std::vector<PathRecord> recs = {}) {
        return schedule(id, st, {}, std::move(recs));
    }
    // The SA never answers: the request fails with -ETIMEDOUT at the next poll
    // (what SaClient reports after its last retry).
    bool drop(std::uint64_t id) { return schedule(id, SaStatus{-ETIMEDOUT}, {}, {}); }

    // The last request of a method (optionally for an MGID, or a path query's
    // DGID); nullptr if none. count(): how many.
    SaRequest *last(SaMethod m) {
        for (auto it = requests.rbegin(); it != requests.rend(); ++it)
            if (it->method == m)
                return &*it;
        return nullptr;
    }
    SaRequest *last(SaMethod m, const Gid &gid) {
        for (auto it = requests.rbegin(); it != requests.rend(); ++it)
            if (it->method == m && (m == SaMethod::path_get ? it->dgid : it->mcm.mgid) == gid)
                return &*it;
        return nullptr;
    }
    std::size_t count(SaMethod m) const {
        std::size_t n = 0;
        for (auto &r : requests)
            n += r.method == m;
        return n;
    }
    std::size_t count(SaMethod m, const Gid &gid) const {
        std::size_t n = 0;
        for (auto &r : requests)
            n += r.method == m && (m == SaMethod::path_get ? r.dgid : r.mcm.mgid) == gid;
        return n;
    }
    // Requests waiting for the test to answer them.
    std::vector<SaRequest *> unanswered() {
        std::vector<SaRequest *> v;
        for (auto &r : requests)
            if (!r.answered && !r.done)
                v.push_back(&r);
        return v;
    }

    // ---- SaService ----------------------------------------------------------
    bool open(const SaConfig &cfg, std::string *err) override {
        ++opens;
        opened_with = cfg;
        if (fail_open) {
            *err = "fake SA: open refused";
            return false;
        }
        open_ = true;
        return true;
    }
    void close() override {
        ++closes;
        open_ = false;
        for (auto &[id, s] : outstanding_)
            requests[s.index].done = true;
        outstanding_.clear();
        queue_.clear();
    }
    bool is_open() const override { return open_; }
    void set_sm(std::uint16_t lid, std::uint8_t sl) override {
        ++set_sm_calls;
        sm_lid = lid;
        sm_sl = sl;
    }

    std::uint64_t query_path(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, PathCallback cb) override {
        SaRequest r;
        r.method = SaMethod::path_get;
        r.sgid = sgid;
        r.dgid = dgid;
        r.pkey = pkey;
        r.comp_mask = kPrDgid | kPrSgid | kPrReversible | kPrNumbPath | kPrPkey;
        const std::uint64_t id = submit(r, std::move(cb), {});
        if (auto_paths) {
            auto it = paths.find({dgid.raw, pkey});
            if (it != paths.end())
                answer_path(id, SaStatus{}, {it->second});
            else
                answer_path(id, SaStatus{kSaStatusNoRecords});
        }
        return id;
    }
    std::uint64_t join(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override {
        SaRequest r;
        r.method = SaMethod::join;
        r.mcm = rec;
        r.comp_mask = comp_mask | kMcmJoinState;
        const std::uint64_t id = submit(r, {}, std::move(cb));
        if (auto_mcast)
            model_join(id, rec, comp_mask);
        return id;
    }
    std::uint64_t leave(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override {
        SaRequest r;
        r.method = SaMethod::leave;
        r.mcm = rec;
        r.comp_mask = comp_mask | kMcmJoinState;
        const std::uint64_t id = submit(r, {}, std::move(cb));
        if (auto_leave) {
            members.erase({rec.mgid.raw, rec.port_gid.raw});
            answer(id, SaStatus{}, {rec});
        }
        return id;
    }
    std::uint64_t query_mcmembers(const McMemberRecord &rec, std::uint64_t comp_mask, McmCallback cb) override {
        SaRequest r;
        r.method = SaMethod::mcm_get_table;
        r.mcm = rec;
        r.comp_mask = comp_mask;
        const std::uint64_t id = submit(r, {}, std::move(cb));
        if (auto_mcast)
            model_table(id, rec, comp_mask);
        return id;
    }
    void cancel(std::uint64_t id) override {
        auto it = outstanding_.find(id);
        if (it == outstanding_.end())
            return;
        requests[it->second.index].done = requests[it->second.index].cancelled = true;
        outstanding_.erase(it);
    }

    int poll(int timeout_ms) override {
        int done = 0;
        std::deque<Delivery> batch;
        batch.swap(queue_);  // answers scheduled by callbacks arrive at the next poll
        for (auto &d : batch) {
            auto it = outstanding_.find(d.id);
            if (it == outstanding_.end())
                continue;  // cancelled or closed
            Slot s = std::move(it->second);
            outstanding_.erase(it);
            requests[s.index].done = true;
            if (d.st.status == -ETIMEDOUT)
                ++counters_.timed_out;
            else
                ++counters_.answered;
            if (s.path_cb)
                s.path_cb(d.st, d.paths);
            else if (s.mcm_cb)
                s.mcm_cb(d.st, d.mcms);
            ++done;
        }
        if (done == 0 && timeout_ms > 0 && clock)
            *clock += static_cast<std::uint64_t>(timeout_ms);
        return done;
    }
    std::size_t outstanding() const override { return outstanding_.size(); }
    int next_timeout_ms() const override { return !queue_.empty() ? 0 : outstanding_.empty() ? -1 : kSaMaxTimeoutMs; }
    const SaCounters &counters() const override { return counters_; }

  private:
    struct Slot {
        std::size_t index;  // into requests
        PathCallback path_cb;
        McmCallback mcm_cb;
    };
    struct Delivery {
        std::uint64_t id;
        SaStatus st;
        std::vector<McMemberRecord> mcms;
        std::vector<PathRecord> paths;
    };

    std::uint64_t submit(SaRequest r, PathCallback pcb, McmCallback mcb) {
        r.id = next_id_++;
        requests.push_back(r);
        outstanding_[r.id] = Slot{requests.size() - 1, std::move(pcb), std::move(mcb)};
        ++counters_.sent;
        return r.id;
    }
    bool schedule(std::uint64_t id, SaStatus st, std::vector<McMemberRecord> mcms, std::vector<PathRecord> prs) {
        auto it = outstanding_.find(id);
        if (it == outstanding_.end() || requests[it->second.index].answered)
            return false;
        requests[it->second.index].answered = true;
        queue_.push_back(Delivery{id, st, std::move(mcms), std::move(prs)});
        return true;
    }

    // The model SA: a join of an existing group answers its record; a join
    // that carries the creation components (Q_Key, P_Key) creates the group.
    void model_join(std::uint64_t id, const McMemberRecord &rec, std::uint64_t mask) {
        auto it = groups.find(rec.mgid.raw);
        if (it == groups.end()) {
            if (!(mask & kMcmQkey) || !(mask & kMcmPkey)) {
                answer(id, SaStatus{0x0200});  // SA status: request invalid
                return;
            }
            McMemberRecord g = rec;
            g.mlid = next_mlid_++;
            it = groups.emplace(rec.mgid.raw, g).first;
        }
        McMemberRecord a = it->second;
        a.port_gid = rec.port_gid;
        a.join_state = rec.join_state;
        members.insert({rec.mgid.raw, rec.port_gid.raw});
        answer(id, SaStatus{}, {a});
    }
    // GetTable by MGID (the group), MGID + port GID (a membership) or P_Key (the partition's groups).
    void model_table(std::uint64_t id, const McMemberRecord &q, std::uint64_t mask) {
        std::vector<McMemberRecord> out;
        for (auto &[k, g] : groups) {
            if ((mask & kMcmMgid) && g.mgid != q.mgid)
                continue;
            if ((mask & kMcmPkey) && (g.pkey & kPkeyMask) != (q.pkey & kPkeyMask))
                continue;
            McMemberRecord r = g;
            if (mask & kMcmPortGid) {
                if (!members.count({g.mgid.raw, q.port_gid.raw}))
                    continue;
                r.port_gid = q.port_gid;
            }
            out.push_back(r);
        }
        answer(id, SaStatus{}, out);
    }

    bool open_ = false;
    std::uint64_t next_id_ = 1;
    std::uint16_t next_mlid_ = 0xc100;
    std::map<std::uint64_t, Slot> outstanding_;
    std::deque<Delivery> queue_;
    SaCounters counters_{};
};

} // namespace ipoib::ctrl::test
