"""docker0 against what users run instead: Docker (Debian's docker.io: dockerd,
containerd, runc) and podman, with plain `lxc-execute` as the floor.

Every engine gets the same busybox rootfs (contrib/mkimage-busybox), its own
private network namespace and its own data under a temporary directory:

- docker0: a real daemon (tests/netns.py's Daemon) with lxcbr0 in its namespace;
- Docker: `dockerd --data-root --exec-root --pidfile -H unix://...` in another
  namespace, which starts its own private containerd under the exec root; its
  default bridge and iptables rules live in that namespace;
- podman: `--root --runroot --tmpdir` under the temporary directory,
  `--cgroup-manager=cgroupfs --events-backend=file`, its default network, in a
  third namespace. It runs with `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`:
  as root podman asks for nofile 1048576 and nproc 4194304, which needs
  CAP_SYS_RESOURCE, and this sandbox's root lacks it ("error setting rlimit
  type 7: operation not permitted").
- lxc-execute: the image's layer directory as a plain rootfs (no overlay), with
  a veth on docker0's lxcbr0 and an address.

The bench re-runs itself inside docker0's namespace (host cgroups mounted
again, as the daemon sees them, like run_latency.py) and enters the other
namespaces with setns in the child before exec, so every command is timed as
a direct child. Measurements are interleaved A B C D D C B A. At the end it
stops what it started by PID (dockerd, which stops its containerd) and removes
its namespaces and directories.

    /opt/docker0/bin/python bench/peers.py [RUNS]

One line per figure: each engine's median and docker0's ratio to each.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import CLIENT, base_image, daemon_with_base, host_rooted, reexec_inside, rss_kb
from netns import CLONE_NEWNET, Netns, cgroup_mounts_script, kill_until_gone, unmount_below

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20
DOCKER = "/usr/bin/docker"      # Debian's docker.io client (not any other `docker` on PATH)
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns: str):
    """A preexec_fn: join `netns` (network only) in the child, before exec."""
    def join() -> None:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
    return join


class Engine:
    """How one engine spells a command, and which namespace it runs in."""

    def __init__(self, name: str, argv: list[str], netns: str | None, image: str, run_flags: list[str]):
        self.name, self.argv, self.netns, self.image, self.run_flags = name, argv, netns, image, run_flags

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        return subprocess.run(self.command(*args), check=True,
                              preexec_fn=enter(self.netns) if self.netns else None, **kw)

    def timed(self, *args: str, stdout=subprocess.DEVNULL) -> float:
        started = time.perf_counter()
        subprocess.run(self.command(*args), check=True, stdout=stdout, stderr=subprocess.PIPE,
                       preexec_fn=enter(self.netns) if self.netns else None)
        return time.perf_counter() - started

    def run_rm(self, *argv: str) -> list[str]:
        if self.name == "docker0":          # 2013 had no --rm
            return ["run", self.image, *argv]
        return ["run", "--rm", *self.run_flags, self.image, *argv]


def floor_config(work: str, layer: str) -> str:
    """lxc-execute of the layer directory itself, on lxcbr0 with an address."""
    config = os.path.join(work, "floor.conf")
    with open(config, "w") as f:
        f.write("\n".join([
            "lxc.uts.name = floor", "lxc.net.0.type = veth", "lxc.net.0.flags = up",
            "lxc.net.0.link = lxcbr0", "lxc.net.0.name = eth0", "lxc.net.0.mtu = 1500",
            "lxc.net.0.ipv4.address = 10.0.3.250/24", f"lxc.rootfs.path = {layer}",
            "lxc.autodev = 1", "lxc.console.path = none",
            "lxc.mount.entry = proc proc proc nosuid,nodev,noexec,create=dir 0 0", ""]))
    os.makedirs(os.path.join(work, "lxc"), exist_ok=True)
    return config


def interleaved(jobs: list[tuple[str, callable]], runs: int) -> dict[str, list[float]]:
    """A B C D D C B A ..., `runs` times each, after one warm-up each."""
    for _, job in jobs:
        job()
    times: dict[str, list[float]] = {name: [] for name, _ in jobs}
    for round in range(runs):
        for name, job in jobs if round % 2 == 0 else list(reversed(jobs)):
            times[name].append(job())
    return times


def report(figure: str, times: dict[str, list[float]], unit: str = "ms", scale: float = 1000,
           higher_is_better: bool = False) -> None:
    medians = {name: statistics.median(values) * scale for name, values in times.items()}
    ours = medians["docker0"]
    parts = [f"{name} {value:.1f} {unit}" for name, value in medians.items()]
    ratios = [f"{'docker0/' + name}: {ours / value:.2f}" for name, value in medians.items()
              if name != "docker0" and value]
    n = min(len(v) for v in times.values())
    print(f"{figure}: {', '.join(parts)} (median of {n}); ratios {', '.join(ratios)}"
          + (" (higher is better)" if higher_is_better else ""), flush=True)


def inner(layer: str, docker0_ns: str, docker_ns: str, podman_ns: str, work: str, tarball: str) -> None:
    docker0 = Engine("docker0", CLIENT, None, "base", [])
    docker = Engine("docker", [DOCKER, "-H", f"unix://{work}/docker.sock"], None, "bb", [])
    podman = Engine("podman", ["podman", "--root", f"{work}/podman/root", "--runroot", f"{work}/podman/run",
                               "--tmpdir", f"{work}/podman/tmp", "--storage-driver=overlay",
                               "--cgroup-manager=cgroupfs", "--events-backend=file"],
                    podman_ns, "bb", LIMITS)
    engines = [docker0, docker, podman]
    podman.run("import", f"{work}/bb.tar", "bb")
    floor = floor_config(work, layer)
    lxc = lambda *argv: ["lxc-execute", "-n", "floor", "-P", f"{work}/lxc", "-f", floor, "--", *argv]  # noqa: E731

    def timer(engine: Engine, *argv: str):
        return lambda: engine.timed(*engine.run_rm(*argv))

    def floor_timer(*argv: str, stdout=subprocess.DEVNULL):
        def job() -> float:
            started = time.perf_counter()
            subprocess.run(lxc(*argv), check=True, stdout=stdout, stderr=subprocess.PIPE)
            return time.perf_counter() - started
        return job

    # 1. Start latency.
    jobs = [(e.name, timer(e, "/bin/true")) for e in engines] + [("lxc-execute", floor_timer("/bin/true"))]
    report("start latency (run /bin/true)", interleaved(jobs, RUNS))

    # 2. Detached start (removed untimed afterwards).
    started: dict[str, list[str]] = {e.name: [] for e in engines}

    def detached(engine: Engine):
        def job() -> float:
            t = time.perf_counter()
            out = engine.run("run", "-d", *engine.run_flags, engine.image, "sleep", "1000").stdout
            elapsed = time.perf_counter() - t
            started[engine.name].append(out.decode().strip())
            return elapsed
        return job
    report("detached start (run -d sleep)", interleaved([(e.name, detached(e)) for e in engines], RUNS))
    for engine in engines:
        remove_all(engine, started[engine.name])

    # 3. Import of the tarball (the image removed untimed after each).
    size = os.path.getsize(tarball)

    def importer(engine: Engine):
        def job() -> float:
            subprocess.run(["sync"])
            t = time.perf_counter()
            with open(tarball, "rb") as f:
                if engine.name == "docker0":
                    out = engine.run("import", "-", "big", stdin=f).stdout
                else:
                    out = engine.run("import", tarball, "big").stdout
            elapsed = time.perf_counter() - t
            engine.run("rmi", "big" if engine.name != "docker0" else out.decode().strip())
            return elapsed
        return job

    def untar() -> float:
        target = tempfile.mkdtemp(dir=work, prefix="untar-")
        subprocess.run(["sync"])
        t = time.perf_counter()
        subprocess.run(["tar", "-xpf", tarball, "-C", target], check=True)
        elapsed = time.perf_counter() - t
        shutil.rmtree(target)
        return elapsed
    imports = max(3, RUNS // 4)
    times = interleaved([(e.name, importer(e)) for e in engines] + [("tar -x", untar)], imports)
    report(f"import of a {size >> 20} MB tarball (MB/s)",
           {k: [size / 1e6 / v for v in vs] for k, vs in times.items()}, "MB/s", 1, higher_is_better=True)

    # 4. 300 MB of container stdout, read through a pipe.
    megabytes = 300
    nbytes = megabytes << 20

    def streamer(command: list[str], netns: str | None):
        def job() -> float:
            t = time.perf_counter()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    preexec_fn=enter(netns) if netns else None)
            got = 0
            while data := proc.stdout.read(1 << 16):
                got += len(data)
            proc.wait()
            if got != nbytes:
                raise RuntimeError(f"{command[:3]} wrote {got} bytes, not {nbytes}")
            return time.perf_counter() - t
        return job
    argv = ("head", "-c", str(nbytes), "/dev/zero")
    jobs = [(e.name, streamer(e.command(*e.run_rm(*argv)), e.netns)) for e in engines]
    jobs.append(("lxc-execute", streamer(lxc(*argv), None)))
    times = interleaved(jobs, max(3, RUNS // 4))
    report(f"{megabytes} MB of stdout through a pipe (MB/s)",
           {k: [nbytes / 1e6 / v for v in vs] for k, vs in times.items()}, "MB/s", 1, higher_is_better=True)

    # 5. Memory idle, then with 20 running containers (docker0's daemon, wrappers and
    #    lxc-execute monitors; dockerd, containerd and shims; podman's conmons).
    me = {os.getpid(), os.getppid()}
    namespaces = {"docker0": docker0_ns, "docker": docker_ns, "podman": podman_ns}
    idle = {name: rss_kb(host_rooted(ns, me)) for name, ns in namespaces.items()}
    for engine in engines:
        started[engine.name] = []
        for _ in range(20):
            detached(engine)()
    time.sleep(2)
    busy = {name: rss_kb(host_rooted(ns, me)) for name, ns in namespaces.items()}
    for engine in engines:
        remove_all(engine, started[engine.name])
    report("resident memory idle (MB)", {k: [v / 1024 / 1000] for k, v in idle.items()}, "MB", 1000)
    report("resident memory with 20 running containers (MB)",
           {k: [v / 1024 / 1000] for k, v in busy.items()}, "MB", 1000)

    # 6. `ps -a` with 200 containers.
    for engine in engines:
        for _ in range(200):
            if engine.name == "docker0":
                engine.run("run", engine.image, "/bin/true")
            else:
                engine.run("create", *engine.run_flags, engine.image, "/bin/true")
    report("ps -a with 200 containers", interleaved([(e.name, lambda e=e: e.timed("ps", "-a")) for e in engines],
                                                    RUNS))


def remove_all(engine: Engine, ids: list[str]) -> None:
    ids = [i for i in ids if i]
    if not ids:
        return
    if engine.name == "docker0":
        engine.run("kill", *ids)
        engine.run("rm", *ids)
    else:
        engine.run("rm", "-f", *ids)


def make_tarball(path: str) -> None:
    """About 200 MB of mixed files (bench/import_speed.py's tree)."""
    import import_speed
    tree = tempfile.mkdtemp(dir=os.path.dirname(path), prefix="tree-")
    import_speed.build_tree(tree, 200 << 20)
    subprocess.run(["tar", "-cf", path, "-C", tree, "."], check=True)
    shutil.rmtree(tree)


def start_dockerd(netns: Netns, work: str) -> subprocess.Popen:
    log = open(f"{work}/dockerd.log", "ab")
    proc = netns.popen("sh", "-c", cgroup_mounts_script(), "sh", "dockerd", "--data-root", f"{work}/docker/data",
                       "--exec-root", f"{work}/docker/exec", "--pidfile", f"{work}/docker/dockerd.pid",
                       "-H", f"unix://{work}/docker.sock", "--iptables=true",
                       "--containerd-namespace", "bench", "--containerd-plugins-namespace", "bench-plugins",
                       stdout=log, stderr=log)
    for _ in range(300):
        if subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", "version"],
                          capture_output=True).returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"dockerd did not start: see {work}/dockerd.log")


