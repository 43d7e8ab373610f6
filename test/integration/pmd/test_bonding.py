#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Active-backup bonding over two net_ipoib ports, as Linux's IPoIB bonding.

Host A: Debian's dpdk-testpmd with net_bonding (mode 1) over net_ipoib on
ports 1 and 2 of Hca1, forwarding to a net_tap whose kernel side (a network
namespace) has the bond's MAC. Host B (Hca2): testpmd with net_tap and
net_ipoib. B's kernel pings A's every 10 ms and sends it a TCP stream.
A's active port (port 2, the bond's primary: umad2sim gives a process
one MAD client, on port 1, so with port 1 unlinked port 2 would have no SA)
is unlinked in ibsim: its link goes down, the bond makes
the other port active and sets the bond's MAC on it, the driver announces
A's addresses from that port (gratuitous ARP), B's kernel moves its ARP
entry and B's driver its neighbour to the backup's 20-byte address. Counted:
pings lost (the outage), the TCP stream's SHA-256, B's neighbour table,
testpmd's `show bonding config`; then the port is relinked, and the bond
(no primary= devarg: DPDK 22.11's bonding moves the bond's MAC when its
active member fails, not when a primary= member returns) keeps its active
member, the ping going on.

A second case (two HCAs in one bond) needs two software HCAs in one
process, which the soft provider does not support (it serves the node of
$SIM_HOST only): not run here.

usage: test_bonding.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL
"""
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric  # noqa: E402
from testpmd import Testpmd  # noqa: E402
from hosts import TCP_RECEIVER, TCP_SENDER, guid_of, mac_of, run_on_fabric, sh, telemetry, transfer_intact  # noqa: E402

FABRIC, PMD, IPOIB_ADDR = (os.path.abspath(a) for a in sys.argv[1:4])
t = Tap()
CWD = tempfile.mkdtemp(prefix="bond-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []
netns = []
A_IP, B_IP = "10.80.0.1", "10.80.0.2"
PING_INTERVAL_S = 0.01
NBYTES = 24 << 20


def guid(env, host):
    return guid_of(fabric, env, host)


def port_ids(tp):
    """{name: port id} from `show port summary all`."""
    out = tp("show port summary all")
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^(\d+)\s+\S+\s+(\S+)", out, re.M)}


def port_macs(tp):
    """{port id: MAC} from `show port summary all`."""
    out = tp("show port summary all")
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+)\s+([0-9A-F:]{17})\s", out, re.M)}


def current_primary(tp, bond):
    """The bond's active member (`show bonding config`: Primary: [n])."""
    m = re.search(r"\bPrimary: \[(\d+)\]", tp(f"show bonding config {bond}"))
    return int(m.group(1)) if m else None


def ping_stats(out):
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def ping_outage_ms(out):
    """The longest time without a reply: the longest run of sequence numbers
    lost, plus the slowest reply (frames held during the switch arrive late)."""
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+)", out))
    gap = max((b - a - 1 for a, b in zip(seqs, seqs[1:])), default=0)
    rtt = max((float(x) for x in re.findall(r"time=([\d.]+) ms", out)), default=0.0)
    return gap * PING_INTERVAL_S * 1000 + rtt


def setup_ns(i, tap, ip):
    ns = f"ipoibbond{os.getpid()}x{i}"
    sh(f"ip netns add {ns}")
    netns.append(ns)
    sh(f"ip link set {tap} netns {ns}")
    sh(f"ip -n {ns} addr add {ip}/24 dev {tap} && ip -n {ns} link set {tap} up && ip -n {ns} link set lo up")
    return ns


