#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Neighbour-table scale: net_ipoib's transmit path (the driver's tx_burst,
# in-process, with an HCA stand-in that completes every send at once) to
# destinations drawn at random from N = 10, 100, 1000, 10000, 100000 resolved
# neighbours. Prints ns/packet (min, median, max over the runs) and the ratio
# to N = 10; writes the text to build/bench/neigh-bench.txt and the CSV to
# build/bench/neigh-bench.csv (columns: neighbours, runs, packets_per_run,
# ns_per_packet_min, ns_per_packet_median, ns_per_packet_max,
# ratio_min_to_n10, ratio_median_to_n10). Asserts nothing.
#
# usage: test/bench/neigh-bench.sh [RUNS (9)] [PACKETS per run (2000000)]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-9}
packets=${2:-2000000}
"$top/buildtools/build.sh" >/dev/null
mkdir -p "$top/build/bench"
out=$top/build/bench/neigh-bench
{
    echo "neigh-bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$top/build/test/bench/neigh-bench" "$runs" "$packets" "$out.csv"
} | tee "$out.txt"
echo "(written: $out.txt, $out.csv)"
