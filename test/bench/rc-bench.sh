#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Software-HCA reliable-connection throughput between two processes on two
# simulated HCAs: 65520-byte messages (connected mode's frames) into 32 x
# 2 KB receives, and 2044-byte messages into one 2 KB + one buffer; against
# single-core memcpy bandwidth measured here in the same run (one cached
# source buffer into a ring the size of the receiver's, as a delivery copies). Prints numbers
# and writes a CSV (build/bench/rc-bench.csv: what,bytes,mmsg_per_s,gbit_per_s);
# asserts nothing.
#
# usage: test/bench/rc-bench.sh [SECONDS per run, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
"$top/buildtools/build.sh" >/dev/null
bench=$top/build/test/bench/rc-bench
mkdir -p "$top/build/bench"
export RC_BENCH_CSV=$top/build/bench/rc-bench.csv
echo "what,bytes,mmsg_per_s,gbit_per_s" > "$RC_BENCH_CSV"

"$top/app/ipoib-fabric/ipoib-fabric" run --hcas 2 -- bash -c '
    set -e
    cd "$(mktemp -d)"
    trap "rm -rf \"$PWD\"" EXIT
    export LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM
    echo "software HCA RC, one sender process (Hca2) -> one receiver process (Hca1), '"$secs"' s each"
    for run in "65520 32" "2044 2"; do
        set -- $run
        rm -f info info.s info.r
        SIM_HOST=Hca1 "'"$bench"'" recv soft info $1 $2 > recv.out &
        rpid=$!
        SIM_HOST=Hca2 "'"$bench"'" send soft info $1 '"$secs"' > send.out
        wait $rpid
        printf "RC %5d B: %s\n" $1 "$(cat recv.out)"
        sed -nE "s|^received .*: ([0-9.]+) Mmsg/s, ([0-9.]+) Gbit/s$|rc,$1,\1,\2|p" recv.out >> "$RC_BENCH_CSV"
    done
'
# One core copying as a delivery does: into a ring of 256 receives of 32 (or 2) x 2 KB.
for run in "65520 32" "2044 2"; do
    set -- $run
    size=$1
    out=$("$bench" memcpy $size "$secs" $((256 * $2 * 2048)))
    echo "$out"
    echo "$out" | sed -nE "s|^memcpy ([0-9]+) B: ([0-9.]+) Gbit/s.*|memcpy,\1,,\2|p" >> "$RC_BENCH_CSV"
done
echo "CSV: $RC_BENCH_CSV"
