# SPDX-License-Identifier: BSD-3-Clause
"""The Debian packages, installed and removed as a site would, without ever
touching this machine's own DPDK plugin directory.

  test_install.py SRCDIR BUILDDIR      (root; TAP on stdout)

1. buildtools/build-deb.sh builds ipoib-dpdk and ipoib-dpdk-dev from the tree
   (dpkg-buildpackage) and lintian must report no error.
2. In a private mount namespace, an overlay over / (writes go to a tmpfs) is
   the root of a chroot: there dpkg installs both packages against the
   machine's real dpkg database and DPDK, and
   - the PMD sits in the installed DPDK's plugin directory (RTE_EAL_PMD_PATH),
     as libdpdk-ipoib.pc says;
   - two Debian dpdk-testpmd without -d, on a simulated fabric brought up by
     the installed ipoib-fabric, see their links up and exchange exact
     broadcast counts both ways;
   - the verbs provider finds its glue in PLUGIN_DIR-glue/ (its error is
     then about RDMA devices, not about the glue);
   - examples/ipoib_native, copied from the -dev package, builds with its
     Makefile against libdpdk-ipoib.pc and runs (ping/pong, no -d);
   - the man pages and --help of the tools;
   - dpkg --purge removes every file the packages brought, and the overlay's
     upper layer then holds nothing but dpkg's own records.
   The namespace's mounts vanish with its last process, whatever happens.
3. The machine's plugin directory has no net_ipoib before and after.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration", "pmd"))
from tap import Tap  # noqa: E402

PACKAGES = ("ipoib-dpdk", "ipoib-dpdk-dev")
PMD_FILE = "librte_net_ipoib.so"


def dpdk_pmd_path():
    """RTE_EAL_PMD_PATH of the installed DPDK: where its EAL loads drivers from."""
    out = subprocess.run("echo RTE_EAL_PMD_PATH | cpp -P $(pkg-config --cflags libdpdk) "
                         "-include rte_build_config.h -", shell=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1].strip('"') if out.strip() else ""


def run(cmd, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- in the chroot

def inside(debdir, work):
    """Everything done in the installed system (the chroot over the overlay)."""
    t = Tap()  # its lines are re-counted by the outer process; no plan here
    debs = sorted(glob.glob(os.path.join(debdir, "ipoib-dpdk_*.deb")) +
                  glob.glob(os.path.join(debdir, "ipoib-dpdk-dev_*.deb")))
    p = run(["dpkg", "-i", *debs])
    if not t.ok(p.returncode == 0 and len(debs) == 2, "dpkg -i installs ipoib-dpdk and ipoib-dpdk-dev",
                p.stdout + p.stderr):
        return t
    files = {}
    for pkg in PACKAGES:
        listed = run(["dpkg", "-L", pkg]).stdout.split()
        files[pkg] = [f for f in listed if os.path.isfile(f) or os.path.islink(f)]
    t.run("layout", check_layout, t)
    import json
    from fabric_client import Fabric
    fabric = Fabric("ipoib-fabric", work)  # the installed tool, from PATH
    env = None
    try:
        env = json.loads(fabric("up", "--format", "json", "--hcas", "2", "--owner", str(os.getpid())).stdout)
        t.run("testpmd", check_testpmd, t, env, work)
        t.run("example", check_example, t, env, work)
    except Exception as e:  # noqa: BLE001
        t.ok(False, "the installed ipoib-fabric brings a fabric up", e)
    finally:
        if env:
            fabric("down", env["IPOIB_FABRIC_DIR"], check=False)
    t.run("verbs glue", check_verbs_glue, t, work)
    t.run("tools", check_tools, t)

    p = run(["dpkg", "--purge", *reversed(PACKAGES)])
    t.ok(p.returncode == 0, "dpkg --purge removes both packages", p.stdout + p.stderr)
    left = [f for pkg in PACKAGES for f in files[pkg] if os.path.lexists(f)]
    t.eq(left, [], f"no file of the packages is left ({sum(len(v) for v in files.values())} were installed)")
    pmd_dir = dpdk_pmd_path()
    t.ok(not os.path.exists(pmd_dir + "-glue") and not os.path.exists("/usr/include/ipoib-dpdk"),
         "the glue directory and the header directory are gone")
    return t


def check_layout(t):
    pmd_dir = dpdk_pmd_path()
    pc_dir = run(["pkg-config", "--variable=pmddir", "libdpdk-ipoib"]).stdout.strip()
    t.ok(pmd_dir and pc_dir == pmd_dir, f"libdpdk-ipoib.pc's pmddir is DPDK's plugin directory {pmd_dir}",
         f"pkg-config: {pc_dir!r}")
    t.ok(os.path.isfile(os.path.join(pmd_dir, PMD_FILE)), f"{PMD_FILE} is in {pmd_dir}")
    glues = sorted(os.listdir(pmd_dir + "-glue")) if os.path.isdir(pmd_dir + "-glue") else []
    t.eq(glues, ["libipoib_verbs_glue.so", "libipoib_xdp_glue.so"], f"the glue objects are in {pmd_dir}-glue")
    strays = [f for f in os.listdir(pmd_dir) if "ipoib" in f and f != PMD_FILE]
    t.eq(strays, [], "nothing else of ours in the plugin directory (the EAL would load it as a driver)")


def check_testpmd(t, env, work):
    from testpmd import Testpmd, exact_broadcast, kill_all
    tps = []
    try:
        for host in ("Hca1", "Hca2"):
            tps.append(Testpmd(env, host, ["net_ipoib0"], None, work, prefix=f"inst{host.lower()}{os.getpid()}"))
        a, b = tps
        info = a("show port info 0")
        t.ok("net_ipoib" in info, "dpdk-testpmd without -d has a net_ipoib port (the EAL loaded the plugin)",
             info[-600:])
        t.ok(a.wait_link(0) and b.wait_link(0), "both links come up on the simulated fabric")
        exact_broadcast(t, a, b, "installed, Hca1 to Hca2")
        exact_broadcast(t, b, a, "installed, Hca2 to Hca1")
        for tp in tps:
            tp.quit()
        tps.clear()
    finally:
        kill_all(tps)


def check_verbs_glue(t, work):
    p = run(["dpdk-testpmd", "--no-huge", "-m", "256", f"--file-prefix=instv{os.getpid()}", "--no-pci",
             "--vdev=net_ipoib0,provider=verbs,dev=nosuch", "--", "-i", "--total-num-mbufs=2048"],
            cwd=work, timeout=60, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    line = next((ln for ln in out.splitlines() if "net_ipoib0:" in ln), "")
    t.note(f"verbs provider: {line}")
    t.ok("provider verbs" in line and "glue" not in line,
         "the verbs provider loads its glue from the plugin directory's -glue/ (it then looks for RDMA devices)",
         out[-1500:])


def check_example(t, env, work):
    from fabric_client import client_env
    src = "/usr/share/doc/ipoib-dpdk-dev/examples/ipoib_native"
    dst = os.path.join(work, "ipoib_native")
    shutil.copytree(src, dst)
    p = run(["make", "-C", dst])
    if not t.ok(p.returncode == 0 and os.path.isfile(os.path.join(dst, "ipoib_native")),
                "examples/ipoib_native builds with its Makefile against libdpdk-ipoib.pc", p.stdout + p.stderr):
        return

    def start(host, prefix, *args):
        return subprocess.Popen([os.path.join(dst, "ipoib_native"), "--no-huge", "-m", "256",
                                 f"--file-prefix={prefix}{os.getpid()}", "--no-pci", "--vdev=net_ipoib0,l2=ipoib",
                                 "--", *args], env=client_env(env, host), cwd=work, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    procs = []
    try:
        procs.append(start("Hca1", "ipo", "pong", "8"))
        time.sleep(3)
        procs.append(start("Hca2", "ipi", "ping", "50"))
        ping_out, _ = procs[1].communicate(timeout=60)
        pong_out, _ = procs[0].communicate(timeout=60)
    finally:
        for q in procs:  # on a timeout too: nothing outlives the test
            if q.poll() is None:
                q.kill()
                q.wait()
    m = re.search(r"ping: sent (\d+) received (\d+)", ping_out)
    t.note(m.group(0) if m else ping_out[-300:])
    t.ok(m and int(m.group(1)) == 50 and int(m.group(2)) > 0,
         "the installed ipoib_native (no -d) pings across the fabric and gets replies",
         ping_out[-800:] + pong_out[-800:])


def check_tools(t):
    p = run(["ipoib-addr", "--help"])
    t.ok(p.returncode == 0 and "--scope" in p.stdout, "ipoib-addr --help prints its options on stdout")
    for tool, word in (("ipoib-addr", "--guid"), ("ipoib-fabric", "up")):
        page = run(["man", "-P", "cat", tool], env=dict(os.environ, MANWIDTH="100")).stdout
        t.ok(tool in page and word in page, f"man {tool} shows its page")


# ---------------------------------------------------------------- outside

def main(src, build):
    t = Tap()
    if os.geteuid() != 0:
        t.ok(False, "the install test needs root (dpkg, mount namespaces, chroot)")
        t.finish()
    pmd_dir = dpdk_pmd_path()
    system_pmd = os.path.join(pmd_dir, PMD_FILE)
    t.ok(pmd_dir and not os.path.exists(system_pmd), f"before: no {PMD_FILE} in this machine's {pmd_dir}")
    out = os.path.join(build, "install-test")
    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    p = run(["bash", os.path.join(src, "buildtools", "build-deb.sh"), os.path.join(out, "deb")], timeout=1200)
    t.note(f"build-deb.sh took {time.monotonic() - start:.0f} s")
    debs = [os.path.basename(x) for x in p.stdout.split()]
    if not t.ok(p.returncode == 0 and any(d.startswith("ipoib-dpdk_") for d in debs) and
                any(d.startswith("ipoib-dpdk-dev_") for d in debs),
                "buildtools/build-deb.sh builds both packages and lintian reports no error", p.stderr[-3000:]):
        t.finish()
    t.note("lintian: " + (open(os.path.join(out, "deb", "lintian.txt")).read().strip() or "nothing to say"))

    # The chroot: an overlay over / with its writes in a tmpfs, in a mount namespace of its own.
    root_tmp = tempfile.mkdtemp(prefix="chroot-", dir=out)
    binds = sorted({os.path.realpath(src), os.path.realpath(build)})
    script = f"""
