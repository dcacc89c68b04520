"""The container's shim: one small process per container, which outlives the daemon.
containerd-shim / conmon, 2015+ (no 2013 file: the 2013 daemon held every
container's pipes itself, and a container died with it).

    python3 -I -S shim.py DIR --socket FD [--tty MASTER,SLAVE] [--stdin]

The daemon starts it in a session of its own (container.py: Container.spawn())
with FD a unix socket listening at DIR/shim.sock, and fd 0 a pipe on which it
writes COMMAND (its arguments separated by NUL bytes) and closes once the
container is saved as running; the shim's start-up meanwhile overlaps the
daemon's. The shim then

- runs COMMAND (lxc-start under lxc.py's line of sh) with stdout and stderr
  on two pipes, or on the pty's slave with --tty; its stdin is a pipe with
  --stdin, the pty with --tty, else /dev/null;
- appends what comes out to DIR/<ID>-stdout.log and DIR/<ID>-stderr.log, the
  files `logs` prints and `attach` follows (with --tty, everything goes to the
  stdout log, as in Docker);
- takes the container's input on its socket: a connection that starts with
  the line `stdin` sends bytes to the container's stdin; `stdin-once` the
  same, and the stdin ends with the connection (a ^D on a pty);
- once COMMAND has ended and its output is drained, writes its status to
  DIR/exit-code (what the daemon reads, also after a restart), removes the
  socket and exits.

So the container writes to pipes, never to the log files: `echo b >
/dev/stdout` opens the pipe again, as on any Unix, instead of truncating a
log. And the daemon holds no fd of the container: it can be killed and
started again, and finds the shim by its socket (runtime.py: reconnect()).

Output from pipes is moved into the logs with splice(2), without a copy
through this process; the pty's with read and write.

Like sysinit.py it imports only C modules (`posix`, `select`, `fcntl`,
`_socket`, `_signal`): `os`, `socket` and `signal` would add about 10 ms to
every start.
"""
import _signal
import _socket
import fcntl
import posix
import select
import sys

CHUNK = 1 << 16
PIPE_SIZE = 1 << 20         # the output pipes' buffer (Linux's default limit): fewer, larger copies
DRAIN_TIMEOUT = 2000        # ms: once COMMAND has ended, a silent output is taken as ended too
EOT = b"\x04"               # ^D: the end of a terminal's input
EIO = 5
SEEK_END = 2


def fail(message: str) -> None:
    sys.stderr.write(f"shim: {message}\n")
    sys.stderr.flush()
    posix._exit(1)


def parse_args(argv: list[str]) -> dict:
    """DIR, then `--socket FD`, `--tty MASTER,SLAVE`, `--stdin`."""
    flags = {"dir": argv.pop(0) if argv else "", "socket": -1, "tty": None, "stdin": False}
    while argv:
        flag = argv.pop(0)
        if flag == "--stdin":
            flags["stdin"] = True
        elif flag == "--socket" and argv:
            flags["socket"] = int(argv.pop(0))
        elif flag == "--tty" and argv:
            flags["tty"] = tuple(int(fd) for fd in argv.pop(0).split(","))
        else:
            fail(f"bad argument {flag!r}")
    if not flags["dir"] or flags["socket"] < 0:
        fail("usage: shim.py DIR --socket FD [--tty MASTER,SLAVE] [--stdin]")
    return flags


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[posix.write(fd, data):]


def find_program(name: bytes) -> bytes:
    """Where execvp would find `name` along our PATH."""
    if b"/" in name:
        return name
    for directory in posix.environ.get(b"PATH", b"/usr/bin:/bin").split(b":"):
        candidate = (directory or b".") + b"/" + name
        if posix.access(candidate, posix.X_OK):
            return candidate
    fail(f"{name.decode(errors='replace')}: not found")


def start(command: list[bytes], stdio: tuple[int, int, int]) -> int:
    """Fork and exec COMMAND with `stdio` as its fds 0, 1 and 2; its PID."""
    path = find_program(command[0])
    pid = posix.fork()
    if pid == 0:
        try:
            for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT):   # Python changed them
                _signal.signal(sig, _signal.SIG_DFL)
            for target, fd in enumerate(stdio):
                posix.dup2(fd, target)
            posix.execv(path, command)
        finally:
            posix._exit(127)
    return pid


