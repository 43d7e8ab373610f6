#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The verbs provider on a real kernel RDMA stack: one QEMU guest boot
# (test/guest/rxe-guest.sh, Soft-RoCE rxe0) runs
#   1. the HCA provider suite (test/integration/test_hca_provider.py, the
#      same checks the soft HCA passes) with provider "verbs" on rxe0, and
#   2. two dpdk-testpmd with net_ipoib on the verbs provider exchanging
#      traffic (test/guest/guest_pmd_verbs.py), and
#   3. connected mode on rxe0: Linux stacks behind tap_bridge, 59,000-byte
#      pings and a TCP stream over RC connections set up by librdmacm
#      (test/guest/guest_pmd_connected.py).
# Their TAP output comes back and is renumbered into one stream here.
#
# usage: test_verbs_guest.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: test_verbs_guest.sh BUILD_DIR}" && pwd)

job=$(mktemp)
trap 'rm -f "$job"' EXIT
cat > "$job" <<'JOB'
top=$1; build=$2
echo "=== provider"
python3 "$top/test/integration/test_hca_provider.py" verbs rxe0 "$build/test/integration/hca-peer" 2>&1
echo "=== status $?"
echo "=== pmd"
python3 "$top/test/guest/guest_pmd_verbs.py" "$build/drivers/net/ipoib/librte_net_ipoib.so" "$PWD" 2>&1
echo "=== status $?"
echo "=== connected"
python3 "$top/test/guest/guest_pmd_connected.py" "$build/test/integration/tap_bridge" \
    "$build/drivers/net/ipoib/librte_net_ipoib.so" "$PWD" 2>&1
echo "=== status $?"
for f in testpmd-*.log; do [ -f "$f" ] && { echo "=== log $f"; tail -40 "$f"; }; done
JOB
t0=$(date +%s)
out=$(IPOIB_GUEST_TIMEOUT=${IPOIB_GUEST_TIMEOUT:-1000} "$here/rxe-guest.sh" "$job" "$top" "$build" 2>&1)
rc=$?
echo "# guest stage (boot + the three suites) took $(( $(date +%s) - t0 )) s"

n=0; failed=0
emit() {  # emit STATUS(0 ok) NAME
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else failed=$((failed + 1)); echo "not ok $n - $2"; fi
}
section=""; plans=""; statuses=""; showlog=0
while IFS= read -r line; do
    case "$line" in
    "=== provider") section="verbs provider on rxe0"; showlog=0 ;;
    "=== pmd") section="testpmd on rxe0"; showlog=0 ;;
    "=== connected") section="connected mode on rxe0"; showlog=0 ;;
    "=== status "*) statuses="$statuses ${line#=== status }" ;;
    "=== log "*) showlog=1; echo "# ${line#=== }" ;;
    "ok "*) emit 0 "$section: $(sed -E 's/^ok [0-9]+ - //' <<<"$line")" ;;
    "not ok "*) emit 1 "$section: $(sed -E 's/^not ok [0-9]+ - //' <<<"$line")" ;;
    1..*) plans="$plans ${line#1..}" ;;
    *) [ $showlog = 1 ] && [ $failed = 0 ] || echo "# $line" ;;
    esac
done <<<"$out"
[ $rc -ne 125 ]; emit $? "the guest booted and ran the three suites (harness status $rc)"
[ "$(wc -w <<<"$plans")" = 3 ]; emit $? "the three suites ran to their end (plans:$plans, statuses:$statuses)"
echo "1..$n"
[ $failed = 0 ]
