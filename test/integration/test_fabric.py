#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Integration test of app/ipoib-fabric against the real ibsim and OpenSM.

Every fact is read back with infiniband-diags run under umad2sim as separate
processes (ibstat, ibnetdiscover, smpquery, saquery, sminfo) and, where the
SM has its own record, cross-checked with OpenSM's guid2lid cache.

usage: test_fabric.py PATH-TO-ipoib-fabric
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Tap  # noqa: E402

TOOL = os.path.abspath(sys.argv[1])
UMAD2SIM = "/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so"
t = Tap()
CWD = tempfile.mkdtemp(prefix="ipoib-fabric-test-")  # umad2sim writes sys-<pid>/ here
started = []  # fabric dirs to tear down whatever happens


def tool(*args, check=True, timeout=60):
    p = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=timeout, cwd=CWD)
    if check and p.returncode != 0:
        raise RuntimeError(f"ipoib-fabric {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def up(*args):
    t0 = time.monotonic()
    p = tool("up", "--format", "json", "--owner", str(os.getpid()), *args)
    elapsed = time.monotonic() - t0
    env = json.loads(p.stdout)
    started.append(env["IPOIB_FABRIC_DIR"])
    return env, elapsed


def down(env):
    tool("down", env["IPOIB_FABRIC_DIR"])
    started.remove(env["IPOIB_FABRIC_DIR"])


def on(env, host, *cmd, check=True):
    """Run a diag as a client attached to `host`."""
    e = dict(os.environ, LD_PRELOAD=UMAD2SIM, SIM_HOST=host, IBSIM_SOCKNAME=env["IBSIM_SOCKNAME"])
    p = subprocess.run(list(cmd), env=e, capture_output=True, text=True, timeout=30, cwd=CWD)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} on {host} failed ({p.returncode}): {p.stderr}")
    return p


def field(text, name):
    m = re.search(rf"^\s*{name}:?\.+(\S+)", text, re.M)
    return m.group(1) if m else None


def state_of(env):
    with open(os.path.join(env["IPOIB_FABRIC_DIR"], "fabric.json")) as f:
        return json.load(f)


def guid2lid(env):
    """OpenSM's own record of the LIDs it assigned (its cache file)."""
    out = {}
    with open(os.path.join(env["IPOIB_FABRIC_DIR"], "guid2lid")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out[int(parts[0], 16)] = int(parts[1], 0)
    return out


def ibstat(env, host):
    out = on(env, host, "ibstat").stdout
    return {
        "state": re.search(r"State: (\w+)", out).group(1),
        "lid": int(re.search(r"Base lid: (\d+)", out).group(1)),
        "sm_lid": int(re.search(r"SM lid: (\d+)", out).group(1)),
        "guid": int(re.search(r"Port GUID: (0x[0-9a-f]+)", out).group(1), 16),
    }


def discovered_ca_ports(env, host):
    """{(node description, port): (guid, lid)} from ibnetdiscover's CA records."""
    out = on(env, host, "ibnetdiscover").stdout
    ports = {}
    for block in out.split("\n\n"):
        m = re.search(r'^Ca\s+\d+\s+"[^"]*"\s+# "([^"]+)"', block, re.M)
        if not m:
            continue
        for pm in re.finditer(r"^\[(\d+)\]\((\w+)\)\s.*# lid (\d+)", block, re.M):
            ports[(m.group(1), int(pm.group(1)))] = (int(pm.group(2), 16), int(pm.group(3)))
    return ports


def pkeys(env, host, lid):
    out = on(env, host, "smpquery", "pkeys", str(lid)).stdout
    return {int(k, 16) for k in re.findall(r"0x[0-9a-f]{4}", out)} - {0}


def group(env, host, mgid):
    out = on(env, host, "saquery", "MCMR", "--mgid", mgid).stdout
    return {k: field(out, k) for k in ("MGID", "qkey", "mtu", "pkey", "mlid")}


def leftovers(st):
    """What of a fabric is still around: processes, simulator sockets, files."""
    left = []
    for key in ("supervisor_pid", "ibsim_pid", "opensm_pid"):
        pid = st.get(key)
        if pid and os.path.exists(f"/proc/{pid}"):
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] != "Z":
                    left.append(f"{key} {pid}")
    with open("/proc/net/unix") as f:
        if st["sockname"] in f.read():
            left.append("abstract sockets " + st["sockname"])
    if os.path.exists(st["dir"]):
        left.append("directory " + st["dir"])
    return left


