# SPDX-License-Identifier: BSD-3-Clause
"""Drive one hca-peer process (test/integration/hca_peer.cpp): one command
line in, one JSON answer out."""
import json
import select
import subprocess


class HcaPeer:
    def __init__(self, name, argv, env, cwd, hello_timeout=20):
        self.name = name
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)
        self.hello = self.read(hello_timeout)

    def read(self, timeout=10):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            raise RuntimeError(f"{self.name}: no answer within {timeout}s")
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: exited ({self.p.poll()}): {self.p.stderr.read()}")
        return json.loads(line)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def __call__(self, line, timeout=30):
        self.send(line)
        reply = self.read(timeout)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {line}: {reply['error']}")
        return reply

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class DeviceView:
    """One device of a multi-device hca-peer process: the HcaPeer interface,
    with every command addressed to this device (@NAME)."""

    def __init__(self, proc, name, hello):
        self.proc, self.name, self.hello, self.p = proc, name, hello, proc.p

    def read(self, timeout=10):
        return self.proc.read(timeout)

    def send(self, line):
        self.proc.send(f"@{self.name} {line}")

    def __call__(self, line, timeout=30):
        return self.proc(f"@{self.name} {line}", timeout)

    def kill(self):
        self.proc.kill()


def shared_peers(argv, names, env, cwd, hello_timeout=20):
    """Several devices in one hca-peer process (argv + "DEV1,DEV2,..."), for
    providers whose devices reach each other only within a process (inproc).
    Returns the process (an HcaPeer) and one DeviceView per name."""
    proc = HcaPeer("+".join(names), argv + [",".join(names)], env, cwd, hello_timeout)
    hellos = proc.hello.get("devices", [proc.hello] * len(names))  # an error: every device has it
    return proc, [DeviceView(proc, n, h) for n, h in zip(names, hellos)]
