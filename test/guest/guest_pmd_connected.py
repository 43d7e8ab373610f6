#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Runs inside the QEMU guest (test/guest/test_verbs_guest.sh): connected
mode on the verbs provider over Soft-RoCE (rxe0), the kernel's RDMA stack
doing the work. The scenario of test/integration/pmd/test_connected.py:
two Linux stacks in namespaces, each behind tap_bridge (a tap <-> net_ipoib
with mode=connected, provider=verbs,dev=rxe0). They ARP over UD; each driver
learns the other's 20-byte address with the RC flag; the first large frame
makes the sending TX queue connect through librdmacm (REQ/REP/RTU by the
kernel's CM, the RC QP and SRQ the driver's own), and the frames go over
the Reliable Connection in chains of 2 KB mbufs both ways.

Checked: ping with 59,000-byte payloads and DF (ping verifies its pattern),
a TCP stream (length and SHA-256), the CM and connection counters on both
sides, DREQ on stop, every mbuf back; then a peer killed mid-transfer: the
survivor's connection fails and is closed (cm_conn_errors), nothing leaks.
rxe gathers at most 32 entries per send: a frame may be 31 mbufs of 2 KB
after the IPoIB header, so the taps' MTU is 60000 here (65520 on the
software HCA). TAP output.

usage: guest_pmd_connected.py TAP_BRIDGE PMD_SO WORKDIR
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "pmd"))
from tap import Tap  # noqa: E402
from hosts import TapBridgeHost, sh, tcp_transfer, transfer_intact  # noqa: E402

BRIDGE, PMD, CWD = (os.path.abspath(a) for a in sys.argv[1:4])
VDEV = "net_ipoib0,provider=verbs,dev=rxe0,mode=connected"
TAP_MTU = 60000
NBYTES = 4 << 20
t = Tap()
running = []


