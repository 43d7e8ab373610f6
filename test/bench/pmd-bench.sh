#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# net_ipoib (soft HCA; as root also the xdp provider) vs net_memif: Mpps per frame size (default 64 B and 1500 B) between two testpmd
# processes, and their ratio. Prints numbers and writes a CSV (build/bench/pmd-bench.csv:
# frame_bytes,driver,mpps,run); asserts nothing.
#
# usage: test/bench/pmd-bench.sh [SECONDS per measurement, default 3] [--sizes 64,128,...] [--repeat N] [--csv FILE]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec python3 "$top/test/bench/pmd_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
    "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "$@"
