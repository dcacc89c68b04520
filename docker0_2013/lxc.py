"""The LXC configuration and command line of a container: lxc_template.go of 2013 (spec 5.4, 5.5).

Runs in: the daemon, in the worker thread of a start (check_memory_limit: on
the event loop, at create).

Changed since 2013, because LXC 5 and a 2026 kernel differ (spec 12.1):
- LXC 5 key names (`lxc.uts.name`, `lxc.net.0.*`, ...): the 2013 keys are
  fatal errors in LXC 5;
- `lxc-start -F` runs docker0's own sysinit.py as PID 1, from the host's
  Python bind-mounted under /dev/.docker0; it always exits 0, so sysinit
  writes the program's status to `init-status` for the shim;
- isolation as modern Docker's (isolation_lines(), docs/then-and-now.md):
  its default capabilities, a seccomp policy, masked /proc paths, a pids
  limit, where the kernel has AppArmor docker0's one profile (Docker's
  docker-default, loaded once at daemon start: LXC's `generated` profile
  ran apparmor_parser at every start), a per-container resolv.conf
  (systemd-resolved's upstream servers where /etc/resolv.conf names only
  its stub, as Docker does), mounted where the image's /etc/resolv.conf
  leads inside its root (prepare_rootfs: LXC's `create=file` followed an
  image's links out of it);
- memory limits in cgroup v1 or v2 keys, whichever the host has (on v2
  memory.max only: a hard limit, as 2013's -m was); swap only
  where the kernel accounts it (2013's start failed there), and `-m` is
  refused at create where no cgroup could apply it;
- sysinit runs from its compiled .pyc where that is current (sysinit_file());
- LXC fills /dev (`lxc.autodev`), /dev/shm is 64 MB, and with -t the
  container's pty is its /dev/console;
- the broadcast address is written out: LXC 5.0.2 computes 0.0.0.255 without it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import logging
import os
import py_compile
import shutil
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

from .utils import create_in_root, read_file, resolve_in_root, short_id

if TYPE_CHECKING:
    from .network import NetworkInterface

log = logging.getLogger("docker0")
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
# Docker's default capability set, by name (lxc.cap.keep) and number
# (sysinit.py holds the same numbers): everything else is gone before any
# program of the image runs.
DEFAULT_CAPS = ("chown dac_override fowner fsetid kill setgid setuid setpcap setfcap "
                "net_bind_service net_raw sys_chroot mknod audit_write")
# What sysinit needs beyond them for its own set-up, and drops before it forks
# the program: net_admin for the default route, sys_admin to unmount its files.
INIT_CAPS = "net_admin sys_admin"
SECCOMP_POLICY = os.path.join(PACKAGE_DIR, "seccomp.policy")
PIDS_MAX = 4096                       # a fork bomb stops here, and `kill` still ends it
# Modern Docker's masked paths: files hidden behind /dev/null, directories behind
# an empty read-only tmpfs, and the read-only ones (/proc/sys and
# /proc/sysrq-trigger are proc:mixed's). Each is optional: kernels differ.
MASKED_FILES = ("proc/kcore", "proc/keys", "proc/timer_list", "proc/timer_stats",
                "proc/sched_debug", "proc/latency_stats")
MASKED_DIRS = ("proc/acpi", "proc/scsi", "sys/firmware", "sys/devices/virtual/powercap")
READ_ONLY = ("proc/irq", "proc/bus", "proc/fs")
SHM_SIZE = "64m"                      # /dev/shm, as modern Docker makes it
STATUS_FILE = "init-status"           # in the container's directory: the init writes its exit status
LXC_MOUNTS = ("dev", "proc", "sys")    # LXC mounts filesystems of its own on these
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
APPARMOR_PROFILE = "lxc-docker0-default"   # lxc-start may change only to profiles named lxc-*
APPARMOR_FILE = os.path.join(PACKAGE_DIR, "apparmor-profile")
SECURITYFS = "/sys/kernel/security"
APPARMOR_LOADED = "/run/docker0-apparmor"  # the sha256 of the profile text loaded since boot
RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"   # systemd-resolved's own servers
RESOLVED_STUB = "127.0.0.53"
CGROUP_ROOT = "/sys/fs/cgroup"
_said: set[str] = set()


def cgroup_v2_only() -> bool:
    """Is /sys/fs/cgroup the cgroup2 hierarchy itself (as LXC sees it), not v1 or hybrid?"""
    return not os.path.isdir(f"{CGROUP_ROOT}/memory") and os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers")


def v2_controllers() -> list[str]:
    """The controllers cgroup2 has here: those no v1 hierarchy holds. LXC enables
    them down to each container's cgroup (cgroup.subtree_control) itself."""
    try:
        with open(f"{CGROUP_ROOT}/cgroup.controllers") as f:
            return f.read().split()
    except OSError:
        return []


