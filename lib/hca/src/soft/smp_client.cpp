// SPDX-License-Identifier: BSD-3-Clause
#include "smp_client.hpp"

#include <infiniband/mad.h>
#include <infiniband/umad.h>

#include <cstring>

namespace ipoib::hca::soft {

namespace {
constexpr int kTimeoutMs = 500;
}

SmpClient::~SmpClient() {
    if (!port_)
        return;
    // Unregister our agents before the port closes. A kernel drops an fd's
    // agents with it; umad2sim drops only the first, and the process's 32
    // agent slots ran out after some 30 re-opened devices (close/re-probe).
    for (const int cls : {IB_SMI_CLASS, IB_SMI_DIRECT_CLASS})
        if (const int agent = mad_rpc_class_agent(port_, cls); agent >= 0)
            umad_unregister(mad_rpc_portid(port_), agent);
    mad_rpc_close_port(port_);
}

bool SmpClient::open() {
    int classes[] = {IB_SMI_CLASS, IB_SMI_DIRECT_CLASS};
    port_ = mad_rpc_open_port(nullptr, 0, classes, 2);
    if (!port_) {
        error_ = "cannot open a umad port (no HCA, or not under umad2sim with SIM_HOST/IBSIM_SOCKNAME set)";
        return false;
    }
    return true;
}

bool SmpClient::smp_dr(unsigned attr, unsigned mod, std::uint8_t *buf) {
    ib_portid_t id;
    std::memset(&id, 0, sizeof id);
    char path[] = "0";
    if (str2drpath(&id.drpath, path, 0, 0) < 0) {
        error_ = "bad directed route";
        return false;
    }
    std::memset(buf, 0, IB_SMP_DATA_SIZE);
    if (!smp_query_via(buf, &id, attr, mod, kTimeoutMs, port_)) {
        error_ = "SMP query (attribute " + std::to_string(attr) + ") failed";
        return false;
    }
    return true;
}

bool SmpClient::smp_lid(std::uint16_t lid, unsigned attr, unsigned mod, std::uint8_t *buf) {
    ib_portid_t id;
    std::memset(&id, 0, sizeof id);
    ib_portid_set(&id, lid, 0, 0);
    std::memset(buf, 0, IB_SMP_DATA_SIZE);
    return smp_query_via(buf, &id, attr, mod, kTimeoutMs, port_) != nullptr;
}

static_assert(kSmpDataLen == IB_SMP_DATA_SIZE);

// libibmad's decoders take a non-const buffer; they only read it.
namespace {
std::uint32_t field(const std::uint8_t *buf, MAD_FIELDS f) {
    std::uint32_t v = 0;
    mad_decode_field(const_cast<std::uint8_t *>(buf), f, &v);
    return v;
}
std::uint64_t field64(const std::uint8_t *buf, MAD_FIELDS f) {
    std::uint64_t v = 0;
    mad_decode_field(const_cast<std::uint8_t *>(buf), f, &v);
    return v;
}
} // namespace

bool decode_node_info(const std::uint8_t *buf, NodeIdentity *out, std::string *err) {
    NodeIdentity n;
    n.node_guid = field64(buf, IB_NODE_GUID_F);
    n.port1_guid = field64(buf, IB_NODE_PORT_GUID_F);
    n.num_ports = static_cast<std::uint8_t>(field(buf, IB_NODE_NPORTS_F));
    // GUIDs name the node and its ports (the GID, the shared port entry); 0 is none.
    if (n.node_guid == 0 || n.port1_guid == 0 || n.num_ports == 0) {
        *err = "NodeInfo refused: " + std::string(n.node_guid == 0    ? "NodeGUID 0"
                                                  : n.port1_guid == 0 ? "PortGUID 0"
                                                                      : "NumPorts 0");
        return false;
    }
    *out = n;
    return true;
}

namespace {
bool unicast_lid(std::uint32_t lid) { return lid >= 1 && lid < kMulticastLidBase; }
bool mtu_code(std::uint32_t c) { return c >= 1 && c <= 5; }
} // namespace

// What a port may answer (IBA 14.2.5.6). PortState and PortPhysicalState
// always mean something; a port that is DOWN may answer anything in its
// other fields (C14-24.2.1), so those are not checked there but made
// harmless: a LID that is not unicast reads 0, an MTUCap that is no code
// 2048, a NeighborMTU that is none the cap (as before these checks). Past
// DOWN the SM has configured the port, and each field must mean what it
// says: the LIDs unicast (ARMED and ACTIVE with a LID, and room for its LMC
// range), the MTUs codes and NeighborMTU not above MTUCap, the subnet prefix
// not that of a multicast GID.
bool decode_port_info(const std::uint8_t *buf, std::uint8_t port, PortAttr *out, std::string *err) {
    const std::uint32_t state = field(buf, IB_PORT_STATE_F), phys = field(buf, IB_PORT_PHYS_STATE_F);
    const std::uint32_t lid = field(buf, IB_PORT_LID_F), sm_lid = field(buf, IB_PORT_SMLID_F);
    const std::uint32_t lmc = field(buf, IB_PORT_LMC_F);
    const std::uint32_t cap = field(buf, IB_PORT_MTU_CAP_F), neigh = field(buf, IB_PORT_NEIGHBOR_MTU_F);
    const std::uint64_t prefix = field64(buf, IB_PORT_GID_PREFIX_F);
    const auto refuse = [&](const std::string &what) {
        *err = "PortInfo of port " + std::to_string(port) + " refused: " + what;
        return false;
    };
    if (state < 1 || state > 4)  // 0 is "no state change", a Set's; 5..15 reserved
        return refuse("PortState " + std::to_string(state));
    if (phys < 1 || phys > 7)
        return refuse("PortPhysicalState " + std::to_string(phys));
    const bool down = state == 1;
    if (!down) {
        if (lid >= kMulticastLidBase || (lid == 0 && state >= 3))
            return refuse("LID " + std::to_string(lid) + " in state " + std::to_string(state));
        if (lid && lid + (1u << lmc) - 1 >= kMulticastLidBase)
            return refuse("LID " + std::to_string(lid) + " with LMC " + std::to_string(lmc) +
                          " reaches into the multicast LIDs");
        if (sm_lid >= kMulticastLidBase)
            return refuse("SM LID " + std::to_string(sm_lid));
        if (!mtu_code(cap))
            return refuse("MTUCap " + std::to_string(cap) + " is no MTU code (1..5)");
        if (!mtu_code(neigh) || neigh > cap)
            return refuse("NeighborMTU " + std::to_string(neigh) + " is no MTU code up to MTUCap " +
                          std::to_string(cap));
        if (prefix >> 56 == 0xff)
            return refuse("GID prefix of a multicast GID");
    }
    PortAttr a = *out;
    a.port_num = port;
    a.state = static_cast<PortState>(state);
    a.phys_state = static_cast<std::uint8_t>(phys);
    a.lid = static_cast<std::uint16_t>(unicast_lid(lid) ? lid : 0);
    a.sm_lid = static_cast<std::uint16_t>(unicast_lid(sm_lid) ? sm_lid : 0);
    a.sm_sl = static_cast<std::uint8_t>(field(buf, IB_PORT_SMSL_F));
    a.lmc = static_cast<std::uint8_t>(lmc);
    a.max_mtu = mtu_code(cap) ? static_cast<Mtu>(cap) : Mtu::mtu2048;
    a.active_mtu = mtu_code(neigh) ? static_cast<Mtu>(neigh) : a.max_mtu;
    a.subnet_prefix = prefix;
    // Width as ibv_port_attr has it (the same bits); speed: SDR/DDR/QDR from
    // LinkSpeedActive, FDR and faster from LinkSpeedExtActive where set.
    a.active_width = static_cast<std::uint8_t>(field(buf, IB_PORT_LINK_WIDTH_ACTIVE_F));
    const std::uint32_t speed = field(buf, IB_PORT_LINK_SPEED_ACTIVE_F);
    const std::uint32_t ext = field(buf, IB_PORT_LINK_SPEED_EXT_ACTIVE_F);
    a.active_speed = static_cast<std::uint8_t>(ext == 1 ? 16 : ext == 2 ? 32 : ext == 4 ? 64 : ext == 8 ? 128
                                               : (speed == 1 || speed == 2 || speed == 4) ? speed : 0);
    *out = a;
    return true;
}

void decode_pkey_block(const std::uint8_t *buf, std::uint16_t *keys32) {
    for (unsigned i = 0; i < 32; ++i)
        keys32[i] = static_cast<std::uint16_t>(buf[2 * i] << 8 | buf[2 * i + 1]);
}

bool SmpClient::query_node(NodeIdentity *out) {
    std::uint8_t buf[IB_SMP_DATA_SIZE];
    return smp_dr(IB_ATTR_NODE_INFO, 0, buf) && decode_node_info(buf, out, &error_);
}

bool SmpClient::query_port(std::uint8_t port, const NodeIdentity &node, PortSnapshot *out) {
    std::uint8_t buf[IB_SMP_DATA_SIZE];
    PortSnapshot s = *out;
    if (!smp_dr(IB_ATTR_PORT_INFO, port, buf) || !decode_port_info(buf, port, &s.attr, &error_))
        return false;
    PortAttr &a = s.attr;

    // The port GUID: NodeInfo answers for the port an SMP arrives on. The
    // local directed route arrives on port 1; other ports are asked by LID.
    // A port's GUID does not change: once known it is kept, not asked again
    // (after a relink LID-routed SMPs fail until the SM's sweep ends, 500 ms
    // each, and libibmad's warnings about them flooded the application's
    // terminal; pmd-bonding's relink saw its testpmd prompt lost among them).
    const std::uint64_t known = out->attr.port_guid;
    a.port_guid = node.port1_guid;
    if (port != 1 && known) {
        a.port_guid = known;
    } else if (port != 1) {
        std::uint8_t ni[IB_SMP_DATA_SIZE];
        std::uint64_t g = 0;
        if (a.lid && smp_lid(a.lid, IB_ATTR_NODE_INFO, 0, ni))
            g = field64(ni, IB_NODE_PORT_GUID_F);
        // Unreachable (no LID yet): ibsim numbers port GUIDs after the node GUID.
        a.port_guid = g ? g : node.node_guid + port;
    }

    // P_KeyTable: 32 entries per block; modifier carries the port in bits 16-23.
    for (unsigned block = 0; block < kMaxPkeys / 32; ++block) {
        std::uint8_t pk[IB_SMP_DATA_SIZE];
        if (!smp_dr(IB_ATTR_PKEY_TBL, block | (unsigned{port} << 16), pk))
            return false;
        decode_pkey_block(pk, s.pkeys + block * 32);
    }
    a.pkey_tbl_len = kMaxPkeys;
    *out = s;
    return true;
}

} // namespace ipoib::hca::soft