def scenario(env):
    bond_mac = "02:bd:00:00:00:01"
    tap_a, tap_b = f"ipbd{os.getpid() % 100000}a", f"ipbd{os.getpid() % 100000}b"
    a = Testpmd(env, "Hca1", ["net_ipoib0,port=1", "net_ipoib1,port=2",
                              f"net_bonding0,mode=1,slave=net_ipoib1,mac={bond_mac}",
                              f"net_tap0,iface={tap_a},mac={bond_mac}"], PMD, CWD, prefix=f"bda{os.getpid()}",
                startup_timeout=120)
    running.append(a)
    ids = port_ids(a)
    t.note(f"A's ports: {ids}")
    bond, tap = ids.get("net_bonding0"), ids.get("net_tap0")
    slave0, slave1 = ids.get("net_ipoib0"), ids.get("net_ipoib1")
    if not t.ok(None not in (bond, tap, slave0, slave1), "testpmd made the bond over the two net_ipoib ports",
                a.startup[-2000:]):
        return
    t.ok("Fail to start port" not in a.startup and "Failed to update" not in a.startup,
         "the bond starts: its MAC is set on its net_ipoib member (mac_addr_set)", a.startup[-2000:])
    # The backup joins the running bond (the active member stays net_ipoib1: DPDK's bonding
    # elects the first member whose link is up, and with net_ipoib0 from the start that
    # could be either; primary= does not move the bond's MAC when that member returns).
    a.wait_link(slave1, timeout=60)
    a(f"port stop {slave0}")
    out = a(f"add bonding slave {slave0} {bond}")
    t.ok("error" not in out.lower() and "fail" not in out.lower(), "net_ipoib0 joins the bond as its backup", out)
    a(f"set portlist {bond},{tap}")
    a("set fwd io")
    a("start")
    b_mac = mac_of(IPOIB_ADDR, guid(env, "Hca2"))
    b = Testpmd(env, "Hca2", [f"net_tap0,iface={tap_b},mac={b_mac}", "net_ipoib0"], PMD, CWD,
                prefix=f"bdb{os.getpid()}", startup_timeout=90)
    running.append(b)
    b("set fwd io")
    b("start")
    t.ok(a.wait_link(bond, timeout=60) and b.wait_link(1, timeout=60), "the bond and B's port are up")
    t.eq(current_primary(a, bond), slave1, "the bond's active member is net_ipoib1 (port 2 of Hca1)")
    macs = port_macs(a)
    t.eq(macs.get(slave1), bond_mac.upper(), "the bond set its MAC on its active member (mac_addr_set)")
    ns_a, ns_b = setup_ns(1, tap_a, A_IP), setup_ns(2, tap_b, B_IP)
    time.sleep(2)
    r = sh(f"ip netns exec {ns_b} ping -c 3 -W 3 {A_IP}")
    t.ok(r.returncode == 0, "B's kernel pings A's through the bond", r.stdout + r.stderr)
    ports_a = telemetry(a.prefix, "/ipoib/ports")
    hw = {int(k): v["hwaddr"] for k, v in ports_a.items()}
    t.note(f"A's IPoIB addresses: {hw}")

    # Traffic: a ping every 10 ms and a paced TCP stream, both from B; then A's active port fails.
    srv = subprocess.Popen(["ip", "netns", "exec", ns_a, "python3", "-c", TCP_RECEIVER, A_IP, "5002"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    # A paced stream (about 8 s), so that the failover happens in the middle of it.
    cli = subprocess.Popen(["ip", "netns", "exec", ns_b, "python3", "-c", TCP_SENDER, A_IP, "5002", str(NBYTES), "80"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ping = subprocess.Popen(["ip", "netns", "exec", ns_b, "ping", "-i", str(PING_INTERVAL_S), "-c", "700", "-W", "1",
                             A_IP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2.0)
    t0 = time.monotonic()
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "2", "down", "--wait", "5")
    t.note(f"Hca1 port 2 unlinked ({time.monotonic() - t0:.2f} s)")
    ping_out, _ = ping.communicate(timeout=60)
    sent, got = ping_stats(ping_out)
    lost = sent - got
    t.note(f"ping during the failover: {sent} sent, {got} received, {lost} lost; the longest time without a "
           f"reply about {ping_outage_ms(ping_out):.0f} ms")
    t.ok(sent > 0 and lost * PING_INTERVAL_S <= 1.0, "the ping goes on over the backup (at most 1 s of it lost)",
         ping_out[-500:])
    cli_out, _ = cli.communicate(timeout=120)
    try:
        srv_out, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv_out, _ = srv.communicate()
    t.note(f"TCP: sent {cli_out.strip()[-120:]}; received {srv_out.strip()[-120:]}")
    t.ok(transfer_intact(cli_out, srv_out, NBYTES),
         f"the {NBYTES >> 20} MB TCP stream across the failover arrives whole (length and SHA-256 agree)",
         (cli_out[-300:], srv_out[-300:]))
    t.eq(current_primary(a, bond), slave0, "show bonding config: the active member is now net_ipoib0")
    xs = a.xstats(slave0)
    t.ok(xs.get("tx_announcements", 0) >= 1, "the new active port announced A's address (gratuitous ARP)",
         {k: v for k, v in xs.items() if "announce" in k})
    paths = telemetry(b.prefix, "/ipoib/path,1")
    entries = list(paths.values()) if isinstance(paths, dict) else []
    backup_gid = str(ipaddress.IPv6Address(bytes(int(x, 16) for x in hw.get(slave0, "").split(":")[4:]))) \
        if hw.get(slave0) else None
    backup_qpn = int("".join(hw.get(slave0, "0:0:0:0").split(":")[1:4]), 16) if hw.get(slave0) else None
    moved = [n for n in entries if n.get("gid") == backup_gid and n.get("qpn") == backup_qpn and
             n.get("state") == "resolved"]
    t.ok(moved, "B's neighbour table has A's backup address, resolved", entries)

    # Relink: without a primary= devarg the bond keeps its active member; the ping goes on.
    ping = subprocess.Popen(["ip", "netns", "exec", ns_b, "ping", "-i", str(PING_INTERVAL_S), "-c", "500", "-W", "1",
                             A_IP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "2", "up", "--wait", "15")
    ping_out, _ = ping.communicate(timeout=60)
    sent, got = ping_stats(ping_out)
    t.note(f"ping across the relink: {sent} sent, {got} received, {sent - got} lost")
    t.ok(sent > 0 and (sent - got) * PING_INTERVAL_S <= 1.0, "relinked: the ping goes on (at most 1 s of it lost)",
         ping_out[-500:])
    t.ok(a.link_status(slave1) == "up", "the relinked port is up again (a backup now)")
    t.eq(current_primary(a, bond), slave0, "the bond keeps net_ipoib0 active (no primary= devarg: no failback)")

    for tp in (a, b):
        tp("stop")
    a("port stop all")
    a("port close all")
    ok, detail = a.mbufs_back()
    t.ok(ok, "A: every mbuf back in its pool after stop", detail)


def main():
    run_on_fabric(t, fabric, "bonding", scenario, ["--hcas", "2", "--ports", "2"], running, netns, CWD)


if __name__ == "__main__":
    main()
    t.finish()
