"""Hostile images (issue 21): nothing outside a container's root is touched.

An image is untrusted: its /etc, /etc/resolv.conf or /etc/hostname may be a
symlink to anywhere, absolute or relative, dangling or at a directory. Each
runs, sees the container's own resolv.conf where its links lead inside its
root, and the host's directories and files those links name (which exist on
the host: these tests make them) stay as they were, by listing and hash.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import ipaddress
import os
import secrets
import shutil
import socket
import tarfile
import sys
import threading

import pytest

from helpers import NOTHING, settled_leftovers
from netns import CLONE_NEWNET

_libc = ctypes.CDLL(None, use_errno=True)


def image_with(base: bytes, links: dict[str, str], files: dict[str, bytes] | None = None) -> bytes:
    """`base` with some names replaced by symlinks (and files); what was below them is left out."""
    out = io.BytesIO()
    replaced = set(links) | set(files or {})
    with tarfile.open(fileobj=out, mode="w") as tar, tarfile.open(fileobj=io.BytesIO(base)) as src:
        for member in src:
            name = member.name.removeprefix("./")
            if any(name == r or name.startswith(r + "/") for r in replaced):
                continue
            tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, target in links.items():
            info = tarfile.TarInfo("./" + name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, data in (files or {}).items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def state_of(paths: list[str]) -> dict[str, tuple]:
    """Everything below each path, as (type and mode, owner, sha256 or link target), and what is mounted there."""
    found: dict[str, tuple] = {}
    for top in paths:
        for parent, dirs, files in os.walk(top):
            for name in [""] + dirs + files:
                path = os.path.join(parent, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    content = os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                else:
                    content = ""
                found[path] = (st.st_mode, st.st_uid, st.st_gid, content)
    with open("/proc/self/mountinfo") as f:
        found["mounts"] = tuple(line.split()[4] for line in f
                                if any(line.split()[4].startswith(top) for top in paths))
    return found


def resolv_copy(d, cid: str) -> str:
    """The container's own resolv.conf, in its directory."""
    containers = os.path.join(d.root, "containers")
    full = next(name for name in os.listdir(containers) if name.startswith(cid))
    with open(os.path.join(containers, full, "resolv.conf")) as f:
        return f.read()


@pytest.fixture
def host_dirs():
    """Directories of the host that hostile images point at, each with a file that must stay."""
    tag = secrets.token_hex(4)
    dirs = {"var": f"/var/tmp/d0-hostile-{tag}", "tmp": f"/tmp/d0-hostile-{tag}"}
    for path in dirs.values():
        os.mkdir(path)
        with open(os.path.join(path, "resolv.conf"), "w") as f:
            f.write("nameserver 192.0.2.99  # the host's own, not for containers\n")
        os.mkdir(os.path.join(path, "sub"))
    try:
        yield dirs
    finally:
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)


def hostile_images(host: dict[str, str]) -> dict[str, dict[str, str]]:
    """name -> the symlinks that replace the base image's entries."""
    var, tmp = host["var"], host["tmp"]
    return {
        "etc-absolute": {"etc": var},
        "etc-absolute-missing": {"etc": var + "/none/here"},
        "etc-relative": {"etc": "../../../../.." + tmp},
        "resolv-systemd-stub": {"etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf"},
        "resolv-absolute": {"etc/resolv.conf": var + "/resolv.conf"},
        "resolv-absolute-dangling": {"etc/resolv.conf": tmp + "/missing/resolv.conf"},
        "resolv-at-directory": {"etc/resolv.conf": "/var/log"},         # a directory of the image
        "resolv-dangling-dir": {"etc/resolv.conf": tmp + "/sub"},       # made a file inside the root
        "resolv-at-root": {"etc/resolv.conf": "../../.."},
        "resolv-at-dev-null": {"etc/resolv.conf": "/dev/null"},
        "resolv-loop": {"etc/resolv.conf": "resolv.conf"},
        "resolv-with-spaces": {"etc/resolv.conf": "/a dir\twith\nnames/resolv.conf"},
        "hostname-absolute": {"etc/hostname": var + "/hostname"},
        "hostname-relative-dangling": {"etc/hostname": "../../../.." + tmp + "/hostname"},
    }


