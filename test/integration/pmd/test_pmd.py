#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""net_ipoib end to end: Debian's dpdk-testpmd loads the driver on simulated
HCAs managed by OpenSM on ibsim; the Linux stack drives it through net_tap
in network namespaces; tshark decodes the wire capture; saquery and
dpdk-telemetry.py look at it from outside.

usage: test_pmd.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL IPOIB_NATIVE_EXAMPLE
"""
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric, client_env  # noqa: E402
from testpmd import Testpmd  # noqa: E402

FABRIC, PMD, IPOIB_ADDR, NATIVE = (os.path.abspath(a) for a in sys.argv[1:5])
t = Tap()
# testpmd refuses -d libraries under a world-writable directory, and umad2sim
# writes ./sys-<pid>: a private working directory beside the build tree.
CWD = tempfile.mkdtemp(prefix="pmd-test-", dir=os.path.dirname(os.path.dirname(PMD)))
CAPTURE = os.path.join(CWD, "ipoib.pcap")
running = []
netns = []


fabric = Fabric(FABRIC, CWD)
diag = fabric.diag


def guid_of(env, host):
    return re.search(r"Port GUID: (0x[0-9a-f]+)", diag(env, host, "ibstat")).group(1)


def gid_of(env, host):
    return str(ipaddress.IPv6Address((0xfe80 << 112) | int(guid_of(env, host), 16)))


def mac_of(guid):
    out = subprocess.run([IPOIB_ADDR, "--guid", guid], capture_output=True, text=True).stdout
    return re.search(r"emulated MAC\s+(\S+)", out).group(1)


def member(env, mgid, gid):
    out = diag(env, "Hca3", "saquery", "--smkey", "1", "MCMR", "--mgid", mgid, "--gid", gid)
    return re.search(r"PortGid\.+(\S+)", out) is not None and gid in out


def testpmd(env, host, vdevs, **kw):
    tp = Testpmd(env, host, vdevs, PMD, CWD, **kw)
    running.append(tp)
    return tp


def sh(cmd, timeout=60):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------

def test_testpmd_pair(env):
    a = testpmd(env, "Hca1", ["net_ipoib0"])
    b = testpmd(env, "Hca2", ["net_ipoib0"])
    t.ok("net_ipoib" in a("show port info 0"), "testpmd loads net_ipoib with -d")
    t.ok(a.wait_link(0) and b.wait_link(0), "links come up after the broadcast join")
    info = a("show port info 0")
    t.ok(re.search(r"MTU:\s+2044", info) or "2044" in info, "MTU is the broadcast group's minus 4 (2044)", info)

    # txonly -> rxonly over the broadcast group.
    a("set fwd rxonly")
    a("start")
    b("set fwd txonly")
    b("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    b("start")
    time.sleep(1.5)
    b("stop")
    time.sleep(0.5)
    a("stop")
    a_rx, _ = a.stats(0)
    _, b_tx = b.stats(0)
    drops = a.xstats(0).get("hca_drop_no_buffer", -1)
    t.note(f"txonly->rxonly: sent {b_tx}, received {a_rx}, dropped for lack of a buffer {drops}")
    t.ok(a_rx > 1000, "rxonly receives the broadcast traffic", a_rx)
    t.eq(a_rx + drops, b_tx, "every frame sent is received or counted as dropped (no buffer)")
    t.ok(b.xstats(0).get("rx_loopback_discards", 0) >= 0, "xstats list the IPoIB counters")

    # macswap both ways: a ping-pong started by one broadcast burst.
    a("clear port stats all")
    b("clear port stats all")
    a("clear port xstats all")
    b("clear port xstats all")
    b("set fwd macswap")
    b("start")
    a("set fwd macswap")
    a("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    a("start tx_first")
    time.sleep(1.5)
    a("stop")
    time.sleep(0.3)
    b("stop")
    a_rx, a_tx = a.stats(0)
    b_rx, b_tx = b.stats(0)
    ax, bx = a.xstats(0), b.xstats(0)
    t.note(f"macswap: A tx {a_tx} rx {a_rx}; B tx {b_tx} rx {b_rx}")
    t.ok(a_rx > 100 and b_rx > 100, "macswap <-> macswap keeps frames bouncing", (a_rx, b_rx))
    # What one side sent, the other received, dropped (counted), or still held when stopped.
    t.ok(0 <= a_tx - b_rx - bx.get("hca_drop_no_buffer", 0) <= 64, "A's sends agree with B's receives",
         (a_tx, b_rx, bx))
    t.ok(0 <= b_tx - a_rx - ax.get("hca_drop_no_buffer", 0) <= 64,
         "B's sends agree with A's receives", (b_tx, a_rx, ax))
    t.ok(bx.get("tx_unresolved_queued", 0) >= 1, "the first replies waited for their neighbour", bx)

    # mbufs all back in their pool after stop and close.
    a("port stop all")
    a("port close all")
    out = a("dump_mempool")
    sizes = re.findall(r"\bsize=(\d+)", out)
    common = re.findall(r"common_pool_count=(\d+)", out)
    caches = [int(x) for x in re.findall(r"cache_count\[\d+\]=(\d+)", out)]
    total = sum(int(c) for c in common) + sum(caches)
    t.ok(sizes and total == sum(int(s) for s in sizes), "after stop and close every mbuf is back in its pool",
         f"sizes {sizes}, in pool {total}\n{out[-1500:]}")
    a.quit()
    b.quit()
    running.clear()


def test_linux_stack(env):
    pfx = {}
    for i in (1, 2):
        ns = f"ipoibpmd{os.getpid()}x{i}"
        sh(f"ip netns add {ns}")
        netns.append(ns)
        mac = mac_of(guid_of(env, f"Hca{i}"))
        tap = f"ipt{os.getpid() % 100000}x{i}"
        tp = testpmd(env, f"Hca{i}", [f"net_tap0,iface={tap},mac={mac}", f"net_ipoib0,capture={CAPTURE}"],
                     prefix=f"lx{i}{os.getpid()}")
        pfx[i] = tp.prefix
        tp("set fwd io")
        tp("start")
        t.ok(tp.wait_link(1), f"Hca{i}: net_ipoib port up beside net_tap")
        # The tap was made in this namespace (umad2sim must reach ibsim here); move it.
        sh(f"ip link set {tap} netns {ns}")
        sh(f"ip -n {ns} addr add 10.77.0.{i}/24 dev {tap} && ip -n {ns} link set {tap} up && "
           f"ip -n {ns} link set lo up")
    ns1, ns2 = netns[-2], netns[-1]
    time.sleep(2.5)  # IPv6 DAD

    r = sh(f"ip netns exec {ns1} ping -c 3 -W 3 10.77.0.2")
    t.ok(r.returncode == 0, "IPv4 ping across IPoIB", r.stdout + r.stderr)
    neigh = sh(f"ip -n {ns1} neigh show 10.77.0.2").stdout
    t.ok(mac_of(guid_of(env, "Hca2")) in neigh, "ARP resolves the peer to its GUID-derived MAC", neigh)
    ll2 = re.search(r"inet6 (fe80::[0-9a-f:]+)/", sh(f"ip -n {ns2} -6 addr").stdout)
    tap1 = re.search(r"\d+: (\S+?)[@:]", sh(f"ip -n {ns1} -o link show | grep -v lo:").stdout).group(1)
    r = sh(f"ip netns exec {ns1} ping -6 -c 3 -W 3 {ll2.group(1)}%{tap1}") if ll2 else None
    t.ok(r is not None and r.returncode == 0, "IPv6 ping (ND translated) across IPoIB",
         (r.stdout + r.stderr) if r else "no IPv6 address")
    srv = subprocess.Popen(["ip", "netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "10.77.0.2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    r = sh(f"ip netns exec {ns1} iperf3 -c 10.77.0.2 -n 16M -J", timeout=60)  # bounded: the capture keeps it all
    srv.wait(10)
    try:
        res = json.loads(r.stdout)
        bits = res["end"]["sum_received"]["bits_per_second"]
        t.note(f"TCP over IPoIB (tap <-> testpmd io <-> net_ipoib): {bits / 1e6:.1f} Mbit/s")
        t.ok(res["end"]["sum_received"]["bytes"] > 0, "a TCP transfer (iperf3) succeeds")
    except (ValueError, KeyError):
        t.ok(False, "a TCP transfer (iperf3) succeeds", r.stdout[-1000:] + r.stderr[-500:])

    # From outside: the SA lists both ports, telemetry answers.
    gids = {i: gid_of(env, f"Hca{i}") for i in (1, 2)}
    ip_multicast(env, ns1, ns2, gids[2])
    for i in (1, 2):
        t.ok(member(env, "ff12:401b:ffff::ffff:ffff", gids[i]), f"saquery lists Hca{i} in the broadcast group")
    tel = sh(f"printf '/ipoib/ports\\n/ipoib/mcg,1\\n/ipoib/path,1\\n/ethdev/xstats,1\\n' | "
             f"dpdk-telemetry.py -f {pfx[1]}").stdout
    replies = {}
    for line in tel.splitlines():
        if line.startswith("{"):
            replies.update(json.loads(line))
    ports = replies.get("/ipoib/ports", {})
    t.ok(ports.get("1", {}).get("state") == "up" and ports["1"].get("mtu") == 2044,
         "telemetry: /ipoib/ports shows the port up with MTU 2044", ports)
    # The software HCA cannot register DPDK's memory: no MR, no zero copy (lkey 0, copies as before).
    t.eq((ports.get("1", {}).get("zero_copy"), ports.get("1", {}).get("hca_mrs")), ("off", 0),
         "telemetry: on the software HCA the MR cache is empty and zero copy off")
    mcg = list((replies.get("/ipoib/mcg") or {}).values())
    t.ok(any(g.get("mgid") == "ff12:401b:ffff::ffff:ffff" and g.get("mlid") == "0xc000" for g in mcg),
         "telemetry: /ipoib/mcg,<port> lists the broadcast group with its MLID", mcg)
    path = list((replies.get("/ipoib/path") or {}).values())
    peer_mac = mac_of(guid_of(env, "Hca2"))
    t.ok(any(n.get("neighbour") == peer_mac and n.get("state") == "resolved" for n in path),
         "telemetry: /ipoib/path,<port> lists the peer as a resolved neighbour", path)
    t.ok(any(n.get("path_to") == gids[2] for n in path), "telemetry: /ipoib/path,<port> lists the SA path", path)
    t.ok('"/ethdev/xstats"' in tel and "tx_arp_translated" in tel, "telemetry: /ethdev/xstats,<port>",
         tel[-800:])
    for tp in running:
        tp.quit()
    running.clear()
    check_capture()


MCAST_RECEIVER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("239.1.2.3", 5000))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("239.1.2.3"),
                                                                      socket.inet_aton("10.77.0.2")))
print("joined", flush=True)
s.settimeout(float(sys.argv[1]))
n = 0
try:
    while True:
        s.recv(2048)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""
MCAST_SENDER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.77.0.1"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for i in range(40):
    s.sendto(b"x" * 100, ("239.1.2.3", 5000))
    time.sleep(0.05)
"""
# 239.1.2.3 in the default partition: ff12:401b:ffff::<low 28 bits of the group>
MCAST_MGID = "ff12:401b:ffff::f01:203"


