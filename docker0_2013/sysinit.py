"""The first code inside every container, and its PID 1: sysinit.go of 2013 (spec 5.9).

    python3 sysinit.py -g GATEWAY [-u USER] [-w DIR] -- PROGRAM [ARG...]

It sets the default route, drops the `container` variable, and runs PROGRAM
as USER. Images need no Python: the host's interpreter is bind-mounted
read-only under /dev/.docker0 (lxc.py), so this file uses the standard library
only, and it unmounts those host files before PROGRAM starts.

Changed since 2013:
- it is the container's PID 1 and stays there, a tiny init: `lxc-start -F`
  runs it, it forks PROGRAM, forwards the signals `stop` sends (SIGTERM,
  SIGINT, SIGHUP, ...) to it, reaps every orphan, and exits with PROGRAM's
  status (written to /dev/.docker0/status too, since lxc-start reports none).
  2013 exec'd the program as PID 1;
- capabilities: LXC leaves it Docker's default set plus net_admin (the route)
  and sys_admin (the unmount); it drops both from every set, empties the
  inheritable and ambient sets, and makes itself non-dumpable (no ptrace, no
  writes to /proc/1/mem from the container) before it forks. LXC's seccomp
  filter (docker0_2013/seccomp.policy) is already in force when it starts;
- the route is added over netlink, not with /sbin/route (absent from images);
- it is run by the host's Python, not as a copy of the daemon binary bind-mounted
  on /sbin/init (LXC 5 refuses mount targets reached through symlinks);
- supplementary groups are cleared when switching user, so `-u daemon` does not
  keep root's groups;
- `-w DIR` (an image's WorkingDir) is created if missing, as Docker does, and
  becomes the program's working directory;
- the program gets the environment this process was started with, read from
  /proc/self/environ: the interpreter's own start-up changes its copy (PEP 538
  sets LC_CTYPE=C.UTF-8 when the locale is C), which must not leak.

Runs in: the container, as its PID 1 (main), and for a moment in the
program's process, between the fork and the exec (exec_program).

It reads top to bottom like sysinit.go: main() is the recipe. Every start
waits for this file, so it takes signal, socket and ctypes as the C modules
under them (7 ms less per start): the section "Start-up speed" at the bottom.
"""
import errno
import os
import stat
import struct
import sys

INIT_DIR = "/dev/.docker0"
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 4, 24, 47, 4
TIOCSCTTY = 0x540E
# Docker's default set (lxc.DEFAULT_CAPS): chown 0, dac_override 1, fowner 3,
# fsetid 4, kill 5, setgid 6, setuid 7, setpcap 8, net_bind_service 10,
# net_raw 13, sys_chroot 18, mknod 27, audit_write 29, setfcap 31.
DEFAULT_CAPS = (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What an init forwards to the program; SIGCHLD only wakes it to reap.
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH",
             "SIGCONT", "SIGALRM", "SIGTSTP", "SIGTTIN", "SIGTTOU")
child = 0                   # the program's PID, once forked
child_of_init = False       # True in the program's process until it execs
status_fd: int | None = None


def main(argv: list[str]) -> None:
    global status_fd
    flags, program = parse_args(argv)
    status_fd = open_status()
    catch_signals()
    setup_networking(flags["-g"])
    env = initial_environment()
    user = find_user(flags["-u"])
    setup_working_directory(flags["-w"])
    seal()
    leave(run_program(program, env, user, flags["-w"]))


# -- The steps ----------------------------------------------------------------------


def setup_networking(gateway: str) -> None:
    if gateway:
        try:
            add_default_route(gateway)
        except OSError as e:
            fail(f"Unable to set up networking: {e}")


def find_user(user: str) -> tuple[int, int] | None:
    """-u USER as (uid, gid); None without -u."""
    if not user:
        return None
    try:
        return lookup_user(user)
    except (LookupError, ValueError) as e:
        fail(f"Unable to find user {user}: {e}")


def setup_working_directory(workdir: str) -> None:
    if workdir:
        try:
            make_dirs(workdir)
        except OSError as e:
            fail(f"Unable to create the working directory {workdir}: {e.strerror}")


