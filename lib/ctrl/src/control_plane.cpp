// SPDX-License-Identifier: BSD-3-Clause
#include "ipoib/ctrl/control_plane.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/mgid.hpp"

namespace ipoib::ctrl {

namespace {

std::uint32_t next_backoff(std::uint32_t b) {
    return b == 0 ? kBackoffStartMs : std::min(b * 2, kBackoffMaxMs);
}

std::string hex16(std::uint16_t v) {
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", v);
    return b;
}

constexpr auto kMtuCodeMin = static_cast<std::uint8_t>(hca::Mtu::mtu256);
constexpr auto kMtuCodeMax = static_cast<std::uint8_t>(hca::Mtu::mtu4096);

// An IB MTU code in bytes; 0 for a code that names no MTU.
std::uint32_t mtu_bytes(std::uint8_t code) {
    return code >= kMtuCodeMin && code <= kMtuCodeMax ? hca::mtu_bytes(static_cast<hca::Mtu>(code)) : 0;
}

std::array<std::uint8_t, 16> key_of(const Gid &g) { return g.raw; }

// An MTU code from the SA against IBA's codes (1..5: 256..4096 bytes) and
// the port's maximum MTU: what is wrong with it, or nullptr.
enum class MtuFault : std::uint8_t { none, no_such_mtu, above_port };
MtuFault mtu_fault(std::uint8_t code, hca::Mtu port_max) {
    if (mtu_bytes(code) == 0)
        return MtuFault::no_such_mtu;
    if (mtu_bytes(code) > mtu_bytes(static_cast<std::uint8_t>(port_max)))
        return MtuFault::above_port;
    return MtuFault::none;
}

std::string no_such_mtu_text(std::uint8_t code) {
    return "MTU code " + std::to_string(code) + " names no MTU (IBA codes 1..5: 256..4096 bytes)";
}

} // namespace

const char *to_string(IfaceState s) {
    switch (s) {
    case IfaceState::stopped: return "stopped";
    case IfaceState::port_down: return "port down";
    case IfaceState::pkey_missing: return "P_Key missing";
    case IfaceState::probing: return "probing broadcast group";
    case IfaceState::joining: return "joining broadcast group";
    case IfaceState::up: return "up";
    }
    return "?";
}

const char *to_string(Management m) {
    switch (m) {
    case Management::automatic: return "automatic";
    case Management::sa: return "SA";
    case Management::static_roce: return "static (RoCE)";
    }
    return "?";
}

// ---------------------------------------------------------------------------
// Path cache

PathEntry *PathCache::find(const Gid &dgid, std::uint16_t pkey, std::uint8_t port) {
    auto it = map_.find(Key{dgid.raw, pkey, port});
    return it == map_.end() ? nullptr : &it->second;
}

PathEntry *PathCache::get(const Gid &dgid, std::uint16_t pkey, std::uint8_t port) {
    const Key k{dgid.raw, pkey, port};
    if (auto it = map_.find(k); it != map_.end())
        return &it->second;
    if (map_.size() >= max_ && !evict_one())
        return nullptr;
    return &map_[k];
}

// Make room: the least recently updated invalid entry, else valid one; never
// one being resolved (its answer will look it up).
bool PathCache::evict_one() {
    auto victim = map_.end();
    for (auto it = map_.begin(); it != map_.end(); ++it) {
        const PathEntry &e = it->second;
        if (e.pending)
            continue;
        if (victim == map_.end())
            victim = it;
        else if (e.valid != victim->second.valid ? !e.valid : e.updated_ms < victim->second.updated_ms)
            victim = it;
    }
    if (victim == map_.end())
        return false;
    map_.erase(victim);
    ++evictions_;
    return true;
}

static void invalidate_entry(PathEntry &e) {
    e.valid = false;
    ++e.epoch;
}
void PathCache::invalidate(const Gid &dgid) {
    for (auto &[k, e] : map_)
        if (k.dgid == dgid.raw)
            invalidate_entry(e);
}
void PathCache::invalidate_port(std::uint8_t port) {
    for (auto &[k, e] : map_)
        if (k.port == port)
            invalidate_entry(e);
}
void PathCache::invalidate_all() {
    for (auto &[k, e] : map_)
        invalidate_entry(e);
}

// ---------------------------------------------------------------------------
// Interface

Interface::Interface(ControlPlane *cp, const IfaceConfig &cfg, std::uint64_t id) : cp_(cp), id_(id), cfg_(cfg) {}

Interface *Interface::alive(ControlPlane *cp, std::uint64_t id) { return cp->find_interface(id); }

Interface *Interface::alive(ControlPlane *cp, std::uint64_t id, std::uint64_t gen) {
    Interface *i = cp->find_interface(id);
    return i && i->generation_ == gen ? i : nullptr;
}

void Interface::log(LogLevel l, const char *topic, const std::string &m) const {
    cp_->log(l, topic, name_ + ": " + m);
}

// Log a waiting-state message once per occurrence, not on every retry.
void Interface::notice_once(Notice key, const std::string &m) {
    troubled_ = true;
    if (last_notice_ == key)
        return;
    last_notice_ = key;
    log(LogLevel::notice, "ipoib", m);
}

std::vector<GroupView> Interface::groups() const {
    std::vector<GroupView> v;
    for (auto &[_, g] : groups_)
        v.push_back({g.mgid, g.mlid, g.join_state, g.joined, g.joins, g.failures, g.last_error});
    return v;
}

void Interface::join(const Gid &mgid) {
    auto &g = groups_[key_of(mgid)];
    // A send-only member joins again as a full one (the SA adds the state;
    // the user is told again, now a member that receives).
    if (g.joined && !(g.join_state & kFullMember) && !g.in_flight)
        g.joined = false;
    g.mgid = mgid;
    g.wanted = true;
    g.join_state |= kFullMember;
    g.join_state &= static_cast<std::uint8_t>(~kSendOnlyFullMember);
    g.next_try_ms = 0;
}

void Interface::leave(const Gid &mgid) {
    auto it = groups_.find(key_of(mgid));
    if (it != groups_.end())
        it->second.wanted = false;
}

void Interface::retry_later(std::uint64_t now) {
    backoff_ms_ = next_backoff(backoff_ms_);
    next_try_ms_ = now + backoff_ms_;
    state_ = IfaceState::port_down;  // re-evaluate everything from the start
    report_link(false);              // e.g. a rejoin after a light flush failed
}

// Tell the user about the link once per change: a light flush keeps it up
// while the broadcast group is rejoined.
void Interface::report_link(bool up) {
    if (link_reported_ == up)
        return;
    link_reported_ = up;
    if (on_link)
        on_link(up);
}

// Light (SM change, client reregister, GID change, a membership the SA lost):
// the SA has forgotten our memberships, so nothing is left; every group is
// detached and rejoined, paths are marked invalid, the link stays up unless
// the rejoin fails. Normal (port events, LID change; removal): groups left
// while the port is up, link down, everything restarts.
void Interface::flush(const char *why, bool restart, bool light) {
    const bool was_up = state_ == IfaceState::up;
    ++counters_.flushes;
    ++generation_;
    request_in_flight_ = audit_in_flight_ = false;
    log(LogLevel::info, "ipoib.mcast",
        std::string(light ? "light flush, rejoining: " : "flushing multicast state: ") + why);
    leave_all(!light && was_up && cp_->port_attr(cfg_.port).state == hca::PortState::active);
    for (auto &[_, g] : groups_) {
        g.joined = false;
        g.in_flight = false;
        g.next_try_ms = 0;
        g.backoff_ms = 0;
    }
    // Send-only memberships are re-made on the next transmit; full ones are rejoined.
    std::erase_if(groups_, [](auto &kv) { return !(kv.second.join_state & (kFullMember | kNonMember)) ||
                                                  !kv.second.wanted; });
    state_ = restart ? IfaceState::port_down : IfaceState::stopped;
    backoff_ms_ = 0;
    next_try_ms_ = 0;
    last_notice_ = Notice::none;
    cp_->paths_.invalidate_port(cfg_.port);
    if (!light || !restart)
        report_link(false);
    if (restart && on_flush)
        on_flush(light);
}

// Heavy flush (P_Key change), as Linux ipoib's: nothing if the interface's
// P_Key is still where it was; else a restart, whose P_Key lookup takes the
// new index (on_pkey_index) or waits for the P_Key to come back.
void Interface::pkey_changed() {
    if (state_ == IfaceState::stopped)
        return;
    if (state_ == IfaceState::port_down || state_ == IfaceState::pkey_missing) {
        next_try_ms_ = 0;  // look again at the next tick
        return;
    }
    int idx = -1;
    std::uint16_t value = 0;
    if (find_pkey(&idx, &value) && idx == pkey_index_ && value == pkey_) {
        log(LogLevel::info, "ipoib", "P_Key table changed; P_Key " + hex16(pkey_) + " still at index " +
                                         std::to_string(idx) + ": nothing to flush");
        return;
    }
    flush(idx < 0 ? "P_Key gone" : "P_Key moved or changed", true);
}

// The interface's P_Key in the port's table: index 0 by default (as Linux),
// else the configured partition (a full-member entry preferred).
bool Interface::find_pkey(int *index, std::uint16_t *value) const {
    int idx = -1;
    std::uint16_t found = 0;
    for (int i = 0; i < static_cast<int>(hca::kMaxPkeys); ++i) {
        std::uint16_t k = 0;
        if (cp_->ctx_->query_pkey(cfg_.port, i, &k) != 0 || !(k & kPkeyMask))
            continue;
        if (cfg_.pkey == 0 ? i == 0 : (k & kPkeyMask) == (cfg_.pkey & kPkeyMask)) {
            if (idx < 0 || (k & kPkeyFullMember)) {
                idx = i;
                found = k;
            }
        }
    }
    *index = idx;
    *value = found;
    return idx >= 0;
}

// Tell the SA we leave (static management: there is no one to tell).
void Interface::send_leave(const Gid &mgid, std::uint8_t join_state) {
    if (cp_->is_static()) {
        ++counters_.leaves;
        return;
    }
    McMemberRecord r{};
    r.mgid = mgid;
    r.port_gid = cp_->port_gid(cfg_.port);
    r.join_state = join_state;
    // By id: the interface may be gone when the answer comes (remove_interface).
    cp_->sa_->leave(r, kMcmMgid | kMcmPortGid, [cp = cp_, id = id_](SaStatus st, const std::vector<McMemberRecord> &) {
        if (Interface *self = alive(cp, id); self && st.ok())
            ++self->counters_.leaves;
    });
}

// Static management: a group's record, from the configured broadcast parameters.
McMemberRecord Interface::static_record(const Gid &mgid, std::uint8_t join_state) const {
    const auto &pa = cp_->port_attr(cfg_.port);
    McMemberRecord r{};
    r.mgid = mgid;
    r.port_gid = cp_->port_gid(cfg_.port);
    r.qkey = cfg_.static_qkey;
    r.mlid = 0;  // RoCE: no LIDs
    std::uint8_t code = static_cast<std::uint8_t>(pa.active_mtu);
    for (std::uint8_t c = kMtuCodeMin; c <= kMtuCodeMax; ++c)
        if (mtu_bytes(c) == cfg_.static_mtu)
            code = c;
    r.mtu = code;
    r.pkey = static_cast<std::uint16_t>(pkey_ | kPkeyFullMember);
    r.hop_limit = kStaticMcastHopLimit;
    r.scope = mgid.raw[1] & 0xf;
    r.join_state = join_state;
    return r;
}

void Interface::leave_all(bool send_leaves) {
    auto leave_one = [&](const Gid &mgid, std::uint8_t join_state, const McMemberRecord &rec) {
        if (send_leaves)
            send_leave(mgid, join_state);
        if (on_group)
            on_group(mgid, rec, false);
    };
    for (auto &[_, g] : groups_)
        if (g.joined) {
            leave_one(g.mgid, g.join_state, g.rec);
            g.joined = false;
        }
    if (state_ == IfaceState::up) {
        McMemberRecord r{};
        r.mgid = bcast_.mgid;
        r.mlid = bcast_.mlid;
        leave_one(bcast_.mgid, kFullMember, r);
    }
}

void Interface::start_probe() {
    auto b = wire::broadcast_mgid(pkey_, wire::kScopeLinkLocal);
    if (cp_->is_static()) {
        // No SA: the broadcast group is what the configuration says, if the port can carry it.
        bcast_.mgid = b.value;
        const McMemberRecord r = static_record(b.value, kFullMember);
        const auto &pa = cp_->port_attr(cfg_.port);
        if (mtu_bytes(r.mtu) > mtu_bytes(static_cast<std::uint8_t>(pa.active_mtu))) {
            ++counters_.broadcast_mtu_too_big;
            notice_once(Notice::broadcast_mtu_too_big,
                        "configured broadcast MTU " + std::to_string(mtu_bytes(r.mtu)) +
                            " greater than the port's active MTU " +
                            std::to_string(mtu_bytes(static_cast<std::uint8_t>(pa.active_mtu))) +
                            "; interface stays down");
            retry_later(cp_->now());
            return;
        }
        on_bcast_join(SaStatus{}, {r});
        return;
    }
    state_ = IfaceState::probing;
    request_in_flight_ = true;
    McMemberRecord q{};
    q.mgid = b.value;
    bcast_.mgid = b.value;
    cp_->sa_->query_mcmembers(q, kMcmMgid, [cp = cp_, id = id_, gen = generation_](
                                               SaStatus st, const std::vector<McMemberRecord> &recs) {
        if (Interface *self = alive(cp, id, gen))
            self->on_probe(st, recs);
    });
}

void Interface::on_probe(SaStatus st, const std::vector<McMemberRecord> &recs) {
    request_in_flight_ = false;
    const std::uint64_t now = cp_->now();
    const std::string bg = wire::to_string(bcast_.mgid);
    if (st.status == -ETIMEDOUT) {
        ++counters_.sa_timeouts;
        notice_once(Notice::probe_sa_silent,
                    "SA not answering: cannot probe the IPoIB broadcast group " + bg + "; retrying");
        retry_later(now);
        return;
    }
    if (!st.ok() && st.status != kSaStatusNoRecords) {
        notice_once(Notice::probe_failed, "probing the IPoIB broadcast group " + bg + " failed: " + st.message());
        retry_later(now);
        return;
    }
    const McMemberRecord *rec = nullptr;
    for (auto &r : recs)
        if (r.mgid == bcast_.mgid)
            rec = &r;
    if (!rec) {
        ++counters_.broadcast_absent;
        notice_once(Notice::broadcast_absent, "IPoIB broadcast group " + bg +
                                                  " absent (is the SM configured with an ipoib partition " +
                                                  hex16(pkey_) + "?); interface stays down");
        retry_later(now);
        return;
    }
    if (refuse_mtu(rec->mtu, now))
        return;
    state_ = IfaceState::joining;
    request_in_flight_ = true;
    McMemberRecord j{};
    j.mgid = bcast_.mgid;
    j.port_gid = cp_->port_gid(cfg_.port);
    j.join_state = kFullMember;
    cp_->sa_->join(j, kMcmMgid | kMcmPortGid, [cp = cp_, id = id_, gen = generation_](
                                                 SaStatus s, const std::vector<McMemberRecord> &r) {
        if (Interface *self = alive(cp, id, gen))
            self->on_bcast_join(s, r);
    });
}

// The broadcast group's MTU (from the probe or the join's answer) must be an
// MTU and fit the port (the interface MTU and the driver's buffers follow
// from it). Refused: counted, logged once, retried after the backoff.
bool Interface::refuse_mtu(std::uint8_t code, std::uint64_t now) {
    const hca::Mtu port_max = cp_->port_attr(cfg_.port).max_mtu;
    switch (mtu_fault(code, port_max)) {
    case MtuFault::none: return false;
    case MtuFault::no_such_mtu:
        ++counters_.bad_mtu;
        notice_once(Notice::bad_mtu, "IPoIB broadcast group " + no_such_mtu_text(code) + "; interface stays down");
        break;
    case MtuFault::above_port:
        ++counters_.broadcast_mtu_too_big;
        notice_once(Notice::broadcast_mtu_too_big,
                    "IPoIB broadcast group MTU " + std::to_string(mtu_bytes(code)) +
                        " greater than port's maximum MTU " +
                        std::to_string(mtu_bytes(static_cast<std::uint8_t>(port_max))) + "; interface stays down");
        break;
    }
    retry_later(now);
    return true;
}

void Interface::on_bcast_join(SaStatus st, const std::vector<McMemberRecord> &recs) {
    request_in_flight_ = false;
    const std::uint64_t now = cp_->now();
    if (!st.ok() || recs.empty()) {
        ++counters_.join_failures;
        if (st.status == -ETIMEDOUT)
            ++counters_.sa_timeouts;
        notice_once(Notice::broadcast_join_failed,
                    "joining the IPoIB broadcast group " + wire::to_string(bcast_.mgid) + " failed: " +
                        (st.ok() ? std::string("empty answer") : st.message()) + "; retrying");
        retry_later(now);
        return;
    }
    const McMemberRecord &r = recs.front();
    if (r.mgid != bcast_.mgid) {
        // Not the group asked for: its parameters are not the broadcast group's.
        ++counters_.bad_answers;
        ++counters_.join_failures;
        notice_once(Notice::broadcast_join_failed, "joining the IPoIB broadcast group " +
                                                       wire::to_string(bcast_.mgid) + " failed: the SA answered for " +
                                                       wire::to_string(r.mgid) + "; retrying");
        retry_later(now);
        return;
    }
    if (mtu_fault(r.mtu, cp_->port_attr(cfg_.port).max_mtu) != MtuFault::none) {
        // We are a member now: undo it, then wait as for a bad probe answer.
        ++counters_.join_failures;
        send_leave(bcast_.mgid, kFullMember);
        refuse_mtu(r.mtu, now);
        return;
    }
    bcast_.mlid = r.mlid;
    bcast_.qkey = r.qkey;
    bcast_.mtu = r.mtu;
    bcast_.rate = r.rate;
    bcast_.sl = r.sl;
    bcast_.traffic_class = r.traffic_class;
    bcast_.flow_label = r.flow_label;
    bcast_.hop_limit = r.hop_limit;
    ++counters_.joins;
    state_ = IfaceState::up;
    backoff_ms_ = 0;
    if (troubled_)
        log(LogLevel::notice, "ipoib", "recovered: the broadcast group is joined, interface up");
    troubled_ = false;
    last_notice_ = Notice::none;
    char info[160];
    std::snprintf(info, sizeof info, "joined broadcast group %s: MLID 0x%04x, Q_Key 0x%x, MTU %u, SL %u, rate %u",
                  wire::to_string(bcast_.mgid).c_str(), r.mlid, r.qkey, mtu_bytes(r.mtu), r.sl, r.rate);
    log(LogLevel::info, "ipoib.mcast", info);
    next_audit_ms_ = now + cfg_.audit_ms;
    next_allmulti_ms_ = now;
    if (on_group)
        on_group(bcast_.mgid, r, true);
    report_link(true);  // once: after a light flush the link is up already
}

void Interface::group_joined(Group &grp, const McMemberRecord &rec) {
    grp.joined = true;
    grp.rec = rec;
    grp.mlid = rec.mlid;
    grp.backoff_ms = 0;
    grp.last_error.clear();
    ++grp.joins;
    ++counters_.joins;
    log(LogLevel::info, "ipoib.mcast", "joined " + wire::to_string(grp.mgid) + " (MLID " + hex16(grp.mlid) +
                                           ", join state " + std::to_string(grp.join_state) + ")");
    if (on_group)
        on_group(grp.mgid, grp.rec, true);
}

void Interface::join_group(Group &g, std::uint64_t) {
    if (cp_->is_static()) {
        group_joined(g, static_record(g.mgid, g.join_state));
        return;
    }
    McMemberRecord r{};
    r.mgid = g.mgid;
    r.port_gid = cp_->port_gid(cfg_.port);
    r.qkey = bcast_.qkey;
    r.mtu = bcast_.mtu;
    r.mtu_selector = kSelectorExactly;
    r.traffic_class = bcast_.traffic_class;
    r.pkey = static_cast<std::uint16_t>(pkey_ | kPkeyFullMember);
    r.rate = bcast_.rate;
    r.rate_selector = kSelectorExactly;
    r.sl = bcast_.sl;
    r.flow_label = bcast_.flow_label;
    r.hop_limit = bcast_.hop_limit;
    r.scope = g.mgid.raw[1] & 0xf;
    r.join_state = g.join_state;
    const std::uint64_t mask = kMcmMgid | kMcmPortGid | kMcmQkey | kMcmMtuSel | kMcmMtu | kMcmTclass | kMcmPkey |
                               kMcmRateSel | kMcmRate | kMcmSl | kMcmFlowLabel | kMcmHopLimit | kMcmScope;
    g.in_flight = true;
    cp_->sa_->join(r, mask, [cp = cp_, id = id_, gen = generation_, key = key_of(g.mgid)](
                                SaStatus st, const std::vector<McMemberRecord> &recs) {
        if (Interface *self = alive(cp, id, gen))
            self->on_group_join(key, st, recs);
    });
}

// A group join's answer (the group may have been left since: ignored then).
void Interface::on_group_join(const std::array<std::uint8_t, 16> &key, SaStatus st,
                              const std::vector<McMemberRecord> &recs) {
    auto it = groups_.find(key);
    if (it == groups_.end())
        return;
    Group &grp = it->second;
    grp.in_flight = false;
    const std::uint64_t now = cp_->now();
    const std::string name = wire::to_string(grp.mgid);
    if (st.ok() && !recs.empty() && recs[0].mgid != grp.mgid) {
        // An answer for another group: nothing of it is ours (no leave: we asked for grp).
        ++counters_.bad_answers;
        grp.last_error = "the SA answered for another group (" + wire::to_string(recs[0].mgid) + ")";
        st.status = -EINVAL;
    } else if (st.ok() && !recs.empty()) {
        // Joined, but refused if its MTU is no MTU or too big for the port, or if its
        // parameters are not the broadcast group's: then we leave it again.
        const MtuFault fault = mtu_fault(recs[0].mtu, cp_->port_attr(cfg_.port).max_mtu);
        if (fault != MtuFault::none) {
            ++counters_.bad_mtu;
            grp.last_error = fault == MtuFault::no_such_mtu
                                 ? no_such_mtu_text(recs[0].mtu)
                                 : "MTU " + std::to_string(mtu_bytes(recs[0].mtu)) + " greater than the port's maximum";
            st.status = -EINVAL;
        } else if (recs[0].qkey != bcast_.qkey || recs[0].mtu != bcast_.mtu) {
            ++counters_.param_mismatch;
            grp.last_error = "group parameters (Q_Key/MTU) differ from the broadcast group's";
            st.status = -EINVAL;
        }
        if (st.status == -EINVAL) {
            McMemberRecord l{};
            l.mgid = grp.mgid;
            l.port_gid = cp_->port_gid(cfg_.port);
            l.join_state = grp.join_state;
            cp_->sa_->leave(l, kMcmMgid | kMcmPortGid, [](SaStatus, const std::vector<McMemberRecord> &) {});
        }
    }
    if (!st.ok() || recs.empty()) {
        ++grp.failures;
        ++counters_.join_failures;
        if (st.status != -EINVAL)
            grp.last_error = st.message();
        grp.backoff_ms = next_backoff(grp.backoff_ms);
        grp.next_try_ms = now + grp.backoff_ms;
        log(LogLevel::warning, "ipoib.mcast", "join of " + name + " failed: " + grp.last_error + "; retry in " +
                                                  std::to_string(grp.backoff_ms / 1000) + " s");
        return;
    }
    group_joined(grp, recs[0]);
}

void Interface::tick(std::uint64_t now) {
    if (state_ == IfaceState::stopped || request_in_flight_)
        return;
    const auto &pa = cp_->port_attr(cfg_.port);
    if (state_ == IfaceState::port_down || state_ == IfaceState::pkey_missing) {
        if (now < next_try_ms_)
            return;
        if (pa.state != hca::PortState::active) {
            if (last_notice_ != Notice::port_not_active)
                ++counters_.port_not_active;
            notice_once(Notice::port_not_active, "port " + std::to_string(cfg_.port) + " is not active (" +
                                                     hca::to_string(pa.state) + "); interface stays down");
            report_link(false);
            return;
        }
        int idx = -1;
        std::uint16_t found = 0;
        if (!find_pkey(&idx, &found)) {
            if (state_ != IfaceState::pkey_missing)
                ++counters_.pkey_missing;
            state_ = IfaceState::pkey_missing;
            notice_once(Notice::pkey_missing, "P_Key " + hex16(cfg_.pkey) + " is not in port " +
                                                  std::to_string(cfg_.port) + "'s P_Key table; interface stays down");
            next_try_ms_ = now + kPkeyRecheckMs;
            report_link(false);
            return;
        }
        pkey_ = found;
        if (pkey_index_ >= 0 && idx != pkey_index_) {
            // The partition moved in the table: the user's QP must move with it.
            log(LogLevel::notice, "ipoib", "P_Key " + hex16(found) + " moved from index " +
                                               std::to_string(pkey_index_) + " to " + std::to_string(idx));
            if (on_pkey_index && !on_pkey_index(idx)) {
                ++counters_.pkey_move_failed;
                state_ = IfaceState::pkey_missing;  // waits as for a missing P_Key, then tries again
                notice_once(Notice::pkey_move_failed, "the QP cannot move to P_Key index " + std::to_string(idx) +
                                                          "; interface stays down");
                next_try_ms_ = now + kPkeyRecheckMs;
                report_link(false);
                return;
            }
            ++counters_.pkey_moves;
        }
        pkey_index_ = idx;
        start_probe();
        return;
    }
    if (state_ != IfaceState::up)
        return;

    for (auto it = groups_.begin(); it != groups_.end();) {
        Group &g = it->second;
        if (!g.wanted && !g.in_flight) {
            if (g.joined) {
                send_leave(g.mgid, g.join_state);
                if (on_group)
                    on_group(g.mgid, g.rec, false);
            }
            it = groups_.erase(it);
            continue;
        }
        if (g.wanted && !g.joined && !g.in_flight && now >= g.next_try_ms)
            join_group(g, now);
        ++it;
    }

    if (cp_->is_static()) {
        if (cfg_.allmulti)
            notice_once(Notice::allmulti_static, "allmulticast: no SA on a RoCE port to list the partition's groups; "
                                                 "only groups joined explicitly are received");
        return;
    }

    if (now >= next_audit_ms_ && !audit_in_flight_) {
        next_audit_ms_ = now + cfg_.audit_ms;
        audit_in_flight_ = true;
        McMemberRecord q{};
        q.mgid = bcast_.mgid;
        q.port_gid = cp_->port_gid(cfg_.port);
        cp_->sa_->query_mcmembers(q, kMcmMgid | kMcmPortGid, [cp = cp_, id = id_, gen = generation_](
                                                                 SaStatus st, const std::vector<McMemberRecord> &recs) {
            if (Interface *self = alive(cp, id, gen))
                self->on_audit(st, recs);
        });
    }

    if (cfg_.allmulti && now >= next_allmulti_ms_) {
        next_allmulti_ms_ = now + cfg_.allmulti_poll_ms;
        McMemberRecord q{};
        q.pkey = static_cast<std::uint16_t>(pkey_ | kPkeyFullMember);
        cp_->sa_->query_mcmembers(q, kMcmPkey, [cp = cp_, id = id_, gen = generation_](
                                                   SaStatus st, const std::vector<McMemberRecord> &recs) {
            Interface *self = alive(cp, id, gen);
            if (!self || !st.ok())
                return;
            for (auto &r : recs) {
                if (!wire::is_ipoib_mgid(r.mgid) || r.mgid == self->bcast_.mgid || self->groups_.count(key_of(r.mgid)))
                    continue;
                auto &g = self->groups_[key_of(r.mgid)];
                g.mgid = r.mgid;
                g.join_state = kNonMember;
                self->log(LogLevel::info, "ipoib.mcast", "allmulticast: joining " + wire::to_string(r.mgid));
            }
        });
    }
}


// The broadcast membership audit's answer.
void Interface::on_audit(SaStatus st, const std::vector<McMemberRecord> &recs) {
    audit_in_flight_ = false;
    if (st.status == -ETIMEDOUT) {
        if (!sa_silent_) {
            ++counters_.sa_timeouts;
            log(LogLevel::warning, "ipoib", "SA not answering (broadcast membership audit)");
        }
        sa_silent_ = true;
        return;
    }
    if (sa_silent_)
        log(LogLevel::notice, "ipoib", "SA answering again");
    sa_silent_ = false;
    if ((st.ok() || st.status == kSaStatusNoRecords) && recs.empty()) {
        ++counters_.memberships_lost;
        log(LogLevel::notice, "ipoib.mcast",
            "the SA no longer lists us in the broadcast group (SM restarted?): rejoining");
        flush("membership lost", true, true);
    }
}

// ---------------------------------------------------------------------------
// ControlPlane

ControlPlane::~ControlPlane() { stop(); }

void ControlPlane::log(LogLevel l, const char *topic, const std::string &m) const {
    if (cfg_.log) {
        cfg_.log(l, topic, m);
        return;
    }
    static const char *names[] = {"ERR", "WARNING", "NOTICE", "INFO", "DEBUG"};
    std::fprintf(stderr, "%s: %s: %s\n", topic, names[static_cast<int>(l)], m.c_str());
}

bool ControlPlane::open(hca::Context &ctx, const CpConfig &cfg, std::string *err) {
    ctx_ = &ctx;
    cfg_ = cfg;
    sa_ = cfg.sa_service ? cfg.sa_service : &sa_client_;
    clock_ = cfg.now_ms ? cfg.now_ms : monotonic_ms;
    paths_.set_max_size(cfg.path_cache_max);
    ports_.assign(ctx.num_ports(), hca::PortAttr{});
    gid_index_.assign(ctx.num_ports(), 0);
    ring_ = std::make_unique<Cell[]>(kRequestRingSize);
    for (std::size_t i = 0; i < kRequestRingSize; ++i)
        ring_[i].seq.store(i, std::memory_order_relaxed);
    refresh_ports();
    const std::uint8_t mport = static_cast<std::uint8_t>(cfg.sa.port > 0 ? cfg.sa.port : 1);
    const bool ethernet = ports_.at(mport - 1).link_layer == hca::LinkLayer::ethernet;
    mgmt_ = cfg.mgmt != Management::automatic ? cfg.mgmt : ethernet ? Management::static_roce : Management::sa;
    if (mgmt_ == Management::sa && ethernet) {
        *err = ctx.name() + " port " + std::to_string(mport) + " is RoCE (Ethernet link layer): no SA to manage it "
               "(use static management)";
        return false;
    }
    if (mgmt_ == Management::sa && !sa_->open(cfg.sa, err))
        return false;
    log(LogLevel::info, "ipoib", ctx.name() + ": " + to_string(mgmt_) + " management, port GID index " +
                                     std::to_string(gid_index_.at(mport - 1)) + " (" +
                                     wire::to_string(port_gid(mport)) + ")");
    open_ = true;
    return true;
}

void ControlPlane::refresh_ports() {
    for (std::uint8_t p = 1; p <= ports_.size(); ++p) {
        ctx_->query_port(p, &ports_[p - 1]);
        const int gi = cfg_.gid_index >= 0 ? cfg_.gid_index : hca::ipoib_gid_index(*ctx_, p);
        gid_index_[p - 1] = gi > 0 ? gi : 0;
    }
    const auto &sm = ports_.at(cfg_.sa.port > 0 ? static_cast<std::size_t>(cfg_.sa.port - 1) : 0);
    sa_->set_sm(sm.sm_lid, sm.sm_sl);
}

Gid ControlPlane::port_gid(std::uint8_t port) const {
    Gid g;
    ctx_->query_gid(port, gid_index_.at(port - 1), &g);
    return g;
}

Interface *ControlPlane::add_interface(const IfaceConfig &cfg, std::string *err) {
    if (cfg.port < 1 || cfg.port > ports_.size()) {
        *err = "no port " + std::to_string(cfg.port) + " on " + ctx_->name();
        return nullptr;
    }
    if (cfg.pkey != 0 && !wire::pkey_valid(cfg.pkey)) {
        *err = "P_Key " + hex16(cfg.pkey) + " names no partition (0x0000 and 0x8000 are invalid)";
        return nullptr;
    }
    for (auto &i : ifaces_)
        if (i->cfg_.port == cfg.port && (i->cfg_.pkey & kPkeyMask) == (cfg.pkey & kPkeyMask)) {
            *err = "an interface for port " + std::to_string(cfg.port) + " P_Key " + hex16(cfg.pkey) + " exists";
            return nullptr;
        }
    std::unique_ptr<Interface> i(new Interface(this, cfg, next_iface_id_++));
    i->name_ = ctx_->name() + "/" + std::to_string(cfg.port) + (cfg.pkey ? "." + hex16(cfg.pkey) : "");
    i->state_ = IfaceState::port_down;
    ifaces_.push_back(std::move(i));
    return ifaces_.back().get();
}

Interface *ControlPlane::find_interface(std::uint64_t id) const {
    for (auto &i : ifaces_)
        if (i->id_ == id)
            return i.get();
    return nullptr;
}

void ControlPlane::remove_interface(Interface *iface) {
    for (auto it = ifaces_.begin(); it != ifaces_.end(); ++it)
        if (it->get() == iface) {
            iface->flush("interface removed", false);  // leaves every group if the interface was up
            ifaces_.erase(it);
            return;
        }
}

void ControlPlane::stop(int timeout_ms) {
    if (!open_)
        return;
    for (auto &i : ifaces_)
        if (i->state_ != IfaceState::stopped) {
            i->leave_all(i->up());
            ++i->generation_;
            i->state_ = IfaceState::stopped;
        }
    const std::uint64_t end = now() + static_cast<std::uint64_t>(timeout_ms);
    while (sa_->outstanding() && now() < end)
        sa_->poll(kStopPollMs);
    ifaces_.clear();
    sa_->close();
    open_ = false;
}

bool ControlPlane::push(const Request &r) {
    std::uint64_t pos = ring_tail_.load(std::memory_order_relaxed);
    for (;;) {
        Cell &c = ring_[pos & (kRequestRingSize - 1)];
        const std::uint64_t seq = c.seq.load(std::memory_order_acquire);
        const auto dif = static_cast<std::int64_t>(seq) - static_cast<std::int64_t>(pos);
        if (dif == 0) {
            if (ring_tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
                c.req = r;
                c.seq.store(pos + 1, std::memory_order_release);
                return true;
            }
        } else if (dif < 0) {
            return false;  // full
        } else {
            pos = ring_tail_.load(std::memory_order_relaxed);
        }
    }
}

bool ControlPlane::pop(Request *r) {
    Cell &c = ring_[ring_head_ & (kRequestRingSize - 1)];
    if (c.seq.load(std::memory_order_acquire) != ring_head_ + 1)
        return false;
    *r = c.req;
    c.seq.store(ring_head_ + kRequestRingSize, std::memory_order_release);
    ++ring_head_;
    return true;
}

bool ControlPlane::request_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port) {
    if (push(Request{RequestKind::path, port, pkey, 0, dgid}))
        return true;
    ++counters_.ring_full;  // only the control thread reads it; a lost increment is harmless
    return false;
}

