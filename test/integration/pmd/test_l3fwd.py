#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""DPDK's unmodified l3fwd (Debian's dpdk-doc sources, built with their own
Makefile by buildtools/build-dpdk-examples.sh) forwards between two net_ipoib
ports, on ports 1 and 2 of one simulated HCA; Debian's dpdk-testpmd on two
other HCAs sends (txonly) and counts (rxonly). Once with LPM, once with EM
lookup, each without --parse-ptype (the driver's packet types must do), one
direction each: the next hop is the receiver's GUID-derived MAC (a static
neighbour, l3fwd sends no ARP) or its LID/QPN MAC (no configuration at all).

usage: test_l3fwd.py FABRIC_TOOL PMD_SO BUILD_EXAMPLES_SCRIPT EXAMPLES_DIR
"""
import faulthandler
import ipaddress
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric, client_env  # noqa: E402
from testpmd import Testpmd  # noqa: E402

FABRIC, PMD, BUILD_EXAMPLES, EXAMPLES = (os.path.abspath(a) for a in sys.argv[1:5])
t = Tap()
# EAL refuses -d libraries under a world-writable directory, and umad2sim
# writes ./sys-<pid>: a private working directory beside the build tree.
CWD = tempfile.mkdtemp(prefix="l3fwd-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []

BCAST_MGID = "ff12:401b:ffff::ffff:ffff"
# What ethdev says when an application asks for offloads the driver does not
# offer (per port, per queue): l3fwd failed on these before the driver had
# RX TCP/UDP checksum offloads and per-queue capabilities.
OFFLOAD_ERRORS = ("doesn't match Rx offloads capabilities", "per-queue offload capabilities",
                  "doesn't match Tx offloads capabilities")
TRAFFIC_S = 2.0


class L3fwd:
    """l3fwd in the background, its output on a pseudo-terminal (line buffered,
    in order) collected by a thread into a log file and a buffer."""

    def __init__(self, binary, env, host, name, vdevs, app_args, mem_mb=512, lcores="0"):
        self.prefix = f"l3{name}{os.getpid()}"
        self.cmd = [binary, "--no-huge", "-m", str(mem_mb), "--no-pci", f"--file-prefix={self.prefix}", "-l", lcores,
                    "-d", PMD] + [f"--vdev={v}" for v in vdevs] + ["--"] + list(app_args)
        self.log = open(os.path.join(CWD, f"l3fwd-{name}.log"), "w")
        self.log.write(" ".join(self.cmd) + "\n")
        self.buf = ""
        self.lock = threading.Lock()
        master, slave = pty.openpty()
        self.p = subprocess.Popen(self.cmd, env=client_env(env, host), cwd=CWD, stdin=subprocess.DEVNULL,
                                  stdout=slave, stderr=slave)
        os.close(slave)
        self.reader = threading.Thread(target=self._read, args=(master,), daemon=True)
        self.reader.start()

    def _read(self, fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the process is gone
                chunk = b""
            if not chunk:
                break
            text = chunk.decode(errors="replace").replace("\r\n", "\n")
            with self.lock:
                self.buf += text
            self.log.write(text)
            self.log.flush()
        os.close(fd)

    def text(self):
        with self.lock:
            return self.buf

    def wait_for(self, pattern, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.text()):
                return True
            if self.p.poll() is not None:
                self.reader.join(5)
                return re.search(pattern, self.text()) is not None
            time.sleep(0.1)
        return False

    def interrupt(self, timeout=60):
        """SIGINT, as a user's Ctrl-C; the exit status (None: still running after timeout)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.reader.join(10)
        return self.p.returncode

    def stacks(self):
        """What a stuck process is doing (gdb, when installed), for the failure report."""
        if self.p.poll() is not None or not shutil.which("gdb"):
            return ""
        r = subprocess.run(["gdb", "-p", str(self.p.pid), "-batch", "-ex", "thread apply all bt 20"],
                           capture_output=True, text=True, timeout=120)
        return "\n".join(line for line in r.stdout.splitlines() if line.startswith(("#", "Thread")))

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.reader.join(5)
        if not self.log.closed:
            self.log.close()


def fabric_clients(env):
    """ibsim's attached clients (its console's Attached), for failure reports."""
    d = env["IPOIB_FABRIC_DIR"]
    before = len(open(os.path.join(d, "ibsim.log"), errors="replace").read())
    fd = os.open(os.path.join(d, "ibsim.console"), os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"Attached\n")
    os.close(fd)
    time.sleep(1)
    return open(os.path.join(d, "ibsim.log"), errors="replace").read()[before:]


