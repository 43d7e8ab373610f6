// SPDX-License-Identifier: BSD-3-Clause
// The HCA provider interface: the only way the PMD and the control plane
// reach an InfiniBand device. Shaped after libibverbs' UD subset (ibv_*), so
// a verbs provider maps onto it one to one and the software HCA behaves the
// way hardware does:
//
//   Context  ~ ibv_context + ibv_pd   open device, query port/GID/P_Key, events
//   Mr       ~ ibv_mr                 memory the device may read/write (lkey)
//   Cq       ~ ibv_cq                 completions, polled in bursts
//   Qp       ~ ibv_qp (UD)            post_send / post_recv in bursts, mcast attach
//   Ah       ~ ibv_ah                 DLID, SL, optional GRH
//
// Calls are made per burst, never per packet: one virtual call per
// post/poll of up to N work requests.
//
// Errors, the same in every provider (provider_common.hpp's ContextBase
// writes them): nothing throws across this interface. A call returning int
// returns 0 (or a count) on success and a negative errno on failure; a call
// returning a pointer returns nullptr on failure; either way the context's
// last_error() then holds a one-line message (kept until the next failure;
// the verbs provider also keeps asynchronous QP/CQ errors there).
// A burst call that has done part of its work returns the count done, not
// an error. A work request that fails is not a call failure: it completes
// with a WcStatus other than success.
// Opening a device (open_device) returns a null ctx and the message in
// OpenResult::error: "unknown HCA provider 'x' (known: ...)", "option 'x':
// expected key=value", "<provider> provider: unknown option 'k' (known:
// ...)", "<provider> provider: option k belongs to the <other> provider",
// "option k=v: expected ...", or the provider's own reason for the device.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ipoib/wire/types.hpp"