set -e
T={root_tmp}
mount -t tmpfs -o size=4g tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$T/upper",workdir="$T/work" "$T/root"
for d in /proc /sys /dev /run/netns; do [ -d "$d" ] && mount --rbind "$d" "$T/root$d"; done
for d in {' '.join(binds)}; do mkdir -p "$T/root$d"; mount --bind "$d" "$T/root$d"; done
mkdir -p "$T/root/tmp/install-test"
set +e
chroot "$T/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    python3 {os.path.abspath(__file__)} --inside {os.path.join(out, 'deb')} /tmp/install-test
rc=$?
python3 {os.path.abspath(__file__)} --leftovers "$T/upper"
exit $rc
"""
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in p.stdout:
            line = line.rstrip("\n")
            m = re.match(r"(not ok|ok) \d+ - (.*)", line)
            if m:
                t.ok(m.group(1) == "ok", m.group(2))
            elif line.startswith("#"):
                print(line, flush=True)
            else:
                print(f"# {line}", flush=True)
        p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    t.ok(p.returncode == 0 and t.count > 3, "the chroot part ran to its end", f"exit status {p.returncode}")
    t.ok(not os.path.exists(system_pmd), f"after: still no {PMD_FILE} in this machine's {pmd_dir}")
    t.ok(not os.path.ismount(os.path.join(root_tmp, "root")), "the chroot's mounts are gone with its namespace")
    shutil.rmtree(root_tmp, ignore_errors=True)
    if not t.failed:
        shutil.rmtree(out, ignore_errors=True)
    t.finish()


def leftovers(upper):
    """What the installed-then-purged system left in the overlay's upper layer besides dpkg's records,
    logs, caches and the test's own scratch directory."""
    t = Tap()
    allowed = ("var/lib/dpkg/", "var/log/", "var/cache/", "tmp/", "run/", "root/", "etc/ld.so.cache",
               "var/lib/man-db/")
    left = []
    for d, _, names in os.walk(upper):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), upper)
            if not rel.startswith(allowed):
                left.append(rel)
    t.eq(sorted(left), [], "after the purge the installed system differs from this machine only in dpkg's records")


if __name__ == "__main__":
    if sys.argv[1] == "--inside":
        sys.exit(1 if inside(sys.argv[2], sys.argv[3]).failed else 0)
    elif sys.argv[1] == "--leftovers":
        leftovers(sys.argv[2])
    else:
        main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
