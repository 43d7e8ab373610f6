#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Draw the benchmarks' CSVs as plots (SVG) into doc/perf/:

  pmd-mpps.svg         Mpps vs frame size, net_ipoib and net_memif (pmd-bench.csv:
                       frame_bytes,driver,mpps,run; the mean of the runs, bars from min to max)
  insn-per-packet.svg  instructions per packet in rx_burst/tx_burst, and TSC cycles when
                       measured, both drivers (insn-bench.csv)
  neigh-scaling.svg    ns per packet vs number of neighbours (neigh-bench.csv:
                       neighbours,ns_per_packet,...), if that bench has run

A missing CSV skips its plot with a message. Runs with Debian's python3 and
python3-matplotlib (installed with apt-get if missing; /usr/bin/python3,
not a pyenv python).

usage: /usr/bin/python3 test/bench/plot.py [--csv-dir build/bench] [--out doc/perf] [--format svg|png]"""
import argparse
import collections
import csv
import os
import subprocess
import sys

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DRIVERS = (("ipoib", "net_ipoib", "tab:blue"), ("ipoib-xdp", "net_ipoib (xdp provider)", "tab:green"),
           ("memif", "net_memif", "tab:orange"))


def matplotlib_pyplot():
    """matplotlib.pyplot with the Agg backend, python3-matplotlib installed first if missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.geteuid() != 0:
            sys.exit("plot: python3-matplotlib is missing; install it (apt-get install python3-matplotlib) as root")
        print("plot: installing python3-matplotlib", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-matplotlib"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "ipoib-dpdk"  # the same data draws the same file
    import matplotlib.pyplot as plt
    return plt


def shown(path):
    """A path as the messages print it: relative to the repository when inside it."""
    rel = os.path.relpath(path, TOP)
    return path if rel.startswith("..") else rel


def read_csv(path):
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


FORMAT = "svg"


def save(plt, fig, out, name, source):
    fig.supxlabel(f"data: {shown(source)}", x=0.99, ha="right", fontsize=7, color="grey")
    path = os.path.join(out, f"{name}.{FORMAT}")
    fig.savefig(path, metadata={"Date": None} if FORMAT == "svg" else {"Software": None})
    plt.close(fig)
    print(f"plot: {shown(path)}")


def plot_mpps(plt, src, out):
    rows = read_csv(src)
    if not rows:
        print(f"plot: no {shown(src)} (run test/bench/pmd-bench.sh): Mpps plot skipped")
        return
    runs = collections.defaultdict(list)
    for r in rows:
        runs[(r["driver"], int(r["frame_bytes"]))].append(float(r["mpps"]))
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for key, label, color in DRIVERS:
        sizes = sorted(s for d, s in runs if d == key)
        if not sizes:
            continue
        mean = [sum(runs[(key, s)]) / len(runs[(key, s)]) for s in sizes]
        lo = [m - min(runs[(key, s)]) for m, s in zip(mean, sizes)]
        hi = [max(runs[(key, s)]) - m for m, s in zip(mean, sizes)]
        ax.errorbar(sizes, mean, yerr=[lo, hi], marker="o", capsize=3, label=label, color=color)
    nruns = max(len(v) for v in runs.values())
    ax.set_xscale("log", base=2)
    sizes = sorted({s for _, s in runs})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("frame size (bytes)")
    ax.set_ylabel("Mpps received")
    ax.set_ylim(bottom=0)
    ax.set_title(f"testpmd txonly -> rxonly, two processes ({nruns} run{'s' if nruns > 1 else ''} per point)\n"
                 "wall-clock rates: they depend on what else the machine runs", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    save(plt, fig, out, "pmd-mpps", src)


def plot_insn(plt, src, out):
    rows = read_csv(src)
    if not rows:
        print(f"plot: no {shown(src)} (run test/bench/insn-bench.sh): per-packet plot skipped")
        return
    data = {(r["driver"], int(r["frame_bytes"])): r for r in rows}
    sizes = sorted({s for _, s in data})

    def num(r, k):
        try:
            return float(r.get(k) or "nan")
        except ValueError:
            return float("nan")

    has_cycles = any(num(r, "tx_cycles_per_packet") == num(r, "tx_cycles_per_packet") for r in rows)
    panels = [("insn", "instructions per packet (callgrind)")] + \
        ([("cycles", "TSC cycles per packet (native, noisy)")] if has_cycles else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), layout="constrained", squeeze=False)
    width = 0.38
    for ax, (kind, title) in zip(axes[0], panels):
        tx_key, rx_key = (("tx_insn_per_packet", "rx_insn_per_packet") if kind == "insn"
                          else ("tx_cycles_per_packet", "rx_cycles_per_packet"))
        for i, (key, label, color) in enumerate(DRIVERS):
            xs = [k + (i - 0.5) * width for k in range(len(sizes))]
            tx = [num(data.get((key, s), {}), tx_key) for s in sizes]
            rx = [num(data.get((key, s), {}), rx_key) for s in sizes]
            ax.bar(xs, tx, width, color=color, label=f"{label} TX")
            ax.bar(xs, rx, width, bottom=tx, color=color, alpha=0.45, hatch="//", label=f"{label} RX")
            for x, t, r in zip(xs, tx, rx):
                if t == t and r == r:
                    ax.annotate(f"{t + r:.0f}", (x, t + r), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(sizes)), [f"{s} B" for s in sizes])
        ax.set_ylabel(title)
        ax.set_title(title.split(" (")[0] + " in rx_burst + tx_burst")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
        ax.legend(fontsize=8, ncol=2, loc="upper left")
    save(plt, fig, out, "insn-per-packet", src)


def plot_neigh(plt, src, out):
    rows = read_csv(src)
    if not rows:
        print(f"plot: no {shown(src)} (the neighbour-scaling bench has not run): plot skipped")
        return
    pts = collections.defaultdict(list)
    for r in rows:
        pts[int(r["neighbours"])].append(float(r["ns_per_packet"]))
    ns = sorted(pts)
    mean = [sum(pts[n]) / len(pts[n]) for n in ns]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    ax.plot(ns, mean, marker="o", color="tab:blue", label="net_ipoib TX resolution")
    if ns and mean[0] > 0:
        ax.axhline(mean[0] * 1.1, color="grey", linestyle="--", linewidth=1, label=f"+10% over {ns[0]} neighbours")
    ax.set_xscale("log")
    ax.set_xlabel("neighbours")
    ax.set_ylabel("ns per packet")
    ax.set_ylim(bottom=0)
    ax.set_title("TX to random destinations among N neighbours")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save(plt, fig, out, "neigh-scaling", src)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", default=os.path.join(TOP, "build", "bench"), help="where the CSVs are")
    ap.add_argument("--out", default=os.path.join(TOP, "doc", "perf"), help="where the plots go")
    ap.add_argument("--format", choices=("svg", "png"), default="svg", help="file format (default svg)")
    a = ap.parse_args()
    global FORMAT
    FORMAT = a.format
    plt = matplotlib_pyplot()
    os.makedirs(a.out, exist_ok=True)
    plot_mpps(plt, os.path.join(a.csv_dir, "pmd-bench.csv"), a.out)
    plot_insn(plt, os.path.join(a.csv_dir, "insn-bench.csv"), a.out)
    plot_neigh(plt, os.path.join(a.csv_dir, "neigh-bench.csv"), a.out)


if __name__ == "__main__":
    main()
