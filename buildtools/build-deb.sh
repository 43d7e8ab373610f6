#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build the Debian packages from this tree and check them with lintian:
#   ipoib-dpdk      the PMD (into DPDK's plugin directory), its glue objects,
#                   ipoib-fabric, ipoib-addr, man pages, doc/
#   ipoib-dpdk-dev  rte_pmd_ipoib.h, libdpdk-ipoib.pc, the ipoib_native example
# The tree's files (tracked, and new ones git does not ignore) are copied to
# OUTDIR/src and built there with dpkg-buildpackage, so the checkout and its
# parent directory stay clean; the .deb files land in OUTDIR. Fails if lintian
# reports an error. Installs what it needs (buildtools/install-deps.sh).
#
# usage: buildtools/build-deb.sh [OUTDIR]     (default build/deb)
#   then: apt-get install ./build/deb/ipoib-dpdk_*.deb
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$top/build/deb}")
"$top/buildtools/install-deps.sh"

rm -rf "$out"
mkdir -p "$out/src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$top" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$out/src")
else
    tar -C "$top" --exclude='./build' --exclude='./build-*' --exclude='./.cache' -cf - . | tar -C "$out/src" -xf -
fi
# The driver-SDK headers: the checkout's copy when it has one, else fetched
# into the package build's own cache (debian/rules).
if [ -z "${IPOIB_DPDK_SDK:-}" ] && [ -s "$top/build/dpdk-sdk/VERSION" ]; then
    export IPOIB_DPDK_SDK=$top/build/dpdk-sdk
fi
if [ -z "${IPOIB_CACHE_DIR:-}" ] && [ -d "$top/.cache" ]; then
    export IPOIB_CACHE_DIR=$top/.cache
fi

log=$out/build.log
if ! (cd "$out/src" && dpkg-buildpackage -b -us -uc) > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-deb: dpkg-buildpackage failed (whole log: $log)" >&2
    exit 1
fi
debs=("$out"/*.deb)
if ! lintian --allow-root --fail-on error \
        "$out"/*.changes > "$out/lintian.txt" 2>&1; then
    cat "$out/lintian.txt" >&2
    echo "build-deb: lintian reports errors" >&2
    exit 1
fi
[ -s "$out/lintian.txt" ] && sed 's/^/build-deb: lintian: /' "$out/lintian.txt" >&2
printf '%s\n' "${debs[@]}"
