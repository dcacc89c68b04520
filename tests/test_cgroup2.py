"""The daemon on a cgroup v2 host (issue 13): only a cgroup2 mount at /sys/fs/cgroup,
as on Debian 12 and every 2026 distribution, in the daemon's own mount namespace.

Its controllers are those this host has not bound to a v1 hierarchy; each test
reads them and asserts the branch they call for (-m applied or refused, the
pids limit applied or left out with a log line), rather than skipping.
"""
from __future__ import annotations

import glob
import os
import re
import time

import pytest

from helpers import NOTHING, run_detached, settled_leftovers
from netns import Daemon, cgroup_mounts_script


@pytest.fixture
def d2(base_tar):
    """A daemon that sees only cgroup2, with the busybox `base` image imported."""
    daemon = Daemon(cgroups="v2")
    try:
        assert re.fullmatch(r"[0-9a-f]{12}\n", daemon.call("import", "-", "base", stdin=base_tar))
        yield daemon
    finally:
        daemon.destroy()


def v2_shell(d: Daemon, script: str) -> str:
    """`sh -c script` with the v2 layout mounted, in the daemon's network namespace."""
    return d.netns.exec("sh", "-c", cgroup_mounts_script("v2"), "sh", "sh", "-c", script).stdout


def v2_controllers(d: Daemon) -> list[str]:
    return v2_shell(d, "cat /sys/fs/cgroup/cgroup.controllers").split()


def v2_cgroups_of(d: Daemon, container_id: str) -> list[str]:
    """Every directory of the cgroup2 hierarchy named after the container."""
    found = v2_shell(d, "find /sys/fs/cgroup -type d -name 'lxc.*'").split()
    return [p for p in found if container_id in p]


def full_id(d: Daemon, short: str) -> str:
    return next(n for n in os.listdir(os.path.join(d.root, "containers")) if n.startswith(short))


def payload_cgroup(d: Daemon, short_id: str) -> str:
    """The v2 cgroup (a path below the hierarchy's root) that LXC made for the
    running container, as its processes' /proc/PID/cgroup names it."""
    name = "/lxc.payload." + full_id(d, short_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    path = next((line[3:].strip() for line in f if line.startswith("0::")), "")
            except OSError:
                continue
            if path.endswith(name):
                return path
        time.sleep(0.05)
    raise AssertionError(f"no process in a cgroup {name}")


def test_run_on_a_cgroup2_host(d2):
    assert d2.call("run", "base", "echo", "hi") == "hi\n"
    assert d2.call("run", "base", "sh", "-c", "exit 3") == ""
    assert d2.call("ps", "-a", "-q").count("\n") == 2
    cid = run_detached(d2, "base", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & done; echo ready; wait")
    long_id = full_id(d2, cid)
    deadline = time.monotonic() + 30
    while d2.call("logs", cid) != "ready\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert v2_shell(d2, f"cat /sys/fs/cgroup{payload_cgroup(d2, cid)}/cgroup.procs").count("\n") >= 9
    assert v2_cgroups_of(d2, long_id)
    assert d2.call("kill", cid) == ""
    assert d2.call("wait", cid) == "-1\n"                   # 2013: killed
    assert d2.call("rm", cid) == ""
    assert v2_cgroups_of(d2, long_id) == []
    assert settled_leftovers(d2) == NOTHING


def test_device_policy_on_cgroup2(d2):
    """lxc.cgroup2.devices.* is a BPF program on v2: it needs no controller."""
    out = d2.call("run", "base", "sh", "-c", "mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk >/dev/null "
                  "&& echo DISK-READ; mknod /tmp/null c 1 3 && echo x > /tmp/null && echo NULL-WRITTEN")
    assert "DISK-READ" not in out and "Operation not permitted" in out, out
    assert "NULL-WRITTEN" in out, out          # an allowed node: the policy, not mknod itself
    assert settled_leftovers(d2) == NOTHING


def test_pids_limit_on_cgroup2(d2):
    cid = run_detached(d2, "base", "sleep", "1000")
    config = open(glob.glob(os.path.join(d2.root, "containers", cid + "*", "config.lxc"))[0]).read()
    if "pids" in v2_controllers(d2):
        assert "lxc.cgroup2.pids.max = 4096\n" in config
        assert v2_shell(d2, f"cat /sys/fs/cgroup{payload_cgroup(d2, cid)}/pids.max") == "4096\n"
    else:       # a v1 hierarchy holds it: no limit, and the log says so
        assert "pids.max" not in config
        assert "cgroup v2 has no pids controller on this host" in d2.logs()
    assert d2.call("rm", cid) == ""
    assert settled_leftovers(d2) == NOTHING


def test_memory_limit_on_cgroup2(d2):
    fill = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    controllers = v2_controllers(d2)
    if "memory" in controllers:
        cid = run_detached(d2, "-m", "33554432", "base", "sh", "-c", f"sleep 1; {fill}")
        cgroup = f"/sys/fs/cgroup{payload_cgroup(d2, cid)}"
        # a hard limit, as 2013's -m: none of it protected from reclaim (memory.low)
        assert v2_shell(d2, f"cat {cgroup}/memory.max {cgroup}/memory.low") == "33554432\n0\n"
        assert d2.call("wait", cid) != "0\n"
        assert "survived" not in d2.call("logs", cid)
    else:       # refused before anything is created, and the daemon serves on
        available = " ".join(controllers) or "none"
        expected = ("Error: Your kernel does not support memory limit capabilities: cgroup v2 has no "
                    f"memory controller on this host (its controllers: {available})\n")
        assert d2.call("run", "-m", "33554432", "base", "sh", "-c", fill) == expected
        assert d2.call("run", "-d", "-m", "33554432", "base", "true") == expected
        assert d2.call("ps", "-a", "-q") == ""
    assert d2.call("run", "base", "echo", "hi") == "hi\n"
    assert settled_leftovers(d2) == NOTHING
