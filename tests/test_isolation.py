"""Escape attempts from inside a plain `run` container (issue 12), the capability
sets bit by bit, and containers that resist their end: each must fail or end."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time

import pytest

from docker0_2013 import lxc
from docker0_2013.processes import child_pids, container_init
from helpers import NOTHING, config_lxc, run_detached, settled_leftovers
from netns import REPO

CAPS = {"chown": 0, "dac_override": 1, "fowner": 3, "fsetid": 4, "kill": 5, "setgid": 6,
        "setuid": 7, "setpcap": 8, "net_bind_service": 10, "net_raw": 13, "sys_chroot": 18,
        "mknod": 27, "audit_write": 29, "setfcap": 31}
DEFAULT_MASK = sum(1 << n for n in CAPS.values())


@pytest.fixture(scope="module")
def escape_binary():
    work = tempfile.mkdtemp(prefix="escape-")
    out = os.path.join(work, "escape")
    subprocess.run(["gcc", "-static", "-O2", "-o", out, os.path.join(REPO, "tests", "escape.c")], check=True)
    with open(out, "rb") as f:
        yield f.read()
    subprocess.run(["rm", "-rf", work])


@pytest.fixture
def e(d, base_tar, escape_binary):
    """The daemon `d` with an image `escape`: base plus /bin/escape."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out, tarfile.open(fileobj=io.BytesIO(base_tar)) as base:
        for member in base:
            out.addfile(member, base.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("./bin/escape")
        info.size, info.mode = len(escape_binary), 0o755
        out.addfile(info, io.BytesIO(escape_binary))
    assert len(d.call("import", "-", "escape", stdin=buf.getvalue()).strip()) == 12
    return d


def attempts(d, *names: str) -> dict[str, str]:
    out = d.call("run", "escape", "/bin/escape", *names)
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_capability_sets_bit_by_bit(e):
    out = e.call("run", "escape", "sh", "-c", "grep Cap /proc/1/status; echo; grep Cap /proc/self/status")
    for part in out.split("\n\n"):
        sets = dict(line.split(":\t") for line in part.strip().splitlines())
        for name in ("CapPrm", "CapEff", "CapBnd"):
            value = int(sets[name], 16)
            for cap, bit in CAPS.items():
                assert value >> bit & 1, f"{name} lacks {cap}: {sets[name]}"
            assert value == DEFAULT_MASK, f"{name} {sets[name]} holds more than Docker's default set"
        assert int(sets["CapInh"], 16) == 0 and int(sets["CapAmb"], 16) == 0, sets
    assert settled_leftovers(e) == NOTHING


def test_escape_attempts_fail(e):
    major_minor = next(line.split()[2] for line in open("/proc/self/mountinfo") if line.split()[4] == "/")
    got = attempts(e, "shocker:/etc/resolv.conf", "shocker:/etc/hostname", "shocker:/", "shocker:1",
                   "core_pattern", "sysrq", "mount", "ptrace1", "mem1", "init_module", "finit_module",
                   f"disk:{major_minor}", "reboot", "settimeofday", "clock_settime", "unshare")
    eperm = f"errno={errno.EPERM}"
    for name in ("shocker:/etc/resolv.conf", "shocker:/etc/hostname", "shocker:/", "shocker:1", "mount",
                 "ptrace1", "init_module", "finit_module", "reboot", "settimeofday", "clock_settime", "unshare"):
        assert got[name] == eperm, (name, got)
    assert got["core_pattern"] == f"errno={errno.EROFS}", got
    assert got["sysrq"] in (f"errno={errno.EROFS}", f"errno={errno.ENOENT}"), got   # ENOENT: no sysrq in this kernel
    assert got["mem1"] == f"errno={errno.EACCES}", got
    # the devices cgroup refuses the node itself, or else opening it
    assert got["mknod"] == eperm or got[f"disk:{major_minor}"] == eperm, got
    kcore = e.call("run", "base", "sh", "-c", "wc -c < /proc/kcore 2>&1 || true")
    if lxc.apparmor_enabled():      # the profile denies it, as Docker's does
        assert "permission denied" in kcore.lower(), kcore
    else:                           # masked, or absent from this kernel
        assert kcore.strip() in ("0", "") or "no such file" in kcore.lower(), kcore
    assert settled_leftovers(e) == NOTHING


def apparmor_label(pid: str) -> str:
    """A process's AppArmor label, read from the host (inside, LXC's AppArmor
    namespace would show "unconfined"); kernels before 5.8 have only attr/current."""
    for name in (f"/proc/{pid}/attr/apparmor/current", f"/proc/{pid}/attr/current"):
        try:
            with open(name) as f:
                return f.read().strip()
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"/proc/{pid}/attr")


def test_apparmor_profile_confines_the_program(d):
    cid = run_detached(d, "base", "sh", "-c", "echo ready; exec sleep 1000")
    deadline = time.monotonic() + 10
    while "ready" not in d.call("logs", cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    init = container_init(json.loads(d.call("inspect", cid))["State"]["Pid"])   # below the shim
    pids = [init, *child_pids(init)]                  # sysinit (PID 1 inside) and the program
    programs = [open(f"/proc/{pid}/cmdline", "rb").read() for pid in pids]
    assert b"sleep\x001000\x00" in programs, programs
    config = config_lxc(d, cid)
    if lxc.apparmor_enabled():
        assert [apparmor_label(pid) for pid in pids] == ["lxc-docker0-default (enforce)"] * len(pids)
        assert "lxc.apparmor.profile = lxc-docker0-default\n" in config
        assert "generated" not in config
        with open(lxc.APPARMOR_FILE, "rb") as f:      # loaded by a daemon's start, this text
            assert open(lxc.APPARMOR_LOADED).read() == hashlib.sha256(f.read()).hexdigest()
    else:
        assert "lxc.apparmor" not in config
        assert "No AppArmor in this kernel: containers run without an AppArmor profile" in d.logs()
    assert d.call("kill", cid) == ""
    assert settled_leftovers(d) == NOTHING


HOSTILE = {
    "traps": "trap '' TERM INT HUP QUIT USR1 USR2; echo ready; while :; do sleep 1; done",
    "bomb": "trap '' TERM INT HUP; echo ready; while :; do sleep 1000 & done",
    "corrupt": "printf X | dd of=/proc/1/mem bs=1 seek=4194304 2>/dev/null; kill -STOP 1; kill -KILL 1; "
               "trap '' TERM; echo ready; sleep 1000",
}


@pytest.mark.parametrize("how", ["kill", "stop", "rm"])
@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_container_ends(d, how, what):
    cid = run_detached(d, "base", "sh", "-c", HOSTILE[what])
    deadline = time.monotonic() + 10
    while "ready" not in d.call("logs", cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if what == "bomb":
        time.sleep(1)
    started = time.monotonic()
    assert d.call(how, cid) in ("", cid + "\n")
    assert time.monotonic() - started < 15
    assert settled_leftovers(d) == NOTHING
