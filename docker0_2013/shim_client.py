"""The daemon's side of the shim protocol (shim.py is the other side). No 2013 file:
the 2013 daemon held every container's pipes itself (container.go).

Runs in: the daemon, in the worker thread of a start (Container.launch) and on
its event loop (sending the job, connecting to a shim's socket).

A start takes a shim from the fork server (ShimForkServer.take), fills in its
ShimJob, and sends it once the container is saved as running. shim.py is a
program of its own, run by path with nothing of the package on its sys.path,
so this half lives apart from it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading

from .lxc import DEFAULT_PATH

log = logging.getLogger("docker0")
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py")


class ShimJob:
    """What a shim is sent once its container is saved as running (shim.py: read_job):
    fds, and NUL-separated fields, then EOF."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket, fields: list[str]) -> None:
        self.pid = pid                       # the shim's: State.Pid
        self.pidfd = pidfd                   # the shim's pidfd, for monitor(); the caller closes it
        self.channel = channel               # the daemon's end of the shim's fd 0
        self.fields = fields                 # DIR [--tty] [--stdin] --status FILE
        self.fds: list[int] = []             # the listening socket [, the pty's master and slave]
        self.command: list[str] = []

    def send(self) -> None:
        payload = b"\0".join(os.fsencode(field) for field in [*self.fields, "--", *self.command])
        try:
            sent = socket.send_fds(self.channel, [payload], self.fds)
            self.channel.sendall(payload[sent:])
        except OSError as e:                 # the shim has died: monitor() sees it end
            log.info("Failed to start the shim: %s", e)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Close the daemon's ends: the shim reads EOF, and gets no job if none was sent."""
        self.channel.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class ShimForkServer:
    """The daemon's handle on the shims' fork server (shim.py's serve_forks),
    started once: a start asks it for a shim, which it forks at once, instead
    of waiting for a Python to load (bench/README.md). Started again if it has died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: subprocess.Popen | None = None
        self.control: socket.socket | None = None     # the server's fd 0

    def take(self, fields: list[str]) -> ShimJob:
        """A new shim waiting for its job (with `fields` so far)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.lock:
                if self.control is None:
                    self.start_server()
                try:
                    socket.send_fds(self.control, [b"shim"], [theirs.fileno()])
                except OSError:              # it has died: once more, with a new one
                    self.start_server()
                    socket.send_fds(self.control, [b"shim"], [theirs.fileno()])
            theirs.close()
            pid = int(read_line(ours))       # the shim's first word
            return ShimJob(pid, os.pidfd_open(pid), ours, fields)
        except BaseException:
            ours.close()
            theirs.close()
            raise

    def start_server(self) -> None:
        if self.control is not None:
            self.control.close()
            self.server.wait()
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:                                 # a session of its own, as its shims; it ends with the daemon
            self.server = subprocess.Popen([sys.executable, "-I", "-S", "-B", SHIM], stdin=theirs,
                                           stdout=subprocess.DEVNULL, cwd="/", start_new_session=True,
                                           env={"PATH": DEFAULT_PATH})
        finally:
            theirs.close()


SHIM_SERVER = ShimForkServer()


def read_line(sock: socket.socket, limit: int = 32) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        if not (data := sock.recv(1)) or len(line) > limit:
            raise OSError("the shim did not start")
        line += data
    return line


def in_directory(directory: str, name: str, action) -> None:
    """`action(path)` for a socket path in `directory`, through /proc/self/fd: a unix
    socket's path may have 107 bytes, and `ROOT/containers/<64-digit ID>/` is long."""
    fd = os.open(directory, os.O_PATH | os.O_CLOEXEC)
    try:
        action(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


async def connect_shim(directory: str, request: str) -> asyncio.StreamWriter:
    """A connection to the shim of the container in `directory` that starts with
    `request` (shim.py: `stdin` or `stdin-once`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        in_directory(directory, "shim.sock", sock.connect)   # a listening socket: at once
        _, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    writer.write(request.encode() + b"\n")
    return writer


def shim_answers(directory: str) -> bool:
    """Does the shim of the container in `directory` still listen on its socket?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            in_directory(directory, "shim.sock", sock.connect)
            return True
        except OSError:
            return False


def read_exit_code(path: str) -> int:
    """The status the shim recorded; -127 if it never got to write one (spec 4.6)."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return -127


def process_alive(pid: int, root: str) -> bool:
    """Is `pid` still the shim of the container in `root` (and not a reused PID)?
    A shim works in its container's directory."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            is_shim = SHIM.encode() in f.read()
        return is_shim and os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(root)
    except OSError:
        return False
