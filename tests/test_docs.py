"""The docs stay true: docs/commands.md, docs/walkthrough.md and contrib/demo, run for real.

- docs/gen_commands.py runs again (a real daemon in a namespace) and its output
  must match the committed docs/commands.md once IDs, times, durations, PIDs
  and ports are normalised;
- every `docker0 COMMAND` in the docs' code blocks is a real command, every
  `function()` the walkthrough names is defined in docker0_2013/, and every
  code excerpt it quotes is still in the file it names;
- the walkthrough's story (`run -p 80 base httpd -f -p 80`) is replayed against
  a test daemon and each thing the walkthrough says you will see is checked;
- contrib/demo passes against a test daemon with the base image, and fails
  without it.
"""
from __future__ import annotations

import ast
import difflib
import os
import re
import subprocess
import sys
import time

import pytest

from netns import PYTHON, REPO

sys.path.insert(0, os.path.join(REPO, "docs"))
import gen_commands  # noqa: E402

from docker0_2013.commands import COMMANDS  # noqa: E402

DOCS = os.path.join(REPO, "docs")


def read(*path: str) -> str:
    with open(os.path.join(REPO, *path)) as f:
        return f.read()


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


def base_tar() -> bytes:
    return subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")], check=True,
                          capture_output=True).stdout


# -- docs/commands.md -------------------------------------------------------------------------

def test_normalise_hides_what_varies_and_keeps_the_rest():
    one = ('4920e9556acd   base:latest   1 seconds ago   Up 1 seconds\n"Pid": 2779\n49153\n'
           '"Created": "2026-11-23T13:31:53.082939Z"\nsha256:' + "ab" * 32 + "\n")
    two = ('0123456789ab   base:latest   About a minute ago   Up 14 seconds\n"Pid": 12\n49154\n'
           '"Created": "2027-01-02T03:04:05.1Z"\nsha256:' + "cd" * 32 + "\n")
    assert gen_commands.normalise(one) == gen_commands.normalise(two)
    assert gen_commands.normalise("Exit 0\n") != gen_commands.normalise("Exit 1\n")
    assert gen_commands.normalise("10.0.3.2\n") != gen_commands.normalise("10.0.3.3\n")
    assert gen_commands.render("50%\r100%\nnext\n") == "100%\nnext\n"