def main() -> None:
    work = tempfile.mkdtemp(prefix="bench-peers-")
    had_run_containers = os.path.exists("/run/containers")
    daemon, layer = daemon_with_base()
    docker_ns, podman_ns = Netns(bridge=None), Netns(bridge=None)
    dockerd = None
    try:
        with open(f"{work}/bb.tar", "wb") as f:
            f.write(base_image())
        make_tarball(f"{work}/big.tar")
        dockerd = start_dockerd(docker_ns, work)
        subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", "import", f"{work}/bb.tar", "bb"],
                       check=True, capture_output=True)
        reexec_inside(daemon, __file__, str(RUNS), layer, daemon.netns.name, docker_ns.name, podman_ns.name,
                      work, f"{work}/big.tar")
    finally:
        if dockerd is not None:
            subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", "rm", "-f", "-v"] +
                           subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", "ps", "-aq"],
                                          capture_output=True, text=True).stdout.split(), capture_output=True)
            dockerd.send_signal(signal.SIGTERM)     # it stops its containerd
            try:
                dockerd.wait(30)
            except subprocess.TimeoutExpired:
                dockerd.kill()
        for ns in (docker_ns, podman_ns):
            kill_until_gone(ns.pids)
            ns.destroy()
        daemon.destroy()
        unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
        if not had_run_containers:        # podman's network state (netavark's ipam.db)
            shutil.rmtree("/run/containers", ignore_errors=True)


if __name__ == "__main__":
    if "--inner" in sys.argv:
        args = sys.argv[sys.argv.index("--inner") + 1:]
        RUNS = int(args[0])
        inner(*args[1:])
    else:
        main()
