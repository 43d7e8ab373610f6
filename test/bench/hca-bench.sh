#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Software-HCA message rate between two processes on two simulated HCAs,
# for 64, 512 and 2048-byte payloads. Prints numbers and writes a CSV
# (build/bench/hca-bench.csv: payload_bytes,mmsg_per_s,gbit_per_s,received,dropped);
# asserts nothing.
#
# usage: test/bench/hca-bench.sh [SECONDS per size, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
"$top/buildtools/build.sh" >/dev/null
bench=$top/build/test/bench/hca-bench
mkdir -p "$top/build/bench"
export HCA_BENCH_CSV=$top/build/bench/hca-bench.csv

"$top/app/ipoib-fabric/ipoib-fabric" run --hcas 2 -- bash -c '
    set -e
    cd "$(mktemp -d)"
    trap "rm -rf \"$PWD\"" EXIT
    export LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM
    echo "software HCA, one sender process (Hca2) -> one receiver process (Hca1), bursts of 32, '"$secs"' s each"
    echo "payload_bytes,mmsg_per_s,gbit_per_s,received,dropped" > "$HCA_BENCH_CSV"
    for size in 64 512 2048; do
        rm -f info
        SIM_HOST=Hca1 "'"$bench"'" recv soft info > recv.out &
        rpid=$!
        SIM_HOST=Hca2 "'"$bench"'" send soft info $size '"$secs"' > send.out
        wait $rpid
        printf "%5d B: %s\n" $size "$(cat recv.out)"
        # "received N messages (D dropped: no buffer) in T s: R Mmsg/s, G Gbit/s"
        sed -nE "s|^received ([0-9]+) messages \(([0-9]+) dropped.*: ([0-9.]+) Mmsg/s, ([0-9.]+) Gbit/s$|$size,\3,\4,\1,\2|p" \
            recv.out >> "$HCA_BENCH_CSV"
    done
'
echo "CSV: $HCA_BENCH_CSV"