def seal() -> None:
    """Leave nothing of the host visible and only Docker's capabilities (not when
    run by hand, outside a container docker0 made)."""
    if is_a(stat.S_ISDIR, INIT_DIR):
        detach_host_files()
        drop_capabilities()


def run_program(program: list[str], env: dict, user: tuple[int, int] | None, workdir: str) -> int:
    """Fork the program, forward signals to it, reap every orphan; its status."""
    global child
    # Blocked across the fork: a signal that came before `child` was set, or
    # reached the child while Python's handler was still its own, would be lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, forwarded())
    pid = os.fork()
    if pid == 0:
        exec_program(program, env, user, workdir)
    child = pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded())
    return wait_for(pid)


# -- Helpers ------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    leave(code)


def leave(code: int) -> None:
    """Exit with `code`, and write it to the status file too (the shim reads it as
    `init-status`: lxc-start -F itself always exits 0)."""
    if status_fd is not None and not child_of_init:
        os.write(status_fd, b"%d\n" % code)
    os._exit(code)


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`-g GATEWAY`, `-u USER`, `-w DIR`, then `--` and the program's argv."""
    if not argv:
        fail("You should not invoke docker-init manually")
    argv = list(argv)
    flags = {"-g": "", "-u": "", "-w": ""}
    while argv and argv[0] != "--":
        flag = argv.pop(0)
        if flag not in flags or not argv:
            fail(f"sysinit: bad argument {flag!r}")
        flags[flag] = argv.pop(0)
    if not argv[1:]:
        fail("sysinit: no program given")
    return flags, argv[1:]


def initial_environment() -> dict[bytes, bytes]:
    """The environment as exec'd, without `container`: not os.environ, which
    the interpreter's start-up has changed (PEP 538 locale coercion)."""
    with open("/proc/self/environ", "rb") as f:
        entries = [e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e]
    return {k: v for k, v in entries if k not in (b"container", b"container_ttys")}


def make_dirs(path: str) -> None:
    """mkdir -p, as root inside the container (a WorkingDir the image lacks)."""
    current = ""
    for part in [p for p in path.split("/") if p]:
        current += "/" + part
        if not is_a(stat.S_ISDIR, current):
            os.mkdir(current, 0o755)


def add_default_route(gateway: str) -> None:
    """`ip route add default via GATEWAY`, as one RTM_NEWROUTE netlink message."""
    RTM_NEWROUTE, NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 24, 1, 4, 0x200, 0x400
    RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, RTA_GATEWAY = 254, 3, 0, 1, 5
    rtmsg = struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                         RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    attr = struct.pack("HH", 8, RTA_GATEWAY) + socket.inet_aton(gateway)
    body = rtmsg + attr
    header = struct.pack("IHHII", 16 + len(body), RTM_NEWROUTE,
                          NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE, 1, 0)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.sendall(header + body)
        reply = nl.recv(4096)
    finally:
        nl.close()
    error = struct.unpack("i", reply[16:20])[0]
    if error:
        raise OSError(-error, os.strerror(-error))


def lookup_user(user: str) -> tuple[int, int]:
    """(uid, gid) from the container's /etc/passwd: as a numeric uid first, then a name."""
    try:
        with open("/etc/passwd") as f:
            entries = [line.rstrip("\n").split(":") for line in f if line.count(":") >= 6]
    except OSError as e:
        raise LookupError(e.strerror) from None
    for field in (2, 0):
        for entry in entries:
            if entry[field] == user:
                return int(entry[2]), int(entry[3])
    raise LookupError("no such user")


def open_status() -> int | None:
    """The status file lxc.py mounts for this init, opened before it is unmounted."""
    if not is_a(stat.S_ISREG, f"{INIT_DIR}/status"):
        return None
    return os.open(f"{INIT_DIR}/status", os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)


def detach_host_files() -> None:
    """Unmount the host's Python, this file and the status file; nothing of the host
    stays visible."""
    for name in ("status", "docker0_2013", "usr"):
        path = f"{INIT_DIR}/{name}"
        if name == "status" and status_fd is None:
            continue
        if libc.umount2(path.encode(), MNT_DETACH) != 0:
            fail(f"Unable to unmount {path}: {os.strerror(libc_errno())}")
        (os.unlink if name == "status" else os.rmdir)(path)
    os.rmdir(INIT_DIR)


