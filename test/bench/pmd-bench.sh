#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# net_ipoib vs net_memif: Mpps for 64 B and 1500 B frames between two testpmd
# processes, and their ratio. Prints numbers; asserts nothing.
#
# usage: test/bench/pmd-bench.sh [SECONDS per measurement, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec python3 "$top/test/bench/pmd_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
    "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "${1:-3}"
