"""Tar in and out of layers: archive.go of 2013 (spec 6.2, 6.3, 12.1 item 13).

2013 piped everything through `bsdtar`. docker0 writes tar with Python's
`tarfile` and reads it with a small reader of its own (below; gzip, bzip2
and xz are detected on input, empty input is an empty layer), and creates
every entry itself, relative to directory file descriptors opened with
O_NOFOLLOW: the daemon unpacks as root and an archive is untrusted input, so
nothing may be written outside the layer, whatever the order and kind of
its entries.

Entry names are taken relative to the layer: a leading `/` and `.`
components are dropped, as bsdtar did (so `/etc/x` lands in `etc/x`).
Refused, with a message naming the entry (the caller removes the half-filled
layer; Graph's staging directory does it for imports, commits and pulls):
- a `..` component anywhere in an entry's name or hard-link target;
- an entry whose parent is a symlink or not a directory (writing through a
  symlink, even one that points inside the layer);
- a hard link to something that is not already in the archive, or to a
  directory;
- entry types tar can hold but a layer cannot (volume labels, ...).
Symlinks are stored as they are, whatever they point at (`/bin/busybox`,
`../../../../bin`, a name that does not exist): inside the container they
resolve in its root, where `..` stops at `/`, as every Docker accepts them.
What matters is that nothing follows one while it writes: not this
unpacker (above), not docker0 or LXC when they mount into a container's root
(utils.resolve_in_root).
A later entry with the name of an earlier one replaces it (tar semantics);
the old one is unlinked first, so the new data never goes through a
symlink or into another hard link of the old file.

Kept: numeric owners (names are ignored), all mode bits including setuid and
sticky, device nodes and FIFOs, hard links, symlinks, mtimes and extended
attributes (PAX `SCHILY.xattr.*`, as GNU tar and bsdtar write them), except
`trusted.overlay.*`, which would change how overlayfs reads the layer.
Errors say what went wrong in words instead of 2013's `exit status N:
<bsdtar output>`.

Any depth: unpacking reaches each entry's directory from the last one by
fd, and packing walks by fd (utils.walk_tree), so trees whose paths are
longer than PATH_MAX go in and out (bsdtar named files by their paths).

Whiteouts: stored layers use the AUFS convention, `.wh.<name>` files and
`.wh..wh..opq` for a directory that hides what is below it. A container's
rw directory is an overlayfs upper dir, where a deletion is a 0/0 character
device and a replaced directory has the `trusted.overlay.opaque` attribute;
`tar_layer` turns those into `.wh.` entries for commit. A 0/0 character
device inside an imported archive therefore also acts as a deletion once the
layer is mounted (the same as in every later Docker).
"""
from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from .utils import DIR_FLAGS, fd_path, remove_tree, walk_tree

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTRS = "trusted.overlay."
PAX_XATTR = "SCHILY.xattr."
BUFFER = 1 << 20
PEEK = 1 << 16


class ArchiveError(ValueError):
    """An archive that cannot be unpacked safely; the text names the entry."""


# -- Reading tar ------------------------------------------------------------------------
#
# tarfile parses headers slowly (about as long as GNU tar takes for the whole
# job) and quietly treats a garbled or cut-off header as the end of the
# archive. This reader handles what layers use: ustar, GNU and PAX headers,
# GNU long names, PAX paths, sizes, owners, nanosecond mtimes and xattrs.

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_META = 1 << 20                 # a long name or PAX header larger than this is refused
REGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
TYPES = {b"\0": REGULAR, b"0": REGULAR, b"7": REGULAR, b"1": HARDLINK, b"2": SYMLINK,
         b"3": CHAR, b"4": BLOCKDEV, b"5": DIRECTORY, b"6": FIFO}


@dataclass
class Entry:
    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


