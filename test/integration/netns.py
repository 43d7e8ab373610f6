# SPDX-License-Identifier: BSD-3-Clause
"""Two network namespaces joined by a veth pair (the xdp provider's tests):
made with iproute2, removed by remove(). Needs root."""
import os
import subprocess
import time


class VethPair:
    """Namespaces names[0] and names[1], devices devs[0] (in the first) and devs[1], with
    10.77.0.1/24 and 10.77.0.2/24, up, their carrier on; `queues` receive and send queues each
    (a packet sent on queue q arrives on the peer's queue q)."""

    def __init__(self, tag=None, mtu=1500, queues=1):
        tag = tag or f"{os.getpid() % 100000}"
        self.names = [f"ipoibA{tag}", f"ipoibB{tag}"]
        self.devs = [f"xa{tag}", f"xb{tag}"]
        self.ips = ["10.77.0.1", "10.77.0.2"]
        for n in self.names:
            subprocess.run(["ip", "netns", "add", n], check=True)
        q = ["numtxqueues", str(queues), "numrxqueues", str(queues)]
        subprocess.run(["ip", "link", "add", self.devs[0], "netns", self.names[0], *q, "type", "veth", "peer", "name",
                        self.devs[1], "netns", self.names[1], *q], check=True)
        for n, d, ip in zip(self.names, self.devs, self.ips):
            subprocess.run(["ip", "-n", n, "link", "set", d, "mtu", str(mtu)], check=True)
            subprocess.run(["ip", "-n", n, "addr", "add", f"{ip}/24", "dev", d], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", d, "up"], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        self.wait_carrier()

    def wait_carrier(self, timeout=5):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all("LOWER_UP" in subprocess.run(["ip", "-n", n, "link", "show", d], capture_output=True,
                                                 text=True).stdout for n, d in zip(self.names, self.devs)):
                return True
            time.sleep(0.05)
        return False

    def ns(self, i, *cmd, **kw):
        """Run cmd in namespace i."""
        return subprocess.run(["ip", "netns", "exec", self.names[i], *cmd], **kw)

    def remove(self):
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], check=False)
