"""Deep trees and what a dead daemon leaves (issue 13), on a live daemon.

- A 1,500-level directory tree, made in a container (`mkdir -p abc/...;
  cd -P abc/...` in a loop) and imported from a tarball, is run, diffed,
  committed, exported, removed and its image deleted. Its paths (6,000
  bytes) are longer than PATH_MAX, and deeper than Python recurses: no
  `:rm-` or `:tmp:` leftover stays.
- A daemon killed with SIGKILL mid-rm, with such leftovers, starts again on
  that root and removes them.
- A daemon started on a root with a corrupt config.json, a record-less
  (half-removed) container, an unparsable image JSON and leftovers it cannot
  remove (an immutable file; a bind mount below, whose files stay) serves
  and lists the rest; what it could not use is in ROOT/quarantine/.
- walk_tree and remove_tree by themselves: past PATH_MAX, and refusing a
  tree with a mount below it.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import threading
import time

import pytest

from docker0_2013.utils import remove_tree, walk_tree
from netns import Daemon

DEPTH = 1500
NAME = "abc"
BOTTOM = "/".join([NAME] * DEPTH)
STEP = "/".join([NAME] * 50)           # 50 levels a `mkdir`: 1,500 forks took 15 s
GO_DOWN = f"i=0; while [ $i -lt {DEPTH // 50} ]; do cd -P {STEP} || exit 1; i=$((i+1)); done"
MAKE = f"i=0; while [ $i -lt {DEPTH // 50} ]; do mkdir -p {STEP} && cd -P {STEP} || exit 1; i=$((i+1)); done"


@pytest.fixture
def d(base_tar):
    """A daemon with `base`; teardown copes with a deep tree or a chattr +i file a failed test left."""
    daemon = Daemon()
    try:
        assert re.fullmatch(r"[0-9a-f]{12}\n", daemon.call("import", "-", "base", stdin=base_tar))
        yield daemon
    finally:
        daemon.destroy()
        if os.path.isdir(daemon.root):
            subprocess.run(["chattr", "-R", "-i", daemon.root], capture_output=True)
            remove_tree(daemon.root)


def deep_tarball(base_tar: bytes) -> bytes:
    """base plus the 1,500-level tree with a file at the bottom."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(base_tar)) as base, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in base:
            tar.addfile(member, base.extractfile(member) if member.isfile() else None)
        for depth in range(1, DEPTH + 1):
            info = tarfile.TarInfo("/".join([NAME] * depth))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(BOTTOM + "/file")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"bottom\n"))
    return out.getvalue()


def run(d: Daemon, image: str, script: str) -> tuple[str, str]:
    """Run `sh -c script` to its end: (container ID, its output)."""
    cid = d.call("run", "-d", image, "sh", "-c", script).strip()
    assert re.fullmatch(r"[0-9a-f]{12}", cid), cid
    assert d.call("wait", cid) == "0\n", d.call("logs", cid)
    return cid, d.call("logs", cid)


def no_leftovers(d: Daemon) -> None:
    assert [n for n in os.listdir(os.path.join(d.root, "containers")) if n.startswith(":")] == []
    assert os.listdir(os.path.join(d.root, "graph", ":tmp:")) == []
    assert not os.path.exists(os.path.join(d.root, "quarantine"))


def exported(d: Daemon, cid: str) -> dict[str, bytes | None]:
    """export's entries: name -> file contents (None for other kinds)."""
    data = d.raw(f'["export", "{cid}"]\n'.encode())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def test_a_deep_tree_made_in_a_container(d):
    maker, _ = run(d, "base", MAKE + "; echo bottom > file; rm /linuxrc")
    diff = d.call("diff", maker).splitlines()
    assert diff[:2] == ["A /" + NAME, "A /" + "/".join([NAME] * 2)]
    assert "D /linuxrc" in diff and f"A /{BOTTOM}/file" in diff and len(diff) == DEPTH + 2
    assert exported(d, maker)[f"./{BOTTOM}/file"] == b"bottom\n"

    image = d.call("commit", maker, "deep").strip()
    assert re.fullmatch(r"[0-9a-f]{12}", image)
    layer = os.path.join(d.root, "graph", d.call("inspect", "deep").split('"id": "')[1][:64])
    assert os.path.isdir(os.path.join(layer, "overlay"))         # the whiteout made it build a twin
    assert sum(1 for _ in walk_tree(os.path.join(layer, "overlay"))) >= DEPTH
    reader, out = run(d, "deep", GO_DOWN + "; cat file; ls /linuxrc 2>&1; true")
    assert out.startswith("bottom\n") and "No such file" in out

    for cid in (reader, maker):
        assert d.call("rm", cid) == ""
    assert d.call("rmi", "deep") == ""
    assert not os.path.exists(layer)
    assert d.call("ps", "-a", "-q") == ""
    no_leftovers(d)


def test_a_deep_tree_imported_from_a_tarball(d, base_tar):
    assert re.fullmatch(r"[0-9a-f]{12}\n", d.call("import", "-", "deepimp", stdin=deep_tarball(base_tar)))
    cid, out = run(d, "deepimp", GO_DOWN + "; cat file; echo new > new")
    assert out == "bottom\n"
    # overlay copied up all 1,500 directories; only the bottom one changed
    assert d.call("diff", cid) == f"C /{BOTTOM}\nA /{BOTTOM}/new\n"
    entries = exported(d, cid)
    assert entries[f"./{BOTTOM}/file"] == b"bottom\n" and entries[f"./{BOTTOM}/new"] == b"new\n"

    assert re.fullmatch(r"[0-9a-f]{12}\n", d.call("commit", cid, "deepnew"))
    again, out = run(d, "deepnew", GO_DOWN + "; cat file new")
    assert out == "bottom\nnew\n"
    for name in (again, cid):
        assert d.call("rm", name) == ""
    assert d.call("rmi", "deepnew") == ""
    assert d.call("rmi", "deepimp") == ""
    assert "deepimp" not in d.call("images")
    no_leftovers(d)


