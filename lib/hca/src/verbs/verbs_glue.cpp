// SPDX-License-Identifier: BSD-3-Clause
// libipoib_verbs_glue.so: the only object of this project linked against
// libibverbs. It exports one table (see verbs_glue.hpp); the verbs provider
// dlopen()s it, so nothing else depends on rdma-core at load time.
#include "verbs_glue.hpp"

namespace ipoib::hca::verbs {
namespace {

int query_port(ibv_context *c, std::uint8_t port, ibv_port_attr *a) { return ibv_query_port(c, port, a); }
int query_gid_ex(ibv_context *c, std::uint32_t port, std::uint32_t index, ibv_gid_entry *e) {
    return ibv_query_gid_ex(c, port, index, e, 0);
}
ibv_mr *reg_mr(ibv_pd *pd, void *addr, std::size_t len, int access) { return ibv_reg_mr(pd, addr, len, access); }
ibv_cq *create_cq(ibv_context *c, int cqe) { return ibv_create_cq(c, cqe, nullptr, nullptr, 0); }

} // namespace
} // namespace ipoib::hca::verbs

using namespace ipoib::hca::verbs;

extern "C" __attribute__((visibility("default"))) const Glue ipoib_verbs_glue = {
    kGlueAbi,
    sizeof(Glue),
    ibv_get_device_list,
    ibv_free_device_list,
    ibv_get_device_name,
    ibv_open_device,
    ibv_close_device,
    ibv_query_device,
    query_port,
    query_gid_ex,
    ibv_query_pkey,
    ibv_alloc_pd,
    ibv_dealloc_pd,
    reg_mr,
    ibv_dereg_mr,
    create_cq,
    ibv_destroy_cq,
    ibv_create_qp,
    ibv_modify_qp,
    ibv_destroy_qp,
    ibv_create_ah,
    ibv_destroy_ah,
    ibv_attach_mcast,
    ibv_detach_mcast,
    ibv_get_async_event,
    ibv_ack_async_event,
    ibv_event_type_str,
};
