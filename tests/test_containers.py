"""Real LXC containers: run and the whole lifecycle (issue: containers on LXC 5)."""
from __future__ import annotations

import concurrent.futures
import glob
import io
import json
import os
import pty
import re
import select
import subprocess
import tarfile
import termios
import time

import pytest

from docker0_2013 import lxc
from helpers import (NOTHING, config_lxc, daemon_fds, exchange, inside, run_detached, saved_containers,
                     settled_leftovers)
from netns import PYTHON, REPO


def test_run_echo_and_exit_codes(d):
    assert d.call("run", "base", "echo", "-n", "foobar") == "foobar"
    for command, code in [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7),
                          (["no-such-program"], 127)]:
        cid = run_detached(d, "base", *command)
        assert d.call("wait", cid) == f"{code}\n"
    ps = d.call("ps", "-a")
    assert ps.splitlines()[0].split() == ["ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "COMMENT"]
    assert "Exit 127" in ps and "Exit 7" in ps and "base:latest" in ps
    assert d.call("ps", "-q") == ""
    assert len(d.call("ps", "-a", "-q").split()) == 5
    assert settled_leftovers(d) == NOTHING


def test_environment_is_exact(d):
    assert sorted(d.call("run", "base", "env").split()) == [
        "HOME=/", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    env = sorted(d.call("run", "-e", "A=b c", "base", "env").splitlines())
    assert env == ["A=b c", "HOME=/", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert "TERM=xterm\r\n" in d.call("run", "-t", "base", "env")


def test_users_and_hostname(d):
    assert d.call("run", "-u", "daemon", "base", "id") == "uid=1(daemon) gid=1(daemon)\n"
    assert d.call("run", "-u", "1", "base", "id") == "uid=1(daemon) gid=1(daemon)\n"
    for user in ("root", "0", ""):
        assert d.call("run", "-u", user, "base", "id").startswith("uid=0(root) gid=0(root)")
    assert "Unable to find user nobody2" in d.call("run", "-u", "nobody2", "base", "id")
    assert d.call("run", "-h", "foobar", "base", "hostname") == "foobar\n"
    cid = run_detached(d, "base", "hostname")
    d.call("wait", cid)
    assert d.call("logs", cid) == cid + "\n"


def test_no_trace_of_the_host(d):
    out = d.call("run", "base", "sh", "-c", "ls -a /dev; cat /proc/mounts; ls /proc/self/fd")
    assert ".docker0" not in out and "/usr" not in out
    assert out.split()[-4:] == ["0", "1", "2", "3"]          # stdin, stdout, stderr, ls's dir
    assert "eth0" in d.call("run", "base", "ip", "addr")
    assert "default via 10.0.3.1 dev eth0" in d.call("run", "base", "ip", "route")
    caps = d.call("run", "base", "grep", "CapBnd", "/proc/self/status")
    assert int(caps.split()[1], 16) & (1 << 21) == 0              # no CAP_SYS_ADMIN


def test_stdin(d):
    assert d.call("run", "-i", "base", "cat", stdin=b"hello\nworld\n") == "hello\nworld\n"
    out = d.call("run", "-i", "-a", "stdin", "base", "cat", stdin=b"hello\nhi there\n")
    cid = out.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", cid)
    assert d.call("wait", cid) == "0\n"
    assert d.call("logs", cid) == "hello\nhi there\n"


def test_restart_gets_fresh_stdin(d):
    out = d.call("run", "-i", "base", "cat", stdin=b"first\n")
    assert out == "first\n"
    cid = d.call("ps", "-a", "-q").split()[0]
    assert d.call("restart", cid) == cid + "\n"
    assert d.call("attach", cid, stdin=b"second\n") == "second\n"
    assert d.call("wait", cid) == "0\n"
    assert d.call("logs", cid) == "first\nsecond\n"


def test_three_attachers_and_logs(d):
    cid = run_detached(d, "base", "sh", "-c", "echo early; sleep 3; echo late; echo oops >&2")
    while d.call("logs", cid) != "early\n":      # attach shows only what comes after it
        time.sleep(0.05)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: d.call("attach", cid), range(3)))
    assert all(sorted(r.split()) == ["late", "oops"] for r in replies), replies
    assert d.call("logs", cid) == "early\nlate\noops\n"


def test_start_stop_kill_and_errors(d):
    cid = run_detached(d, "base", "sleep", "1000")
    full_id = json.loads(d.call("inspect", cid))["Id"]
    assert d.call("start", cid) == f"Error: The container {full_id} is already running.\n"
    assert d.call("kill", cid) == ""
    assert d.call("kill", cid) == ""                          # a second kill is harmless
    assert d.call("wait", cid) == "-1\n"
    assert d.call("start", cid) == cid + "\n"
    started = time.monotonic()
    assert d.call("stop", cid) == cid + "\n"
    assert time.monotonic() - started < 9                    # sysinit, PID 1, forwards SIGTERM
    assert d.call("wait", cid) == "143\n"
    trap = run_detached(d, "base", "sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait; sleep 1000")
    while d.call("logs", trap) != "ready\n":
        time.sleep(0.05)
    started = time.monotonic()
    assert d.call("stop", trap) == trap + "\n"
    print("stop of a SIGTERM-ignoring container took", time.monotonic() - started)
    # -1: kill() recorded its SIGKILL; 137: the shim saw sysinit killed first (an empty init-status)
    assert d.call("wait", trap) in ("137\n", "-1\n")
    assert d.call("wait", "nope") == "Error: No such container: nope\n"
    assert settled_leftovers(d) == NOTHING


def test_run_argument_errors(d):
    assert d.call("run") == "Error: Image not specified\n"
    assert d.call("run", "base") == "Error: Command not specified\n"
    assert d.call("run", "-d", "-a", "stdout", "base", "true") == "Error: Conflicting options: -a and -d\n"
    assert d.call("run", "-x", "base") == "Error: flag provided but not defined: -x\n"
    assert d.call("run", "-a", "foo", "base") == \
        'Error: invalid value "foo" for flag -a: Unsupported stream name: foo\n'
    assert d.call("run", "-h") == "Error: flag needs an argument: -h\n"
    out = d.call("run", "127.0.0.1:1/nosuch", "true")       # pulls from loopback, which refuses
    assert out.startswith("Image 127.0.0.1:1/nosuch not found, trying to pull it from registry.\n")
    assert out.endswith("\n") and "Error: " in out
    usage = d.call("help", "run")
    assert usage.startswith("\nUsage: docker run [OPTIONS] IMAGE COMMAND [ARG...]\n")
    assert "  -a=map[]: Attach to stdin, stdout or stderr.\n" in usage and "Error" not in usage
    assert d.call("run", "--help") == usage + "Error: flag: help requested\n"
    assert d.call("run", "-p", "abc", "base", "true") == \
        'Error: strconv.ParseUint: parsing "abc": invalid syntax\n'
    assert settled_leftovers(d) == NOTHING


def test_inspect_container(d):
    cid = run_detached(d, "-p", "80", "base", "sleep", "1000")
    record = json.loads(d.call("inspect", cid))
    assert list(record) == ["Id", "Created", "Path", "Args", "Config", "State", "Image",
                            "NetworkSettings", "SysInitPath"]
    assert record["Path"] == "sleep" and record["Args"] == ["1000"]
    assert record["Config"]["Hostname"] == record["Id"][:12]
    assert record["State"]["Running"] is True and record["State"]["Pid"] > 0
    ns = record["NetworkSettings"]
    assert ns["IpAddress"].startswith("10.0.3.") and ns["IpPrefixLen"] == 24
    assert ns["Gateway"] == "10.0.3.1" and list(ns["PortMapping"]) == ["80"]
    assert d.call("port", cid, "80") == ns["PortMapping"]["80"] + "\n"
    assert d.call("port", cid, "81") == f"Error: No private port '81' allocated on {cid}\n"
    assert d.call("inspect", "nothing-here") == ""
    d.call("kill", cid)
    record = json.loads(d.call("inspect", cid))
    assert record["NetworkSettings"] == {"IpAddress": "", "IpPrefixLen": 0, "Gateway": "",
                                         "PortMapping": None}
    on_disk = json.load(open(os.path.join(d.root, "containers", record["Id"], "config.json")))
    assert on_disk == record


def test_port_mapping_reaches_the_container(d):
    cid = run_detached(d, "-p", "80", "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    public = int(d.call("port", cid, "80"))
    assert 49153 <= public <= 65535
    for _ in range(100):
        try:
            with d.netns.socket_connect(("10.0.3.1", public), timeout=5) as s:
                s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                reply = b""
                while data := s.recv(4096):
                    reply += data
            break
        except OSError:
            time.sleep(0.05)
    assert b"200 OK" in reply and reply.endswith(b"base\n")
    d.call("rm", cid)
    with pytest.raises(OSError):
        d.netns.socket_connect(("10.0.3.1", public), timeout=2)
    assert settled_leftovers(d) == NOTHING


def test_memory_limit(d):
    fill = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    cid = run_detached(d, "-m", "33554432", "base", "sh", "-c", fill)
    assert d.call("wait", cid) != "0\n"
    assert "survived" not in d.call("logs", cid)
    config = config_lxc(d, cid)
    if lxc.cgroup_v2_only():        # a hard limit, as in 2013: no memory.low protecting it
        assert "lxc.cgroup2.memory.max = 33554432\n" in config and "memory.low" not in config
    else:
        assert "lxc.cgroup.memory.limit_in_bytes = 33554432\n" in config
    cid = run_detached(d, "base", "sh", "-c", fill)
    assert d.call("wait", cid) == "0\n"


def test_commit_diff_export(d):
    cid = run_detached(d, "base", "sh", "-c", "echo hi > /tmp/new; rm /etc/hostname; echo x >> /etc/group")
    d.call("wait", cid)
    diff = d.call("diff", cid).splitlines()
    assert diff == ["C /etc", "C /etc/group", "D /etc/hostname", "C /tmp", "A /tmp/new"]  # lexical, parents first
    image = d.call("commit", "-m", "my change", cid, "changed", "v1").strip()
    assert re.fullmatch(r"[0-9a-f]{12}", image)
    assert d.call("run", "changed:v1", "cat", "/tmp/new") == "hi\n"
    assert "No such file" in d.call("run", "changed:v1", "cat", "/etc/hostname")
    assert d.call("run", image, "tail", "-n1", "/etc/group") == "x\n"
    inspect = json.loads(d.call("inspect", image))
    assert inspect["comment"] == "my change" and inspect["container"].startswith(cid)
    tar = tarfile.open(fileobj=io.BytesIO(d.raw(json.dumps(["export", cid]).encode() + b"\n")))
    names = tar.getnames()
    assert "./tmp/new" in names and "./bin/busybox" in names and "./etc/hostname" not in names
    assert d.call("diff") == "Error: Not enough arguments\n"
    assert d.call("diff", "nope") == "Error: No such container\n"
    assert settled_leftovers(d) == NOTHING


def test_daemon_killed_and_restarted(d):
    running = run_detached(d, "base", "sh", "-c", "echo one; sleep 3; echo two; sleep 1000")
    done = run_detached(d, "base", "sh", "-c", "sleep 1; exit 3")
    d.call("wait", done)
    ended_while_down = run_detached(d, "base", "sh", "-c", "sleep 2; exit 5")
    d.restart()
    ps = d.call("ps", "-a", "-q").split()
    assert sorted(ps) == sorted([running, done, ended_while_down])
    assert d.call("wait", ended_while_down) == "5\n"
    assert d.call("wait", done) == "3\n"
    time.sleep(3)
    assert d.call("logs", running) == "one\ntwo\n"
    assert d.call("ps", "-q").split() == [running]
    assert d.call("kill", running) == ""
    assert d.call("wait", running) == "-1\n"
    for cid in ps:
        assert d.call("rm", cid) == ""
    assert d.call("ps", "-a", "-q") == ""
    assert settled_leftovers(d) == NOTHING


def test_rm_running_container_and_leaks(d):
    cid = run_detached(d, "-p", "80", "-p", ":8080", "base", "sleep", "1000")
    assert len([r for r in d.netns.exec("iptables", "-t", "nat", "-S", "DOCKER0").stdout.splitlines()
                if r.startswith("-A")]) == 2
    assert d.call("rm", cid) == ""
    assert not glob.glob(os.path.join(d.root, "containers", cid + "*"))
    assert settled_leftovers(d) == NOTHING
    assert d.call("rm", "nope") == "Error: No such container: nope\n"


def test_tty_interactive_shell(d):
    out = d.call("run", "-i", "-t", "base", "sh", stdin=b"echo hi-$((40+2))\nexit 3\n")
    assert "hi-42\r\n" in out
    cid = d.call("ps", "-a", "-q").split()[0]
    assert d.call("wait", cid) == "3\n"


def test_real_client(d):
    out = d.client("run", "base", "echo", "hello")
    assert out.returncode == 0 and out.stdout == b"hello\n"
    out = d.client("run", "-i", "base", "cat", input=b"piped\n")
    assert out.stdout == b"piped\n"
    out = d.client("run", "base")
    assert out.returncode == 0 and out.stdout == b"Error: Command not specified\n"


def test_start_and_export_right_after_a_run_ends(d):
    """Attached clients are answered once the run's network is released, while its root is
    unmounted and its record saved: a start or an export sent at once waits for that, and
    the record on disk then says it runs."""
    cid = run_detached(d, "-p", "80", "base", "sh", "-c", "sleep 0.3; echo done")
    for _ in range(3):
        assert d.call("attach", cid) == "done\n"
        names = tarfile.open(fileobj=io.BytesIO(d.raw(json.dumps(["export", cid]).encode() + b"\n"))).getnames()
        assert "./bin/busybox" in names
        assert d.call("start", cid) == cid + "\n"
        record = next(r for name, r in saved_containers(d).items() if name.startswith(cid))
        assert record["State"]["Running"] and record["NetworkSettings"]["PortMapping"]
    assert d.call("wait", cid) == "0\n"


def test_rm_ends_an_attach_that_waits_for_the_next_run(d):
    """An attach to a stopped container waits for its next run; rm ends it instead."""
    cid = run_detached(d, "base", "true")
    assert d.call("wait", cid) == "0\n"
    with inside(d.netns.name):
        line = json.dumps(["attach", cid]).encode() + b"\n"
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(exchange, [(line, b"")], 30)
        time.sleep(0.3)
        assert not waiting.done()
        assert d.call("rm", cid) == ""
        assert waiting.result(30) == [b""]
    assert settled_leftovers(d) == NOTHING


def test_real_client_into_a_closed_pipe(d):
    """`docker0 export ID | head`: the client leaves quietly when its reader has gone."""
    cid = run_detached(d, "base", "true")
    client = subprocess.Popen(["ip", "netns", "exec", d.netns.name, PYTHON, "-m", "docker0_2013",
                               "export", cid], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client.stdout.read(1000)
    client.stdout.close()
    assert client.wait(30) == 141 and client.stderr.read() == b""


def test_real_client_on_a_terminal(d):
    """`docker0 run -i -t base sh` typed at a terminal: raw mode while it runs, restored after."""
    master, terminal = pty.openpty()
    cooked = termios.tcgetattr(terminal)
    client = subprocess.Popen(["ip", "netns", "exec", d.netns.name, PYTHON, "-m", "docker0_2013",
                               "run", "-i", "-t", "base", "sh"], cwd=REPO, start_new_session=True,
                              stdin=terminal, stdout=terminal, stderr=terminal)
    try:
        read_until(master, b"/ # ")                                     # busybox sh's prompt
        assert not termios.tcgetattr(terminal)[3] & termios.ECHO        # the client's raw mode
        os.write(master, b"echo hi-$((40+2))\n")
        assert b"hi-42\r\r\n" in read_until(master, b"hi-42\r")    # \n -> \r\n in both ptys
        os.write(master, b"exit 3\n")             # the terminal stays open: the run's end ends it
        assert client.wait(30) == 0
        assert termios.tcgetattr(terminal) == cooked
    finally:
        if client.poll() is None:
            client.kill()
        os.close(master)
        os.close(terminal)
    cid = d.call("ps", "-a", "-q").split()[0]
    assert d.call("wait", cid) == "3\n"


def read_until(fd: int, wanted: bytes, timeout: float = 30) -> bytes:
    """What a terminal's master side reads until `wanted` appears (or the time is up)."""
    seen, deadline = b"", time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 4096)
    return seen


def test_260_run_rm_cycles_leave_nothing(d):
    """More cycles than the /24 has addresses (253): a leaked IP would exhaust the pool."""
    flag_sets = [[], ["-p", "80"], ["-m", "67108864"], ["-e", "A=1", "-h", "x"],
                 ["-t"], ["-i"], ["-u", "daemon"]]
    d.call("rm", run_detached(d, "base", "true"))
    fds = daemon_fds(d)
    for i in range(260):
        flags = flag_sets[i % len(flag_sets)]
        cid = run_detached(d, *flags, "base", "sh", "-c", "exit 0" if i % 2 else "sleep 100")
        assert d.call("rm", cid) == ""
    assert d.call("ps", "-a", "-q") == ""
    assert os.listdir(os.path.join(d.root, "containers")) == []
    assert settled_leftovers(d) == NOTHING
    assert daemon_fds(d) <= fds


def nameservers(text: str) -> list[str]:
    return [words[1] for words in map(str.split, text.splitlines()) if len(words) > 1 and words[0] == "nameserver"]


def test_dns_servers_are_the_hosts_upstream_ones(d):
    """A container gets the host's DNS servers; where the host's resolv.conf names only
    systemd-resolved's stub (127.0.0.53, on the container's own loopback useless), the
    upstream servers resolved itself uses, as Docker does (Ubuntu's default, and Debian
    13's with systemd-resolved: the VM suite runs this branch)."""
    with open("/etc/resolv.conf") as f:
        host = f.read()
    container = d.call("run", "base", "cat", "/etc/resolv.conf")
    if nameservers(host) == ["127.0.0.53"] and os.path.exists("/run/systemd/resolve/resolv.conf"):
        with open("/run/systemd/resolve/resolv.conf") as f:
            upstream = nameservers(f.read())
        assert upstream and "127.0.0.53" not in upstream
        assert nameservers(container) == upstream
    else:
        assert container == host
