#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Run a test program as a client of a fresh simulated fabric on Hca1:
#   run-in-fabric.sh FABRIC_TOOL [fabric options...] -- PROGRAM [args...]
# The program finds the tool in $IPOIB_FABRIC_TOOL and the fabric in the
# variables `ipoib-fabric up` exports.
set -euo pipefail
tool=$1; shift
fabric_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do fabric_args+=("$1"); shift; done
shift
export IPOIB_FABRIC_TOOL=$tool
exec "$tool" run "${fabric_args[@]}" -- bash -c '
    cd "$(mktemp -d)"
    trap "rm -rf \"$PWD\"" EXIT
    LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca1 "$@"
' run-in-fabric "$@"