def ip_multicast(env, ns1, ns2, gid2):
    """A socket in ns2 joins 239.1.2.3 (its kernel sends IGMP reports through the tap); the driver
    joins the group's MGID as a full member, datagrams from ns1 arrive; closing the socket leaves."""
    t.ok(not member(env, MCAST_MGID, gid2), "before any socket joins 239.1.2.3, Hca2 is no member of its MGID")
    rx = subprocess.Popen(["ip", "netns", "exec", ns2, "python3", "-c", MCAST_RECEIVER, "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = rx.stdout.readline().strip()
    joined = False
    for _ in range(50):
        joined = member(env, MCAST_MGID, gid2)
        if joined:
            break
        time.sleep(0.2)
    join_state = re.search(r"JoinState\.+(\S+)", diag(env, "Hca3", "saquery", "--smkey", "1", "MCMR", "--mgid",
                                                      MCAST_MGID, "--gid", gid2))
    t.ok(first == "joined" and joined and join_state and int(join_state.group(1), 16) & 1,
         "a socket joining 239.1.2.3 makes Hca2 a full member of its MGID (the IGMP report, read by the driver)",
         (first, join_state.group(1) if join_state else None))
    sh(f"ip netns exec {ns1} python3 -c '{MCAST_SENDER}'", timeout=30)
    out, _ = rx.communicate(timeout=30)
    got = int(out.split()[-1]) if out.split() and out.split()[-1].isdigit() else -1
    t.note(f"IP multicast through IPoIB: {got} of 40 datagrams to 239.1.2.3 received")
    t.ok(got >= 30, "datagrams to the group reach the socket on the other host", out)
    gone = False
    for _ in range(50):
        gone = not member(env, MCAST_MGID, gid2)
        if gone:
            break
        time.sleep(0.2)
    t.ok(gone, "once the socket is closed (IGMP leave), Hca2 leaves the MGID")


def check_capture():
    # One tshark pass over the whole capture; the checks filter its rows.
    names = ["arp.hw.type", "arp.hw.size", "infiniband.grh.dgid", "infiniband.bth.opcode", "ip.dst",
             "icmpv6.type", "tcp.srcport"]
    args = ["tshark", "-o", 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""', "-r", CAPTURE,
            "-T", "fields"]
    for n in names:
        args += ["-e", n]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    rows = [dict(zip(names, line.split("\t"))) for line in out.splitlines()]
    arp = [r for r in rows if r["arp.hw.type"]]
    t.ok(arp and all(r["arp.hw.type"] == "32" and r["arp.hw.size"] == "20" for r in arp),
         "ARP on the wire has hardware type 32 and 20-byte addresses", arp[:3])
    t.ok(any(r["infiniband.grh.dgid"] == "ff12:401b:ffff::ffff:ffff" for r in arp),
         "ARP requests go to the broadcast MGID", arp[:3])
    ip = [r for r in rows if r["ip.dst"] and r["infiniband.bth.opcode"] == "100"]
    t.ok(len(ip) > 10, "IPv4 travels in UD SEND packets", len(ip))
    ns = [r for r in rows if r["icmpv6.type"] == "135" and r["infiniband.grh.dgid"]]
    t.ok(any(r["infiniband.grh.dgid"].startswith("ff12:601b:ffff::1:ff") for r in ns),
         "IPv6 NS go to the solicited-node group's MGID (ff12:601b:<pkey>::1:ffXX:XXXX)", ns[:3])
    tcp = [r for r in rows if r["tcp.srcport"]]
    t.ok(len(tcp) > 50, "the TCP transfer is in the capture", len(tcp))


def test_child_pkey(env):
    a = testpmd(env, "Hca1", ["net_ipoib0"])
    b = testpmd(env, "Hca2", ["net_ipoib0"])
    a.wait_link(0)
    b.wait_link(0)
    for tp in (a, b):
        tp("port attach net_ipoib1,pkey=0x8001")
        out = tp("show port info 1")
        t.ok("net_ipoib1" in out, f"{tp.host}: child P_Key 0x8001 attached at run time", out[-500:])
        tp("port start 1")
    t.ok(a.wait_link(1) and b.wait_link(1), "child ports come up in partition 0x8001")
    gid1 = gid_of(env, "Hca1")
    t.ok(member(env, "ff12:401b:8001::ffff:ffff", gid1), "saquery lists the child in p1's broadcast group")
    a("set fwd rxonly")
    a("start")
    b("set fwd txonly")
    b("set eth-peer 1 ff:ff:ff:ff:ff:ff")
    b("set portlist 1")
    b("start")
    time.sleep(1)
    b("stop")
    time.sleep(0.3)
    a("stop")
    p0_rx, _ = a.stats(0)
    p1_rx, _ = a.stats(1)
    _, b_p1_tx = b.stats(1)
    t.ok(p1_rx > 100 and b_p1_tx > 100, "traffic flows in the child partition", (p1_rx, b_p1_tx))
    t.eq(p0_rx, 0, "the default-partition port does not see the child partition's traffic")
    a("port stop 1")
    a("port close 1")
    a("port detach 1")
    out = a("show port info 1")
    t.ok("net_ipoib1" not in out, "child port detached", out[-400:])
    t.ok(not member(env, "ff12:401b:8001::ffff:ffff", gid1), "detach leaves no membership behind")
    t.ok(member(env, "ff12:401b:ffff::ffff:ffff", gid1), "the parent keeps its membership")
    a.quit()
    b.quit()
    running.clear()


def telemetry(prefix, cmd):
    out = subprocess.run(["dpdk-telemetry.py", "-f", prefix], input=cmd + "\n", capture_output=True,
                         text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line).get(cmd.split(",")[0])
    return None


def static_neigh(tp, mac, state, timeout=5):
    """tp's neighbour `mac` once it is in `state` (None if it is not within timeout)."""
    end = time.monotonic() + timeout
    while True:
        path = (telemetry(tp.prefix, "/ipoib/path,0") or {}).values()
        st = [n for n in path if n.get("neighbour") == mac]
        if st and st[0].get("state") == state:
            return st[0]
        if time.monotonic() > end:
            t.note(f"neighbour {mac}: {st}")
            return None
        time.sleep(0.1)


def test_static_neigh_segments_ageing(env):
    # B's address, as its telemetry shows it, becomes a static neighbour of A.
    b = testpmd(env, "Hca2", ["net_ipoib0"], prefix=f"sb{os.getpid()}",
                args=["--mbuf-size=640", "--enable-scatter", "--max-pkt-len=2000"])
    b.wait_link(0)
    bp = telemetry(b.prefix, "/ipoib/ports")["0"]
    a = testpmd(env, "Hca1", [f"net_ipoib0,neigh={bp['mac']}/{bp['hwaddr']},neigh_timeout=1"],
                prefix=f"sa{os.getpid()}")
    a.wait_link(0)
    st = static_neigh(a, bp["mac"], "incomplete", timeout=0)
    t.ok(st and st["kind"] == "static", "static neighbour from the devarg, waiting for its path", st)
    b("set fwd rxonly")
    b("set verbose 1")
    b("start")
    a("set fwd txonly")
    a(f"set eth-peer 0 {bp['mac']}")
    a("set txpkts 600,600,300")  # three segments: a 1500-byte frame gathered from three mbufs
    a("start")
    time.sleep(0.3)
    a("stop")
    time.sleep(0.3)
    out = b("stop")
    b("set verbose 0")
    b_rx, _ = b.stats(0)
    _, a_tx = a.stats(0)
    b_drop = b.xstats(0).get("hca_drop_no_buffer", -1)  # the verbose receiver is slow: UD drops, counted
    # Sent = received + dropped + still in B's receive queue (at most its 512 buffers) when it stopped.
    t.ok(b_rx > 0 and 0 <= a_tx - b_rx - b_drop <= 512,
         "frames to the static neighbour flow once the SA resolved its path", (a_tx, b_rx, b_drop))
    path = list((telemetry(a.prefix, "/ipoib/path,0") or {}).values())
    st = [n for n in path if n.get("neighbour") == bp["mac"]]
    t.ok(st and st[0]["state"] == "resolved" and st[0]["lid"] > 0, "the static neighbour is resolved, with its LID",
         path)
    lens = set(re.findall(r"length=(\d+)", out))
    segs = set(re.findall(r"nb_segs=(\d+)", out))
    t.eq(lens, {"1500"}, "multi-segment TX: the receiver gets whole 1500-byte frames")
    t.ok(segs and all(int(x) >= 3 for x in segs), "RX scatter: 1500 bytes in 640-byte mbufs arrive as chains",
         segs)

    # A normal flush (A's port goes down and up) drops every path; the static
    # neighbour is resolved again as soon as the link is back, without a frame.
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "down", "--wait", "10")
    t.ok(a.wait_link(0, up=False), "A's link goes down with its port")
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "up", "--wait", "10")
    t.ok(a.wait_link(0, timeout=20), "A's link comes back")
    t.ok(a.xstats(0).get("neigh_flushed", 0) >= 1, "the flush dropped the static neighbour's path", a.xstats(0))
    st = static_neigh(a, bp["mac"], "incomplete", timeout=0)
    t.ok(st is not None, "after the flush the static neighbour waits for its path again (no stale address handle)")
    b("clear port stats 0")
    b("start")
    a("start")
    time.sleep(0.3)
    a("stop")
    time.sleep(0.2)
    b("stop")
    st = static_neigh(a, bp["mac"], "resolved")
    t.ok(st and st["lid"] > 0 and b.stats(0)[0] > 0,
         "its next frames resolve it again and reach B", (st, b.stats(0)))
    a.quit()
    running.remove(a)

    # Learned neighbours age out (neigh_timeout=1); static ones stay.
    c = testpmd(env, "Hca3", ["net_ipoib0,neigh_timeout=1"], prefix=f"sc{os.getpid()}")
    c.wait_link(0)
    c("set fwd macswap")
    c("start")
    b("set fwd txonly")
    b("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    b("start")
    time.sleep(0.3)
    b("stop")
    time.sleep(0.2)
    learned = list((telemetry(c.prefix, "/ipoib/path,0") or {}).values())
    t.ok(any(n.get("kind") == "learned" for n in learned), "replying to an unknown sender creates a neighbour",
         learned)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [n for n in (telemetry(c.prefix, "/ipoib/path,0") or {}).values() if n.get("neighbour")]
        if not left:
            break
        time.sleep(0.5)
    t.eq(left, [], "an unused learned neighbour is forgotten after neigh_timeout")
    c("stop")
    b.quit()
    c.quit()
    running.clear()


def test_tx_checksum_offload(env):
    # C floods UDP; B forwards it with testpmd's csum engine asking for IPv4 and
    # UDP checksum offload; the driver must fill both in. B's capture is checked
    # by tshark's own checksum validation.
    cap = os.path.join(CWD, "csum.pcap")
    b = testpmd(env, "Hca2", [f"net_ipoib0,capture={cap}"], prefix=f"kb{os.getpid()}")
    c = testpmd(env, "Hca3", ["net_ipoib0"], prefix=f"kc{os.getpid()}")
    b.wait_link(0)
    c.wait_link(0)
    b("port stop 0")
    b("csum set ip hw 0")
    b("csum set udp hw 0")
    b("port start 0")
    b.wait_link(0)
    b("set fwd csum")
    b("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    b("start")
    c("set fwd txonly")
    c("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    c("start")
    time.sleep(0.3)
    c("stop")
    time.sleep(0.3)
    b("stop")
    _, b_tx = b.stats(0)
    b.quit()
    c.quit()
    running.clear()
    out = subprocess.run(["tshark", "-o", 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""',
                          "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-r", cap, "-Y", "udp",
                          "-T", "fields", "-e", "ip.checksum.status", "-e", "udp.checksum.status"],
                         capture_output=True, text=True, timeout=120).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    t.ok(b_tx > 0 and len(rows) == b_tx, "the csum engine's frames are all in the capture", (b_tx, len(rows)))
    # The csum engine zeroes the IPv4 checksum and asks for it: 1 = good. txonly's UDP
    # checksums are 0 ("none"), which testpmd leaves alone: 3 = not present, never 0 = bad.
    t.ok(rows and all(r[0] == "1" and r[1] in ("1", "3") for r in rows),
         "TX checksum offload: every IPv4 header checksum the driver filled in is right",
         sorted({tuple(r) for r in rows}))


def test_native_mode(env):
    # examples/ipoib_native: an application speaking IPoIB itself (l2=ipoib, rte_pmd_ipoib.h).
    def run(host, prefix, *args):
        e = client_env(env, host)
        return subprocess.Popen([NATIVE, "--no-huge", "-m", "256", f"--file-prefix={prefix}{os.getpid()}",
                                 "--no-pci", "-d", PMD, "--vdev=net_ipoib0,l2=ipoib", "--", *args], env=e, cwd=CWD,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pong = run("Hca1", "npo", "pong", "8")
    time.sleep(2)
    ping = run("Hca2", "npi", "ping", "200")
    ping_out, _ = ping.communicate(timeout=60)
    pong_out, _ = pong.communicate(timeout=60)
    m = re.search(r"ping: sent (\d+) received (\d+) from-qpn (\d+) lid (\d+)", ping_out)
    r = re.search(r"pong: received (\d+) replied (\d+)", pong_out)
    if not t.ok(m and r, "native-mode ping/pong ran", ping_out[-800:] + pong_out[-800:]):
        return
    sent, got, qpn, lid = (int(x) for x in m.groups())
    p_rx, p_tx = (int(x) for x in r.groups())
    t.note(f"native mode: ping sent {sent}, pong received {p_rx} and replied {p_tx}, ping received {got}")
    t.eq(p_rx, sent, "native mode: every broadcast frame reaches the other application")
    pong_stats = re.search(r"opackets (\d+) oerrors (\d+)", pong_out)
    opk, oerr = int(pong_stats.group(1)), int(pong_stats.group(2))
    t.eq(got, opk, "native mode: every reply sent (unicast by QPN + LID) is received")
    t.eq(opk + oerr, p_tx, "native mode: every reply is sent or counted as dropped")
    lid1 = int(re.search(r"Base lid: (\d+)", diag(env, "Hca1", "ibstat")).group(1))
    t.eq(lid, lid1, "native mode: the reply's source LID (from the address field) is the pong's")


def test_bad_devargs(env):
    info = subprocess.run(["dpdk-pmdinfo.py", PMD], capture_output=True, text=True).stdout
    for arg in ("provider=", "dev=", "port=", "pkey=", "mode=", "l2=", "rxq_size=", "txq_size=", "neigh=",
                "capture=", "fabric=", "allmulti=", "neigh_timeout=", "gid_index=", "bcast_qkey=", "bcast_mtu="):
        t.ok(arg in info, f"dpdk-pmdinfo.py shows devarg {arg}", info)
    e = client_env(env, "Hca1")
    for arg, want in (("pkey=0x8000", "devarg pkey=0x8000"), ("l2=ppp", "devarg l2=ppp"),
                      ("rxq_size=100", "devarg rxq_size=100"), ("bogus=1", "cannot parse devargs"),
                      ("mode=connected,l2=ipoib", "not available with l2=ipoib"),
                      ("gid_index=300", "devarg gid_index=300"), ("bcast_mtu=1500", "devarg bcast_mtu=1500"),
                      ("bcast_qkey=0x80000001", "devarg bcast_qkey=0x80000001"),
                      # This host has no RDMA devices: the verbs provider says so.
                      ("provider=verbs", "no RDMA devices")):
        r = subprocess.run(["dpdk-testpmd", "--no-huge", "-m", "256", f"--file-prefix=bad{os.getpid()}",
                            "--no-pci", "-d", PMD, f"--vdev=net_ipoib0,{arg}", "--", "-i",
                            "--total-num-mbufs=2048"], env=e, cwd=CWD, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        t.ok(want in r.stdout + r.stderr, f"bad devarg {arg} is refused by name",
             (r.stdout + r.stderr)[-600:])


def main():
    env = None
    try:
        env = json.loads(fabric("up", "--format", "json", "--hcas", "3", "--owner", str(os.getpid())).stdout)
        t.run("testpmd pair", test_testpmd_pair, env)
        t.run("linux stack", test_linux_stack, env)
        t.run("child P_Key", test_child_pkey, env)
        t.run("static neighbour, segments, ageing", test_static_neigh_segments_ageing, env)
        t.run("TX checksum offload", test_tx_checksum_offload, env)
        t.run("native mode", test_native_mode, env)
        t.run("bad devargs", test_bad_devargs, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "PMD test setup", e)
    finally:
        for tp in running:
            try:
                tp.quit()
            except Exception:  # noqa: BLE001
                tp.p.kill()
        for ns in netns:
            sh(f"ip netns del {ns}")
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
