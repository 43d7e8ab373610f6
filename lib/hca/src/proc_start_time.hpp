// SPDX-License-Identifier: BSD-3-Clause
// A process's start time, which tells a live process from a dead one whose
// PID was reused: the software HCA's fabric judges its peers by it, and the
// xdp provider the owner of an XDP program left on a device. Header-only:
// the xdp provider's glue (a shared object of its own) uses it too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ipoib::hca {

// /proc/PID/stat field 22 (clock ticks after boot); 0 if the process does
// not exist or has exited (a zombie not yet reaped counts as exited).
inline std::uint64_t proc_start_time(int pid) noexcept {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = std::fopen(path, "r");
    if (!f)
        return 0;
    char buf[1024];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char *p = std::strrchr(buf, ')');
    if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
        return 0;  // unparsable, zombie or dead
    // After the command come the state (field 3) ... starttime (field 22).
    int field = 2;
    for (++p; *p && field < 22; ++p)
        if (*p == ' ')
            ++field;
    return std::strtoull(p, nullptr, 10);
}

} // namespace ipoib::hca
