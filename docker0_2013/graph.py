"""The image graph, `ROOT/graph/<ID>/{json,layer/}`: graph.go, image.go and mount.go of 2013.

An image is a directory holding its JSON record and its layer, a plain tree of
files in which deletions are `.wh.<name>` files (the AUFS convention, kept on
disk and in tarballs). Images are created in `graph/:tmp:/<ID>` and renamed
into place, so a half-written image is never visible (spec 6.3).

Changed since 2013:
- whatever a crash left in `:tmp:` is removed at start-up;
- the union mount is overlayfs, not AUFS (gone from kernels). overlayfs does
  not understand `.wh.` files, so a layer that has any also gets an
  `overlay/` twin at registration: a hard-link copy of the layer in which
  `.wh.<name>` became a 0/0 character device and `.wh..wh..opq` became the
  `trusted.overlay.opaque` attribute. Mounts use the twin; the layer itself
  stays as it was imported. 2013's mount-time "whiteout replay" (spec 5.3
  step 6), a workaround for AUFS, is not needed.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import VERSION
from .utils import TruncIndex, atomic_write, generate_id, json_compact, now_string

TMP = ":tmp:"
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
MAX_MOUNT_OPTIONS = 4000        # the kernel takes one page of mount options


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
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, 0o700, exist_ok=True)
        shutil.rmtree(os.path.join(root, TMP), ignore_errors=True)
        self.index = TruncIndex(n for n in os.listdir(root) if self._is_image_dir(n))

    def _is_image_dir(self, name: str) -> bool:
        return (":" not in name and os.path.isfile(os.path.join(self.root, name, "json"))
                and os.path.isdir(os.path.join(self.root, name, "layer")))

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
        """Load an image by full ID or unique ID prefix; KeyError otherwise."""
        image_id = self.index.get(name)
        with open(os.path.join(self.image_path(image_id), "json"), "rb") as f:
            image = Image.from_dict(json.loads(f.read()))
        if image.id != image_id:
            raise KeyError(f"Image stored at '{image_id}' has wrong id '{image.id}'")
        return image

    def all(self) -> Iterator[Image]:
        for image_id in list(self.index._ids):
            try:
                yield self.get(image_id)
            except (KeyError, OSError, ValueError):
                continue

    def count(self) -> int:
        return len(self.index._ids)

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
        if not image.id:
            raise ValueError("Image id can't be empty")
        if ":" in image.id:
            raise ValueError("Invalid character in image id: ':'")
        if self.exists(image.id):
            raise ValueError(f"Image {image.id} already exists")
        staging = os.path.join(self.root, TMP, image.id)
        os.makedirs(os.path.join(self.root, TMP), 0o700, exist_ok=True)
        try:
            os.mkdir(staging, 0o700)
            os.mkdir(os.path.join(staging, "layer"), 0o700)
            fill_layer(os.path.join(staging, "layer"))
            build_overlay_view(os.path.join(staging, "layer"), os.path.join(staging, "overlay"))
            atomic_write(os.path.join(staging, "json"), json_compact(image.to_dict()), 0o600)
            os.rename(staging, self.image_path(image.id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.index.add(image.id)

    def parents(self, image: Image) -> Iterator[Image]:
        """The image itself, then its parent, and so on up to the root."""
        yield image
        while image.parent:
            try:
                image = self.get(image.parent)
            except (KeyError, OSError, ValueError) as e:
                raise LookupError(f"Error while getting parent image: {_msg(e)}") from None
            yield image


def _msg(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


# -- overlayfs (mount.go) ----------------------------------------------------------------


def build_overlay_view(layer: str, twin: str) -> None:
    """Hard-link copy of `layer` with AUFS whiteouts in overlayfs form; only if it has any."""
    if not any(name.startswith(WHITEOUT) for _, dirs, files in os.walk(layer) for name in dirs + files):
        return
    for parent, dirs, files in os.walk(layer):
        target = os.path.normpath(os.path.join(twin, os.path.relpath(parent, layer)))
        st = os.lstat(parent)
        os.mkdir(target, st.st_mode & 0o7777)
        os.chown(target, st.st_uid, st.st_gid)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(parent, d))]:
            source = os.path.join(parent, name)
            if name == OPAQUE:
                os.setxattr(target, "trusted.overlay.opaque", b"y")
            elif name.startswith(WHITEOUT + WHITEOUT):
                continue                           # AUFS's own metadata
            elif name.startswith(WHITEOUT):
                os.mknod(os.path.join(target, name[len(WHITEOUT):]), stat.S_IFCHR | 0o600, 0)
            else:
                os.link(source, os.path.join(target, name), follow_symlinks=False)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(parent, d))]
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def is_mounted(path: str) -> bool:
    """Spec 5.3: a mount point has another device number than its parent."""
    try:
        return os.lstat(path).st_dev != os.lstat(os.path.join(path, "..")).st_dev
    except FileNotFoundError:
        return False


def mount_rootfs(graph: Graph, image_id: str, rw: str, work: str, target: str) -> None:
    """Mount the image's layers (top first) with `rw` on top at `target`."""
    layers = [os.path.relpath(graph.mount_layer(image.id), graph.root)
              for image in graph.parents(graph.get(image_id))]
    if is_mounted(target):
        raise RuntimeError(f"{target} is already mounted")
    for directory in (rw, work, target):
        os.makedirs(directory, 0o755, exist_ok=True)
    options = f"lowerdir={':'.join(layers)},upperdir={os.path.abspath(rw)},workdir={os.path.abspath(work)}"
    if len(options) > MAX_MOUNT_OPTIONS:
        raise RuntimeError(f"Image {image_id} has {len(layers)} layers: too many for one overlayfs mount")
    # Relative lower paths (from the graph directory) keep long histories under the page limit.
    result = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, target],
                            cwd=graph.root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Unable to mount {target}: {result.stderr.strip()}")


def unmount_rootfs(target: str) -> None:
    """Unmount, then remove the mount point (spec 5.3)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if is_mounted(target) and libc.umount2(target.encode(), 0) != 0:
        errno = ctypes.get_errno()
        if libc.umount2(target.encode(), 2) != 0:          # MNT_DETACH when busy
            raise OSError(errno, f"Umount: Failed to umount {target}: {os.strerror(errno)}")
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
