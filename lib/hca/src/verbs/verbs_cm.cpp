// SPDX-License-Identifier: BSD-3-Clause
// rc.hpp's Cm over librdmacm (see verbs_cm.hpp for the addressing). Every
// call goes through the glue table; the event channel is non-blocking and
// get_event() drives each id's steps: address resolved -> route resolved ->
// REQ (rdma_connect), and turns rdma_cm's events into ib_cm's.
#include "verbs_cm.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include <infiniband/ib.h>

namespace ipoib::hca::verbs {
namespace {

constexpr int kResolveTimeoutMs = 2000;  // address and route resolution
constexpr int kBacklog = 64;

// The socket address of a GID on RoCE: IPv4 for an IPv4-mapped GID, else IPv6
// (scoped to ifindex if link-local).
sockaddr_storage roce_addr(const Gid &g, std::uint16_t port, unsigned ifindex) {
    sockaddr_storage ss{};
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(g.raw.data(), kMapped, 12) == 0) {
        auto *a = reinterpret_cast<sockaddr_in *>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        std::memcpy(&a->sin_addr, g.raw.data() + 12, 4);
    } else {
        auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        std::memcpy(&a->sin6_addr, g.raw.data(), 16);
        if (g.raw[0] == 0xfe && (g.raw[1] & 0xc0) == 0x80)
            a->sin6_scope_id = ifindex;
    }
    return ss;
}

Gid gid_of(const sockaddr *sa) {
    Gid g{};
    if (!sa)
        return g;
    if (sa->sa_family == AF_INET) {
        g.raw[10] = g.raw[11] = 0xff;
        std::memcpy(g.raw.data() + 12, &reinterpret_cast<const sockaddr_in *>(sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        std::memcpy(g.raw.data(), &reinterpret_cast<const sockaddr_in6 *>(sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_IB) {
        std::memcpy(g.raw.data(), &reinterpret_cast<const sockaddr_ib *>(sa)->sib_addr, 16);
    }
    return g;
}

sockaddr_ib ib_addr(const Gid &g, std::uint16_t pkey, std::uint64_t sid) {
    sockaddr_ib a{};
    a.sib_family = AF_IB;
    a.sib_pkey = htons(pkey);
    std::memcpy(&a.sib_addr, g.raw.data(), 16);
    a.sib_sid = htobe64(sid);
    a.sib_sid_mask = htobe64(sid ? ~0ull : 0);
    return a;
}

AhAttr from_ibv(const ibv_ah_attr &a) {
    AhAttr o;
    o.dlid = a.dlid;
    o.sl = a.sl;
    o.port_num = a.port_num;
    o.is_global = a.is_global;
    if (a.is_global) {
        std::memcpy(o.dgid.raw.data(), a.grh.dgid.raw, 16);
        o.sgid_index = a.grh.sgid_index;
        o.hop_limit = a.grh.hop_limit;
        o.traffic_class = a.grh.traffic_class;
        o.flow_label = a.grh.flow_label;
    }
    return o;
}

// What a REQ or REP carried (rdma_cm's connection parameters) into an event:
// the sender's QP, its RC parameters, up to max bytes of private data.
void take_conn(const rdma_conn_param &c, std::size_t max, CmEvent *ev) {
    ev->remote_qpn = c.qp_num;
    ev->responder_resources = c.responder_resources;
    ev->initiator_depth = c.initiator_depth;
    ev->rnr_retry_count = c.rnr_retry_count;
    ev->private_data_len = static_cast<std::uint8_t>(std::min<std::size_t>(c.private_data_len, max));
    if (c.private_data)
        std::memcpy(ev->private_data, c.private_data, ev->private_data_len);
}

class RdmaCm final : public Cm {
  public:
    RdmaCm(const Glue *g, const CmPortInfo &info, rdma_event_channel *ch) : g_(g), info_(info), ch_(ch) {}
    ~RdmaCm() override {
        for (auto &[id, e] : ids_)
            g_->destroy_id(e.cm);
        for (auto &[port, l] : listeners_)
            g_->destroy_id(l.cm);
        g_->destroy_event_channel(ch_);
    }

    int listen(std::uint64_t service_id, std::uint64_t mask) noexcept override {
        if (mask != ~0ull)
            return -EINVAL;
        const std::uint32_t key = info_.ethernet ? static_cast<std::uint16_t>(service_id) : 0;
        for (auto &[k, l] : listeners_)
            for (std::uint64_t s : l.sids)
                if (s == service_id)
                    return -EADDRINUSE;
        if (info_.ethernet) {
            if (auto it = listeners_.find(key); it != listeners_.end()) {  // (same port: one listener)
                it->second.sids.push_back(service_id);
                return 0;
            }
        }
        rdma_cm_id *id = nullptr;
        if (g_->create_id(ch_, &id, nullptr, info_.ethernet ? RDMA_PS_TCP : RDMA_PS_IB) != 0)
            return -errno;
        int rc;
        if (info_.ethernet) {
            sockaddr_in6 any{};
            any.sin6_family = AF_INET6;
            any.sin6_port = htons(static_cast<std::uint16_t>(key));
            rc = g_->bind_addr(id, reinterpret_cast<sockaddr *>(&any));
        } else {
            sockaddr_ib a = ib_addr(Gid{}, info_.pkey, service_id);
            rc = g_->bind_addr(id, reinterpret_cast<sockaddr *>(&a));
        }
        if (rc == 0)
            rc = g_->listen(id, kBacklog);
        if (rc != 0) {
            const int e = errno;
            g_->destroy_id(id);
            return -e;
        }
        listeners_[info_.ethernet ? key : 0x10000u + next_listener_++] = Listener{id, {service_id}};
        return 0;
    }

    int unlisten(std::uint64_t service_id) noexcept override {
        for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
            auto &s = it->second.sids;
            for (auto j = s.begin(); j != s.end(); ++j)
                if (*j == service_id) {
                    s.erase(j);
                    if (s.empty()) {
                        g_->destroy_id(it->second.cm);
                        listeners_.erase(it);
                    }
                    return 0;
                }
        }
        return -ENOENT;
    }

    int send_req(const CmReqParam &p, std::uint32_t *id) noexcept override {
        if (p.private_data_len > (info_.ethernet ? 56 : kCmReqPrivateData))
            return -EINVAL;
        rdma_cm_id *cm = nullptr;
        const std::uint32_t n = next_id_++;
        if (g_->create_id(ch_, &cm, reinterpret_cast<void *>(static_cast<std::uintptr_t>(n)),
                          info_.ethernet ? RDMA_PS_TCP : RDMA_PS_IB) != 0)
            return -errno;
        int rc;
        if (info_.ethernet) {
            sockaddr_storage src = roce_addr(p.path.sgid, 0, info_.ifindex);
            sockaddr_storage dst = roce_addr(p.path.dgid, static_cast<std::uint16_t>(p.service_id), info_.ifindex);
            rc = g_->resolve_addr(cm, reinterpret_cast<sockaddr *>(&src), reinterpret_cast<sockaddr *>(&dst),
                                  kResolveTimeoutMs);
        } else {
            sockaddr_ib src = ib_addr(p.path.sgid, p.path.pkey, 0);
            sockaddr_ib dst = ib_addr(p.path.dgid, p.path.pkey, p.service_id);
            rc = g_->resolve_addr(cm, reinterpret_cast<sockaddr *>(&src), reinterpret_cast<sockaddr *>(&dst),
                                  kResolveTimeoutMs);
        }
        if (rc != 0) {
            const int e = errno;
            g_->destroy_id(cm);
            return -e;
        }
        Id e;
        e.cm = cm;
        e.st = St::resolving;
        e.service_id = p.service_id;
        e.param.private_data_len = p.private_data_len;
        std::memcpy(e.pd, p.private_data, p.private_data_len);
        e.param.responder_resources = p.responder_resources;
        e.param.initiator_depth = p.initiator_depth;
        e.param.retry_count = p.retry_count & 7;
        e.param.rnr_retry_count = p.rnr_retry_count & 7;
        e.param.srq = p.srq;
        e.param.qp_num = p.local_qpn;
        ids_[n] = e;
        *id = n;
        return 0;
    }

    int send_rep(std::uint32_t id, const CmRepParam &p) noexcept override {
        Id *e = find(id);
        if (!e || e->st != St::req_received)
            return -EINVAL;
        rdma_conn_param c{};
        c.private_data = p.private_data;
        c.private_data_len = p.private_data_len;
        c.responder_resources = p.responder_resources;
        c.initiator_depth = p.initiator_depth;
        c.rnr_retry_count = p.rnr_retry_count & 7;
        c.srq = p.srq;
        c.qp_num = p.local_qpn;
        if (g_->accept(e->cm, &c) != 0)
            return -errno;
        e->st = St::rep_sent;
        return 0;
    }

    int send_rtu(std::uint32_t id, const std::uint8_t *, std::uint8_t) noexcept override {
        Id *e = find(id);
        if (!e || e->st != St::rep_received)
            return -EINVAL;
        if (g_->establish(e->cm) != 0)
            return -errno;
        e->st = St::up;
        return 0;
    }

    // librdmacm sends its own REJ reason (consumer defined); the private data goes with it.
    int send_rej(std::uint32_t id, CmRejReason, const std::uint8_t *pd, std::uint8_t len) noexcept override {
        Id *e = find(id);
        if (!e)
            return -EINVAL;
        const int rc = g_->reject(e->cm, pd, len) == 0 ? 0 : -errno;
        drop(id);
        return rc;
    }

    int send_mra(std::uint32_t, std::uint8_t) noexcept override { return -EOPNOTSUPP; }  // (the kernel's CM sends MRAs itself)

    int send_dreq(std::uint32_t id, const std::uint8_t *, std::uint8_t) noexcept override {
        Id *e = find(id);
        if (!e)
            return -EINVAL;
        if (e->st != St::up) {  // (never established: rdma_cm would send nothing and tell nothing)
            drop(id);
            return 0;
        }
        if (g_->disconnect(e->cm) != 0)
            return -errno;
        e->st = St::dreq_sent;
        return 0;
    }

    int send_drep(std::uint32_t id, const std::uint8_t *, std::uint8_t) noexcept override {
        Id *e = find(id);
        if (!e)
            return -EINVAL;
        g_->disconnect(e->cm);  // (in DREQ received: the DREP)
        drop(id);
        return 0;
    }

    void destroy_id(std::uint32_t id) noexcept override { drop(id); }

    int init_qp_attr(std::uint32_t id, RcConnect *c) noexcept override {
        Id *e = find(id);
        if (!e)
            return -EINVAL;
        ibv_qp_attr a{};
        int mask = 0;
        a.qp_state = IBV_QPS_RTR;
        if (g_->init_qp_attr(e->cm, &a, &mask) != 0)
            return -errno;
        c->path = from_ibv(a.ah_attr);
        c->remote_qpn = a.dest_qp_num;
        c->remote_psn = a.rq_psn;
        c->path_mtu = static_cast<Mtu>(a.path_mtu);
        c->min_rnr_timer = a.min_rnr_timer;
        ibv_qp_attr r{};
        r.qp_state = IBV_QPS_RTS;
        if (g_->init_qp_attr(e->cm, &r, &mask) != 0)
            return -errno;
        c->local_psn = r.sq_psn;
        c->timeout = r.timeout;
        c->retry_cnt = r.retry_cnt;
        c->rnr_retry = r.rnr_retry;
        return 0;
    }

    int get_event(CmEvent *ev) noexcept override {
        for (;;) {
            rdma_cm_event *raw = nullptr;
            if (g_->get_cm_event(ch_, &raw) != 0)
                return 0;  // (EAGAIN: none waiting)
            const int r = handle(*raw, ev);
            if (r != 1)
                continue;
            return 1;
        }
    }

  private:
    enum class St : std::uint8_t { resolving, req_sent, rep_received, up, req_received, rep_sent, dreq_sent };
    struct Id {
        rdma_cm_id *cm = nullptr;
        St st = St::resolving;
        std::uint64_t service_id = 0;
        rdma_conn_param param{};  // the REQ's, until it is sent (private_data points to pd then)
        std::uint8_t pd[kCmReqPrivateData]{};
    };
    struct Listener {
        rdma_cm_id *cm = nullptr;
        std::vector<std::uint64_t> sids;  // the service IDs it stands for (the first is reported)
    };

    Id *find(std::uint32_t id) {
        auto it = ids_.find(id);
        return it == ids_.end() ? nullptr : &it->second;
    }
    void drop(std::uint32_t id) {
        if (auto it = ids_.find(id); it != ids_.end()) {
            g_->destroy_id(it->second.cm);
            ids_.erase(it);
        }
    }
    static std::uint32_t id_of(const rdma_cm_id *cm) {
        return static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(cm->context));
    }

    // One rdma_cm event: 1 and *ev if it makes an ib_cm event, else 0. The event is acknowledged here.
    int handle(rdma_cm_event &raw, CmEvent *ev) {
        const rdma_cm_event_type type = raw.event;
        rdma_cm_id *cm = raw.id;
        *ev = CmEvent{};
        if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
            // A new id for the request: known under a number of ours from now on.
            const Listener *l = nullptr;
            for (auto &[k, x] : listeners_)
                if (x.cm == raw.listen_id)
                    l = &x;
            const std::uint32_t n = next_id_++;
            cm->context = reinterpret_cast<void *>(static_cast<std::uintptr_t>(n));
            const bool ours = l && cm->verbs && info_.device == cm->verbs->device->name && cm->port_num == info_.port;
            ev->type = CmEventType::req_received;
            ev->id = n;
            ev->service_id = l ? l->sids.front() : 0;
            take_conn(raw.param.conn, kCmReqPrivateData, ev);
            ev->path.sgid = gid_of(rdma_get_local_addr(cm));
            ev->path.dgid = gid_of(rdma_get_peer_addr(cm));
            if (!info_.ethernet && cm->route.path_rec) {  // InfiniBand: the REQ's primary path (the requester's LID)
                ev->path.dlid = be16toh(cm->route.path_rec->slid);
                ev->path.slid = be16toh(cm->route.path_rec->dlid);
                ev->path.sl = cm->route.path_rec->sl;
            }
            ev->path.global = info_.ethernet;
            ev->path.pkey = info_.pkey;
            g_->ack_cm_event(&raw);
            Id e;
            e.cm = cm;
            e.st = St::req_received;
            e.service_id = ev->service_id;
            ids_[n] = e;
            if (!ours) {  // (a wildcard listener heard a request for another device or port)
                g_->reject(cm, nullptr, 0);
                drop(n);
                return 0;
            }
            return 1;
        }
        const std::uint32_t n = id_of(cm);
        Id *e = cm->context ? find(n) : nullptr;
        if (!e) {
            g_->ack_cm_event(&raw);
            return 0;
        }
        ev->id = n;
        ev->service_id = e->service_id;
        int out = 0;
        bool gone = false;
        switch (type) {
        case RDMA_CM_EVENT_ADDR_RESOLVED:
            if (g_->resolve_route(cm, kResolveTimeoutMs) != 0) {
                ev->type = CmEventType::req_error;
                out = 1;
                gone = true;
            }
            break;
        case RDMA_CM_EVENT_ROUTE_RESOLVED:
            e->param.private_data = e->pd;
            if (g_->connect(cm, &e->param) != 0) {
                ev->type = CmEventType::req_error;
                out = 1;
                gone = true;
            } else {
                e->st = St::req_sent;
            }
            break;
        case RDMA_CM_EVENT_ADDR_ERROR:
        case RDMA_CM_EVENT_ROUTE_ERROR:
        case RDMA_CM_EVENT_UNREACHABLE:
        case RDMA_CM_EVENT_CONNECT_ERROR:
            ev->type = e->st == St::rep_sent ? CmEventType::rep_error : CmEventType::req_error;
            out = 1;
            gone = true;
            break;
        case RDMA_CM_EVENT_REJECTED:
            ev->type = CmEventType::rej_received;
            ev->rej_reason = static_cast<std::uint16_t>(raw.status);
            out = 1;
            gone = true;
            break;
        case RDMA_CM_EVENT_CONNECT_RESPONSE:
            if (e->st == St::req_sent) {
                ev->type = CmEventType::rep_received;
                take_conn(raw.param.conn, kCmRepPrivateData, ev);
                e->st = St::rep_received;
                out = 1;
            }
            break;
        case RDMA_CM_EVENT_ESTABLISHED:
            if (e->st == St::rep_sent) {
                ev->type = CmEventType::rtu_received;
                e->st = St::up;
                out = 1;
            }
            break;
        case RDMA_CM_EVENT_DISCONNECTED:
            ev->type = e->st == St::dreq_sent ? CmEventType::drep_received : CmEventType::dreq_received;
            gone = e->st == St::dreq_sent;
            out = 1;
            break;
        case RDMA_CM_EVENT_DEVICE_REMOVAL:
            ev->type = CmEventType::dreq_received;
            out = 1;
            break;
        default: break;  // (TIMEWAIT_EXIT and the rest: nothing to tell)
        }
        g_->ack_cm_event(&raw);
        if (gone)
            drop(n);
        return out;
    }

    const Glue *g_;
    CmPortInfo info_;
    rdma_event_channel *ch_;
    std::map<std::uint32_t, Id> ids_;
    std::map<std::uint32_t, Listener> listeners_;  // RoCE: by port; InfiniBand: one per service ID
    std::uint32_t next_id_ = 1;
    std::uint32_t next_listener_ = 0;
};

} // namespace

std::unique_ptr<Cm> make_rdma_cm(const Glue *glue, const CmPortInfo &info, std::string *err) {
    rdma_event_channel *ch = glue->create_event_channel();
    if (!ch) {
        *err = std::string("rdma_create_event_channel: ") + std::strerror(errno) +
               " (is the rdma_ucm module loaded? /dev/infiniband/rdma_cm)";
        return nullptr;
    }
    const int fl = fcntl(ch->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        *err = std::string("rdma_cm event channel: fcntl: ") + std::strerror(errno);
        glue->destroy_event_channel(ch);
        return nullptr;
    }
    return std::make_unique<RdmaCm>(glue, info, ch);
}

} // namespace ipoib::hca::verbs
