"""Run latency: `docker0 run base /bin/true` against plain `lxc-execute` of the same rootfs.

The bench starts a daemon in a private network namespace with lxcbr0, then
re-runs itself inside that namespace (with the host's cgroups visible, as the
daemon sees them), so both commands are timed as direct child processes:

- docker0: the real client, `python -m docker0_2013 run base /bin/true`
  (client start, protocol, container record, overlay mount, sysinit, teardown);
- baseline: `lxc-execute` of the same image layer, through an overlayfs mount,
  with a veth on the same bridge and an address: the same network setup.

Each is run RUNS times after a warm-up; the medians and their ratio are printed.

    /opt/docker0/bin/python bench/run_latency.py [RUNS]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from netns import PYTHON, REPO, Daemon, cgroup_mounts_script  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def baseline_config(rootfs: str) -> str:
    return "\n".join([
        "lxc.uts.name = bench", "lxc.net.0.type = veth", "lxc.net.0.flags = up",
        "lxc.net.0.link = lxcbr0", "lxc.net.0.name = eth0", "lxc.net.0.mtu = 1500",
        "lxc.net.0.ipv4.address = 10.0.3.250/24", f"lxc.rootfs.path = {rootfs}",
        "lxc.autodev = 1", "lxc.console.path = none",
        "lxc.mount.entry = proc proc proc nosuid,nodev,noexec,create=dir 0 0", ""])


def inner(layer: str) -> None:
    """Inside the namespace: time both commands."""
    work = tempfile.mkdtemp(prefix="bench-run-")
    rootfs = os.path.join(work, "rootfs")
    try:
        for d in ("upper", "work", "rootfs", "lxc/bench"):
            os.makedirs(os.path.join(work, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={layer},upperdir={work}/upper,workdir={work}/work", rootfs], check=True)
        config = os.path.join(work, "lxc", "bench", "config")
        with open(config, "w") as f:
            f.write(baseline_config(rootfs))
        docker0 = [PYTHON, "-m", "docker0_2013", "run", "base", "/bin/true"]
        lxc = ["lxc-execute", "-n", "bench", "-P", os.path.join(work, "lxc"), "-f", config, "--", "/bin/true"]
        timed(docker0), timed(lxc)                      # warm caches
        ours = [timed(docker0) for _ in range(RUNS)]
        theirs = [timed(lxc) for _ in range(RUNS)]
        client = statistics.median(timed([PYTHON, "-m", "docker0_2013", "version"]) for _ in range(RUNS))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"of which the client's own round trip (`docker0 version`): {client * 1000:.1f} ms", flush=True)
        print(f"run latency: docker0 run {a * 1000:.1f} ms, lxc-execute {b * 1000:.1f} ms "
              f"(median of {RUNS}); ratio {a / b:.2f} (target <= 1.5)", flush=True)
    finally:
        subprocess.run(["umount", rootfs], capture_output=True)
        subprocess.run(["rm", "-rf", work])


def main() -> None:
    base = subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")], check=True,
                          capture_output=True).stdout
    daemon = Daemon()
    try:
        image = daemon.call("import", "-", "base", stdin=base).strip()
        full = [i for i in os.listdir(os.path.join(daemon.root, "graph")) if i.startswith(image)][0]
        layer = os.path.join(daemon.root, "graph", full, "layer")
        subprocess.run(["ip", "netns", "exec", daemon.netns.name, "sh", "-c", cgroup_mounts_script(),
                        "sh", PYTHON, os.path.abspath(__file__), str(RUNS), "--inner", layer], check=True)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    if "--inner" in sys.argv:
        inner(sys.argv[sys.argv.index("--inner") + 1])
    else:
        main()
