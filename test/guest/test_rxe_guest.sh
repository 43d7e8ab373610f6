#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The guest harness itself: a real kernel RDMA stack (Soft-RoCE) comes up in
# the QEMU guest, the caller's script runs there with its arguments, and its
# output and exit status come back. TAP output.
set -u
here=$(cd "$(dirname "$0")" && pwd)
n=0; failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else failed=$((failed + 1)); echo "not ok $n - $2"; fi; }

probe=$(mktemp)
cat > "$probe" <<'PROBE'
echo "args: $*"
rdma link show
ibv_devinfo -d rxe0
uname -r
exit 7
PROBE
t0=$(date +%s%N)
out=$("$here/rxe-guest.sh" "$probe" one "two words" 2>&1)
rc=$?
t1=$(date +%s%N)
rm -f "$probe"
echo "# guest run took $(( (t1 - t0) / 1000000 )) ms"
ok $([ $rc = 7 ] && echo 0 || echo 1) "the script's exit status comes back ($rc)"
ok $(grep -q 'args: one two words' <<<"$out" && echo 0 || echo 1) "arguments reach the script intact"
ok $(grep -q 'rxe0/1 state ACTIVE.*netdev dummy0' <<<"$out" && echo 0 || echo 1) "rxe0 is ACTIVE on dummy0"
ok $(grep -q 'PORT_ACTIVE' <<<"$out" && grep -q 'link_layer:.*Ethernet' <<<"$out" && echo 0 || echo 1) \
    "libibverbs in the guest sees rxe0 (ibv_devinfo: PORT_ACTIVE, Ethernet link layer)"
ok $(grep -q '^6\.1\.' <<<"$out" && echo 0 || echo 1) "it is Debian's 6.1 kernel, not the host's"
[ $failed = 0 ] || sed 's/^/#   /' <<<"$out"
echo "1..$n"
[ $failed = 0 ]
