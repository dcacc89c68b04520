"""The LXC configuration and command line of a container: lxc_template.go of 2013 (spec 5.4, 5.5).

Changed since 2013, because LXC 5 and a 2026 kernel differ (spec 12.1):
- LXC 5 key names (`lxc.uts.name`, `lxc.net.0.*`, `lxc.rootfs.path`, ...);
  the legacy 2013 keys are fatal errors in LXC 5;
- `lxc-execute` instead of `lxc-start`: it stays in the foreground and returns
  the program's exit code (`lxc-start -F` always returns 0). LXC's small
  `init.lxc` becomes PID 1 and forwards signals, so the program is PID 2 and
  `stop` (SIGTERM) ends a plain shell at once instead of after 10 seconds;
- the init is docker0's own `sysinit.py`, run by the host's Python, which is
  bind-mounted read-only under `/dev/.docker0` (LXC's private /dev tmpfs, so
  nothing appears in the container's rw layer) and unmounted before exec;
- the environment is set with `lxc.environment` lines, since LXC 5 gives the
  init an empty environment;
- memory limits use cgroup v1 or v2 keys, whichever the host has, and the
  memsw line is only written where the kernel has swap accounting (2013's
  start failed there);
- `lxc.autodev = 1`: LXC fills /dev, so images need no device nodes.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .network import NetworkInterface

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_DIR = "/dev/.docker0"            # where the host's Python appears inside the container
HOST_PYTHON = "/usr/bin/python3"
HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SYSINIT = os.path.join(PACKAGE_DIR, "sysinit.py")

# The 2013 device policy: null, zero, tty, console, ptmx, tty0/1, random,
# urandom, every pts, tun.
ALLOWED_DEVICES = ["c 1:3 rwm", "c 1:5 rwm", "c 5:1 rwm", "c 5:0 rwm", "c 4:0 rwm", "c 4:1 rwm",
                   "c 1:9 rwm", "c 1:8 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]
# 2013's dropped capabilities, except sys_admin and setpcap: sysinit needs them
# to unmount its own files, and drops them itself right before exec.
DROPPED_CAPS = ("audit_control audit_write mac_admin mac_override mknod setfcap sys_boot "
                "sys_module sys_nice sys_pacct sys_rawio sys_resource sys_time sys_tty_config")


def cgroup_v2_only() -> bool:
    return not os.path.isdir("/sys/fs/cgroup/memory") and os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def swap_accounting() -> bool:
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def check_value(name: str, value: str) -> str:
    """A config value must stay on its line: refuse newlines (config injection)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"Invalid {name}: it must not contain a newline: {value!r}")
    return value


def environment(env: list[str] | None, tty: bool) -> list[str]:
    """The container's whole environment (spec 5.5 step 6): TERM first with -t.
    A variable of `env` (the image's, then -e) replaces a default of the same name."""
    return merge_env((["TERM=xterm"] if tty else []) + ["HOME=/", f"PATH={DEFAULT_PATH}"], env)


def merge_env(base: list[str] | None, extra: list[str] | None) -> list[str]:
    """`base` with each of `extra`'s variables replacing the one of the same name."""
    merged: dict[str, str] = {}
    for entry in list(base or []) + list(extra or []):
        merged[entry.split("=", 1)[0]] = entry
    return list(merged.values())


def lxc_config(*, hostname: str, rootfs: str, bridge: str, iface: NetworkInterface,
               env: list[str], memory: int, memory_swap: int) -> str:
    v2 = cgroup_v2_only()
    cgroup = "lxc.cgroup2" if v2 else "lxc.cgroup"
    lines = [
        f"lxc.uts.name = {check_value('hostname', hostname)}",
        "lxc.net.0.type = veth",
        "lxc.net.0.flags = up",
        f"lxc.net.0.link = {bridge}",
        "lxc.net.0.name = eth0",
        "lxc.net.0.mtu = 1500",
        f"lxc.net.0.ipv4.address = {iface.ip}/{iface.prefixlen}",
        f"lxc.rootfs.path = {rootfs}",
        "lxc.pty.max = 1024",
        "lxc.console.path = none",
        "lxc.tty.max = 1",
        "lxc.autodev = 1",
        f"{cgroup}.devices.deny = a",
        *(f"{cgroup}.devices.allow = {d}" for d in ALLOWED_DEVICES),
        "lxc.mount.entry = proc proc proc nosuid,nodev,noexec,create=dir 0 0",
        "lxc.mount.entry = sysfs sys sysfs nosuid,nodev,noexec,ro,create=dir 0 0",
        "lxc.mount.entry = /etc/resolv.conf etc/resolv.conf none bind,ro,create=file 0 0",
        f"lxc.mount.entry = /usr {INIT_DIR[1:]}/usr none bind,ro,create=dir 0 0",
        f"lxc.mount.entry = {PACKAGE_DIR} {INIT_DIR[1:]}/docker0_2013 none bind,ro,create=dir 0 0",
        f"lxc.cap.drop = {DROPPED_CAPS}",
        *(f"lxc.environment = {check_value('environment variable', e)}" for e in env),
    ]
    if memory:
        if v2:
            lines += [f"lxc.cgroup2.memory.max = {memory}", f"lxc.cgroup2.memory.low = {memory}"]
            if memory_swap >= 0:
                lines.append(f"lxc.cgroup2.memory.swap.max = {memory}")
        else:
            lines += [f"lxc.cgroup.memory.limit_in_bytes = {memory}",
                      f"lxc.cgroup.memory.soft_limit_in_bytes = {memory}"]
            if memory_swap >= 0 and swap_accounting():
                lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {memory * 2}")
    return "\n".join(lines) + "\n"


def init_command(gateway: str, user: str, path: str, args: list[str], workdir: str = "") -> list[str]:
    """The in-container init: the host's python3, through the host's ELF loader."""
    python = os.path.realpath(HOST_PYTHON)
    loader = os.path.realpath(HOST_LOADER)
    if not python.startswith("/usr/") or not loader.startswith("/usr/"):
        raise RuntimeError(f"{HOST_PYTHON} and {HOST_LOADER} must live under /usr")
    inside = INIT_DIR + "/usr/"
    command = [inside + loader[5:], "--library-path", inside + os.path.dirname(loader)[5:],
               inside + python[5:], "-I", "-S", "-B", f"{INIT_DIR}/docker0_2013/sysinit.py",
               "-g", gateway]
    if user:
        command += ["-u", user]
    if workdir:
        command += ["-w", workdir]
    return command + ["--", path, *args]


def execute_command(container_id: str, lxc_path: str, config_path: str, init: list[str]) -> list[str]:
    return ["lxc-execute", "-n", container_id, "-P", lxc_path, "-f", config_path,
            "-o", os.path.join(lxc_path, container_id, "lxc.log"), "-l", "ERROR", "--", *init]
