"""Shared by the container, fault, fuzz and load tests: what a test checks on disk
and on the host afterwards, and ways to reach a container. The fixtures (`d`,
`base_tar`) are in conftest.py."""
from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import socket
import time

from netns import CLONE_NEWNET, Daemon

_libc = ctypes.CDLL(None, use_errno=True)


def run_detached(d: Daemon, *args: str) -> str:
    out = d.call("run", "-d", *args)
    assert re.fullmatch(r"[0-9a-f]{12}\n", out), out
    return out.strip()


def config_lxc(d: Daemon, short_id: str) -> str:
    """The LXC configuration the daemon wrote for the container's last start."""
    return open(glob.glob(os.path.join(d.root, "containers", short_id + "*", "config.lxc"))[0]).read()


def dnat_rules(d: Daemon) -> list[str]:
    return [r for r in d.netns.exec("iptables", "-t", "nat", "-S", "DOCKER0").stdout.splitlines()
            if r.startswith("-A")]


def leftovers(d: Daemon) -> dict:
    """Everything a stopped container could leak, as seen from the host."""
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if d.root in line]
    veths = d.netns.exec("ip", "-o", "link", "show", "type", "veth").stdout.strip()
    # at the top of a cgroup2-only /sys/fs/cgroup; below each hierarchy of a v1 or hybrid one
    cgroups = [c for depth in ("", "*/", "*/*/") for c in glob.glob(f"/sys/fs/cgroup/{depth}lxc.payload.*")]
    ids = os.listdir(os.path.join(d.root, "containers"))
    cgroups = [c for c in cgroups if any(i in c for i in ids)]
    procs = shim_pids(d)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root").startswith(d.root) and pid not in procs:
                procs.append(pid)
        except OSError:
            pass
    return {"mounts": mounts, "veths": veths, "rules": dnat_rules(d), "cgroups": cgroups, "procs": procs}


def shim_pids(d: Daemon) -> list[str]:
    """Processes started for a container of `d` that run outside it: its shim (shim.py)
    and the lxc-start under it, which work in its directory."""
    containers = os.path.join(d.root, "containers", "")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(containers):
                found.append(pid)
        except OSError:
            pass
    return found

NOTHING = {"mounts": [], "veths": "", "rules": [], "cgroups": [], "procs": []}


def daemon_fds(d: Daemon) -> int:
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


def settled_fds(d: Daemon, quiet: float = 0.3, timeout: float = 10) -> int:
    """daemon_fds once it has not changed for `quiet` s: the last reply's connection
    is closed only after the client hangs up (server.finish), a moment after the call."""
    count, since, deadline = daemon_fds(d), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        if (now := daemon_fds(d)) != count:
            count, since = now, time.monotonic()
    return count


def daemon_rss_kb(d: Daemon) -> int:
    """VmRSS of the daemon's Python process (the fixture starts it under `sh -c ... exec`)."""
    with open(f"/proc/{d.proc.pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def saved_containers(d: Daemon) -> dict[str, dict]:
    """Every containers/<ID>/config.json, parsed (a parse error fails the caller)."""
    records = {}
    for name in os.listdir(os.path.join(d.root, "containers")):
        with open(os.path.join(d.root, "containers", name, "config.json"), "rb") as f:
            records[name] = json.loads(f.read())
    return records


def settled_leftovers(d: Daemon, timeout: float = 10) -> dict:
    """leftovers(), given time to finish tearing down ended containers.

    A container's network namespace (and with it its veth pair) is freed by
    the kernel asynchronously after its last process ends, and the daemon
    unmounts a container's root just after it has answered the clients
    attached to it.
    """
    deadline = time.monotonic() + timeout
    while (found := leftovers(d)) != NOTHING and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@contextlib.contextmanager
def inside(netns_name: str):
    """Run this thread in the test's network namespace (setns once, not per socket)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns_name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        if _libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(home)
        os.close(target)


def exchange(requests: list[tuple[bytes, bytes]], timeout: float = 60) -> list[bytes]:
    """Inside the namespace (see inside()): open a connection per request, all at once,
    send each line and stdin, then read every reply to EOF (a reset or timeout raises)."""
    sockets = [socket.create_connection(("127.0.0.1", 4242), timeout=timeout) for _ in requests]
    try:
        for sock, (line, stdin) in zip(sockets, requests):
            sock.sendall(line + stdin)
            sock.shutdown(socket.SHUT_WR)
        replies = []
        for sock in sockets:
            chunks = []
            while data := sock.recv(1 << 16):
                chunks.append(data)
            replies.append(b"".join(chunks))
        return replies
    finally:
        for sock in sockets:
            sock.close()
