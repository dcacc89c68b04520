"""The daemon, the rcli protocol and the client (issue: daemon and client)."""
from __future__ import annotations

import concurrent.futures
import os
import socket
import stat
import time

import pytest

from netns import Daemon, Netns

VERSION_REPLY_PREFIX = "Version:0.1.3\nGit Commit:"


def test_json_and_plain_forms_match(daemon):
    for words, plain in [(["help"], b"help\n"), (["version"], b"version\n"),
                         (["info"], b"info\n"), (["help", "info"], b"help info\n")]:
        assert daemon.call(*words) == daemon.raw(plain).decode()
    assert daemon.call("version").startswith(VERSION_REPLY_PREFIX)
    assert daemon.call("info") == "containers: 0\nversion: 0.1.3\nimages: 0\n"


def test_help_texts(daemon):
    text = daemon.call()
    assert text.startswith("Usage: docker COMMAND [arg...]\n\nA self-sufficient runtime")
    assert "    version   Show the docker version information\n" in text
    assert text.count("\n    ") == 25
    assert daemon.call("help", "info") == "\nUsage: docker info \n\nDisplay system-wide information.\n\n"
    assert daemon.call("help", "help") == ""
    assert daemon.call("help", "frob") == "Error: No such command: frob\n"
    assert daemon.call("VERSION").startswith(VERSION_REPLY_PREFIX)
    assert daemon.call("Help") == "Error: No such command: Help\n"


def test_plain_words_use_shell_quoting(daemon):
    assert daemon.raw(b'info "unterminated\n').startswith(b"Error: cannot parse the command line")
    assert daemon.raw(b"info 'x y'\n").startswith(b"\nUsage: docker info")


@pytest.mark.parametrize("line,expected", [
    (b"frob\n", b"Error: No such command: frob\n"),
    (b'["frob"]\n', b"Error: No such command: frob\n"),
    (b"[not json\n", b"Error: invalid JSON command line"),
    (b'{"a": 1}\n', b"Error: No such command: {a:"),
    (b"[1, 2]\n", b"Error: the JSON command line must be an array of strings\n"),
    (b'"frob"\n', b"Error: No such command: frob"),
    (b"\xff\xfe\n", b"Error: the command line is not valid UTF-8\n"),
    (b"\n", b"Error: empty command line"),
    (b"", b"Error: EOF\n"),
    (b"info -x\n", b"flag provided but not defined: -x\n\nUsage: docker info"),
    (b"-x\n", b"flag provided but not defined: -x\nUsage: docker COMMAND"),
    (b'["info\\u0000"]\n', b"Error: No such command: info\x00"),
])
def test_bad_input_gets_error_line(daemon, line, expected):
    assert daemon.raw(line).startswith(expected)
    assert daemon.call("version").startswith(VERSION_REPLY_PREFIX)


def test_huge_line_is_refused_without_buffering_it(daemon):
    sock = daemon.netns.socket_connect(("127.0.0.1", 4242))
    with sock:
        chunk = b"x" * (1 << 16)
        reply = b""
        try:
            for _ in range(64):               # 4 MiB, never a newline
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while data := sock.recv(1 << 16):
                reply += data
        except ConnectionResetError:
            pass
    assert reply.startswith(b"Error: command line longer than 1048576 bytes")
    assert daemon.call("version").startswith(VERSION_REPLY_PREFIX)


def test_clients_that_hang_up_or_stay_silent(daemon):
    silent = daemon.netns.socket_connect(("127.0.0.1", 4242))
    slow = daemon.netns.socket_connect(("127.0.0.1", 4242))
    slow.sendall(b"ver")                                  # half a line, then nothing
    for _ in range(20):                                   # hang up at once, and mid-reply
        s = daemon.netns.socket_connect(("127.0.0.1", 4242))
        s.sendall(b'["help"]\n')
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    started = time.monotonic()
    assert daemon.call("version").startswith(VERSION_REPLY_PREFIX)
    assert time.monotonic() - started < 5
    slow.sendall(b"sion\n")
    slow.shutdown(socket.SHUT_WR)
    assert slow.recv(100).startswith(b"Version:0.1.3")
    silent.shutdown(socket.SHUT_WR)
    assert silent.recv(100) == b"Error: EOF\n"
    silent.close()
    slow.close()
    assert daemon.proc.poll() is None


def test_200_concurrent_connections(daemon):
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        replies = list(pool.map(lambda _: daemon.call("version"), range(200)))
    assert all(r.startswith(VERSION_REPLY_PREFIX) for r in replies)


def test_root_layout_modes_and_restart(daemon):
    def mode(p):
        return stat.S_IMODE(os.stat(os.path.join(daemon.root, p)).st_mode)
    assert mode(".") == 0o700
    assert mode("containers") == 0o700
    assert mode("graph") == 0o700
    assert mode("repositories") == 0o600
    path = os.path.join(daemon.root, "repositories")
    with open(path, "rb") as f:
        before = f.read()
    assert before == b'{"Repositories":{}}'
    daemon.restart()
    with open(path, "rb") as f:
        assert f.read() == before
    assert daemon.call("info").startswith("containers: 0\n")


def test_modern_docker_root_message(netns, tmp_path):
    (tmp_path / "image").mkdir()
    out = netns.exec(os.sys.executable, "-m", "docker0_2013", "-d", "-g", str(tmp_path), check=False)
    assert out.returncode == 1
    assert "modern Docker engine" in out.stderr and "-g" in out.stderr
    assert not (tmp_path / "containers").exists()


def test_missing_bridge_is_a_clear_error(tmp_path):
    ns = Netns(bridge=None)
    try:
        out = ns.exec(os.sys.executable, "-m", "docker0_2013", "-d", "-g", str(tmp_path), check=False)
        assert out.returncode == 1
        assert "Couldn't find bridge interface lxcbr0" in out.stderr
        assert "lxc-net" in out.stderr
        ns.exec("ip", "link", "add", "br9", "type", "bridge")
        out = ns.exec(os.sys.executable, "-m", "docker0_2013", "-d", "-b", "br9", "-g",
                      str(tmp_path), check=False)
        assert "Interface br9 has no IP addresses" in out.stderr
    finally:
        ns.destroy()


def test_malformed_dockercfg_is_ignored(tmp_path):
    (tmp_path / ".dockercfg").write_text("garbage without equals\n")
    d = Daemon(root=str(tmp_path))
    try:
        assert d.call("version").startswith(VERSION_REPLY_PREFIX)
        assert "Ignoring malformed" in d.logs()
    finally:
        d.destroy()


def test_daemon_logs_commands_and_errors(daemon):
    daemon.call("info")
    daemon.call("frob", "a")
    logs = daemon.logs()
    assert "Listening for RCLI/tcp on 127.0.0.1:4242" in logs
    assert "docker info\n" in logs and "docker frob a\n" in logs
    assert "Error: No such command: frob\n" in logs


def test_client_round_trip_and_exit_status(daemon):
    out = daemon.client("version")
    assert out.returncode == 0 and out.stdout.decode().startswith(VERSION_REPLY_PREFIX)
    out = daemon.client("frob")
    assert out.returncode == 0 and out.stdout == b"Error: No such command: frob\n"
    out = daemon.client("-H", "127.0.0.1:4243", "version")
    assert out.returncode == 1
    assert b"127.0.0.1:4243" in out.stderr and b"docker0 -d" in out.stderr
    out = daemon.client("-x")
    assert out.returncode == 2 and b"flag provided but not defined: -x" in out.stderr
    out = daemon.client("-d", "extra")
    assert out.returncode == 0 and b"Usage of" in out.stderr
