#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Instructions per packet in the PMDs' rx_burst and tx_burst, net_ipoib
against net_memif, counted by callgrind on a fixed number of packets.

One insn-bench process (test/bench/insn_bench.cpp) holds both pairs of
ports: net_ipoib on ports 1 and 2 of one simulated HCA (Ethernet emulation,
unicast to the receiver's MAC, learned and resolved before counting) and a
net_memif server/client pair (copy mode, as pmd-bench). It runs under
valgrind --tool=callgrind with collection only inside its two burst
wrappers; each measured phase (pair, frame size) is one dump. A PMD's cost
is a wrapper's inclusive count minus the wrapper's own (the inline ethdev
call, the same for both drivers). perf stat is not used: this machine's
virtual CPU exposes no hardware counters ("instructions: not supported").
A native run of the same phases adds TSC cycles per packet (the least of 5
phases; still noisy).
Prints a table, the top functions of net_ipoib's count, and writes a CSV.
Asserts nothing.

usage: insn_bench.py FABRIC_TOOL INSN_BENCH PMD_SO [--packets N] [--sizes 64,1500]
                     [--csv FILE] [--no-native] [--keep]"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from fabric_client import client_env  # noqa: E402

LABELS = ("ipoib", "memif")
WRAPPERS = {"tx": "bench_tx_burst", "rx": "bench_rx_burst"}
TOP = 15


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fabric")
    ap.add_argument("bench")
    ap.add_argument("pmd")
    ap.add_argument("--packets", type=int, default=32768, help="packets per measured phase (default 32768)")
    ap.add_argument("--sizes", default="64,1500", help="Ethernet frame sizes (default 64,1500)")
    ap.add_argument("--csv", help="CSV path (default build/bench/insn-bench.csv)")
    ap.add_argument("--no-native", action="store_true", help="skip the native (cycles) run")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (callgrind dumps, logs)")
    a = ap.parse_args()
    a.fabric, a.bench, a.pmd = (os.path.abspath(x) for x in (a.fabric, a.bench, a.pmd))
    return a


def bench_cmd(a, cwd, prefix):
    sock = os.path.join(cwd, "memif.sock")
    return [a.bench, "--no-huge", "-m", "512", "--no-pci", "--no-telemetry", f"--file-prefix={prefix}",
            "-l", "0", "-d", a.pmd,
            "--vdev=net_ipoib0,port=1", "--vdev=net_ipoib1,port=2",
            f"--vdev=net_memif0,role=server,socket={sock}", f"--vdev=net_memif1,role=client,socket={sock}",
            "--", "--pair", "ipoib=net_ipoib0,net_ipoib1", "--pair", "memif=net_memif1,net_memif0",
            "--sizes", a.sizes, "--packets", str(a.packets)]


PHASE = re.compile(r"^phase (\S+) (\d+): (.*)$", re.M)


def phases(out):
    """{(label, size): {key: number}} from the bench's "phase" lines."""
    res = {}
    for label, size, rest in PHASE.findall(out):
        if not rest.startswith("sent "):
            continue  # "unresolved": nothing measured
        words = rest.split()
        res[(label, int(size))] = {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    return res


def run(cmd, env, cwd, log):
    with open(log, "w") as f:
        p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=f, text=True, timeout=1800)
    with open(log, "a") as f:
        f.write(p.stdout)
    return p.returncode, p.stdout


def read_dump(path):
    """{function: [self Ir, inclusive Ir]} from a callgrind dump (its own format: a
    cost line belongs to the current fn=, and the line after calls= is the
    inclusive cost of that call), and the dump's summary (what the collecting calls ran)."""
    names = {}  # compressed name ids, e.g. fn=(12) name, then fn=(12)
    cost = {}
    fn, after_calls, total = None, False, 0

    def name(value):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), value)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if fn is None:
                    continue
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                entry = cost.setdefault(fn, [0, 0])
                entry[1] += ir
                if not after_calls:
                    entry[0] += ir
                after_calls = False
            elif line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
                if line.startswith("cfn="):
                    name(line[4:])
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("summary:"):
                # (totals: at the end can be larger: other threads' instructions while one
                # of them was inside a wrapper; they belong to no wrapper's call tree)
                total = int(line.split()[1])
    return cost, total


