#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Set up and build: Debian packages, the DPDK driver-SDK headers (into the
# build tree), then Meson + Ninja. `--fuzz` also builds the clang/libFuzzer
# tree. Safe to run again; only what changed is redone.
#
# usage: buildtools/build.sh [--fuzz]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

"$top/buildtools/install-deps.sh"
"$top/buildtools/fetch-dpdk-sdk.sh" build/dpdk-sdk "${IPOIB_CACHE_DIR:-$top/.cache}"

quiet() {  # run a command, show its output only if it fails
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "build: failed: $*" >&2
        return 1
    fi
}

if [ -f build/build.ninja ]; then
    quiet meson configure build -Ddpdk_sdk="$top/build/dpdk-sdk"
else
    quiet meson setup build -Ddpdk_sdk="$top/build/dpdk-sdk"
fi
quiet ninja -C build

if [ "${1:-}" = "--fuzz" ]; then
    if [ ! -f build-fuzz/build.ninja ]; then
        CXX=clang++ quiet meson setup build-fuzz -Dfuzz=true -Db_lundef=false
    fi
    quiet ninja -C build-fuzz
fi
echo "build: ok (build/${1:+ and build-fuzz/})" >&2
