#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Count results over all suites and print the closing `N passed, N failed`.

Inputs: meson testlog.json files (TAP tests count their `ok`/`not ok` lines,
other tests count once by result; the main build and the sanitizer build)
and result files with one `ok NAME` / `not ok NAME` line each (the
sanitizer reports, the fuzz smoke runs).
Exit status 1 if anything failed or nothing ran."""
import json
import os
import re
import sys


def count_testlog(path):
    passed = failed = 0
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            out = rec.get("stdout") or ""
            oks = len(re.findall(r"^ok\b", out, re.M))
            bad = len(re.findall(r"^not ok\b", out, re.M))
            if oks + bad:  # a TAP test: count its lines
                passed += oks
                failed += bad
                if rec["result"] not in ("OK", "EXPECTEDFAIL") and bad == 0:
                    failed += 1  # crashed or timed out after its last ok
            elif rec["result"] in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif rec["result"] != "SKIP":
                failed += 1
    return passed, failed


def main(inputs):
    passed = failed = 0
    for path in inputs:
        if not os.path.exists(path):  # a stage that never ran
            print(f"not ok {path}: missing", file=sys.stderr)
            failed += 1
            continue
        if path.endswith(".json"):
            np, nf = count_testlog(path)
            passed, failed = passed + np, failed + nf
            continue
        with open(path) as f:
            for line in f:
                if line.startswith("ok "):
                    passed += 1
                elif line.startswith("not ok "):
                    failed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
