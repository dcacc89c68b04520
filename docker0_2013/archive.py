"""Tar in and out of layers: archive.go of 2013 (spec 6.2, 6.3, 12.1 item 13).

2013 piped everything through `bsdtar`. docker0 reads and writes tar with
Python's `tarfile` (gzip, bzip2 and xz are detected on input; empty input is
an empty layer) but creates every entry itself, relative to directory file
descriptors opened with O_NOFOLLOW: the daemon unpacks as root and an archive
is untrusted input, so nothing may be written outside the layer, whatever
the order and kind of its entries.

Entry names are taken relative to the layer: a leading `/` and `.`
components are dropped, as bsdtar did (so `/etc/x` lands in `etc/x`).
Refused, with a message naming the entry (the caller removes the half-filled
layer; Graph's staging directory does it for imports, commits and pulls):
- a `..` component anywhere in an entry's name or hard-link target;
- an entry whose parent is a symlink or not a directory (writing through a
  symlink, even one that points inside the layer);
- a hard link to something that is not already in the archive, or to a
  directory;
- a relative symlink whose target climbs above the layer root. Absolute
  symlink targets (`/bin/busybox`) are kept: they resolve inside the
  container, and docker0 itself never follows a link in a layer;
- entry types tar can hold but a layer cannot (volume labels, ...).
A later entry with the name of an earlier one replaces it (tar semantics);
the old one is unlinked first, so the new data never goes through a
symlink or into another hard link of the old file.

Kept: numeric owners (names are ignored), all mode bits including setuid and
sticky, device nodes and FIFOs, hard links, symlinks, mtimes and extended
attributes (PAX `SCHILY.xattr.*`, as GNU tar and bsdtar write them), except
`trusted.overlay.*`, which would change how overlayfs reads the layer.
Errors say what went wrong in words instead of 2013's `exit status N:
<bsdtar output>`.

Whiteouts: stored layers use the AUFS convention, `.wh.<name>` files and
`.wh..wh..opq` for a directory that hides what is below it. A container's
rw directory is an overlayfs upper dir, where a deletion is a 0/0 character
device and a replaced directory has the `trusted.overlay.opaque` attribute;
`tar_layer` turns those into `.wh.` entries for commit. A 0/0 character
device inside an imported archive therefore also acts as a deletion once the
layer is mounted (the same as in every later Docker).
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
from typing import BinaryIO, Iterator

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTRS = "trusted.overlay."
PAX_XATTR = "SCHILY.xattr."
BUFFER = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(ValueError):
    """An archive that cannot be unpacked safely; the text names the entry."""


# -- Unpacking ---------------------------------------------------------------------------


class RawSource(io.RawIOBase):
    """Any object with read(n) (a socket reader, an HTTP body) as a raw stream.

    Wrapped in an io.BufferedReader, it lets tarfile ask for small pieces while
    the source is read in 1 MiB ones (one thread hop each for a connection).
    tarfile's own buffer is kept small: it copies what remains of it on every read.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def untar(stream: BinaryIO, dest: str) -> None:
    """Unpack a tar stream (plain, gzip, bzip2 or xz; empty = empty layer) into `dest`.

    The stream is read once, front to back, so it may be a socket or an HTTP
    body; file data is copied in pieces and never held whole.
    """
    source = io.BufferedReader(RawSource(stream), BUFFER)
    if not source.peek(1):
        return
    header_errors: list[Exception] = []
    try:
        archive = tarfile.open(fileobj=source, mode="r|*", tarinfo=recording_headers(header_errors))
    except tarfile.TarError as e:
        raise ArchiveError(f"Invalid tar archive: {e}") from None
    with Unpacker(dest) as unpacker, archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, EOFError) as e:
                raise ArchiveError(f"Invalid tar archive: {e}") from None
            if member is None:
                break
            archive.members.clear()    # tarfile keeps every header otherwise
            unpacker.add(archive, member)
        # tarfile also stops quietly at a cut-off or garbled header; only a zero
        # block or the end of the input at a block boundary end an archive.
        if header_errors and not isinstance(header_errors[-1], END_OF_ARCHIVE):
            raise ArchiveError(f"Invalid tar archive: {header_errors[-1] or 'truncated header'}")
        unpacker.finish()


END_OF_ARCHIVE = (tarfile.EOFHeaderError, tarfile.EmptyHeaderError)