namespace ipoib::hca {

using wire::Gid;

enum class PortState : std::uint8_t { nop = 0, down = 1, init = 2, armed = 3, active = 4 };
const char *to_string(PortState s) noexcept;

// IB MTU codes (IBA 7.7.2 / ibv_mtu): 1=256 ... 5=4096.
enum class Mtu : std::uint8_t { mtu256 = 1, mtu512 = 2, mtu1024 = 3, mtu2048 = 4, mtu4096 = 5 };
constexpr std::uint32_t mtu_bytes(Mtu m) noexcept { return 128u << static_cast<unsigned>(m); }

// The link's rate in Mbit/s from its active width and speed (0: not known),
// per lane as Linux's IPoIB reports it to ethtool (ib_speed_enum_to_int: the
// lane's signalling rate, QDR 10000, FDR 14000): 4x QDR is 40G, 4x FDR 56G,
// 4x EDR 100G, the speeds DPDK applications and Linux users know.
constexpr std::uint32_t link_mbps(std::uint8_t width, std::uint8_t speed) noexcept {
    std::uint32_t lanes = 0, lane = 0;
    switch (width) {
    case 1: lanes = 1; break;
    case 2: lanes = 4; break;
    case 4: lanes = 8; break;
    case 8: lanes = 12; break;
    case 16: lanes = 2; break;
    default: return 0;
    }
    switch (speed) {
    case 1: lane = 2500; break;     // SDR
    case 2: lane = 5000; break;     // DDR
    case 4: lane = 10000; break;    // QDR
    case 8: lane = 10000; break;    // FDR10
    case 16: lane = 14000; break;   // FDR
    case 32: lane = 25000; break;   // EDR
    case 64: lane = 50000; break;   // HDR
    case 128: lane = 100000; break; // NDR
    default: return 0;
    }
    return lanes * lane;
}

inline constexpr std::uint32_t kGrhLen = 40;            // every UD receive buffer starts with this
inline constexpr std::uint32_t kMulticastQpn = 0xffffff;
inline constexpr std::uint16_t kMulticastLidBase = 0xc000;
inline constexpr std::size_t kMaxPkeys = 64;

// A port's link layer (ibv_port_attr.link_layer): InfiniBand, or Ethernet
// (RoCE: no SM, no LIDs, every address handle carries a GRH).
enum class LinkLayer : std::uint8_t { infiniband, ethernet };
// A GID table entry's type (ibv_gid_type): RoCE v2 GIDs are IP addresses.
enum class GidType : std::uint8_t { ib, roce_v1, roce_v2 };
// A RoCE v2 GID holding an IPv4 address (::ffff:a.b.c.d).
inline bool is_ipv4_mapped(const Gid &g) noexcept {
    for (int i = 0; i < 10; ++i)
        if (g.raw[static_cast<std::size_t>(i)] != 0)
            return false;
    return g.raw[10] == 0xff && g.raw[11] == 0xff;
}

struct PortAttr {
    PortState state = PortState::down;
    LinkLayer link_layer = LinkLayer::infiniband;
    std::uint8_t phys_state = 0;  // 5 = LinkUp, 2 = Polling
    std::uint16_t lid = 0;
    std::uint16_t sm_lid = 0;
    std::uint8_t sm_sl = 0;
    std::uint8_t lmc = 0;
    Mtu max_mtu = Mtu::mtu2048;
    Mtu active_mtu = Mtu::mtu2048;
    // IBA PortInfo LinkWidthActive (1: 1x, 2: 4x, 4: 8x, 8: 12x, 16: 2x) and
    // the active speed as ibv_port_attr encodes it (1 SDR, 2 DDR, 4 QDR,
    // 8 FDR10, 16 FDR, 32 EDR, 64 HDR, 128 NDR); 0: not known.
    std::uint8_t active_width = 0;
    std::uint8_t active_speed = 0;
    std::uint64_t subnet_prefix = 0;  // host order
    std::uint64_t port_guid = 0;      // host order
    std::uint16_t pkey_tbl_len = 0;
    std::uint16_t gid_tbl_len = 1;
    std::uint32_t port_num = 0;
};

// Asynchronous port events (ibv_event_type subset).
enum class EventType : std::uint8_t {
    port_active,
    port_error,  // port left ACTIVE
    lid_change,
    pkey_change,
    sm_change,
    gid_change,
};
const char *to_string(EventType e) noexcept;
struct PortEvent {
    EventType type;
    std::uint8_t port_num;
};

enum class WcStatus : std::uint8_t {
    success = 0,
    loc_len_err,     // message longer than the MTU (send) or the posted buffer (receive)
    loc_qp_op_err,   // QP or port not in a state to send
    wr_flush_err,    // flushed: QP destroyed with the WR outstanding
    aborted,         // the sender died or stalled while writing this buffer
    general_err,
    // Reliable connections (rc.hpp): the send was not acknowledged after the
    // QP's retries (the peer died or its port went down) / the peer had no
    // receive posted after its RNR retries. The QP is in ERR after either.
    retry_exc_err,
    rnr_retry_exc_err,
};
const char *to_string(WcStatus s) noexcept;

enum class WcOpcode : std::uint8_t { send, recv };

inline constexpr std::uint8_t kWcGrh = 0x01;      // the receive buffer's first 40 bytes hold a GRH
inline constexpr std::uint8_t kWcRssHash = 0x02;  // rss_hash holds the receive-side-scaling hash

struct Wc {
    std::uint64_t wr_id;
    WcStatus status;
    WcOpcode opcode;
    std::uint8_t wc_flags;
    std::uint8_t sl;
    std::uint32_t byte_len;  // receive: 40 (GRH area) + payload
    std::uint32_t qp_num;    // the local QP
    std::uint32_t src_qp;
    std::uint16_t slid;
    std::uint16_t pkey_index;
    std::uint32_t rss_hash;  // with kWcRssHash: the Toeplitz hash that chose the receive queue
};

// lkey 0 on a send: memory not registered with the device. The provider
// sends it inline or through a registered bounce buffer of its own (the
// software HCA reaches all of its process's memory anyway). A send whose
// every entry carries an lkey (memory registered with reg_mr) is read where
// it lies; small sends may still go inline.
struct Sge {
    std::uint64_t addr;
    std::uint32_t length;
    std::uint32_t lkey;
};

// A receive: one buffer (num_sge 1: the 40-byte GRH area first, then the
// message), or two scatter entries as Linux ipoib posts them (num_sge 2:
// `sge` takes the GRH area, exactly kGrhLen bytes, and `sge2` the message),
// so that the message can land where its consumer wants it (an mbuf's data
// room) wherever the GRH goes. Providers whose DeviceCaps::max_recv_sge is 1
// refuse a 2-entry receive with -EINVAL.
inline constexpr std::uint32_t kMaxRecvSge = 2;
struct RecvWr {
    std::uint64_t wr_id;
    Sge sge;             // the buffer (GRH area first), or with num_sge 2 the GRH area alone
    Sge sge2{};          // num_sge 2: where the message after the GRH goes
    std::uint32_t num_sge = 1;
};

class Ah;
// Reliable connections and connection management (rc.hpp).
class Srq;
class RcQp;
class Cm;
struct SrqInit;
struct RcQpInit;

inline constexpr std::uint32_t kMaxSendSge = 8;
// Use the QP's own Q_Key (ibv semantics: high bit of remote_qkey set).
inline constexpr std::uint32_t kUseQpQkey = 0x80000000u;

struct SendWr {
    std::uint64_t wr_id;
    const Sge *sg_list;
    std::uint32_t num_sge;
    Ah *ah;
    std::uint32_t remote_qpn;
    std::uint32_t remote_qkey;
    bool signaled = true;
};

struct AhAttr {
    std::uint16_t dlid = 0;
    std::uint8_t sl = 0;
    std::uint8_t port_num = 1;
    bool is_global = false;
    Gid dgid{};
    std::uint8_t sgid_index = 0;
    std::uint8_t hop_limit = 0;
    std::uint8_t traffic_class = 0;
    std::uint32_t flow_label = 0;
};

// Receive-side scaling (a ConnectX's RSS QP over receive work queues: an
// ibv_rwq_ind_table and rx_hash_conf): the HCA hashes what arrives for the QP
// with a Toeplitz hash and the redirection table picks the receive queue.
inline constexpr std::uint32_t kRssKeyLen = 40;
inline constexpr std::uint32_t kRssRetaSize = 128;
// What the hash covers, per kind of packet (bits of RssConf::fields). A
// packet whose own kind is not enabled is hashed by the coarser kind that is
// (TCP over IPv4 by its addresses when only kRssIpv4 is set); a packet of no
// enabled kind (not IP, or its family not enabled) is not hashed and goes to
// the queue reta[0] names, without kWcRssHash.
inline constexpr std::uint32_t kRssIpv4 = 1u << 0;     // IPv4 source and destination addresses
inline constexpr std::uint32_t kRssIpv4Tcp = 1u << 1;  // + TCP ports (not fragments)
inline constexpr std::uint32_t kRssIpv4Udp = 1u << 2;  // + UDP ports (not fragments)
inline constexpr std::uint32_t kRssIpv6 = 1u << 3;
inline constexpr std::uint32_t kRssIpv6Tcp = 1u << 4;  // (no extension headers before TCP/UDP)
inline constexpr std::uint32_t kRssIpv6Udp = 1u << 5;
inline constexpr std::uint32_t kRssAllFields = (1u << 6) - 1;
struct RssConf {
    std::uint8_t key[kRssKeyLen] = {};
    std::uint32_t fields = 0;
    std::uint16_t reta[kRssRetaSize] = {};  // entry (hash % kRssRetaSize) -> receive queue
};

// What a device offers beyond one queue pair with one queue of each kind.
struct DeviceCaps {
    // Send queues of one QP that all send with its QP number (mlx5:
    // IBV_QP_CREATE_SOURCE_QPN), each used by one thread without locks.
    std::uint32_t max_send_queues = 1;
    // Receive queues of one QP among which the HCA spreads arrivals (RSS).
    std::uint32_t max_recv_queues = 1;
    // Scatter entries of one receive (RecvWr::num_sge): 2 where a receive may
    // put the GRH area apart from the message.
    std::uint32_t max_recv_sge = 1;
    // Reliable connections (rc.hpp): gather entries of one RcQp send, and
    // scatter entries of one receive of an Srq (verbs: max_sge, max_srq_sge;
    // rxe gathers 32). At most kMaxRcSendSge / kMaxRcRecvSge.
    std::uint32_t max_rc_send_sge = 34;
    std::uint32_t max_rc_recv_sge = 33;
    // Sends read only memory registered with reg_mr, by lkey (verbs). The
    // software HCAs reach any memory of the process (lkey 0 is fine).
    bool lkey_required = false;
};
inline constexpr std::uint32_t kMaxQueues = 16;  // of either kind, on any provider

struct QpInit {
    class Cq *send_cq = nullptr;  // the CQs of a QP with one queue of each kind
    class Cq *recv_cq = nullptr;
    std::uint8_t port_num = 1;
    std::uint16_t pkey_index = 0;
    std::uint32_t qkey = 0;
    std::uint32_t max_send_wr = 256;  // per send queue
    std::uint32_t max_recv_wr = 256;  // per receive queue
    // Several queues on one QP number (up to DeviceCaps): num_send_queues
    // with their completion queues send_cqs[i], num_recv_queues with
    // recv_cqs[i] (required when there are more than one; queue 0's too, in
    // place of send_cq / recv_cq), spread by rss. A queue is used by one
    // thread at a time; different queues by different threads at once.
    std::uint32_t num_send_queues = 1;
    std::uint32_t num_recv_queues = 1;
    class Cq *const *send_cqs = nullptr;  // num_send_queues entries (needed when > 1)
    class Cq *const *recv_cqs = nullptr;
    RssConf rss{};
};

// Per-QP counters (receive side counts are kept by the fabric; any process may read them).
struct QpCounters {
    std::uint64_t tx_packets, tx_bytes, tx_errors;
    std::uint64_t rx_packets, rx_bytes;
    std::uint64_t drop_no_buffer, drop_qkey, drop_pkey, drop_too_long, drop_port_down, drop_aborted;
    std::uint64_t rx_errors;  // receive completions in error for another reason (flushes not counted)
    // Software HCA only (0 elsewhere): messages to this QP lost or completed in
    // error because its shared-memory state held a value no correct process
    // writes (a receive slot, the QP's entry): a buggy or crashed peer's doing.
    std::uint64_t rx_bad_slot;
    // Software HCA only (0 elsewhere). drop_stalled: receive slots taken back
    // from a live sender that held one too long (a stopped or stuck process;
    // completed as aborted, as a dead sender's are in drop_aborted). tx_late:
    // sends of this QP that finished after the receiver had taken the slot back
    // (not delivered; the send itself completes as UD does, successfully).
    std::uint64_t drop_stalled, tx_late;
    // Bytes of sends the provider copied into a buffer of its own because
    // their memory was not registered with the device (lkey 0) and too long
    // to go inline (verbs: its bounce ring). 0 where the device reaches all
    // memory (the software HCAs).
    std::uint64_t tx_bounce_bytes;
};

struct PortCounters {
    std::uint64_t tx_packets, tx_bytes;
    std::uint64_t rx_packets, rx_bytes;
    std::uint64_t drop_no_qp, drop_pkey, drop_port_down, drop_no_buffer, drop_qkey, drop_too_long;
    std::uint64_t tx_mtu_exceeded, tx_port_down;
    std::uint64_t rx_bad_slot;  // software HCA: the sum of its QPs' rx_bad_slot (0 elsewhere)
    // Providers that read packets off a wire themselves (xdp; 0 elsewhere):
    // packets whose ICRC was wrong / that were cut short, had lengths that
    // disagree or an opcode the provider does not take.
    std::uint64_t rx_bad_icrc, rx_malformed;
};

class Mr {
  public:
    virtual ~Mr() = default;
    virtual std::uint32_t lkey() const noexcept = 0;
    virtual void *addr() const noexcept = 0;
    virtual std::size_t length() const noexcept = 0;
};

class Cq {
  public:
    virtual ~Cq() = default;
    // Fill up to n completions; returns how many (0 if none), <0 on error.
    virtual int poll(Wc *wc, int n) noexcept = 0;
    // Completion events (a completion channel and ibv_req_notify_cq), on a
    // CQ made by create_event_cq: notify_fd() becomes readable (poll/epoll)
    // once a completion arrives after arm_notify(); if one is already
    // waiting when it is armed, at once on the software HCAs (verbs: as the
    // device does; rxe raises none for completions already there, and the
    // consumer's next poll finds them). ack_notify() consumes the event
    // (call it after waking, before arming again). -1 / -EOPNOTSUPP: no events.
    virtual int notify_fd() const noexcept { return -1; }
    virtual int arm_notify() noexcept { return -EOPNOTSUPP; }
    virtual void ack_notify() noexcept {}
};

class Ah {
  public:
    virtual ~Ah() = default;
    virtual const AhAttr &attr() const noexcept = 0;
};

class Qp {
  public:
    virtual ~Qp() = default;
    virtual std::uint32_t qp_num() const noexcept = 0;
    // Post n WRs; returns how many were accepted (the rest did not fit), <0 on error.
    // A send is accepted only if its completion will fit the send CQ (providers
    // that make completions themselves reserve the place): none is ever dropped.
    virtual int post_recv(const RecvWr *wr, int n) noexcept = 0;
    virtual int post_send(const SendWr *wr, int n) noexcept = 0;
    // The same on queue q of a multi-queue QP (post_send/post_recv are queue
    // 0's). A q the QP does not have: -EINVAL.
    virtual int post_send_queue(std::uint32_t q, const SendWr *wr, int n) noexcept {
        return q == 0 ? post_send(wr, n) : -EINVAL;
    }
    virtual int post_recv_queue(std::uint32_t q, const RecvWr *wr, int n) noexcept {
        return q == 0 ? post_recv(wr, n) : -EINVAL;
    }
    // A new hash key, hashed fields and redirection table (queues the QP has),
    // taking effect for the messages that arrive after it (one sent while it
    // changes may be hashed with parts of both, and lands on one of the QP's
    // queues, as on hardware updating its tables). -EOPNOTSUPP where the QP
    // has one receive queue.
    virtual int set_rss(const RssConf &) noexcept { return -EOPNOTSUPP; }
    // ibv_modify_qp(IBV_QP_QKEY): the Q_Key used for sends with kUseQpQkey and checked on receive.
    virtual int set_qkey(std::uint32_t qkey) noexcept = 0;
    // Move the QP to another index of its port's P_Key table (the partition
    // moved there: a heavy flush). The QP keeps its number, its posted
    // receives and its attachments. As hardware does, a QP's P_Key is the
    // table's entry at its index, read when a message is sent or received:
    // if the SM empties that entry, nothing is delivered or accepted until
    // the QP moves. 0, or <0 with last_error() (the caller keeps the
    // interface down). verbs: RTS -> SQD -> SQD(P_Key index) -> RTS.
    virtual int set_pkey_index(std::uint16_t index) noexcept = 0;
    virtual int attach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept = 0;
    virtual int detach_mcast(const Gid &mgid, std::uint16_t mlid) noexcept = 0;
    virtual QpCounters counters() const noexcept = 0;
};

class Context {
  public:
    virtual ~Context() = default;
    virtual const std::string &name() const noexcept = 0;
    virtual std::uint8_t num_ports() const noexcept = 0;
    virtual DeviceCaps caps() const noexcept { return {}; }
    virtual int query_port(std::uint8_t port, PortAttr *out) noexcept = 0;
    virtual int query_gid(std::uint8_t port, int index, Gid *out) noexcept = 0;
    virtual int query_pkey(std::uint8_t port, int index, std::uint16_t *out) noexcept = 0;
    // The type of a GID table entry (InfiniBand ports: always ib).
    virtual int query_gid_type(std::uint8_t port, int index, GidType *out) noexcept {
        Gid g;
        const int r = query_gid(port, index, &g);
        if (r == 0)
            *out = GidType::ib;
        return r;
    }

