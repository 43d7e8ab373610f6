# SPDX-License-Identifier: BSD-3-Clause
"""DPDK's multi-process tools on a net_ipoib port: a primary dpdk-testpmd on
hugepages (reserved and mounted here, released after), and secondaries that
attach to its port.

  test_multiprocess.py FABRIC_TOOL PMD          (root; TAP on stdout)

- dpdk-proc-info --stats and --xstats (secondaries) show the primary's counts
  exactly, after exact broadcast traffic both ways;
- a secondary's stats reset (proc-info --stats-reset) resets the primary's;
- dpdk-dumpcap captures what the primary receives and sends into pcapng,
  and tshark reads them with their direction, the sender's MAC (the LID/QPN
  MAC the primary knows it by), broadcast and their length;
- a dumpcap killed (SIGKILL) mid-capture leaves the primary forwarding and
  every mbuf of the primary's pool back once it stops;
The secondaries load the driver by LD_PRELOAD where they take no -d
(dumpcap builds its own EAL arguments); installed, DPDK's plugin directory
does it.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from tap import Tap  # noqa: E402
from fabric_client import Fabric, local_env  # noqa: E402
from testpmd import Testpmd, exact_broadcast  # noqa: E402
from hosts import lidqpn_mac, run_on_fabric, telemetry  # noqa: E402

FABRIC, PMD = (os.path.abspath(a) for a in sys.argv[1:3])
CWD = tempfile.mkdtemp(prefix="mp-test-", dir=os.path.dirname(os.path.dirname(PMD)))
TSHARK_IB = ["-o", 'uat:user_dlts:"User 0 (DLT=147)","infiniband","0","","0",""']
# Debian's dpdk-testpmd links librte_mempool_dpaa, whose constructor then
# registers its mempool ops before the plugin directory's: a secondary must
# register them in the same order, or the index in a shared mempool names
# other ops in the primary (every pdump copy fails). Preloading it does.
MEMPOOL_ORDER = "/usr/lib/x86_64-linux-gnu/librte_mempool_dpaa.so.23"
HUGEPAGES = 384  # 2 MB pages: the primary's 512 MB -m needs 256, the secondaries' pools the rest

t = Tap()
fabric = Fabric(FABRIC, CWD)
running = []


class Hugepages:
    """2 MB hugepages reserved on top of what the machine had, and a hugetlbfs
    mount of our own; both undone by release()."""

    NR = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"

    def __init__(self, pages, where):
        self.dir = os.path.join(where, "hugepages")
        with open(self.NR) as f:
            self.before = int(f.read())
        with open(self.NR, "w") as f:
            f.write(str(self.before + pages))
        with open(self.NR) as f:
            self.got = int(f.read()) - self.before
        os.makedirs(self.dir, exist_ok=True)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", self.dir], check=True)

    def release(self):
        subprocess.run(["umount", self.dir], check=False)
        with open(self.NR, "w") as f:
            f.write(str(self.before))


def secondary_env(*preload):
    """A secondary's environment: the sanitizer runtime first when a sanitized build runs, then preload."""
    env = local_env()
    env["LD_PRELOAD"] = " ".join(x for x in (env.get("LD_PRELOAD", ""), *preload) if x)
    return env


def proc_info(prefix, *args):
    """dpdk-proc-info (a secondary) on the primary of that file prefix: its output and exit status."""
    p = subprocess.run(["dpdk-proc-info", f"--file-prefix={prefix}", "-d", PMD, "--", *args],
                       env=secondary_env(MEMPOOL_ORDER), capture_output=True, text=True, timeout=60, cwd=CWD)
    return p.stdout + p.stderr, p.returncode


def scenario(env):
    huge = Hugepages(HUGEPAGES, CWD)
    try:
        t.ok(huge.got >= HUGEPAGES, f"{HUGEPAGES} hugepages of 2 MB reserved for the test", f"got {huge.got}")
        run_primary(env, huge.dir)
    finally:
        for tp in list(running):
            tp.quit()
            running.remove(tp)
        huge.release()