class RawSource(io.RawIOBase):
    """Any object with read(n) (a connection's stdin, an HTTP body) as a raw stream.

    In an io.BufferedReader it is read 1 MiB at a time, while headers are
    taken 512 bytes at a time; a stream with readinto (a connection's
    server.SocketStdin, a file) fills the buffer itself.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.direct = getattr(stream, "readinto", None)
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.ended:          # the source sees its end once (a progress reporter prints it)
            return 0
        if self.direct is not None:     # straight into the buffer: one copy less
            n = self.direct(buffer)
            self.ended = not n
            return n
        data = self.stream.read(len(buffer))
        self.ended = not data
        buffer[:len(data)] = data
        return len(data)


MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00", "zstd": b"\x28\xb5\x2f\xfd"}


def compression(head: bytes) -> str:
    """What a stream's first 6 bytes say it is compressed with (MAGIC), as bsdtar
    recognised it; "" for none."""
    return next((kind for kind, magic in MAGIC.items() if head.startswith(magic)), "")


def decompressed(source: io.BufferedReader) -> BinaryIO:
    """The tar stream inside gzip, bzip2 or xz (zstd is not read)."""
    kind = compression(source.peek(6)[:6])
    if kind == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(source)
    if kind == "xz":
        return lzma.LZMAFile(source)
    return source


class TarReader:
    """Iterates the entries of a tar stream; the data of each is read before the next.

    It keeps its own 1 MiB buffer: the stream is read into it, headers are
    parsed from it and file data is written from it, so each byte is copied
    once on its way in and once on its way out.
    """

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.unread = 0                # data bytes (plus padding) of the current entry
        self.global_pax: dict[str, bytes] = {}
        self.buffer = memoryview(bytearray(BUFFER))
        self.start = self.end = 0      # buffer[start:end]: read from the source, not used yet

    def fill(self) -> bool:
        """Refill the used-up buffer; False at the end of the stream."""
        self.start, self.end = 0, self.source.readinto(self.buffer) or 0
        return self.end > 0

    def take(self, size: int) -> bytes:
        """`size` bytes, or fewer at the end of the stream."""
        if self.end - self.start >= size:              # the usual case: a header
            self.start += size
            return self.buffer[self.start - size:self.start].tobytes()
        parts = []
        while size and (self.start < self.end or self.fill()):
            n = min(size, self.end - self.start)
            parts.append(self.buffer[self.start:self.start + n].tobytes())
            self.start += n
            size -= n
        return b"".join(parts)

    def read(self, size: int) -> bytes:
        data = self.take(size)
        if len(data) < size:
            raise ArchiveError("Invalid tar archive: unexpected end of data")
        return data

    def skip(self) -> None:
        while self.unread:
            if self.start == self.end and not self.fill():
                raise ArchiveError("Invalid tar archive: unexpected end of data")
            n = min(self.unread, self.end - self.start)
            self.start += n
            self.unread -= n

    def copy_to(self, fd: int, size: int) -> None:
        """Write the current entry's data to fd."""
        left = size
        while left:
            if self.start == self.end and not self.fill():
                raise ArchiveError("Invalid tar archive: unexpected end of data")
            n = min(left, self.end - self.start)
            view = self.buffer[self.start:self.start + n]
            while view:
                view = view[os.write(fd, view):]
            self.start += n
            left -= n
        self.unread -= size
        self.skip()                    # the padding

    def drain(self) -> None:
        """Read the rest: padding after the end marker; nothing stays unread in a connection."""
        self.start = self.end
        while self.fill():
            pass

    def __iter__(self) -> Iterator[Entry]:
        pax: dict[str, bytes] = {}
        long_name = long_link = None
        while True:
            self.skip()
            block = self.take(BLOCK)
            if not block:
                return                 # no end marker: accepted, as GNU tar does
            if len(block) < BLOCK:
                raise ArchiveError("Invalid tar archive: unexpected end of data")
            if block == ZERO_BLOCK:
                self.drain()
                return
            entry = parse_header(block)
            self.unread = -(-entry.size // BLOCK) * BLOCK
            if entry.type in (b"x", b"g", b"L", b"K"):
                if entry.size > MAX_META:
                    raise ArchiveError(f"Invalid tar archive: a {entry.size}-byte header")
                data = self.read(entry.size)
                self.unread -= entry.size
                if entry.type == b"x":
                    pax = parse_pax(data)
                elif entry.type == b"g":
                    self.global_pax.update(parse_pax(data))
                elif entry.type == b"L":
                    long_name = os.fsdecode(data.split(b"\0", 1)[0])
                else:
                    long_link = os.fsdecode(data.split(b"\0", 1)[0])
                continue
            apply_pax(entry, {**self.global_pax, **pax})
            self.unread = -(-entry.size // BLOCK) * BLOCK     # a PAX size overrides the header's
            entry.name = long_name if long_name is not None else entry.name
            entry.linkname = long_link if long_link is not None else entry.linkname
            pax, long_name, long_link = {}, None, None
            if entry.type == b"\0" and entry.name.endswith("/"):
                entry.type = DIRECTORY     # old tars mark directories by a trailing slash
            entry.type = TYPES.get(entry.type, entry.type)
            if entry.type not in (REGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO):
                raise ArchiveError(f"Refusing archive entry {entry.name!r}: unsupported type {entry.type!r}"
                                   + (" (sparse file)" if entry.type == b"S" else ""))
            if entry.type != REGULAR:
                entry.size = 0         # only regular files carry data in a layer
            yield entry


def parse_header(block: bytes) -> Entry:
    stored = number(block[148:156])
    body = block[:148] + b" " * 8 + block[156:]
    if stored != sum(body) and stored != sum(b - 256 if b > 127 else b for b in body):
        raise ArchiveError("Invalid tar archive: bad header checksum")   # (old tars summed signed bytes)
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":           # POSIX keeps long paths' heads in `prefix`
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return Entry(name=os.fsdecode(name), type=block[156:157], mode=number(block[100:108]),
                 uid=number(block[108:116]), gid=number(block[116:124]), size=number(block[124:136]),
                 mtime_ns=number(block[136:148]) * 1_000_000_000,
                 linkname=os.fsdecode(block[157:257].split(b"\0", 1)[0]),
                 devmajor=number(block[329:337]), devminor=number(block[337:345]))


def number(field: bytes) -> int:
    """An octal field, or GNU's base-256 for large values."""
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise ArchiveError("Invalid tar archive: negative number in a header")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ArchiveError(f"Invalid tar archive: bad number {text!r} in a header") from None


def parse_pax(data: bytes) -> dict[str, bytes]:
    """`<length> <key>=<value>\n` records."""
    records, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        length_text, space, _ = data[pos:pos + 20].partition(b" ")
        if not space or not length_text.isdigit() or int(length_text) <= len(length_text) + 1:
            raise ArchiveError("Invalid tar archive: bad PAX header")
        record = data[pos:pos + int(length_text)]
        key, equals, value = record[len(length_text) + 1:].partition(b"=")
        if not equals or not record.endswith(b"\n"):
            raise ArchiveError("Invalid tar archive: bad PAX header")
        records[key.decode("utf-8", "surrogateescape")] = value[:-1]
        pos += int(length_text)
    return records


def apply_pax(entry: Entry, pax: dict[str, bytes]) -> None:
    try:
        for key, value in pax.items():
            if key == "path":
                entry.name = value.decode("utf-8", "surrogateescape")
            elif key == "linkpath":
                entry.linkname = value.decode("utf-8", "surrogateescape")
            elif key in ("size", "uid", "gid"):
                setattr(entry, key, int(value))
            elif key == "mtime":
                entry.mtime_ns = decimal_ns(value.decode())
            elif key.startswith(PAX_XATTR) and not key[len(PAX_XATTR):].startswith(OVERLAY_XATTRS):
                entry.xattrs[key[len(PAX_XATTR):]] = value
            elif key.startswith("GNU.sparse."):
                raise ArchiveError(f"Refusing archive entry {entry.name!r}: sparse files are not supported")
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ArchiveError):
            raise
        raise ArchiveError(f"Invalid tar archive: bad PAX header for {entry.name!r}") from None


def decimal_ns(text: str) -> int:
    """PAX times are decimal seconds with up to nanosecond digits."""
    seconds, _, fraction = text.partition(".")
    if not seconds.lstrip("-").isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(text)
    sign = -1 if seconds.startswith("-") else 1
    return int(seconds) * 1_000_000_000 + sign * int(fraction[:9].ljust(9, "0"))


# -- Unpacking ---------------------------------------------------------------------------


def untar(stream: BinaryIO, dest: str) -> None:
    """Unpack a tar stream (plain, gzip, bzip2 or xz; empty = empty layer) into `dest`.

    The stream is read once, front to back, so it may be a connection or an
    HTTP body; file data is copied in 1 MiB pieces and never held whole.
    """
    # A small buffer, only to look at the first bytes: TarReader's 1 MiB reads
    # then go past it, straight from the stream into TarReader's own buffer.
    source = io.BufferedReader(RawSource(stream), PEEK)
    if not source.peek(1):
        return
    reader = TarReader(decompressed(source))
    try:
        with Unpacker(dest) as unpacker:
            for entry in reader:
                unpacker.add(entry, reader)
            unpacker.finish()
    except (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError) as e:
        raise ArchiveError(f"Invalid tar archive: {e}") from None


class Unpacker:
    """Creates the entries of one archive below `dest` without following symlinks."""

    def __init__(self, dest: str) -> None:
        self.root_fd = os.open(dest, DIR_FLAGS)
        self.cached: tuple[tuple[str, ...], int] | None = None    # the last parent opened
        self.directories: dict[tuple[str, ...], Entry] = {}

    def __enter__(self) -> "Unpacker":
        return self

    def __exit__(self, *exc) -> None:
        self.forget_parent()
        os.close(self.root_fd)

    def add(self, entry: Entry, reader: TarReader) -> None:
        parts = entry_parts(entry.name, entry.name)
        try:
            if not parts:                   # `./`: the layer's own directory
                if entry.type == DIRECTORY:
                    self.directories[()] = entry
                return
            parent_fd = self.open_parent(parts[:-1], entry.name)
            try:
                self.create(entry, reader, parts, parent_fd)
            except FileExistsError:         # a later entry replaces an earlier one
                if self.make_room(parent_fd, parts, entry):
                    self.create(entry, reader, parts, parent_fd)
        except OSError as e:
            raise ArchiveError(f"Cannot unpack {entry.name!r}: {e.strerror or e}") from None
        except OverflowError as e:
            raise ArchiveError(f"Cannot unpack {entry.name!r}: {e}") from None
        if entry.type == DIRECTORY:
            self.directories[tuple(parts)] = entry

    def create(self, entry: Entry, reader: TarReader, parts: list[str], parent_fd: int) -> None:
        name = parts[-1]
        if entry.type == DIRECTORY:
            os.mkdir(name, 0o700, dir_fd=parent_fd)      # attributes at the end
        elif entry.type == REGULAR:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent_fd)
            try:
                reader.copy_to(fd, entry.size)
                set_attributes(fd, entry)
            finally:
                os.close(fd)
        elif entry.type == HARDLINK:
            self.link(parts, entry, parent_fd, name)
        else:
            if entry.type == SYMLINK:
                os.symlink(entry.linkname, name, dir_fd=parent_fd)
            else:
                kind = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[entry.type]
                os.mknod(name, kind | 0o600, os.makedev(entry.devmajor, entry.devminor), dir_fd=parent_fd)
            set_node_attributes(parent_fd, name, entry)

    def open_parent(self, parts: list[str], entry: str, create: bool = True) -> int:
        """An fd of the directory `parts` (creating missing ones), never through a symlink.

        Reached from the last one (up by "..", then down) when that is nearer than
        the root, so a deep tree costs an open or two per entry, not one per level.
        """
        key = tuple(parts)
        if self.cached and self.cached[0] == key:
            return self.cached[1]
        start = len(os.path.commonprefix([self.cached[0], key])) if self.cached else 0
        if start and len(self.cached[0]) - start < start:
            fd, ups = self.cached[1], len(self.cached[0]) - start
            self.cached = None
            try:
                for _ in range(ups):
                    fd, parent = os.open("..", DIR_FLAGS, dir_fd=fd), fd
                    os.close(parent)
            except BaseException:
                os.close(fd)
                raise
        else:
            self.forget_parent()
            start, fd = 0, os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts[start:], start):
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)      # what tar does for a missing parent
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ArchiveError(f"Refusing archive entry {entry!r}: "
                                           f"{'/'.join(parts[:i + 1])} is a symlink or not a directory") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self.cached = (key, fd)
        return fd

    def forget_parent(self) -> None:
        if self.cached:
            os.close(self.cached[1])
            self.cached = None

    def make_room(self, parent_fd: int, parts: list[str], entry: Entry) -> bool:
        """Remove an earlier entry of this name; False if it is a directory that stays."""
        name = parts[-1]
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if entry.type == DIRECTORY:
                return False
            remove_tree(fd_path(parent_fd, name))
            self.directories = {k: v for k, v in self.directories.items() if k[:len(parts)] != tuple(parts)}
        else:
            os.unlink(name, dir_fd=parent_fd)
        return True

    def link(self, parts: list[str], entry: Entry, parent_fd: int, name: str) -> None:
        refused = f"Refusing hard link {entry.name!r} -> {entry.linkname!r}"
        target = entry_parts(entry.linkname, entry.name)
        if not target or target == parts:
            raise ArchiveError(f"{refused}: it does not name another file")
        # The target's directory gets an fd of its own: the cached one is the link's parent.
        source_fd = os.dup(self.root_fd)
        try:
            for part in target[:-1]:
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=source_fd)
                except OSError:
                    raise ArchiveError(f"{refused}: the target is not a file of this archive") from None
                os.close(source_fd)
                source_fd = child
            try:
                st = os.stat(target[-1], dir_fd=source_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"{refused}: the target is not a file of this archive")
            os.link(target[-1], name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(source_fd)

    def finish(self) -> None:
        """Directory attributes last: creating children changed their mtimes."""
        self.forget_parent()
        for parts in sorted(self.directories):      # parents first: each opened from the last
            entry = self.directories[parts]
            try:
                fd = self.open_parent(list(parts), entry.name, create=False)
            except (OSError, ArchiveError):
                continue                # replaced by a later entry
            try:
                set_attributes(fd, entry)
            except (OSError, OverflowError) as e:
                raise ArchiveError(f"Cannot unpack {entry.name!r}: {getattr(e, 'strerror', None) or e}") from None
        self.forget_parent()


def entry_parts(name: str, entry: str) -> list[str]:
    """`./a//b/` -> ['a', 'b']; a `..` anywhere is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"Refusing archive entry {entry!r}: '..' in {name!r} could leave the layer")
    return parts


def set_attributes(fd: int, entry: Entry) -> None:
    """Owner, then mode (chown clears setuid bits), xattrs (chown clears capabilities), mtime."""
    os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, entry.mode & 0o7777)
    for key, value in entry.xattrs.items():
        try:
            os.setxattr(fd, key, value)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def set_node_attributes(parent_fd: int, name: str, entry: Entry) -> None:
    """Symlinks, devices and FIFOs have no fd of their own to use."""
    os.chown(name, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
    if entry.type != SYMLINK:       # a symlink's own mode means nothing on Linux
        os.chmod(name, entry.mode & 0o7777, dir_fd=parent_fd)
    os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)


# -- Packing -----------------------------------------------------------------------------


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs marks a deleted name with a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | int) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class RawSink(io.RawIOBase):
    """`out` (a file, a connection) as a raw stream, so that an io.BufferedWriter
    can gather tarfile's 10 KiB records into 1 MiB writes. (tarfile's own buffer
    would copy itself on every small write.) Closing it leaves `out` open."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.out.write(bytes(data))
        return len(data)