    // Memory the device can reach. alloc_dma gives memory any provider can
    // register (the software HCA needs it shared with its peers); reg_mr
    // registers a range of it (or, on hardware, of any memory).
    virtual void *alloc_dma(std::size_t len) noexcept = 0;
    virtual void free_dma(void *p) noexcept = 0;
    virtual std::unique_ptr<Mr> reg_mr(void *addr, std::size_t len) noexcept = 0;

    virtual std::unique_ptr<Cq> create_cq(int depth) noexcept = 0;
    // A CQ with completion events (Cq::notify_fd). Providers without them
    // make a plain CQ (its notify_fd() is -1).
    virtual std::unique_ptr<Cq> create_event_cq(int depth) noexcept { return create_cq(depth); }
    virtual std::unique_ptr<Qp> create_ud_qp(const QpInit &init) noexcept = 0;
    virtual std::unique_ptr<Ah> create_ah(const AhAttr &attr) noexcept = 0;

    // Reliable connections (rc.hpp). Providers without them: nullptr, with
    // last_error() "<provider>: no reliable connections" (the defaults).
    virtual std::unique_ptr<Srq> create_srq(const SrqInit &init) noexcept;
    virtual std::unique_ptr<RcQp> create_rc_qp(const RcQpInit &init) noexcept;
    // The connection manager of a port (one per port and process).
    virtual std::unique_ptr<Cm> open_cm(std::uint8_t port) noexcept;

