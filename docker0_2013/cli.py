"""The `docker0` command and its two modes: docker/docker.go of 2013 (spec 1).

- `docker0 -d`: the daemon, serving the rcli protocol on 127.0.0.1:4242;
- anything else: the client, which sends its arguments to the daemon.
(2013's binary had a third mode, the container's /sbin/init: that is sysinit.py.)

Runs in: the client, one process per command; with -d, the daemon.

Changed since 2013 (DESIGN.md):
- `-g ROOT`, `-b BRIDGE`, `-H HOST:PORT`, and `-p PIDFILE` (Docker 0.2's);
- `-G GROUP`: only root and the group's members may use the daemon (server.py);
- SIGTERM or SIGINT stops the daemon cleanly, removes the pid file and
  leaves containers running (the next daemon adopts them), so it can be a
  service (contrib/docker0.service);
- an unreachable daemon is an error (exit 1), not a runtime started inside the client;
- the client no longer hangs after the reply when its stdin never closes.

A Go binary starts in a millisecond, a Python program in several, and every
command pays that where 2013 did not. So the daemon's modules load only with
-d, and the client takes socket, threading and json as the C modules and few
lines under them (8 ms less per command): the section "Start-up speed" at the bottom.
"""
from __future__ import annotations

import os
import stat         # already loaded by os
import sys
import termios
import time

from .flag import HELP_REQUESTED, FlagError, FlagSet

DEFAULT_ADDRESS = "127.0.0.1:4242"


def go_log(message: str) -> None:
    """A line as Go's log package wrote it: `2013/04/04 23:10:11 message`."""
    sys.stderr.write(time.strftime("%Y/%m/%d %H:%M:%S ") + message + "\n")


def setup_logging() -> None:
    """The daemon logs through `logging` (debug lines with -D); the client never loads it."""
    import logging

    class GoLogFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if record.levelno <= logging.DEBUG:
                return f"[debug] {record.filename}:{record.lineno} {record.getMessage()}"
            return self.formatTime(record, "%Y/%m/%d %H:%M:%S") + " " + record.getMessage()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(GoLogFormatter())
    log = logging.getLogger("docker0")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if os.environ.get("DEBUG") else logging.INFO)


def global_flags() -> FlagSet:
    flags = FlagSet("docker0")
    flags.bool("d", "Daemon mode")
    flags.bool("D", "Debug mode")
    flags.string("g", "Root of the docker0 runtime (daemon)", "/var/lib/docker")
    flags.string("b", "Bridge the containers attach to (daemon)", "lxcbr0")
    flags.string("H", "Address the daemon listens on, and the client connects to", DEFAULT_ADDRESS)
    flags.string("p", "File to write the daemon's PID to (daemon)", "")
    flags.string("G", "Group whose members may use the daemon, besides root (daemon)", "docker0")
    return flags


def print_usage(flags: FlagSet) -> None:
    sys.stderr.write(f"Usage of {sys.argv[0]}:\n{flags.defaults()}")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Invalid address (want HOST:PORT): {address}")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    flags = global_flags()
    try:
        args = flags.parse(argv)
        address = split_address(flags["H"])
    except (FlagError, ValueError) as e:
        if str(e) != HELP_REQUESTED:
            sys.stderr.write(f"{e}\n")
        print_usage(flags)
        sys.exit(2)
    if flags["D"]:
        os.environ["DEBUG"] = "1"
    if flags["d"]:
        if args:
            print_usage(flags)
            sys.exit(0)
        sys.exit(run_daemon(flags["g"], flags["b"], address, flags["p"], flags["G"]))
    status = run_client(address, args)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:         # None: started with that fd closed
            stream.flush()
    os._exit(status)       # the reply is out: the interpreter's own teardown would add 2 ms


# -- Daemon ------------------------------------------------------------------------


