"""Images through the real daemon: import from stdin and from a URL, images, history,
tag, rmi, inspect, name lookup, hostile archives, and a daemon killed during an
import (issue: images). Pure untar cases are in test_archive.py, overlay mounts
of stored layers in test_overlay.py."""
from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time

import pytest

from docker0_2013.archive import untar
from docker0_2013.graph import Graph
from docker0_2013.tags import TagStore
from docker0_2013.utils import format_time
from helpers import daemon_fds, settled_fds
from netns import PYTHON, REPO, Daemon
from test_archive import hostile_archives, listing, make_tree, member, tar_of

SHORT = re.compile(r"[0-9a-f]{12}\n")


def ago(**delta: float) -> str:
    return format_time(dt.datetime.now().astimezone() - dt.timedelta(**delta))


def full_id(d: Daemon, short: str) -> str:
    [found] = [n for n in os.listdir(os.path.join(d.root, "graph")) if n.startswith(short.strip())]
    return found


def layer_of(d: Daemon, short: str) -> str:
    return os.path.join(d.root, "graph", full_id(d, short), "layer")


def record_of(d: Daemon, short: str) -> dict:
    with open(os.path.join(d.root, "graph", full_id(d, short), "json"), "rb") as f:
        return json.loads(f.read())


def repositories(d: Daemon) -> dict:
    with open(os.path.join(d.root, "repositories"), "rb") as f:
        return json.loads(f.read())["Repositories"]


def gnu_tar(directory: str) -> bytes:
    return subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", directory,
                           "-cf", "-", "."], check=True, capture_output=True).stdout


def table(*rows: tuple[str, ...]) -> str:
    """What Go's tabwriter (min width 20, padding 3) prints for these rows."""
    widths = [max([20] + [len(row[i]) + 3 for row in rows]) for i in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(w) for cell, w in zip(row, widths)) + row[-1] + "\n" for row in rows)


# -- import ---------------------------------------------------------------------------------


