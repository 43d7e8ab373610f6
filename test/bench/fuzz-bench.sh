#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The long fuzz run: every libFuzzer target for N executions (default 10^7)
# or, with --seconds S, for S seconds each; prints executions, coverage
# (edges), corpus size and crashes per target, and a CSV in build-fuzz/.
# Prints numbers; asserts nothing (the test command runs the short smoke).
# Targets run at very different speeds (fuzz_sa_answer a few thousand
# inputs a second, the wire formats hundreds of thousands): 10^7 executions
# take over an hour for the slowest, so --seconds gives every target the
# same stated budget.
#
# usage: test/bench/fuzz-bench.sh [RUNS] | --seconds S
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
limit=(-runs="${1:-10000000}")
[ "${1:-}" = "--seconds" ] && limit=(-max_total_time="${2:?seconds}")
buildtools/build.sh --fuzz >/dev/null
work=build-fuzz/fuzz-bench
rm -rf "$work" && mkdir -p "$work"
python3 test/fuzz/make_seeds.py "$work/corpus"
csv=build-fuzz/fuzz-bench.csv
echo "target,executions,edges,corpus,crashes,seconds" > "$csv"
echo "fuzz-bench: $(date -u +%F), ${limit[*]#-} per target"
printf "%-22s %12s %8s %8s %8s %8s\n" target executions edges corpus crashes seconds
for target in $(find build-fuzz/test/fuzz -maxdepth 1 -name "fuzz_*" -type f -executable | sort); do
    name=$(basename "$target")
    mkdir -p "$work/$name.artifacts" "$work/corpus/${name#fuzz_}"
    start=$(date +%s)
    "$target" "${limit[@]}" -print_final_stats=1 -artifact_prefix="$work/$name.artifacts/" \
        "$work/corpus/${name#fuzz_}" > "$work/$name.log" 2>&1 || true
    secs=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name.log")
    edges=$(grep -oE 'cov: [0-9]+' "$work/$name.log" | tail -1 | cut -d' ' -f2)
    corpus=$(ls "$work/corpus/${name#fuzz_}" | wc -l)
    crashes=$(ls "$work/$name.artifacts" | wc -l)
    printf "%-22s %12s %8s %8s %8s %8s\n" "$name" "${runs:-?}" "${edges:-?}" "$corpus" "$crashes" "$secs"
    echo "$name,${runs:-},${edges:-},$corpus,$crashes,$secs" >> "$csv"
done
echo "CSV: $csv"
