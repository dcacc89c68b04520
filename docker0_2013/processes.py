"""Finding and ending a container's processes, through /proc and its cgroups.
2013 had none of this: `kill` sent SIGKILL to lxc-start (container.go), and
`lxc-stop` did the rest.

Runs in: the daemon, on its event loop (init_pid, wait_for_pid) and in a worker
thread (kill_container, which may wait for a freezer).

Why more than one signal: the init's death alone makes the kernel end its PID
namespace, but a process that joined the cgroup from outside the namespace,
or a fork bomb the kernel is slow to reap, would be missed; so the cgroup is
emptied too (kill_cgroup: cgroup.kill on cgroup2, the v1 freezer then SIGKILL),
which needs nothing from the container's own processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from .utils import mountinfo, read_file

log = logging.getLogger("docker0")


# -- The container's init, below its shim ------------------------------------------------


def container_init(pid: int) -> int | None:
    """The first process below `pid` (the shim) in another PID namespace than ours."""
    try:
        ours = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    for _ in range(3):                   # shim -> lxc-start -> init
        children = child_pids(pid)
        if not children:
            return None
        pid = children[0]
        try:
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != ours:
                return pid
        except OSError:
            return None
    return None


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def catches(pid: int | None, sig: int) -> bool:
    """Has process `pid` installed a handler for `sig` (SigCgt in /proc/PID/status)?"""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
        return bool(int(caught, 16) & (1 << (sig - 1)))
    except (OSError, StopIteration, TypeError):
        return False


async def wait_for_pid(pid: int, fd: int | None = None) -> None:
    """Wait for any process to end, child or not, with a pidfd (its own, or `fd`)."""
    try:
        fd = os.pidfd_open(pid) if fd is None else fd
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_reader(fd, ended.set)
    try:
        await ended.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


# -- Ending a container through its cgroup -----------------------------------------------


def kill_container(init: int) -> bool:
    """SIGKILL the init and every process in the container's cgroup (kill_cgroup)."""
    cgroups = payload_cgroups(init)
    try:
        os.kill(init, signal.SIGKILL)
    except ProcessLookupError:
        return False
    kill_cgroup(cgroups)
    return True


def cgroup_mounts() -> dict[str, str]:
    """Where each hierarchy is mounted: controller name (or "" for cgroup2) -> mount point."""
    mounts = {}
    for point, fstype, options in mountinfo():
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup":
            for option in options.split(","):
                mounts.setdefault(option, point)
    return mounts


def payload_cgroups(pid: int) -> dict[str, str]:
    """The host directories of the cgroups of `pid` that LXC made for a container
    (named lxc.payload.<name>), by controller ("" for cgroup2). Nothing for a
    process that is not (yet) in one: its cgroup might be the daemon's own."""
    mounts = cgroup_mounts()
    found = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "/lxc.payload." not in path:
            continue
        for controller in controllers.split(",") if controllers else [""]:
            if controller in mounts:
                found[controller] = mounts[controller] + path
    return found


def cgroup_pids(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def kill_cgroup(cgroups: dict[str, str], timeout: float = 5.0) -> None:
    """SIGKILL every process in a container's cgroup, whatever they do meanwhile.

    cgroup2 has cgroup.kill, which does it in the kernel at once. Without it
    (cgroup v1), the freezer stops every process first, so a fork bomb cannot
    outrun the signals; each gets SIGKILL, then the cgroup is thawed for them
    to die. Without a freezer, SIGKILL is repeated until the cgroup is empty.
    """
    v2 = cgroups.get("")
    if v2 and os.path.exists(os.path.join(v2, "cgroup.kill")):
        write_cgroup(v2, "cgroup.kill", "1")
        return
    freezer = cgroups.get("freezer")
    deadline = time.monotonic() + timeout
    if freezer:
        write_cgroup(freezer, "freezer.state", "FROZEN")
        while read_cgroup(freezer, "freezer.state") == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.001)
    try:
        directories = [freezer] if freezer else list(cgroups.values())
        while time.monotonic() < deadline:
            pids = [pid for d in directories for pid in cgroup_pids(d)]
            if not pids:
                return
            kill_all(pids)
            if freezer:
                return                       # frozen: none of them forked since
            time.sleep(0.005)
    finally:
        if freezer:
            write_cgroup(freezer, "freezer.state", "THAWED")


def read_cgroup(directory: str, name: str) -> str:
    return read_file(os.path.join(directory, name))


def write_cgroup(directory: str, name: str, value: str) -> None:
    try:
        with open(os.path.join(directory, name), "w") as f:
            f.write(value)
    except OSError as e:               # the cgroup went away: its processes are gone
        log.debug("%s/%s: %s", directory, name, e)


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of `pids`; one that has gone meanwhile is passed over."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
