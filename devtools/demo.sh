#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The main job, as far as the project goes today: set up and build, bring up
# a simulated InfiniBand fabric (ibsim + OpenSM), show what a client of it
# sees (hosts, LIDs, P_Keys, IPoIB broadcast groups and the IPoIB addresses
# derived from them), flap a port, and tear everything down.
#
# usage: devtools/demo.sh        (as root on Debian 12; installs what it needs)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
fabric=$top/app/ipoib-fabric/ipoib-fabric

"$top/buildtools/build.sh"

echo "== bringing up a fabric: 2 HCAs with 2 ports each, partitions 0x7fff (default) and 0x8001"
eval "$("$fabric" up --hcas 2 --ports 2)"
trap '"$fabric" down "$IPOIB_FABRIC_DIR"' EXIT
"$fabric" env "$IPOIB_FABRIC_DIR"

echo
echo "== the fabric as OpenSM manages it (read back with infiniband-diags)"
"$fabric" show "$IPOIB_FABRIC_DIR"

echo
echo "== IPoIB identities of Hca1 port 1 (lib/wire), from its GUID and the broadcast groups"
guid=$(cd "$IPOIB_FABRIC_DIR" && LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca1 ibstat |
       sed -n 's/.*Port GUID: //p' | head -1)
"$top/build/app/ipoib-addr/ipoib-addr" --guid "$guid" --qpn 0x48 --pkey 0x7fff \
    --group 224.0.0.1 --group ff02::1 --group 224.1.2.3
"$top/build/app/ipoib-addr/ipoib-addr" --guid "$guid" --qpn 0x48 --pkey 0x8001 --group 224.1.2.3

echo
echo "== port Hca2[1] down and up again through ibsim's console"
"$fabric" port "$IPOIB_FABRIC_DIR" Hca2 1 down --wait 5
echo "Hca2[1] is Down"
"$fabric" port "$IPOIB_FABRIC_DIR" Hca2 1 up --wait 15
echo "Hca2[1] is Active again"

echo
echo "== tearing down"
trap - EXIT
"$fabric" down "$IPOIB_FABRIC_DIR"
echo "done: no ibsim/OpenSM left running, $IPOIB_FABRIC_DIR removed"
