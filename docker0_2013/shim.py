"""The container's shim: one small process per container, which outlives the daemon.
containerd-shim / conmon, 2015+ (no 2013 file: the 2013 daemon held every
container's pipes itself, and a container died with it).

    python3 -I -S -B shim.py        (fd 0: a unix socket to the daemon)

The daemon starts this once, as its fork server (shim_client.py, ShimForkServer): a
Python that has loaded, so that a start never waits for one to load. For
each fd the daemon sends it (one end of a socket pair), the server forks a
shim, in a session of its own and with the host's init as its parent (a
double fork: it outlives the daemon and the server, and is never their
zombie). The shim answers on that socket with its PID, then waits there for
its job, which the daemon sends once the container is saved as running, in
one message and then EOF: the fds of a unix socket listening at
DIR/shim.sock (and with --tty the pty's master and slave), and NUL-separated
fields

    DIR [--tty] [--stdin] --status FILE -- COMMAND...

(EOF with no job: the daemon went away, or the start failed; the shim
exits). The shim then works in DIR, and

- runs COMMAND (lxc-start -F, lxc.py) with stdout and stderr on two pipes,
  or on the pty's slave with --tty; its stdin is a pipe with --stdin, the
  pty with --tty, else /dev/null;
- appends what comes out to DIR/<ID>-stdout.log and DIR/<ID>-stderr.log, the
  files `logs` prints and `attach` follows (with --tty, everything goes to the
  stdout log, as in Docker);
- takes the container's input on its socket: a connection that starts with
  the line `stdin` sends bytes to the container's stdin; `stdin-once` the
  same, and the stdin ends with the connection (a ^D on a pty);
- once COMMAND has ended and its output is drained, writes the container's
  status to DIR/exit-code (what the daemon reads, also after a restart),
  removes the socket and exits. `lxc-start -F` exits 0 whatever the
  container did, so the status is the one sysinit wrote to FILE (empty: the
  init was killed, 137 as for SIGKILL); lxc-start's own if it failed.
  The shim's own errors go to DIR/shim.log.

So the container writes to pipes, never to the log files: `echo b >
/dev/stdout` opens the pipe again, as on any Unix, instead of truncating a
log. And the daemon holds no fd of the container: it can be killed and
started again, and finds the shim by its socket and its working directory
(runtime.py: reconnect()).

Output from pipes is moved into the logs with splice(2), without a copy
through this process; the pty's with read and write.

Runs in: the fork server (serve_forks, one per daemon) and each shim, a
double-forked child of it (run_shim). The server's imports are paid once per
daemon, never by a start: the shims are its forks.
"""
import errno
import fcntl
import os
import select
import signal
import socket
import sys
import time

CHUNK = 1 << 16
PIPE_SIZE = 1 << 20         # the output pipes' buffer (Linux's default limit): fewer, larger copies
DRAIN_TIMEOUT = 2000        # ms: once COMMAND has ended, a silent output is taken as ended too
COALESCE, REST = 1 << 16, 0.001   # after moving less than 64 KiB, the pipes rest 1 ms: busybox
                                  # writes 4 KiB at a time, and a poll and a splice for each cost 1/4
                                  # (not a pty, which never gives more than 4 KiB a read)
EOT = b"\x04"               # ^D: the end of a terminal's input
SOCKET = "shim.sock"        # in the working directory: where clients send the container's input
LOG = "shim.log"            # in the working directory: the shim's own errors


def fail(message: str) -> None:
    say(message)
    os._exit(1)


def say(message: str) -> None:
    try:
        write_all(2, f"shim: {message}\n".encode())
    except OSError:                      # nowhere to say it: go on
        pass


def read_job() -> tuple[list[int], list[bytes]]:
    """What the daemon sends on fd 0: fds, and NUL-separated fields up to EOF ([] if none)."""
    channel = socket.socket(fileno=0)
    fds, data = receive(channel)
    chunks = [data]
    while data and (data := channel.recv(CHUNK)):
        chunks.append(data)
    channel.close()
    job = b"".join(chunks)
    return fds, job.split(b"\0") if job else []


def receive(channel: socket.socket) -> tuple[list[int], bytes]:
    """One message and the fds that came with it, close-on-exec (not socket.recv_fds,
    which drops its flags: the fds would leak into the container)."""
    data, ancillary, _, _ = channel.recvmsg(CHUNK, socket.CMSG_SPACE(3 * 4), socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4)]
    return fds, data


