"""What a container changed: changes.go of 2013 (spec 7).

Walk the container's rw directory (an overlayfs upper dir) in lexical order,
parents first, and report each entry as A (added), C (changed) or D
(deleted) compared to the image's layers below it. The layers are read as
stored, AUFS style: `.wh.<name>` hides a name of the layers below, and
`.wh..wh..opq` hides everything below in its directory.

Changed since 2013:
- a deletion in rw is an overlay whiteout (a 0/0 character device) instead
  of an AUFS `.wh.` file, and its name is reported as it is: 2013 stripped
  every leading `.`, `w` and `h` (`.wh.hosts` gave `D /etc/osts`, spec 10.4
  item 7). A whiteout of a name the layers do not have is not reported;
- a directory that was deleted and made again (overlay marks it opaque)
  also reports the entries of the old one that are gone, as `D`, and
  everything in it is compared with what the image had;
- "is it in the image?" looks the path up through the layers the way the
  mount shows them (whiteouts, opaque directories, and a file in an upper
  layer that hides a directory of a lower one), without following symlinks:
  2013 followed them, on the host;
- an untouched directory (one overlay copied up because something inside
  changed) is recognised by its mode, owner and modification time; 2013
  also compared the size, which differs between file systems, and ignored
  the owner.
"""
from __future__ import annotations

import os
import stat
from typing import Iterator

from .archive import OPAQUE, WHITEOUT, is_opaque, is_whiteout
from .graph import Graph


def changes(graph: Graph, image_id: str, rw: str) -> list[tuple[str, str]]:
    """[(kind, "/path")] in walk order; kind is "A", "C" or "D"."""
    layers = [graph.layer_path(image.id) for image in graph.parents(graph.get(image_id))]
    found: list[tuple[str, str]] = []
    pending = [compare_directory(layers, rw, [], False)]    # a stack, not recursion: rw can be deep
    while pending:
        for kind, path, subdirectory in pending[-1]:
            if kind:
                found.append((kind, path))
            if subdirectory:
                pending.append(compare_directory(layers, *subdirectory))
                break
        else:
            pending.pop()
    return found


def compare_directory(layers: list[str], directory: str, parts: list[str], opaque: bool) -> Iterator[
        tuple[str, str, tuple[str, list[str], bool] | None]]:
    """(kind or "", path, the subdirectory to compare next or None) for each name, sorted."""
    with os.scandir(directory) as it:
        entries = {e.name: (e.path, e.stat(follow_symlinks=False)) for e in it}
    names = set(entries)
    if opaque:               # the names of the old directory are gone unless made again
        names |= set(lower_names(layers, parts))
    for name in sorted(names, key=os.fsencode):
        path = "/" + "/".join(parts + [name])
        below = lookup(layers, parts + [name])
        if name not in entries:
            yield "D", path, None
            continue
        full, st = entries[name]
        if is_whiteout(st):
            yield ("D" if below is not None else ""), path, None
            continue
        if below is None:
            kind = "A"
        elif stat.S_ISDIR(st.st_mode) and unchanged_directory(st, os.lstat(below)):
            kind = ""
        else:
            kind = "C"
        inside = (full, parts + [name], opaque or is_opaque(full)) if stat.S_ISDIR(st.st_mode) else None
        yield kind, path, inside


def lookup(layers: list[str], parts: list[str]) -> str | None:
    """Where the image (layers top first) has `/parts...`, or None if it does not."""
    for layer in layers:
        directory = layer
        for depth, part in enumerate(parts):
            if os.path.lexists(os.path.join(directory, WHITEOUT + part)):
                return None                    # deleted in this layer
            candidate = os.path.join(directory, part)
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                if os.path.lexists(os.path.join(directory, OPAQUE)):
                    return None                # this directory hides the layers below
                break                          # not in this layer: try the next one
            if depth == len(parts) - 1:
                return candidate
            if not stat.S_ISDIR(st.st_mode):
                return None                    # a file hides a directory below it
            directory = candidate
    return None


def lower_names(layers: list[str], parts: list[str]) -> list[str]:
    """The names the image has in directory `/parts...`."""
    candidates: set[str] = set()
    for layer in layers:
        try:
            candidates.update(os.listdir(os.path.join(layer, *parts)))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return [name for name in candidates
            if not name.startswith(WHITEOUT) and lookup(layers, parts + [name]) is not None]


def unchanged_directory(upper: os.stat_result, lower: os.stat_result) -> bool:
    """A directory overlay copied up only because something inside it changed."""
    return (stat.S_ISDIR(lower.st_mode) and upper.st_mode == lower.st_mode
            and upper.st_uid == lower.st_uid and upper.st_gid == lower.st_gid
            and upper.st_mtime_ns == lower.st_mtime_ns)