def make_deep(path: str) -> None:
    """A DEPTH-level tree at `path`, made one level at a time (the path is too long to name)."""
    os.makedirs(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir(NAME, dir_fd=fd)
            fd, parent = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
    finally:
        os.close(fd)


def test_a_killed_daemon_starts_again_on_deep_leftovers(d):
    cid, _ = run(d, "base", MAKE)
    def remove() -> None:
        with contextlib.suppress(OSError):  # the daemon dies under it
            d.call("rm", cid)
    remover = threading.Thread(target=remove)
    remover.start()
    time.sleep(0.2)
    d.kill(signal.SIGKILL)                  # by PID, most likely mid-rm
    remover.join()
    containers = os.path.join(d.root, "containers")
    for name in os.listdir(containers):
        if not name.startswith(":"):        # killed before rm's rename: leave what comes after it
            os.rename(os.path.join(containers, name), os.path.join(containers, ":rm-" + name))
    make_deep(os.path.join(d.root, "graph", ":tmp:", "rmi-x", "0" * 64, "layer"))   # killed mid-rmi
    make_deep(os.path.join(d.root, "graph", ":tmp:", "1" * 64, "layer"))            # mid-import
    d.start()
    assert d.call("ps", "-a", "-q") == ""
    assert "base" in d.call("images")
    no_leftovers(d)
    assert d.call("run", "base", "echo", "hi") == "hi\n"


def full_id(d: Daemon, short: str) -> str:
    return next(n for n in os.listdir(os.path.join(d.root, "containers")) if n.startswith(short))


def test_start_up_sets_aside_what_it_cannot_use(d, base_tar):
    keep, corrupt, recordless = (run(d, "base", "true")[0] for _ in range(3))
    junk = d.call("import", "-", "junk", stdin=base_tar).strip()
    keep, corrupt, recordless = (full_id(d, c) for c in (keep, corrupt, recordless))
    junk = next(n for n in os.listdir(os.path.join(d.root, "graph")) if n.startswith(junk))
    d.kill(signal.SIGKILL)
    root = d.root
    with open(os.path.join(root, "containers", corrupt, "config.json"), "w") as f:
        f.write('{"Id": "' + corrupt[:20])
    os.unlink(os.path.join(root, "containers", recordless, "config.json"))
    with open(os.path.join(root, "graph", junk, "json"), "w") as f:
        f.write("not json")
    stuck = os.path.join(root, "containers", ":rm-" + "2" * 64, "rw")
    os.makedirs(stuck)
    open(os.path.join(stuck, "immutable"), "w").close()
    subprocess.run(["chattr", "+i", os.path.join(stuck, "immutable")], check=True)
    outside = tempfile.mkdtemp(prefix="docker0-bind-")
    open(os.path.join(outside, "precious"), "w").close()
    mounted = os.path.join(root, "graph", ":tmp:", "rmi-y", "mnt")
    os.makedirs(mounted)
    subprocess.run(["mount", "--bind", outside, mounted], check=True)
    try:
        d.start()
        assert d.call("ps", "-a", "-q") == keep[:12] + "\n"
        images = d.call("images")
        assert "base" in images and "junk" not in images
        assert d.call("run", "base", "echo", "hi") == "hi\n"
        assert os.path.exists(os.path.join(outside, "precious"))       # a bind mount is not emptied
        aside = sorted(re.sub(r"^\d{8}T\d{6}-", "", n) for n in os.listdir(os.path.join(root, "quarantine")))
        assert aside == sorted([corrupt, recordless, ":rm-" + "2" * 64, junk, "rmi-y"])
        assert "Cannot use" in d.logs()
        assert os.listdir(os.path.join(root, "graph", ":tmp:")) == []
    finally:
        for parent, _, _ in os.walk(root):
            if os.path.basename(parent) == "mnt":
                subprocess.run(["umount", "-l", parent], capture_output=True)
        subprocess.run(["chattr", "-R", "-i", root], capture_output=True)
        remove_tree(outside)


def test_walk_and_remove_past_path_max(tmp_path):
    top = str(tmp_path / "top")
    make_deep(top)                                 # 6,000 bytes of path below top
    steps = [("/".join(parts), after) for _, parts, _, after in walk_tree(top, after=True)]
    assert len(steps) == 2 * DEPTH
    assert steps[:2] == [(NAME, False), (NAME + "/" + NAME, False)]
    assert steps[DEPTH - 1:DEPTH + 1] == [(BOTTOM, False), (BOTTOM, True)] and steps[-1] == (NAME, True)
    remove_tree(top)
    assert not os.path.exists(top)


def test_remove_tree_leaves_a_mount_below_alone(tmp_path):
    outside, mounted = tmp_path / "outside", tmp_path / "top" / "dir" / "mnt"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    mounted.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outside), str(mounted)], check=True)
    try:
        with pytest.raises(OSError, match="is mounted"):
            remove_tree(str(tmp_path / "top"))
        assert (outside / "precious").read_text() == "keep" and mounted.is_dir()
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=True)
    remove_tree(str(tmp_path / "top"))
    assert not (tmp_path / "top").exists() and (outside / "precious").exists()