def drop_capabilities() -> None:
    """Keep Docker's default set only, in every set, for this process and all it forks."""
    keep = sum(1 << cap for cap in DEFAULT_CAPS)
    for cap in range(64):
        if not keep >> cap & 1 and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if libc_errno() == errno.EINVAL:      # past the kernel's last capability
                break
            fail(f"Unable to drop capability {cap}: {os.strerror(libc_errno())}")
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        fail(f"Unable to clear the ambient capabilities: {os.strerror(libc_errno())}")
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    low, high = keep & 0xFFFFFFFF, keep >> 32
    data = struct.pack("6I", low, low, 0, high, high, 0)   # effective, permitted, inheritable
    if libc.capset(header, data) != 0:
        fail(f"Unable to set capabilities: {os.strerror(libc_errno())}")
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        fail(f"Unable to make the init non-dumpable: {os.strerror(libc_errno())}")


def forward(signum: int, frame) -> None:
    if child:
        try:
            os.kill(child, signum)
        except OSError:
            pass
    else:                                 # before the program runs: end right here
        leave(128 + signum)


def catch_signals() -> None:
    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)


def forwarded() -> set[int]:
    return {getattr(signal, name) for name in FORWARDED}


def exec_program(program: list[str], env: dict, uid_gid: tuple[int, int] | None, workdir: str = "") -> None:
    """In the forked child: default signals, own session and terminal, the user, exec."""
    global child_of_init
    child_of_init = True
    for name in FORWARDED + ("SIGPIPE", "SIGXFSZ"):    # Python ignores the last two
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded())   # one forwarded meanwhile acts now
    os.setsid()
    if os.isatty(0):
        libc.ioctl(0, TIOCSCTTY, 0)          # -t: the pty is the program's terminal
    if uid_gid:
        uid, gid = uid_gid
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as e:
            fail(f"Unable to change to the working directory {workdir}: {e.strerror}")
    path = find_program(program[0], env.get(b"PATH", b"").decode())
    if path is None:
        fail(f"Unable to locate {program[0]}", 127)
    try:
        os.execve(path, program, env)
    except OSError as e:
        fail(f"Unable to exec {program[0]}: {e.strerror}", 126)


def wait_for(pid: int) -> int:
    """Reap every child (orphans land here) until `pid` ends; its shell-style status."""
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def is_a(kind, path: str) -> bool:
    """os.path.isfile and isdir: `kind` is stat.S_ISREG or S_ISDIR."""
    try:
        return kind(os.stat(path).st_mode)
    except OSError:
        return False


def find_program(name: str, path: str) -> str | None:
    """Where `exec` would find `name`: itself if it has a slash, else along PATH."""
    candidates = [name] if "/" in name else [f"{d or '.'}/{name}" for d in path.split(":")]
    for candidate in candidates:
        if is_a(stat.S_ISREG, candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- Start-up speed -------------------------------------------------------------------
# signal, socket and ctypes would load enum and more: 7 ms of every start here
# (bench/README.md). Their C modules go by the same names and take the same
# calls; Libc is what ctypes.CDLL(None, use_errno=True) does with _ctypes.

import _ctypes  # noqa: E402
import _signal as signal  # noqa: E402
import _socket as socket  # noqa: E402


class CInt(_ctypes._SimpleCData):
    _type_ = "i"                          # ctypes.c_int


class LibcFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = CInt


class Libc:
    """ctypes.CDLL(None, use_errno=True): the C library's functions, by name."""
    _handle = _ctypes.dlopen(None, os.RTLD_NOW)

    def __getattr__(self, name: str) -> LibcFunction:
        return LibcFunction((name, self))


libc = Libc()


def libc_errno() -> int:
    """ctypes.get_errno(): what the last call through `libc` failed with."""
    return _ctypes.get_errno()


if __name__ == "__main__":
    main(sys.argv[1:])
