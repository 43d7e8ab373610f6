// SPDX-License-Identifier: BSD-3-Clause
#include "smp_client.hpp"

#include <infiniband/mad.h>

#include <cstring>

namespace ipoib::hca::soft {

namespace {
constexpr int kTimeoutMs = 500;
}

SmpClient::~SmpClient() {
    if (port_)
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

bool decode_node_info(const std::uint8_t *buf, NodeIdentity *out, std::string *) {
    NodeIdentity n;
    n.node_guid = field64(buf, IB_NODE_GUID_F);
    n.port1_guid = field64(buf, IB_NODE_PORT_GUID_F);
    n.num_ports = static_cast<std::uint8_t>(field(buf, IB_NODE_NPORTS_F));
    *out = n;
    return true;
}

bool decode_port_info(const std::uint8_t *buf, std::uint8_t port, PortAttr *out, std::string *) {
    PortAttr a = *out;
    a.port_num = port;
    a.lid = static_cast<std::uint16_t>(field(buf, IB_PORT_LID_F));
    a.sm_lid = static_cast<std::uint16_t>(field(buf, IB_PORT_SMLID_F));
    a.sm_sl = static_cast<std::uint8_t>(field(buf, IB_PORT_SMSL_F));
    a.lmc = static_cast<std::uint8_t>(field(buf, IB_PORT_LMC_F));
    const std::uint32_t state = field(buf, IB_PORT_STATE_F);
    a.state = state <= 4 ? static_cast<PortState>(state) : PortState::down;
    a.phys_state = static_cast<std::uint8_t>(field(buf, IB_PORT_PHYS_STATE_F));
    const std::uint32_t cap = field(buf, IB_PORT_MTU_CAP_F);
    a.max_mtu = cap >= 1 && cap <= 5 ? static_cast<Mtu>(cap) : Mtu::mtu2048;
    const std::uint32_t neigh = field(buf, IB_PORT_NEIGHBOR_MTU_F);
    a.active_mtu = neigh >= 1 && neigh <= 5 ? static_cast<Mtu>(neigh) : a.max_mtu;
    a.subnet_prefix = field64(buf, IB_PORT_GID_PREFIX_F);
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
    a.port_guid = node.port1_guid;
    if (port != 1) {
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