def parse_job(fields: list[bytes], fds: list[int]) -> dict:
    """DIR [--tty] [--stdin] --status FILE -- COMMAND..., with the listener's fd
    (and the pty's) as they came."""
    job = {"dir": fields.pop(0).decode(), "tty": None, "stdin": False, "status": "", "command": []}
    while fields:
        flag = fields.pop(0)
        if flag == b"--":
            job["command"] = fields
            break
        elif flag == b"--tty" and len(fds) == 3:
            job["tty"] = (fds[1], fds[2])
        elif flag == b"--stdin":
            job["stdin"] = True
        elif flag == b"--status" and fields:
            job["status"] = fields.pop(0).decode()
        else:
            fail(f"bad job field {flag!r}")
    if not fds or not job["command"] or not job["status"]:
        fail("the job needs DIR, a listening socket, --status FILE and a command")
    return job


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def start(command: list[bytes], stdio: tuple[int, int, int]) -> int:
    """Start COMMAND with `stdio` as its fds 0, 1 and 2, and the signals Python
    changed back to their defaults; its PID. posix_spawn, not fork: a forked
    Python copies every page it touches before the exec. COMMAND[0] is a full
    path (lxc.execute_command): nothing is looked up along PATH."""
    return os.posix_spawn(command[0], command, os.environb,
                             file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)],
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT))


