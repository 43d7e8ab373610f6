#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The sanitizer stage: the suites that run the project's code in this
# process or load the driver into Debian's testpmd, against build-asan/
# (ASan + UBSan). Every sanitizer report, from any process, is a failure.
#
# usage: test/sanitize/run.sh BUILD_DIR RESULTS_FILE   (suites: unit, pmd)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd) results=$2
reports=$build/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
: > "$results"

asan_rt=$(gcc -print-file-name=libasan.so)
export IPOIB_SANITIZER_PRELOAD=$asan_rt
# Leaks are not checked: DPDK keeps its memory until exit by design.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$reports/asan:suppressions=$top/test/sanitize/asan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan"

meson test -C "$build" --suite unit --suite pmd --print-errorlogs --num-processes 2
rc=$?

found=$(find "$reports" -type f | sort)
if [ -z "$found" ]; then
    echo "ok sanitizers: no ASan or UBSan report from any process" | tee -a "$results"
else
    for f in $found; do
        echo "not ok sanitizers: $(basename "$f")" | tee -a "$results"
        head -30 "$f" >&2
    done
    rc=1
fi
exit $rc
