"""Small helpers shared by every layer: docker/utils.go of 2013.

2013's utils.go held HumanDuration, the TruncIndex, the write broadcaster,
the buffered pipe reader and the progress reader. They are here under the
same names, plus three things Go gave Docker for free and Python does not:
Go's time format, Go's JSON escaping and text/tabwriter (spec appendices B-D).

Changed since 2013: files are written atomically (temp file, fsync, rename),
because the 2013 truncate-then-write could lose the tag store (spec 10.2);
TruncIndex is a sorted list searched with bisect instead of one long string.
Goroutines were cheap and Python threads are not, so blocking work that a
client paces (its stdin, its reading of our output, a remote server) runs on
a bounded pool of its own, CLIENT_PACED, and never fills asyncio's default
executor, which the quick commands and `run`'s set-up use.
"""
from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import datetime as dt
import json
import os
import queue
import re
import threading
from typing import Iterable

# -- Threads --------------------------------------------------------------------


class PacedPool:
    """At most `size` daemon threads for work whose speed a peer decides.

    A client's upload, a client reading an export, an HTTP server, a
    container reading its stdin: a stalled peer holds one of these threads
    (until its idle timeout), while asyncio's default executor, sized for
    the CPU, stays free for the quick commands. Daemon threads, unlike a
    ThreadPoolExecutor's, do not hold up the daemon's exit.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size, self.name = size, name
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = self.idle = 0

    def submit(self, function, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.put((future, function, args))
        with self.lock:
            if self.idle <= 0 and self.threads < self.size:
                self.threads += 1
                threading.Thread(target=self.work, name=f"{self.name}-{self.threads}",
                                 daemon=True).start()
            else:
                self.idle -= 1      # an idle thread (or the next one free) takes it
        return future

    def work(self) -> None:
        while True:
            future, function, args = self.jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as e:  # handed to the awaiting coroutine
                    future.set_exception(e)
            del future, function, args
            with self.lock:
                self.idle += 1


CLIENT_PACED = PacedPool(32, "client-paced")


async def client_paced(function, *args):
    """`asyncio.to_thread` for peer-paced work: run it on CLIENT_PACED."""
    return await asyncio.wrap_future(CLIENT_PACED.submit(function, *args))


# -- IDs ----------------------------------------------------------------------


def generate_id() -> str:
    """32 random bytes as 64 lowercase hex characters (spec 5.2)."""
    return os.urandom(32).hex()


def short_id(full_id: str) -> str:
    """SHORT(ID): the first 12 characters."""
    return full_id[:12]


class TruncIndex:
    """Finds a full ID from any unique prefix of it (spec 4.4).

    An ambiguous or unknown prefix, and the empty string, give `No such id`.
    (The 2013 version crashed the daemon on "" with an empty index.)
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids = sorted(set(ids))

    def add(self, full_id: str) -> None:
        if " " in full_id:
            raise ValueError("Illegal character: ' '")
        i = bisect.bisect_left(self._ids, full_id)
        if i < len(self._ids) and self._ids[i] == full_id:
            raise ValueError(f"Id already exists: {full_id}")
        self._ids.insert(i, full_id)

    def delete(self, full_id: str) -> None:
        i = bisect.bisect_left(self._ids, full_id)
        if i == len(self._ids) or self._ids[i] != full_id:
            raise KeyError(f"No such id: {full_id}")
        del self._ids[i]

    def get(self, prefix: str) -> str:
        i = bisect.bisect_left(self._ids, prefix)
        matches = self._ids[i:i + 2]
        if (prefix and len(matches) >= 1 and matches[0].startswith(prefix)
                and (len(matches) == 1 or not matches[1].startswith(prefix))):
            return matches[0]
        raise KeyError(f"No such id: {prefix}")


# -- Files ----------------------------------------------------------------------


def atomic_write(path: str, data: bytes | str, mode: int = 0o600) -> None:
    """Write a whole file so that a crash leaves either the old or the new one."""
    import tempfile                      # not at the top: the client never writes files
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- Go's JSON (appendix B) --------------------------------------------------------

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _go_escape(text: str) -> str:
    return re.sub("[<>&]", lambda m: _HTML_ESCAPES[m.group()], text)


def json_compact(obj: object) -> str:
    """What Go's json.Marshal writes to disk: no spaces, <>& escaped."""
    return _go_escape(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def json_pretty(obj: object) -> str:
    """What `inspect` prints: json.MarshalIndent with four spaces."""
    return _go_escape(json.dumps(obj, indent=4, ensure_ascii=False))


# -- Go's time format (appendix B) --------------------------------------------------

ZERO_TIME = "0001-01-01T00:00:00Z"


def now_string() -> str:
    """The current local time as Go's RFC 3339 with nanoseconds."""
    return format_time(dt.datetime.now().astimezone())


def format_time(t: dt.datetime) -> str:
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    offset = t.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_time(text: str) -> dt.datetime:
    """Parse Go's time text; nanosecond digits past microseconds are dropped."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"bad time: {text}")
    base, fraction, zone = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = dt.timezone.utc if zone == "Z" else dt.datetime.strptime(zone.replace(":", ""), "%z").tzinfo
    return dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(microsecond=micro, tzinfo=tz)


def human_duration(seconds: float) -> str:
    """HumanDuration of 2013 (appendix D), minus its `%!d(float64=...)` bug."""
    s = int(seconds)
    m, h = s // 60, s // 3600
    if seconds < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 3:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def since(timestamp: str) -> str:
    """`<HumanDuration> ago` for a stored Go time string."""
    elapsed = dt.datetime.now(dt.timezone.utc) - parse_time(timestamp)
    return human_duration(elapsed.total_seconds()) + " ago"


# -- Go's text/tabwriter (appendix C) --------------------------------------------------


def tabwrite(lines: list[str], min_width: int, padding: int = 3) -> str:
    """Align tab-separated lines; the cell after the last tab is not padded."""
    rows = [line.split("\t") for line in lines]
    columns = max((len(r) - 1 for r in rows), default=0)
    widths = [min_width] * columns
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + padding)
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("".join(cells) + row[-1] + "\n")
    return "".join(out)


# -- Progress (appendix E) ----------------------------------------------------------


class ProgressReader:
    """Wraps a binary stream and reports `P/T (pct%)\\r` to `write` as it reads."""

    def __init__(self, stream, total: int, write) -> None:
        self.stream, self.total, self.write = stream, total, write
        self.read_so_far = 0
        self.last_printed = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.read_so_far += len(data)
        step = int(0.01 * self.total)
        if self.read_so_far - self.last_printed > step or self.read_so_far == self.total:
            if self.total > 0:
                pct = f"{self.read_so_far / self.total * 100:.0f}"
            else:
                pct = "NaN" if self.total == 0 else f"{self.read_so_far / self.total * 100:.0f}"
            self.write(f"{self.read_so_far}/{self.total} ({pct}%)\r")
            self.last_printed = self.read_so_far
        if not data:
            self.write("\n")
        return data
