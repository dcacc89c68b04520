"""No client can stall, wedge or break the daemon (issue 13, the client and host parts).

Stalled uploads and silent URL imports do not starve quick commands; a
stalled upload ends with an `Error:` line after DOCKER0_STDIN_TIMEOUT and
leaves no staging directory; an oversized request line gets its `Error:`
line, not a reset; `attach` at EOF to a `run -d -i` container gives 2013's
closed-pipe error; a host without cgroups is refused at start; test set-up
that fails leaves no namespace behind.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import netns as netns_module
from helpers import inside, run_detached
from netns import Daemon, Netns, remove_abandoned_namespaces

STALLED = 8                      # of each kind: stdin uploads and URL imports


def request(args: list[str]) -> bytes:
    return json.dumps(args).encode() + b"\n"


def read_reply(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


class SilentServer:
    """A TCP server in the test's namespace that accepts connections and never answers."""

    def __init__(self, netns_name: str) -> None:
        with inside(netns_name):
            self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def timed_call(d: Daemon, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    out = d.call(*args, timeout=60)
    return out, time.monotonic() - started


def test_stalled_clients_do_not_starve_quick_commands(d):
    silent = SilentServer(d.netns.name)
    held = []
    try:
        with inside(d.netns.name):
            for _ in range(STALLED):
                sock = socket.create_connection(("127.0.0.1", 4242), timeout=60)
                sock.sendall(request(["import", "-", "stalled"]))    # then nothing
                held.append(sock)
            for i in range(STALLED):
                sock = socket.create_connection(("127.0.0.1", 4242), timeout=60)
                sock.sendall(request(["import", f"http://127.0.0.1:{silent.port}/{i}.tar", "silent"]))
                held.append(sock)
        wait_for(lambda: d.logs().count("docker import - stalled") == STALLED)
        wait_for(lambda: len(silent.accepted) == STALLED)
        # Twice the default executor's threads on 2 cores (6) are now waiting on clients.
        out, took = timed_call(d, "run", "base", "echo", "hi")
        assert out == "hi\n" and took < 5, (out, took)
        for args in (["ps", "-a"], ["images"], ["version"], ["inspect", "base"]):
            out, took = timed_call(d, *args)
            assert not out.startswith("Error") and took < 5, (args, out, took)
        cid = run_detached(d, "base", "sleep", "30")
        out, took = timed_call(d, "inspect", cid)
        assert json.loads(out)["State"]["Running"] and took < 5
        d.call("kill", cid)
        assert "stalled" not in d.call("images")   # while held: an empty stream, once closed, is an empty layer
    finally:
        for sock in held:
            sock.close()
        silent.close()


@pytest.fixture
def impatient(base_tar):
    """A daemon that gives up on a silent upload after 1 s."""
    daemon = Daemon(env={"DOCKER0_STDIN_TIMEOUT": "1"})
    try:
        yield daemon
    finally:
        daemon.destroy()


def test_stalled_import_times_out_and_cleans_up(impatient, base_tar):
    d = impatient
    sock = d.netns.socket_connect(("127.0.0.1", 4242), timeout=30)
    with sock:
        sock.sendall(request(["import", "-", "half"]) + base_tar[:len(base_tar) // 2])
        reply = read_reply(sock)       # the daemon half-closes after its reply
    assert reply == b"Error: no input from the client for 1 seconds\n", reply
    assert os.listdir(os.path.join(d.root, "graph", ":tmp:")) == []
    assert [n for n in os.listdir(os.path.join(d.root, "graph")) if n != ":tmp:"] == []
    assert "half" not in d.call("images")
    # A client that keeps sending is not cut off, however slowly it started.
    assert re.fullmatch(r"[0-9a-f]{12}\n", d.call("import", "-", "base", stdin=base_tar))


@pytest.mark.parametrize("end", [b"", b"\n", b" more\n"])
def test_oversized_line_gets_its_error(daemon, end):
    reply = daemon.raw(b"x" * (3 << 20) + end)
    assert reply == b"Error: command line longer than 1048576 bytes\n", reply[:200]
    assert daemon.call("version").startswith("Version:")


def test_oversized_line_from_a_client_that_keeps_its_side_open(daemon):
    """The reply and EOF arrive although the client never half-closes."""
    sock = daemon.netns.socket_connect(("127.0.0.1", 4242), timeout=30)
    with sock:
        sock.sendall(b"[" * (3 << 20))
        assert read_reply(sock) == b"Error: command line longer than 1048576 bytes\n"


def test_attach_with_stdin_at_eof_is_a_closed_pipe(d):
    cid = run_detached(d, "-i", "base", "cat")
    assert d.call("attach", cid) == "Error: io: read/write on closed pipe\n"
    assert json.loads(d.call("inspect", cid))["State"]["Running"]   # its stdin stays open
    out = d.client("attach", cid, input=b"")
    assert out.stdout == b"Error: io: read/write on closed pipe\n", out
    d.call("kill", cid)


@pytest.fixture
def fixed_name(monkeypatch):
    """The name the next Netns gets, so a test can look for what it left."""
    token = secrets.token_hex(4)
    monkeypatch.setattr(netns_module.secrets, "token_hex", lambda n: token)
    return "d0t-" + token


def test_missing_cgroups_are_fatal_at_start(fixed_name):
    with pytest.raises(RuntimeError) as failed:
        Daemon(cgroups="none")
    message = str(failed.value)
    assert "daemon exited 1" in message
    assert "This host cannot run containers: no cgroup hierarchy is mounted at /sys/fs/cgroup" in message
    assert "Couldn't find bridge" not in message         # only what is missing is named
    assert not os.path.exists(f"/run/netns/{fixed_name}")
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), f"{fixed_name}.log"))


def test_netns_set_up_failure_leaves_no_namespace(fixed_name):
    with pytest.raises(Exception):
        Netns(address="not-an-address")
    assert not os.path.exists(f"/run/netns/{fixed_name}")
    assert fixed_name not in netns_module.run("ip", "netns", "list").stdout


def test_daemon_set_up_failure_leaves_nothing(fixed_name, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="Couldn't find bridge interface nosuch"):
        Daemon(root=str(root), extra=("-b", "nosuch"))
    assert not os.path.exists(f"/run/netns/{fixed_name}")
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), f"{fixed_name}.log"))
    with open("/proc/mounts") as f:
        assert str(root) not in f.read()


def test_a_killed_runs_namespace_is_removed_by_the_next_run():
    """A namespace whose creating run is gone (its PID in the name) goes; a live run's stays."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned, live = f"d0t-{dead.pid}-{secrets.token_hex(4)}", Netns(bridge=None)
    subprocess.run(["ip", "netns", "add", abandoned], check=True)
    try:
        remove_abandoned_namespaces()
        assert not os.path.exists(f"/run/netns/{abandoned}")
        assert os.path.exists(f"/run/netns/{live.name}")
    finally:
        subprocess.run(["ip", "netns", "del", abandoned], capture_output=True)
        live.destroy()