def test_commands_md_matches_a_fresh_run(tmp_path):
    fresh = tmp_path / "commands.md"
    result = subprocess.run([PYTHON, os.path.join(DOCS, "gen_commands.py"), str(fresh)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    committed = gen_commands.normalise(read("docs", "commands.md")).splitlines()
    generated = gen_commands.normalise(fresh.read_text()).splitlines()
    diff = "\n".join(difflib.unified_diff(committed, generated, "docs/commands.md", "fresh run",
                                          lineterm=""))
    assert committed == generated, ("docs/commands.md is out of date; regenerate it with "
                                    "`docs/gen_commands.py`:\n" + diff)


def test_commands_md_shows_every_command():
    text = read("docs", "commands.md")
    for name, _ in COMMANDS:
        assert f"\n## {name}\n" in text, name
        assert re.search(rf"^\$ .*docker0 {name}\b", text, re.M), name


# -- docs/walkthrough.md ----------------------------------------------------------------------

def docker0_words(text: str) -> list[str]:
    """The word after `docker0` (and an optional -H HOST:PORT) in every code block."""
    words = []
    for _, body in code_blocks(text):
        words += re.findall(r"(?<![\w/.-])docker0 (?:-H \S+ )?([\w-]+)", body)
    return words


@pytest.mark.parametrize("path", [("docs", "walkthrough.md"), ("docs", "commands.md"), ("README.md",)])
def test_every_docker0_command_in_the_docs_exists(path):
    known = {name for name, _ in COMMANDS} | {"help"}
    words = docker0_words(read(*path))
    assert words
    unknown = [w for w in words if w not in known and w not in ("-d", "-D")]
    assert not unknown, f"{'/'.join(path)} shows unknown commands: {unknown}"


def defined_names() -> set[str]:
    """`function` and `Class.method` for every definition in docker0_2013/."""
    names = set()
    package = os.path.join(REPO, "docker0_2013")
    for filename in os.listdir(package):
        if filename.endswith(".py"):
            tree = ast.parse(read("docker0_2013", filename))
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(node.name)
                elif isinstance(node, ast.ClassDef):
                    names.add(node.name)
                    names.update(f"{node.name}.{item.name}" for item in node.body
                                 if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def test_walkthrough_names_only_real_functions():
    text = read("docs", "walkthrough.md")
    named = set(re.findall(r"`([A-Za-z_][\w.]*)\(\)`", text))
    assert {"IPAllocator.acquire", "NetworkManager.allocate", "PortMapper._rule",
            "Container.start", "Commands.CmdRun"} <= named
    missing = sorted(n for n in named - defined_names() if n != "os.execve")
    assert not missing, f"docs/walkthrough.md names functions that do not exist: {missing}"


def test_walkthrough_excerpts_are_in_the_source():
    excerpts = [body for lang, body in code_blocks(read("docs", "walkthrough.md")) if lang == "python"]
    assert len(excerpts) >= 3
    for body in excerpts:
        first, _, code = body.partition("\n")
        path = re.fullmatch(r"# (docker0_2013/\w+\.py)", first)
        assert path, f"a Python excerpt must start with '# docker0_2013/<file>.py': {first!r}"
        assert code in read(path.group(1)), f"no longer in {path.group(1)}:\n{code}"
    assert any('"-j", "DNAT", "--to-destination"' in body for body in excerpts)


def netns_run(daemon, *command: str) -> str:
    return daemon.netns.exec(*command).stdout


def descendants(pid: str) -> list[str]:
    """Every process below `pid` (the container's wrapper: lxc-execute, LXC's init, the program)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                found += [child, *descendants(child)]
    return found


def fetch(daemon, url: str) -> str:
    """busybox wget from inside the namespace; httpd may still be starting."""
    for _ in range(100):
        result = daemon.netns.exec("busybox", "wget", "-qO-", url, check=False)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.05)
    return result.stderr


def test_the_walkthrough_story(daemon):
    """`run -p 80 base httpd -f -p 80`, and what each step of the walkthrough says you see."""
    daemon.call("import", "-", "base", stdin=base_tar())
    root = daemon.root
    assert sorted(os.listdir(root)) == ["containers", "graph", "repositories"]
    # 1-5: the client's JSON line; run without -d stays attached, so run it in the background.
    client = subprocess.Popen(["ip", "netns", "exec", daemon.netns.name, PYTHON, "-m", "docker0_2013",
                               "run", "-p", "80", "base", "httpd", "-f", "-p", "80"],
                              cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not (short := daemon.call("ps", "-q").strip()) and time.time() < deadline:
            time.sleep(0.05)
        assert re.fullmatch(r"[0-9a-f]{12}", short), daemon.logs()
        [cid] = os.listdir(os.path.join(root, "containers"))
        assert cid.startswith(short) and len(cid) == 64
        container = os.path.join(root, "containers", cid)
        # 4: the record; 7: the first address of the bridge's subnet; 8: the DNAT rule.
        assert '"IpAddress": "10.0.3.2"' in daemon.call("inspect", short)
        port = daemon.call("port", short, "80").strip()
        assert f"-A DOCKER0 -p tcp -m tcp --dport {port} -j DNAT --to-destination 10.0.3.2:80" in \
            netns_run(daemon, "iptables", "-t", "nat", "-S", "DOCKER0")
        assert fetch(daemon, f"http://10.0.3.1:{port}/etc/hostname") == "base\n"
        # 6: the overlay root, seen in the daemon's mount namespace.
        assert subprocess.run(["nsenter", "-t", str(daemon.proc.pid), "-m", "findmnt", "-n", "-o", "FSTYPE",
                               "-T", os.path.join(container, "rootfs")],
                              capture_output=True, text=True).stdout.strip() == "overlay"
        # 9: config.lxc.
        config = open(os.path.join(container, "config.lxc")).read()
        assert "lxc.net.0.link = lxcbr0\n" in config and "lxc.net.0.ipv4.address = 10.0.3.2/24 10.0.3.255\n" in config
        # 11: lxc-ls sees it with -P only.
        listed = netns_run(daemon, "lxc-ls", "-f", "-P", os.path.join(root, "containers"))
        assert re.search(rf"^{cid} +RUNNING .*10\.0\.3\.2", listed, re.M)
        assert cid not in netns_run(daemon, "lxc-ls")
        # 12: httpd is PID 2 of its namespace, routed through the bridge, named by the short ID.
        state_pid = re.search(r'"Pid": (\d+)', daemon.call("inspect", short)).group(1)
        pids = [p for p in descendants(state_pid) if open(f"/proc/{p}/comm").read() == "httpd\n"]
        assert len(pids) == 1
        status = open(f"/proc/{pids[0]}/status").read()
        assert re.search(r"^NSpid:\s+\d+\s+2$", status, re.M)
        assert "default via 10.0.3.1 dev eth0" in subprocess.run(
            ["nsenter", "-t", pids[0], "-n", "ip", "route"], capture_output=True, text=True).stdout
        assert subprocess.run(["nsenter", "-t", pids[0], "-u", "hostname"], capture_output=True,
                              text=True).stdout == short + "\n"
        # 13: stop; the client ends, the rule and the mount go, Exit 143.
        assert daemon.call("stop", short) == short + "\n"
        client.wait(30)
        assert re.search(rf"^{short} .* Exit 143 ", daemon.call("ps", "-a"), re.M)
        assert open(os.path.join(container, "exit-code")).read() == "143\n"
        assert "DNAT" not in netns_run(daemon, "iptables", "-t", "nat", "-S", "DOCKER0")
        assert not os.path.exists(os.path.join(container, "rootfs"))
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


# -- contrib/demo --------------------------------------------------------------------------------

def run_demo(daemon, bindir: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "DEMO_PAUSE": "0",
           "DOCKER0_HOST": "127.0.0.1:4242", "HOME": "/root"}
    return subprocess.run(["ip", "netns", "exec", daemon.netns.name, os.path.join(REPO, "contrib", "demo")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_the_demo_passes_and_fails_when_a_step_misbehaves(daemon):
    bindir = gen_commands.client_dir()
    try:
        missing_base = run_demo(daemon, bindir)
        assert missing_base.returncode == 1
        assert "demo: unexpected output of: docker0 -H 127.0.0.1:4242 images" in missing_base.stderr
        daemon.call("import", "-", "base", stdin=base_tar())
        result = run_demo(daemon, bindir)
        assert result.returncode == 0, result.stdout + result.stderr
        for shown in ("hello world\n", "A /tmp/x\n", "\nbase\n", "Error: No such command: frob\n",
                      "-j DNAT --to-destination 10.0.3."):
            assert shown in result.stdout
        # It removed what it made: no containers, no demo-tour image.
        assert daemon.call("ps", "-a", "-q") == ""
        assert "demo-tour" not in daemon.call("images")
    finally:
        subprocess.run(["rm", "-rf", bindir], check=False)
