"""The "rcli" server: one command per TCP connection. rcli/tcp.go and rcli/types.go of 2013.

The client sends one line naming the command; everything it sends after that
is the command's stdin. The server streams the output back and closes the
connection. An exception a command raises becomes one last line
`Error: <text>`, written here (a few commands also write 2013's own error
lines, such as kill's and rm's `Error killing container`, and go on).

Runs in: the daemon's event loop; Stdout also takes writes from worker threads
(write_from_thread), and SocketStdin reads in a thread of its own.

Changed since 2013:
- the line may be 2013's JSON array or plain words with shell quoting, so a
  person can type into `nc 127.0.0.1 4242` (DESIGN.md difference 4);
- bad lines (over 1 MiB, not UTF-8, not a list of strings) get an `Error:` line;
- only root and the members of one group (`-G`, default `docker0`) are
  served, as Docker 0.5.2's unix socket did; 2013 served anyone who could
  reach the port. TCP has no SO_PEERCRED, so the server asks the kernel
  (sock_diag, as `ss -e` does) who owns the client's socket;
- one asyncio loop serves every connection, so a blocked `wait` delays nobody;
- a client that stops sending its stdin is given up on after
  DOCKER0_STDIN_TIMEOUT seconds (default 60): no client can hold the daemon;
- after the reply the server drains what the client still sends before it
  closes: closing with unread input makes the kernel send a reset, which can
  destroy the `Error:` line before the client reads it.
"""
from __future__ import annotations

import asyncio
import grp
import itertools
import json
import logging
import os
import pwd
import queue
import select
import shlex
import socket
import struct
import threading

from .commands import handler_name
from .flag import HELP_REQUESTED, FlagError, FlagSet

MAX_LINE = 1 << 20          # a command line longer than 1 MiB is refused
LINE_TIMEOUT = 60.0         # seconds a client may take to send its command line
STDIN_TIMEOUT = float(os.environ.get("DOCKER0_STDIN_TIMEOUT") or 60)  # idle stdin of blocking work
DRAIN_BYTES = 64 << 20      # after the reply: at most this much unread input is discarded,
DRAIN_TIMEOUT = 5.0         # for at most this many seconds
READ_AHEAD = 4              # MiB a SocketStdin reads ahead of the command
log = logging.getLogger("docker0")


class IdleClient(Exception):
    """The client sent no input for STDIN_TIMEOUT seconds to blocking work that waits for it.

    Not an OSError (TimeoutError is one): file code that wraps OSErrors in
    its own messages lets this one through to the `Error:` line unchanged.
    """


class Stdout:
    """The command's output: the connection, written as the command produces it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes | str) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the client hung up")
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def drain(self) -> None:
        await self.writer.drain()

    def write_from_thread(self, data: bytes | str) -> None:
        """write() + drain() for code running in a worker thread."""
        async def write_and_drain() -> None:
            self.write(data)
            await self.drain()
        asyncio.run_coroutine_threadsafe(write_and_drain(), self.loop).result()

    def blocking(self) -> "ThreadStdout":
        """A file-like view for blocking code in a worker thread (tarfile, say)."""
        return ThreadStdout(self)


class Stdin:
    """The command's input: whatever the client sends after its command line."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.Transport | None = None) -> None:
        self.reader = reader
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    async def read(self, size: int = 1 << 16) -> bytes:
        return await self.reader.read(size)

    async def read_or_time_out(self, size: int) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.read(size), STDIN_TIMEOUT)
        except asyncio.TimeoutError:
            raise IdleClient(f"no input from the client for {STDIN_TIMEOUT:g} seconds") from None

    def read_from_thread(self, size: int = 1 << 16) -> bytes:
        """A blocking read() for code running in a worker thread (tarfile, say).

        A client that sends nothing for STDIN_TIMEOUT seconds ends the read
        with IdleClient, so it cannot hold the thread forever.
        """
        if size is None or size < 0:
            size = 1 << 16
        return asyncio.run_coroutine_threadsafe(self.read_or_time_out(size), self.loop).result()

    def blocking(self) -> "ThreadStdin":
        """A file-like view for blocking code in a worker thread (tarfile, say)."""
        return ThreadStdin(self)

    def direct(self) -> "SocketStdin | ThreadStdin":
        """For blocking code that reads all of the input (import): the connection itself.
        Call it on the loop, and release() the view there once the thread is done."""
        if self.transport is None or self.transport.get_extra_info("socket") is None:
            return self.blocking()
        return SocketStdin(self.reader, self.transport, idle=STDIN_TIMEOUT)


