// SPDX-License-Identifier: BSD-3-Clause
// The table of libibverbs entry points the verbs provider uses. It lives in
// a separate shared object (libipoib_verbs_glue.so, linked against
// libibverbs) that the provider dlopen()s when a verbs device is opened, the
// way DPDK's mlx5 driver loads its glue: the PMD itself has no link-time
// dependency on rdma-core and runs on the software HCA where rdma-core is
// absent. Only control-path calls go through the table; the data path
// (ibv_post_send/ibv_post_recv/ibv_post_srq_recv/ibv_poll_cq) is inline in
// <infiniband/verbs.h> and calls the device's own ops directly. The glue also
// carries librdmacm's connection management (connected mode's CM, verbs_cm.cpp).
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>

#include "../provider_common.hpp"

namespace ipoib::hca::verbs {

inline constexpr std::uint32_t kGlueAbi = 3;  // bump when the table changes
inline constexpr const char *kGlueSymbol = "ipoib_verbs_glue";
inline constexpr const char *kGlueFile = "libipoib_verbs_glue.so";

struct Glue {
    std::uint32_t abi;
    std::uint32_t size;  // sizeof(Glue) as the glue was built
    ibv_device **(*get_device_list)(int *num);
    void (*free_device_list)(ibv_device **list);
    const char *(*get_device_name)(ibv_device *dev);
    ibv_context *(*open_device)(ibv_device *dev);
    int (*close_device)(ibv_context *ctx);
    int (*query_device)(ibv_context *ctx, ibv_device_attr *attr);
    int (*query_port)(ibv_context *ctx, std::uint8_t port, ibv_port_attr *attr);
    int (*query_gid_ex)(ibv_context *ctx, std::uint32_t port, std::uint32_t index, ibv_gid_entry *entry);
    int (*query_pkey)(ibv_context *ctx, std::uint8_t port, int index, std::uint16_t *pkey);
    ibv_pd *(*alloc_pd)(ibv_context *ctx);
    int (*dealloc_pd)(ibv_pd *pd);
    ibv_mr *(*reg_mr)(ibv_pd *pd, void *addr, std::size_t len, int access);
    int (*dereg_mr)(ibv_mr *mr);
    ibv_cq *(*create_cq)(ibv_context *ctx, int cqe, ibv_comp_channel *channel);  // channel may be null
    int (*destroy_cq)(ibv_cq *cq);
    ibv_qp *(*create_qp)(ibv_pd *pd, ibv_qp_init_attr *attr);
    int (*modify_qp)(ibv_qp *qp, ibv_qp_attr *attr, int mask);
    int (*destroy_qp)(ibv_qp *qp);
    ibv_ah *(*create_ah)(ibv_pd *pd, ibv_ah_attr *attr);
    int (*destroy_ah)(ibv_ah *ah);
    int (*attach_mcast)(ibv_qp *qp, const ibv_gid *gid, std::uint16_t lid);
    int (*detach_mcast)(ibv_qp *qp, const ibv_gid *gid, std::uint16_t lid);
    int (*get_async_event)(ibv_context *ctx, ibv_async_event *ev);
    void (*ack_async_event)(ibv_async_event *ev);
    const char *(*event_type_str)(ibv_event_type ev);
    ibv_comp_channel *(*create_comp_channel)(ibv_context *ctx);
    int (*destroy_comp_channel)(ibv_comp_channel *channel);
    int (*get_cq_event)(ibv_comp_channel *channel, ibv_cq **cq, void **cq_context);
    void (*ack_cq_events)(ibv_cq *cq, unsigned int nevents);
    ibv_srq *(*create_srq)(ibv_pd *pd, ibv_srq_init_attr *attr);
    int (*destroy_srq)(ibv_srq *srq);
    int (*query_qp)(ibv_qp *qp, ibv_qp_attr *attr, int mask, ibv_qp_init_attr *init);
    // librdmacm
    rdma_event_channel *(*create_event_channel)();
    void (*destroy_event_channel)(rdma_event_channel *channel);
    int (*create_id)(rdma_event_channel *channel, rdma_cm_id **id, void *context, rdma_port_space ps);
    int (*destroy_id)(rdma_cm_id *id);
    int (*bind_addr)(rdma_cm_id *id, sockaddr *addr);
    int (*listen)(rdma_cm_id *id, int backlog);
    int (*resolve_addr)(rdma_cm_id *id, sockaddr *src, sockaddr *dst, int timeout_ms);
    int (*resolve_route)(rdma_cm_id *id, int timeout_ms);
    int (*connect)(rdma_cm_id *id, rdma_conn_param *param);
    int (*accept)(rdma_cm_id *id, rdma_conn_param *param);
    int (*reject)(rdma_cm_id *id, const void *private_data, std::uint8_t len);
    int (*establish)(rdma_cm_id *id);
    int (*disconnect)(rdma_cm_id *id);
    int (*get_cm_event)(rdma_event_channel *channel, rdma_cm_event **event);
    int (*ack_cm_event)(rdma_cm_event *event);
    int (*init_qp_attr)(rdma_cm_id *id, ibv_qp_attr *attr, int *mask);
    const char *(*cm_event_str)(rdma_cm_event_type event);
};

// Every entry of the table by name, for the check that none is null (the
// provider refuses such a glue, naming the entry; verbs_glue.cpp checks its
// own table at compile time). Add a line here when Glue gets an entry.
using common::GlueEntry;
#define IPOIB_GLUE_ENTRY(f) GlueEntry{#f, offsetof(Glue, f)}
inline constexpr GlueEntry kGlueEntries[] = {
    IPOIB_GLUE_ENTRY(get_device_list), IPOIB_GLUE_ENTRY(free_device_list), IPOIB_GLUE_ENTRY(get_device_name),
    IPOIB_GLUE_ENTRY(open_device),     IPOIB_GLUE_ENTRY(close_device),     IPOIB_GLUE_ENTRY(query_device),
    IPOIB_GLUE_ENTRY(query_port),      IPOIB_GLUE_ENTRY(query_gid_ex),     IPOIB_GLUE_ENTRY(query_pkey),
    IPOIB_GLUE_ENTRY(alloc_pd),        IPOIB_GLUE_ENTRY(dealloc_pd),       IPOIB_GLUE_ENTRY(reg_mr),
    IPOIB_GLUE_ENTRY(dereg_mr),        IPOIB_GLUE_ENTRY(create_cq),        IPOIB_GLUE_ENTRY(destroy_cq),
    IPOIB_GLUE_ENTRY(create_qp),       IPOIB_GLUE_ENTRY(modify_qp),        IPOIB_GLUE_ENTRY(destroy_qp),
    IPOIB_GLUE_ENTRY(create_ah),       IPOIB_GLUE_ENTRY(destroy_ah),       IPOIB_GLUE_ENTRY(attach_mcast),
    IPOIB_GLUE_ENTRY(detach_mcast),    IPOIB_GLUE_ENTRY(get_async_event),  IPOIB_GLUE_ENTRY(ack_async_event),
    IPOIB_GLUE_ENTRY(event_type_str),  IPOIB_GLUE_ENTRY(create_comp_channel), IPOIB_GLUE_ENTRY(destroy_comp_channel),
    IPOIB_GLUE_ENTRY(get_cq_event),    IPOIB_GLUE_ENTRY(ack_cq_events),    IPOIB_GLUE_ENTRY(create_srq),
    IPOIB_GLUE_ENTRY(destroy_srq),     IPOIB_GLUE_ENTRY(query_qp),         IPOIB_GLUE_ENTRY(create_event_channel), IPOIB_GLUE_ENTRY(destroy_event_channel),
    IPOIB_GLUE_ENTRY(create_id),       IPOIB_GLUE_ENTRY(destroy_id),       IPOIB_GLUE_ENTRY(bind_addr),
    IPOIB_GLUE_ENTRY(listen),          IPOIB_GLUE_ENTRY(resolve_addr),     IPOIB_GLUE_ENTRY(resolve_route),
    IPOIB_GLUE_ENTRY(connect),         IPOIB_GLUE_ENTRY(accept),           IPOIB_GLUE_ENTRY(reject),
    IPOIB_GLUE_ENTRY(establish),       IPOIB_GLUE_ENTRY(disconnect),       IPOIB_GLUE_ENTRY(get_cm_event),
    IPOIB_GLUE_ENTRY(ack_cm_event),    IPOIB_GLUE_ENTRY(init_qp_attr),     IPOIB_GLUE_ENTRY(cm_event_str),
};
#undef IPOIB_GLUE_ENTRY
// Every function pointer after the header fields is listed above.
static_assert(std::size(kGlueEntries) ==
              (sizeof(Glue) - offsetof(Glue, get_device_list)) / sizeof(void (*)()));

} // namespace ipoib::hca::verbs
