"""Small helpers shared by every layer: docker/utils.go of 2013.

2013's utils.go held HumanDuration, the TruncIndex and the progress reader;
they are here under the same names. Its write broadcaster and buffered pipe
reader are gone: the shim (shim.py) writes the logs that attached clients follow.
Added: what Go gave Docker for free and Python does not (Go's time format,
JSON escaping and text/tabwriter, spec appendices B-D).

Runs in: the daemon, on its event loop and in worker threads.

Changed since 2013:
- files are written atomically (temp file, fsync, rename): 2013's
  truncate-then-write could lose the tag store (spec 10.2);
- TruncIndex is a sorted list searched with bisect, not one long string;
- work a peer paces (a client uploading an import or reading an export, a
  registry) runs on a bounded pool of its own, CLIENT_PACED, and never fills
  asyncio's default executor, which the quick commands use;
- trees are walked by directory fd (walk_tree, remove_tree, Mirror), so a
  tree deeper than PATH_MAX is committed, exported and removed like any other;
- what start-up cannot read or remove is moved to a quarantine (set_aside).
"""
from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import datetime as dt
import errno
import json
import logging
import os
import queue
import re
import stat
import threading
import time
from typing import Iterable, Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
log = logging.getLogger("docker0")

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


class NoSuchId(KeyError):
    """An ID or prefix that names nothing: a KeyError, as a dict's, but its text is
    the message itself (str() of a KeyError quotes it), ready for `Error: ...`."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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
            raise NoSuchId(f"No such id: {full_id}")
        del self._ids[i]

    def get(self, prefix: str) -> str:
        i = bisect.bisect_left(self._ids, prefix)
        matches = self._ids[i:i + 2]
        if (prefix and len(matches) >= 1 and matches[0].startswith(prefix)
                and (len(matches) == 1 or not matches[1].startswith(prefix))):
            return matches[0]
        raise NoSuchId(f"No such id: {prefix}")


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


# -- File trees ---------------------------------------------------------------------
#
# Paths are never built for what is below the top: every call is relative to
# the fd of the directory an entry is in, and a walk keeps one directory open,
# going down by name and back up by "..". So neither PATH_MAX, Python's
# recursion limit nor the open-file limit bounds the depth.


def walk_tree(top: str, after: bool = False) -> Iterator[tuple[int, list[str], os.stat_result, bool]]:
    """Every entry below `top`, parents first, each directory's names sorted by bytes.

    Yields (fd of the entry's directory, its path below `top` as a list of
    names, its lstat, False); with `after`, a directory is given again once
    its contents are done, with True (to remove it). The fd and the list are
    only good until the next step. Symlinks are never followed.
    """
    fd = os.open(top, DIR_FLAGS)
    parts: list[str] = []
    levels = [(os.fstat(fd), iter(listing(fd)))]     # (a directory's stat, its names not walked yet)
    try:
        while levels:
            for name, st in levels[-1][1]:
                parts.append(name)
                yield fd, parts, st, False
                if stat.S_ISDIR(st.st_mode):
                    fd = step(fd, name, st)
                    levels.append((st, iter(listing(fd))))
                    break
                parts.pop()
            else:
                st = levels.pop()[0]
                if levels:
                    fd = step(fd, "..", levels[-1][0])
                    if after:
                        yield fd, parts, st, True
                    parts.pop()
    finally:
        os.close(fd)


def listing(fd: int) -> list[tuple[str, os.stat_result]]:
    with os.scandir(fd) as it:
        entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    return sorted(entries, key=lambda e: os.fsencode(e[0]))


def step(fd: int, name: str, expected: os.stat_result) -> int:
    """Move from directory `fd` to `name` in it (or ".."), which must still be `expected`."""
    target = os.open(name, DIR_FLAGS, dir_fd=fd)
    st = os.fstat(target)
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(target)
        raise OSError(errno.ESTALE, "A directory was moved during the walk")
    os.close(fd)
    return target


class Mirror:
    """Follows a walk_tree walk in a second tree: `fd` is the same directory there.

    `missing` counts the levels the walk is below the deepest directory the
    second tree has; `here` is None then. Moving down can make the directory
    first (`make`), for a tree being built as a copy of the walked one.
    """

    def __init__(self, top: str) -> None:
        self.fd = os.open(top, DIR_FLAGS)
        self.missing = 0

    @property
    def here(self) -> int | None:
        return None if self.missing else self.fd

    def down(self, name: str, make: bool = False) -> None:
        if not self.missing:
            try:
                if make:
                    os.mkdir(name, 0o700, dir_fd=self.fd)
                child = os.open(name, DIR_FLAGS, dir_fd=self.fd)
            except OSError as e:             # absent, or not a directory (ELOOP: a symlink) here
                if make or e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise
                self.missing = 1
                return
            os.close(self.fd)
            self.fd = child
        else:
            self.missing += 1

    def up(self) -> None:
        if self.missing:
            self.missing -= 1
        else:
            parent = os.open("..", DIR_FLAGS, dir_fd=self.fd)
            os.close(self.fd)
            self.fd = parent

    def close(self) -> None:
        os.close(self.fd)


# -- Paths inside a container's root ---------------------------------------------------
#
# What docker0 and LXC mount into a container's root is found the way the
# container itself will find it: symlinks are followed as if the root were
# `/`, and never out of it (openat2's RESOLVE_IN_ROOT, Go's securejoin).
# An image is untrusted input: its `/etc` may be a symlink to `/var/tmp/x`,
# which on the host is the host's own /var/tmp/x.

MAX_SYMLINKS = 40            # the kernel's own limit for one path walk (ELOOP)


def resolve_in_root(root: str, path: str) -> list[str]:
    """The names, below `root`, of what `path` is inside the container.

    Each symlink met on the way is replaced by its target: an absolute one
    starts again at `root`, and `..` stops at `root` as it stops at `/`.
    The result names no symlink, only real directories and then its last
    name (or names) that may not exist yet; lstat of the path built so far
    never crosses a symlink, since every name in it has been found not to be one.
    """
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(here).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            is_link = False
        if not is_link:
            done.append(name)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"Too many levels of symbolic links in {path}")
        target = os.readlink(here)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p not in ("", ".")] + todo
    return done


def create_in_root(root: str, names: list[str], directory: bool = False) -> os.stat_result:
    """Make `names` below `root` exist, and return the lstat of its end: missing
    directories on the way, then an empty file (or a directory) at the end;
    what exists is kept as it is. Every step is relative to the fd of the
    directory before it, opened with O_NOFOLLOW, and files are made with
    O_EXCL: a symlink on the way is an error (ELOOP, ENOTDIR), never followed."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for name in names[:-1]:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        name = names[-1]
        try:
            if directory:
                os.mkdir(name, 0o755, dir_fd=fd)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=fd))
        except FileExistsError:
            pass
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    """A small file's text (a /proc, /sys or /run value), stripped; "" where there is none."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def fd_path(fd: int | None, name: str) -> str:
    """A short path for `name` in directory `fd`, for calls without a dir_fd (xattrs)."""
    return name if fd is None else f"/proc/self/fd/{fd}/{name}"


def remove_tree(path: str) -> None:
    """rm -rf of a directory (or a file), at any depth; a missing one is fine.

    Refused (OSError, nothing below a mount is touched) when something is
    mounted at or below `path`: removing a leftover must not empty a bind mount.
    """
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    mounted = mounts_below(path)
    if mounted:
        raise OSError(errno.EBUSY, f"{mounted[0]} is mounted")
    for fd, parts, st, after in walk_tree(path, after=True):
        if st.st_dev != top.st_dev:
            raise OSError(errno.EBUSY, f"{os.path.join(path, *parts)} is a mount point")
        if after:
            os.rmdir(parts[-1], dir_fd=fd)
        elif not stat.S_ISDIR(st.st_mode):
            os.unlink(parts[-1], dir_fd=fd)
    os.rmdir(path)


def mounts_below(path: str) -> list[str]:
    """Mount points at or below `path`."""
    top = os.path.realpath(path)
    return [p for p, _, _ in mountinfo() if p == top or p.startswith(top.rstrip("/") + "/")]


def mountinfo(path: str = "/proc/self/mountinfo") -> Iterator[tuple[str, str, str]]:
    """Each mount's point, filesystem type and superblock options, from mountinfo(5)."""
    with open(path, "rb") as f:
        for line in f:
            fields, _, rest = os.fsdecode(line).partition(" - ")
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields.split()[4])
            fstype, _, options = (rest.split() + ["", ""])[:3]
            yield point, fstype, options


def set_aside(path: str, quarantine: str, why: object) -> None:
    """Move what start-up cannot read or remove into `quarantine`, for a person to look at.

    The daemon then starts without it; if even the rename fails, it is left
    where it is (logged): start-up never fails on what a previous run left.
    """
    target = os.path.join(quarantine, time.strftime("%Y%m%dT%H%M%S-") + os.path.basename(path))
    try:
        os.makedirs(quarantine, 0o700, exist_ok=True)
        while os.path.lexists(target):
            target += "+"
        os.rename(path, target)
    except OSError as e:
        log.error("Cannot use %s (%s), and cannot set it aside: %s", path, why, e)
        return
    log.error("Cannot use %s (%s): moved to %s", path, why, target)


def remove_or_set_aside(path: str, quarantine: str) -> None:
    """Remove a leftover; one that cannot be removed goes to the quarantine."""
    try:
        remove_tree(path)
    except OSError as e:
        set_aside(path, quarantine, e)


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