def swap_accounting() -> bool:
    if cgroup_v2_only():       # memory.swap.max: a kernel with swap, not booted swapaccount=0
        try:
            with open("/proc/cmdline") as f:
                return os.path.exists("/proc/swaps") and "swapaccount=0" not in f.read().split()
        except OSError:
            return False
    return os.path.exists(f"{CGROUP_ROOT}/memory/memory.memsw.limit_in_bytes")


def check_memory_limit(memory: int) -> None:
    """Refuse -m where no cgroup could apply it: on a cgroup v2 host whose memory
    controller is bound to a v1 hierarchy, or disabled. 2013's lxc-start failed
    there; checked at create, the refusal leaves no container behind."""
    if memory and cgroup_v2_only() and "memory" not in v2_controllers():
        available = " ".join(v2_controllers()) or "none"
        raise RuntimeError("Your kernel does not support memory limit capabilities: cgroup v2 has no "
                           f"memory controller on this host (its controllers: {available})")


def pids_limit_lines(cgroup: str, v2: bool) -> list[str]:
    """The pids limit, where there is a pids controller to apply it. Without one
    (cgroup v2 whose pids controller a v1 hierarchy holds), LXC would refuse to
    start at all; containers run unlimited, and `kill` still ends a fork bomb
    through cgroup.kill, which needs no controller."""
    if v2 and "pids" not in v2_controllers():
        say_once(f"cgroup v2 has no pids controller on this host: containers run without "
                 f"their pids limit of {PIDS_MAX}")
        return []
    return [f"{cgroup}.pids.max = {PIDS_MAX}"]


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
               env: list[str], memory: int, memory_swap: int, console: str = "",
               resolv_conf: str = "") -> str:
    """`console`: with -t, the host's name of the container's pty (/dev/pts/N), which
    becomes its /dev/console, so that `tty` can name the terminal it is on.
    `resolv_conf`: where the container's resolv.conf is mounted, below the root
    (prepare_rootfs); "" for nowhere."""
    v2 = cgroup_v2_only()
    cgroup = "lxc.cgroup2" if v2 else "lxc.cgroup"
    home = check_value("rootfs", os.path.dirname(rootfs))     # the container's directory
    lines = [
        "# The container's hostname: its short ID, or -h",
        f"lxc.uts.name = {check_value('hostname', hostname)}",
        "",
        "# Network: a veth pair, one end on the bridge, the other eth0 inside, with its address",
        "lxc.net.0.type = veth",
        "lxc.net.0.flags = up",
        f"lxc.net.0.link = {bridge}",
        "lxc.net.0.name = eth0",
        "lxc.net.0.mtu = 1500",
        f"lxc.net.0.ipv4.address = {iface.ip}/{iface.prefixlen} {broadcast(iface.ip, iface.prefixlen)}",
        "",
        "# The root: the overlay mount of the image's layers under the container's rw layer",
        f"lxc.rootfs.path = {rootfs}",
        "",
        "# Terminals: ptys for the container's own use; LXC keeps no console of its own",
        "lxc.pty.max = 1024",
        "lxc.console.path = none",
        "lxc.tty.max = 1",
        "",
        "# /dev is filled by LXC; no implicit access to devices, then 2013's list: null, zero,",
        "# tty, console, ptmx, tty0, tty1, random, urandom, every pts, tun; a cap on processes",
        "lxc.autodev = 1",
        f"{cgroup}.devices.deny = a",
        *(f"{cgroup}.devices.allow = {d}" for d in ALLOWED_DEVICES),
        *pids_limit_lines(cgroup, v2),
        "",
        "# Isolation as in modern Docker: the capabilities kept, seccomp, AppArmor where the",
        "# kernel has it, /proc and /sys read-only, their sensitive files masked",
        *isolation_lines(),
        "",
        "# Mounts: /dev/shm; with -t the pty as /dev/console; the container's copy of resolv.conf;",
        "# under /dev/.docker0, until sysinit unmounts them: the host's /usr (its Python), the",
        "# docker0_2013 package, and the file sysinit writes the exit status to",
        f"lxc.mount.entry = tmpfs dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,size={SHM_SIZE},create=dir 0 0",
        *([f"lxc.mount.entry = {check_value('console', console)} dev/console none bind,create=file 0 0"]
          if console else []),
        *([f"lxc.mount.entry = {home}/resolv.conf {resolv_conf} none bind,ro,nosuid,nodev,noexec 0 0"]
          if resolv_conf else []),
        f"lxc.mount.entry = /usr {INIT_DIR[1:]}/usr none bind,ro,nosuid,nodev,create=dir 0 0",
        f"lxc.mount.entry = {PACKAGE_DIR} {INIT_DIR[1:]}/docker0_2013 none bind,ro,nosuid,nodev,create=dir 0 0",
        f"lxc.mount.entry = {home}/{STATUS_FILE} {INIT_DIR[1:]}/status none bind,nosuid,nodev,noexec,create=file 0 0",
        "",
        "# The init's environment (LXC 5 starts it with an empty one)",
        *(f"lxc.environment = {check_value('environment variable', e)}" for e in env),
    ]
    if memory:
        check_memory_limit(memory)
        if v2:
            lines.append(f"lxc.cgroup2.memory.max = {memory}")
            if memory_swap >= 0 and swap_accounting():
                lines.append(f"lxc.cgroup2.memory.swap.max = {memory}")
        else:
            lines += [f"lxc.cgroup.memory.limit_in_bytes = {memory}",
                      f"lxc.cgroup.memory.soft_limit_in_bytes = {memory}"]
            if memory_swap >= 0 and swap_accounting():
                lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {memory * 2}")
    return "\n".join(lines) + "\n"