def test_symlinked_etc_entries_run_and_touch_nothing_outside(d, base_tar, host_dirs):
    watched = list(host_dirs.values())
    before = state_of(watched)
    for name, links in hostile_images(host_dirs).items():
        assert len(d.call("import", "-", name, stdin=image_with(base_tar, links)).strip()) == 12, name
        out = d.call("run", name, "sh", "-c", "cat /etc/resolv.conf 2>&1; echo; echo ran")
        assert out.endswith("\nran\n"), (name, out, d.logs()[-2000:])
        cid = d.call("ps", "-a", "-q").split()[0]
        copy = resolv_copy(d, cid)
        if name.startswith("resolv-at-") or name == "resolv-loop":     # nothing to mount a file on
            assert not copy.strip() or copy.strip() not in out, (name, out)
        else:
            assert out.startswith(copy), (name, out)      # the container's copy, through its links
        assert not out.startswith("nameserver 192.0.2.99"), name
        # diff, commit and export walk the container without following its links
        assert "192.0.2.99" not in d.call("diff", cid) and d.call("diff", cid).count("\n") < 20
        image = d.call("commit", cid, name + "-committed").strip()
        assert len(image) == 12, image
        assert d.call("run", image, "echo", "again") == "again\n"
        exported = d.raw(f'["export", "{cid}"]\n'.encode())
        with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
            members = {m.name.removeprefix("./"): m for m in tar}
        for link, target in links.items():
            assert members[link].issym() and members[link].linkname == target, (name, link)
        assert state_of(watched) == before, name
    assert settled_leftovers(d) == NOTHING


def test_systemd_stub_layout_resolves_names(d, base_tar):
    """The systemd layout: /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf, which
    the image does not have. The container reads its own copy there, by either name, and
    its resolver asks the nameserver that copy names (answered here, inside the test's namespace)."""
    layout = image_with(base_tar, {"etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf"})
    assert len(d.call("import", "-", "systemd", stdin=layout).strip()) == 12
    out = d.call("run", "systemd", "sh", "-c",
                 "cat /etc/resolv.conf; echo =; cat /run/systemd/resolve/stub-resolv.conf; echo =; "
                 "grep -c resolv /proc/mounts")
    first, second, mounts = out.split("=\n")
    copy = resolv_copy(d, d.call("ps", "-a", "-q").split()[0])
    assert first == second == copy, out
    assert mounts.strip() == "1", out
    servers = [line.split()[1] for line in copy.splitlines() if line.startswith("nameserver ")]
    if not servers or ipaddress.ip_address(servers[0]).is_loopback or ":" in servers[0]:
        pytest.skip(f"the host's nameserver {servers[:1]} cannot be stood in for from a container")
    with dns_server(d.netns, servers[0], {"hostile.test": "192.0.2.7"}):
        out = d.call("run", "systemd", "nslookup", "hostile.test")
    assert "192.0.2.7" in out, out


@contextlib.contextmanager
def dns_server(netns, address: str, names: dict[str, str]):
    """A DNS server for A records at `address` (added to the namespace's lo), in the test's namespace."""
    netns.exec("ip", "addr", "add", f"{address}/32", "dev", "lo")
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        fd = os.open(f"/run/netns/{netns.name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:       # this thread only
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 53))
            sock.settimeout(0.1)
            ready.set()
            while not stop.is_set():
                try:
                    query, client = sock.recvfrom(512)
                except TimeoutError:
                    continue
                sock.sendto(dns_answer(query, names), client)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(5)
        yield
    finally:
        stop.set()
        thread.join()