def run_primary(env, huge_dir):
    # The primary's memory far from where a secondary's libraries land: a secondary maps it at the same
    # addresses. DPDK's default hint lies in ASan's shadow gap, so under the sanitizers the kernel
    # placed it among the libraries, and a secondary now and then could not map it (flaky attach).
    a = Testpmd(env, "Hca1", ["net_ipoib0"], PMD, CWD, prefix=f"mpa{os.getpid()}", huge_dir=huge_dir,
                eal=["--base-virtaddr=0x500000000000"])
    running.append(a)
    b = Testpmd(env, "Hca2", ["net_ipoib0"], PMD, CWD, prefix=f"mpb{os.getpid()}")
    running.append(b)
    t.ok(a.wait_link(0) and b.wait_link(0), "primary (hugepages) and peer: links up")
    exact_broadcast(t, b, a, "peer to primary")
    exact_broadcast(t, a, b, "primary to peer")

    # proc-info: the primary's counts.
    rx, tx = a.stats(0)
    out, rc = proc_info(a.prefix, "--stats")
    m_rx = re.search(r"RX-packets:\s*(\d+)", out)
    m_tx = re.search(r"TX-packets:\s*(\d+)", out)
    t.ok(rc == 0 and m_rx and m_tx and (int(m_rx.group(1)), int(m_tx.group(1))) == (rx, tx),
         f"dpdk-proc-info --stats shows the primary's RX {rx} / TX {tx}", out[-2500:])
    xa = a.xstats(0)
    out, rc = proc_info(a.prefix, "--xstats")
    xs = {k: int(v) for k, v in re.findall(r"^\s*(\w+):\s+(\d+)\s*$", out, re.M)}
    keys = ["rx_good_packets", "tx_good_packets", "rx_q0_packets", "rx_arp_translated", "tx_mcast_unjoined",
            "ctrl_path_queries", "mp_bad_requests"]
    keys = [k for k in keys if k in xa]
    t.ok(rc == 0 and len(keys) >= 4 and all(xs.get(k) == xa[k] for k in keys) and len(xs) == len(xa),
         f"dpdk-proc-info --xstats shows the primary's {len(xa)} xstats ({', '.join(keys)} compared)",
         "\n".join(f"{k}: primary {xa.get(k)} secondary {xs.get(k)}" for k in sorted(set(xa) | set(xs))
                   if xa.get(k) != xs.get(k))[:1500] + f"\nproc-info exit status {rc}:\n" + out[-2500:])
    out, rc = proc_info(a.prefix, "--stats-reset")
    t.eq((rc, a.stats(0)), (0, (0, 0)), "dpdk-proc-info --stats-reset resets the primary's counters")

    # dumpcap: what the primary receives and sends, into pcapng: the primary
    # forwards (io) the peer's 128 broadcast frames back out.
    pcap = os.path.join(CWD, "rxtx.pcapng")
    n = 128
    for tp in (a, b):
        tp("clear port stats all")
    a("set fwd io")
    a("start")
    dc = subprocess.Popen(["dpdk-dumpcap", f"--file-prefix={a.prefix}", "-i", "net_ipoib0", "-w", pcap, "-c",
                           str(2 * n), "-q"], env=secondary_env(MEMPOOL_ORDER, PMD), cwd=CWD,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)  # dumpcap attached and capturing
    b("set fwd rxonly")
    b("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    b("start tx_first 4")  # 128 frames
    try:
        dc_out, _ = dc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        dc.kill()
        dc_out, _ = dc.communicate()
    b("stop")
    a("stop")
    t.eq((b.stats(0), a.stats(0)), ((n, n), (n, n)), f"the primary forwards the peer's {n} frames back (io)")
    t.ok(dc.returncode == 0 and os.path.exists(pcap), f"dpdk-dumpcap -c {2 * n} ends after capturing",
         dc_out[-2000:])
    fields = subprocess.run(["tshark", "-r", pcap, "-T", "fields", "-e", "frame.packet_flags_direction",
                             "-e", "eth.src", "-e", "eth.dst", "-e", "frame.len"],
                            capture_output=True, text=True).stdout.split("\n")
    rows = [f.split("\t") for f in fields if f]
    # The primary knows the peer by nothing but its datagrams: the source MAC is the peer's LID/QPN MAC.
    b_mac = lidqpn_mac(telemetry(b.prefix, "/ipoib/ports")["0"])
    inbound = [r for r in rows if r[0] in ("1", "0x1", "0x00000001")]
    outbound = [r for r in rows if r[0] in ("2", "0x2", "0x00000002")]
    t.eq((len(rows), len(inbound), len(outbound)), (2 * n, n, n),
         f"tshark reads {2 * n} frames from dumpcap's pcapng: {n} received, {n} sent")
    t.ok(rows and all(r[1:] == [b_mac, "ff:ff:ff:ff:ff:ff", "64"] for r in rows),
         f"each 64 bytes from the peer's LID/QPN MAC {b_mac} to broadcast (as the application sees them)",
         str(rows[:3]))

    # A dumpcap killed mid-capture: the primary forwards on; its mbufs all come back.
    pcap2 = os.path.join(CWD, "killed.pcapng")
    dc = subprocess.Popen(["dpdk-dumpcap", f"--file-prefix={a.prefix}", "-i", "net_ipoib0", "-w", pcap2, "-q"],
                          env=secondary_env(MEMPOOL_ORDER, PMD), cwd=CWD, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    time.sleep(3)
    a("clear port stats all")
    b("clear port stats all")
    a("set fwd rxonly")
    a("start")
    b("set fwd rxonly")
    b("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    b("start tx_first 4")
    time.sleep(1)
    dc.send_signal(signal.SIGKILL)
    dc.wait()
    b("stop")
    b("start tx_first 4")
    time.sleep(2)
    b("stop")
    a("stop")
    rx, _ = a.stats(0)
    _, tx = b.stats(0)
    t.eq((tx, rx), (256, 256), "after dumpcap was killed mid-capture the primary still receives every frame")
    a("port stop all")
    ok, detail = a.mbufs_back(pool_prefix="mb_pool")
    t.ok(ok, "every mbuf of the primary's pool back after stop", detail)
    a("port start all")
    t.ok(a.wait_link(0), "the primary's port starts again")


def main():
    if os.geteuid() != 0:
        t.ok(False, "the multi-process test needs root (hugepages, hugetlbfs)")
        t.finish()
    run_on_fabric(t, fabric, "multiprocess", scenario, ["--hcas", "2"], running, [], CWD)


if __name__ == "__main__":
    main()
    t.finish()