def tar_layer(directory: str, out: BinaryIO) -> None:
    """An uncompressed tar of an overlay upper dir, whiteouts in AUFS form (for commit)."""
    with io.BufferedWriter(RawSink(out), BUFFER) as sink, \
            tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        seen: dict[tuple[int, int], str] = {}
        for fd, parts, st, _ in walk_tree(directory):
            name = "./" + "/".join(parts)
            if is_whiteout(st):
                add_marker(archive, f"{name[:-len(parts[-1])]}{WHITEOUT}{parts[-1]}", st)
                continue
            add_entry(archive, fd, parts[-1], name, st, seen)
            if stat.S_ISDIR(st.st_mode) and is_opaque(fd_path(fd, parts[-1])):
                add_marker(archive, f"{name}/{OPAQUE}", st)


def tar_directory(directory: str, out: BinaryIO) -> None:
    """A plain uncompressed tar of a tree, entries named `./...` (for export)."""
    with io.BufferedWriter(RawSink(out), BUFFER) as sink, \
            tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        seen: dict[tuple[int, int], str] = {}
        add_entry(archive, None, directory, ".", os.lstat(directory), seen)
        for fd, parts, st, _ in walk_tree(directory):
            add_entry(archive, fd, parts[-1], "./" + "/".join(parts), st, seen)


