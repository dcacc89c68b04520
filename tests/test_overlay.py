"""Layers on overlayfs: AUFS-style whiteouts in stored layers, mounts, diff and commit
(issue: images). Real overlay mounts, undone even when a test fails."""
from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from docker0_2013.archive import tar_layer, untar
from docker0_2013.changes import changes
from docker0_2013.graph import MAX_LAYERS, Graph, is_mounted, mount_rootfs, unmount_rootfs
from test_archive import listing, member, tar_of

LAYER1 = tar_of(member("etc", "dir"), member("etc/hostname", data=b"base\n"),
                member("etc/hosts", data=b"127.0.0.1 localhost\n"), member("etc/motd", data=b"one\n"),
                member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n"),
                member("var", "dir"), member("var/cache", "dir"), member("var/cache/a", data=b"a"),
                member("var/cache/b", data=b"b"), member("opt", "dir"), member("opt/tool", data=b"tool"),
                member("opt/keep", "dir"), member("opt/keep/x", data=b"x"),
                member("data", "dir"), member("data/old", data=b"old"))
LAYER2 = tar_of(member("etc", "dir"), member("etc/.wh.hostname"), member("etc/motd", data=b"two\n"),
                member("var", "dir"), member("var/cache", "dir"), member("var/cache/.wh..wh..opq"),
                member("var/cache/c", data=b"c"), member(".wh.opt"), member("new", data=b"added in 2\n"),
                member(".wh..wh.aufs"), member(".wh..wh.plnk", "dir"), member(".wh..wh.orph", "dir"))
LAYER3 = tar_of(member("etc", "dir"), member("etc/.wh.motd"), member("etc/.wh.hosts"),
                member("opt", "dir"), member("opt/tool", data=b"reborn"))


@pytest.fixture
def graph(tmp_path):
    """A graph, and the mount points made below it, which are unmounted at the end."""
    g = Graph(str(tmp_path / "graph"))
    try:
        yield g
    finally:
        for target in MOUNTED:
            if is_mounted(target):
                unmount_rootfs(target)
        MOUNTED.clear()


MOUNTED: list[str] = []


def add_layer(graph: Graph, data: bytes, parent: str = "") -> str:
    return graph.create(lambda layer: untar(io.BytesIO(data), layer), parent=parent).id


def mount(graph: Graph, image_id: str, where: str) -> str:
    target = os.path.join(where, "rootfs")
    MOUNTED.append(target)
    mount_rootfs(graph, image_id, os.path.join(where, "rw"), os.path.join(where, "rw-work"), target)
    return target


def tree(root: str) -> dict[str, str]:
    """path -> file content (or "dir"), as a container sees the root."""
    found = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(parent, name), root)] = "dir"
        for name in files:
            with open(os.path.join(parent, name), "rb") as f:
                found[os.path.relpath(os.path.join(parent, name), root)] = f.read().decode()
    return found


def three_layers(graph: Graph) -> str:
    return add_layer(graph, LAYER3, add_layer(graph, LAYER2, add_layer(graph, LAYER1)))


EXPECTED = {"etc": "dir", "etc/passwd": "root:x:0:0::/:/bin/sh\n", "var": "dir", "var/cache": "dir",
            "var/cache/c": "c", "opt": "dir", "opt/tool": "reborn", "data": "dir", "data/old": "old",
            "new": "added in 2\n"}


def test_three_layers_show_files_overrides_and_deletions(graph, tmp_path):
    top = three_layers(graph)
    # The stored layers keep the AUFS files; only the mount twin has overlay whiteouts.
    middle = graph.get(top).parent
    assert sorted(os.listdir(graph.layer_path(middle))) == [".wh..wh.aufs", ".wh..wh.orph", ".wh..wh.plnk",
                                                             ".wh.opt", "etc", "new", "var"]
    twin = graph.mount_layer(middle)
    assert twin != graph.layer_path(middle)
    assert stat.S_ISCHR(os.lstat(os.path.join(twin, "opt")).st_mode)
    assert os.getxattr(os.path.join(twin, "var", "cache"), "trusted.overlay.opaque") == b"y"
    root = mount(graph, top, str(tmp_path / "c1"))
    assert is_mounted(root)
    assert tree(root) == EXPECTED
    unmount_rootfs(root)
    assert not is_mounted(root) and not os.path.exists(root)


