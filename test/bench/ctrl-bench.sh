#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Control-plane rates against OpenSM on ibsim: path resolutions/s, joins/s,
# leaves/s (16 requests outstanding). Prints numbers; asserts nothing.
#
# usage: test/bench/ctrl-bench.sh [PATHS [JOINS]]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec "$top/test/integration/ctrl/run-in-fabric.sh" "$top/app/ipoib-fabric/ipoib-fabric" --hcas 2 -- \
    "$top/build/test/bench/ctrl-bench" "${1:-5000}" "${2:-1000}"