def prepare_rootfs(rootfs: str) -> str:
    """Make the container's mount points inside its root before LXC runs; returns
    where its resolv.conf goes (lxc_config's `resolv_conf`).

    An image's symlinks are untrusted: LXC's `create=file` follows them out
    of the root (an image whose /etc points to /var/tmp/x had LXC create
    the host's /var/tmp/x/resolv.conf), and LXC refuses to mount on a path
    that has one (a systemd image's /etc/resolv.conf could not start). So
    the target is resolved inside the root (utils.resolve_in_root), made
    there without following a link, and LXC gets that path, which has none.
    This is enough without openat2 at mount time: nothing runs in the
    container yet, its image's layers never change, and LXC itself refuses
    a mount path that has gained a symlink since.

    /dev, /proc and /sys must be real directories, as runc requires: LXC
    mounts its own tmpfs, proc and sysfs there, and the other mount points
    (/dev/shm, /dev/console, INIT_DIR) are made in that fresh tmpfs.
    """
    for name in LXC_MOUNTS:
        if not stat.S_ISDIR(create_in_root(rootfs, [name], directory=True).st_mode):
            raise RuntimeError(f"Cannot start the container: /{name} of its image is not a directory")
    return resolv_conf_target(rootfs)


def resolv_conf_target(rootfs: str) -> str:
    """The image's /etc/resolv.conf resolved inside the root, made a file if it was
    missing; "" where no file can be mounted (the container keeps what it has)."""
    try:
        names = resolve_in_root(rootfs, "/etc/resolv.conf")
        where = "/" + "/".join(names)
        if not names or names[0] in LXC_MOUNTS:
            why = f"it is {where}, where LXC mounts a filesystem of its own"
        elif stat.S_ISDIR(create_in_root(rootfs, names).st_mode):
            why = f"it is {where}, a directory"
        else:
            return fstab_escape("/".join(names))
    except OSError as e:
        why = e.strerror or str(e)
    log.info("%s: no resolv.conf is mounted at the image's /etc/resolv.conf: %s",
             short_id(os.path.basename(os.path.dirname(rootfs))), why)
    return ""


