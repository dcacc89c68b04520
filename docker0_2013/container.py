"""A container: its JSON record, its state, its start and stop, its streams.
container.go and state.go of 2013.

Start (spec 5.5): take a shim from the fork server (shim_client.py), mount
the layered root, allocate an IP and ports, write config.lxc, save the record
as running, then send the shim its job, which runs

    lxc-start -F ... -- <sysinit> -g GW [-u USER] [-w DIR] -- CMD...

Runs in: the daemon's event loop; the blocking part of a start (launch) and
of the release after a run (finish) in a worker thread.

Changed since 2013:
- a shim per container (shim.py, the role of containerd-shim) holds its pipes
  or pty and writes the logs and the exit status, so a container outlives a
  stopped or killed daemon and the next daemon attaches to it again;
- the record says running before anything runs: a daemon killed in between
  leaves nothing running behind a record that says it is not;
- `-t` is one pseudo-terminal for stdin, stdout and stderr (2013 had three),
  starting at 24x80: the protocol cannot send a size;
- a per-container lock and a wait that cannot miss its wake-up (2013 could
  double-start, spec 10.2); a failed start gives back what it took.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import termios
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from . import lxc
from .graph import is_mounted, mount_rootfs, unmount_rootfs
from .processes import catches, container_init, kill_container, wait_for_pid
from .shim_client import SHIM_SERVER, ShimJob, connect_shim, in_directory, read_exit_code
from .utils import ZERO_TIME, atomic_write, json_compact, now_string, parse_time, short_id

if TYPE_CHECKING:
    from .graph import Graph
    from .network import NetworkInterface, NetworkManager

log = logging.getLogger("docker0")
STOP_TIMEOUT = 10.0
TTY_SIZE = (24, 80)          # rows, columns: what a terminal without a client's size says


class ClosedPipe(Exception):
    """Go's io.ErrClosedPipe: the client ended its input to a container that keeps stdin open.

    Not BrokenPipeError, which the server takes for a client that has left:
    this one is reported to the client (spec 5.7).
    """


def _from_dict(cls, record: dict | None):
    """A dataclass from a JSON object, ignoring unknown members (as Go did)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (record or {}).items() if k in names})


@dataclass
class Config:
    """What `run` asked for (spec 5.1, `Config`)."""
    Hostname: str = ""
    User: str = ""
    Memory: int = 0
    MemorySwap: int = 0
    AttachStdin: bool = False
    AttachStdout: bool = False
    AttachStderr: bool = False
    PortSpecs: list[str] | None = None
    Tty: bool = False
    OpenStdin: bool = False
    StdinOnce: bool = False
    Env: list[str] | None = None
    Cmd: list[str] | None = None
    Image: str = ""
    # Not in 2013: from a pulled image's config (and kept by commit). Left out
    # of records when empty, so 2013 records stay as they were.
    Entrypoint: list[str] | None = None
    WorkingDir: str = ""


IMAGE_SETTINGS = ("Entrypoint", "Cmd", "Env", "User", "WorkingDir")   # what an image config carries


def config_record(config: Config) -> dict:
    """The JSON form of a Config: the 2013 members, then the newer ones that are set."""
    record = asdict(config)
    return {k: v for k, v in record.items() if v or k not in ("Entrypoint", "WorkingDir")}


def apply_image_config(config: Config, image_config: dict) -> None:
    """Fill what `run` did not say from the image's config, as Docker does today:
    a command replaces Cmd and keeps Entrypoint, -e adds to or overrides Env by
    name, -u overrides User. An imported image has none of these: 2013 behaviour."""
    config.Entrypoint = config.Entrypoint or image_config.get("Entrypoint") or None
    config.Cmd = config.Cmd or image_config.get("Cmd") or []
    if image_config.get("Env"):
        config.Env = lxc.merge_env(image_config["Env"], config.Env)
    config.User = config.User or image_config.get("User") or ""
    config.WorkingDir = config.WorkingDir or image_config.get("WorkingDir") or ""


@dataclass
class State:
    Running: bool = False
    Pid: int = 0
    ExitCode: int = 0
    StartedAt: str = ZERO_TIME


@dataclass
class NetworkSettings:
    IpAddress: str = ""
    IpPrefixLen: int = 0
    Gateway: str = ""
    PortMapping: dict[str, str] | None = None