def telemetry(prefix, *cmds):
    """Answers of one dpdk-telemetry.py session: {command: data}."""
    out = subprocess.run(["dpdk-telemetry.py", "-f", prefix], input="".join(c + "\n" for c in cmds),
                         capture_output=True, text=True, timeout=60).stdout
    replies = {}
    for line in out.splitlines():
        if line.startswith("{"):
            replies.update(json.loads(line))
    return replies


def ports_up(prefix, ports, timeout=60):
    """/ipoib/ports of `prefix` once every port in `ports` shows link up (None if not within timeout)."""
    end = time.monotonic() + timeout
    while True:
        p = telemetry(prefix, "/ipoib/ports").get("/ipoib/ports") or {}
        if all(p.get(str(i), {}).get("link") == "up" for i in ports):
            return p
        if time.monotonic() > end:
            t.note(f"{prefix}: ports not up: {p}")
            return None
        time.sleep(0.3)


def lidqpn_mac(port):
    """The MAC a peer is known by without any resolution: 0e:LL:LL:QQ:QQ:QQ."""
    lid, qpn = int(port["lid"]), int(port["qpn"])
    return "0e:" + ":".join(f"{b:02x}" for b in (lid >> 8, lid & 0xff, qpn >> 16, (qpn >> 8) & 0xff, qpn & 0xff))


def gid_of(port):
    """The GID in a port's 20-byte address (telemetry "hwaddr": QPN word, then the GID)."""
    raw = bytes(int(x, 16) for x in port["hwaddr"].split(":"))
    return str(ipaddress.IPv6Address(raw[4:20]))


def member(env, gid):
    out = fabric.diag(env, "Hca3", "saquery", "--smkey", "1", "MCMR", "--mgid", BCAST_MGID, "--gid", gid)
    return re.search(r"PortGid\.+(\S+)", out) is not None and gid in out


def l3fwd_stats(prefix, ports):
    cmds = [f"/ethdev/{k},{i}" for i in ports for k in ("stats", "xstats")]
    out = subprocess.run(["dpdk-telemetry.py", "-f", prefix], input="".join(c + "\n" for c in cmds),
                         capture_output=True, text=True, timeout=60).stdout
    # Each answer is one line, in the order asked; the keys do not carry the port.
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    res = {}
    for cmd, ans in zip(cmds, answers):
        kind, port = cmd.split("/")[2].split(",")
        res.setdefault(int(port), {}).update(ans.get(f"/ethdev/{kind}") or {})
    return res


def until(read, done, timeout=60):
    """Poll read() until done(value) holds for two reads in a row with the same value; the last value."""
    end = time.monotonic() + timeout
    last = read()
    while time.monotonic() < end:
        time.sleep(0.3)
        now = read()
        if now == last and done(now):
            break
        last = now
    return last