def wait_gone(st, seconds=10.0):
    deadline = time.monotonic() + seconds
    while leftovers(st) and time.monotonic() < deadline:
        time.sleep(0.05)
    return leftovers(st)


# ---------------------------------------------------------------------------

def test_main_fabric():
    env, elapsed = up("--hcas", "3", "--ports", "2")
    t.note(f"fabric with 3 two-port HCAs up in {elapsed:.3f} s")
    t.ok(elapsed < 2.0, "fabric comes up in under 2 s", f"{elapsed:.3f} s")
    hosts = env["IPOIB_FABRIC_HOSTS"].split()
    t.eq(hosts, ["Hca1", "Hca2", "Hca3"], "hosts are named Hca1..Hca3")
    t.ok(env["IBSIM_SOCKNAME"].startswith("ipoibfab"), "a per-run IBSIM_SOCKNAME is printed")

    sm = ibstat(env, env["IPOIB_FABRIC_SM_HOST"])
    lids = guid2lid(env)
    seen = {}
    for h in hosts:
        s = ibstat(env, h)
        t.eq(s["state"], "Active", f"{h} port 1 is Active")
        t.ok(s["lid"] > 0, f"{h} has a LID", s)
        t.eq(s["sm_lid"], sm["lid"], f"{h} sees the SM's LID")
        t.eq(lids.get(s["guid"]), s["lid"], f"{h} LID agrees with OpenSM's guid2lid")
        seen[h] = s

    disc = discovered_ca_ports(env, "Hca1")
    all_lids = []
    for h in hosts:
        for port in (1, 2):
            rec = disc.get((h, port))
            if not t.ok(rec is not None, f"ibnetdiscover finds {h} port {port}", disc):
                continue
            guid, lid = rec
            t.eq(lids.get(guid), lid, f"{h} port {port} LID agrees with guid2lid")
            all_lids.append(lid)
        t.eq(disc.get((h, 1), (None,))[0], seen[h]["guid"], f"{h} port 1 GUID agrees with ibstat")
    t.eq(len(set(all_lids)), len(all_lids), "every HCA port has its own LID")

    for h in hosts:
        t.ok({0xffff, 0x8001} <= pkeys(env, h, seen[h]["lid"]),
             f"{h} P_Key table holds 0xffff and 0x8001", pkeys(env, h, seen[h]["lid"]))
    for mgid, pk in (("ff12:401b:ffff::ffff:ffff", "0xffff"), ("ff12:401b:8001::ffff:ffff", "0x8001")):
        g = group(env, "Hca2", mgid)
        t.eq(g["MGID"], mgid, f"broadcast group {mgid} exists")
        t.eq(g["qkey"], "0xb1b", f"{mgid} Q_Key is 0x0b1b")
        t.eq(int(g["mtu"] or "0", 0) & 0x3f, 4, f"{mgid} MTU is 2048 (code 4)")
        t.eq(g["pkey"], pk, f"{mgid} P_Key is {pk}")

    show = tool("show", env["IPOIB_FABRIC_DIR"]).stdout
    t.ok(f"Hca3[2]  LID {disc[('Hca3', 2)][1]}  Active" in show, "show lists ports with LIDs", show)
    t.ok("ff12:401b:8001::ffff:ffff" in show and "Q_Key 0xb1b" in show, "show lists broadcast groups", show)

    # Port down and back through ibsim's console.
    hca2_lid = seen["Hca2"]["lid"]
    tool("port", env["IPOIB_FABRIC_DIR"], "Hca2", "1", "down", "--wait", "5")
    disc = discovered_ca_ports(env, "Hca1")
    t.ok(("Hca2", 1) not in disc and ("Hca2", 2) in disc, "Hca2 port 1 is gone after port down",
         sorted(disc))
    p = on(env, "Hca1", "smpquery", "portinfo", str(hca2_lid), check=False)
    t.ok(p.returncode != 0, "an SMP to the unlinked port fails", p.stdout)
    tool("port", env["IPOIB_FABRIC_DIR"], "Hca2", "1", "up", "--wait", "15")
    t.eq(ibstat(env, "Hca2")["state"], "Active", "Hca2 port 1 is Active again after port up")
    t.eq(ibstat(env, "Hca2")["lid"], hca2_lid, "Hca2 keeps its LID across the flap")
    bad = tool("port", env["IPOIB_FABRIC_DIR"], "Hca7", "1", "down", check=False)
    t.ok(bad.returncode != 0 and "no port Hca7[1]" in bad.stderr, "an unknown port is refused by name",
         bad.stderr)

    # OpenSM stopped and restarted.
    tool("sm", env["IPOIB_FABRIC_DIR"], "stop")
    p = on(env, "Hca1", "saquery", "-g", check=False)
    t.ok(p.returncode != 0, "SA queries fail while OpenSM is stopped", p.stdout + p.stderr)
    tool("sm", env["IPOIB_FABRIC_DIR"], "start")
    t.eq(group(env, "Hca1", "ff12:401b:ffff::ffff:ffff")["qkey"], "0xb1b",
         "SA answers again after OpenSM restarts")

    st = state_of(env)
    down(env)
    left = wait_gone(st, 2.0)
    t.eq(left, [], "down leaves no process, socket or directory")


