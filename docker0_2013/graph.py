"""The image graph, `ROOT/graph/<ID>/{json,layer/}`: graph.go, image.go and mount.go of 2013.

An image is a directory holding its JSON record and its layer, a plain tree of
files in which deletions are `.wh.<name>` files (the AUFS convention, kept on
disk and in tarballs). Images are created in `graph/:tmp:/<ID>` and renamed
into place, so a half-written image is never visible (spec 6.3).

Runs in: the daemon, in worker threads (import, commit, pull, mount) and on
its event loop (lookups).

Changed since 2013:
- what a crash left in `:tmp:` is removed at start-up, and an image that
  cannot be read is set aside in `ROOT/quarantine/`;
- rmi (`unpublish`) refuses an image another image is built on (spec 6.6);
- the union mount is overlayfs (AUFS is gone from kernels); a layer with
  whiteouts gets an overlay twin (build_overlay_view);
- mount(2) is called directly, and an image may have as many layers as
  overlayfs stacks (500), through short symlinks when the options are long.
"""
from __future__ import annotations

import ctypes
import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import VERSION, archive
from .utils import (Mirror, NoSuchId, TruncIndex, atomic_write, fd_path, generate_id, json_compact, now_string,
                    remove_or_set_aside, remove_tree, set_aside, walk_tree)

TMP = ":tmp:"
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
MAX_LAYERS = 500                # overlayfs' limit on lower layers (OVL_MAX_STACK)
MNT_DETACH = 2
CLONE_FS = 0x200


@dataclass
class Image:
    """The image JSON record (spec 6.1); empty members are left out on disk."""
    id: str
    created: str
    parent: str = ""
    comment: str = ""
    container: str = ""
    container_config: dict = field(default_factory=dict)
    docker_version: str = ""

    def to_dict(self) -> dict:
        record = {"id": self.id, "parent": self.parent, "comment": self.comment,
                  "created": self.created, "container": self.container,
                  "container_config": self.container_config,
                  "docker_version": self.docker_version}
        return {k: v for k, v in record.items() if v or k == "container_config"}

    @classmethod
    def from_dict(cls, record: dict) -> "Image":
        return cls(id=record.get("id", ""), created=record.get("created", ""),
                   parent=record.get("parent", ""), comment=record.get("comment", ""),
                   container=record.get("container", ""),
                   container_config=record.get("container_config") or {},
                   docker_version=record.get("docker_version", ""))


