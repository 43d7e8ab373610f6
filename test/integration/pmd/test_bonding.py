#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Active-backup bonding over two net_ipoib ports, as Linux's IPoIB bonding.

Host A: Debian's dpdk-testpmd with net_bonding (mode 1) over net_ipoib on
ports 1 and 2 of Hca1, forwarding to a net_tap whose kernel side (a network
namespace) has the bond's MAC. Host B (Hca2): testpmd with net_tap and
net_ipoib. B's kernel pings A's every 10 ms and sends it a TCP stream.
A's active port is unlinked in ibsim: its link goes down, the bond makes
the other port active and sets the bond's MAC on it, the driver announces
A's addresses from that port (gratuitous ARP), B's kernel moves its ARP
entry and B's driver its neighbour to the backup's 20-byte address. Counted:
pings lost (the outage), the TCP stream's SHA-256, B's neighbour table,
testpmd's `show bonding config`; then the port is relinked and the bond
goes back to its primary, the ping going on.

A second case (two HCAs in one bond) needs two software HCAs in one
process, which the soft provider does not support (it serves the node of
$SIM_HOST only): not run here.

usage: test_bonding.py FABRIC_TOOL PMD_SO IPOIB_ADDR_TOOL
"""
import faulthandler
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric  # noqa: E402
from testpmd import Testpmd  # noqa: E402

FABRIC, PMD, IPOIB_ADDR = (os.path.abspath(a) for a in sys.argv[1:4])
t = Tap()
CWD = tempfile.mkdtemp(prefix="bond-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []
netns = []
A_IP, B_IP = "10.80.0.1", "10.80.0.2"
PING_INTERVAL_S = 0.01
NBYTES = 24 << 20

SERVER = """
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5002))
s.listen(1)
s.settimeout(60)
c, _ = s.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest(), flush=True)
"""
# A paced stream (about 8 s), so that the failover happens in the middle of it.
CLIENT = """
import hashlib, random, socket, sys, time
data = random.Random(11).randbytes(int(sys.argv[2]))
s = socket.create_connection((sys.argv[1], 5002), timeout=60)
step = len(data) // 80
for i in range(0, len(data), step):
    s.sendall(data[i:i + step])
    time.sleep(0.1)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def sh(cmd, timeout=60):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)


def guid_of(env, host):
    return re.search(r"Port GUID: (0x[0-9a-f]+)", fabric.diag(env, host, "ibstat")).group(1)


def mac_of(guid):
    out = subprocess.run([IPOIB_ADDR, "--guid", guid], capture_output=True, text=True).stdout
    return re.search(r"emulated MAC\s+(\S+)", out).group(1)


def telemetry(prefix, cmd):
    out = subprocess.run(["dpdk-telemetry.py", "-f", prefix], input=cmd + "\n", capture_output=True, text=True,
                         timeout=60).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line).get(cmd.split(",")[0]) or {}
    return {}


def port_ids(tp):
    """{name: port id} from `show port summary all`."""
    out = tp("show port summary all")
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^(\d+)\s+\S+\s+(\S+)", out, re.M)}


def current_primary(tp, bond):
    m = re.search(r"Current Primary: \[(\d+)\]", tp(f"show bonding config {bond}"))
    return int(m.group(1)) if m else None


def ping_stats(out):
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def setup_ns(i, tap, ip):
    ns = f"ipoibbond{os.getpid()}x{i}"
    sh(f"ip netns add {ns}")
    netns.append(ns)
    sh(f"ip link set {tap} netns {ns}")
    sh(f"ip -n {ns} addr add {ip}/24 dev {tap} && ip -n {ns} link set {tap} up && ip -n {ns} link set lo up")
    return ns


