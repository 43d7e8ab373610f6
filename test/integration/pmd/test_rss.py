#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Receive-side scaling on net_ipoib, judged from Debian's dpdk-testpmd:
the port offers several queues, RSS flow types, a 128-entry redirection
table and a 40-byte key; the software HCA spreads a sender's flows over the
RX queues by the Toeplitz hash of their addresses and ports; the hash testpmd
shows for each packet is the one this script computes itself (its own
Toeplitz, over the flows the sender can have sent) under the default key and
under a key set with `port config ... rss-hash-key`; the queue is the
redirection table's entry for it, also after `port config ... rss reta`; and
a port on an HCA without RSS (devarg max_queues=1) refuses two RX queues
with a message.

usage: test_rss.py FABRIC_TOOL PMD_SO
"""
import ipaddress
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from tap import Tap  # noqa: E402
from fabric_client import Fabric  # noqa: E402
from testpmd import Testpmd  # noqa: E402
from hosts import lidqpn_mac, run_on_fabric, telemetry  # noqa: E402

FABRIC, PMD = (os.path.abspath(a) for a in sys.argv[1:3])
t = Tap()
CWD = tempfile.mkdtemp(prefix="rss-test-", dir=os.path.dirname(os.path.dirname(PMD)))
fabric = Fabric(FABRIC, CWD)
running = []

MS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
OTHER_KEY = bytes(range(1, 41))
DST = "198.18.0.2"
UDP_PORT = 9  # testpmd txonly's source and destination port


def toeplitz(key, data):
    """Toeplitz hash (the RSS specification's definition), written here independently of the driver's."""
    k = int.from_bytes(key, "big")
    klen = len(key) * 8
    h = 0
    for i, byte in enumerate(data):
        for b in range(8):
            if byte & (0x80 >> b):
                pos = i * 8 + b
                h ^= (k >> (klen - 32 - pos)) & 0xffffffff
    return h


def udp_hashes(key, dst=DST):
    """Hash -> source address, for every UDP 9 -> 9 flow from 198.18.0.0/16 to dst."""
    d = ipaddress.IPv4Address(dst).packed
    ports = UDP_PORT.to_bytes(2, "big") * 2
    out = {}
    for n in range(1 << 16):
        src = bytes((198, 18, n >> 8, n & 0xff))
        out[toeplitz(key, src + d + ports)] = src
    return out


def verbose_packets(out):
    """(RSS hash, RSS queue, receive queue) of each packet testpmd's verbose rxonly printed."""
    res = []
    for m in re.finditer(r"RSS hash=0x([0-9a-f]+) - RSS queue=0x([0-9a-f]+).*?Receive queue=0x([0-9a-f]+)",
                         out, re.S):
        res.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)))
    return res


def port_of(tp):
    """testpmd's port 0 as its telemetry /ipoib/ports shows it."""
    return telemetry(tp.prefix, "/ipoib/ports").get("0")


def burst(sender, receiver, n_bursts=2):
    """The sender sends n_bursts txonly bursts of 32 (many flows); what the receiver printed."""
    receiver("start")
    sender(f"start tx_first {n_bursts}")
    time.sleep(1.5)
    sender("stop")
    return receiver("stop", timeout=60)


def check_hashes(name, pkts, hashes, nq, reta=None):
    """Every packet's hash is a flow's under the key, and its queue the table's entry for it."""
    t.ok(len(pkts) >= 32, f"{name}: the receiver printed the packets it got ({len(pkts)})")
    unknown = [h for h, _, _ in pkts if h not in hashes]
    t.ok(not unknown, f"{name}: every hash is the Toeplitz hash of a flow the sender had (UDP 9 -> 9 to {DST})",
         [hex(h) for h in unknown[:8]])
    want = (lambda h: reta[h % 128]) if reta else (lambda h: (h % 128) % nq)
    wrong = [(hex(h), q, rq) for h, q, rq in pkts if q != want(h) or rq != q]
    t.ok(not wrong, f"{name}: each packet arrived on the queue the redirection table names for its hash", wrong[:8])
    return {q for _, q, _ in pkts}


def set_reta(tp, queues):
    out = ""
    for lo in range(0, len(queues), 12):  # the list is one 128-byte token
        out += tp("port config 0 rss reta " + ",".join(f"({i},{queues[i]})" for i in range(lo, min(lo + 12, len(queues)))))
    return out


