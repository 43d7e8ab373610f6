# SPDX-License-Identifier: BSD-3-Clause
"""What the driver's integration tests with Linux hosts share: addresses of
simulated ports (GUID, GUID-derived MAC, LID/QPN MAC), DPDK telemetry, a TCP
transfer judged by its SHA-256, a tap_bridge process seen from outside, and
one run of a scenario on a fresh fabric with everything it started cleaned
up."""
import json
import os
import re
import shutil
import signal
import subprocess
import time


def sh(cmd, timeout=60):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)


def guid_of(fabric, env, host):
    """Port 1's GUID of a simulated HCA (ibstat)."""
    return re.search(r"Port GUID: (0x[0-9a-f]+)", fabric.diag(env, host, "ibstat")).group(1)


def mac_of(ipoib_addr_tool, guid):
    """The MAC net_ipoib shows for a port GUID (ipoib-addr)."""
    out = subprocess.run([ipoib_addr_tool, "--guid", guid], capture_output=True, text=True).stdout
    return re.search(r"emulated MAC\s+(\S+)", out).group(1)


def lidqpn_mac(port):
    """The MAC a peer is known by without any resolution: 0e:LL:LL:QQ:QQ:QQ (port: telemetry /ipoib/ports)."""
    lid, qpn = int(port["lid"]), int(port["qpn"])
    return "0e:" + ":".join(f"{b:02x}" for b in (lid >> 8, lid & 0xff, qpn >> 16, (qpn >> 8) & 0xff, qpn & 0xff))


def telemetry(prefix, cmd):
    """One telemetry command's answer from the DPDK process of that file prefix ({} if none)."""
    out = subprocess.run(["dpdk-telemetry.py", "-f", prefix], input=cmd + "\n", capture_output=True, text=True,
                         timeout=60).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line).get(cmd.split(",")[0]) or {}
    return {}


# A TCP transfer judged by its content: the receiver prints the bytes it got
# and their SHA-256, the sender what it sent (argv: address, port[, bytes,
# pieces]); pieces > 1 paces the stream over about pieces / 10 seconds.
TCP_RECEIVER = """
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
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
TCP_SENDER = """
import hashlib, random, socket, sys, time
data = random.Random(7).randbytes(int(sys.argv[3]))
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
pieces = int(sys.argv[4])
step = max(1, len(data) // pieces)
for i in range(0, len(data), step):
    s.sendall(data[i:i + step])
    if pieces > 1:
        time.sleep(0.1)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def tcp_transfer(recv_ns, send_ns, ip, port, nbytes, pieces=1, timeout=120):
    """A TCP stream of nbytes from namespace send_ns to TCP_RECEIVER in recv_ns at ip:port:
    (the sender's output, the receiver's, seconds taken); judge it with transfer_intact()."""
    srv = subprocess.Popen(["ip", "netns", "exec", recv_ns, "python3", "-c", TCP_RECEIVER, ip, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    cli = subprocess.Popen(["ip", "netns", "exec", send_ns, "python3", "-c", TCP_SENDER, ip, str(port), str(nbytes),
                            str(pieces)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cli_out, _ = cli.communicate(timeout=timeout)
        srv_out, _ = srv.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        cli.kill()
        srv.kill()
        cli_out, srv_out = cli.communicate()[0], srv.communicate()[0]
    return cli_out, srv_out, time.monotonic() - t0


def transfer_intact(sender_out, receiver_out, nbytes):
    """Both sides printed (length, SHA-256), the same, of nbytes."""
    done = [o.split()[-2:] for o in (sender_out, receiver_out)]
    return all(len(d) == 2 and d[0].isdigit() and re.fullmatch(r"[0-9a-f]{64}", d[1]) for d in done) and \
        done[0] == done[1] and int(done[0][0]) == nbytes


def run_on_fabric(t, fabric, name, scenario, up_args, running, netns, cwd, timeout_s=280):
    """scenario(env) on a fabric brought up with up_args; then every testpmd in
    `running` quit, every namespace in `netns` deleted, the fabric down, and
    cwd removed unless a check failed."""
    import faulthandler
    faulthandler.dump_traceback_later(timeout_s, exit=False)
    env = None
    try:
        env = json.loads(fabric("up", "--format", "json", *up_args, "--owner", str(os.getpid())).stdout)
        t.run(name, scenario, env)
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"{name}: test setup", e)
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
            t.note(f"logs kept in {cwd}")
        else:
            shutil.rmtree(cwd, ignore_errors=True)


class TapBridgeHost:
    """A running tap_bridge (test/integration/pmd/tap_bridge.cpp) as the tests see it: its process
    `p`, its log at `log_path` (open as `log`), its DPDK file prefix `prefix`, its tap's kernel side
    in network namespace `ns`. Subclasses start it and say how it is forgotten (forget())."""

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def port(self):
        return telemetry(self.prefix, "/ipoib/ports").get("0", {})

    def up(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.port().get("link") == "up":
                return True
            time.sleep(0.5)
        return False

    def xstats(self):
        return telemetry(self.prefix, "/ethdev/xstats,0")

    def run(self, cmd, timeout=90):
        return sh(f"ip netns exec {self.ns} {cmd}", timeout=timeout)

    def forget(self):
        """Drop the bookkeeping of the caller (its lists of processes and namespaces)."""

    def quit(self, timeout=30):
        """SIGTERM; the bridge's last line: its counters and whether every mbuf came back ({} if none)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        self.forget()
        line = [x for x in self.text().splitlines() if x.startswith("tap_bridge: to_port")]
        return dict(re.findall(r"(\w+) (\S+)", line[-1].split(":", 1)[1])) if line else {}