def test_parallel_and_partitions():
    # Two fabrics at once: the second gets its own partitions, SM priority and sweep.
    a, _ = up("--hcas", "2")
    guid = {h: ibstat(a, h)["guid"] for h in ("Hca1", "Hca2")}  # ibsim numbers nodes the same way
    part = (f"p2=0x8002, ipoib, mtu=4 : 0x{guid['Hca1']:016x}=full, 0x{guid['Hca2']:016x}=limited;")
    b, _ = up("--hcas", "3", "--partition", part, "--sm-priority", "7", "--sweep", "5")
    t.ok(a["IBSIM_SOCKNAME"] != b["IBSIM_SOCKNAME"], "parallel fabrics get different socket names")
    t.eq(ibstat(a, "Hca1")["state"], "Active", "first fabric still works beside the second")
    t.ok(ibstat(b, "Hca3")["state"] == "Active", "second fabric has its own third HCA")
    p = on(a, "Hca3", "ibstat", check=False)
    t.ok(p.returncode != 0 or "Active" not in p.stdout, "the first fabric has no Hca3", p.stdout)

    lid = {h: ibstat(b, h)["lid"] for h in ("Hca1", "Hca2", "Hca3")}
    pk = {h: pkeys(b, h, lid[h]) for h in lid}
    t.ok(0x8002 in pk["Hca1"], "full member of p2 has P_Key 0x8002", pk)
    t.ok(0x0002 in pk["Hca2"] and 0x8002 not in pk["Hca2"], "limited member of p2 has P_Key 0x0002", pk)
    t.ok(not ({0x0002, 0x8002} & pk["Hca3"]), "non-member has no p2 P_Key", pk)
    t.ok(0x8001 not in pk["Hca1"], "--partition replaces the built-in p1", pk)
    t.eq(group(b, "Hca1", "ff12:401b:8002::ffff:ffff")["qkey"], "0xb1b", "p2 broadcast group exists")

    out = on(b, "Hca1", "sminfo").stdout
    t.ok(re.search(r"priority 7\b", out) is not None, "OpenSM runs with the given priority", out)
    with open(os.path.join(b["IPOIB_FABRIC_DIR"], "opensm.out")) as f:
        t.ok("sweep interval = 5" in f.read(), "OpenSM runs with the given sweep interval")

    sa, sb = state_of(a), state_of(b)
    down(a)
    t.eq(wait_gone(sa, 2.0), [], "first fabric torn down")
    t.eq(ibstat(b, "Hca1")["state"], "Active", "second fabric survives the first's teardown")
    down(b)
    t.eq(wait_gone(sb, 2.0), [], "second fabric torn down")


