"""The container's shim (docker0_2013/shim.py, issue 14): the container writes to pipes
or its pty, the shim copies them into the logs, keeps the exit status, takes the
input, and outlives the daemon. Also what a container's /dev and eth0 look like."""
from __future__ import annotations

import json
import os
import select
import time

from helpers import NOTHING, run_detached, settled_leftovers, shim_pids

def test_dev_stdout_and_dev_stderr_are_pipes(d):
    """`> /dev/stdout` opens the pipe again; it used to truncate the log file."""
    assert d.call("run", "base", "sh", "-c", "echo a; echo b > /dev/stdout") == "a\nb\n"
    cid = d.call("ps", "-a", "-q").split()[0]
    assert d.call("logs", cid) == "a\nb\n"
    assert d.call("run", "base", "sh", "-c", "echo c >&2; echo d > /dev/stderr") == "c\nd\n"
    cid = d.call("ps", "-a", "-q").split()[0]
    assert d.call("logs", cid) == "c\nd\n"
    cid = run_detached(d, "base", "sh", "-c", "echo out; echo err > /dev/stderr; echo more > /dev/stdout")
    assert d.call("wait", cid) == "0\n"
    full = json.loads(d.call("inspect", cid))["Id"]
    logs = os.path.join(d.root, "containers", full, full)
    assert open(logs + "-stdout.log").read() == "out\nmore\n"
    assert open(logs + "-stderr.log").read() == "err\n"
    assert settled_leftovers(d) == NOTHING


def test_a_tty_container_survives_a_daemon_sigkill(d):
    """`run -i -t -d`, SIGKILL the daemon, start it again: the shim is the same process,
    an attach gets an answer from the shell, and rm leaves no shim and no socket."""
    cid = run_detached(d, "-i", "-t", "base", "sh")
    record = json.loads(d.call("inspect", cid))
    shim, root = record["State"]["Pid"], os.path.join(d.root, "containers", record["Id"])
    assert b"shim.py" in open(f"/proc/{shim}/cmdline", "rb").read()
    assert os.path.exists(os.path.join(root, "shim.sock"))
    d.restart()                                       # SIGKILL, then a new daemon on the same root
    assert d.call("ps", "-q").split() == [cid]
    assert json.loads(d.call("inspect", cid))["State"]["Pid"] == shim
    for n in (1, 2):                                  # attached again, twice
        assert f"hi-{40 + n}\r\n".encode() in attach_and_type(d, cid, f"echo hi-$((40+{n}))\n", f"hi-{40 + n}\r\n")
    assert d.call("rm", cid) == ""
    assert not os.path.exists(root)
    assert settled_leftovers(d) == NOTHING and shim_pids(d) == []
    deadline = time.monotonic() + 10       # an orphan now: the host's init reaps it
    while os.path.exists(f"/proc/{shim}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{shim}")


def attach_and_type(d, cid: str, line: str, wanted: str, timeout: float = 30) -> bytes:
    """`attach CID`, type `line`, keep the input open until `wanted` has come back."""
    sock = d.netns.socket_connect(("127.0.0.1", 4242))
    seen, deadline = b"", time.monotonic() + timeout
    with sock:
        sock.sendall(json.dumps(["attach", cid]).encode() + b"\n")
        time.sleep(0.2)                               # attach shows only what comes after it
        sock.sendall(line.encode())
        while wanted.encode() not in seen and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.1)[0]:
                if not (data := sock.recv(4096)):
                    break
                seen += data
    return seen


def test_exit_status_and_output_while_the_daemon_is_down(d):
    cid = run_detached(d, "-t", "base", "sh", "-c", "sleep 2; echo late; exit 4")
    d.kill()
    full = json.loads(open(os.path.join(d.root, "containers", os.listdir(os.path.join(d.root, "containers"))[0],
                                        "config.json")).read())["Id"]
    exit_code = os.path.join(d.root, "containers", full, "exit-code")
    deadline = time.monotonic() + 60          # the container sleeps 2 s; far longer on an emulated host
    while not os.path.exists(exit_code) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open(exit_code).read() == "4\n"
    assert not os.path.exists(os.path.join(d.root, "containers", full, "shim.sock"))
    d.start()
    assert d.call("wait", cid) == "4\n"
    assert d.call("logs", cid) == "late\r\n"
    assert settled_leftovers(d) == NOTHING


def test_tty_names_its_terminal_and_has_a_size(d):
    assert d.call("run", "-t", "base", "sh", "-c", "tty; stty size") == "/dev/console\r\n24 80\r\n"
    mounts = d.call("run", "-t", "base", "cat", "/proc/mounts")
    assert "devpts /dev/pts devpts" in mounts and "ptmxmode=666" in mounts    # a devpts of its own
    assert d.call("run", "base", "tty") == "not a tty\n"


def test_dev_shm_and_the_broadcast_address(d):
    assert d.call("run", "base", "df", "/dev/shm").split()[-5:] == ["65536", "0", "65536", "0%", "/dev/shm"]
    assert d.call("run", "base", "stat", "-c", "%a", "/dev/shm") == "1777\n"
    assert " brd 10.0.3.255 " in d.call("run", "base", "ip", "-4", "addr", "show", "eth0")
    assert settled_leftovers(d) == NOTHING


def test_shims_come_from_a_fork_server_started_again_if_it_dies(d):
    """The daemon's one child that forks every shim (shim_client.ShimForkServer): a shim's parent is the
    host's init, not the daemon; if the server is killed, the next start starts a new one."""
    cid = run_detached(d, "base", "sleep", "1000")
    shim = json.loads(d.call("inspect", cid))["State"]["Pid"]
    daemon = d.proc.pid
    assert stat(shim)[1] != daemon and stat(shim)[3] != stat(daemon)[3]    # its own parent and session
    server = fork_server(d)
    assert stat(server)[1] == daemon
    os.kill(server, 9)
    assert d.call("run", "base", "echo", "hi") == "hi\n"
    assert fork_server(d) != server
    assert d.call("kill", cid) == "" and d.call("rm", cid) == ""
    assert settled_leftovers(d) == NOTHING


def stat(pid: int) -> list[int]:
    """/proc/PID/stat after the name: state, parent, process group, session, ..."""
    return [int(f) if f.lstrip("-").isdigit() else f for f in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()]


def fork_server(d) -> int:
    daemon = d.proc.pid                                                 # the daemon (exec'd)
    children = [c for task in os.listdir(f"/proc/{daemon}/task")        # started by any of its threads
                for c in open(f"/proc/{daemon}/task/{task}/children").read().split()]
    servers = [int(c) for c in children if b"shim.py" in open(f"/proc/{c}/cmdline", "rb").read()]
    assert len(servers) == 1, servers
    return servers[0]
