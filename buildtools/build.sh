#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Set up and build: Debian packages, the DPDK driver-SDK headers (into the
# build tree), then Meson + Ninja, then DPDK's l3fwd example from dpdk-doc
# (build/dpdk-examples). `--fuzz` also builds the clang/libFuzzer tree.
# Safe to run again; only what changed is redone.
#
# usage: buildtools/build.sh [--fuzz] [--asan]
#   --fuzz  also build-fuzz/: clang, libFuzzer targets (-Dfuzz=true)
#   --asan  also build-asan/: g++ with AddressSanitizer + UBSan (the sanitizer stage)
set -euo pipefail
fuzz=0 asan=0
for arg in "$@"; do
    case $arg in
    --fuzz) fuzz=1 ;;
    --asan) asan=1 ;;
    *) echo "build: unknown option $arg" >&2; exit 2 ;;
    esac
done
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
# DPDK's example applications (l3fwd) from dpdk-doc, unmodified, for the integration tests.
quiet "$top/buildtools/build-dpdk-examples.sh" build/dpdk-examples

if [ $fuzz = 1 ]; then
    if [ ! -f build-fuzz/build.ninja ]; then
        CXX=clang++ quiet meson setup build-fuzz -Dfuzz=true -Db_lundef=false -Ddpdk_sdk="$top/build/dpdk-sdk"
    else
        quiet meson configure build-fuzz -Ddpdk_sdk="$top/build/dpdk-sdk"
    fi
    quiet ninja -C build-fuzz
fi
if [ $asan = 1 ]; then
    if [ ! -f build-asan/build.ninja ]; then
        # Warnings are enforced by build/; g++ under the sanitizers warns falsely (maybe-uninitialized in
        # Catch2). -O0: Catch2 under ASan at -O2 takes minutes a file to compile.
        quiet meson setup build-asan -Ddpdk_sdk="$top/build/dpdk-sdk" -Db_sanitize=address,undefined -Db_lundef=false \
            -Dwerror=false -Dbuildtype=debug
    else
        quiet meson configure build-asan -Ddpdk_sdk="$top/build/dpdk-sdk"
    fi
    quiet ninja -C build-asan
fi
echo "build: ok (build/$([ $fuzz = 1 ] && echo ", build-fuzz/")$([ $asan = 1 ] && echo ", build-asan/"))" >&2