class Graph:
    def __init__(self, root: str, quarantine: str | None = None) -> None:
        self.root = root
        self.tmp = os.path.join(root, TMP)
        self.quarantine = quarantine or os.path.join(os.path.dirname(root), "quarantine")
        os.makedirs(root, 0o700, exist_ok=True)
        os.makedirs(self.tmp, 0o700, exist_ok=True)
        for name in os.listdir(self.tmp):               # what a crash left half-written
            remove_or_set_aside(os.path.join(self.tmp, name), self.quarantine)
        self.index = TruncIndex(n for n in os.listdir(root) if self._is_image_dir(n))

    def _is_image_dir(self, name: str) -> bool:
        if ":" in name or not os.path.isdir(os.path.join(self.root, name, "layer")):
            return False
        try:
            with open(os.path.join(self.root, name, "json"), "rb") as f:
                if Image.from_dict(json.loads(f.read())).id == name:
                    return True
                error: object = "the JSON has another id"
        except FileNotFoundError:
            return False
        except (OSError, ValueError, AttributeError) as e:
            error = e
        set_aside(os.path.join(self.root, name), self.quarantine, error)
        return False

    def image_path(self, image_id: str) -> str:
        return os.path.join(self.root, image_id)

    def layer_path(self, image_id: str) -> str:
        return os.path.join(self.root, image_id, "layer")

    def mount_layer(self, image_id: str) -> str:
        """The directory overlayfs stacks for this image: its whiteout-converted twin, if any."""
        twin = os.path.join(self.root, image_id, "overlay")
        return twin if os.path.isdir(twin) else self.layer_path(image_id)

    def exists(self, image_id: str) -> bool:
        return os.path.isdir(self.image_path(image_id))

    def get(self, name: str) -> Image:
        """Load an image by full ID or unique ID prefix; NoSuchId otherwise."""
        image_id = self.index.get(name)
        with open(os.path.join(self.image_path(image_id), "json"), "rb") as f:
            image = Image.from_dict(json.loads(f.read()))
        if image.id != image_id:
            raise NoSuchId(f"Image stored at '{image_id}' has wrong id '{image.id}'")
        return image

    def all(self) -> Iterator[Image]:
        for image_id in list(self.index._ids):
            try:
                yield self.get(image_id)
            except (KeyError, OSError, ValueError):
                continue

    def count(self) -> int:
        return len(self.index._ids)

    def heads(self) -> dict[str, Image]:
        """Images that are nobody's parent (2013 computed grandparents instead, spec 6.9)."""
        images = {image.id: image for image in self.all()}
        parents = {image.parent for image in images.values()}
        return {i: image for i, image in images.items() if i not in parents}

    def create(self, fill_layer: Callable[[str], None], *, comment: str = "",
               parent: str = "", container: str = "", container_config: dict | None = None,
               image_id: str | None = None, created: str | None = None) -> Image:
        """Make a new image whose layer `fill_layer(path)` writes, then publish it."""
        image = Image(id=image_id or generate_id(), created=created or now_string(),
                      parent=parent, comment=comment, container=container,
                      container_config=container_config or {}, docker_version=VERSION)
        self.register(image, fill_layer)
        return image

    def register(self, image: Image, fill_layer: Callable[[str], None]) -> None:
        """Fill and publish an image; on any failure nothing of it stays (spec 6.3)."""
        if not image.id:
            raise ValueError("Image id can't be empty")
        if ":" in image.id:
            raise ValueError("Invalid character in image id: ':'")
        if self.exists(image.id):
            raise ValueError(f"Image {image.id} already exists")
        staging = os.path.join(self.tmp, image.id)
        try:
            os.mkdir(staging, 0o700)
        except FileExistsError:
            raise ValueError(f"Image {image.id} is being registered already") from None
        try:
            os.mkdir(os.path.join(staging, "layer"), 0o700)
            fill_layer(os.path.join(staging, "layer"))
            build_overlay_view(os.path.join(staging, "layer"), os.path.join(staging, "overlay"))
            atomic_write(os.path.join(staging, "json"), json_compact(image.to_dict()), 0o600)
            os.rename(staging, self.image_path(image.id))
        finally:
            remove_or_set_aside(staging, self.quarantine)
        self.index.add(image.id)

    def parents(self, image: Image) -> Iterator[Image]:
        """The image itself, then its parent, and so on up to the root."""
        yield image
        while image.parent:
            try:
                image = self.get(image.parent)
            except (KeyError, OSError, ValueError) as e:
                raise LookupError(f"Error while getting parent image: {e}") from None
            yield image

    def children(self, image_id: str) -> list[Image]:
        return [image for image in self.all() if image.parent == image_id]

    def unpublish(self, name: str) -> tuple[str, str]:
        """The quick half of delete: (ID, a `:tmp:` directory holding the image, to remove).

        One rename takes the image out of the graph, so a crash leaves no
        half-deleted image, only `:tmp:` garbage that start-up clears.
        """
        image_id = self.index.get(name)
        children = self.children(image_id)
        if children:
            raise RuntimeError(f"Unable to remove image {image_id[:12]}: "
                               f"image {children[0].id[:12]} is based on it")
        garbage = tempfile.mkdtemp(prefix="rmi-", dir=self.tmp)
        os.rename(self.image_path(image_id), os.path.join(garbage, image_id))
        self.index.delete(image_id)
        return image_id, garbage


# -- overlayfs (mount.go) ----------------------------------------------------------------


def has_whiteouts(layer: str) -> bool:
    return any(parts[-1].startswith(WHITEOUT) for _, parts, _, _ in walk_tree(layer))


def build_overlay_view(layer: str, twin: str) -> None:
    """The hard-link twin of a layer that has whiteouts, which overlayfs mounts instead.

    overlayfs does not understand `.wh.` files. The twin is a hard-link copy of
    the layer (no data is copied) in which `.wh.<name>` became a 0/0 character
    device and `.wh..wh..opq` the `trusted.overlay.opaque` attribute of its
    directory; AUFS's own `.wh..wh.*` metadata is left out. The layer itself
    stays as it was imported, for diff, push and history. Built in the staging
    directory (both trees walked by fd, so at any depth), the twin is published
    with the image by the same rename. 2013's mount-time "whiteout replay"
    (spec 5.3 step 6), an AUFS workaround, is not needed: deletions in every
    layer take effect, not only the top one's.
    """
    if not has_whiteouts(layer):
        return
    os.mkdir(twin, 0o700)
    copy_attributes(os.lstat(layer), layer, twin)
    target = Mirror(twin)
    try:
        for fd, parts, st, after in walk_tree(layer, after=True):
            name, here = parts[-1], target.here
            if after:
                target.up()
                if target.here is not None and not name.startswith(WHITEOUT + WHITEOUT):
                    # changes() compares copied-up directories' mtimes: set once their contents are in
                    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=target.fd)
            elif stat.S_ISDIR(st.st_mode):
                making = here is not None and not name.startswith(WHITEOUT + WHITEOUT)
                target.down(name, make=making)      # AUFS's own metadata stays out
                if making:
                    copy_attributes(st, fd_path(fd, name), target.fd)
            elif here is None:
                continue
            elif name == OPAQUE:
                os.setxattr(here, archive.OPAQUE_XATTR, b"y")
            elif name.startswith(WHITEOUT + WHITEOUT):
                continue
            elif name.startswith(WHITEOUT):
                hidden = name[len(WHITEOUT):]
                if not os.path.lexists(fd_path(fd, hidden)):    # the layer's own file wins over its whiteout
                    os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=here)
            else:
                os.link(name, name, src_dir_fd=fd, dst_dir_fd=here, follow_symlinks=False)
    finally:
        target.close()
    st = os.lstat(layer)
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_attributes(st: os.stat_result, source: str, target: str | int) -> None:
    """Owner, mode and xattrs of a directory (times are set after its contents)."""
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    for key in os.listxattr(source, follow_symlinks=False):
        if not key.startswith(archive.OVERLAY_XATTRS):
            os.setxattr(target, key, os.getxattr(source, key, follow_symlinks=False))


