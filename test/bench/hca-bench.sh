#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Software-HCA message rate between two processes on two simulated HCAs,
# for 64, 512 and 2048-byte payloads. Prints numbers; asserts nothing.
#
# usage: test/bench/hca-bench.sh [SECONDS per size, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
"$top/buildtools/build.sh" >/dev/null
bench=$top/build/test/bench/hca-bench

"$top/app/ipoib-fabric/ipoib-fabric" run --hcas 2 -- bash -c '
    set -e
    cd "$(mktemp -d)"
    export LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM
    echo "software HCA, one sender process (Hca2) -> one receiver process (Hca1), bursts of 32, '"$secs"' s each"
    for size in 64 512 2048; do
        rm -f info
        SIM_HOST=Hca1 "'"$bench"'" recv soft info > recv.out &
        rpid=$!
        SIM_HOST=Hca2 "'"$bench"'" send soft info $size '"$secs"' > send.out
        wait $rpid
        printf "%5d B: %s\n" $size "$(cat recv.out)"
    done
'