def dns_answer(query: bytes, names: dict[str, str]) -> bytes:
    """The reply to a one-question query: its A record if `names` has one, else no answer."""
    labels, pos = [], 12
    while query[pos]:
        labels.append(query[pos + 1:pos + 1 + query[pos]].decode())
        pos += 1 + query[pos]
    question = query[12:pos + 5]
    qtype = int.from_bytes(query[pos + 1:pos + 3], "big")
    ip = names.get(".".join(labels)) if qtype == 1 else None
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(ip) if ip else b""
    return query[:2] + b"\x81\x80\x00\x01" + (b"\x00\x01" if ip else b"\x00\x00") + b"\x00\x00\x00\x00" \
        + question + answer


@pytest.mark.parametrize("name", ["dev", "proc", "sys"])
def test_lxc_mount_points_that_are_symlinks_are_refused(d, base_tar, host_dirs, name):
    """LXC mounts its own filesystems on /dev, /proc and /sys: as runc, a link there is refused."""
    before = state_of(list(host_dirs.values()))
    assert len(d.call("import", "-", name, stdin=image_with(base_tar, {name: host_dirs["var"]})).strip()) == 12
    out = d.call("run", name, "echo", "hi")
    assert out == f"Error: Cannot start the container: /{name} of its image is not a directory\n", out
    assert state_of(list(host_dirs.values())) == before
    assert settled_leftovers(d) == NOTHING


def test_a_link_above_root_imports_and_writing_through_it_is_refused(d, base_tar, host_dirs):
    """`usr/lib/up -> ../../../../bin` resolves to the container's /bin (`..` stops at `/`)."""
    layer = image_with(base_tar, {"usr/lib/up": "../../../../bin", "usr/lib/out": "../../../.." + host_dirs["var"]})
    assert len(d.call("import", "-", "climbs", stdin=layer).strip()) == 12
    assert "busybox" in d.call("run", "climbs", "ls", "/usr/lib/up/").split()
    before = state_of(list(host_dirs.values()))
    for through in ("usr/lib/up/sh", "usr/lib/out/resolv.conf", "usr/lib/out/new/file"):
        out = d.call("import", "-", stdin=image_with(base_tar, {"usr/lib/up": "../../../../bin",
                                                              "usr/lib/out": "../../../.." + host_dirs["var"]},
                                                    {through: b"#!/bin/sh\necho owned\n"}))
        assert out.startswith("Error: Refusing archive entry") and "is a symlink" in out, (through, out)
    assert state_of(list(host_dirs.values())) == before
    assert d.call("run", "climbs", "sh", "-c", "echo ok") == "ok\n"


REDIRECTOR = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path[1:])
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 8766), Handler).serve_forever()
"""


def test_import_reads_only_http_and_stdin(d, base_tar, host_dirs):
    """file:, ftp: and data: URLs are refused before anything is read, also as a redirect's target:
    any local user could otherwise have the daemon copy out a file only root may read."""
    secret = os.path.join(host_dirs["var"], "secret.tar")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(base_tar)
    graph = sorted(os.listdir(os.path.join(d.root, "graph")))
    for url in (f"file://{secret}", f"FILE:{secret}", "ftp://127.0.0.1/base.tar",
                "data:application/x-tar;base64,AAAA", "gopher://127.0.0.1/x"):
        scheme = url.split(":")[0]
        out = d.call("import", url, "stolen")
        assert out == (f"Error: Unsupported URL scheme {scheme}: import takes an http:// or https:// URL, "
                       "or - for the standard input\n"), out
    redirector = d.netns.popen(sys.executable, "-c", REDIRECTOR)
    try:
        d.netns.wait_listening(("127.0.0.1", 8766))
        for target in (f"file://{secret}", "ftp://127.0.0.1/base.tar", "data:,x"):
            out = d.call("import", f"http://127.0.0.1:8766/{target}", "stolen")
            last = out.splitlines()[-1]
            assert last.startswith("Error: ") and ("is not allowed" in last or "unknown url type" in last), out
    finally:
        redirector.kill()            # `ip netns exec` execs python: this is its PID
        redirector.wait(10)
    assert sorted(os.listdir(os.path.join(d.root, "graph"))) == graph
    assert "stolen" not in d.call("images")
