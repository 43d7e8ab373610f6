# SPDX-License-Identifier: BSD-3-Clause
"""What the integration tests share to act on a simulated fabric: running
app/ipoib-fabric, and running a command as a client (umad2sim) of one of its
HCAs."""
import os
import subprocess

UMAD2SIM = "/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so"


def client_env(env, host):
    """Environment of a process attached to `host` of the fabric `env` (ipoib-fabric up's JSON).
    LD_PRELOAD is what the fabric exports (umad2sim, after the umad_send check
    when the fabric was brought up with IPOIB_UMAD_SEND_CHECK), behind the ASan
    runtime when a sanitized build runs: $IPOIB_SANITIZER_PRELOAD (the test
    command's sanitizer stage) or $IPOIB_PEER_PRELOAD (by hand,
    =$(gcc -print-file-name=libasan.so)), which must come first."""
    first = os.environ.get("IPOIB_SANITIZER_PRELOAD") or os.environ.get("IPOIB_PEER_PRELOAD", "")
    preload = " ".join(p for p in (first, env.get("IPOIB_FABRIC_UMAD2SIM", UMAD2SIM)) if p)
    return dict(os.environ, LD_PRELOAD=preload, SIM_HOST=host, IBSIM_SOCKNAME=env["IBSIM_SOCKNAME"])


def local_env():
    """Environment of a process on this machine's own devices (no fabric): the sanitizer runtime
    first in LD_PRELOAD when a sanitized build runs (as client_env)."""
    first = os.environ.get("IPOIB_SANITIZER_PRELOAD") or os.environ.get("IPOIB_PEER_PRELOAD", "")
    return dict(os.environ, LD_PRELOAD=first) if first else dict(os.environ)


class Fabric:
    def __init__(self, tool, cwd):
        self.tool, self.cwd = tool, cwd

    def __call__(self, *args, check=True):
        p = subprocess.run([self.tool, *args], capture_output=True, text=True, timeout=60, cwd=self.cwd)
        if check and p.returncode != 0:
            raise RuntimeError(f"ipoib-fabric {args}: {p.stderr}")
        return p

    def diag(self, env, host, *cmd):
        """Output of an infiniband-diags (or any umad) command run on `host`."""
        return subprocess.run(list(cmd), env=client_env(env, host), cwd=self.cwd, capture_output=True, text=True,
                              timeout=30).stdout