def forward(env, binary, name, lookup, sender, receiver, in_port, out_port, next_hop, neigh_for_out, queues=1):
    """One l3fwd run: sender -> l3fwd port in_port -> out_port -> receiver. queues > 1: that many
    lcores, each with an RX queue of each port (spread by RSS) and a TX queue of each."""
    vdevs = ["net_ipoib0,port=1", "net_ipoib1,port=2"]
    if neigh_for_out:
        vdevs[out_port] += f",neigh={neigh_for_out}"
    config = ",".join(f"({port},{q},{q})" for port in (0, 1) for q in range(queues))
    args = ["-p", "0x3", "-P", f"--config={config}", f"--eth-dest={out_port},{next_hop}", f"--lookup={lookup}"]
    # EM mode's two hash tables (4 Mi entries each, l3fwd.h) do not fit in 512 MB beside the mbufs.
    l3 = L3fwd(binary, env, "Hca1", name, vdevs, args, mem_mb=512 if lookup == "lpm" else 1024,
               lcores=",".join(str(q) for q in range(queues)))
    running.append(l3)
    t0 = time.monotonic()
    started = all(l3.wait_for(rf"L3FWD:\s+entering main loop on lcore {q}", 90) for q in range(queues))
    out = l3.text()
    t.note(f"{name}: l3fwd in its main loop after {time.monotonic() - t0:.1f} s")
    shape = "one lcore, one queue each" if queues == 1 else f"{queues} lcores, {queues} RX and TX queues each"
    if not t.ok(started, f"{name}: l3fwd starts on two net_ipoib ports ({shape})",
                " ".join(l3.cmd) + "\n" + out[-3000:] +
                ("" if started else f"\nibsim clients:\n{fabric_clients(env)}\nl3fwd's threads:\n{l3.stacks()}")):
        l3.kill()
        return
    bad = [e for e in OFFLOAD_ERRORS if e in out]
    t.ok(not bad, f"{name}: no offload refused at configure or queue setup (port or per-queue capabilities)",
         "\n".join(line for line in out.splitlines() if any(e in line for e in OFFLOAD_ERRORS)))
    t.ok("cannot parse" not in out and "ptype check fails" not in out,
         f"{name}: without --parse-ptype, the driver's packet types satisfy l3fwd's {lookup} check",
         [line for line in out.splitlines() if "cannot parse" in line])
    route = (r"LPM: Adding route 198\.18\.1\.0 / 24 \(1\) \[net_ipoib1\]" if lookup == "lpm" else
             r"EM: Adding route 198\.18\.0\.0, 198\.18\.0\.1, 9, 9, 17 \(0\) \[net_ipoib0\]")
    t.ok(re.search(route, out), f"{name}: l3fwd's default {lookup} table names the net_ipoib ports", out[-2000:])
    t0 = time.monotonic()
    ports = ports_up(l3.prefix, (0, 1))
    t.note(f"{name}: telemetry shows both ports up after {time.monotonic() - t0:.1f} s")
    t.ok(ports and all(ports[str(i)]["hca_port"] == i + 1 for i in (0, 1)),
         f"{name}: both l3fwd ports up, on HCA ports 1 and 2", ports)
    if not ports:
        l3.kill()
        return
    gids = [gid_of(ports[str(i)]) for i in (0, 1)]

    for tp in (sender, receiver):
        tp("clear port stats all")
        tp("clear port xstats all")
    receiver("set fwd rxonly")
    receiver("start")
    sender("set fwd txonly")
    sender(f"set eth-peer 0 {lidqpn_mac(ports[str(in_port)])}")
    sender("set txpkts 128")
    sender("start")
    time.sleep(TRAFFIC_S)  # traffic for a while; everything after is counted, not timed
    sender("stop")

    # Counted once everything in flight arrived: whatever reached l3fwd was
    # received or dropped (no buffer), and whatever it sent likewise at the receiver.
    def snapshot():
        ls = l3fwd_stats(l3.prefix, (0, 1))
        li, lo = ls.get(in_port, {}), ls.get(out_port, {})
        return dict(s_tx=sender.stats(0)[1], s_unres=sender.xstats(0).get("tx_unresolved_drops", -1),
                    i_rx=li.get("ipackets", -1), i_drop=li.get("hca_drop_no_buffer", -1), i_tx=li.get("opackets", -1),
                    o_tx=lo.get("opackets", -1), o_err=lo.get("oerrors", -1),
                    o_unres=lo.get("tx_unresolved_drops", -1), o_queued=lo.get("tx_unresolved_queued", -1),
                    r_rx=receiver.stats(0)[0], r_drop=receiver.xstats(0).get("hca_drop_no_buffer", -1))

    n = until(snapshot, lambda n: n["i_rx"] + n["i_drop"] == n["s_tx"] and n["r_rx"] + n["r_drop"] == n["o_tx"])
    receiver("stop")
    s_tx, i_rx, i_drop, i_tx, o_tx, o_err, r_rx, r_drop = (n[k] for k in (
        "s_tx", "i_rx", "i_drop", "i_tx", "o_tx", "o_err", "r_rx", "r_drop"))
    t.note(f"{name}: sender tx {s_tx} (+ unresolved drops {n['s_unres']}); l3fwd port {in_port} rx {i_rx} "
           f"+ no-buffer drops {i_drop}; port {out_port} tx {o_tx}, oerrors {o_err} (unresolved drops "
           f"{n['o_unres']}, held {n['o_queued']}), refused by tx_burst (freed by l3fwd) {i_rx - o_tx - o_err}; "
           f"receiver rx {r_rx} + no-buffer drops {r_drop}")
    t.ok(r_rx > 1000, f"{name}: l3fwd ({lookup}) forwards the sender's UDP frames to the receiver", r_rx)
    t.eq(i_rx + i_drop, s_tx, f"{name}: every frame sent reached l3fwd's port {in_port} or is counted as dropped")
    t.eq(i_tx, 0, f"{name}: the {lookup} lookup sends every frame out of the other port (none back out port {in_port})")
    t.ok(o_tx > 0 and o_tx + o_err <= i_rx,
         f"{name}: l3fwd's port {out_port} sends (or counts as dropped) at most what port {in_port} received",
         (o_tx, o_err, i_rx))
    t.eq(r_rx + r_drop, o_tx, f"{name}: every frame l3fwd sent reached the receiver or is counted as dropped")
    if queues > 1:
        ls = l3fwd_stats(l3.prefix, (0, 1))
        qin = ls.get(in_port, {}).get("q_ipackets", [])[:queues]
        qout = ls.get(out_port, {}).get("q_opackets", [])[:queues]
        t.note(f"{name}: port {in_port} RX per queue {qin}; port {out_port} TX per queue {qout}")
        t.ok(len(qin) == queues and all(n > 0 for n in qin),
             f"{name}: RSS spreads the sender's flows over all {queues} RX queues of port {in_port} (per-queue stats)",
             qin)
        t.ok(len(qout) == queues and all(n > 0 for n in qout),
             f"{name}: every lcore sends on its own TX queue of port {out_port} (per-queue stats)", qout)

    t0 = time.monotonic()
    st = l3.interrupt()
    out = l3.text()
    t.note(f"{name}: l3fwd exited {time.monotonic() - t0:.1f} s after SIGINT")
    t.eq(st, 0, f"{name}: l3fwd exits with status 0 on SIGINT")
    closed = [i for i in (0, 1) if re.search(rf"Closing port {i}\.\.\.\s*Done", out)]
    t.ok(closed == [0, 1] and "Bye..." in out, f"{name}: l3fwd stops and closes both ports, then cleans up EAL",
         out[-1500:])
    end = time.monotonic() + 20
    while True:
        left = [g for g in gids if member(env, g)]
        if not left or time.monotonic() > end:
            break
        time.sleep(0.5)
    t.eq(left, [], f"{name}: closed ports left the broadcast group (the SA lists neither)")
    l3.kill()
    running.remove(l3)


