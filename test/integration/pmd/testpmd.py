# SPDX-License-Identifier: BSD-3-Clause
"""Drive Debian's unmodified dpdk-testpmd (interactive, over a pipe) as a
client of a simulated fabric, with the net_ipoib PMD loaded by -d (or, installed,
from DPDK's plugin directory)."""
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fabric_client import client_env, local_env  # noqa: E402

PROMPT = "testpmd> "
# What other threads print at any moment: testpmd's port events, the driver's log lines.
ASYNC = re.compile(rb"(?:\r?\n)?Port \d+: [a-z ]+ event\r?\n|net_ipoib: [^\r\n]*\r?\n")


def split_async(buf):
    """(buf without the asynchronous lines, those lines)."""
    return ASYNC.sub(b"", buf), ASYNC.findall(buf)


class Testpmd:
    def __init__(self, env, host, vdevs, pmd, cwd, args=(), prefix=None, log_levels=(), eal=(), startup_timeout=30,
                 extra_env=None, netns=None, huge_dir=None):
        self.host = host
        self.prefix = prefix or f"tp{host.lower()}{os.getpid()}"
        # env: a simulated fabric's (ipoib-fabric up); None: this machine's own devices (verbs).
        e = client_env(env, host) if env else local_env()
        e.update(extra_env or {})
        # pmd: the driver's file, loaded with -d; None: the EAL finds it in DPDK's plugin directory (installed).
        # huge_dir: on the hugepages of that hugetlbfs mount (secondary processes can then attach).
        memory = ["--huge-dir", huge_dir] if huge_dir else ["--no-huge"]
        cmd = ["dpdk-testpmd", *memory, "-m", "512", f"--file-prefix={self.prefix}", "--no-pci"] + \
              (["-d", pmd] if pmd else []) + list(eal) + [f"--vdev={v}" for v in vdevs] + [f"--log-level={l}" for l in log_levels] + \
              ["--", "-i", "--total-num-mbufs=16384"] + list(args)
        if netns:  # in that network namespace (ip netns exec)
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.log_path = os.path.join(cwd, f"testpmd-{self.prefix}.log")
        self.log = open(self.log_path, "w")
        # stdout on a pseudo-terminal: testpmd's printf output is then line
        # buffered and arrives before the prompt that follows it.
        master, slave = pty.openpty()
        self.p = subprocess.Popen(cmd, env=e, cwd=cwd, stdin=subprocess.PIPE, stdout=slave, stderr=slave)
        os.close(slave)
        self.out = master
        try:
            self.startup = self._until_prompt(startup_timeout)
        except Exception:
            self.p.kill()  # no prompt: nothing of it may outlive the caller's clean-up
            self.p.wait()
            self._drain()
            self.log.close()
            os.close(self.out)
            raise

    def _until_prompt(self, timeout):
        """The output up to the next prompt. Port events and the driver's log lines come from other
        threads at any time, even in the middle of the prompt: they are taken out of the text (and
        appended after it) before it is looked at. One command gives one prompt: what follows it
        (a port event, libibmad's warnings) is asynchronous, and the command is over once the
        output has been quiet for a moment."""
        buf = b""
        end = time.monotonic() + timeout
        while True:
            body, events = split_async(buf)
            # An event's own line break may land inside the prompt too ("tes\ntpmd> "): ignored.
            if body.endswith(PROMPT.encode()) or re.sub(rb"\r?\n", b"", body[-64:]).endswith(PROMPT.encode()):
                break
            left = end - time.monotonic()
            if left <= 0:
                self.log.write(buf.decode(errors="replace") + "\n### no prompt: the threads' stacks\n" + self.stacks())
                self.log.flush()
                raise RuntimeError(f"testpmd on {self.host}: no prompt within {timeout}s (stacks in "
                                   f"{self.log_path}):\n{buf.decode()[-2000:]}")
            settled = PROMPT.encode() in re.sub(rb"\r?\n", b"", body)
            r, _, _ = select.select([self.out], [], [], min(left, 0.3) if settled else left)
            if not r:
                if settled:
                    break
                continue
            try:
                chunk = os.read(self.out, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise RuntimeError(f"testpmd on {self.host} exited ({self.p.wait()}):\n{buf.decode()[-3000:]}")
            buf += chunk
        self.log.write(buf.decode(errors="replace"))
        self.log.flush()
        return (body + b"\n" + b"".join(events)).decode(errors="replace")

    def __call__(self, line, timeout=30):
        self.log.write(f"\n### {line}\n")
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        return self._until_prompt(timeout)

    def stats(self, port):
        out = self(f"show port stats {port}")
        rx = int(re.search(r"RX-packets:\s+(\d+)", out).group(1))
        tx = int(re.search(r"TX-packets:\s+(\d+)", out).group(1))
        return rx, tx

    def xstats(self, port):
        out = self(f"show port xstats {port}")
        return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)\s*$", out, re.M)}

    def wait_link(self, port, up=True, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self(f"show port info {port}")
            m = re.search(r"Link status:\s+(\w+)", out)
            if m and (m.group(1) == "up") == up:
                return True
            time.sleep(0.2)
        return False

    def workers(self):
        """Its forwarding threads (rte-worker-N): {tid: (ns on a CPU so far, state R/S/T...)}."""
        out = {}
        try:
            for tid in os.listdir(f"/proc/{self.p.pid}/task"):
                with open(f"/proc/{self.p.pid}/task/{tid}/stat") as f:
                    name, rest = f.read().split("(", 1)[1].rsplit(")", 1)
                if name.startswith("rte-worker"):
                    with open(f"/proc/{self.p.pid}/task/{tid}/schedstat") as f:
                        out[tid] = (int(f.read().split()[0]), rest.split()[0])
        except (OSError, IndexError, ValueError):
            pass  # gone meanwhile
        return out

    def stacks(self):
        """Every thread's stack (gdb, if installed): where a testpmd that gives no prompt waits."""
        if not shutil.which("gdb") or self.p.poll() is not None:
            return "(no gdb, or the process is gone)\n"
        r = subprocess.run(["gdb", "-p", str(self.p.pid), "-batch", "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=60)
        return r.stdout[-20000:] + r.stderr[-2000:]

    def link_status(self, port):
        """'up' or 'down' as `show port info` says, now (no waiting)."""
        m = re.search(r"Link status:\s+(\w+)", self(f"show port info {port}"))
        return m.group(1) if m else None

    def mbufs_back(self, pool_prefix=""):
        """(every mbuf in its pool?, detail): `dump_mempool`'s pool sizes against
        what the common pools and the per-lcore caches hold; only the pools whose
        name starts with pool_prefix (a secondary's pools show in a primary's dump)."""
        out = "".join(part for part in self("dump_mempool").split("mempool <")
                      if part.startswith(pool_prefix))
        sizes = [int(x) for x in re.findall(r"\bsize=(\d+)", out)]
        held = sum(int(c) for c in re.findall(r"common_pool_count=(\d+)", out)) + \
            sum(int(c) for c in re.findall(r"cache_count\[\d+\]=(\d+)", out))
        return bool(sizes) and held == sum(sizes), f"pool sizes {sizes}, in the pools {held}"

    def _drain(self):
        """What the process wrote after its last prompt (its exit messages), into the log."""
        while True:
            r, _, _ = select.select([self.out], [], [], 0.2)
            if not r:
                return
            try:
                chunk = os.read(self.out, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.log.write(chunk.decode(errors="replace"))

    def quit(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b"quit\n")
                self.p.stdin.flush()
                self.p.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()
        self._drain()
        self.log.close()
        try:
            os.close(self.out)
        except OSError:
            pass
        return self.p.returncode


def kill_all(tps):
    """Kill every testpmd of tps still running, and reap it (a test's clean-up, also after a failure)."""
    for tp in tps:
        if tp.p.poll() is None:
            tp.p.kill()
            tp.p.wait()


def exact_broadcast(t, sender, receiver, what, n=4, timeout=20):
    """sender sends n bursts of 32 broadcast frames (start tx_first n), receiver counts them: TAP
    check (t) that exactly 32n were sent and 32n received."""
    for tp in (sender, receiver):
        tp("clear port stats all")
    receiver("set fwd rxonly")
    receiver("start")
    sender("set fwd rxonly")
    sender("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    sender(f"start tx_first {n}")
    end = time.monotonic() + timeout
    rx = 0
    while time.monotonic() < end and rx < 32 * n:
        time.sleep(0.3)
        rx, _ = receiver.stats(0)
    sender("stop")
    receiver("stop")
    _, tx = sender.stats(0)
    rx, _ = receiver.stats(0)
    t.eq((tx, rx), (32 * n, 32 * n), f"{what}: {32 * n} broadcast frames sent, {32 * n} received")


def macswap_pingpong(a, b, seconds):
    """A macswap ping-pong of port 0 between a and b (a starts with one burst to broadcast; the
    replies are unicast to the learned sender), then a drains what b sent last. Returns
    ((a_rx, a_tx), (b_rx, b_tx)) and both xstats."""
    for tp in (a, b):
        tp("clear port stats all")
        tp("clear port xstats all")
    b("set fwd macswap")
    b("start")
    a("set fwd macswap")
    a("set eth-peer 0 ff:ff:ff:ff:ff:ff")
    a("start tx_first")
    time.sleep(seconds)
    a("stop")
    time.sleep(1)
    b("stop")
    a("set fwd rxonly")  # b's last replies wait in a's receive queue: drain them
    a("start")
    time.sleep(1)
    a("stop")
    return (a.stats(0), b.stats(0)), (a.xstats(0), b.xstats(0))
