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

#include <unistd.h>

#include "../proc_start_time.hpp"
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

constexpr const char *kProgramName = "roce_steer";  // the program's function in roce_steer.bpf.c

struct Owner {  // roce_steer.bpf.c's struct owner
    std::uint32_t pid, pad;
    std::uint64_t start_time;
};

// The owner recorded in an attached program of ours (false if it has no owner map).
bool program_owner(int prog_fd, Owner *out) {
    bpf_prog_info info{};
    std::uint32_t ids[16];
    info.nr_map_ids = 16;
    info.map_ids = reinterpret_cast<std::uint64_t>(ids);
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0)
        return false;
    for (std::uint32_t i = 0; i < info.nr_map_ids && i < 16; ++i) {
        const int fd = bpf_map_get_fd_by_id(ids[i]);
        if (fd < 0)
            continue;
        bpf_map_info mi{};
        std::uint32_t mlen = sizeof mi;
        bool found = false;
        if (bpf_obj_get_info_by_fd(fd, &mi, &mlen) == 0 && std::strcmp(mi.name, "owner") == 0) {
            const std::uint32_t key = 0;
            found = bpf_map_lookup_elem(fd, &key, out) == 0;
        }
        close(fd);
        if (found)
            return true;
    }
    return false;
}

// Detach programs of ours on ifindex whose process is gone (killed before
// it could detach: an XDP program outlives its loader). Returns how many.
int reclaim_stale(int ifindex) {
    xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
    if (!mp || libxdp_get_error(mp))
        return 0;
    int reclaimed = 0;
    const auto stale = [](const xdp_program *prog) {
        Owner o{};
        return prog && std::strcmp(xdp_program__name(prog), kProgramName) == 0 &&
               program_owner(xdp_program__fd(prog), &o) && o.pid != 0 &&
               proc_start_time(static_cast<int>(o.pid)) != o.start_time;
    };
    if (xdp_multiprog__is_legacy(mp)) {
        if (stale(xdp_multiprog__main_prog(mp)) && xdp_multiprog__detach(mp) == 0)
            ++reclaimed;
    } else {
        const xdp_attach_mode m = xdp_multiprog__attach_mode(mp);
        for (xdp_program *prog = xdp_multiprog__next_prog(nullptr, mp); prog;) {
            xdp_program *next = xdp_multiprog__next_prog(prog, mp);
            if (stale(prog) && xdp_program__detach(prog, ifindex, m, 0) == 0)
                ++reclaimed;
            prog = next;
        }
    }
    xdp_multiprog__close(mp);
    return reclaimed;
}

// Record this process as the program's owner, in a map bound to the program
// (the program never reads it: without the binding the kernel would not keep
// it among the program's maps, where the next process looks for it).
int set_owner(bpf_object *obj, int prog_fd) {
    const int fd = bpf_object__find_map_fd_by_name(obj, "owner");
    if (fd < 0)
        return fd;
    if (const int rc = bpf_prog_bind_map(prog_fd, fd, nullptr))
        return rc;
    const Owner o{static_cast<std::uint32_t>(getpid()), 0, proc_start_time(getpid())};
    const std::uint32_t key = 0;
    return bpf_map_update_elem(fd, &key, &o, 0);
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
// Why libxdp could not use its dispatcher (its last message saying so), for
// the error when a second program then cannot be attached.
thread_local char g_no_dispatcher[200];
int quiet_bpf(libbpf_print_level, const char *, va_list) { return 0; }
int quiet_xdp(libxdp_print_level, const char *fmt, va_list ap) {
    char line[200];
    std::vsnprintf(line, sizeof line, fmt, ap);
    if (std::strstr(line, "dispatcher") && !std::strstr(line, "Falling back")) {
        line[std::strcspn(line, "\n")] = 0;
        std::snprintf(g_no_dispatcher, sizeof g_no_dispatcher, "%s", line);
    }
    return 0;
}

void detach_program(SteerProgram *p);

int attach_program(int ifindex, AttachMode mode, SteerProgram **out, char *err, std::size_t errlen) {
    if (!std::getenv("IPOIB_XDP_VERBOSE")) {
        libbpf_set_print(quiet_bpf);
        libxdp_set_print(quiet_xdp);
    }
    g_no_dispatcher[0] = 0;
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
    reclaim_stale(ifindex);
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
        char what[400];
        if (rc != -EBUSY && rc != -EEXIST)
            std::snprintf(what, sizeof what, "attaching the XDP program");
        else if (g_no_dispatcher[0])
            std::snprintf(what, sizeof what,
                          "attaching the XDP program (another XDP program is on the device, and libxdp cannot run "
                          "several side by side here: %s)",
                          g_no_dispatcher);
        else
            std::snprintf(what, sizeof what,
                          "attaching the XDP program (another XDP program is on the device; with bpffs mounted at "
                          "/sys/fs/bpf or $LIBXDP_BPFFS, libxdp runs several side by side)");
        say(err, errlen, what, rc);
        free_program(p);
        return rc < 0 ? rc : -rc;
    }
    p->ifindex = ifindex;
    if (const int r2 = set_owner(p->obj, xdp_program__fd(p->prog))) {
        say(err, errlen, "recording the XDP program's owner", r2);
        detach_program(p);
        return r2;
    }
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