def create_pidfile(path: str) -> None:
    """Write our PID to `path`, refusing one that names a live docker0 (Docker 0.2's check)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = b"docker0" in f.read()
    except (OSError, ValueError):
        alive = False
    if alive and pid != os.getpid():
        raise RuntimeError(f"pid file found, ensure docker0 is not running or delete {path}")
    from .utils import atomic_write
    atomic_write(path, f"{os.getpid()}\n", 0o644)


def remove_pidfile(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_daemon(root: str, bridge: str, address: tuple[str, int], pidfile: str = "",
               group: str = "docker0") -> int:
    import platform
    setup_logging()
    if platform.machine() not in ("x86_64", "amd64"):
        go_log(f"The docker runtime currently only supports amd64 (not {platform.machine()}). "
               "This will change in the future. Aborting.")
        return 1
    import asyncio                      # the client never needs the daemon's modules
    import signal

    from .runtime import Runtime
    from .server import Server

    async def serve(runtime: Runtime) -> None:
        runtime.resume()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        serving = asyncio.create_task(Server(runtime, *address, group).serve_forever())
        await asyncio.wait([serving, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()            # it failed (a port in use): raise its error
        go_log("Received signal, shutting down; running containers keep running")
        serving.cancel()                # stops listening; the containers are in their own sessions
    try:
        if pidfile:
            create_pidfile(pidfile)
        try:
            asyncio.run(serve(Runtime(root, bridge)))
        finally:
            if pidfile:
                remove_pidfile(pidfile)
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # log.Fatal: one line with the error, exit 1
        go_log(str(e))
        return 1
    return 0


# -- Client ------------------------------------------------------------------------

def make_raw(fd: int) -> list:
    """The 2013 client's partial raw mode: no echo or line editing, but ISIG and OPOST stay."""
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                 | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    mode[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
    mode[2] &= ~(termios.CSIZE | termios.PARENB)
    mode[2] |= termios.CS8
    termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
    return saved


def restore_terminal(fd: int, saved: list) -> None:
    termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def raw_terminal() -> list | None:
    """Raw mode while stdin is a terminal; ^C restores it and exits (spec 1.2)."""
    if not os.isatty(0) or os.environ.get("NORAW"):
        return None
    import signal                       # only here: it costs 3 ms
    saved = make_raw(0)

    def on_sigint(signum, frame):
        restore_terminal(0, saved)
        go_log("\nSIGINT received\n")
        os._exit(0)
    signal.signal(signal.SIGINT, on_sigint)
    return saved


def send_stdin(sock) -> None:
    """Copy our stdin to the daemon, then half-close: the command sees EOF.

    A file (`import - < layer.tar`) is handed to the kernel with sendfile(2),
    which copies it to the connection without passing it through this process.
    """
    try:
        if stat.S_ISREG(os.fstat(0).st_mode):
            while os.sendfile(sock.fileno(), 0, None, 1 << 30):
                pass
        else:
            while data := os.read(0, 1 << 16):
                sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError as e:
        if not isinstance(e, (BrokenPipeError, ConnectionResetError)):
            go_log(f"Couldn't send EOF: {e}")


def run_client(address: tuple[str, int], args: list[str]) -> int:
    """Send the request, then our stdin to the daemon and its reply to our stdout."""
    open_missing_std_fds()
    try:
        sock = connect(*address)
        sock.sendall(request_line(args))
    except OSError as e:
        sys.stderr.write(f"Error: Can't connect to the docker0 daemon at {address[0]}:{address[1]} "
                         f"({e.strerror or e}). Is 'docker0 -d' running on this host?\n")
        return 1
    saved = raw_terminal()
    try:
        start_thread(send_stdin, sock)
        return copy_reply(sock)
    finally:
        if saved is not None:
            restore_terminal(0, saved)


def open_missing_std_fds() -> None:
    """Started with fd 0, 1 or 2 closed: /dev/null there, or the socket would take it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def copy_reply(sock) -> int:
    """The daemon's answer to our stdout, until it closes the connection; the exit status."""
    try:
        while data := sock.recv(1 << 16):
            while data:
                data = data[os.write(1, data):]
    except BrokenPipeError:     # whoever read our output has gone (`... | head`): leave quietly,
        return 141              # with the status of a program that SIGPIPE ended, as 2013's did
    except OSError as e:
        go_log(str(e))
        return 1
    return 0


# -- Start-up speed ------------------------------------------------------------------
# Every command pays for what the client imports: socket's Python layer (its
# enums) costs 6 ms, threading's 3, json's 6. These are the C modules under
# socket and threading, and the few lines of json the request needs.

import _socket as socket  # noqa: E402
import _thread  # noqa: E402


def start_thread(function, *args) -> None:
    """threading.Thread(target=function, args=args, daemon=True).start()"""
    _thread.start_new_thread(function, args)


# JSON string escapes as Go's encoder wrote them (spec 2.1): control characters
# as \u00XX except \n and \r, and <, > and & as \u003c, \u003e and \u0026.
JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(32), ord("<"), ord(">"), ord("&"))}
JSON_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord('"'): '\\"', ord("\\"): "\\\\"})


def request_line(args: list[str]) -> bytes:
    """The request: the arguments as one JSON array of strings, then a newline.

    Bytes that are not UTF-8 become U+FFFD, as Go's encoder made them.
    """
    words = ",".join(f'"{os.fsencode(arg).decode(errors="replace").translate(JSON_ESCAPES)}"'
                     for arg in args)
    return f"[{words}]\n".encode()


def connect(host: str, port: int):
    """socket.create_connection(), written out with the C module."""
    error: OSError = OSError(f"no address for {host}")
    # The host as bytes: a str would load the idna codec (4 ms).
    for family, kind, proto, _, address in socket.getaddrinfo(host.encode(), port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error
