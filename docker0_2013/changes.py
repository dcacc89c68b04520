"""What a container changed: changes.go of 2013 (spec 7).

Walk the container's rw directory (an overlayfs upper dir) in lexical order,
parents first, and report each entry as A (added), C (changed) or D (deleted)
compared to the image's layers below it.

Changed since 2013: a deletion is an overlay whiteout (a 0/0 character
device) instead of an AUFS `.wh.` file, and its name is reported as it is;
2013 stripped every leading `.`, `w` and `h` from it (`.wh.hosts` gave
`D /etc/osts`, spec 10.4 item 7).
"""
from __future__ import annotations

import os
import stat

from .archive import OPAQUE, WHITEOUT, is_whiteout
from .graph import Graph


def lower_path(layers: list[str], path: str) -> str | None:
    """Where `path` (`/a/b`) lives in the image's layers (top first), or None if absent.

    A layer hides everything below it that it whites out: `.wh.<name>` for a
    name or one of its parents, or `.wh..wh..opq` in a parent directory.
    """
    parts = path.strip("/").split("/")
    for layer in layers:
        for depth in range(1, len(parts) + 1):
            parent = os.path.join(layer, *parts[:depth - 1])
            if os.path.lexists(os.path.join(parent, WHITEOUT + parts[depth - 1])):
                return None
        candidate = os.path.join(layer, *parts)
        if os.path.lexists(candidate):
            return candidate
        for depth in range(1, len(parts)):
            if os.path.lexists(os.path.join(layer, *parts[:depth], OPAQUE)):
                return None
    return None


def changes(graph: Graph, image_id: str, rw: str) -> list[tuple[str, str]]:
    layers = [graph.layer_path(image.id) for image in graph.parents(graph.get(image_id))]
    found = []
    for parent, dirs, files in os.walk(rw):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(parent, name)
            path = "/" + os.path.relpath(full, rw)
            st = os.lstat(full)
            below = lower_path(layers, path)
            if is_whiteout(st):
                if below is not None:
                    found.append(("D", path))
                continue
            if below is None:
                found.append(("A", path))
            elif not (stat.S_ISDIR(st.st_mode) and unchanged_dir(st, os.lstat(below))):
                found.append(("C", path))
    return found


def unchanged_dir(upper: os.stat_result, lower: os.stat_result) -> bool:
    """A directory overlayfs copied up only because something inside it changed."""
    return (stat.S_ISDIR(lower.st_mode) and upper.st_mode == lower.st_mode
            and upper.st_mtime_ns == lower.st_mtime_ns)
