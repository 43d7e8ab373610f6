#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Connected mode's throughput in one run: 64 KB frames between two testpmds against datagram
# mode's 2 KB frames and one core's memcpy, iperf3 TCP connected vs datagram, and iperf3 with
# the kernel's checksum offload, "IB CRC as checksum" agreed vs off. Prints numbers, writes
# build/bench/cm-bench.csv; asserts nothing.
#
# usage: test/bench/cm-bench.sh [SECONDS per measurement, default 4]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec python3 "$top/test/bench/cm_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
    "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "$top/build/app/ipoib-addr/ipoib-addr" \
    "$top/build/test/integration/tap_bridge" "$@"