class Shim:
    def __init__(self, directory: str, listener: socket.socket, status_file: str) -> None:
        self.directory = directory            # the working directory: the names below are in it
        self.listener = listener
        self.status_file = status_file        # where sysinit writes the container's status
        self.outputs: dict[int, int] = {}     # fd read from the container -> its log's fd
        self.stdin: int | None = None         # where the container's input is written
        self.tty_master = False                # -t: one pty master is the input and the output
        self.pending = b""                    # input not yet taken by the container
        self.close_stdin = False              # after `pending`: a stdin-once client has ended
        self.requests: dict[int, bytes] = {}  # connections whose first line is still coming
        self.clients: dict[int, bool] = {}    # stdin connections -> once?
        self.child_fd: int | None = None      # a pidfd, readable once COMMAND has ended
        self.child = 0
        self.status: int | None = None
        self.rest_until = 0.0                 # time.monotonic() until which the outputs gather

    def log(self, stream: str) -> int:
        """A log file, opened at its end. Not O_APPEND, which splice refuses: this
        process is the file's only writer."""
        name = self.directory.rstrip("/").rsplit("/", 1)[-1]
        fd = os.open(f"{name}-{stream}.log",
                        os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def run(self, command: list[bytes], tty: tuple[int, int] | None, open_stdin: bool) -> int:
        stdout_log, stderr_log = self.log("stdout"), self.log("stderr")
        if tty:
            master, slave = tty               # received close-on-exec (read_job)
            os.set_blocking(master, False)
            self.outputs[master] = stdout_log
            self.stdin, self.tty_master = master, True
            stdio = (slave, slave, slave)
            ours = [slave]
        else:
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            for fd in (out_read, err_read):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self.outputs = {out_read: stdout_log, err_read: stderr_log}
            if open_stdin:
                in_read, self.stdin = os.pipe()
                os.set_blocking(self.stdin, False)
            else:
                in_read = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            stdio = (in_read, out_write, err_write)
            ours = list(stdio)
        self.child = start(command, stdio)
        for fd in ours:                  # only the container holds its ends now: EOF when it ends
            os.close(fd)
        self.child_fd = os.pidfd_open(self.child)
        self.serve()
        for fd in (stdout_log, stderr_log):
            os.close(fd)
        return self.status

    # -- The loop -------------------------------------------------------------------

    def serve(self) -> None:
        """Copy output to the logs and input to the container until both are done."""
        while self.status is None or self.outputs:
            poller = select.poll()
            rest = self.rest_until - time.monotonic()
            events = {fd: select.POLLIN for fd in [*self.requests, self.listener.fileno()]}
            if rest <= 0:
                events.update((fd, select.POLLIN) for fd in self.outputs)
            if self.child_fd is not None:
                events[self.child_fd] = select.POLLIN
            if self.pending and self.stdin is not None:
                events[self.stdin] = events.get(self.stdin, 0) | select.POLLOUT
            else:                          # read more input only once the container took the last
                events.update((fd, select.POLLIN) for fd in self.clients)
            for fd, mask in events.items():
                poller.register(fd, mask)
            ready = poller.poll(rest * 1000 if rest > 0 else None if self.status is None else DRAIN_TIMEOUT)
            if not ready and rest <= 0:    # ended, and nothing more comes: something else holds a pipe
                break
            for fd, event in ready:
                if fd in self.outputs and event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self.copy_output(fd)
                if fd == self.stdin and event & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                    self.feed()
                if fd == self.child_fd:
                    self.reap()
                elif fd == self.listener.fileno():
                    self.accept()
                elif fd in self.requests:
                    self.read_request(fd)
                elif fd in self.clients:
                    self.read_input(fd)

    def copy_output(self, fd: int) -> None:
        """Move what the container wrote into its log; at the end, forget the output."""
        log_fd = self.outputs[fd]
        try:
            if self.tty_master:
                data = os.read(fd, CHUNK)
                moved = len(data)
                write_all(log_fd, data)
            else:
                moved = os.splice(fd, log_fd, PIPE_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            if self.tty_master and e.errno == errno.EIO:    # every slave of the pty is closed
                moved = 0
            else:                          # a full disk: the container must not block on it
                say(f"{self.directory}: the log lost output: {e}")
                moved = 1 if self.tty_master else len(os.read(fd, PIPE_SIZE))
        if moved < COALESCE and not self.tty_master:   # a trickle: let it gather, then move it at once
            self.rest_until = time.monotonic() + REST
        if not moved:
            del self.outputs[fd]
            if fd == self.stdin:             # the pty: its input has ended too
                self.stdin, self.pending = None, b""
            os.close(fd)

    def reap(self) -> None:
        _, status = os.waitpid(self.child, 0)
        code = os.waitstatus_to_exitcode(status)
        self.status = 128 - code if code < 0 else code or self.init_status()
        os.close(self.child_fd)
        self.child_fd = None

    def init_status(self) -> int:
        """The container's status as sysinit wrote it; 137 (SIGKILL) if it wrote none."""
        try:
            fd = os.open(self.status_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return 137
        try:
            return int(os.read(fd, 32).strip() or b"137")
        except ValueError:
            return 137
        finally:
            os.close(fd)

    # -- Input ------------------------------------------------------------------------

    def accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        fd = connection.detach()
        self.requests[fd] = b""

    def read_request(self, fd: int) -> None:
        """The first line of a connection: `stdin` or `stdin-once`; what follows is input."""
        data = self.read(fd)
        if data is None:
            return
        line = self.requests[fd] + data
        if b"\n" not in line:
            if len(line) > 100:
                self.hang_up(fd)
            else:
                self.requests[fd] = line
            return
        del self.requests[fd]
        request, rest = line.split(b"\n", 1)
        if request not in (b"stdin", b"stdin-once"):
            return self.hang_up(fd)
        self.clients[fd] = request == b"stdin-once"
        self.take_input(fd, rest)

    def read_input(self, fd: int) -> None:
        data = self.read(fd)
        if data is not None:
            self.take_input(fd, data)

    def read(self, fd: int) -> bytes | None:
        """What a connection sent; None (and it is closed) if it has ended."""
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        if data:
            return data
        if self.clients.get(fd):           # stdin-once: the container's input ends with it
            self.close_stdin = True
        self.hang_up(fd)
        if self.close_stdin and not self.pending:
            self.end_input()
        return None

    def take_input(self, fd: int, data: bytes) -> None:
        if self.stdin is not None and data:
            self.pending += data
            self.feed()

    def feed(self) -> None:
        try:
            self.pending = self.pending[os.write(self.stdin, self.pending):]
        except BlockingIOError:
            return
        except OSError:                    # the container closed its stdin: drop the input
            self.pending = b""
            if not self.tty_master:
                os.close(self.stdin)
                self.stdin = None
            return
        if not self.pending and self.close_stdin:
            self.end_input()

    def end_input(self) -> None:
        self.close_stdin = False
        if self.stdin is None:
            return
        if self.tty_master:
            self.pending = EOT
            self.feed()
        else:
            os.close(self.stdin)
            self.stdin = None

    def hang_up(self, fd: int) -> None:
        self.requests.pop(fd, None)
        self.clients.pop(fd, None)
        os.close(fd)

    # -- The end ----------------------------------------------------------------------

    def finish(self) -> None:
        """Record the status (written aside, then renamed); run_shim() then removes the socket.

        Not synced: an fsync here would add 3-5 ms to every run, and the daemon
        saves the status in the container's record (synced) right after. After
        a power loss while the daemon was down, the file is at worst missing or
        empty, which reads as -127, the 2013 status (shim_client.read_exit_code).
        """
        fd = os.open("exit-code.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, b"%d\n" % self.status)
        finally:
            os.close(fd)
        os.rename("exit-code.tmp", "exit-code")


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def serve_forks() -> None:
    """The fork server: a shim for every socket the daemon sends on fd 0, until EOF."""
    control = socket.socket(fileno=0)
    while True:
        fds, _ = receive(control)
        if not fds:                      # the daemon has gone: the shims stay
            os._exit(0)
        child = os.fork()
        if child == 0:
            os.setsid()               # a session of its own: no signal for the daemon's reaches it
            if os.fork():             # the shim is the grandchild: the host's init reaps it
                os._exit(0)
            control.close()
            os.dup2(fds[0], 0)
            os.close(fds[0])
            write_all(0, b"%d\n" % os.getpid())
            run_shim()
        os.close(fds[0])
        os.waitpid(child, 0)


def run_shim() -> None:
    """One container's shim: its job from fd 0, then its run; exits with its status."""
    fds, fields = read_job()
    if not fields:                       # the daemon went away, or the start failed
        os._exit(0)
    job = parse_job(fields, fds)
    os.chdir(job["dir"])
    log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(log, 2, inheritable=False)     # its own errors: not the daemon's stderr, which may go away
    os.close(log)
    listener = socket.socket(fileno=fds[0])
    listener.setblocking(False)
    shim = Shim(job["dir"], listener, job["status"])
    try:
        status = shim.run(job["command"], job["tty"], job["stdin"])
        shim.finish()
    finally:
        remove(SOCKET)
    os._exit(status & 0xFF)


if __name__ == "__main__":
    serve_forks()
