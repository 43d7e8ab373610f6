// SPDX-License-Identifier: BSD-3-Clause
// The table of libxdp and libbpf entry points the xdp provider uses, in a
// separate shared object (libipoib_xdp_glue.so, linked against libxdp and
// libbpf, with the XDP program roce_steer.bpf.c embedded) that the provider
// dlopen()s when an xdp device is opened: the driver has no link-time
// dependency on them and runs on the other providers where they are absent
// (as the verbs glue does for rdma-core). Only setup goes through the table:
// the data path uses the AF_XDP rings through the inline helpers of
// <xdp/xsk.h>, which touch only the rings' shared memory.
#pragma once

#include <xdp/xsk.h>

#include <cstddef>
#include <cstdint>
#include <iterator>

#include "../provider_common.hpp"

namespace ipoib::hca::xdp {

inline constexpr std::uint32_t kGlueAbi = 1;  // bump when the table changes
inline constexpr const char *kGlueSymbol = "ipoib_xdp_glue";
inline constexpr const char *kGlueFile = "libipoib_xdp_glue.so";

// How the program is attached (libxdp's XDP_MODE_*): auto tries the
// driver's own XDP (native) first, then the generic one (skb).
enum class AttachMode : std::uint8_t { automatic, native, skb };

struct SteerProgram;  // the attached XDP program (the glue's own)

struct Glue {
    std::uint32_t abi;
    std::uint32_t size;  // sizeof(Glue) as the glue was built
    // The embedded XDP program, attached to ifindex through libxdp (its
    // dispatcher when bpffs is mounted, so that it runs beside other
    // programs; else alone). 0, or a negative errno with a message in err.
    int (*attach_program)(int ifindex, AttachMode mode, SteerProgram **out, char *err, std::size_t errlen);
    void (*detach_program)(SteerProgram *prog);  // detach and free
    int (*program_map_fd)(SteerProgram *prog, const char *map);  // <0 if none
    bool (*program_native)(const SteerProgram *prog);            // attached as the driver's own XDP
    int (*map_update)(int fd, const void *key, const void *value, std::uint64_t flags);  // bpf_map_update_elem
    int (*map_delete)(int fd, const void *key);                                          // bpf_map_delete_elem
    // libxdp's xsk API (<xdp/xsk.h>)
    int (*umem_create)(xsk_umem **umem, void *area, __u64 size, xsk_ring_prod *fill, xsk_ring_cons *comp,
                       const xsk_umem_config *config);
    int (*umem_delete)(xsk_umem *umem);
    int (*socket_create)(xsk_socket **xsk, const char *ifname, std::uint32_t queue, xsk_umem *umem,
                         xsk_ring_cons *rx, xsk_ring_prod *tx, const xsk_socket_config *config);
    void (*socket_delete)(xsk_socket *xsk);
    int (*socket_fd)(const xsk_socket *xsk);
    int (*update_xskmap)(xsk_socket *xsk, int map_fd);
};

// Every entry of the table by name (the provider refuses a glue with a null
// one, naming it; xdp_glue.cpp checks its own table at compile time).
#define IPOIB_XDP_GLUE_ENTRY(f) common::GlueEntry{#f, offsetof(Glue, f)}
inline constexpr common::GlueEntry kGlueEntries[] = {
    IPOIB_XDP_GLUE_ENTRY(attach_program), IPOIB_XDP_GLUE_ENTRY(detach_program), IPOIB_XDP_GLUE_ENTRY(program_map_fd),
    IPOIB_XDP_GLUE_ENTRY(program_native), IPOIB_XDP_GLUE_ENTRY(map_update),     IPOIB_XDP_GLUE_ENTRY(map_delete),
    IPOIB_XDP_GLUE_ENTRY(umem_create),    IPOIB_XDP_GLUE_ENTRY(umem_delete),    IPOIB_XDP_GLUE_ENTRY(socket_create),
    IPOIB_XDP_GLUE_ENTRY(socket_delete),  IPOIB_XDP_GLUE_ENTRY(socket_fd),      IPOIB_XDP_GLUE_ENTRY(update_xskmap),
};
#undef IPOIB_XDP_GLUE_ENTRY
static_assert(std::size(kGlueEntries) == (sizeof(Glue) - offsetof(Glue, attach_program)) / sizeof(void (*)()));

} // namespace ipoib::hca::xdp
