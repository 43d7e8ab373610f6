#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The main job: IP over InfiniBand between two Linux hosts through DPDK.
#
# Sets up and builds, brings up a simulated InfiniBand fabric (ibsim, managed
# by OpenSM), and on each of two HCAs runs Debian's dpdk-testpmd forwarding
# between a net_tap port (the Linux stack of a network namespace) and a
# net_ipoib port. Then: ping (IPv4 and IPv6) and a TCP transfer across
# IPoIB, the ports' stats, the driver's telemetry, what the SA sees, and a
# look at the wire capture; finally everything is torn down.
#
# usage: devtools/demo.sh        (as root on Debian 12; installs what it needs)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
fabric=$top/app/ipoib-fabric/ipoib-fabric
pmd=$top/build/drivers/net/ipoib/librte_net_ipoib.so

"$top/buildtools/build.sh"

work=$(mktemp -d -p "$top/build" demo.XXXXXX)  # testpmd refuses -d libraries under world-writable dirs
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    for i in 1 2; do ip netns del "ipoibdemo$i" 2>/dev/null; done
    [ -n "${IPOIB_FABRIC_DIR:-}" ] && "$fabric" down "$IPOIB_FABRIC_DIR"
    rm -rf "$work"
}
trap cleanup EXIT

echo "== 1. a simulated InfiniBand fabric: 2 HCAs on a switch, OpenSM as subnet manager"
eval "$("$fabric" up --hcas 2)"
"$fabric" show "$IPOIB_FABRIC_DIR"

echo
echo "== 2. on each HCA: dpdk-testpmd forwarding net_tap (Linux) <-> net_ipoib (InfiniBand)"
cd "$work"
for i in 1 2; do
    guid=$(LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca$i ibstat | sed -n 's/.*Port GUID: //p')
    mac=$("$top/build/app/ipoib-addr/ipoib-addr" --guid "$guid" | sed -n 's/.*emulated MAC *//p')
    echo "Hca$i: port GUID $guid -> Ethernet-emulation MAC $mac"
    LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca$i dpdk-testpmd --no-huge -m 512 --file-prefix=ipoibdemo$i \
        --no-pci -d "$pmd" --vdev=net_tap0,iface=ipoibdemo$i,mac="$mac" \
        --vdev=net_ipoib0,capture="$work/ipoib.pcap" --log-level=pmd.net.ipoib:info \
        -- --total-num-mbufs=16384 --forward-mode=io --stats-period=3600 > "testpmd$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2; do
    for _ in $(seq 100); do grep -q "link up" "testpmd$i.log" && break; sleep 0.1; done
    grep "net_ipoib" "testpmd$i.log" | sed "s/^/  [testpmd $i] /"
    # testpmd made the tap here, where umad2sim reaches ibsim; the host lives in a namespace.
    ip netns add "ipoibdemo$i"
    ip link set "ipoibdemo$i" netns "ipoibdemo$i"
    ip -n "ipoibdemo$i" addr add "10.42.0.$i/24" dev "ipoibdemo$i"
    ip -n "ipoibdemo$i" link set "ipoibdemo$i" up
    ip -n "ipoibdemo$i" link set lo up
done
sleep 2.5  # IPv6 duplicate address detection

echo
echo "== 3. the Linux stack across IPoIB"

ip netns exec ipoibdemo1 ping -c 3 10.42.0.2
ip -n ipoibdemo1 neigh show 10.42.0.2
ll2=$(ip -n ipoibdemo2 -6 addr show dev ipoibdemo2 | sed -n 's/.*inet6 \(fe80[^/]*\).*/\1/p')
ip netns exec ipoibdemo1 ping -6 -c 3 "$ll2%ipoibdemo1"
ip netns exec ipoibdemo2 iperf3 -s -1 -B 10.42.0.2 > /dev/null &
sleep 0.5
ip netns exec ipoibdemo1 iperf3 -c 10.42.0.2 -t 3 | grep -E "sender|receiver"

echo
echo "== 4. the driver from outside: telemetry, and the SA's multicast members"
printf '/ipoib/ports\n/ipoib/mcg,1\n/ipoib/path,1\n' | dpdk-telemetry.py -f ipoibdemo1 | sed -n '/^{/,$p'
for i in 1 2; do
    gid=$(python3 -c "import ipaddress,sys; print(ipaddress.IPv6Address((0xfe80<<112)|int(sys.argv[1],16)))" \
          "$(LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca$i ibstat | sed -n 's/.*Port GUID: //p')")
    printf "broadcast group member Hca%s (%s): " "$i" "$gid"
    LD_PRELOAD=$IPOIB_FABRIC_UMAD2SIM SIM_HOST=Hca2 saquery --smkey 1 MCMR --mgid ff12:401b:ffff::ffff:ffff \
        --gid "$gid" | sed -n 's/.*JoinState\.*/JoinState /p'
done

echo
echo "== 5. stopping testpmd (its statistics follow)"
for p in "${pids[@]}"; do kill -INT "$p"; done
for p in "${pids[@]}"; do wait "$p" || true; done
pids=()
for i in 1 2; do
    echo "-- testpmd on Hca$i"
    grep -E "Statistics for port|RX-packets|TX-packets|Forward statistics" "testpmd$i.log" | tail -6
done

echo
echo "== 6. the wire (software HCA capture, decoded by tshark)"
tshark -o 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""' -r "$work/ipoib.pcap" 2>/dev/null |
    grep -E "ARP|Echo" | head -8
echo
echo "done: fabric, testpmd and namespaces are being torn down"