def test_caller_dies():
    # The caller of `up` is SIGKILLed right after: the supervisor must notice.
    out = os.path.join(CWD, "killed.json")
    p = subprocess.run(["bash", "-c", f'"{TOOL}" up --format json > "{out}" && kill -9 $$'],
                       cwd=CWD, timeout=60)
    t.eq(p.returncode, -9, "caller was killed after up")
    with open(out) as f:
        env = json.load(f)
    d = env["IPOIB_FABRIC_DIR"]
    st = {"dir": d, "sockname": env["IBSIM_SOCKNAME"]}
    try:
        with open(os.path.join(d, "fabric.json")) as f:
            st = json.load(f)
    except OSError:
        pass  # already gone: leftovers() checks the rest
    t.eq(wait_gone(st, 10.0), [], "a killed caller's fabric is torn down by its supervisor")


def test_run_and_errors():
    script = ('cd "$(mktemp -d)" && LD_PRELOAD="$IPOIB_FABRIC_UMAD2SIM" SIM_HOST=Hca1 ibstat | grep -q Active '
              '&& echo "$IPOIB_FABRIC_DIR" > "' + CWD + '/run.dir" && exit 3')
    p = tool("run", "--hcas", "1", "--", "bash", "-c", script, check=False)
    t.eq(p.returncode, 3, "run passes the fabric to the command and returns its status")
    with open(os.path.join(CWD, "run.dir")) as f:
        d = f.read().strip()
    t.ok(not os.path.exists(d), "run tears the fabric down after the command", d)

    p = tool("up", "--hcas", "0", check=False)
    t.ok(p.returncode == 1 and "--hcas must be" in p.stderr, "--hcas 0 is refused with a message", p.stderr)
    p = tool("up", "--ports", "3", check=False)
    t.ok(p.returncode == 1 and "--ports must be" in p.stderr, "--ports 3 is refused with a message", p.stderr)
    before = set(os.listdir(tempfile.gettempdir()))
    ibsims_before = set(subprocess.run(["pgrep", "-x", "ibsim"], capture_output=True, text=True).stdout.split())
    p = tool("up", "--opensm-arg=--no-such-option", "--timeout", "3", check=False)
    t.ok(p.returncode == 1 and "opensm exited" in p.stderr, "an OpenSM that cannot start is reported",
         p.stderr)
    after = set(os.listdir(tempfile.gettempdir()))
    t.eq(sorted(x for x in after - before if x.startswith("ipoib-fabric-")), [],
         "a failed start leaves no working directory")
    # The failed start's ibsim must be gone (other fabrics on the machine may run theirs).
    ibsims_after = set(subprocess.run(["pgrep", "-x", "ibsim"], capture_output=True, text=True).stdout.split())
    t.eq(sorted(ibsims_after - ibsims_before), [], "a failed start leaves no ibsim running")
    p = tool("down", "/nonexistent", check=False)
    t.ok(p.returncode == 1 and "no fabric in /nonexistent" in p.stderr, "down on a non-fabric says so",
         p.stderr)


def main():
    try:
        t.run("main fabric", test_main_fabric)
        t.run("parallel fabrics and partitions", test_parallel_and_partitions)
        t.run("caller dies", test_caller_dies)
        t.run("run and errors", test_run_and_errors)
    finally:
        for d in list(started):
            subprocess.run([TOOL, "down", d], capture_output=True)
        shutil.rmtree(CWD, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