class ThreadStdin:
    """A file-like view of Stdin for blocking code in a worker thread."""

    def __init__(self, stdin: Stdin) -> None:
        self.stdin = stdin

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.stdin.read_from_thread():
                chunks.append(chunk)
            return b"".join(chunks)
        return self.stdin.read_from_thread(size)

    def release(self) -> None:
        pass


class SocketStdin:
    """The connection's input read by a thread of its own, without the event loop.

    ThreadStdin costs a hop to the loop for every piece, and asyncio copies
    each byte twice before the caller sees it; with a 200 MB import both
    threads took turns for the GIL and the bytes moved at a quarter of the
    speed they were unpacked (bench/README.md). This view stops the loop's
    reading of the connection and takes over what asyncio had read already.
    Then a reader thread reads the socket ahead, into a few 1 MiB buffers,
    while the caller (the import's worker) writes out what came before:
    receiving and writing the files overlap on two cores. release() (on the
    loop) stops the reader and gives the connection back, for whatever the
    command still reads or discards.
    """

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.Transport,
                 idle: float | None = None) -> None:
        self.transport = transport
        self.idle = idle                        # seconds without input before IdleClient; None: wait
        self.paused = transport.is_reading()     # not when at EOF, or paused by the reader's flow control
        if self.paused:
            transport.pause_reading()
        # What asyncio has read already comes first. StreamReader has no public call
        # that hands it over without awaiting more, so its buffer is taken as it is.
        self.head = memoryview(bytes(reader._buffer))
        reader._buffer.clear()
        self.ended = bool(reader._eof)          # the client had half-closed: the head is all
        self.fd = transport.get_extra_info("socket").fileno()
        self.filled: queue.SimpleQueue = queue.SimpleQueue()    # (buffer, length) or an OSError
        self.free: queue.SimpleQueue = queue.SimpleQueue()      # empty buffers; None: stop
        self.piece = memoryview(b"")             # what is left of the buffer being read
        self.piece_buffer: bytearray | None = None
        self.reader: threading.Thread | None = None
        self.wake: tuple[int, int] | None = None

    def readinto(self, buffer) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        if not self.piece:
            if self.ended:
                return 0
            if self.reader is None:
                self.start_reader()
            if self.piece_buffer is not None:
                self.free.put(self.piece_buffer)
            try:
                item = self.filled.get(timeout=self.idle)
            except queue.Empty:
                raise IdleClient(f"no input from the client for {self.idle:g} seconds") from None
            if isinstance(item, OSError):
                self.ended = True
                raise item
            self.piece_buffer, n = item
            self.piece = memoryview(self.piece_buffer)[:n]
            if not n:
                self.ended = True
                return 0
        n = min(len(buffer), len(self.piece))
        buffer[:n] = self.piece[:n]
        self.piece = self.piece[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        buffer = bytearray(size)
        n = self.readinto(buffer)
        del buffer[n:]
        return bytes(buffer)

    def start_reader(self) -> None:
        self.wake = os.pipe()
        for _ in range(READ_AHEAD):
            self.free.put(bytearray(1 << 20))
        self.reader = threading.Thread(target=self.read_ahead, name="stdin", daemon=True)
        self.reader.start()

    def read_ahead(self) -> None:
        """The reader thread: fill free buffers from the socket until its end, an error or release()."""
        poller = select.poll()          # not select(): a busy daemon has fds past 1023
        poller.register(self.fd, select.POLLIN)
        poller.register(self.wake[0], select.POLLIN)
        while (buffer := self.free.get()) is not None:
            while True:
                try:
                    n = os.readv(self.fd, [buffer])
                    break
                except BlockingIOError:    # the socket is the loop's: non-blocking
                    if any(fd == self.wake[0] for fd, _ in poller.poll()):
                        return
                except OSError as e:
                    self.filled.put(e)
                    return
            self.filled.put((buffer, n))
            if not n:
                return

    def release(self) -> None:
        """On the loop, once the worker is done: stop the reader (it never blocks
        but in poll, which the wake-up pipe ends), and the loop reads the connection again."""
        if self.reader is not None:
            os.write(self.wake[1], b"x")
            self.free.put(None)
            self.reader.join()
            self.reader = None
            for fd in self.wake:
                os.close(fd)
        if self.paused:
            self.paused = False
            self.transport.resume_reading()


class ThreadStdout:
    """A file-like view of Stdout for blocking code in a worker thread."""

    def __init__(self, stdout: Stdout) -> None:
        self.stdout = stdout

    def write(self, data: bytes) -> int:
        self.stdout.write_from_thread(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def parse_command_line(line: bytes) -> list[str]:
    """A JSON array of strings, or plain words with shell quoting."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError("the command line is not valid UTF-8") from None
    if text.lstrip().startswith("[") or text.strip() == "null":
        try:
            words = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON command line: {e}") from None
        if words is None:
            return []
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("the JSON command line must be an array of strings")
        return words
    if not text.strip():
        raise ValueError("empty command line (try: help)")
    try:
        return shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot parse the command line: {e}") from None


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """The first line; a last line without a newline (then EOF) counts too."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise EOFError("EOF") from None
        return e.partial


def error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


# -- Who is connecting ----------------------------------------------------------------
#
# sock_diag by hand: one request, one reply, about 6 us, on the loop.
# pyroute2's DiagSocket (0.9.7) runs only on an event loop of its own (not
# inside the daemon's), its exact lookup never returns for a socket that
# has gone (it does not take the kernel's error reply for one), and a dump
# filtered by port costs 1.5 ms (measured for issue 21 on a 2-core VM).

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
ALL_STATES = 0xFFF
NO_COOKIE = (1 << 64) - 1
UID_OFFSET = 16 + 4 + 48 + 12     # nlmsghdr, then inet_diag_msg: 4 bytes, the socket id, expires, queues


class PeerLookup:
    """The uid that owns the other end of a TCP connection between two sockets of this host."""

    def __init__(self) -> None:
        self.netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                     NETLINK_SOCK_DIAG)
        self.sequence = itertools.count(1)

    def uid(self, peer: tuple, ours: tuple) -> int | None:
        """The owner of the socket at `peer` connected to `ours`; None if there is none here.
        It is the owner of that socket (who created it), as `ss -e` shows it."""
        family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
        request = struct.pack("=BBxxI", family, socket.IPPROTO_TCP, ALL_STATES) \
            + struct.pack(">HH", peer[1], ours[1]) \
            + address_bytes(family, peer[0]) + address_bytes(family, ours[0]) + struct.pack("=IQ", 0, NO_COOKIE)
        sequence = next(self.sequence) & 0xFFFFFFFF
        try:
            self.netlink.send(struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST,
                                          sequence, 0) + request)
            while True:         # the kernel answers within send(): nothing here waits
                reply = self.netlink.recv(8192, socket.MSG_DONTWAIT)
                kind, _, replied = struct.unpack_from("=HHI", reply, 4)
                if replied == sequence:
                    break       # (an answer to an earlier request that gave up is passed over)
        except OSError:         # no answer (BlockingIOError), no memory: nobody can be told apart
            return None
        if kind == NLMSG_ERROR or len(reply) < UID_OFFSET + 4:
            return None         # ENOENT: the client has gone, or is not on this host
        return struct.unpack_from("=I", reply, UID_OFFSET)[0]


