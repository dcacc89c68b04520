"""Shared by the bench scripts: a daemon with the base image, the namespace re-exec,
and an LXC baseline built from the same image layer (see run_latency.py)."""
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

from docker0_2013 import lxc  # noqa: E402

# The command users run (bin/docker0, as installed), on this checkout's package.
CLIENT = [PYTHON, os.path.join(REPO, "bin", "docker0")]
os.environ["PYTHONPATH"] = REPO


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def timed(command: list[str]) -> float:
    """Seconds a command takes, start to exit (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def base_image() -> bytes:
    return subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")], check=True,
                          capture_output=True).stdout


def daemon_with_base() -> tuple[Daemon, str]:
    """A daemon with `base` imported, and the path of base's layer."""
    daemon = Daemon()
    image = daemon.call("import", "-", "base", stdin=base_image()).strip()
    full = [i for i in os.listdir(os.path.join(daemon.root, "graph")) if i.startswith(image)][0]
    return daemon, os.path.join(daemon.root, "graph", full, "layer")


def reexec_inside(daemon: Daemon, script: str, *args: str) -> None:
    """Run `script --inner ARGS` in the daemon's namespace, host cgroups visible (for LXC)."""
    subprocess.run(["ip", "netns", "exec", daemon.netns.name, "sh", "-c", cgroup_mounts_script(),
                    "sh", PYTHON, os.path.abspath(script), "--inner", *args], check=True)


class Baseline:
    """Plain lxc-execute containers on overlay mounts of the image layer, on lxcbr0
    (under docker0's AppArmor profile where the kernel has AppArmor)."""

    def __init__(self, layer: str, count: int = 1) -> None:
        self.work = tempfile.mkdtemp(prefix="bench-lxc-")
        self.configs = []
        for i in range(count):
            top = os.path.join(self.work, str(i))
            for d in ("upper", "work", "rootfs", "lxc"):
                os.makedirs(os.path.join(top, d))
            rootfs = os.path.join(top, "rootfs")
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={layer},upperdir={top}/upper,workdir={top}/work", rootfs], check=True)
            config = os.path.join(top, "config")
            with open(config, "w") as f:
                f.write("\n".join([
                    f"lxc.uts.name = bench{i}", "lxc.net.0.type = veth", "lxc.net.0.flags = up",
                    "lxc.net.0.link = lxcbr0", "lxc.net.0.name = eth0", "lxc.net.0.mtu = 1500",
                    f"lxc.net.0.ipv4.address = 10.0.3.{150 + i}/24", f"lxc.rootfs.path = {rootfs}",
                    "lxc.autodev = 1", "lxc.console.path = none",
                    "lxc.mount.entry = proc proc proc nosuid,nodev,noexec,create=dir 0 0",
                    # Where the kernel has AppArmor, the profile docker0's containers run
                    # under (the bench's daemon loaded it), not LXC's per-start `generated` one:
                    # the same confinement on both sides.
                    *lxc.apparmor_lines(), ""]))
            self.configs.append((top, config))

    def command(self, i: int, *argv: str) -> list[str]:
        top, config = self.configs[i]
        return ["lxc-execute", "-n", f"bench{i}", "-P", os.path.join(top, "lxc"), "-f", config, "--", *argv]

    def close(self) -> None:
        for top, _ in self.configs:
            subprocess.run(["umount", os.path.join(top, "rootfs")], capture_output=True)
        subprocess.run(["rm", "-rf", self.work])


def wall(commands: list[list[str]], **kw) -> float:
    """Seconds until every command, all started at once, has ended (each must succeed)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
             for c in commands]
    outs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - started
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"{p.args} failed: {err.decode()}")
    return elapsed


def rss_kb(pids: list[int], file: str = "status", key: str = "VmRSS:") -> int:
    """The summed VmRSS of `pids`; with ("smaps_rollup", "Pss:") their proportional set
    size, which counts a page shared by N of them (a fork's) as 1/N in each."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/{file}") as f:
                total += int(next(line for line in f if line.startswith(key)).split()[1])
        except (OSError, StopIteration):
            pass
    return total


def host_rooted(netns: str, exclude: set[int]) -> list[int]:
    """The engine's own processes: those in its namespace with the host's root
    (a container's processes have the container's root)."""
    target = os.stat(f"/run/netns/{netns}").st_ino
    me = os.readlink("/proc/self/root")
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        pid = int(entry)
        try:
            if (pid not in exclude and os.stat(f"/proc/{pid}/ns/net").st_ino == target
                    and os.readlink(f"/proc/{pid}/root") == me):
                found.append(pid)
        except OSError:
            pass
    return found
