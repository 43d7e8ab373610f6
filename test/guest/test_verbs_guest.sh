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
#      (test/guest/guest_pmd_connected.py), and
#   4. the xdp provider against rdma_rxe: a veth pair, an rxe device (rxe1)
#      on one end, the other end in a network namespace; the provider suite
#      with A on rxe1 (verbs) and B on the xdp provider, frames with our own
#      and with wrong ICRCs written to rxe, two processes per device under
#      libxdp's dispatcher, and two testpmds, verbs on rxe1 and xdp
#      (test/guest/guest_pmd_xdp_rxe.py).
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
echo "=== xdp"
modprobe veth
ip netns add xg
# IPv6 on (the ping stage turned it off for new devices): the GIDs are link-local IPv6 addresses.
sysctl -q -w net.ipv6.conf.default.disable_ipv6=0
ip link add vrxe type veth peer name vxdp netns xg
sysctl -q -w net.ipv6.conf.vrxe.disable_ipv6=0
# No DAD: the link-local addresses (the GIDs) answer at once.
sysctl -q -w net.ipv6.conf.vrxe.accept_dad=0
ip netns exec xg sysctl -q -w net.ipv6.conf.vxdp.accept_dad=0
ip addr add 10.3.0.1/24 dev vrxe
ip -n xg addr add 10.3.0.2/24 dev vxdp
ip link set vrxe up
ip -n xg link set vxdp up
ip -n xg link set lo up
rdma link add rxe1 type rxe netdev vrxe
python3 "$top/test/integration/test_hca_provider.py" xdp-rxe rxe1,vrxe,vxdp,xg "$build/test/integration/hca-peer" 2>&1
echo "=== status $?"
echo "=== xdp-pmd"
python3 "$top/test/guest/guest_pmd_xdp_rxe.py" "$build/drivers/net/ipoib/librte_net_ipoib.so" "$PWD" \
    rxe1 vxdp xg 2>&1
echo "=== status $?"
for f in testpmd-*.log; do [ -f "$f" ] && { echo "=== log $f"; tail -40 "$f"; }; done
JOB
t0=$(date +%s)
out=$(IPOIB_GUEST_TIMEOUT=${IPOIB_GUEST_TIMEOUT:-1000} "$here/rxe-guest.sh" "$job" "$top" "$build" 2>&1)
rc=$?
echo "# guest stage (boot + the five suites) took $(( $(date +%s) - t0 )) s"

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
    "=== xdp") section="xdp provider against rxe1 (verbs)"; showlog=0 ;;
    "=== xdp-pmd") section="testpmd: verbs on rxe1 <-> xdp"; showlog=0 ;;
    "=== status "*) statuses="$statuses ${line#=== status }" ;;
    "=== log "*) showlog=1; echo "# ${line#=== }" ;;
    "ok "*) emit 0 "$section: $(sed -E 's/^ok [0-9]+ - //' <<<"$line")" ;;
    "not ok "*) emit 1 "$section: $(sed -E 's/^not ok [0-9]+ - //' <<<"$line")" ;;
    1..*) plans="$plans ${line#1..}" ;;
    *) [ $showlog = 1 ] && [ $failed = 0 ] || echo "# $line" ;;
    esac
done <<<"$out"
[ $rc -ne 125 ]; emit $? "the guest booted and ran the five suites (harness status $rc)"
[ "$(wc -w <<<"$plans")" = 5 ]; emit $? "the five suites ran to their end (plans:$plans, statuses:$statuses)"
echo "1..$n"
[ $failed = 0 ]