def test_diff_and_commit_round_trip(graph, tmp_path):
    top = three_layers(graph)
    root = mount(graph, top, str(tmp_path / "c1"))
    with open(os.path.join(root, "etc", "passwd"), "a") as f:
        f.write("daemon:x:1:1::/:/bin/false\n")
    with open(os.path.join(root, "new2"), "w") as f:
        f.write("fresh")
    os.unlink(os.path.join(root, "data", "old"))
    os.unlink(os.path.join(root, "var", "cache", "c"))
    os.rmdir(os.path.join(root, "var", "cache"))
    os.mkdir(os.path.join(root, "var", "cache"))
    with open(os.path.join(root, "var", "cache", "d"), "w") as f:
        f.write("d")
    os.chown(os.path.join(root, "opt"), 5, 5)
    os.unlink(os.path.join(root, "new"))
    with open(os.path.join(root, "etc", "hosts"), "w") as f:     # deleted in layer 3, made again
        f.write("again")
    rw = str(tmp_path / "c1" / "rw")
    assert changes(graph, top, rw) == [
        ("C", "/data"), ("D", "/data/old"), ("C", "/etc"), ("A", "/etc/hosts"), ("C", "/etc/passwd"),
        ("D", "/new"), ("A", "/new2"), ("C", "/opt"), ("C", "/var"), ("C", "/var/cache"),
        ("D", "/var/cache/c"), ("A", "/var/cache/d")]
    seen = tree(root)
    # Commit: the rw layer as an AUFS-style tarball, registered on top, then mounted afresh.
    out = io.BytesIO()
    tar_layer(rw, out)
    names = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames()
    assert {"./data/.wh.old", "./.wh.new", "./var/cache/.wh..wh..opq"} <= set(names)
    committed = add_layer(graph, out.getvalue(), top)
    unmount_rootfs(root)
    root2 = mount(graph, committed, str(tmp_path / "c2"))
    assert tree(root2) == seen
    assert [row[:7] for row in listing(root2)[1:]] == [row[:7] for row in listing(root_view(graph, top, rw, tmp_path))[1:]]
    assert os.stat(os.path.join(root2, "opt")).st_uid == 5
    assert changes(graph, committed, str(tmp_path / "c2" / "rw")) == []


def root_view(graph: Graph, image_id: str, rw: str, tmp_path) -> str:
    """The first container's root again (its rw on the old image), to compare metadata."""
    target = str(tmp_path / "again" / "rootfs")
    MOUNTED.append(target)
    mount_rootfs(graph, image_id, rw, str(tmp_path / "again" / "work"), target)
    return target


def test_layers_up_to_the_overlay_limit(graph, tmp_path):
    image = add_layer(graph, tar_of(member("bottom", data=b"first layer")))
    for i in range(1, MAX_LAYERS):
        image = graph.create(lambda layer: None, parent=image).id
    root = mount(graph, image, str(tmp_path / "deep"))
    assert open(os.path.join(root, "bottom")).read() == "first layer"
    unmount_rootfs(root)
    image = graph.create(lambda layer: None, parent=image).id
    with pytest.raises(RuntimeError, match=f"has {MAX_LAYERS + 1} layers; overlayfs can stack at most {MAX_LAYERS}"):
        mount(graph, image, str(tmp_path / "deeper"))
    assert not is_mounted(str(tmp_path / "deeper" / "rootfs"))


def test_paths_that_overlayfs_would_split_go_through_links(tmp_path):
    """A root with `,` or `:` in its path cannot be written into the mount options as is."""
    graph = Graph(str(tmp_path / "a,b:c" / "graph"))
    image = add_layer(graph, tar_of(member("bottom", data=b"first layer")))
    try:
        root = mount(graph, image, str(tmp_path / "a,b:c" / "c"))
        assert open(os.path.join(root, "bottom")).read() == "first layer"
    finally:
        unmount_rootfs(str(tmp_path / "a,b:c" / "c" / "rootfs"))


def test_mount_errors(graph, tmp_path):
    image = add_layer(graph, LAYER1)
    root = mount(graph, image, str(tmp_path / "c"))
    with pytest.raises(RuntimeError, match="is already mounted"):
        mount_rootfs(graph, image, str(tmp_path / "c" / "rw"), str(tmp_path / "c" / "rw-work"), root)
    orphan = graph.create(lambda layer: None, parent="f" * 64).id
    with pytest.raises(LookupError, match="Error while getting parent image: No such id: f{64}"):
        mount(graph, orphan, str(tmp_path / "o"))
