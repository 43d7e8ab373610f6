#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Neighbour-table scale: net_ipoib's transmit path (the driver's tx_burst,
# in-process, with an HCA stand-in that completes every send at once) to
# destinations drawn at random from N = 10, 100, 1000, 10000, 100000 resolved
# neighbours (table neigh_max=100000 in every run). Prints ns/packet (min,
# median, max over the runs) and the ratio to N = 10; writes the text to
# build/bench/neigh-bench.txt and the CSV to build/bench/neigh-bench.csv
# (one row per N; columns: neighbours, ns_per_packet (the median),
# ns_per_packet_min, ns_per_packet_max, ratio_to_n10 (median over N = 10's
# median), ratio_min_to_n10, runs, packets_per_run, pages (4k or 2m)),
# which test/bench/plot.py draws. Asserts nothing.
#
# Memory: 2 MB hugepages if the machine has 64 MB of them free (as DPDK
# deployments run), else 4 KB pages (--no-huge), where the 16.8 MB table
# also costs TLB misses at N >= 10,000. The header line says which.
#
# usage: test/bench/neigh-bench.sh [RUNS (15)] [PACKETS per run (1000000)]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-15}
packets=${2:-1000000}
"$top/buildtools/build.sh" >/dev/null
mkdir -p "$top/build/bench"
out=$top/build/bench/neigh-bench
huge=""
free_kb=$(awk '/^HugePages_Free/ {f=$2} /^Hugepagesize/ {s=$2} END {print f*s}' /proc/meminfo)
if [ "$free_kb" -ge 65536 ]; then
    huge=$top/build/bench/hugepages  # with --in-memory EAL takes them without a mount; the directory names the option
    mkdir -p "$huge"
fi
{
    echo "neigh-bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$top/build/test/bench/neigh-bench" "$runs" "$packets" "$out.csv" 100000 $huge
} | tee "$out.txt"
echo "(written: $out.txt, $out.csv)"