def test_import_from_stdin_keeps_every_attribute(daemon, tmp_path):
    """Modes (setuid, sticky, setgid), owners, symlinks, hard links, device nodes, FIFOs,
    xattrs and times of a `tar` archive reach the layer unchanged."""
    src = str(tmp_path / "src")
    make_tree(src)
    out = daemon.call("import", "-", "kept", "v1", stdin=gnu_tar(src))
    assert SHORT.fullmatch(out), out
    layer = layer_of(daemon, out)
    assert listing(layer) == listing(src)
    assert stat.S_IMODE(os.stat(os.path.join(layer, "bin", "tool")).st_mode) == 0o4755
    assert stat.S_ISCHR(os.lstat(os.path.join(layer, "dev", "null")).st_mode)
    assert os.lstat(os.path.join(layer, "dev", "null")).st_rdev == os.makedev(1, 3)
    assert os.readlink(os.path.join(layer, "bin", "absolute")) == "/bin/tool"
    image_dir = os.path.dirname(layer)
    assert sorted(os.listdir(image_dir)) == ["json", "layer"]          # no whiteouts: no overlay twin
    assert stat.S_IMODE(os.stat(os.path.join(image_dir, "json")).st_mode) == 0o600
    record = record_of(daemon, out)
    assert list(record) == ["id", "comment", "created", "container_config", "docker_version"]
    assert record["id"] == full_id(daemon, out) and re.fullmatch(r"[0-9a-f]{64}", record["id"])
    assert record["comment"] == "Imported from -" and record["docker_version"] == "0.1.3"
    assert record["container_config"] == {
        "Hostname": "", "User": "", "Memory": 0, "MemorySwap": 0, "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "PortSpecs": None, "Tty": False,
        "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None, "Image": ""}
    assert repositories(daemon) == {"kept": {"v1": record["id"]}}
    with open(os.path.join(daemon.root, "repositories"), "rb") as f:
        assert f.read() == b'{"Repositories":{"kept":{"v1":"%s"}}}' % record["id"].encode()
    assert os.listdir(os.path.join(daemon.root, "graph", ":tmp:")) == []
    assert daemon.call("info").endswith("images: 1\n")


def test_import_compressions_and_empty_input(daemon, base_tar, tmp_path):
    plain = daemon.call("import", "-", "plain", stdin=base_tar)
    expected = listing(layer_of(daemon, plain))
    assert any(row[0] == "bin/busybox" for row in expected)
    for name, data in [("gz", gzip.compress(base_tar)), ("bz2", bz2.compress(base_tar)),
                       ("xz", lzma.compress(base_tar))]:
        out = daemon.call("import", "-", name, stdin=data)
        assert SHORT.fullmatch(out), (name, out)
        assert listing(layer_of(daemon, out)) == expected, name
    empty = daemon.call("import", "-", "empty", stdin=b"")
    assert SHORT.fullmatch(empty), empty
    assert os.listdir(layer_of(daemon, empty)) == []
    assert sorted(repositories(daemon)) == ["bz2", "empty", "gz", "plain", "xz"]
    assert daemon.call("import") == "Error: Not enough arguments\n"
    assert daemon.call("help", "import") == "\nUsage: docker import [OPTIONS] URL|- [REPOSITORY [TAG]]\n\n" \
        "Create a new filesystem image from the contents of a tarball\n\n"
    assert daemon.call("import", "-", "bad:name", stdin=b"") == "Error: Illegal repository name: bad:name\n"


@pytest.fixture
def web(daemon, base_tar):
    """`python3 -m http.server` on 127.0.0.1:8765 inside the daemon's namespace."""
    served = tempfile.mkdtemp(prefix="docker0-web-")
    with open(os.path.join(served, "base.tar"), "wb") as f:
        f.write(base_tar)
    with open(os.path.join(served, "base.tar.xz"), "wb") as f:
        f.write(lzma.compress(base_tar))
    server = daemon.netns.popen(PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory", served,
                                "8765", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        daemon.netns.wait_listening(("127.0.0.1", 8765))
        yield "127.0.0.1:8765"
    finally:
        server.kill()                   # `ip netns exec` execs the server: this is its PID
        server.wait(10)
        shutil.rmtree(served)


def test_import_from_url(daemon, web, base_tar):
    out = daemon.call("import", f"http://{web}/base.tar", "web", "v1")
    head, _, rest = out.partition("\n")
    assert head == f"Downloading from http://{web}/base.tar"
    progress, short = rest[:-13], rest[-13:]
    assert SHORT.fullmatch(short) and progress.endswith("\r\n"), out
    # Appendix E: `P/T (pct%)\r` as the body is read, the last one twice (data, then EOF), then `\n`.
    total = len(base_tar)
    reports = progress[:-2].split("\r")
    for report in reports:
        assert re.fullmatch(rf"\d+/{total} \(\d+%\)", report), out
    assert reports[-2:] == [f"{total}/{total} (100%)"] * 2 and len(reports) >= 3
    done = [int(r.split("/")[0]) for r in reports]
    assert done == sorted(done)
    assert record_of(daemon, short)["comment"] == f"Imported from http://{web}/base.tar"
    stdin_image = daemon.call("import", "-", stdin=base_tar)
    assert listing(layer_of(daemon, short)) == listing(layer_of(daemon, stdin_image))
    # No scheme: http:// is put in front of what was typed (spec 3.8); compression is detected.
    out = daemon.call("import", f"{web}/base.tar.xz")
    assert out.startswith(f"Downloading from http://{web}/base.tar.xz\n") and SHORT.fullmatch(out[-13:])
    assert record_of(daemon, out[-13:])["comment"] == f"Imported from {web}/base.tar.xz"
    before = sorted(os.listdir(os.path.join(daemon.root, "graph")))
    # The server's own status line, as Go's resp.Status (http.server says "File not found").
    assert daemon.call("import", f"http://{web}/missing.tar", "web", "v2") == (
        f"Downloading from http://{web}/missing.tar\nError: Got HTTP status code >= 400: 404 File not found\n")
    out = daemon.call("import", "http://127.0.0.1:1/refused.tar")
    assert out.startswith("Downloading from http://127.0.0.1:1/refused.tar\nError: ") and "refused" in out
    assert sorted(os.listdir(os.path.join(daemon.root, "graph"))) == before
    assert repositories(daemon) == {"web": {"v1": full_id(daemon, short)}}


# -- images, history, tag, rmi, inspect on a prepared graph ---------------------------------

R, A, B = "abcdef01" + "0" * 56, "abcdef02" + "1" * 56, "b0" + "2" * 62
LONE, ORPHAN = "c0" + "3" * 62, "d0" + "4" * 62
LAYER_A = tar_of(member("etc", "dir"), member("etc/motd", data=b"from A\n"), member("etc/.wh.hostname"),
                 member("var", "dir"), member("var/log", "dir"), member("var/log/old", data=b"old\n"),
                 member("a", data=b"layer A\n"), member("home", "dir"), member("home/user", "dir"))
LAYER_B = tar_of(member("a", data=b"layer B\n"), member(".wh.home"), member("var", "dir"),
                 member("var/log", "dir"), member("var/log/.wh..wh..opq"), member("var/log/new", data=b"B\n"))


@pytest.fixture
def chain(base_tar):
    """A daemon whose root already holds R <- A <- B (B tagged twice), an untagged
    image and one whose parent is missing; made with Graph before the daemon starts."""
    root = tempfile.mkdtemp(prefix="docker0-test-")
    graph = Graph(os.path.join(root, "graph"))

    def add(image_id: str, data: bytes, parent: str, created: str, cmd: list[str] | None) -> None:
        graph.create(lambda layer: untar(io.BytesIO(data), layer), image_id=image_id, parent=parent,
                     created=created, comment="made by the test", container_config={"Cmd": cmd})
    add(R, base_tar, "", ago(weeks=3, hours=1), None)
    add(A, LAYER_A, R, ago(days=5, hours=1), ["sh", "-c", "echo a > /a"])
    add(B, LAYER_B, A, ago(hours=2, minutes=10), ["touch", "/b"])
    add(LONE, b"", "", ago(minutes=30, seconds=10), None)
    add(ORPHAN, b"", "f" * 64, ago(days=4, hours=1), None)
    tags = TagStore(os.path.join(root, "repositories"), graph)
    tags.set("chain", "latest", B)
    tags.set("chain", "v1", B)
    daemon = Daemon(root=root)
    try:
        yield daemon
    finally:
        daemon.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_images_table(chain):
    # Without -a: tagged images, then untagged ones that are nobody's parent, newest first.
    # A (R's child, B's parent) and R stay hidden; 2013 showed A (spec 6.9).
    assert chain.call("images") == table(
        ("REPOSITORY", "TAG", "ID", "CREATED", "PARENT"),
        ("chain", "latest", B[:12], "2 hours ago", A[:12]),
        ("chain", "v1", B[:12], "2 hours ago", A[:12]),
        ("<none>", "<none>", LONE[:12], "30 minutes ago", ""),
        ("<none>", "<none>", ORPHAN[:12], "4 days ago", "f" * 12))
    assert chain.call("images", "-a").splitlines()[3:] == table(
        ("<none>", "<none>", LONE[:12], "30 minutes ago", ""),
        ("<none>", "<none>", ORPHAN[:12], "4 days ago", "f" * 12),
        ("<none>", "<none>", A[:12], "5 days ago", R[:12]),
        ("<none>", "<none>", R[:12], "3 weeks ago", "")).splitlines()
    assert chain.call("images", "-q") == f"{B[:12]}\n{B[:12]}\n{LONE[:12]}\n{ORPHAN[:12]}\n"  # one per tag
    assert chain.call("images", "-a", "-q").split() == [B[:12], B[:12], LONE[:12], ORPHAN[:12], A[:12], R[:12]]
    assert chain.call("images", "chain") == table(
        ("REPOSITORY", "TAG", "ID", "CREATED", "PARENT"),
        ("chain", "latest", B[:12], "2 hours ago", A[:12]),
        ("chain", "v1", B[:12], "2 hours ago", A[:12]))
    assert chain.call("images", "nothing") == table(("REPOSITORY", "TAG", "ID", "CREATED", "PARENT"))
    # The PARENT column names a tagged parent by its alphabetically first repo:tag.
    assert chain.call("tag", A[:9], "zed", "old") == "" and chain.call("tag", A, "mid") == ""
    assert f"   {'mid:latest'}\n" in chain.call("images", "chain")
    usage = "\nUsage: docker images [OPTIONS] [NAME]\n\nList images\n\n" \
            "  -a=false: show all images\n  -q=false: only show numeric IDs\n" \
            "  -viz=false: output in graphviz format\n"
    assert chain.call("help", "images") == usage
    assert chain.call("images", "a", "b") == usage
    assert chain.call("images", "-x") == "flag provided but not defined: -x\n" + usage
    assert chain.call("info") == "containers: 0\nversion: 0.1.3\nimages: 5\n"
    # A tag whose image is gone is left out, with 2013's warning in the daemon's log.
    path = os.path.join(chain.root, "repositories")
    with open(path, "rb") as f:
        record = json.loads(f.read())
    record["Repositories"]["ghost"] = {"latest": "e" * 64}
    with open(path, "w") as f:
        json.dump(record, f)
    chain.restart()
    assert "ghost" not in chain.call("images") and chain.call("images", "ghost").count("\n") == 1
    assert f"Warning: couldn't load {'e' * 64} from ghost/latest: No such id: {'e' * 64}" in chain.logs()


def test_images_viz(chain):
    """Docker 0.4's graph: every image an edge from its parent (a root from an invisible
    `base`), oldest first; tagged images are boxes labelled with their ID and tags."""
    assert chain.call("tag", LONE[:12], 'odd"name', 'x') == ""
    assert chain.call("images", "-viz") == "".join([
        "digraph docker {\n",
        f' base -> "{R[:12]}" [style=invis]\n',
        f' "{R[:12]}" -> "{A[:12]}"\n',
        f' "{"f" * 12}" -> "{ORPHAN[:12]}"\n',
        f' "{A[:12]}" -> "{B[:12]}"\n',
        f' base -> "{LONE[:12]}" [style=invis]\n',
        *sorted([f' "{B[:12]}" [label="{B[:12]}\\nchain:latest\\nchain:v1",shape=box,'
                 f'fillcolor="paleturquoise",style="filled,rounded"];\n',
                 f' "{LONE[:12]}" [label="{LONE[:12]}\\nodd\\"name:x",shape=box,'
                 f'fillcolor="paleturquoise",style="filled,rounded"];\n']),
        " base [style=invisible]\n",
        "}\n"])
    if shutil.which("dot"):             # Graphviz reads it (Debian's graphviz package)
        svg = subprocess.run(["dot", "-Tsvg"], input=chain.call("images", "-viz"), capture_output=True,
                             text=True, check=True).stdout
        assert "chain:v1" in svg and 'odd&quot;name:x' in svg


def test_history(chain):
    expected = table(("ID", "CREATED", "CREATED BY"),
                     (B[:12], "2 hours ago", "touch /b"),
                     (A[:12], "5 days ago", "sh -c echo a > /a"),
                     (R[:12], "3 weeks ago", ""))
    assert chain.call("history", "chain:v1") == expected
    assert chain.call("history", "chain") == expected
    assert chain.call("history", B[:5]) == expected
    assert chain.call("history", "abcdef01") == table(("ID", "CREATED", "CREATED BY"), (R[:12], "3 weeks ago", ""))
    # A missing ancestor: the rows so far, then the error (spec 3.6).
    assert chain.call("history", ORPHAN) == table(("ID", "CREATED", "CREATED BY"),
                                                  (ORPHAN[:12], "4 days ago", "")) + \
        f"Error: Error while getting parent image: No such id: {'f' * 64}\n"
    assert chain.call("history", "nope") == "Error: Image does not exist: nope\n"
    assert chain.call("history", "chain:v2") == "Error: Image does not exist: chain:v2\n"
    usage = "\nUsage: docker history [OPTIONS] IMAGE\n\nShow the history of an image\n\n"
    assert chain.call("history") == usage and chain.call("history", "a", "b") == usage
    assert chain.call("help", "history") == usage


def test_prefix_lookup_and_ambiguity(chain):
    """R and A share the prefix `abcdef0`: it names neither (spec 4.4)."""
    assert chain.call("inspect", "abcdef0") == ""
    assert chain.call("history", "abcdef") == "Error: Image does not exist: abcdef\n"
    assert chain.call("tag", "abcdef0", "x") == "Error: Image does not exist: abcdef0\n"
    assert chain.call("rmi", "abcdef0") == "Error: No such id: abcdef0\n"
    assert chain.call("rmi", "") == "Error: No such id: \n"
    assert chain.call("rmi", "e") == "Error: No such id: e\n"
    assert chain.call("rmi", ":") == "Error: No such id: :\n"          # 2013 found `:tmp:` here
    assert json.loads(chain.call("inspect", "abcdef01"))["id"] == R
    assert json.loads(chain.call("inspect", "abcdef02"))["id"] == A
    assert json.loads(chain.call("inspect", "b"))["id"] == B
    # An ID prefix wins over a repository of the same name (spec 6.7 step 1).
    assert chain.call("tag", LONE, "b") == ""
    assert json.loads(chain.call("inspect", "b"))["id"] == B
    assert json.loads(chain.call("inspect", "b:latest"))["id"] == LONE


def test_inspect_image(chain):
    out = chain.call("inspect", "chain:v1")
    with open(os.path.join(chain.root, "graph", B, "json"), "rb") as f:
        on_disk = f.read()
    record = json.loads(on_disk)
    assert out == json.dumps(record, indent=4) + "\n"             # Go's MarshalIndent, 4 spaces
    assert list(record) == ["id", "parent", "comment", "created", "container_config", "docker_version"]
    assert record["parent"] == A and record["container_config"] == {"Cmd": ["touch", "/b"]}
    assert on_disk == json.dumps(record, separators=(",", ":")).encode()     # compact on disk
    assert chain.call("inspect", "nothing:here") == ""
    assert chain.call("inspect", B) == out


def test_tag(chain):
    assert chain.call("tag", B[:12], "other") == ""
    assert chain.call("tag", "chain:v1", "other", "v2") == ""
    assert chain.call("tag", "-f", LONE[:4], "other", "v2") == ""    # always moved; -f changes nothing
    assert chain.call("tag", LONE[:4], "user/repo", "t") == ""
    assert chain.call("tag", R[:8], "localhost:5000/app", "1.0") == ""
    assert repositories(chain) == {"chain": {"latest": B, "v1": B}, "localhost:5000/app": {"1.0": R},
                                   "other": {"latest": B, "v2": LONE}, "user/repo": {"t": LONE}}
    with open(os.path.join(chain.root, "repositories"), "rb") as f:
        text = f.read()
    assert text == json.dumps({"Repositories": repositories(chain)}, separators=(",", ":"),
                              sort_keys=True).encode()
    assert stat.S_IMODE(os.stat(os.path.join(chain.root, "repositories")).st_mode) == 0o600
    assert chain.call("tag", B, "") == "Error: Repository name can't be empty\n"
    assert chain.call("tag", B, "a:b") == "Error: Illegal repository name: a:b\n"
    assert chain.call("tag", B, "repo", "x/y") == "Error: Illegal tag name: x/y\n"
    assert chain.call("tag", B, "repo", "x:y") == "Error: Illegal tag name: x:y\n"
    assert chain.call("tag", "nosuch", "repo") == "Error: Image does not exist: nosuch\n"
    usage = "\nUsage: docker tag [OPTIONS] IMAGE REPOSITORY [TAG]\n\nTag an image into a repository\n\n" \
            "  -f=false: Force\n"
    assert chain.call("tag", B) == usage and chain.call("help", "tag") == usage
    with open(os.path.join(chain.root, "repositories"), "rb") as f:
        assert f.read() == text                                     # refused tags changed nothing
    chain.restart()                                                 # the file is what the next daemon reads
    assert json.loads(chain.call("inspect", "other:v2"))["id"] == LONE


def test_rmi_refuses_what_is_used_and_removes_tags(chain):
    assert chain.call("rmi", A[:9]) == f"Error: Unable to remove image {A[:12]}: image {B[:12]} is based on it\n"
    assert chain.call("rmi", "abcdef01") == f"Error: Unable to remove image {R[:12]}: image {A[:12]} is based on it\n"
    assert os.path.isdir(os.path.join(chain.root, "graph", A))
    # A container on the image keeps it, running or not.
    cid = chain.call("run", "-d", "chain:v1", "sleep", "1000").strip()
    assert chain.call("rmi", "chain") == f"Error: Unable to remove image {B[:12]}: container {cid} uses it\n"
    chain.call("kill", cid)
    assert chain.call("rmi", "chain:v1") == f"Error: Unable to remove image {B[:12]}: container {cid} uses it\n"
    assert chain.call("rm", cid) == ""
    # By repo:tag; every tag of the image goes with it; then the parents can go, several at once.
    assert chain.call("tag", LONE, "lone") == ""
    assert chain.call("rmi", "chain:v1") == ""
    assert repositories(chain) == {"lone": {"latest": LONE}}
    assert chain.call("rmi", A[:9], R, "lone") == ""
    assert repositories(chain) == {}
    graph = os.path.join(chain.root, "graph")
    assert sorted(os.listdir(graph)) == [":tmp:", ORPHAN]
    assert os.listdir(os.path.join(graph, ":tmp:")) == []
    # The first error stops the list; what came before it is gone.
    assert chain.call("rmi", ORPHAN[:3], "nope", ORPHAN) == "Error: No such id: nope\n"
    assert sorted(os.listdir(graph)) == [":tmp:"]
    assert chain.call("images", "-a", "-q") == ""
    usage = "\nUsage: docker rmimage [OPTIONS] IMAGE\n\nRemove an image\n\n"
    assert chain.call("rmi") == usage and chain.call("help", "rmi") == usage
    chain.restart()
    assert chain.call("info").endswith("images: 0\n")


def test_three_layers_as_a_container_sees_them(chain):
    """The mount of R <- A <- B through a real container: files, overrides, deletions
    (a `.wh.` file, a whited-out directory, an opaque directory) exactly as the layers say."""
    script = "cat /a; cat /etc/motd; ls /etc/hostname; ls -a /var/log; ls -d /home; ls /bin/busybox"
    out = chain.call("run", "chain", "sh", "-c", "{ " + script + "; } 2>&1")
    assert out.splitlines() == ["layer B", "from A", "ls: /etc/hostname: No such file or directory",
                                ".", "..", "new", "ls: /home: No such file or directory", "/bin/busybox"]
    assert chain.call("run", "abcdef02", "sh", "-c", "cat /a; ls /var/log; ls /home") == "layer A\nold\nuser\n"


# -- hostile archives through the daemon ----------------------------------------------------


def snapshot(root: str) -> dict:
    """graph/ and repositories, byte for byte: every path's type, mode, owner, content or
    target, device and time (directory times aside: staging dirs come and go in `:tmp:`)."""
    found = {}
    for parent, dirs, files in os.walk(os.path.join(root, "graph")):
        for name in [""] + dirs + files:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            else:
                content = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, content, st.st_rdev,
                                                  0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns)
    with open(os.path.join(root, "repositories"), "rb") as f:
        found["repositories"] = f.read()
    return found


def more_hostile_archives(outside: str) -> dict[str, tuple[bytes, str]]:
    """Beyond test_archive's list: device nodes and links aimed out of the layer."""
    return {
        "device-through-symlink": (tar_of(member("dev", "symlink", link=outside),
                                          member("dev/sda", "block", device=(8, 0))), "is a symlink"),
        "fifo-through-relative-symlink": (tar_of(member("d", "dir"), member("up", "symlink", link="d/../.."),
                                                 member("up/fifo", "fifo")), "is a symlink"),
        "hardlink-to-outside-file": (tar_of(member("h", "hardlink", link=outside + "/victim")),
                                     "not a file of this archive"),
        "symlink-then-dir-through-it": (tar_of(member("s", "symlink", link=outside),
                                               member("s/newdir", "dir")), "is a symlink"),
        "dotdot-in-symlink-parent": (tar_of(member("x/../../escaped", "symlink", link="/etc/passwd")), "'..'"),
        "truncated-bzip2": (bz2.compress(tar_of(member("a", data=os.urandom(5000))))[:-50], "Invalid tar archive"),
        "gzip-of-garbage": (gzip.compress(b"not a tar at all" * 100), "Invalid tar archive"),
    }


def test_hostile_archives_are_refused_and_change_nothing(d, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    with open("/etc/passwd", "rb") as f:
        passwd = f.read()
    before = snapshot(d.root)
    archives = {**hostile_archives(str(outside)), **more_hostile_archives(str(outside))}
    assert len(archives) >= 20
    for name, (data, message) in sorted(archives.items()):
        out = d.call("import", "-", "evil", name.replace("-", ""), stdin=data)
        assert out.startswith("Error: ") and out.count("\n") == 1 and message in out, (name, out)
        assert snapshot(d.root) == before, name
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "precious"
    with open("/etc/passwd", "rb") as f:
        assert f.read() == passwd
    assert not os.path.exists(tmp_path / "escaped") and not os.path.exists(os.path.join(d.root, "escaped"))
    assert d.call("images", "evil") == table(("REPOSITORY", "TAG", "ID", "CREATED", "PARENT"))
    # Refused at its first entry, with 30 MiB still to come: the client still gets the error line
    # (closing the connection on unread input would reset it and lose the reply).
    big = tar_of(member("../escaped", data=b"x"), member("big", data=os.urandom(30 << 20)))
    for _ in range(3):
        assert d.call("import", "-", stdin=big).startswith("Error: Refusing archive entry '../escaped'")
    client = d.client("import", "-", input=big)
    assert client.stdout.startswith(b"Error: Refusing archive entry '../escaped'"), client
    assert snapshot(d.root) == before
    # A later entry replacing a symlink is fine: the link is removed, nothing written through it.
    out = d.call("import", "-", "replaced", stdin=tar_of(member("x", "symlink", link=str(outside / "victim")),
                                                          member("x", data=b"mine")))
    assert SHORT.fullmatch(out), out
    assert (outside / "victim").read_text() == "precious"
    assert open(os.path.join(layer_of(d, out), "x")).read() == "mine"


# -- a daemon killed during a large import ---------------------------------------------------


def big_tar_stream(files: int, size: int):
    """A tar archive of `files` files of `size` bytes, made piece by piece."""
    data = os.urandom(size)
    for i in range(files):
        info = tarfile.TarInfo(f"data/{i:05d}")
        info.size, info.mtime = size, 1365120303
        yield info.tobuf(tarfile.PAX_FORMAT)
        yield data + b"\0" * (-size % 512)
    yield b"\0" * 1024


def staged(d: Daemon) -> list[str]:
    """Files in the staging directories of imports in progress."""
    tmp = os.path.join(d.root, "graph", ":tmp:")
    return [os.path.join(p, f) for p, _, files in os.walk(tmp) for f in files]


def test_sigkill_during_a_large_import(d):
    assert d.call("tag", "base", "keep", "me") == ""
    before = snapshot(d.root)
    sock = d.netns.socket_connect(("127.0.0.1", 4242), timeout=30)
    try:
        sock.sendall(json.dumps(["import", "-", "big", "v1"]).encode() + b"\n")
        sent = 0
        for piece in big_tar_stream(400, 1 << 20):           # 400 MiB if it were all sent
            sock.sendall(piece)
            sent += len(piece)
            if sent > (40 << 20) and len(staged(d)) > 20:    # well inside the import: kill
                break
            time.sleep(0.002)
        assert len(staged(d)) > 20, "the import never got going"
        d.kill()                                             # SIGKILL, mid-import
    finally:
        sock.close()
    assert os.listdir(os.path.join(d.root, "graph", ":tmp:"))       # what the dead daemon left
    d.start()
    assert os.listdir(os.path.join(d.root, "graph", ":tmp:")) == []  # cleared at start-up
    assert snapshot(d.root) == before
    base = repositories(d)["base"]["latest"]
    assert d.call("images", "-q").split() == [base[:12], base[:12]]         # base:latest, keep:me
    assert repositories(d) == json.loads(before["repositories"])["Repositories"]
    assert sorted(repositories(d)) == ["base", "keep"]
    assert d.call("images", "big") == table(("REPOSITORY", "TAG", "ID", "CREATED", "PARENT"))
    assert d.call("run", "keep:me", "echo", "alive") == "alive\n"
    assert SHORT.fullmatch(d.call("import", "-", "big", "v1",
                                  stdin=b"".join(big_tar_stream(3, 1 << 20))))


def test_import_reads_the_connection_itself(d):
    """`import -` reads its input in a thread of its own (server.SocketStdin): a client's
    small pieces arrive whole, one that hangs up halfway leaves no image, and no
    reader thread stays behind either way."""
    data = b"".join(big_tar_stream(6, 300 << 10))
    line = json.dumps(["import", "-"]).encode() + b"\n"
    assert SHORT.fullmatch(d.call("import", "-", stdin=data))           # the worker pool exists now
    fds = settled_fds(d)
    with d.netns.socket_connect(("127.0.0.1", 4242), timeout=30) as sock:
        sock.sendall(line + data[:100])               # asyncio reads the start, the thread the rest
        time.sleep(0.2)
        for i in range(100, len(data), 7001):
            sock.sendall(data[i:i + 7001])
            if i % 20 == 0:
                time.sleep(0.001)
        sock.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: sock.recv(1 << 16), b"")).decode()
    assert SHORT.fullmatch(reply), reply
    layer = layer_of(d, reply)
    assert sorted(os.listdir(os.path.join(layer, "data"))) == [f"{i:05d}" for i in range(6)]
    with open(os.path.join(layer, "data", "00005"), "rb") as f:
        assert f.read() == data[-1024 - (300 << 10):-1024]
    before = d.call("images", "-q")
    with d.netns.socket_connect(("127.0.0.1", 4242), timeout=30) as sock:
        sock.sendall(line + data[:len(data) // 2])
    deadline = time.monotonic() + 10
    while staged(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert staged(d) == [] and d.call("images", "-q") == before
    # release() joins the reader thread before it closes its wake-up pipe: no fd stays open.
    deadline = time.monotonic() + 10
    while daemon_fds(d) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon_fds(d) == fds


def test_client_sends_a_file_on_stdin_whole(d, tmp_path):
    """`docker0 import - < layer.tar`: the client hands the file to sendfile(2); every byte arrives."""
    data = b"".join(big_tar_stream(3, (1 << 20) + 7))
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    with open(path, "rb") as f:
        client = subprocess.run(["ip", "netns", "exec", d.netns.name, PYTHON, "-m", "docker0_2013",
                                 "import", "-"], stdin=f, capture_output=True, timeout=120, cwd=REPO)
    assert client.returncode == 0 and SHORT.fullmatch(client.stdout.decode()), client
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = archive.extractfile("data/00002").read()
    with open(os.path.join(layer_of(d, client.stdout.decode()), "data", "00002"), "rb") as f:
        assert f.read() == expected and len(expected) == (1 << 20) + 7