bool ControlPlane::request_sendonly(Interface *iface, const Gid &mgid) {
    if (!iface)
        return false;
    if (push(Request{RequestKind::sendonly_join, 0, 0, iface->id(), mgid}))
        return true;
    ++counters_.ring_full;
    return false;
}

// Port 0 in a path request: the port of the first interface of the
// partition, else of the first interface (what every request used before
// requests named their port), else 1.
std::uint8_t ControlPlane::path_port(std::uint16_t pkey) const {
    for (auto &i : ifaces_)
        if (i->pkey_ ? (i->pkey_ & kPkeyMask) == (pkey & kPkeyMask) : (i->cfg_.pkey & kPkeyMask) == (pkey & kPkeyMask))
            return i->cfg_.port;
    return ifaces_.empty() ? 1 : ifaces_.front()->cfg_.port;
}

void ControlPlane::report_path(std::uint8_t port, const Gid &dgid, std::uint16_t pkey, SaStatus st,
                               const PathRecord *rec) {
    if (on_path)
        on_path(dgid, pkey, st, rec);
    if (on_port_path)
        on_port_path(port, dgid, pkey, st, rec);
}

void ControlPlane::resolve_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port) {
    ++counters_.path_requests;
    if (port == 0)
        port = path_port(pkey);
    if (port < 1 || port > ports_.size()) {
        ++counters_.path_failed;
        report_path(port, dgid, pkey, SaStatus{-EINVAL}, nullptr);
        return;
    }
    const std::uint64_t evicted = paths_.evictions();
    PathEntry *e = paths_.get(dgid, pkey, port);
    counters_.path_evictions += paths_.evictions() - evicted;
    if (!e) {
        ++counters_.path_cache_full;
        ++counters_.path_failed;
        log(LogLevel::warning, "ipoib", "path to " + wire::to_string(dgid) + " not asked for: the path cache is full (" +
                                            std::to_string(paths_.max_size()) + " paths being resolved)");
        report_path(port, dgid, pkey, SaStatus{-ENOBUFS}, nullptr);
        return;
    }
    if (e->valid) {
        ++counters_.path_cache_hits;
        report_path(port, dgid, pkey, SaStatus{}, &e->rec);
        return;
    }
    if (e->pending)
        return;
    if (is_static()) {
        // RoCE: the GID is the address; the path's MTU is the port's, its LID none.
        const auto &pa = port_attr(port);
        e->rec = PathRecord{};
        e->rec.dgid = dgid;
        e->rec.sgid = port_gid(port);
        e->rec.pkey = pkey;
        e->rec.mtu = static_cast<std::uint8_t>(pa.active_mtu);
        e->rec.hop_limit = kStaticPathHopLimit;
        e->rec.reversible = true;
        e->valid = true;
        e->updated_ms = now();
        ++counters_.path_resolved;
        report_path(port, dgid, pkey, SaStatus{}, &e->rec);
        return;
    }
    ask_path(dgid, pkey, port, *e);
}

