"""The "rcli" server: one command per TCP connection. rcli/tcp.go and rcli/types.go of 2013.

The protocol (spec 2): the client sends one line naming the command, then
everything else it sends is that command's stdin; the server streams the
command's output back and closes the connection. Errors come back as a last
line `Error: <text>`; this module is the one place that writes them.

Changed since 2013 (DESIGN.md difference 4): the line may be the 2013 JSON
array (`["ps","-a"]`) or plain words with shell quoting (`ps -a`), so a person
can type into `nc 127.0.0.1 4242`. Bad lines (over 1 MiB, not UTF-8, not a
list of strings) get an `Error:` line instead of crashing anything, and one
asyncio loop serves every connection, so a blocked `wait` delays nobody.

No client can hold the daemon: blocking code that reads a client's stdin
(import) runs on the CLIENT_PACED threads (utils.py) and gives up with an
`Error:` line when the client sends nothing for DOCKER0_STDIN_TIMEOUT seconds
(default 60). After the reply, the server shuts down its writing side and
reads and drops what the client still sends (a bounded amount, for a bounded
time) before it closes: closing with unread input makes the kernel send a
reset, which can destroy the `Error:` line before the client reads it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex

from .commands import handler_name
from .flag import HELP_REQUESTED, FlagError, FlagSet

MAX_LINE = 1 << 20          # a command line longer than 1 MiB is refused
LINE_TIMEOUT = 60.0         # seconds a client may take to send its command line
STDIN_TIMEOUT = float(os.environ.get("DOCKER0_STDIN_TIMEOUT") or 60)  # idle stdin of blocking work
DRAIN_BYTES = 64 << 20      # after the reply: at most this much unread input is discarded,
DRAIN_TIMEOUT = 5.0         # for at most this many seconds
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

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
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
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e) or type(e).__name__


class Server:
    def __init__(self, runtime, host: str = "127.0.0.1", port: int = 4242) -> None:
        self.runtime, self.host, self.port = runtime, host, port

    async def serve_forever(self) -> None:
        server = await asyncio.start_server(self.handle, self.host, self.port,
                                            limit=MAX_LINE, backlog=1024)
        log.info("Listening for RCLI/tcp on %s:%d", self.host, self.port)
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

    async def run_one(self, reader: asyncio.StreamReader, stdout: Stdout) -> None:
        try:
            line = await asyncio.wait_for(read_line(reader), LINE_TIMEOUT)
            args = parse_command_line(line)
        except asyncio.LimitOverrunError:
            return self.report(stdout, ValueError(f"command line longer than {MAX_LINE} bytes"))
        except asyncio.TimeoutError:
            return self.report(stdout, TimeoutError("no command line received"))
        except (ValueError, EOFError) as e:
            return self.report(stdout, e)
        try:
            await self.dispatch(Stdin(reader), stdout, args)
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
