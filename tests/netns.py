"""Test hosts: a private network namespace with its own lxcbr0, and a daemon in it.

Everything a test daemon touches lives in its namespace (bridge, veths,
iptables rules, 127.0.0.1:4242) or under its temporary root, so tests run
beside a real daemon and leave the host as they found it. Teardown ends only
processes that live in the namespace the test created, by PID.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from docker0_2013.processes import kill_all
from docker0_2013.utils import remove_tree

CLONE_NEWNET = 0x40000000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
_libc = ctypes.CDLL(None, use_errno=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


class Netns:
    """`ip netns add`, with lxcbr0 10.0.3.1/24 inside unless bridge=None."""

    def __init__(self, bridge: str | None = "lxcbr0", address: str = "10.0.3.1/24") -> None:
        # The creator's PID in the name lets a later run remove what a killed run left.
        self.name = f"d0t-{os.getpid()}-{secrets.token_hex(4)}"
        run("ip", "netns", "add", self.name)
        try:
            self.exec("ip", "link", "set", "lo", "up")
            if bridge:
                self.exec("ip", "link", "add", bridge, "type", "bridge")
                self.exec("ip", "addr", "add", address, "dev", bridge)
                self.exec("ip", "link", "set", bridge, "up")
                self.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        except BaseException:        # a set-up that fails half way leaves no namespace
            self.destroy()
            raise

    def exec(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.name, *cmd, check=check, **kw)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)

    def socket_connect(self, address: tuple[str, int], timeout: float = 30) -> socket.socket:
        """A TCP connection made from inside the namespace (setns in a helper thread)."""
        result: list = []

        def connect() -> None:
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                result.append(socket.create_connection(address, timeout=timeout))
            except OSError as e:
                result.append(e)
            finally:
                os.close(fd)
        thread = threading.Thread(target=connect)
        thread.start()
        thread.join()
        if isinstance(result[0], OSError):
            raise result[0]
        return result[0]

    def wait_listening(self, address: tuple[str, int], timeout: float = 10) -> None:
        """Until something in the namespace accepts connections at `address` (or `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.socket_connect(address, timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """Every process whose network namespace is this one."""
        target = os.stat(f"/run/netns/{self.name}").st_ino
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    def destroy(self) -> None:
        try:
            if os.path.exists(f"/run/netns/{self.name}"):
                kill_until_gone(self.pids)
        finally:
            run("ip", "netns", "del", self.name, check=False)


def remove_abandoned_namespaces() -> None:
    """Delete the namespaces (and logs) of test runs that were killed before their teardown.

    Only names of the form d0t-PID-RANDOM whose PID no longer runs: a suite
    running beside this one keeps its own.
    """
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "d0t" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue                  # its run is still going
        except ProcessLookupError:
            pass
        abandoned = Netns.__new__(Netns)
        abandoned.name = name
        abandoned.destroy()
        log = os.path.join(tempfile.gettempdir(), f"{name}.log")
        if os.path.exists(log):
            os.unlink(log)


def kill_until_gone(find_pids) -> None:
    """SIGKILL what `find_pids()` lists until it lists nothing (at most 5 s)."""
    for _ in range(50):
        pids = find_pids()
        if not pids:
            return
        kill_all(pids)
        time.sleep(0.1)


def cgroup_mounts_script(cgroups: str = "host") -> str:
    """Shell commands that mount the host's cgroup hierarchies (and securityfs) again.

    `ip netns exec` mounts a fresh /sys for the namespace (LXC needs its
    /sys/class/net), which hides /sys/fs/cgroup; without it LXC cannot apply
    any cgroup limit. Mounting the same hierarchies again (in the private
    mount namespace `ip netns exec` made) brings them back. So does
    securityfs where the host has it: with AppArmor, the daemon loads its
    profile through it, and LXC refuses to start a container without it.

    cgroups="v2" mounts only the cgroup2 hierarchy, at /sys/fs/cgroup: the
    layout of a cgroup v2 host (Debian 12 on), whatever this host has. Its
    controllers are those the host has not bound to a v1 hierarchy.
    """
    commands = ["mount -t cgroup2 cgroup2 /sys/fs/cgroup"] if cgroups == "v2" else []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            point = fields.split()[4]
            fstype, source, options = rest.split()[:3]
            hierarchy = point.startswith("/sys/fs/cgroup") and fstype in ("tmpfs", "cgroup", "cgroup2")
            if hierarchy and cgroups != "v2":
                options = "mode=755" if fstype == "tmpfs" else options
                commands.append(f"mkdir -p {point} && mount -t {fstype} -o {options} {source} {point}")
            elif point == "/sys/kernel/security" and fstype == "securityfs":
                commands.append(f"mount -t securityfs securityfs {point}")
    return " && ".join(commands + ['exec "$@"'])


def kill_rooted_below(path: str) -> None:
    """End container processes: those whose root directory is below `path`."""
    path = os.path.realpath(path)

    def rooted() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.readlink(f"/proc/{entry}/root").startswith(path + "/"):
                    pids.append(int(entry))
            except OSError:
                pass
        return pids
    kill_until_gone(rooted)


def remove_container_cgroups(root: str) -> None:
    """rmdir the cgroups LXC made for the containers under `root` (lxc.payload.<ID>,
    lxc.monitor.<ID>) in every hierarchy: a daemon ended with its containers
    running leaves them, since its lxc-start monitors were killed too."""
    try:
        ids = [name.lstrip(":").split("-")[-1] for name in os.listdir(os.path.join(root, "containers"))]
    except OSError:
        return
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4] for line in f if line.partition(" - ")[2].split()[0] in ("cgroup", "cgroup2")}
    found = []
    for point in points:
        try:
            found += [os.path.join(point, name) for name in os.listdir(point)
                      if name.startswith(("lxc.payload.", "lxc.monitor.")) and name.split(".", 2)[2] in ids]
        except OSError:
            pass
    for _ in range(20):              # the last processes may take a moment to leave
        for top in found:
            for directory, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
        found = [top for top in found if os.path.isdir(top)]
        if not found:
            return
        time.sleep(0.1)


def unmount_below(path: str) -> None:
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted(points, key=len, reverse=True):
        point = point.encode().decode("unicode_escape")
        if point == path or point.startswith(path + "/"):
            run("umount", "-l", point, check=False)


class Daemon:
    """A real `docker0 -d` in a private namespace, under a temporary root.

    cgroups="host" mounts the host's cgroup hierarchies in the daemon's mount
    namespace (cgroup_mounts_script); "none" leaves /sys/fs/cgroup as `ip
    netns exec` makes it: empty; "v2" mounts only cgroup2 there. `env` is added to the daemon's environment.
    """

    def __init__(self, netns: Netns | None = None, root: str | None = None,
                 extra: tuple[str, ...] = (), cgroups: str = "host",
                 env: dict[str, str] | None = None,
                 program: tuple[str, ...] = (PYTHON, "-m", "docker0_2013"), cwd: str = REPO) -> None:
        self.netns, self.root, self.own_root = netns, root, root is None
        self.log_path = self.log = self.proc = None
        self.extra, self.cgroups, self.env = extra, cgroups, env
        self.program, self.cwd = program, cwd       # another install's `docker0`, say
        try:                         # a set-up that fails at any step leaves nothing
            self.netns = netns or Netns()
            self.root = root or tempfile.mkdtemp(prefix="docker0-test-")
            self.log_path = os.path.join(tempfile.gettempdir(), f"{self.netns.name}.log")
            self.start()
        except BaseException:
            self.destroy()
            raise

    def start(self, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")
        mounts = 'exec "$@"' if self.cgroups == "none" else cgroup_mounts_script(self.cgroups)
        env = {**os.environ, **self.env} if self.env else None
        self.proc = self.netns.popen("sh", "-c", mounts, "sh",
                                     *self.program, "-d", "-g", self.root,
                                     *self.extra, stdout=self.log, stderr=self.log, cwd=self.cwd,
                                     env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.logs()}")
            try:
                self.netns.socket_connect(("127.0.0.1", 4242), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not listen: {self.logs()}")

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the daemon process (the one we started, by PID)."""
        try:
            if self.proc and self.proc.poll() is None:
                os.kill(self.proc.pid, sig)
                self.proc.wait(10)
        finally:
            if self.log:
                self.log.close()

    def restart(self) -> None:
        self.kill(signal.SIGKILL)
        self.start()

    def raw(self, line: bytes, stdin: bytes = b"", timeout: float = 120) -> bytes:
        """Send a raw command line (plus stdin, then half-close); return the whole reply."""
        sock = self.netns.socket_connect(("127.0.0.1", 4242), timeout=timeout)
        with sock:
            sock.sendall(line + stdin)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while data := sock.recv(1 << 16):
                chunks.append(data)
        return b"".join(chunks)

    def call(self, *args: str, stdin: bytes = b"", timeout: float = 120) -> str:
        """One command in the 2013 JSON framing; the reply as text."""
        import json
        return self.raw(json.dumps(list(args)).encode() + b"\n", stdin, timeout).decode()

    def client(self, *args: str, input: bytes | None = b"", timeout: float = 120,
               env: dict | None = None) -> subprocess.CompletedProcess:
        """The real `docker0` client, run inside the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns.name, PYTHON, "-m",
                               "docker0_2013", *args], input=input, capture_output=True,
                              timeout=timeout, cwd=REPO, env=env)

    def destroy(self) -> None:
        """Undo what set-up got to, each step even when an earlier one failed."""
        try:
            self.kill()
        finally:
            try:
                if self.root:
                    kill_rooted_below(self.root)
            finally:
                try:
                    if self.netns:
                        self.netns.destroy()
                finally:
                    if self.root:
                        remove_container_cgroups(self.root)
                        unmount_below(self.root)
                        if self.own_root:
                            try:     # remove_tree: a container's tree may be deeper than PATH_MAX
                                remove_tree(self.root)
                            except OSError:
                                pass
                    if self.log_path and os.path.exists(self.log_path):
                        os.unlink(self.log_path)