@dataclass
class Container:
    Id: str
    Created: str
    Path: str
    Args: list[str]
    Config: Config
    State: State
    Image: str
    NetworkSettings: NetworkSettings
    SysInitPath: str
    # Not part of config.json: where it lives and the runtime parts it uses.
    root: str = field(default="", repr=False)
    graph: "Graph | None" = field(default=None, repr=False)
    network: "NetworkManager | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Held by start, export, rm and the release after a run: never hold it
        # while waiting for the container to stop (the release needs it to finish).
        self.lock = asyncio.Lock()
        # 2013's State had one condition variable; these three events say what
        # its waiters waited for, and change only in the set_* methods below.
        self.started = asyncio.Event()       # set while running
        self.exited = asyncio.Event()        # set from the run's end: its output is complete
        self.stopped = asyncio.Event()       # set from the end of the release after it: `wait` returns
        if self.State.Running:
            self.started.set()
        else:
            self.exited.set()
            self.stopped.set()
        self.created_at = parse_time(self.Created)   # for sorting `ps`
        self.iface: NetworkInterface | None = None
        self.console = ""                    # -t: the host's name of the pty the shim holds
        self.killed = False                  # by `kill`: the run's status is -1, as in 2013
        self.removed = False                 # rm has taken it: nothing may start or wait on it again
        self.monitor_task: asyncio.Task | None = None

    # -- State: state.go's setRunning and setStopped ---------------------------------

    def set_running(self, running: State) -> None:
        self.State = running
        self.killed = False
        self.exited.clear()
        self.stopped.clear()
        self.started.set()

    def set_stopped(self, ended: State) -> None:
        """The run is over and its output complete: attached clients read to the end and go."""
        self.State = ended
        self.NetworkSettings = NetworkSettings()
        self.started.clear()
        self.exited.set()

    def set_released(self) -> None:
        """What the run held is given back and the record saved: `wait` returns."""
        self.stopped.set()

    def set_removed(self) -> None:
        self.removed = True
        self.started.set()                   # wakes attachers waiting for a run that will not come

    def ended_state(self) -> State:
        """How the last run ended: -1 if it was killed (2013), else what its shim recorded."""
        exit_code = -1 if self.killed else read_exit_code(self.path("exit-code"))
        return State(Running=False, Pid=0, ExitCode=exit_code, StartedAt=self.State.StartedAt)

    # -- The record ------------------------------------------------------------------

    def to_dict(self) -> dict:
        names = [f.name for f in fields(self) if f.name[0].isupper()]
        return {name: (config_record(v) if isinstance(v, Config) else
                       asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                for name in names for v in [getattr(self, name)]}

    @classmethod
    def from_dict(cls, record: dict, **parts) -> "Container":
        return cls(Id=record["Id"], Created=record.get("Created", ZERO_TIME),
                   Path=record.get("Path", ""), Args=record.get("Args") or [],
                   Config=_from_dict(Config, record.get("Config")),
                   State=_from_dict(State, record.get("State")), Image=record.get("Image", ""),
                   NetworkSettings=_from_dict(NetworkSettings, record.get("NetworkSettings")),
                   SysInitPath=record.get("SysInitPath", ""), **parts)

    @classmethod
    def load(cls, root: str, **parts) -> "Container":
        with open(os.path.join(root, "config.json"), "rb") as f:
            return cls.from_dict(json.loads(f.read()), root=root, **parts)

    def to_disk(self, state: State | None = None) -> None:
        """Save config.json; with `state`, as the record will be once it is in effect."""
        record = self.to_dict() | ({"State": asdict(state)} if state else {})
        atomic_write(self.path("config.json"), json_compact(record), 0o600)

    def path(self, *names: str) -> str:
        return os.path.join(self.root, *names)

    @property
    def rootfs(self) -> str:
        return self.path("rootfs")

    @property
    def rw(self) -> str:
        return self.path("rw")

    def log_path(self, stream: str) -> str:
        return self.path(f"{self.Id}-{stream}.log")

    @property
    def short_id(self) -> str:
        return short_id(self.Id)

    # -- Start ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.lock:
            if self.removed:                 # an rm that came first
                raise LookupError(f"No such container: {self.short_id}")
            if self.State.Running:
                raise RuntimeError(f"The container {self.Id} is already running.")
            job, running = await asyncio.to_thread(self.launch)
            self.set_running(running)
            self.monitor_task = asyncio.create_task(self.monitor(job.pid, job.pidfd))
            job.send()                       # recorded as running: now the shim may start it

    def launch(self) -> tuple[ShimJob, State]:
        """Take a shim, prepare, save the record as running; the shim's job, to send.

        Blocking work (a mount, fsyncs), so it runs in a worker thread: in one,
        since every hop between threads adds to the start. Each step that
        takes something pushes its undo on `undo`; if a later step fails they
        run in reverse, and the shim is let go without starting anything.
        """
        with contextlib.ExitStack() as undo:
            job = self.take_shim(undo)
            self.prepare(undo)
            running = State(Running=True, Pid=job.pid, ExitCode=0, StartedAt=now_string())
            init = lxc.init_command(self.NetworkSettings.Gateway, self.Config.User, self.Path,
                                    self.Args, self.Config.WorkingDir)
            job.command = lxc.execute_command(self.Id, os.path.dirname(self.root),
                                              self.path("config.lxc"), init)
            self.to_disk(running)
            undo.pop_all()                   # saved as running: the run keeps all of it
        return job, running

    def take_shim(self, undo: contextlib.ExitStack) -> ShimJob:
        """A shim for this start (SHIM_SERVER), and its job's fds: the socket it will
        listen on, bound here so that a client can connect as soon as the
        container runs, and with -t the pty, whose name goes into config.lxc."""
        for name in ("exit-code", "shim.sock"):
            if os.path.exists(self.path(name)):
                os.unlink(self.path(name))
        for stream in ("stdout", "stderr"):     # there for attach and logs, whatever the shim does
            os.close(os.open(self.log_path(stream), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        job = SHIM_SERVER.take([self.root, "--status", lxc.STATUS_FILE])
        undo.callback(os.close, job.pidfd)
        undo.callback(job.cancel)            # the shim reads EOF and exits
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            in_directory(self.root, "shim.sock", listener.bind)
            listener.listen(64)
            job.fds.append(listener.detach())
        if self.Config.Tty:          # one pty: input, output and errors; 24x80
            master, slave = os.openpty()
            job.fds += [master, slave]
            termios.tcsetwinsize(master, TTY_SIZE)
            self.console = os.ttyname(slave)
            job.fields.append("--tty")
        if self.Config.OpenStdin:
            job.fields.append("--stdin")
        return job

    def prepare(self, undo: contextlib.ExitStack) -> None:
        """Mount the root, allocate the network, write config.lxc (blocking; in a thread)."""
        if not is_mounted(self.rootfs):
            mount_rootfs(self.graph, self.Image, self.rw, self.path("rw-work"), self.rootfs)
        undo.callback(self.unmount)
        self.iface = iface = self.network.allocate()
        undo.callback(self.release_network)
        for spec in self.Config.PortSpecs or []:
            iface.allocate_port(spec)
        self.NetworkSettings = NetworkSettings(iface.ip, iface.prefixlen, iface.gateway,
                                               dict(iface.port_mapping) or None)
        env = lxc.environment(self.Config.Env, self.Config.Tty)
        lxc.copy_resolv_conf(self.root)
        config = lxc.lxc_config(hostname=self.Config.Hostname, rootfs=self.rootfs,
                                bridge=self.network.bridge, iface=iface, env=env,
                                memory=self.Config.Memory, memory_swap=self.Config.MemorySwap,
                                console=self.console, resolv_conf=lxc.prepare_rootfs(self.rootfs))
        # Written anew before every start and read by nothing after a crash: no fsync.
        fd = os.open(self.path("config.lxc"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config)

    # -- Exit ---------------------------------------------------------------------------

    async def monitor(self, pid: int, pidfd: int | None = None) -> None:
        """Wait for the shim to end, then release everything (spec 5.8).

        The shim ends after the container's output is in the logs.
        """
        await wait_for_pid(pid, pidfd)
        ended = self.ended_state()
        async with self.lock:      # not under an export's feet, and before the next start or rm
            try:
                await asyncio.to_thread(self.release_network)
            finally:
                self.set_stopped(ended)          # 2013: close the attached clients' writers
            try:
                await asyncio.to_thread(self.finish, ended)      # meanwhile they are answered
            finally:
                self.set_released()

    def finish(self, ended: State) -> None:
        """Unmount the root, then save the record as stopped (blocking; in a thread)."""
        try:
            self.unmount()
        finally:
            try:
                self.to_disk(ended)
            except OSError as e:                   # spec 5.8 step 9: logged, nothing more
                log.info("%s: Failed to save the container: %s", self.Id, e)

    def release_network(self) -> None:
        """Give back the IP, the public ports and their iptables rules."""
        if self.iface is not None:
            self.iface.release()
            self.iface = None
        self.NetworkSettings = NetworkSettings()

    def unmount(self) -> None:
        """Unmount the root; a failure is logged (spec 5.8 step 6)."""
        if is_mounted(self.rootfs):
            try:
                unmount_rootfs(self.rootfs)
            except OSError as e:
                log.info("%s: Failed to umount filesystem: %s", self.Id, e)

    # -- Stop, kill, wait -------------------------------------------------------------------

    def init_pid(self) -> int | None:
        """The container's PID 1 (sysinit) on the host, once it is ready for signals.

        It is the first process below the shim in a PID namespace of its
        own; ready once it catches SIGTERM (sysinit's first step). Before that,
        LXC is still setting the container up, and a signal would be lost or
        leave lxc-start waiting. Nothing in the container can change either
        fact: the init is not dumpable, so its memory is out of their reach.
        """
        pid = container_init(self.State.Pid)
        return pid if pid is not None and catches(pid, signal.SIGTERM) else None

    def signal_init(self, sig: int) -> bool:
        pid = self.init_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    async def kill(self) -> None:
        """End every process of the container through its cgroup, and wait for the release.

        Needs nothing from the container's own processes (kill_container).
        """
        while self.State.Running:
            pid = self.init_pid()
            signalled = pid is not None and await asyncio.to_thread(kill_container, pid)
            self.killed = self.killed or signalled     # not if it had ended by itself
            try:       # no init yet: the container is still starting; try again soon
                await asyncio.wait_for(self.stopped.wait(), 1.0 if signalled else 0.02)
            except asyncio.TimeoutError:
                pass

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then kill after `timeout` seconds (spec 5.6)."""
        if not self.State.Running:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A namespace's PID 1 gets only the signals it catches: wait for
        # sysinit to be there, or the signal is lost. The wait counts
        # against `timeout` (a slow or emulated host may take seconds).
        while not self.signal_init(signal.SIGTERM):
            if self.exited.is_set():           # it ended by itself meanwhile
                await self.stopped.wait()
                return
            if loop.time() > deadline:
                log.info("Failed to send SIGTERM to the process, force killing")
                return await self.kill()
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self.stopped.wait(), max(deadline - loop.time(), 0.1))
        except asyncio.TimeoutError:
            log.info("Container %s failed to exit within %d seconds of SIGTERM - using the force",
                     self.Id, timeout)
            await self.kill()

    async def wait(self) -> int:
        await self.stopped.wait()
        return self.State.ExitCode

    # -- Streams ----------------------------------------------------------------------------

    def log_offsets(self) -> tuple[int, int]:
        return tuple(os.path.getsize(p) if os.path.exists(p) else 0
                     for p in (self.log_path("stdout"), self.log_path("stderr")))

    async def attach(self, stdin, stdout, attach_stdin: bool, attach_stdout: bool,
                     attach_stderr: bool, offsets: tuple[int, int] | None = None) -> None:
        """Stream the container's output to `stdout` (and `stdin` into it) until it stops.

        Output is followed from the logs, starting where they end now (spec 5.7:
        what came before is for `logs`). A stopped container is waited for: the
        attach ends when its next run does.
        """
        offsets = offsets or self.log_offsets()
        outputs = []
        if attach_stdout:
            outputs.append(asyncio.create_task(self.follow(self.log_path("stdout"), offsets[0], stdout)))
        if attach_stderr:
            outputs.append(asyncio.create_task(self.follow(self.log_path("stderr"), offsets[1], stdout)))
        jobs = list(outputs)
        if attach_stdin and self.Config.OpenStdin:
            jobs.append(asyncio.create_task(self.feed_stdin(stdin)))
        try:
            for job in asyncio.as_completed(jobs):
                await job                     # the first error ends the attach (spec 5.7)
                if outputs and all(output.done() for output in outputs):
                    return                    # the run is over: so is reading its input
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    async def follow(self, path: str, offset: int, out) -> None:
        """`tail -f` of one log file from `offset`, until the container's run ends."""
        await self.started.wait()
        if self.removed:
            return
        delay = 0.001
        while not os.path.exists(path):
            await asyncio.sleep(0.01)
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                ended = self.exited.is_set()     # read once more after the end
                data = f.read(1 << 18)
                if data:
                    out.write(data)
                    await out.drain()
                    delay = 0.001
                    continue
                if ended:
                    return
                try:
                    await asyncio.wait_for(self.exited.wait(), delay)
                except asyncio.TimeoutError:
                    delay = min(delay * 2, 0.05)

    async def feed_stdin(self, stdin) -> None:
        """Copy the client's input into the container's stdin (-i), through its shim."""
        await self.started.wait()
        if self.removed:
            return
        try:
            shim = await connect_shim(self.root, "stdin-once" if self.Config.StdinOnce else "stdin")
        except OSError:                      # the run has just ended
            return
        try:
            while data := await stdin.read(1 << 16):
                shim.write(data)
                await shim.drain()
        except OSError:
            return
        finally:
            shim.close()                     # with stdin-once, the container's input ends here
        if self.Config.StdinOnce:
            await self.exited.wait()
        else:
            raise ClosedPipe("io: read/write on closed pipe")