def scenario(env):
    bond_mac = mac_of(guid_of(env, "Hca1"))
    tap_a, tap_b = f"ipbd{os.getpid() % 100000}a", f"ipbd{os.getpid() % 100000}b"
    a = Testpmd(env, "Hca1", ["net_ipoib0,port=1", "net_ipoib1,port=2",
                              "net_bonding0,mode=1,slave=net_ipoib0,slave=net_ipoib1,primary=net_ipoib0",
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
         "the bond starts: its MAC is set on the net_ipoib members (mac_addr_set)", a.startup[-2000:])
    a(f"set portlist {bond},{tap}")
    a("set fwd io")
    a("start")
    b = Testpmd(env, "Hca2", [f"net_tap0,iface={tap_b},mac={mac_of(guid_of(env, 'Hca2'))}", "net_ipoib0"], PMD, CWD,
                prefix=f"bdb{os.getpid()}", startup_timeout=90)
    running.append(b)
    b("set fwd io")
    b("start")
    t.ok(a.wait_link(bond, timeout=60) and b.wait_link(1, timeout=60), "the bond and B's port are up")
    t.eq(current_primary(a, bond), slave0, "the bond's active member is its primary, net_ipoib0 (port 1 of Hca1)")
    ns_a, ns_b = setup_ns(1, tap_a, A_IP), setup_ns(2, tap_b, B_IP)
    time.sleep(2)
    r = sh(f"ip netns exec {ns_b} ping -c 3 -W 3 {A_IP}")
    t.ok(r.returncode == 0, "B's kernel pings A's through the bond", r.stdout + r.stderr)
    ports_a = telemetry(a.prefix, "/ipoib/ports")
    hw = {int(k): v["hwaddr"] for k, v in ports_a.items()}
    t.note(f"A's IPoIB addresses: {hw}")

    # Traffic: a ping every 10 ms and a paced TCP stream, both from B; then A's active port fails.
    srv = subprocess.Popen(["ip", "netns", "exec", ns_a, "python3", "-c", SERVER, A_IP], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    cli = subprocess.Popen(["ip", "netns", "exec", ns_b, "python3", "-c", CLIENT, A_IP, str(NBYTES)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ping = subprocess.Popen(["ip", "netns", "exec", ns_b, "ping", "-i", str(PING_INTERVAL_S), "-c", "700", "-W", "1",
                             A_IP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2.0)
    t0 = time.monotonic()
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "down", "--wait", "5")
    t.note(f"Hca1 port 1 unlinked ({time.monotonic() - t0:.2f} s)")
    ping_out, _ = ping.communicate(timeout=60)
    sent, got = ping_stats(ping_out)
    lost = sent - got
    t.note(f"ping during the failover: {sent} sent, {got} received, {lost} lost: an outage of about "
           f"{lost * PING_INTERVAL_S * 1000:.0f} ms")
    t.ok(sent > 0 and lost * PING_INTERVAL_S <= 1.0, "the ping goes on over the backup (at most 1 s of it lost)",
         ping_out[-500:])
    cli_out, _ = cli.communicate(timeout=120)
    try:
        srv_out, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv_out, _ = srv.communicate()
    t.note(f"TCP: sent {cli_out.strip()[-120:]}; received {srv_out.strip()[-120:]}")
    t.ok(cli_out.split() and srv_out.split() and cli_out.split()[-2:] == srv_out.split()[-2:],
         f"the {NBYTES >> 20} MB TCP stream across the failover arrives whole (length and SHA-256 agree)",
         (cli_out[-300:], srv_out[-300:]))
    t.eq(current_primary(a, bond), slave1, "show bonding config: the active member is now net_ipoib1")
    xs = a.xstats(slave1)
    t.ok(xs.get("tx_announcements", 0) >= 1, "the new active port announced A's address (gratuitous ARP)",
         {k: v for k, v in xs.items() if "announce" in k})
    paths = telemetry(b.prefix, "/ipoib/path,1")
    entries = list(paths.values()) if isinstance(paths, dict) else []
    moved = [n for n in entries if n.get("hwaddr") == hw.get(slave1) and n.get("state") == "resolved"]
    t.ok(moved, "B's neighbour table has A's backup address, resolved", entries)

    # Relink: the bond goes back to its primary; the ping goes on.
    ping = subprocess.Popen(["ip", "netns", "exec", ns_b, "ping", "-i", str(PING_INTERVAL_S), "-c", "500", "-W", "1",
                             A_IP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    fabric("port", env["IPOIB_FABRIC_DIR"], "Hca1", "1", "up", "--wait", "15")
    ping_out, _ = ping.communicate(timeout=60)
    sent, got = ping_stats(ping_out)
    t.note(f"ping across the relink: {sent} sent, {got} received, {sent - got} lost")
    t.ok(sent > 0 and (sent - got) * PING_INTERVAL_S <= 1.0, "relinked: the ping goes on (at most 1 s of it lost)",
         ping_out[-500:])
    end = time.monotonic() + 10
    while current_primary(a, bond) != slave0 and time.monotonic() < end:
        time.sleep(0.3)
    t.eq(current_primary(a, bond), slave0, "the bond went back to its primary, net_ipoib0")

    for tp in (a, b):
        tp("stop")
    ok, detail = a.mbufs_back() if hasattr(a, "mbufs_back") else (True, "")
    a("port stop all")
    ok, detail = a.mbufs_back()
    t.ok(ok, "A: every mbuf back in its pool after stop", detail)


def main():
    faulthandler.dump_traceback_later(280, exit=False)
    env = None
    try:
        env = json.loads(fabric("up", "--format", "json", "--hcas", "2", "--ports", "2", "--owner",
                                str(os.getpid())).stdout)
        t.run("bonding", scenario, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "bonding test setup", e)
    finally:
        for p in running:
            try:
                p.quit()
            except Exception:  # noqa: BLE001
                p.p.kill()
        for ns in netns:
            sh(f"ip netns del {ns}")
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
        if t.failed:
            t.note(f"logs kept in {CWD}")
        else:
            shutil.rmtree(CWD, ignore_errors=True)


if __name__ == "__main__":
    main()
    t.finish()