def address_bytes(family: int, address: str) -> bytes:
    """An address as struct inet_diag_sockid holds it: 16 bytes, IPv4 in the first 4."""
    return socket.inet_pton(family, address.split("%")[0]).ljust(16, b"\0")


def may_connect(uid: int, group: str) -> bool:
    """Root, and the members of `group`: as their primary group (passwd) or listed in it (group).
    Looked up at each connection, so a group made or changed later counts at once."""
    if uid == 0:
        return True
    try:
        user, members = pwd.getpwuid(uid), grp.getgrnam(group)
    except KeyError:
        return False
    return user.pw_gid == members.gr_gid or user.pw_name in members.gr_mem


class Server:
    def __init__(self, runtime, host: str = "127.0.0.1", port: int = 4242, group: str = "docker0") -> None:
        self.runtime, self.host, self.port, self.group = runtime, host, port, group
        self.peers = PeerLookup()

    async def serve_forever(self) -> None:
        server = await asyncio.start_server(self.handle, self.host, self.port,
                                            limit=MAX_LINE, backlog=1024)
        log.info("Listening for RCLI/tcp on %s:%d", self.host, self.port)
        try:
            grp.getgrnam(self.group)
            log.info("Root and the members of group %s may use the daemon", self.group)
        except KeyError:
            log.info("There is no group %s (-G): only root may use the daemon", self.group)
        async with server:
            await server.serve_forever()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stdout = Stdout(writer)
        try:
            await self.run_one(reader, stdout)
            await stdout.drain()
            await self.finish(reader, writer)
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, BrokenPipeError):
                pass

    @staticmethod
    async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then drop the client's unread input (bounded) so no reset eats the reply."""
        if not writer.can_write_eof() or reader.at_eof():
            return
        writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT
        dropped = 0
        try:
            while dropped < DRAIN_BYTES and (left := deadline - loop.time()) > 0:
                data = await asyncio.wait_for(reader.read(1 << 20), left)
                if not data:
                    return
                dropped += len(data)
        except asyncio.TimeoutError:
            pass

    def check_peer(self, writer: asyncio.StreamWriter) -> None:
        """Refuse anyone but root and the group's members, before reading a byte of theirs."""
        peer, ours = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        uid = self.peers.uid(peer, ours) if isinstance(peer, tuple) else None
        if uid is None:
            raise PermissionError("Permission denied: cannot tell which user of this host is connecting; "
                                  "this daemon serves only local users")
        if not may_connect(uid, self.group):
            raise PermissionError(f"Permission denied: you (uid {uid}) are neither root nor a member "
                                  f"of the group {self.group}, which may use this daemon")

    async def run_one(self, reader: asyncio.StreamReader, stdout: Stdout) -> None:
        try:
            self.check_peer(stdout.writer)
            line = await asyncio.wait_for(read_line(reader), LINE_TIMEOUT)
            args = parse_command_line(line)
        except asyncio.LimitOverrunError:
            return self.report(stdout, ValueError(f"command line longer than {MAX_LINE} bytes"))
        except asyncio.TimeoutError:
            return self.report(stdout, TimeoutError("no command line received"))
        except (ValueError, EOFError, PermissionError) as e:
            return self.report(stdout, e)
        try:
            await self.dispatch(Stdin(reader, stdout.writer.transport), stdout, args)
        except (ConnectionError, BrokenPipeError):
            raise
        except Exception as e:  # every failure becomes one `Error:` line
            self.report(stdout, e)

    async def dispatch(self, stdin: Stdin, stdout: Stdout, args: list[str]) -> None:
        """Spec 2.3: top-level flags (none), then `Cmd<Name>` by reflection."""
        args = args or ["help"]
        top = FlagSet("docker")
        try:
            args = top.parse(args)
        except FlagError as e:
            if str(e) != HELP_REQUESTED:
                stdout.write(f"{e}\n")
            await self.runtime.CmdHelp(stdin, stdout)
            raise
        log.info("docker %s", " ".join(args))
        command = args[0] if args else "help"
        if command == "help":
            return await self.runtime.CmdHelp(stdin, stdout, *args[1:])
        name = handler_name(command)
        method = getattr(self.runtime, name, None) if name[3:].isalpha() else None
        if method is None or name == "CmdHelp":
            raise LookupError(f"No such command: {command}")
        await method(stdin, stdout, *args[1:])

    def report(self, stdout: Stdout, e: BaseException) -> None:
        text = error_text(e)
        log.info("Error: %s", text)
        try:
            stdout.write(f"Error: {text}\n")
        except ConnectionError:
            pass
