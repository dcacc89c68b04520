"""What a container changed: changes.go of 2013 (spec 7).

Walk the container's rw directory (an overlayfs upper dir) in lexical order,
parents first, and report each entry as A (added), C (changed) or D
(deleted) compared to the image's layers below it, read as stored: AUFS
style, `.wh.<name>` hides a name below and `.wh..wh..opq` a whole directory.

Changed since 2013:
- a deletion is an overlay whiteout (a 0/0 character device), and its name is
  reported as it is (2013 turned `.wh.hosts` into `D /etc/osts`, spec 10.4);
- a directory deleted and made again (opaque) also reports what is gone from it;
- "is it in the image?" is answered through the layers as the mount shows
  them, without following symlinks (2013 followed them, on the host);
- an untouched directory is recognised by mode, owner and mtime, not size;
- rw is walked by directory fd, so a tree deeper than PATH_MAX is diffed too.
"""
from __future__ import annotations

import os
import stat

from .archive import OPAQUE, WHITEOUT, is_opaque, is_whiteout
from .graph import Graph
from .utils import Mirror, fd_path, walk_tree


def changes(graph: Graph, image_id: str, rw: str) -> list[tuple[str, str]]:
    """[(kind, "/path")] in walk order; kind is "A", "C" or "D".

    The layers are followed down and up with the walk of rw (one Mirror
    each), so no path is built and rw may be as deep as the kernel allows.
    """
    layers = [Mirror(graph.layer_path(image.id)) for image in graph.parents(graph.get(image_id))]
    found: list[tuple[str, str]] = []
    top = list(range(len(layers)))
    for i in top:
        if os.path.lexists(fd_path(layers[i].fd, OPAQUE)):
            top = top[:i + 1]
            break
    levels = [(top, False)]         # for each directory walked: the layers that show it, opaque?
    gone = False
    try:
        for fd, parts, st, after in walk_tree(rw, after=True):
            if after:
                levels.pop()
                for layer in layers:
                    layer.up()
                continue
            visible, opaque = levels[-1]
            name, path = parts[-1], "/" + "/".join(parts)
            below, inside = lookup(layers, visible, name)
            if is_whiteout(st):
                if below is not None:
                    found.append(("D", path))
                continue
            if below is None:
                found.append(("A", path))
            elif not (stat.S_ISDIR(st.st_mode) and unchanged_directory(st, below)):
                found.append(("C", path))
            if stat.S_ISDIR(st.st_mode):
                for layer in layers:
                    layer.down(name)
                opaque = opaque or is_opaque(fd_path(fd, name))
                levels.append((inside, opaque))
                if opaque:          # the names of the old directory are gone unless made again
                    names = set(lower_names(layers, inside)) - set(os.listdir(fd_path(fd, name)))
                    found.extend(("D", f"{path}/{n}") for n in names)
                    gone = gone or bool(names)
    finally:
        for layer in layers:
            layer.close()
    if gone:                        # back into walk order: parents first, names sorted by bytes
        found.sort(key=lambda change: [os.fsencode(p) for p in change[1].split("/")])
    return found


def lookup(layers: list[Mirror], visible: list[int], name: str) -> tuple[os.stat_result | None, list[int]]:
    """What the image has at `name` in the directory the walk is in (the lstat of it, or
    None), and which layers (top first) show what is inside it, if it is a directory."""
    found, inside = None, []
    for i in visible:
        fd = layers[i].fd
        if os.path.lexists(fd_path(fd, WHITEOUT + name)):
            break                              # deleted in this layer
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue                           # not in this layer: try the next one
        if found is None:
            found = st
        if not stat.S_ISDIR(st.st_mode):
            break                              # a file hides a directory below it
        inside.append(i)
        if os.path.lexists(fd_path(fd, f"{name}/{OPAQUE}")):
            break                              # this directory hides the layers below
    return found, inside


def lower_names(layers: list[Mirror], visible: list[int]) -> list[str]:
    """The names the image has in the directory the walk is in."""
    candidates: set[str] = set()
    for i in visible:
        candidates.update(os.listdir(layers[i].fd))
    return [name for name in candidates
            if not name.startswith(WHITEOUT) and lookup(layers, visible, name)[0] is not None]


def unchanged_directory(upper: os.stat_result, lower: os.stat_result) -> bool:
    """A directory overlay copied up only because something inside it changed."""
    return (stat.S_ISDIR(lower.st_mode) and upper.st_mode == lower.st_mode
            and upper.st_uid == lower.st_uid and upper.st_gid == lower.st_gid
            and upper.st_mtime_ns == lower.st_mtime_ns)
