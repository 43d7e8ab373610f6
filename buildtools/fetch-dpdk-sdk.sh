#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Put the DPDK driver-SDK headers that Debian does not ship (ethdev_driver.h,
# ethdev_vdev.h, bus_vdev_driver.h, dev_driver.h, bus_driver.h) into
# OUTDIR/include, taken from Debian's dpdk *source* package of exactly the
# installed libdpdk-dev version. The tarball is cached in CACHEDIR; /etc/apt
# is left untouched (a private deb-src list is used). Idempotent.
#
# usage: fetch-dpdk-sdk.sh OUTDIR CACHEDIR
set -euo pipefail
out=$(realpath -m "${1:?usage: fetch-dpdk-sdk.sh OUTDIR CACHEDIR}")
cache=$(realpath -m "${2:?usage: fetch-dpdk-sdk.sh OUTDIR CACHEDIR}")

ver=$(dpkg-query -W -f='${Version}' libdpdk-dev 2>/dev/null) ||
    { echo "fetch-dpdk-sdk: libdpdk-dev is not installed" >&2; exit 1; }
upstream=${ver%%-*}
headers=(lib/ethdev/ethdev_driver.h lib/ethdev/ethdev_vdev.h drivers/bus/vdev/bus_vdev_driver.h
         lib/eal/include/dev_driver.h lib/eal/include/bus_driver.h)

# Also DPDK's list of the features a NIC's .ini may name (doc/features/ipoib.ini is checked against it).
features=doc/guides/nics/features/default.ini
if [ "$(cat "$out/VERSION" 2>/dev/null)" = "$ver" ] && [ -s "$out/features/default.ini" ]; then
    exit 0
fi

mkdir -p "$cache"
tarball=$cache/dpdk_${upstream}.orig.tar.xz
if [ ! -s "$tarball" ]; then
    apt_dir=$cache/apt
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial"
    srcs=(/etc/apt/sources.list.d/*.sources)
    [ -e "${srcs[0]}" ] || { echo "fetch-dpdk-sdk: no deb822 sources in /etc/apt/sources.list.d" >&2; exit 1; }
    sed 's/^Types:.*/Types: deb-src/' "${srcs[@]}" > "$apt_dir/sources.list.d/deb-src.sources"
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
              -o "Dir::State::Lists=$apt_dir/lists" -o APT::Get::List-Cleanup=false
              -o APT::Sandbox::User=root)
    echo "fetch-dpdk-sdk: downloading Debian's dpdk $ver source" >&2
    apt-get -q "${apt_opts[@]}" update >/dev/null
    (cd "$cache" && apt-get -q "${apt_opts[@]}" source --download-only "dpdk=$ver" >/dev/null)
    [ -s "$tarball" ] || { echo "fetch-dpdk-sdk: $tarball not downloaded" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xJf "$tarball" -C "$tmp" --wildcards "${headers[@]/#/*/}" "*/$features"
mkdir -p "$out/include"
for h in "${headers[@]}"; do
    found=$(find "$tmp" -path "*/$h" -print -quit)
    [ -n "$found" ] || { echo "fetch-dpdk-sdk: $h missing from $tarball" >&2; exit 1; }
    cp "$found" "$out/include/"
done
mkdir -p "$out/features"
cp "$(find "$tmp" -path "*/$features" -print -quit)" "$out/features/default.ini"
echo "$ver" > "$out/VERSION"
echo "fetch-dpdk-sdk: driver-SDK headers of DPDK $ver in $out/include" >&2
