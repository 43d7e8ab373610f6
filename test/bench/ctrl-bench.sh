#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Control-plane rates against OpenSM on ibsim: path resolutions/s, joins/s,
# leaves/s (16 requests outstanding). Prints numbers and writes a CSV
# (build/bench/ctrl-bench.csv: operation,count,seconds,per_second,failed);
# asserts nothing.
#
# usage: test/bench/ctrl-bench.sh [PATHS [JOINS]]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
mkdir -p "$top/build/bench"
csv=$top/build/bench/ctrl-bench.csv
out=$("$top/test/integration/ctrl/run-in-fabric.sh" "$top/app/ipoib-fabric/ipoib-fabric" --hcas 2 -- \
    "$top/build/test/bench/ctrl-bench" "${1:-5000}" "${2:-1000}")
printf '%s\n' "$out"
# "path resolutions: N in T s: R/s (F failed)", "multicast joins (new groups): N in T s: R/s (F failed)"
{
    echo "operation,count,seconds,per_second,failed"
    printf '%s\n' "$out" | sed -nE \
        -e 's|^path resolutions: ([0-9]+) in ([0-9.]+) s: ([0-9.]+)/s \(([0-9]+) failed\)$|path_resolution,\1,\2,\3,\4|p' \
        -e 's|^multicast (joins\|leaves) \(new groups\): ([0-9]+) in ([0-9.]+) s: ([0-9.]+)/s \(([0-9]+) failed\)$|multicast_\1,\2,\3,\4,\5|p'
} > "$csv"
echo "CSV: $csv"