def is_mounted(path: str) -> bool:
    """Spec 5.3: a mount point has another device number than its parent."""
    try:
        return os.lstat(path).st_dev != os.lstat(os.path.join(path, "..")).st_dev
    except FileNotFoundError:
        return False


def mount_rootfs(graph: Graph, image_id: str, rw: str, work: str, target: str) -> None:
    """Mount the image's layers (top first) under `rw` at `target`, with `work` as overlay's workdir."""
    chain = list(graph.parents(graph.get(image_id)))
    if len(chain) > MAX_LAYERS:
        raise RuntimeError(f"Image {image_id[:12]} has {len(chain)} layers; "
                           f"overlayfs can stack at most {MAX_LAYERS}")
    if is_mounted(target):
        raise RuntimeError(f"{target} is already mounted")
    for directory in (rw, work, target):
        os.makedirs(directory, 0o755, exist_ok=True)
    lowers = [os.path.abspath(graph.mount_layer(image.id)) for image in chain]
    rw, work, target = os.path.abspath(rw), os.path.abspath(work), os.path.abspath(target)
    options = overlay_options(lowers, rw, work)
    plain = not any(c in path for path in (*lowers, rw, work) for c in ",:\\")
    try:
        if plain and len(options) < os.sysconf("SC_PAGE_SIZE"):
            mount_overlay(options, target)
        else:
            mount_through_links(graph.tmp, lowers, rw, work, target)
    except OSError as e:
        raise RuntimeError(f"Unable to mount {target}: {e.strerror}") from None


def overlay_options(lowers: list[str], upper: str, work: str) -> bytes:
    """overlayfs's options, for the kernel (which reads one page of them)."""
    # No redirects or metacopy: a commit must find whole files and directories in rw.
    return os.fsencode(f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},"
                       "redirect_dir=off,metacopy=off")


def mount_overlay(options: bytes, target: str) -> None:
    """mount(2) of an overlayfs."""
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options) != 0:
        raise libc_error()


def libc_error() -> OSError:
    """The error of the last failed `_libc` call."""
    error = ctypes.get_errno()
    return OSError(error, os.strerror(error))


def mount_through_links(scratch: str, lowers: list[str], rw: str, work: str, target: str) -> None:
    """The same mount, each directory named by a short symlink in a scratch directory.

    For more layers than one page of options holds (or paths with `,` `:`
    or `\\`, which overlayfs would split on): the kernel reads the relative
    names from the working directory, which all the daemon's threads share,
    so a thread of its own unshares it first (CLONE_FS) and goes there.
    """
    links = tempfile.mkdtemp(prefix="mount-", dir=scratch)
    failed: list[OSError] = []

    def mount_from_links() -> None:
        try:
            if _libc.unshare(CLONE_FS) != 0:
                raise libc_error()
            os.chdir(links)
            mount_overlay(overlay_options([str(i) for i in range(len(lowers))], "upper", "work"), target)
        except OSError as e:
            failed.append(e)
    try:
        for i, lower in enumerate(lowers):
            os.symlink(lower, os.path.join(links, str(i)))
        os.symlink(rw, os.path.join(links, "upper"))
        os.symlink(work, os.path.join(links, "work"))
        thread = threading.Thread(target=mount_from_links)
        thread.start()
        thread.join()
    finally:
        remove_tree(links)
    if failed:
        raise failed[0]


_libc = ctypes.CDLL(None, use_errno=True)


def unmount_rootfs(target: str) -> None:
    """Unmount, then remove the mount point (spec 5.3)."""
    if is_mounted(target) and _libc.umount2(os.fsencode(target), 0) != 0:
        error = ctypes.get_errno()
        if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:     # busy: detach it
            raise OSError(error, f"Umount: Failed to umount {target}: {os.strerror(error)}")
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