class Bridge(TapBridgeHost):
    """tap_bridge on rxe0, its tap's kernel side in a namespace of its own with address ip."""

    def __init__(self, name, ip, lcore):
        self.name, self.ip = name, ip
        self.prefix = f"gcm{name}"
        self.tap = f"gcm{name}"
        self.ns = None
        self.log_path = os.path.join(CWD, f"bridge-{name}.log")
        self.log = open(self.log_path, "w")
        cmd = [BRIDGE, "--no-huge", "-m", "512", f"--file-prefix={self.prefix}", "--no-pci", "-l", str(lcore),
               "-d", PMD, f"--vdev={VDEV}", "--log-level=pmd.net.ipoib:info", "--", "--tap", self.tap]
        self.p = subprocess.Popen(cmd, cwd=CWD, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        running.append(self)
        end = time.monotonic() + 120  # (software emulation: port start waits for the link)
        while time.monotonic() < end and self.p.poll() is None and "tap_bridge:" not in self.text():
            time.sleep(0.5)
        if "tap_bridge:" not in self.text():
            raise RuntimeError(f"tap_bridge {name} did not start:\n{self.text()[-2000:]}")
        mac = self.port().get("mac", "")
        self.ns = f"ipoibgcm{name}"
        sh(f"ip netns add {self.ns}")
        sh(f"ip link set {self.tap} netns {self.ns}")
        sh(f"ip -n {self.ns} link set {self.tap} mtu {TAP_MTU} address {mac}"
           f" && ip -n {self.ns} addr add {ip}/24 dev {self.tap} && ip -n {self.ns} link set {self.tap} up"
           f" && ip -n {self.ns} link set lo up")

    def run(self, cmd, timeout=120):
        return super().run(cmd, timeout)

    def quit(self, timeout=60):
        return super().quit(timeout)

    def forget(self):
        if self in running:
            running.remove(self)
        if self.ns:
            sh(f"ip netns del {self.ns}")
            self.ns = None


def cm_counts(b):
    return {k: v for k, v in b.xstats().items() if "cm_" in k}


def transfer():
    a = Bridge("a", "10.82.0.1", 0)
    b = Bridge("b", "10.82.0.2", 1)
    t.ok(a.up() and b.up(), "both net_ipoib ports on rxe0 come up in connected mode")
    pa = a.port()
    t.ok(pa.get("hwaddr", "").startswith("80:") and pa.get("mtu") == 65520,
         "a connected-mode port on rxe0: its address carries the RC flag (0x80), its MTU is 65520", pa)
    r = b.run("ping -c 3 -W 5 10.82.0.1")
    if r.returncode != 0:  # (ARP over UD and the first address handles can take seconds in the emulated guest)
        r = b.run("ping -c 3 -W 5 10.82.0.1")
    t.ok(r.returncode == 0, "B pings A (small frames over UD; ARP teaches each driver the other's address)",
         r.stdout + r.stderr)
    r = b.run("ping -c 5 -W 10 -s 59000 -M do 10.82.0.1")
    ca, cb = cm_counts(a), cm_counts(b)
    t.note(f"A's CM counters: {ca}")
    t.note(f"B's CM counters: {cb}")
    t.ok(r.returncode == 0 and " 0% packet loss" in r.stdout,
         "B pings A with 59,000-byte payloads, DF set, over connections both ways (ping checks the data)",
         r.stdout + r.stderr + a.text()[-1500:])
    t.ok(cb.get("tx_cm_packets", 0) >= 5 and ca.get("rx_cm_packets", 0) >= 5 and
         ca.get("tx_cm_packets", 0) >= 5 and cb.get("rx_cm_packets", 0) >= 5,
         "the echoes went over the connections (RC sends, shared receive queues) both ways", (ca, cb))
    t.ok(ca.get("cm_established", 0) >= 2 and cb.get("cm_established", 0) >= 2,
         "each side counts two connections established through librdmacm (its own and the peer's)", (ca, cb))
    t.ok("connecting to" in b.text() and re.search(r"connected to .*RC QP", b.text()) is not None,
         "B's log: its TX queue connected (RC QP to RC QP)", b.text()[-1500:])

    cli_out, srv_out, secs = tcp_transfer(a.ns, b.ns, "10.82.0.1", 5003, NBYTES, timeout=240)
    t.note(f"TCP over rxe: {NBYTES >> 20} MB in {secs:.1f} s")
    t.ok(transfer_intact(cli_out, srv_out, NBYTES),
         f"a {NBYTES >> 20} MB TCP stream from B to A over the connection arrives whole (length and SHA-256)",
         (cli_out[-300:], srv_out[-300:]))
    ca2 = cm_counts(a)
    t.ok(ca2.get("rx_cm_bytes", 0) - ca.get("rx_cm_bytes", 0) >= NBYTES,
         "the stream's bytes arrived over the connection", (ca, ca2))
    xa = a.xstats()
    t.note(f"A's xstats (non-zero): { {k: v for k, v in xa.items() if v} }")
    t.eq([xa.get(k, -1) for k in ("rx_cm_errors", "tx_cm_too_many_segs")], [0, 0],
         "no connection receive errors, no frame over rxe's gather limit")

    qa = a.quit()
    time.sleep(2)
    cb2 = cm_counts(b)
    t.ok(cb2.get("cm_dreq_received", 0) >= 1, "A's stop disconnected (DREQ through rdma_cm): B counted it", cb2)
    qb = b.quit()
    for x, q in (("A", qa), ("B", qb)):
        t.ok(q.get("mbufs_back") == "yes", f"{x}: every mbuf back in its pool after stop and close", q)


def peer_killed():
    a = Bridge("c", "10.82.0.3", 0)
    b = Bridge("d", "10.82.0.4", 1)
    t.ok(a.up() and b.up(), "k: both ports up")
    r = a.run("ping -c 2 -W 10 -s 30000 10.82.0.4")
    if r.returncode != 0:
        r = a.run("ping -c 2 -W 10 -s 30000 10.82.0.4")
    t.ok(r.returncode == 0, "k: A pings B over the connections", r.stdout[-300:])
    flood = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-i", "0.05", "-c", "100", "-s", "30000",
                              "10.82.0.4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    b.p.kill()  # SIGKILL: no DREQ (the kernel's CM may still answer for the dead process's ids)
    b.p.wait()
    flood.communicate(timeout=120)
    end = time.monotonic() + 60
    while time.monotonic() < end and a.xstats().get("cm_conn_errors", 0) + a.xstats().get("cm_dreq_received", 0) < 1:
        time.sleep(1)
    xa = a.xstats()
    t.note(f"k: A after B's death: cm_conn_errors {xa.get('cm_conn_errors')}, cm_dreq_received "
           f"{xa.get('cm_dreq_received')}, tx_cm_packets {xa.get('tx_cm_packets')}")
    t.ok(xa.get("cm_conn_errors", 0) + xa.get("cm_dreq_received", 0) >= 1,
         "k: B killed mid-transfer: A's connection to it ended and was closed (failed, or the kernel "
         "disconnected the dead process's id)", xa)
    qa = a.quit()
    t.ok(qa.get("mbufs_back") == "yes", "k: A: every mbuf back in its pool after its peer died", qa)
    b.quit()


def main():
    subprocess.run(["modprobe", "tun"], check=False)
    try:
        transfer()
        peer_killed()
    except Exception as e:  # noqa: BLE001
        import traceback
        t.ok(False, "connected mode over rxe", traceback.format_exc() or e)
    finally:
        for b in list(running):
            if b.p.poll() is None:
                b.p.kill()
            if b.ns:
                sh(f"ip netns del {b.ns}")
        for b in list(running):
            print("# --- bridge", b.name, "log tail:\n# " + "\n# ".join(b.text()[-3000:].splitlines()))
    t.finish()


if __name__ == "__main__":
    main()
