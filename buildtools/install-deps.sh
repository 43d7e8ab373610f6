#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install the Debian 12 packages this project builds, tests and runs with.
# Idempotent and quick when everything is there: apt is only called for
# packages that are missing. Needs root.
set -euo pipefail

packages=(
    # build
    g++ meson ninja-build pkg-config catch2 python3 xz-utils
    # fuzzing (libFuzzer comes with clang's runtime)
    clang libclang-rt-14-dev
    # DPDK 22.11 and its tools (dpdk-testpmd and dpdk-telemetry.py are in dpdk-dev);
    # dpdk-doc (its example sources) is below, pinned to libdpdk-dev's version
    dpdk dpdk-dev libdpdk-dev python3-pyelftools
    # the InfiniBand management plane: simulator, subnet manager, diags, MAD libraries
    ibsim-utils libumad2sim0 opensm infiniband-diags libibumad-dev libibmad-dev
    # the verbs provider's glue: libibverbs, and librdmacm for connected mode's CM
    libibverbs-dev librdmacm-dev
    # the xdp provider: its glue's libxdp and libbpf (clang, above, compiles its
    # XDP program), zlib's CRC-32 (the RoCE ICRC)
    libxdp-dev libbpf-dev zlib1g-dev
    # test peers and tools
    tshark iproute2 procps iperf3 iputils-ping
    # benchmarks: callgrind counts instructions in the burst functions (test/bench/insn-bench.sh)
    valgrind
    # the Debian packages (buildtools/build-deb.sh: dpkg-buildpackage, dh, lintian;
    # man pages from --help); make builds the installed example in the install test
    dpkg-dev debhelper lintian help2man make man-db
    # the QEMU guest with a real kernel RDMA stack (test/guest)
    qemu-system-x86 busybox-static kmod cpio rdma-core ibverbs-providers ibverbs-utils
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# dpdk-doc carries the example applications' sources (l3fwd, for
# buildtools/build-dpdk-examples.sh): the version of the installed DPDK.
# If apt does not offer that version, the candidate is taken (and said).
installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }
dpdk_ver=$(installed libdpdk-dev)
if [ -z "$dpdk_ver" ]; then
    missing+=(dpdk-doc)  # comes with libdpdk-dev's candidate, installed together
elif [ "$(installed dpdk-doc)" != "$dpdk_ver" ]; then
    if apt-cache show "dpdk-doc=$dpdk_ver" >/dev/null 2>&1; then
        missing+=("dpdk-doc=$dpdk_ver")
    elif [ -z "$(installed dpdk-doc)" ]; then
        echo "install-deps: dpdk-doc $dpdk_ver (libdpdk-dev's version) is not offered; taking apt's candidate" >&2
        missing+=(dpdk-doc)
    fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