def thread_cpu_s(pid, tid):
    """CPU seconds (user + system) a thread has used so far."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def power(env, binary, sender, receiver, receiver_port):
    """Debian's l3fwd-power in interrupt mode: its lcore sleeps while idle (RX
    interrupts from the software HCA), wakes on traffic and forwards it."""
    # l3fwd-power sends to 02:00:00:00:00:<port>: that MAC is the receiver's static neighbour.
    vdevs = ["net_ipoib0,port=1", f"net_ipoib1,port=2,neigh=02:00:00:00:00:01/{receiver_port['hwaddr']}"]
    args = ["-p", "0x3", "-P", "--config=(0,0,0),(1,0,0)", "--interrupt-only"]
    l3 = L3fwd(binary, env, "Hca1", "power", vdevs, args)
    running.append(l3)
    started = l3.wait_for(r"interrupt-only mode is enabled", 30) and \
        l3.wait_for(r"entering main interrupt loop on lcore 0", 90)
    out = l3.text()
    if not t.ok(started, "l3fwd-power starts in interrupt-only mode on two net_ipoib ports",
                " ".join(l3.cmd) + "\n" + out[-3000:]):
        l3.kill()
        return
    t.ok(not re.search(r"(?i)(intr|interrupt).*(fail|error|not supported)", out),
         "its RX queues' interrupts are registered (no failure logged)", out[-1500:])
    ports = ports_up(l3.prefix, (0, 1))
    t.ok(ports is not None, "l3fwd-power: both ports up", ports)
    if not ports:
        l3.kill()
        return
    pid = l3.p.pid  # -l 0: the main thread is the forwarding lcore

    def idle_share(seconds):
        c0, t0 = thread_cpu_s(pid, pid), time.monotonic()
        time.sleep(seconds)
        return (thread_cpu_s(pid, pid) - c0) / (time.monotonic() - t0)

    idle = idle_share(3.0)
    t.note(f"l3fwd-power's lcore while idle: {idle * 100:.1f}% of a CPU")
    t.ok(idle < 0.10, "idle: the lcore sleeps (well under 10% of a CPU)", f"{idle * 100:.1f}%")

    for tp in (sender, receiver):
        tp("clear port stats all")
    receiver("set fwd rxonly")
    receiver("start")
    sender("set fwd txonly")
    sender(f"set eth-peer 0 {lidqpn_mac(ports['0'])}")
    sender("set txpkts 128")
    before = l3.text().count("waked up from rx interrupt")
    sender("start")
    time.sleep(TRAFFIC_S)
    sender("stop")
    time.sleep(1.0)
    receiver("stop")
    r_rx = receiver.stats(0)[0]
    woken = l3.text().count("waked up from rx interrupt") - before
    t.note(f"l3fwd-power: woken {woken} times by RX interrupts; the receiver got {r_rx} frames")
    t.ok(woken > 0, "traffic wakes l3fwd-power's lcore by an RX interrupt (its log says so)")
    t.ok(r_rx > 1000, "l3fwd-power forwards the sender's frames to the receiver", r_rx)
    after = idle_share(3.0)
    t.note(f"l3fwd-power's lcore idle again: {after * 100:.1f}% of a CPU")
    t.ok(after < 0.10, "after the traffic the lcore sleeps again", f"{after * 100:.1f}%")
    st = l3.interrupt()
    t.eq(st, 0, "l3fwd-power exits with status 0 on SIGINT")
    l3.kill()
    running.remove(l3)


def main():
    # Where it is if it ever hangs: every thread's stack, before meson's 300 s end the run.
    faulthandler.dump_traceback_later(270, exit=False)
    env = None
    keep = False
    try:
        r = subprocess.run([BUILD_EXAMPLES, EXAMPLES, "l3fwd"], capture_output=True, text=True, timeout=240)
        binary = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
        if not t.ok(binary and os.access(binary, os.X_OK), "Debian's l3fwd example builds unmodified",
                    r.stdout + r.stderr):
            return
        env = json.loads(fabric("up", "--format", "json", "--hcas", "3", "--ports", "2",
                                "--owner", str(os.getpid())).stdout)
        # B (Hca2) sends to 198.18.1.0 and C (Hca3) to 198.18.0.0, from x.x.x.1, UDP 9 -> 9: the
        # destinations of l3fwd's default LPM routes and EM keys for its ports 1 and 0.
        # B's flows differ in their source address (txonly-multi-flow): RSS spreads them.
        b = Testpmd(env, "Hca2", ["net_ipoib0"], PMD, CWD, args=["--tx-ip=198.18.1.1,198.18.1.0", "--txonly-multi-flow"],
                    startup_timeout=90)
        running.append(b)
        c = Testpmd(env, "Hca3", ["net_ipoib0"], PMD, CWD, args=["--tx-ip=198.18.0.1,198.18.0.0"], startup_timeout=90)
        running.append(c)
        bp, cp = ports_up(b.prefix, (0,)), ports_up(c.prefix, (0,))
        if not t.ok(bp and cp, "the peers' testpmds are up on Hca2 and Hca3"):
            return
        bp, cp = bp["0"], cp["0"]
        # LPM, B -> l3fwd 0 -> 1 -> C; next hop: C's GUID-derived MAC, a static neighbour of l3fwd's port 1.
        t.run("lpm", forward, env, binary, "lpm", "lpm", b, c, 0, 1, cp["mac"], f"{cp['mac']}/{cp['hwaddr']}")
        # EM, C -> l3fwd 1 -> 0 -> B; next hop: B's LID/QPN MAC, nothing configured.
        t.run("em", forward, env, binary, "em", "em", c, b, 1, 0, lidqpn_mac(bp), None)
        # LPM on two lcores, two RX queues per port spread by RSS, a TX queue per lcore.
        t.run("lpm-2q", forward, env, binary, "lpm-2q", "lpm", b, c, 0, 1, cp["mac"], f"{cp['mac']}/{cp['hwaddr']}", 2)
        # l3fwd-power in interrupt mode: B -> port 0 -> route 2.1.1.0/24 -> port 1 -> C.
        r = subprocess.run([BUILD_EXAMPLES, EXAMPLES, "l3fwd-power"], capture_output=True, text=True, timeout=240)
        power_bin = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
        if t.ok(power_bin and os.access(power_bin, os.X_OK), "Debian's l3fwd-power example builds unmodified",
                r.stdout + r.stderr):
            # A sender toward l3fwd-power's routes (1.1.1.0/24 -> port 0, 2.1.1.0/24 -> port 1).
            b.quit()
            running.remove(b)
            d = Testpmd(env, "Hca2", ["net_ipoib0"], PMD, CWD, args=["--tx-ip=1.1.1.1,2.1.1.1"],
                        prefix=f"tpw{os.getpid()}", startup_timeout=90)
            running.append(d)
            if t.ok(ports_up(d.prefix, (0,)), "the sender toward l3fwd-power's routes is up on Hca2"):
                t.run("power", power, env, power_bin, d, c, cp)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "l3fwd test setup", e)
    finally:
        for p in running:
            try:
                if isinstance(p, L3fwd):
                    p.kill()
                else:
                    p.quit()
            except Exception:  # noqa: BLE001
                p.p.kill()
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
        keep = t.failed > 0
        if keep:
            t.note(f"logs kept in {CWD}")
        else:
            shutil.rmtree(CWD, ignore_errors=True)


if __name__ == "__main__":
    main()
    t.finish()