def dumps(cwd):
    """{(label, size): dump path} from the callgrind dumps' trigger descriptions."""
    res = {}
    for path in glob.glob(os.path.join(cwd, "callgrind.out.*")):
        with open(path, errors="replace") as f:
            head = f.read(4096)
        m = re.search(r"^desc: Trigger: Client Request: (\S+) (\d+)$", head, re.M)
        if m:
            res[(m.group(1), int(m.group(2)))] = path
    return res


def short(name):
    """A function name without an object path or parameter list."""
    name = re.sub(r"\s*\[/[^\]]*\]$", "", name)
    return re.sub(r"\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)(\s*const)?(?=(\s*\[clone [^\]]*\])?$)", "", name)


def main():
    a = parse_args()
    build = os.path.abspath(os.path.join(os.path.dirname(a.pmd), "..", "..", ".."))  # build/drivers/net/ipoib/..
    csv = a.csv or os.path.join(build, "bench", "insn-bench.csv")
    os.makedirs(os.path.dirname(os.path.abspath(csv)), exist_ok=True)
    cwd = tempfile.mkdtemp(prefix="insn-bench-", dir=build)
    sizes = [int(s) for s in a.sizes.split(",")]
    fabric = json.loads(subprocess.run([a.fabric, "up", "--format", "json", "--hcas", "1", "--ports", "2",
                                        "--owner", str(os.getpid())], capture_output=True, text=True,
                                       check=True).stdout)
    ok = True
    try:
        env = client_env(fabric, "Hca1")
        native = {}
        if not a.no_native:
            rc, out = run(bench_cmd(a, cwd, f"insn{os.getpid()}n"), env, cwd, os.path.join(cwd, "native.log"))
            native = phases(out)
            if rc != 0:
                ok = False
                print(f"insn-bench (native) exited {rc}: see {cwd}/native.log", file=sys.stderr)
        # --fair-sched: the bench's lcore polls; the driver's control thread must still get its turn.
        vg = ["valgrind", "--tool=callgrind", "--fair-sched=yes", "--instr-atstart=no", "--collect-atstart=no",
              f"--toggle-collect={WRAPPERS['tx']}", f"--toggle-collect={WRAPPERS['rx']}"]
        # A phase whose frames did not all arrive is measured again in a new process, twice at most
        # (a safeguard: while the bench busy-waited between attempts, callgrind's serialised threads
        # starved net_ipoib's control thread and the neighbour stayed unresolved for a whole run).
        counted, found = {}, {}
        for attempt in range(1, 4):
            out_dir = os.path.join(cwd, f"callgrind-{attempt}")
            os.makedirs(out_dir)
            rc, out = run(vg + [f"--callgrind-out-file={out_dir}/callgrind.out.%p"] +
                          bench_cmd(a, cwd, f"insn{os.getpid()}c{attempt}"), env, cwd,
                          os.path.join(cwd, f"callgrind-{attempt}.log"))
            got, dumped = phases(out), dumps(out_dir)
            for key, ph in got.items():
                if key not in counted and key in dumped and ph.get("received") == ph.get("sent") == a.packets \
                        and not ph.get("bad") and not ph.get("held"):
                    counted[key], found[key] = ph, dumped[key]
            missing = [f"{lb} {s}" for lb in LABELS for s in sizes if (lb, s) not in counted]
            if not missing:
                break
            print(f"insn-bench: run {attempt} under callgrind (exit {rc}) left {', '.join(missing)} unmeasured: "
                  f"see {cwd}/callgrind-{attempt}.log", file=sys.stderr)
            a.keep = True  # (the logs of the failed run stay)
    finally:
        subprocess.run([a.fabric, "down", fabric["IPOIB_FABRIC_DIR"]], capture_output=True)

    table = {}  # (label, size) -> dict
    for key, path in sorted(found.items()):
        cost, total = read_dump(path)
        ph = counted.get(key, {})
        row = {"packets": int(ph.get("sent", 0)), "received": int(ph.get("received", 0)),
               "empty_polls": int(ph.get("empty_polls", 0)), "held": int(ph.get("held", 0))}
        measured = 0
        for d, fn in WRAPPERS.items():
            own, incl = cost.get(fn, [0, 0])
            measured += incl
            n = row["packets"] if d == "tx" else row["received"]
            row[f"{d}_insn"] = (incl - own) / n if n else float("nan")
            row[f"{d}_wrapper_insn"] = own / n if n else float("nan")
        if measured != total:  # the call graph read wrongly
            print(f"insn-bench: {key[0]} {key[1]}: the wrappers hold {measured} of the dump's {total} instructions",
                  file=sys.stderr)
        nat = native.get(key, {})
        row["tx_cycles"] = nat.get("tx_cycles_per_packet", float("nan"))
        row["rx_cycles"] = nat.get("rx_cycles_per_packet", float("nan"))
        row["top"] = sorted(((own, short(fn)) for fn, (own, _) in cost.items() if fn not in WRAPPERS.values()),
                            reverse=True)[:TOP]
        row["total"] = total
        table[key] = row

    print(f"instructions per packet inside rx_burst/tx_burst (callgrind, {a.packets} packets per phase, bursts of 32,"
          f" one process; the ethdev inline call excluded)")
    print(f"{'frame':>6} {'driver':>6} {'TX insn':>9} {'RX insn':>9} {'sum':>9} {'ipoib/memif':>12}"
          f" {'TX cyc':>8} {'RX cyc':>8}")
    lines = ["frame_bytes,driver,tx_insn_per_packet,rx_insn_per_packet,insn_per_packet,ipoib_over_memif,"
             "tx_cycles_per_packet,rx_cycles_per_packet,packets,empty_polls,method"]
    for s in sizes:
        memif = table.get(("memif", s))
        for label in LABELS:
            r = table.get((label, s))
            if not r:
                print(f"{s:>5}B {label:>6}  (no measurement: see the logs)")
                ok = False
                continue
            total = r["tx_insn"] + r["rx_insn"]
            ratio = total / (memif["tx_insn"] + memif["rx_insn"]) if memif and label == "ipoib" else float("nan")
            print(f"{s:>5}B {label:>6} {r['tx_insn']:>9.1f} {r['rx_insn']:>9.1f} {total:>9.1f} "
                  f"{'' if ratio != ratio else f'{ratio:.2f}':>12} {r['tx_cycles']:>8.0f} {r['rx_cycles']:>8.0f}")
            lines.append(f"{s},{label},{r['tx_insn']:.1f},{r['rx_insn']:.1f},{total:.1f},"
                         f"{'' if ratio != ratio else f'{ratio:.3f}'},{r['tx_cycles']:.1f},{r['rx_cycles']:.1f},"
                         f"{r['packets']},{r['empty_polls']},callgrind")
            if r["packets"] != r["received"] or r["held"]:
                print(f"       ({label} {s} B: sent {r['packets']}, received {r['received']}, "
                      f"held for resolution {r['held']})")
    print("(TX/RX cyc: TSC cycles per packet in the same calls run natively, the least of 5 phases: noisy on a "
          "shared machine)")
    for s in sizes:
        r = table.get(("ipoib", s))
        if r:
            print(f"\nnet_ipoib {s} B: top functions by own instructions (per packet, share of RX+TX)")
            for ir, name in r["top"]:
                print(f"  {ir / max(r['packets'], 1):>8.1f} {100.0 * ir / max(r['total'], 1):>5.1f}%  {name}")
    with open(csv, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nCSV: {csv}")
    if a.keep or not ok:
        print(f"working directory (callgrind dumps, logs): {cwd}")
    else:
        shutil.rmtree(cwd, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
