#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build DPDK's own example applications, unmodified, from Debian's dpdk-doc
# package (/usr/share/dpdk/examples), with their own Makefiles against
# pkg-config libdpdk (the Makefile's default: shared). They are the
# "standard applications" the driver must run under (test/integration/pmd).
# Each is built once into OUTDIR/<app>/build/<app> and kept; it is rebuilt
# only if missing or if dpdk-doc's version changed. Prints the binaries' paths.
#
# usage: build-dpdk-examples.sh OUTDIR [APP...]   (default APP: l3fwd)
set -euo pipefail
out=$(realpath -m "${1:?usage: build-dpdk-examples.sh OUTDIR [APP...]}")
shift
apps=("$@")
[ ${#apps[@]} -gt 0 ] || apps=(l3fwd)

src=/usr/share/dpdk/examples
ver=$(dpkg-query -W -f='${Version}' dpdk-doc 2>/dev/null || true)
if [ -z "$ver" ] || [ ! -d "$src/common" ]; then
    echo "build-dpdk-examples: dpdk-doc is not installed (buildtools/install-deps.sh installs it)" >&2
    exit 1
fi
dpdk_ver=$(dpkg-query -W -f='${Version}' libdpdk-dev 2>/dev/null || true)
[ "$ver" = "$dpdk_ver" ] ||
    echo "build-dpdk-examples: note: dpdk-doc $ver, libdpdk-dev ${dpdk_ver:-missing}" >&2

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9  # a build and a test may ask at once

for app in "${apps[@]}"; do
    bin=$out/$app/build/$app
    if [ -x "$bin" ] && [ "$(cat "$out/$app/.dpdk-doc-version" 2>/dev/null)" = "$ver" ]; then
        echo "$bin"
        continue
    fi
    [ -d "$src/$app" ] || { echo "build-dpdk-examples: no $src/$app in dpdk-doc $ver" >&2; exit 1; }
    # The Makefiles include ../common: keep the examples' layout. Build in a
    # fresh copy and move it into place only when it worked.
    tmp=$(mktemp -d "$out/.build-$app.XXXXXX")
    cp -r "$src/$app" "$tmp/$app"
    [ -e "$out/common" ] || cp -r "$src/common" "$out/common"
    [ -e "$tmp/common" ] || cp -r "$src/common" "$tmp/common"
    if ! log=$(make -C "$tmp/$app" 2>&1); then
        printf '%s\n' "$log" >&2
        echo "build-dpdk-examples: make $app failed (dpdk-doc $ver)" >&2
        rm -rf "$tmp"
        exit 1
    fi
    echo "$ver" > "$tmp/$app/.dpdk-doc-version"
    rm -rf "$out/$app"
    mv "$tmp/$app" "$out/$app"
    rm -rf "$tmp"
    echo "$bin"
done
