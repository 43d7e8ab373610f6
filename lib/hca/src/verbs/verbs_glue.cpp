// SPDX-License-Identifier: BSD-3-Clause
// libipoib_verbs_glue.so: the only object of this project linked against
// libibverbs and librdmacm. It exports one table (see verbs_glue.hpp); the verbs provider
// dlopen()s it, so nothing else depends on rdma-core at load time.
#include "verbs_glue.hpp"

namespace ipoib::hca::verbs {
namespace {

int query_port(ibv_context *c, std::uint8_t port, ibv_port_attr *a) { return ibv_query_port(c, port, a); }
int query_gid_ex(ibv_context *c, std::uint32_t port, std::uint32_t index, ibv_gid_entry *e) {
    return ibv_query_gid_ex(c, port, index, e, 0);
}
ibv_mr *reg_mr(ibv_pd *pd, void *addr, std::size_t len, int access) { return ibv_reg_mr(pd, addr, len, access); }
ibv_cq *create_cq(ibv_context *c, int cqe, ibv_comp_channel *ch) { return ibv_create_cq(c, cqe, nullptr, ch, 0); }
int reject(rdma_cm_id *id, const void *pd, std::uint8_t len) { return rdma_reject(id, pd, len); }

} // namespace
} // namespace ipoib::hca::verbs

using namespace ipoib::hca::verbs;

namespace {

// Filled by name, in declaration order (C++20 designated initialisers): two
// entries of the same type cannot be swapped unnoticed. A missing entry
// would be null: -Wmissing-field-initializers catches it under -Werror, and
// the static_assert below catches it whatever the flags.
constexpr Glue kTable = {
    .abi = kGlueAbi,
    .size = sizeof(Glue),
    .get_device_list = ibv_get_device_list,
    .free_device_list = ibv_free_device_list,
    .get_device_name = ibv_get_device_name,
    .open_device = ibv_open_device,
    .close_device = ibv_close_device,
    .query_device = ibv_query_device,
    .query_port = query_port,
    .query_gid_ex = query_gid_ex,
    .query_pkey = ibv_query_pkey,
    .alloc_pd = ibv_alloc_pd,
    .dealloc_pd = ibv_dealloc_pd,
    .reg_mr = reg_mr,
    .dereg_mr = ibv_dereg_mr,
    .create_cq = create_cq,
    .destroy_cq = ibv_destroy_cq,
    .create_qp = ibv_create_qp,
    .modify_qp = ibv_modify_qp,
    .destroy_qp = ibv_destroy_qp,
    .create_ah = ibv_create_ah,
    .destroy_ah = ibv_destroy_ah,
    .attach_mcast = ibv_attach_mcast,
    .detach_mcast = ibv_detach_mcast,
    .get_async_event = ibv_get_async_event,
    .ack_async_event = ibv_ack_async_event,
    .event_type_str = ibv_event_type_str,
    .create_comp_channel = ibv_create_comp_channel,
    .destroy_comp_channel = ibv_destroy_comp_channel,
    .get_cq_event = ibv_get_cq_event,
    .ack_cq_events = ibv_ack_cq_events,
    .create_srq = ibv_create_srq,
    .destroy_srq = ibv_destroy_srq,
    .query_qp = ibv_query_qp,
    .create_event_channel = rdma_create_event_channel,
    .destroy_event_channel = rdma_destroy_event_channel,
    .create_id = rdma_create_id,
    .destroy_id = rdma_destroy_id,
    .bind_addr = rdma_bind_addr,
    .listen = rdma_listen,
    .resolve_addr = rdma_resolve_addr,
    .resolve_route = rdma_resolve_route,
    .connect = rdma_connect,
    .accept = rdma_accept,
    .reject = reject,
    .establish = rdma_establish,
    .disconnect = rdma_disconnect,
    .get_cm_event = rdma_get_cm_event,
    .ack_cm_event = rdma_ack_cm_event,
    .init_qp_attr = rdma_init_qp_attr,
    .cm_event_str = rdma_event_str,
};

// Every field set. The structured binding names each field, so it stops
// compiling when Glue gains one (and kGlueEntries' static_assert says the same).
consteval bool complete(const Glue &g) {
    const auto &[abi, size, get_device_list, free_device_list, get_device_name, open_device, close_device,
                 query_device, query_port, query_gid_ex, query_pkey, alloc_pd, dealloc_pd, reg_mr, dereg_mr,
                 create_cq, destroy_cq, create_qp, modify_qp, destroy_qp, create_ah, destroy_ah, attach_mcast,
                 detach_mcast, get_async_event, ack_async_event, event_type_str, create_comp_channel,
                 destroy_comp_channel, get_cq_event, ack_cq_events, create_srq, destroy_srq, query_qp,
                 create_event_channel,
                 destroy_event_channel, create_id, destroy_id, bind_addr, listen, resolve_addr, resolve_route, connect,
                 accept, reject, establish, disconnect, get_cm_event, ack_cm_event, init_qp_attr, cm_event_str] = g;
    return abi && size && get_device_list && free_device_list && get_device_name && open_device && close_device &&
           query_device && query_port && query_gid_ex && query_pkey && alloc_pd && dealloc_pd && reg_mr &&
           dereg_mr && create_cq && destroy_cq && create_qp && modify_qp && destroy_qp && create_ah &&
           destroy_ah && attach_mcast && detach_mcast && get_async_event && ack_async_event && event_type_str &&
           create_comp_channel && destroy_comp_channel && get_cq_event && ack_cq_events && create_srq &&
           destroy_srq && query_qp && create_event_channel && destroy_event_channel && create_id && destroy_id && bind_addr &&
           listen && resolve_addr && resolve_route && connect && accept && reject && establish && disconnect &&
           get_cm_event && ack_cm_event && init_qp_attr && cm_event_str;
}
// g++ with -fsanitize=undefined (the sanitizer build, always with ASan) cannot
// fold a function's address compared with null; the runtime check in
// load_glue() still covers that build.
#if !defined(__SANITIZE_ADDRESS__) || defined(__clang__)
static_assert(complete(kTable), "a glue entry is missing");
#endif

} // namespace

extern "C" __attribute__((visibility("default"))) const Glue ipoib_verbs_glue = kTable;
