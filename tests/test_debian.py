"""A user's session on a real Debian image: bookworm minbase plus python3 and
iproute2, built once from Debian's packages by mmdebstrap (with the host's apt
sources) and cached outside the repository, keyed by VERSION."""
from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import tarfile

import pytest

from netns import Daemon

VERSION = "bookworm-python3-iproute2-1"
CACHE = "/var/cache/docker0-tests"


def debian_tar() -> str:
    """The cached root filesystem tarball; built under a lock by the first run that needs it."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, VERSION + ".tar")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,iproute2",
                            "--format=tar", "--quiet", "bookworm", path + ".part"],
                           check=True, timeout=1800)
            os.rename(path + ".part", path)
    return path


@pytest.fixture(scope="module")
def deb():
    """A daemon with the Debian image imported as `debian`."""
    tar = debian_tar()
    daemon = Daemon()
    try:
        with open(tar, "rb") as f:
            out = daemon.call("import", "-", "debian", stdin=f.read(), timeout=600)
        assert len(out) == 13, out
        yield daemon
    finally:
        daemon.destroy()


def test_os_release_bash_and_users(deb):
    assert 'VERSION_CODENAME=bookworm' in deb.call("run", "debian", "cat", "/etc/os-release")
    assert deb.call("run", "debian", "bash", "-c", "[[ -n $BASH_VERSION ]] && echo bash; exit 7") == "bash\n"
    cid = deb.call("ps", "-a", "-q").split()[0]
    assert deb.call("wait", cid) == "7\n"
    assert deb.call("run", "-u", "nobody", "debian", "id") == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    assert deb.call("run", "-u", "www-data", "debian", "id", "-un") == "www-data\n"
    assert deb.call("run", "debian", "env") == \
        "HOME=/\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def test_dpkg_and_python(deb):
    assert "Status: install ok installed" in deb.call("run", "debian", "dpkg", "-s", "python3")
    assert "ii  bash" in deb.call("run", "debian", "dpkg", "-l")
    assert deb.call("run", "debian", "python3", "-c", "print(6*7)") == "42\n"


def test_python_multiprocessing(deb):
    out = deb.call("run", "debian", "python3", "-c",
                   "import multiprocessing as m; print(m.Pool(2).map(abs, [-1, -2]))")
    assert out == "[1, 2]\n"


def test_ip_addr_and_route(deb):
    addr = deb.call("run", "debian", "ip", "-4", "addr", "show", "eth0")
    assert "inet 10.0.3." in addr and " brd 10.0.3.255 " in addr
    assert "default via 10.0.3.1 dev eth0" in deb.call("run", "debian", "ip", "route")


def test_http_server_through_a_mapped_port(deb):
    cid = deb.call("run", "-d", "-p", "8000", "debian", "python3", "-m", "http.server",
                   "-d", "/etc", "8000").strip()
    try:
        port = int(deb.call("port", cid, "8000"))
        reply = b""
        for _ in range(100):
            try:
                sock = deb.netns.socket_connect(("10.0.3.1", port), timeout=5)
            except OSError:
                subprocess.run(["sleep", "0.1"])
                continue
            with sock:
                sock.sendall(b"GET /debian_version HTTP/1.0\r\n\r\n")
                while chunk := sock.recv(4096):
                    reply += chunk
            if reply:
                break
        assert reply.startswith(b"HTTP/1.0 200") and b"\r\n\r\n12." in reply     # bookworm is 12.x
    finally:
        deb.call("kill", cid)


def test_memory_limit_kills_a_big_allocation(deb):
    deb.call("run", "-m", str(64 << 20), "debian", "python3", "-c", "b = bytearray(512 << 20)")
    cid = deb.call("ps", "-a", "-q").split()[0]
    assert deb.call("wait", cid) == "137\n"


def test_commit_diff_export(deb):
    cid = deb.call("run", "-d", "debian", "bash", "-c", "echo hi > /root/note; rm /etc/issue").strip()
    assert deb.call("wait", cid) == "0\n"
    diff = deb.call("diff", cid).splitlines()
    assert "A /root/note" in diff and "D /etc/issue" in diff
    deb.call("commit", cid, "noted")
    assert deb.call("run", "noted", "bash", "-c", "cat /root/note; ls /etc/issue 2>&1; true") == \
        "hi\nls: cannot access '/etc/issue': No such file or directory\n"
    exported = tarfile.open(fileobj=io.BytesIO(deb.raw(json.dumps(["export", cid]).encode() + b"\n",
                                                       timeout=300)))
    names = exported.getnames()
    assert "./root/note" in names and "./etc/issue" not in names and "./usr/bin/python3" in names


def test_the_terminal_and_its_environment(deb):
    assert deb.call("run", "-t", "debian", "sh", "-c", "tty; stty size; env | sort") == (
        "/dev/console\r\n24 80\r\nHOME=/\r\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\r\nPWD=/\r\nTERM=xterm\r\n")
    assert deb.call("run", "debian", "bash", "-c", "echo a; echo b > /dev/stdout; echo c > /dev/stderr") == \
        "a\nb\nc\n"


def test_interactive_bash_through_a_pty(deb):
    out = deb.call("run", "-i", "-t", "debian", "bash", stdin=b"echo hi-$((40+2))\nexit 3\n")
    assert "hi-42\r\n" in out
    cid = deb.call("ps", "-a", "-q").split()[0]
    assert deb.call("wait", cid) == "3\n"