// The SA query of one path, from `port`'s GID. Its answer is matched to the
// entry (DGID, P_Key, port) it was asked for; asked before the entry was
// invalidated (a flush), it is stale and the path is asked for again.
void ControlPlane::ask_path(const Gid &dgid, std::uint16_t pkey, std::uint8_t port, PathEntry &e) {
    e.pending = true;
    sa_->query_path(port_gid(port), dgid, pkey, [this, dgid, pkey, port, epoch = e.epoch](
                                                    SaStatus st, const std::vector<PathRecord> &recs) {
        PathEntry *pe = paths_.find(dgid, pkey, port);
        if (!pe)
            return;  // cannot happen: pending entries are not evicted
        pe->pending = false;
        if (pe->epoch != epoch) {
            ask_path(dgid, pkey, port, *pe);
            return;
        }
        pe->updated_ms = now();
        if (st.ok() && !recs.empty() &&
            (recs.front().dgid != dgid || (recs.front().pkey & kPkeyMask) != (pkey & kPkeyMask))) {
            ++counters_.path_bad_answers;
            log(LogLevel::warning, "ipoib", "path answer for " + wire::to_string(recs.front().dgid) + " P_Key " +
                                                hex16(recs.front().pkey) + " refused: asked for " +
                                                wire::to_string(dgid) + " P_Key " + hex16(pkey));
            st.status = -EINVAL;
        } else if (st.ok() && !recs.empty()) {
            // What goes into an address handle: a unicast DLID (on InfiniBand;
            // a multicast one would make unicast frames multicast) and an MTU code.
            const PathRecord &r = recs.front();
            const bool ib = port_attr(port).link_layer == hca::LinkLayer::infiniband;
            const char *bad = ib && (r.dlid == 0 || r.dlid >= hca::kMulticastLidBase) ? "DLID is no unicast LID"
                              : r.mtu < 1 || r.mtu > 5                           ? "MTU code names no MTU"
                                                                                 : nullptr;
            if (bad) {
                ++counters_.path_bad_answers;
                log(LogLevel::warning, "ipoib", "path answer for " + wire::to_string(dgid) + " refused: " + bad +
                                                    " (DLID " + hex16(r.dlid) + ", MTU code " +
                                                    std::to_string(r.mtu) + ")");
                st.status = -EINVAL;
            }
        }
        if (st.ok() && !recs.empty()) {
            pe->rec = recs.front();
            pe->valid = true;
            pe->failures = 0;
            ++counters_.path_resolved;
            report_path(port, dgid, pkey, st, &pe->rec);
        } else {
            ++pe->failures;
            ++counters_.path_failed;
            log(LogLevel::info, "ipoib", "path to " + wire::to_string(dgid) + " P_Key " + hex16(pkey) +
                                             " not resolved: " + st.message());
            report_path(port, dgid, pkey, st, nullptr);
        }
    });
}

