#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# net_ipoib link-up time on the simulated fabric (OpenSM + ibsim, software
# HCA), one testpmd: dev_start -> link up and port ReLink -> link up, each
# run RUNS times; min/median/max printed, the text in
# build/bench/linkup-bench.txt, one CSV row per run in
# build/bench/linkup-bench.csv (columns: run, start_to_link_up_ms,
# relink_to_link_up_ms). Asserts nothing.
#
# usage: test/bench/linkup-bench.sh [RUNS (10)]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
mkdir -p "$top/build/bench"
out=$top/build/bench/linkup-bench
{
    echo "linkup-bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 "$top/test/bench/linkup_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
        "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "${1:-10}" "$out.csv"
} | tee "$out.txt"
echo "(written: $out.txt, $out.csv)"