def add_entry(archive: tarfile.TarFile, fd: int | None, file: str, name: str, st: os.stat_result,
              seen: dict[tuple[int, int], str]) -> None:
    """Entry `name` for `file` in directory `fd`, with numeric owner and xattrs;
    `seen` turns repeated inodes into hard links."""
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    info.mtime = st.st_mtime_ns // 1_000_000_000
    info.pax_headers["mtime"] = f"{info.mtime}.{st.st_mtime_ns % 1_000_000_000:09d}"   # the float loses ns
    inode = (st.st_dev, st.st_ino)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and inode in seen:
        info.type, info.linkname = tarfile.LNKTYPE, seen[inode]
    elif stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        seen[inode] = name
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(file, dir_fd=fd)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        return                          # a socket: tar cannot hold it
    path = fd_path(fd, file)
    for key in list_xattrs(path):
        if not key.startswith(OVERLAY_XATTRS):
            value = os.getxattr(path, key, follow_symlinks=False)
            info.pax_headers[PAX_XATTR + key] = value.decode("utf-8", "surrogateescape")
    if info.type == tarfile.REGTYPE:
        with open(os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd), "rb") as f:
            archive.addfile(info, f)
    else:
        archive.addfile(info)


def add_marker(archive: tarfile.TarFile, name: str, st: os.stat_result) -> None:
    """An empty `.wh.` file, as AUFS left them in 2013 layers."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o444, int(st.st_mtime)
    archive.addfile(info)


def list_xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
