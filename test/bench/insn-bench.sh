#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Instructions per packet in rx_burst and tx_burst, net_ipoib (Ethernet
# emulation, unicast, resolved neighbour, two ports of one simulated HCA)
# against net_memif (server/client pair), counted by callgrind on a fixed
# number of packets in one process; 64 and 1500-byte frames; RX, TX, their
# sum and the ratio; the top functions of net_ipoib's count. Prints numbers
# and writes a CSV (build/bench/insn-bench.csv); asserts nothing.
#
# usage: test/bench/insn-bench.sh [--packets N] [--sizes 64,1500] [--csv FILE] [--no-native] [--keep]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
"$top/buildtools/build.sh" >/dev/null
exec python3 "$top/test/bench/insn_bench.py" "$top/app/ipoib-fabric/ipoib-fabric" \
    "$top/build/test/bench/insn-bench" "$top/build/drivers/net/ipoib/librte_net_ipoib.so" "$@"
