// SPDX-License-Identifier: BSD-3-Clause
#include <endian.h>
#include <infiniband/mad.h>
#include <infiniband/umad.h>
#include <infiniband/umad_sa.h>
#include <infiniband/umad_sa_mcm.h>
#include <infiniband/umad_str.h>
#include <infiniband/umad_types.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "ipoib/ctrl/sa.hpp"

namespace ipoib::ctrl {

namespace {

static_assert(kSaStatusNoRecords == UMAD_SA_STATUS_NO_RECORDS << 8);
static_assert(kMadLen == UMAD_LEN_DATA + sizeof(umad_hdr));
static_assert(kSelectorExactly == UMAD_SA_SELECTOR_EXACTLY);

// PathRecord NumbPath field: bit 7 Reversible, then the number of paths wanted.
constexpr std::uint32_t kPrReversibleOnePath = 0x80 | 1;

const char *sa_status_text(int sa) {
    switch (sa) {
    case UMAD_SA_STATUS_NO_RESOURCES: return "insufficient resources";
    case UMAD_SA_STATUS_REQ_INVALID: return "request invalid";
    case UMAD_SA_STATUS_NO_RECORDS: return "no records";
    case UMAD_SA_STATUS_TOO_MANY_RECORDS: return "too many records";
    case UMAD_SA_STATUS_INVALID_GID: return "invalid GID";
    case UMAD_SA_STATUS_INSUF_COMPS: return "insufficient components";
    case UMAD_SA_STATUS_REQ_DENIED: return "request denied";
    case UMAD_SA_STATUS_PRI_SUGGESTED: return "priority suggested";
    default: return "unknown SA status";
    }
}

} // namespace

std::uint64_t monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

std::string SaStatus::message() const {
    char buf[128];
    if (status == 0)
        return "success";
    if (status == -ETIMEDOUT)
        return "SA not answering (timed out after all retries)";
    if (status == -EMSGSIZE)
        return "SA answer larger than the receive buffer (dropped)";
    if (status < 0) {
        std::snprintf(buf, sizeof buf, "SA request failed locally: %s", std::strerror(-status));
        return buf;
    }
    const int sa = (status >> 8) & 0xff;
    if (sa)
        std::snprintf(buf, sizeof buf, "SA status 0x%04x: %s", status, sa_status_text(sa));
    else
        std::snprintf(buf, sizeof buf, "MAD status 0x%04x: %s", status,
                      umad_common_mad_status_str(htobe16(static_cast<std::uint16_t>(status))));
    return buf;
}

// ---------------------------------------------------------------------------
// Records. PathRecord fields libibmad describes are encoded with its field
// encoders; the rest (IBA 15.2.5.16) by offset. MCMemberRecords use
// rdma-core's struct umad_sa_mcmember_record.

void encode_path_query(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, std::uint8_t *rec,
                       std::uint64_t *comp_mask) {
    std::memset(rec, 0, IB_SA_PR_RECSZ);
    mad_encode_field(rec, IB_SA_PR_DGID_F, const_cast<std::uint8_t *>(dgid.raw.data()));
    mad_encode_field(rec, IB_SA_PR_SGID_F, const_cast<std::uint8_t *>(sgid.raw.data()));
    std::uint32_t npath = kPrReversibleOnePath;
    mad_encode_field(rec, IB_SA_PR_NPATH_F, &npath);
    rec[50] = static_cast<std::uint8_t>(pkey >> 8);
    rec[51] = static_cast<std::uint8_t>(pkey);
    *comp_mask = kPrDgid | kPrSgid | kPrReversible | kPrNumbPath | kPrPkey;
}

PathRecord decode_path(const std::uint8_t *rec) {
    PathRecord p;
    mad_decode_field(const_cast<std::uint8_t *>(rec), IB_SA_PR_DGID_F, p.dgid.raw.data());
    mad_decode_field(const_cast<std::uint8_t *>(rec), IB_SA_PR_SGID_F, p.sgid.raw.data());
    std::uint32_t v = 0;
    mad_decode_field(const_cast<std::uint8_t *>(rec), IB_SA_PR_DLID_F, &v);
    p.dlid = static_cast<std::uint16_t>(v);
    mad_decode_field(const_cast<std::uint8_t *>(rec), IB_SA_PR_SLID_F, &v);
    p.slid = static_cast<std::uint16_t>(v);
    mad_decode_field(const_cast<std::uint8_t *>(rec), IB_SA_PR_SL_F, &v);
    p.sl = static_cast<std::uint8_t>(v);
    const std::uint32_t w = wire::load_be32(rec + 44);  // RawTraffic | Rsv | FlowLabel | HopLimit
    p.flow_label = (w >> 8) & 0xfffff;
    p.hop_limit = static_cast<std::uint8_t>(w);
    p.traffic_class = rec[48];
    p.reversible = rec[49] & 0x80;
    p.pkey = wire::load_be16(rec + 50);
    p.mtu = rec[54] & 0x3f;
    p.rate = rec[55] & 0x3f;
    p.packet_life = rec[56] & 0x3f;
    return p;
}

void encode_mcm(const McMemberRecord &r, std::uint8_t *out) {
    umad_sa_mcmember_record m{};
    std::memcpy(m.mgid, r.mgid.raw.data(), 16);
    std::memcpy(m.portgid, r.port_gid.raw.data(), 16);
    m.qkey = htobe32(r.qkey);
    m.mlid = htobe16(r.mlid);
    m.mtu = static_cast<std::uint8_t>(r.mtu_selector << UMAD_SA_SELECTOR_SHIFT | (r.mtu & 0x3f));
    m.tclass = r.traffic_class;
    m.pkey = htobe16(r.pkey);
    m.rate = static_cast<std::uint8_t>(r.rate_selector << UMAD_SA_SELECTOR_SHIFT | (r.rate & 0x3f));
    m.pkt_life = r.packet_life;
    m.sl_flow_hop = umad_sa_mcm_set_sl_flow_hop(r.sl, r.flow_label, r.hop_limit);
    m.scope_state = static_cast<std::uint8_t>(r.scope << 4 | (r.join_state & 0xf));
    std::memcpy(out, &m, IB_SA_MCM_RECSZ);
}

McMemberRecord decode_mcm(const std::uint8_t *in) {
    umad_sa_mcmember_record m{};
    std::memcpy(&m, in, IB_SA_MCM_RECSZ);
    McMemberRecord r;
    std::memcpy(r.mgid.raw.data(), m.mgid, 16);
    std::memcpy(r.port_gid.raw.data(), m.portgid, 16);
    r.qkey = be32toh(m.qkey);
    r.mlid = be16toh(m.mlid);
    r.mtu = m.mtu & 0x3f;
    r.mtu_selector = m.mtu >> UMAD_SA_SELECTOR_SHIFT;
    r.traffic_class = m.tclass;
    r.pkey = be16toh(m.pkey);
    r.rate = m.rate & 0x3f;
    r.rate_selector = m.rate >> UMAD_SA_SELECTOR_SHIFT;
    r.packet_life = m.pkt_life & 0x3f;
    umad_sa_mcm_get_sl_flow_hop(m.sl_flow_hop, &r.sl, &r.flow_label, &r.hop_limit);
    r.scope = m.scope_state >> 4;
    r.join_state = m.scope_state & 0xf;
    return r;
}

// ---------------------------------------------------------------------------

SaClient::~SaClient() { close(); }

bool SaClient::open(const SaConfig &cfg, std::string *err) {
    cfg_ = cfg;
    if (umad_init() < 0) {
        *err = "umad_init failed";
        return false;
    }
    portid_ = umad_open_port(cfg.ca_name, cfg.port);
    if (portid_ < 0) {
        *err = std::string("umad_open_port: ") + std::strerror(-portid_) +
               " (no HCA, or not under umad2sim with SIM_HOST/IBSIM_SOCKNAME)";
        portid_ = -1;
        return false;
    }
    // RMPP version 1: on real stacks the kernel reassembles multi-MAD table answers.
    agent_ = umad_register(portid_, UMAD_CLASS_SUBN_ADM, UMAD_SA_CLASS_VERSION, 1, nullptr);
    if (agent_ < 0) {
        *err = "umad_register (SA class) failed";
        close();
        return false;
    }
    std::random_device rd;
    tid_salt_ = rd();
    next_tid_ = rd() | 1;
    rxbuf_.resize(umad_size() + kSaRecvBufLen);
    return true;
}

void SaClient::close() {
    if (agent_ >= 0)
        umad_unregister(portid_, agent_);
    agent_ = -1;
    if (portid_ >= 0)
        umad_close_port(portid_);
    portid_ = -1;
    pending_.clear();
}

std::uint64_t SaClient::submit(std::uint8_t method, std::uint16_t attr, std::uint64_t comp_mask,
                               const std::uint8_t *rec, std::size_t rec_len, PathCallback pcb, McmCallback mcb) {
    std::uint32_t tid;
    do {
        tid = next_tid_++;
    } while (tid == 0 || pending_.count(tid));
    Pending p;
    p.id = std::uint64_t{tid_salt_} << 32 | tid;
    p.method = method;
    p.attr = attr;
    p.mad.assign(kMadLen, 0);
    auto *sa = reinterpret_cast<umad_sa_packet *>(p.mad.data());
    sa->mad_hdr.base_version = 1;
    sa->mad_hdr.mgmt_class = UMAD_CLASS_SUBN_ADM;
    sa->mad_hdr.class_version = UMAD_SA_CLASS_VERSION;
    sa->mad_hdr.method = method;
    sa->mad_hdr.tid = htobe64(p.id);
    sa->mad_hdr.attr_id = htobe16(attr);
    sa->comp_mask = htobe64(comp_mask);
    std::memcpy(sa->data, rec, rec_len);
    p.tries = 0;
    p.timeout_ms = std::min(cfg_.timeout_ms, kSaMaxTimeoutMs);
    p.path_cb = std::move(pcb);
    p.mcm_cb = std::move(mcb);
    auto [it, _] = pending_.emplace(tid, std::move(p));
    if (!transmit(it->second))
        it->second.deadline_ms = 0;  // fails (and retries) from the next poll
    return it->second.id;
}

bool SaClient::transmit(Pending &p) {
    // Our timer outlasts the kernel's response timeout (kSaTimerSlackMs, constants.hpp).
    p.deadline_ms = monotonic_ms() + static_cast<std::uint64_t>(p.timeout_ms + kSaTimerSlackMs);
    ++p.tries;
    if (portid_ < 0 || sm_lid_ == 0)
        return false;
    std::vector<std::uint8_t> umad(umad_size() + kMadLen);
    std::memcpy(umad_get_mad(umad.data()), p.mad.data(), kMadLen);
    umad_set_addr(umad.data(), sm_lid_, 1, sm_sl_, kGsiQkey);
    // A response timeout, or the kernel drops the answer; no kernel retries: ours back off.
    if (umad_send(portid_, agent_, umad.data(), static_cast<int>(kMadLen), p.timeout_ms, 0) < 0) {
        ++counters_.errors;
        return false;
    }
    ++counters_.sent;
    return true;
}

std::uint64_t SaClient::query_path(const Gid &sgid, const Gid &dgid, std::uint16_t pkey, PathCallback cb) {
    std::uint8_t rec[IB_SA_PR_RECSZ];
    std::uint64_t mask;
    encode_path_query(sgid, dgid, pkey, rec, &mask);
    return submit(UMAD_METHOD_GET, UMAD_SA_ATTR_PATH_REC, mask, rec, sizeof rec, std::move(cb), {});
}

std::uint64_t SaClient::join(const McMemberRecord &r, std::uint64_t mask, McmCallback cb) {
    std::uint8_t rec[IB_SA_MCM_RECSZ];
    encode_mcm(r, rec);
    return submit(UMAD_METHOD_SET, UMAD_SA_ATTR_MCMEMBER_REC, mask | kMcmJoinState, rec, sizeof rec, {},
                  std::move(cb));
}

std::uint64_t SaClient::leave(const McMemberRecord &r, std::uint64_t mask, McmCallback cb) {
    std::uint8_t rec[IB_SA_MCM_RECSZ];
    encode_mcm(r, rec);
    return submit(UMAD_SA_METHOD_DELETE, UMAD_SA_ATTR_MCMEMBER_REC, mask | kMcmJoinState, rec, sizeof rec, {},
                  std::move(cb));
}

std::uint64_t SaClient::query_mcmembers(const McMemberRecord &r, std::uint64_t mask, McmCallback cb) {
    std::uint8_t rec[IB_SA_MCM_RECSZ];
    encode_mcm(r, rec);
    return submit(UMAD_SA_METHOD_GET_TABLE, UMAD_SA_ATTR_MCMEMBER_REC, mask, rec, sizeof rec, {}, std::move(cb));
}

void SaClient::cancel(std::uint64_t id) { pending_.erase(static_cast<std::uint32_t>(id)); }

void SaClient::complete(Pending &p, SaStatus st, const std::uint8_t *mad, std::size_t len) {
    if (p.path_cb) {
        std::vector<PathRecord> recs;
        if (st.ok() && mad && len >= IB_SA_DATA_OFFS + IB_SA_PR_RECSZ)
            recs.push_back(decode_path(mad + IB_SA_DATA_OFFS));
        if (st.ok() && recs.empty())
            st.status = UMAD_SA_STATUS_NO_RECORDS << 8;
        p.path_cb(st, recs);
    } else if (p.mcm_cb) {
        std::vector<McMemberRecord> recs;
        if (st.ok() && mad) {
            // Records are attr_offset * 8 bytes apart; count them from the length received.
            const auto *sa = reinterpret_cast<const umad_sa_packet *>(mad);
            std::size_t stride = std::size_t{be16toh(sa->attr_offset)} * 8;
            if (p.method != UMAD_SA_METHOD_GET_TABLE || stride == 0)
                stride = IB_SA_MCM_RECSZ;
            for (std::size_t off = IB_SA_DATA_OFFS; off + IB_SA_MCM_RECSZ <= len; off += stride) {
                recs.push_back(decode_mcm(mad + off));
                if (p.method != UMAD_SA_METHOD_GET_TABLE)
                    break;
            }
        }
        p.mcm_cb(st, recs);
    }
}

int SaClient::next_timeout_ms() const {
    if (pending_.empty())
        return -1;
    std::uint64_t first = ~0ull;
    for (auto &[_, p] : pending_)
        first = std::min(first, p.deadline_ms);
    const std::uint64_t now = monotonic_ms();
    return first <= now ? 0 : static_cast<int>(std::min<std::uint64_t>(first - now, 1u << 30));
}

namespace {

// The response method an SA answers a request with (IBA 13.4.5, 15.4).
std::uint8_t response_method(std::uint8_t request) {
    switch (request) {
    case UMAD_SA_METHOD_GET_TABLE: return UMAD_SA_METHOD_GET_TABLE_RESP;
    case UMAD_SA_METHOD_DELETE: return UMAD_SA_METHOD_DELETE_RESP;
    default: return UMAD_METHOD_GET_RESP;  // Get and Set
    }
}

} // namespace

// Is this response an answer to `p`: the SA class, the attribute asked for,
// the response method of the request's method?
bool SaClient::answers(const Pending &p, const std::uint8_t *mad) const {
    const auto *hdr = reinterpret_cast<const umad_hdr *>(mad);
    return hdr->mgmt_class == UMAD_CLASS_SUBN_ADM && be16toh(hdr->attr_id) == p.attr &&
           hdr->method == response_method(p.method);
}

// One MAD read from the port (umad header + `len` bytes): completes the
// request it answers. Returns how many requests completed (0 or 1).
int SaClient::receive(std::uint8_t *umad, int len) {
    const std::uint8_t *mad = static_cast<const std::uint8_t *>(umad_get_mad(umad));
    if (len < static_cast<int>(sizeof(umad_hdr))) {
        ++counters_.unmatched;
        return 0;
    }
    const auto *hdr = reinterpret_cast<const umad_hdr *>(mad);
    const std::uint32_t tid = static_cast<std::uint32_t>(be64toh(hdr->tid));
    auto it = pending_.find(tid);
    if (it == pending_.end()) {
        ++counters_.unmatched;
        return 0;
    }
    if (!(hdr->method & 0x80)) {
        // Our request handed back by the kernel: its response timeout
        // passed (status ETIMEDOUT). The try is over: resend now.
        if (umad_status(umad) != 0 && hdr->method == it->second.method) {
            ++counters_.kernel_timeouts;
            it->second.deadline_ms = 0;
        } else {
            ++counters_.unmatched;
        }
        return 0;
    }
    if (!answers(it->second, mad)) {
        // Right TID, wrong class/attribute/method: not our answer. The request
        // stays outstanding (answered later, or retried on its timeout).
        ++counters_.bad_answers;
        return 0;
    }
    Pending p = std::move(it->second);
    pending_.erase(it);
    SaStatus st;
    if (umad_status(umad) != 0)
        st.status = -umad_status(umad);
    else
        st.status = be16toh(hdr->status);
    // GetTable with no records answers success and zero records; Get answers NO_RECORDS.
    ++counters_.answered;
    complete(p, st, mad, static_cast<std::size_t>(len));
    return 1;
}

// umad_recv refused a message of `need` bytes (ENOSPC): read it off with a
// buffer of its size; the request it answers fails with -EMSGSIZE (a table
// larger than kSaRecvBufLen). If it cannot be read off (no sane length),
// reopen the port: the kernel's queue goes with the old one; outstanding
// requests are resent by their timers. Returns how many requests completed.
int SaClient::skip_oversized(int need) {
    ++counters_.too_big;
    std::vector<std::uint8_t> big;
    int len = need;
    int r = -1;
    if (need > 0 && static_cast<std::size_t>(need) <= kSaMaxDrainLen) {
        big.resize(umad_size() + static_cast<std::size_t>(need));
        r = umad_recv(portid_, big.data(), &len, 0);
    }
    if (r < 0) {
        reopen();
        return 0;
    }
    const std::uint8_t *mad = static_cast<const std::uint8_t *>(umad_get_mad(big.data()));
    const auto *hdr = reinterpret_cast<const umad_hdr *>(mad);
    auto it = len >= static_cast<int>(sizeof(umad_hdr))
                  ? pending_.find(static_cast<std::uint32_t>(be64toh(hdr->tid)))
                  : pending_.end();
    if (it == pending_.end() || !(hdr->method & 0x80) || !answers(it->second, mad)) {
        ++counters_.unmatched;
        return 0;
    }
    Pending p = std::move(it->second);
    pending_.erase(it);
    complete(p, SaStatus{-EMSGSIZE}, nullptr, 0);
    return 1;
}

void SaClient::reopen() {
    if (agent_ >= 0)
        umad_unregister(portid_, agent_);
    if (portid_ >= 0)
        umad_close_port(portid_);
    agent_ = -1;
    portid_ = umad_open_port(cfg_.ca_name, cfg_.port);
    if (portid_ < 0) {
        portid_ = -1;
        return;
    }
    agent_ = umad_register(portid_, UMAD_CLASS_SUBN_ADM, UMAD_SA_CLASS_VERSION, 1, nullptr);
    if (agent_ < 0) {
        umad_close_port(portid_);
        portid_ = -1;
        agent_ = -1;
    }
}

int SaClient::poll(int timeout_ms) {
    int done = 0;
    if (portid_ >= 0) {
        int wait = timeout_ms;
        const int nt = next_timeout_ms();
        if (nt >= 0 && (wait < 0 || nt < wait))
            wait = nt;
        // The umad fd (umad2sim's is not a real one) is only read through libibumad.
        if (umad_poll(portid_, wait) == 0) {
            for (;;) {
                int len = static_cast<int>(rxbuf_.size() - umad_size());
                const int r = umad_recv(portid_, rxbuf_.data(), &len, 0);
                if (r == -ENOSPC) {
                    // Larger than our buffer: the kernel keeps it at the head of
                    // the queue, so it must be read off or nothing else ever is.
                    done += skip_oversized(len);
                    continue;
                }
                if (r < 0 || portid_ < 0)
                    break;
                done += receive(rxbuf_.data(), len);
            }
        }
    }
    // Timeouts: resend with a doubled timeout, or give up.
    const std::uint64_t now = monotonic_ms();
    std::vector<std::uint32_t> expired;
    for (auto &[tid, p] : pending_)
        if (p.deadline_ms <= now)
            expired.push_back(tid);
    for (auto tid : expired) {
        auto it = pending_.find(tid);
        if (it == pending_.end())
            continue;  // a callback cancelled it
        Pending &p = it->second;
        if (p.tries <= cfg_.retries) {
            p.timeout_ms = std::min(p.timeout_ms * 2, kSaMaxTimeoutMs);
            ++counters_.retried;
            transmit(p);
            continue;
        }
        Pending gone = std::move(p);
        pending_.erase(it);
        ++counters_.timed_out;
        complete(gone, SaStatus{-ETIMEDOUT}, nullptr, 0);
        ++done;
    }
    return done;
}

} // namespace ipoib::ctrl