void ControlPlane::run_once(int max_wait_ms) {
    if (!open_)
        return;
    hca::PortEvent ev;
    bool refreshed = false;
    while (ctx_->get_port_event(&ev) == 1) {
        ++counters_.port_events;
        if (!refreshed) {
            refresh_ports();
            refreshed = true;
        }
        log(LogLevel::info, "ipoib", ctx_->name() + " port " + std::to_string(ev.port_num) + ": " +
                                         hca::to_string(ev.type));
        // Linux ipoib's flush levels: light for SM change (and client reregister,
        // which the verbs provider reports as one) and GID change; heavy for
        // P_Key change; normal for port active / error and LID change.
        const bool light = ev.type == hca::EventType::sm_change || ev.type == hca::EventType::gid_change;
        if (ev.type != hca::EventType::pkey_change)
            paths_.invalidate_port(ev.port_num);  // light and normal: the port's paths are invalid
        for (auto &i : ifaces_) {
            if (i->cfg_.port != ev.port_num || i->state_ == IfaceState::stopped)
                continue;
            if (ev.type == hca::EventType::pkey_change)
                i->pkey_changed();
            else
                i->flush(hca::to_string(ev.type), true, light);
        }
    }
    Request r;
    while (pop(&r)) {
        if (r.kind == RequestKind::path) {
            resolve_path(r.gid, r.pkey, r.port);
        } else if (r.kind == RequestKind::sendonly_join) {
            Interface *iface = find_interface(r.iface_id);
            if (!iface)
                continue;  // removed since the request was made
            auto &g = iface->groups_[key_of(r.gid)];
            if (g.mgid == Gid{}) {
                g.mgid = r.gid;
                g.join_state = kSendOnlyFullMember;
            }
        }
    }
    const std::uint64_t t = now();
    for (auto &i : ifaces_)
        i->tick(t);
    if (is_static())
        ::poll(nullptr, 0, max_wait_ms);
    else
        sa_->poll(max_wait_ms);
}

} // namespace ipoib::ctrl
