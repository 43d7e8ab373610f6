#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# DPDK's l3fwd forwarding over net_ipoib and over net_memif, same cores and
# frame sizes: Mpps and their ratio, printed and written as CSV
# (build/bench/l3fwd-bench.csv). Asserts nothing.
#
# usage: test/bench/l3fwd-bench.sh [SECONDS per measurement, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec python3 "$top/test/bench/l3fwd_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
    "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "$top/buildtools/build-dpdk-examples.sh" \
    "$top/build/dpdk-examples" "${1:-3}" "$top/build/bench/l3fwd-bench.csv"
