"""changes.py: what `diff` reports for an overlay upper dir over AUFS-style layers
(issue: images). The upper dirs are built by hand the way overlayfs writes them."""
from __future__ import annotations

import io
import os
import stat

import pytest

from docker0_2013.archive import untar
from docker0_2013.changes import changes
from docker0_2013.graph import Graph
from test_archive import member, tar_of


@pytest.fixture
def graph(tmp_path):
    return Graph(str(tmp_path / "graph"))


def image(graph: Graph, *layers: bytes) -> str:
    parent = ""
    for data in layers:
        parent = graph.create(lambda layer, data=data: untar(io.BytesIO(data), layer), parent=parent).id
    return parent


def copy_up(graph: Graph, image_id: str, rw: str, path: str) -> str:
    """A directory as overlay copies it up: same mode, owner and times as below."""
    below = os.path.join(graph.layer_path(image_id), path)
    st = os.lstat(below)
    target = os.path.join(rw, path)
    os.makedirs(target, exist_ok=True)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    os.chown(target, st.st_uid, st.st_gid)
    return target


def touch_times(rw: str, path: str, graph: Graph, image_id: str) -> None:
    st = os.lstat(os.path.join(graph.layer_path(image_id), path))
    os.utime(os.path.join(rw, path), ns=(st.st_atime_ns, st.st_mtime_ns))


def whiteout(rw: str, path: str) -> None:
    os.mknod(os.path.join(rw, path), stat.S_IFCHR, 0)


def test_deleted_names_are_not_mangled(graph, tmp_path):
    base = image(graph, tar_of(member("etc", "dir"), member("etc/hosts"), member("etc/www"),
                               member("etc/.bashrc"), member("etc/hostname")))
    rw = str(tmp_path / "rw")
    copy_up(graph, base, rw, "etc")
    for name in ("hosts", "www", ".bashrc", "never-existed"):
        whiteout(rw, f"etc/{name}")
    # 2013 printed D /etc/osts, D /etc/ and D /etc/bashrc, and D /etc/never-existed.
    assert changes(graph, base, rw) == [("C", "/etc"), ("D", "/etc/.bashrc"), ("D", "/etc/hosts"),
                                        ("D", "/etc/www")]


def test_untouched_copied_up_directory_is_not_reported(graph, tmp_path):
    base = image(graph, tar_of(member("a", "dir"), member("a/b", "dir"), member("a/b/file", data=b"1"),
                               member("c", "dir", mode=0o755)))
    rw = str(tmp_path / "rw")
    copy_up(graph, base, rw, "a/b")
    with open(os.path.join(rw, "a", "b", "file"), "w") as f:
        f.write("2")
    touch_times(rw, "a/b", graph, base)
    touch_times(rw, "a", graph, base)
    copy_up(graph, base, rw, "c")
    touch_times(rw, "c", graph, base)
    os.chown(os.path.join(rw, "c"), 1, 1)                   # 2013 did not see an owner change
    assert changes(graph, base, rw) == [("C", "/a/b/file"), ("C", "/c")]


def test_deletions_and_opaque_directories_in_lower_layers(graph, tmp_path):
    base = image(graph,
                 tar_of(member("x", data=b"x"), member("o", "dir"), member("o/old", data=b"old"),
                        member("d", "dir"), member("d/y", data=b"y"), member("keep", data=b"k")),
                 tar_of(member(".wh.x"), member("o", "dir"), member("o/.wh..wh..opq"), member("o/new"),
                        member("d", data=b"now a file")))
    rw = str(tmp_path / "rw")
    for name in ("x", "o/old", "o/new", "keep"):
        os.makedirs(os.path.dirname(os.path.join(rw, name)) or rw, exist_ok=True)
        with open(os.path.join(rw, name), "w") as f:
            f.write("upper")
    copy_up(graph, base, rw, "o")
    touch_times(rw, "o", graph, base)
    os.makedirs(os.path.join(rw, "d"))                      # a directory where the image has a file
    with open(os.path.join(rw, "d", "y"), "w") as f:
        f.write("upper")
    assert changes(graph, base, rw) == [("C", "/d"), ("A", "/d/y"), ("C", "/keep"), ("C", "/o/new"),
                                        ("A", "/o/old"), ("A", "/x")]


def test_recreated_directory_reports_what_it_lost(graph, tmp_path):
    base = image(graph, tar_of(member("var", "dir"), member("var/cache", "dir"), member("var/cache/a"),
                               member("var/cache/b"), member("var/cache/sub", "dir"), member("var/cache/sub/c")))
    rw = str(tmp_path / "rw")
    copy_up(graph, base, rw, "var")
    os.makedirs(os.path.join(rw, "var", "cache", "sub"))
    os.setxattr(os.path.join(rw, "var", "cache"), "trusted.overlay.opaque", b"y")
    for name in ("var/cache/b", "var/cache/new", "var/cache/sub/d"):
        open(os.path.join(rw, name), "w").close()
    assert changes(graph, base, rw) == [
        ("C", "/var"), ("C", "/var/cache"), ("D", "/var/cache/a"), ("C", "/var/cache/b"),
        ("A", "/var/cache/new"), ("C", "/var/cache/sub"), ("D", "/var/cache/sub/c"), ("A", "/var/cache/sub/d")]


def test_symlinks_in_layers_are_not_followed_on_the_host(graph, tmp_path):
    base = image(graph, tar_of(member("etc", "symlink", link="/etc"), member("lib", "symlink", link="usr/lib")))
    rw = str(tmp_path / "rw")
    os.makedirs(os.path.join(rw, "etc"))
    open(os.path.join(rw, "etc", "passwd"), "w").close()     # the host's /etc/passwd exists
    assert changes(graph, base, rw) == [("C", "/etc"), ("A", "/etc/passwd")]


def test_deep_rw_tree(graph, tmp_path):
    base = image(graph, tar_of(member("etc", "dir")))
    rw = str(tmp_path / "rw")
    paths = [os.path.join(rw, *["d"] * depth) for depth in range(1, 1201)]   # deeper than Python recurses
    os.makedirs(rw)
    for path in paths:
        os.mkdir(path)
    try:
        found = changes(graph, base, rw)
        assert len(found) == 1200 and found[-1] == ("A", "/d" * 1200)
    finally:
        for path in reversed(paths):                        # shutil.rmtree would recurse too
            os.rmdir(path)


def test_missing_rw_and_missing_parent(graph, tmp_path):
    base = image(graph, tar_of(member("etc", "dir")))
    with pytest.raises(FileNotFoundError):
        changes(graph, base, str(tmp_path / "nope"))
    orphan = graph.create(lambda layer: None, parent="0" * 64).id
    with pytest.raises(LookupError, match="Error while getting parent image"):
        changes(graph, orphan, str(tmp_path))
