// SPDX-License-Identifier: BSD-3-Clause
// libipoib_xdp_glue.so: the xdp provider's table of libxdp and libbpf entry
// points (xdp_glue.hpp), and the XDP program (roce_steer.bpf.c), embedded
// as the bytes of its object file (roce_steer_obj.h, generated at build time).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include <cerrno>
#include <cstdio>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <new>

#include "roce_steer_obj.h"
#include "xdp_glue.hpp"

namespace ipoib::hca::xdp {

struct SteerProgram {
    bpf_object *obj = nullptr;  // ours: libxdp does not close an object it did not open
    xdp_program *prog = nullptr;
    int ifindex = 0;
    xdp_attach_mode mode = XDP_MODE_UNSPEC;
};

namespace {

void say(char *err, std::size_t n, const char *what, int rc) {
    char why[160] = "";
    libxdp_strerror(rc, why, sizeof why);
    std::snprintf(err, n, "%s: %s", what, why[0] ? why : std::strerror(rc < 0 ? -rc : rc));
}

void free_program(SteerProgram *p) {
    if (p->prog)
        xdp_program__close(p->prog);
    if (p->obj)
        bpf_object__close(p->obj);
    delete p;
}

// libbpf and libxdp print to stderr by default (an application's terminal):
// quiet, unless $IPOIB_XDP_VERBOSE is set. Their errors reach the caller as
// return codes, which the provider turns into its own messages.
int quiet_bpf(libbpf_print_level, const char *, va_list) { return 0; }
int quiet_xdp(libxdp_print_level, const char *, va_list) { return 0; }

int attach_program(int ifindex, AttachMode mode, SteerProgram **out, char *err, std::size_t errlen) {
    if (!std::getenv("IPOIB_XDP_VERBOSE")) {
        libbpf_set_print(quiet_bpf);
        libxdp_set_print(quiet_xdp);
    }
    auto *p = new (std::nothrow) SteerProgram;
    if (!p)
        return -ENOMEM;
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = "ipoib_roce_steer");
    p->obj = bpf_object__open_mem(kRoceSteerObj, sizeof kRoceSteerObj, &opts);
    if (const long e = libbpf_get_error(p->obj); e || !p->obj) {
        p->obj = nullptr;
        say(err, errlen, "opening the XDP program", static_cast<int>(e ? e : -EINVAL));
        free_program(p);
        return static_cast<int>(e ? e : -EINVAL);
    }
    p->prog = xdp_program__from_bpf_obj(p->obj, "xdp");
    if (const long e = libxdp_get_error(p->prog); e || !p->prog) {
        p->prog = nullptr;
        say(err, errlen, "reading the XDP program", static_cast<int>(e ? e : -EINVAL));
        free_program(p);
        return static_cast<int>(e ? e : -EINVAL);
    }
    int rc = -EINVAL;
    if (mode != AttachMode::skb) {
        rc = xdp_program__attach(p->prog, ifindex, XDP_MODE_NATIVE, 0);
        p->mode = XDP_MODE_NATIVE;
    }
    if (rc && mode != AttachMode::native) {
        rc = xdp_program__attach(p->prog, ifindex, XDP_MODE_SKB, 0);
        p->mode = XDP_MODE_SKB;
    }
    if (rc) {
        say(err, errlen, "attaching the XDP program", rc);
        free_program(p);
        return rc < 0 ? rc : -rc;
    }
    p->ifindex = ifindex;
    *out = p;
    return 0;
}

void detach_program(SteerProgram *p) {
    if (!p)
        return;
    xdp_program__detach(p->prog, p->ifindex, p->mode, 0);
    free_program(p);
}

int program_map_fd(SteerProgram *p, const char *map) {
    return bpf_object__find_map_fd_by_name(p->obj, map);
}

bool program_native(const SteerProgram *p) { return p->mode == XDP_MODE_NATIVE; }

int map_update(int fd, const void *key, const void *value, std::uint64_t flags) {
    return bpf_map_update_elem(fd, key, value, flags);
}

int map_delete(int fd, const void *key) { return bpf_map_delete_elem(fd, key); }

constexpr Glue kTable{
    .abi = kGlueAbi,
    .size = sizeof(Glue),
    .attach_program = attach_program,
    .detach_program = detach_program,
    .program_map_fd = program_map_fd,
    .program_native = program_native,
    .map_update = map_update,
    .map_delete = map_delete,
    .umem_create = xsk_umem__create,
    .umem_delete = xsk_umem__delete,
    .socket_create = xsk_socket__create,
    .socket_delete = xsk_socket__delete,
    .socket_fd = xsk_socket__fd,
    .update_xskmap = xsk_socket__update_xskmap,
};

// Every field set (the structured binding stops compiling when Glue gains one).
consteval bool complete(const Glue &g) {
    const auto &[abi, size, attach, detach, map_fd, native, update, del, umem_create, umem_delete, socket_create,
                 socket_delete, socket_fd, update_xskmap] = g;
    return abi && size && attach && detach && map_fd && native && update && del && umem_create && umem_delete &&
           socket_create && socket_delete && socket_fd && update_xskmap;
}
#if !defined(__SANITIZE_ADDRESS__) || defined(__clang__)
static_assert(complete(kTable), "a glue entry is missing");
#endif

} // namespace

} // namespace ipoib::hca::xdp

extern "C" __attribute__((visibility("default"))) const ipoib::hca::xdp::Glue ipoib_xdp_glue = ipoib::hca::xdp::kTable;
