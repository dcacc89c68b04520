"""Run latency: `docker0 run base /bin/true` against plain `lxc-execute` of the same rootfs.

Both run in one private network namespace with lxcbr0, in the same process
run, 20 times each (after a warm-up); the medians and their ratio are printed.
The baseline gets the same LXC network setup (a veth on the bridge with an
address) and the same overlayfs root, so the ratio is docker0's own cost:
client start, protocol, container record, mount, iptables, sysinit.

    /opt/docker0/bin/python bench/run_latency.py [RUNS]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from netns import PYTHON, REPO, Daemon  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def baseline_config(rootfs: str) -> str:
    return "\n".join([
        "lxc.uts.name = bench", "lxc.net.0.type = veth", "lxc.net.0.flags = up",
        "lxc.net.0.link = lxcbr0", "lxc.net.0.name = eth0", "lxc.net.0.ipv4.address = 10.0.3.250/24",
        f"lxc.rootfs.path = {rootfs}", "lxc.autodev = 1", "lxc.console.path = none",
        "lxc.mount.entry = proc proc proc nosuid,nodev,noexec,create=dir 0 0", ""])


def main() -> None:
    base = subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")], check=True,
                          capture_output=True).stdout
    daemon = Daemon()
    work = tempfile.mkdtemp(prefix="bench-run-")
    rootfs = os.path.join(work, "rootfs")
    try:
        image = daemon.call("import", "-", "base", stdin=base).strip()
        full = [i for i in os.listdir(os.path.join(daemon.root, "graph")) if i.startswith(image)][0]
        for d in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(work, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={daemon.root}/graph/{full}/layer,upperdir={work}/upper,"
                        f"workdir={work}/work", rootfs], check=True)
        os.makedirs(os.path.join(work, "lxc", "bench"))
        config = os.path.join(work, "lxc", "bench", "config")
        with open(config, "w") as f:
            f.write(baseline_config(rootfs))
        ns = ["ip", "netns", "exec", daemon.netns.name]
        docker0 = ns + [PYTHON, "-m", "docker0_2013", "run", "base", "/bin/true"]
        lxc = ns + ["lxc-execute", "-n", "bench", "-P", os.path.join(work, "lxc"), "-f", config,
                    "--", "/bin/true"]
        timed(docker0), timed(lxc)                      # warm caches
        ours = [timed(docker0) for _ in range(RUNS)]
        theirs = [timed(lxc) for _ in range(RUNS)]
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"run latency: docker0 run {a * 1000:.1f} ms, lxc-execute {b * 1000:.1f} ms "
              f"(median of {RUNS}); ratio {a / b:.2f} (target <= 1.5)")
    finally:
        subprocess.run(["umount", rootfs], capture_output=True)
        subprocess.run(["rm", "-rf", work])
        daemon.destroy()


if __name__ == "__main__":
    main()
