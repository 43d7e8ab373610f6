#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Set up, build and run every test: unit, integration (real OpenSM + ibsim),
# the sanitizer stage (unit and driver suites again, against an ASan + UBSan
# build) and a short libFuzzer smoke run of every fuzz target. Ends with one line,
# `N passed, N failed`, over all of them; exits non-zero if anything failed.
#
# usage: devtools/test.sh        (as root on Debian 12; installs what it needs)
#   FUZZ_SECONDS=N   seconds per fuzz target (default 10)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if ! "$top/buildtools/build.sh" --fuzz --asan; then
    echo "0 passed, 1 failed"
    exit 1
fi

meson test -C build --print-errorlogs --num-processes 2
rc_meson=$?

# Sanitizer stage: the unit tests and the driver's testpmd suites against build-asan/.
sanitizer_results=build-asan/sanitizer-results.txt
bash test/sanitize/run.sh build-asan "$sanitizer_results"
rc_asan=$?

# Fuzz smoke: each target from the unit-test vectors, for FUZZ_SECONDS.
fuzz_results=build-fuzz/fuzz-results.txt
: > "$fuzz_results"
corpus=build-fuzz/corpus
rm -rf "$corpus"
python3 test/fuzz/make_seeds.py "$corpus"
for target in $(find build-fuzz/test/fuzz -maxdepth 1 -name "fuzz_*" -type f -executable | sort); do
    name=$(basename "$target")
    log=build-fuzz/$name.log
    mkdir -p "build-fuzz/artifacts/$name"
    if "$target" -max_total_time="${FUZZ_SECONDS:-10}" -print_final_stats=1 \
        -artifact_prefix="build-fuzz/artifacts/$name/" "$corpus/${name#fuzz_}" > "$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "ok $name ($runs inputs)" | tee -a "$fuzz_results"
    else
        echo "not ok $name" | tee -a "$fuzz_results"
        grep -E 'ERROR|check failed|SUMMARY|artifact' "$log" | head -20 >&2
    fi
done

[ -s "$fuzz_results" ] || echo "not ok fuzz targets: none built" | tee -a "$fuzz_results"

python3 devtools/summarize-tests.py build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
    "$sanitizer_results" "$fuzz_results"
rc_sum=$?
[ $rc_meson -eq 0 ] && [ $rc_asan -eq 0 ] && [ $rc_sum -eq 0 ]