def fstab_escape(path: str) -> str:
    """A path as a mount entry's field (getmntent decodes these): an image's names may hold spaces."""
    return "".join({" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}.get(c, c) for c in path)


def broadcast(ip: str, prefixlen: int) -> str:
    """The broadcast address of the bridge's network, given with the address:
    LXC 5.0.2 computes 0.0.0.255 when the config gives none."""
    return str(ipaddress.IPv4Network(f"{ip}/{prefixlen}", strict=False).broadcast_address)


def isolation_lines() -> list[str]:
    """What keeps a container off the host, one line per step (docs/then-and-now.md).

    no_new_privs is not set: as in modern Docker, setuid programs of an image
    (su, ping) keep working, and what they can gain is bounded by DEFAULT_CAPS.
    """
    return [
        f"lxc.cap.keep = {DEFAULT_CAPS} {INIT_CAPS}",
        f"lxc.seccomp.profile = {SECCOMP_POLICY}",
        *apparmor_lines(),
        "lxc.mount.auto = proc:mixed sys:ro",
        *(f"lxc.mount.entry = /dev/null {p} none bind,optional 0 0" for p in MASKED_FILES),
        *(f"lxc.mount.entry = tmpfs {p} tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0"
          for p in MASKED_DIRS),
        # ${LXC_ROOTFS_MOUNT} is where LXC has the root (and its /proc) while it mounts.
        *(f"lxc.mount.entry = ${{LXC_ROOTFS_MOUNT}}/{p} {p} none bind,ro,nosuid,nodev,noexec,optional 0 0"
          for p in READ_ONLY),
    ]


def apparmor_enabled() -> bool:
    return read_file(APPARMOR_ENABLED) == "Y"


def apparmor_lines() -> list[str]:
    """docker0's profile (load_apparmor_profile()) where the kernel has AppArmor."""
    return [f"lxc.apparmor.profile = {APPARMOR_PROFILE}"] if apparmor_enabled() else []


def load_apparmor_profile() -> None:
    """At daemon start, as Docker loads docker-default: the containers' profile into
    the kernel, unless this very text is loaded already (APPARMOR_LOADED, in /run,
    says which text was; the kernel's list, that it still is). Without AppArmor,
    a log line. Fails with what to fix: LXC could start no container."""
    if not apparmor_enabled():
        log.info("No AppArmor in this kernel: containers run without an AppArmor profile "
                 "(capabilities, seccomp and the /proc masks still apply)")
        return
    with open(APPARMOR_FILE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if f"{APPARMOR_PROFILE} (enforce)" in loaded_profiles() and read_file(APPARMOR_LOADED) == digest:
        return
    what = f"AppArmor is enabled in this kernel, but the containers' profile {APPARMOR_PROFILE} cannot be loaded"
    if not os.path.isdir(f"{SECURITYFS}/apparmor"):
        raise RuntimeError(f"{what}: securityfs is not mounted at {SECURITYFS} "
                           f"(try 'mount -t securityfs securityfs {SECURITYFS}')")
    try:
        subprocess.run(["apparmor_parser", "--replace", APPARMOR_FILE], capture_output=True,
                       check=True, timeout=120)
    except FileNotFoundError:
        raise RuntimeError(f"{what}: apparmor_parser is missing (install the apparmor package)") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{what}: {e.stderr.decode(errors='replace').strip()}") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: apparmor_parser did not finish") from None
    try:
        with open(APPARMOR_LOADED, "w") as f:     # a stamp: without it, the next start loads again
            f.write(digest)
    except OSError as e:
        log.debug("%s: %s", APPARMOR_LOADED, e)
    log.info("Loaded the AppArmor profile %s from %s", APPARMOR_PROFILE, APPARMOR_FILE)


def loaded_profiles() -> list[str]:
    """The kernel's AppArmor profiles, one "NAME (MODE)" each."""
    return read_file(f"{SECURITYFS}/apparmor/profiles").splitlines()


def say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def resolv_conf_source(etc: str = RESOLV_CONF, resolved: str = RESOLVED_UPSTREAM) -> str:
    """The host file containers take their DNS servers from: `etc`, unless its only
    server is systemd-resolved's stub (Ubuntu's default), which no container can
    reach on its own loopback; then resolved's list of the upstream servers, as
    Docker does."""
    try:
        with open(etc) as f:
            servers = [words[1] for words in map(str.split, f) if len(words) > 1 and words[0] == "nameserver"]
    except OSError:
        return etc
    return resolved if servers == [RESOLVED_STUB] and os.path.isfile(resolved) else etc


def copy_resolv_conf(container_dir: str) -> None:
    """The container's own copy of the host's resolv.conf (as modern Docker does), so
    that no file of the host itself is mounted into the container; an empty one if the
    host has none. Also creates the empty exit-status file the init writes to."""
    try:
        with open(resolv_conf_source(), "rb") as f:
            text = f.read()
    except OSError:
        text = b""
    for name, data in (("resolv.conf", text), (STATUS_FILE, b"")):
        fd = os.open(os.path.join(container_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def init_command(gateway: str, user: str, path: str, args: list[str], workdir: str = "") -> list[str]:
    """The in-container init: the host's python3, through the host's ELF loader."""
    python = os.path.realpath(HOST_PYTHON)
    loader = os.path.realpath(HOST_LOADER)
    if not python.startswith("/usr/") or not loader.startswith("/usr/"):
        raise RuntimeError(f"{HOST_PYTHON} and {HOST_LOADER} must live under /usr")
    inside = INIT_DIR + "/usr/"
    script = os.path.relpath(sysinit_file(), PACKAGE_DIR)
    command = [inside + loader[5:], "--library-path", inside + os.path.dirname(loader)[5:],
               inside + python[5:], "-I", "-S", "-B", f"{INIT_DIR}/docker0_2013/{script}",
               "-g", gateway]
    if user:
        command += ["-u", user]
    if workdir:
        command += ["-w", workdir]
    return command + ["--", path, *args]


def sysinit_file() -> str:
    """What the container's python3 runs: sysinit's compiled file where it is current.

    A script named on the command line is compiled at every start (2 ms of
    the container's start, bench/README.md); a .pyc is run as it is. It is
    used only if it was compiled from the sysinit.py that is there now, by
    this very interpreter (the magic number is the host python3's); missing
    or stale, it is compiled once (the install's compileall does it ahead).
    Where none can be written, sysinit.py is run as before.
    """
    if os.path.realpath(sys.executable) != os.path.realpath(HOST_PYTHON):
        return SYSINIT
    compiled = importlib.util.cache_from_source(SYSINIT)
    if compiled_from(SYSINIT, compiled):        # the usual case: one stat and a 16-byte read
        return compiled
    try:
        py_compile.compile(SYSINIT, cfile=compiled, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        if compiled_from(SYSINIT, compiled):
            return compiled
    except (OSError, py_compile.PyCompileError) as e:
        say_once(f"Running {SYSINIT} uncompiled: {e}")
    return SYSINIT


def compiled_from(source: str, compiled: str) -> bool:
    """Is `compiled` a timestamp .pyc of this interpreter for `source` as it is now?"""
    try:
        st = os.stat(source)
        with open(compiled, "rb") as f:
            header = f.read(16)
    except OSError:
        return False
    return (len(header) == 16 and header[:4] == importlib.util.MAGIC_NUMBER
            and int.from_bytes(header[4:8], "little") == 0
            and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)


def execute_command(container_id: str, lxc_path: str, config_path: str, init: list[str]) -> list[str]:
    """`lxc-start -F` with sysinit as the container's PID 1. `lxc-start -F` itself
    always exits 0, so sysinit writes the status to STATUS_FILE (bind-mounted for
    it), which the shim reads (shim.py: an empty file is 137, as for SIGKILL).
    lxc-start is named by its full path: the shim looks nothing up along PATH."""
    lxc_start = shutil.which("lxc-start", path=DEFAULT_PATH)
    if lxc_start is None:
        raise RuntimeError(f"lxc-start: not found in {DEFAULT_PATH} (is LXC installed?)")
    return [lxc_start, "-F", "-n", container_id, "-P", lxc_path, "-f", config_path,
            "-o", os.path.join(lxc_path, container_id, "lxc.log"), "-l", "ERROR", "--", *init]