class Shim:
    def __init__(self, directory: str, listener: _socket.socket) -> None:
        self.directory = directory
        self.listener = listener
        self.outputs: dict[int, int] = {}     # fd read from the container -> its log's fd
        self.stdin: int | None = None         # where the container's input is written
        self.stdin_is_tty = False
        self.pending = b""                    # input not yet taken by the container
        self.close_stdin = False              # after `pending`: a stdin-once client has ended
        self.requests: dict[int, bytes] = {}  # connections whose first line is still coming
        self.clients: dict[int, bool] = {}    # stdin connections -> once?
        self.child_fd: int | None = None      # a pidfd, readable once COMMAND has ended
        self.child = 0
        self.status: int | None = None

    def log(self, stream: str) -> int:
        """A log file, opened at its end. Not O_APPEND, which splice refuses: this
        process is the file's only writer."""
        name = self.directory.rstrip("/").rsplit("/", 1)[-1]
        fd = posix.open(f"{self.directory}/{name}-{stream}.log",
                        posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        posix.lseek(fd, 0, SEEK_END)
        return fd

    def run(self, tty: tuple[int, int] | None, open_stdin: bool) -> int:
        stdout_log, stderr_log = self.log("stdout"), self.log("stderr")
        if tty:
            master, slave = tty
            posix.set_inheritable(master, False)
            posix.set_inheritable(slave, False)
            posix.set_blocking(master, False)
            self.outputs[master] = stdout_log
            self.stdin, self.stdin_is_tty = master, True
            stdio = (slave, slave, slave)
            ours = [slave]
        else:
            out_read, out_write = posix.pipe()
            err_read, err_write = posix.pipe()
            for fd in (out_read, err_read):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self.outputs = {out_read: stdout_log, err_read: stderr_log}
            if open_stdin:
                in_read, self.stdin = posix.pipe()
                posix.set_blocking(self.stdin, False)
            else:
                in_read = posix.open("/dev/null", posix.O_RDONLY | posix.O_CLOEXEC)
            stdio = (in_read, out_write, err_write)
            ours = list(stdio)
        command = read_command()
        if not command:                  # the daemon died, or its start failed
            return 1
        self.child = start(command, stdio)
        for fd in ours:                  # only the container holds its ends now: EOF when it ends
            posix.close(fd)
        self.child_fd = posix.pidfd_open(self.child)
        self.serve()
        for fd in (stdout_log, stderr_log):
            posix.close(fd)
        return self.status

    # -- The loop -------------------------------------------------------------------

    def serve(self) -> None:
        """Copy output to the logs and input to the container until both are done."""
        while self.status is None or self.outputs:
            poller = select.poll()
            events = {fd: select.POLLIN for fd in [*self.outputs, *self.requests, self.listener.fileno()]}
            if self.child_fd is not None:
                events[self.child_fd] = select.POLLIN
            if self.pending and self.stdin is not None:
                events[self.stdin] = events.get(self.stdin, 0) | select.POLLOUT
            else:                          # read more input only once the container took the last
                events.update((fd, select.POLLIN) for fd in self.clients)
            for fd, mask in events.items():
                poller.register(fd, mask)
            ready = poller.poll(None if self.status is None else DRAIN_TIMEOUT)
            if not ready:                  # ended, and nothing more comes: something else holds a pipe
                break
            for fd, event in ready:
                if fd in self.outputs and event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self.copy_output(fd)
                if fd == self.stdin and event & select.POLLOUT:
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
            if self.stdin_is_tty:
                data = posix.read(fd, CHUNK)
                moved = len(data)
                write_all(log_fd, data)
            else:
                moved = posix.splice(fd, log_fd, PIPE_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            if fd == self.stdin and e.errno == EIO:    # every slave of the pty is closed
                moved = 0
            else:                          # a full disk: the container must not block on it
                sys.stderr.write(f"shim: {self.directory}: the log lost output: {e}\n")
                moved = 1 if self.stdin_is_tty else len(posix.read(fd, PIPE_SIZE))
        if not moved:
            del self.outputs[fd]
            if fd == self.stdin:             # the pty: its input has ended too
                self.stdin, self.pending = None, b""
            posix.close(fd)

    def reap(self) -> None:
        _, status = posix.waitpid(self.child, 0)
        code = posix.waitstatus_to_exitcode(status)
        self.status = 128 - code if code < 0 else code
        posix.close(self.child_fd)
        self.child_fd = None

    # -- Input ------------------------------------------------------------------------

    def accept(self) -> None:
        try:
            fd, _ = self.listener._accept()
        except OSError:
            return
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
            data = posix.read(fd, CHUNK)
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
            self.pending = data
            self.feed()

    def feed(self) -> None:
        try:
            self.pending = self.pending[posix.write(self.stdin, self.pending):]
        except BlockingIOError:
            return
        except OSError:                    # the container closed its stdin: drop the input
            self.pending = b""
            if not self.stdin_is_tty:
                posix.close(self.stdin)
                self.stdin = None
            return
        if not self.pending and self.close_stdin:
            self.end_input()

    def end_input(self) -> None:
        self.close_stdin = False
        if self.stdin is None:
            return
        if self.stdin_is_tty:
            self.pending = EOT
            self.feed()
        else:
            posix.close(self.stdin)
            self.stdin = None

    def hang_up(self, fd: int) -> None:
        self.requests.pop(fd, None)
        self.clients.pop(fd, None)
        posix.close(fd)

    # -- The end ----------------------------------------------------------------------

    def finish(self, socket_path: str) -> None:
        """Record the status (written aside, then renamed), then remove the socket."""
        temporary = f"{self.directory}/exit-code.tmp"
        fd = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
        try:
            write_all(fd, b"%d\n" % self.status)
        finally:
            posix.close(fd)
        posix.rename(temporary, f"{self.directory}/exit-code")
        remove(socket_path)


def read_command() -> list[bytes]:
    """COMMAND, once the daemon has saved the container as running (nothing: it did not)."""
    chunks = []
    while data := posix.read(0, CHUNK):
        chunks.append(data)
    posix.close(0)
    return b"".join(chunks).split(b"\0") if chunks else []


def remove(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str]) -> None:
    flags = parse_args(list(argv))
    directory = flags["dir"]
    listener = _socket.socket(fileno=flags["socket"])
    posix.set_inheritable(listener.fileno(), False)
    listener.setblocking(False)
    shim = Shim(directory, listener)
    socket_path = f"{directory}/shim.sock"
    try:
        status = shim.run(flags["tty"], flags["stdin"])
        if shim.status is not None:
            shim.finish(socket_path)
    finally:
        remove(socket_path)
    posix._exit(status & 0xFF)


if __name__ == "__main__":
    main(sys.argv[1:])
