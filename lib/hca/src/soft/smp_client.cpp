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

bool SmpClient::query_node(NodeIdentity *out) {
    std::uint8_t buf[IB_SMP_DATA_SIZE];
    if (!smp_dr(IB_ATTR_NODE_INFO, 0, buf))
        return false;
    std::uint32_t nports = 0;
    mad_decode_field(buf, IB_NODE_GUID_F, &out->node_guid);
    mad_decode_field(buf, IB_NODE_PORT_GUID_F, &out->port1_guid);
    mad_decode_field(buf, IB_NODE_NPORTS_F, &nports);
    out->num_ports = static_cast<std::uint8_t>(nports);
    return true;
}

bool SmpClient::query_port(std::uint8_t port, const NodeIdentity &node, PortSnapshot *out) {
    std::uint8_t buf[IB_SMP_DATA_SIZE];
    if (!smp_dr(IB_ATTR_PORT_INFO, port, buf))
        return false;
    std::uint32_t v = 0;
    PortAttr &a = out->attr;
    a.port_num = port;
    mad_decode_field(buf, IB_PORT_LID_F, &v);
    a.lid = static_cast<std::uint16_t>(v);
    mad_decode_field(buf, IB_PORT_SMLID_F, &v);
    a.sm_lid = static_cast<std::uint16_t>(v);
    mad_decode_field(buf, IB_PORT_SMSL_F, &v);
    a.sm_sl = static_cast<std::uint8_t>(v);
    mad_decode_field(buf, IB_PORT_LMC_F, &v);
    a.lmc = static_cast<std::uint8_t>(v);
    mad_decode_field(buf, IB_PORT_STATE_F, &v);
    a.state = v <= 4 ? static_cast<PortState>(v) : PortState::down;
    mad_decode_field(buf, IB_PORT_PHYS_STATE_F, &v);
    a.phys_state = static_cast<std::uint8_t>(v);
    mad_decode_field(buf, IB_PORT_MTU_CAP_F, &v);
    a.max_mtu = v >= 1 && v <= 5 ? static_cast<Mtu>(v) : Mtu::mtu2048;
    mad_decode_field(buf, IB_PORT_NEIGHBOR_MTU_F, &v);
    a.active_mtu = v >= 1 && v <= 5 ? static_cast<Mtu>(v) : a.max_mtu;
    std::uint64_t prefix = 0;
    mad_decode_field(buf, IB_PORT_GID_PREFIX_F, &prefix);
    a.subnet_prefix = prefix;

    // The port GUID: NodeInfo answers for the port an SMP arrives on. The
    // local directed route arrives on port 1; other ports are asked by LID.
    a.port_guid = node.port1_guid;
    if (port != 1) {
        std::uint8_t ni[IB_SMP_DATA_SIZE];
        std::uint64_t g = 0;
        if (a.lid && smp_lid(a.lid, IB_ATTR_NODE_INFO, 0, ni))
            mad_decode_field(ni, IB_NODE_PORT_GUID_F, &g);
        // Unreachable (no LID yet): ibsim numbers port GUIDs after the node GUID.
        a.port_guid = g ? g : node.node_guid + port;
    }

    // P_KeyTable: 32 entries per block; modifier carries the port in bits 16-23.
    for (unsigned block = 0; block < kMaxPkeys / 32; ++block) {
        std::uint8_t pk[IB_SMP_DATA_SIZE];
        if (!smp_dr(IB_ATTR_PKEY_TBL, block | (unsigned{port} << 16), pk))
            return false;
        for (unsigned i = 0; i < 32; ++i) {
            const std::uint16_t key = static_cast<std::uint16_t>(pk[2 * i] << 8 | pk[2 * i + 1]);
            out->pkeys[block * 32 + i] = key;
        }
    }
    a.pkey_tbl_len = kMaxPkeys;
    return true;
}

} // namespace ipoib::hca::soft