def recording_headers(errors: list[Exception]) -> type[tarfile.TarInfo]:
    """A TarInfo class that notes why header parsing stopped (tarfile does not say)."""
    class Header(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(archive)
            except tarfile.HeaderError as e:
                errors.append(e)
                raise
    return Header


class Unpacker:
    """Creates the entries of one archive below `dest` without following symlinks."""

    def __init__(self, dest: str) -> None:
        self.root_fd = os.open(dest, DIR_FLAGS)
        self.cached: tuple[tuple[str, ...], int] | None = None    # the last parent opened
        self.directories: dict[tuple[str, ...], tarfile.TarInfo] = {}

    def __enter__(self) -> "Unpacker":
        return self

    def __exit__(self, *exc) -> None:
        self.forget_parent()
        os.close(self.root_fd)

    def add(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = entry_parts(member.name, member.name)
        try:
            if not parts:                   # `./`: the layer's own directory
                if member.isdir():
                    self.directories[()] = member
                return
            parent_fd = self.open_parent(parts[:-1], member.name)
            name = parts[-1]
            directory_stays = self.make_room(parent_fd, parts, member)
            if member.isdir():
                if not directory_stays:
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
            elif member.isreg():
                self.write_file(archive, member, parent_fd, name)
            elif member.issym():
                check_symlink(parts, member)
                os.symlink(member.linkname, name, dir_fd=parent_fd)
            elif member.islnk():
                self.link(parts, member, parent_fd, name)
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}.get(member.type, stat.S_IFIFO)
                os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent_fd)
            else:
                raise ArchiveError(f"Refusing archive entry {member.name!r}: unsupported type {member.type!r}")
            if member.isdir():
                self.directories[tuple(parts)] = member
            elif not member.isreg() and not member.islnk():
                set_link_attributes(parent_fd, name, member)
        except OSError as e:
            raise ArchiveError(f"Cannot unpack {member.name!r}: {e.strerror or e}") from None
        except (OverflowError, tarfile.TarError) as e:
            raise ArchiveError(f"Cannot unpack {member.name!r}: {e}") from None

    def open_parent(self, parts: list[str], entry: str, create: bool = True) -> int:
        """An fd of the directory `parts` (creating missing ones), never through a symlink."""
        key = tuple(parts)
        if self.cached and self.cached[0] == key:
            return self.cached[1]
        self.forget_parent()
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
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

    def make_room(self, parent_fd: int, parts: list[str], member: tarfile.TarInfo) -> bool:
        """Remove an earlier entry of this name; True if it is a directory that stays."""
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if member.isdir():
                return True
            shutil.rmtree(name, dir_fd=parent_fd)
            self.directories = {k: v for k, v in self.directories.items() if k[:len(parts)] != tuple(parts)}
        else:
            os.unlink(name, dir_fd=parent_fd)
        return False

    def write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent_fd)
        try:
            source = archive.extractfile(member)
            while data := source.read(BUFFER):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            set_attributes(fd, member)
        finally:
            os.close(fd)

    def link(self, parts: list[str], member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
        target = entry_parts(member.linkname, member.name)
        if not target or target == parts:
            raise ArchiveError(f"Refusing hard link {member.name!r} -> {member.linkname!r}: "
                               f"it does not name another file")
        # Open the target's directory as a second fd: the cached one is the link's parent.
        source_fd = os.dup(self.root_fd)
        try:
            for part in target[:-1]:
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=source_fd)
                except OSError:
                    raise ArchiveError(f"Refusing hard link {member.name!r} -> {member.linkname!r}: "
                                       f"the target is not a file of this archive") from None
                os.close(source_fd)
                source_fd = child
            try:
                st = os.stat(target[-1], dir_fd=source_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"Refusing hard link {member.name!r} -> {member.linkname!r}: "
                                   f"the target is not a file of this archive")
            os.link(target[-1], name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(source_fd)

    def finish(self) -> None:
        """Directory attributes last: creating children changed their mtimes."""
        self.forget_parent()
        for parts, member in self.directories.items():
            try:
                fd = self.open_parent(list(parts), member.name, create=False)
            except (OSError, ArchiveError):
                continue                # replaced by a later entry
            try:
                set_attributes(fd, member)
            except OSError as e:
                raise ArchiveError(f"Cannot unpack {member.name!r}: {e.strerror or e}") from None
            except OverflowError as e:
                raise ArchiveError(f"Cannot unpack {member.name!r}: {e}") from None
            self.forget_parent()


def entry_parts(name: str, entry: str) -> list[str]:
    """`./a//b/` -> ['a', 'b']; a `..` anywhere is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"Refusing archive entry {entry!r}: '..' in {name!r} could leave the layer")
    return parts


def check_symlink(parts: list[str], member: tarfile.TarInfo) -> None:
    """A relative target may not climb above the layer root."""
    if member.linkname.startswith("/"):
        return
    depth = len(parts) - 1
    for part in member.linkname.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ArchiveError(f"Refusing symlink {member.name!r} -> {member.linkname!r}: "
                                   f"it points outside the layer")
        elif part not in ("", "."):
            depth += 1


def set_attributes(fd: int, member: tarfile.TarInfo) -> None:
    """Owner, then mode (chown clears setuid bits), xattrs (chown clears capabilities), mtime."""
    os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)
    for key, value in xattrs(member):
        try:
            os.setxattr(fd, key, value)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    mtime = mtime_ns(member)
    os.utime(fd, ns=(mtime, mtime))


def set_link_attributes(parent_fd: int, name: str, member: tarfile.TarInfo) -> None:
    """Symlinks, devices and FIFOs: no fd of their own to use."""
    os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
    if not member.issym():          # a symlink's own mode means nothing on Linux
        os.chmod(name, member.mode & 0o7777, dir_fd=parent_fd)
    mtime = mtime_ns(member)
    os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The PAX mtime text has nanoseconds; tarfile's float would round them."""
    text = member.pax_headers.get("mtime", "")
    seconds, _, fraction = text.partition(".")
    if seconds.lstrip("-").isdigit() and (not fraction or fraction.isdigit()):
        sign = -1 if seconds.startswith("-") else 1
        return int(seconds) * 1_000_000_000 + sign * int(fraction[:9].ljust(9, "0"))
    return int(member.mtime) * 1_000_000_000


def xattrs(member: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for key, value in member.pax_headers.items():
        if key.startswith(PAX_XATTR) and not key[len(PAX_XATTR):].startswith(OVERLAY_XATTRS):
            yield key[len(PAX_XATTR):], value.encode("utf-8", "surrogateescape")


# -- Packing -----------------------------------------------------------------------------


def is_whiteout(st: os.stat_result) -> bool:
    """overlayfs marks a deleted name with a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def tar_layer(directory: str, out: BinaryIO) -> None:
    """An uncompressed tar of an overlay upper dir, whiteouts in AUFS form (for commit)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFFER) as archive:
        seen: dict[tuple[int, int], str] = {}
        for path, name, st in walk(directory):
            if is_whiteout(st):
                head, tail = os.path.split(name)
                add_marker(archive, f"{head}/{WHITEOUT}{tail}", st)
                continue
            add_entry(archive, path, name, st, seen)
            if stat.S_ISDIR(st.st_mode) and is_opaque(path):
                add_marker(archive, f"{name}/{OPAQUE}", st)


def tar_directory(directory: str, out: BinaryIO) -> None:
    """A plain uncompressed tar of a tree, entries named `./...` (for export)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFFER) as archive:
        seen: dict[tuple[int, int], str] = {}
        add_entry(archive, directory, ".", os.lstat(directory), seen)
        for path, name, st in walk(directory):
            add_entry(archive, path, name, st, seen)


def add_entry(archive: tarfile.TarFile, path: str, name: str, st: os.stat_result,
              seen: dict[tuple[int, int], str]) -> None:
    """One entry with numeric owner and xattrs; `seen` turns repeated inodes into hard links."""
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
    inode = (st.st_dev, st.st_ino)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and inode in seen:
        info.type, info.linkname = tarfile.LNKTYPE, seen[inode]
    elif stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        seen[inode] = name
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        return                          # a socket: tar cannot hold it
    for key in list_xattrs(path):
        if not key.startswith(OVERLAY_XATTRS):
            value = os.getxattr(path, key, follow_symlinks=False)
            info.pax_headers[PAX_XATTR + key] = value.decode("utf-8", "surrogateescape")
    if info.type == tarfile.REGTYPE:
        with open(path, "rb") as f:
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


def walk(directory: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, `./relative`, lstat) below `directory`: sorted by bytes, parents first.

    Iterative, so a container's 5000-deep directory chain can still be committed.
    """
    pending = [iter(listing(directory, "."))]
    while pending:
        for path, name, st in pending[-1]:
            yield path, name, st
            if stat.S_ISDIR(st.st_mode):
                pending.append(iter(listing(path, name)))
                break
        else:
            pending.pop()


def listing(path: str, name: str) -> list[tuple[str, str, os.stat_result]]:
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    return [(e.path, f"{name}/{e.name}", e.stat(follow_symlinks=False)) for e in entries]