def rss_scenarios(env):
    a = Testpmd(env, "Hca1", ["net_ipoib0"], PMD, CWD, args=["--rxq=2", "--txq=2", "--rss-udp"],
                startup_timeout=90)
    running.append(a)
    a.wait_link(0, timeout=60)
    pa = port_of(a)
    # testpmd's flowgen engine sends to 00:01:02:03:04:01, whatever eth-peer says: B knows it as A.
    b = Testpmd(env, "Hca2", [f"net_ipoib0,neigh=00:01:02:03:04:01/{pa['hwaddr']}" if pa else "net_ipoib0"], PMD,
                CWD, args=["--txonly-multi-flow", f"--tx-ip=198.18.0.1,{DST}"], startup_timeout=90)
    running.append(b)
    if not t.ok(pa and a.wait_link(0, timeout=60) and b.wait_link(0, timeout=60), "both testpmds' ports are up"):
        return
    info = a("show port info 0")
    t.ok(re.search(r"Max possible RX queues:\s+16", info) and re.search(r"Max possible TX queues:\s+16", info),
         "dev_info: 16 RX and 16 TX queues (the software HCA's receive queues per QP, devarg max_queues)", info)
    t.ok(re.search(r"Redirection table size:\s+128", info) and re.search(r"Hash key size in bytes:\s+40", info),
         "dev_info: a 128-entry redirection table and a 40-byte hash key", info)
    flows = re.search(r"Supported RSS offload flow types:\r?\n((?:[ \t]+[^\n]*\n)+)", info)
    types = set(flows.group(1).split()) if flows else set()
    t.ok({"ipv4", "ipv4-tcp", "ipv4-udp", "ipv6", "ipv6-tcp", "ipv6-udp"} <= types,
         "dev_info: the RSS flow types are IPv4 and IPv6, with TCP and UDP ports", types)
    t.ok(re.search(r"Current number of RX queues:\s+2", info) and re.search(r"Current number of TX queues:\s+2", info),
         "testpmd configured two RX and two TX queues", info)
    key = a("show port 0 rss-hash key")
    t.ok(MS_KEY.hex().upper() in key.upper().replace(" ", ""),
         "the default key is the RSS specification's (show port rss-hash key)", key)
    t.ok("ipv4-udp" in key or "udp" in key, "RSS hashes UDP flows as testpmd --rss-udp asked", key)

    b(f"set eth-peer 0 {lidqpn_mac(pa)}")
    b("set fwd rxonly")
    a("set fwd rxonly")
    a("set verbose 1")
    t.note(f"receiver LID {pa['lid']} QPN {pa['qpn']}; computing the candidates' hashes")
    default_hashes = udp_hashes(MS_KEY)
    pkts = verbose_packets(burst(b, a))
    queues = check_hashes("default key", pkts, default_hashes, 2)
    t.eq(queues, {0, 1}, "the sender's flows are spread over both RX queues")
    srcs = {default_hashes.get(h) for h, _, _ in pkts}
    t.ok(len(srcs) > 8, f"many flows ({len(srcs)} source addresses) arrived", sorted(ipaddress.IPv4Address(s) for s in srcs if s)[:4])

    # A key of the application's: the HCA hashes with it from then on.
    out = a(f"port config 0 rss-hash-key ipv4-udp {OTHER_KEY.hex()}")
    t.ok("error" not in out.lower() and "fail" not in out.lower(), "port config rss-hash-key is accepted", out)
    key = a("show port 0 rss-hash key")
    t.ok(OTHER_KEY.hex().upper() in key.upper().replace(" ", ""), "show port rss-hash key shows the new key", key)
    pkts = verbose_packets(burst(b, a))
    check_hashes("application's key", pkts, udp_hashes(OTHER_KEY), 2)

    # The redirection table: every entry to queue 1 (in pieces: testpmd takes the list as one 128-byte token).
    out = set_reta(a, [1] * 128)
    t.ok("error" not in out.lower() and "fail" not in out.lower(), "port config rss reta is accepted", out[-500:])
    shown = a("show port 0 rss reta 128 (0xffffffffffffffff,0xffffffffffffffff)")
    got = {int(q) for q in re.findall(r"hash index=\d+, queue=(\d+)", shown)}
    t.eq(got, {1}, "show port rss reta: every entry names queue 1")
    pkts = verbose_packets(burst(b, a))
    queues = check_hashes("redirection table", pkts, udp_hashes(OTHER_KEY), 2, reta=[1] * 128)
    t.eq(queues, {1}, "with every entry naming queue 1, everything arrives on queue 1")
    out = a("port config 0 rss reta (0,2)")
    t.ok(re.search(r"(invalid|fail|error|bad)", out, re.I), "a redirection entry naming a queue the port lacks is refused",
         out)

    # Per-queue counters (what `show port stats` and xstats report per queue).
    a("set verbose 0")
    a("clear port stats all")
    set_reta(a, [i % 2 for i in range(128)])
    burst(b, a, 8)
    xs = a.xstats(0)
    q0, q1 = xs.get("rx_q0_packets", -1), xs.get("rx_q1_packets", -1)
    t.ok(q0 > 0 and q1 > 0, f"per-queue counters: both RX queues received (rx_q0_packets {q0}, rx_q1_packets {q1})")

    # testpmd's flowgen engine (flows of varying addresses): spread over both queues too.
    a("clear port stats all")
    a("start")
    b("set fwd flowgen")
    b("start")
    time.sleep(1.0)
    b("stop")
    time.sleep(0.3)
    a("stop")
    xs = a.xstats(0)
    q0, q1 = xs.get("rx_q0_packets", -1), xs.get("rx_q1_packets", -1)
    t.ok(q0 > 0 and q1 > 0, f"flowgen's flows are spread over both RX queues (rx_q0_packets {q0}, rx_q1_packets {q1})")

    # One queue offered: two are refused at configure, with the reason.
    for tp in (a, b):
        tp.quit()
        running.remove(tp)
    try:
        c = Testpmd(env, "Hca1", ["net_ipoib0,max_queues=1"], PMD, CWD, args=["--rxq=2", "--txq=2"],
                    prefix=f"one{os.getpid()}", startup_timeout=90)
        running.append(c)
        msg = c.startup
    except RuntimeError as e:  # testpmd checks dev_info itself and exits
        msg = str(e)
    t.ok(re.search(r"rxq \(2\) can't be greater than max_rx_queues \(1\)", msg),
         "devarg max_queues=1: dev_info offers one RX queue and testpmd refuses two", msg[-1500:])


def main():
    run_on_fabric(t, fabric, "rss", rss_scenarios, ["--hcas", "2"], running, [], CWD)


if __name__ == "__main__":
    main()
    t.finish()