    // Non-blocking: the next port event, if any (returns 1), else 0. Also
    // re-reads the port from the subnet's point of view when due, so call it
    // from the control thread regularly.
    virtual int get_port_event(PortEvent *ev) noexcept = 0;
    virtual int port_counters(std::uint8_t port, PortCounters *out) noexcept = 0;

    virtual const std::string &last_error() const noexcept = 0;
};

// Open a device of a provider found by name in the registry (provider.hpp:
// find_provider, providers(); each provider lists the option keys it takes).
// Built in: "soft" (the software HCA), "verbs" (rdma-core), "inproc" (devices
// of this process, for tests). options: key=value, comma separated, checked
// against the provider's keys before it is called.
// device: for "soft", the fabric node name (SIM_HOST) or empty for $SIM_HOST;
// options fabric=<name> (default from $IBSIM_SOCKNAME), capture=<pcap file>,
// poll_ms=<port re-poll interval>. For "verbs", the rdma-core device name
// (ibv_devices) or empty for the first; no options. The verbs provider loads
// libipoib_verbs_glue.so (and through it libibverbs) at this point: from
// $IPOIB_VERBS_GLUE if set (not in set-uid/set-gid processes), else beside
// the object holding this code, else from the build tree, else by soname.
// For "inproc", any name (one name, one device); options link=ib|eth,
// lid=N, mtu=N, pkeys=K:K... (doc/soft-hca.md).
struct OpenResult {
    std::unique_ptr<Context> ctx;
    std::string error;
};
OpenResult open_device(const std::string &provider, const std::string &device, const std::string &options);

// The GID an IPoIB interface uses as its port GID (its hardware address and
// every GRH's source). InfiniBand: index 0 (subnet prefix + port GUID).
// Ethernet (RoCE): the first RoCE v2 GID that is an IPv6 address, link-local
// preferred (IPoIB multicast GIDs are link-scoped IPv6 groups, and a RoCE v2
// packet's GIDs must be of one IP family), else the first RoCE v2 GID, else
// index 0. Returns the index, or <0 if the port cannot be queried.
int ipoib_gid_index(Context &ctx, std::uint8_t port) noexcept;

} // namespace ipoib::hca
