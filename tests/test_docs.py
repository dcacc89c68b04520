"""The docs stay true: docs/commands.md, docs/walkthrough.md and contrib/demo, run for real.

- docs/gen_commands.py runs again (a real daemon in a namespace) and its output
  must match the committed docs/commands.md once IDs, times, durations, PIDs
  and ports are normalised;
- every `docker0 COMMAND` in the docs' code blocks is a real command, every
  `function()` the walkthrough names is defined in docker0_2013/, and every
  code excerpt it quotes is still in the file it names;
- the walkthrough's story (`run -p 80 base httpd -f -p 80`) is replayed against
  a test daemon and each thing the walkthrough says you will see is checked;
- every "See it" command of the walkthrough is run at the moment of its step
  (SEE_IT says what each must print, and a console block's output must be there);
- the words of the start path docker0 retired appear only about 2013 or in bench/;
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
    """Every process below `pid` (the container's shim: lxc-start, sysinit, the program)."""
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


# -- docs/walkthrough.md: every "See it" block, run ----------------------------------------------

# What each "See it" command must print, by the command as the walkthrough writes it (without
# its comment). Placeholders: {ROOT}, {CID}, {SHORT}. A pattern that starts with "!" must not
# match. A command missing here, or listed here and gone from the walkthrough, fails the test.
SEE_IT = {
    "ls -l /var/lib/docker": [r" containers$", r" graph$", r" repositories$"],
    "cat /var/lib/docker/repositories": [r'^\{"Repositories":\{"base":\{"latest":"[0-9a-f]{64}"\}\}\}$'],
    "ls /var/lib/docker/graph": [r"^[0-9a-f]{64}$", r"^:tmp:$"],
    "cat /var/lib/docker/graph/$(docker0 images -q | head -n 1)*/json": [r'"id":"[0-9a-f]{64}"'],
    "ip addr show lxcbr0": [r"inet 10\.0\.3\.1/24"],
    "iptables -t nat -S": [r"^-N DOCKER0$", r"-j DOCKER0$"],
    "docker0 images -viz": [r"\Adigraph docker \{$", r'^ base -> "[0-9a-f]{12}" \[style=invis\]$',
                            r'^ "[0-9a-f]{12}" \[label="[0-9a-f]{12}\\nbase:latest",shape=box,'],
    'printf \'["run","-d","-p","80","base","httpd","-f","-p","80"]\\n\' | nc -N 127.0.0.1 4242': [r"^[0-9a-f]{12}$"],
    "printf 'port 4f0c2b9e1a7d 80\\n' | nc -N 127.0.0.1 4242": [r"^49154$"],
    "printf 'frob\\n' | nc -N 127.0.0.1 4242": [r"^Error: No such command: frob$"],
    "ss -tn dst 127.0.0.1:4242": [r"ESTAB.* 127\.0\.0\.1:4242"],
    'grep "docker run -p" /var/log/docker0.log': [r"docker run -p 80 base httpd -f -p 80$"],
    "ls -l /var/lib/docker/containers/$CID": [r" config\.json$", r" config\.lxc$", r" rootfs$"],
    "cat /var/lib/docker/containers/$CID/config.json": [r'"Id":"{CID}"', r'"Running":true'],
    "docker0 run base sh -c 'echo out; echo err >&2'": [r"^out$", r"^err$"],
    "ls /var/lib/docker/containers/*/*-stderr.log": [r"^{ROOT}/containers/[0-9a-f]{64}/[0-9a-f]{64}-stderr\.log$"],
    "docker0 logs $(docker0 ps -a -q | head -n 1)": [r"\Aout\nerr\n\Z"],
    "findmnt -T /var/lib/docker/containers/$CID/rootfs": [r"^{ROOT}/containers/{CID}/rootfs +overlay +overlay "],
    "ls /var/lib/docker/containers/$CID/rootfs": [r"^bin$", r"^etc$"],
    "ls /var/lib/docker/containers/$CID/rw": [r"!\S"],       # httpd changes nothing
    "docker0 inspect $CID | grep -A4 NetworkSettings": [r'"IpAddress": "10\.0\.3\.2"', r'"Gateway": "10\.0\.3\.1"'],
    "iptables -t nat -S DOCKER0": [r"^-N DOCKER0$"],
    "docker0 port $CID 80": [r"^49153$"],
    "busybox wget -qO- http://10.0.3.1:49153/etc/hostname": [r"^base$"],
    "cat /var/lib/docker/containers/$CID/config.lxc": [r"^lxc\.net\.0\.link = lxcbr0$", r"^# \w"],
    "ps -o pid,ppid,args -p $PID": [r"^ *\d+ +\d+ +\S*python\S* -I -S -B \S*/docker0_2013/shim\.py$"],
    "readlink /proc/$PID/cwd": [r"^{ROOT}/containers/{CID}$"],
    "ps -o pid,args --ppid $PID": [r"^ *\d+ +\S*lxc-start -F -n {CID} -P {ROOT}/containers "],
    "cat /var/lib/docker/containers/$CID/lxc.log": [r"!\S"],
    "ip link show master lxcbr0": [r"master lxcbr0 state UP"],
    "lxc-ls -f -P /var/lib/docker/containers": [r"^{CID} +RUNNING "],
    "lxc-info -P /var/lib/docker/containers -n $CID": [r"^State: +RUNNING$", r"^PID: +\d+$", r"^IP: +10\.0\.3\.2$"],
    'cat /proc/$(pgrep -f "^httpd -f -p 80$")/cgroup | head -n 2': [r"lxc\.payload\.{CID}"],
    "grep -E '^(Name|PPid|NSpid|Uid|CapBnd)' /proc/$HTTPD/status": [r"^Name:\s+httpd$", r"^NSpid:\s+\d+\s+2$"],
    "nsenter -t $HTTPD -n ip route": [r"^default via 10\.0\.3\.1 dev eth0"],
    "nsenter -t $HTTPD -u hostname": [r"^{SHORT}$"],
    "tr '\\0' '\\n' < /proc/$HTTPD/environ": [r"^HOME=/$", r"^PATH=/"],
    "docker0 ps -a | head -n 2": [r"^{SHORT} .* Exit 143 "],
    "cat /var/lib/docker/containers/$CID/exit-code": [r"\A143\n\Z"],
    "findmnt -T /var/lib/docker/containers/$CID": [r"!overlay"],
    "docker0 rm $CID": [r"!\S"],
}
BEFORE_THE_RUN, AFTER_THE_STOP = ["0"], ["5"]


def see_it_blocks() -> dict[str, tuple[str, str]]:
    """Step number -> (language, body) of the code block that follows its "See it"."""
    sections = re.split(r"^## (\d+)\. .*$", read("docs", "walkthrough.md"), flags=re.M)
    blocks = {}
    for number, text in zip(sections[1::2], sections[2::2]):
        _, see_it, rest = text.partition("\nSee it")
        found = code_blocks(rest) if see_it else []
        if found:
            blocks[number] = found[0]
    return blocks


def commands(language: str, body: str) -> list[tuple[str, list[str]]]:
    """(command without its comment, the output lines a console block shows for it)."""
    found = []
    for line in body.splitlines():
        if language == "console" and not line.startswith("$ "):
            if found and line.strip():
                found[-1][1].append(line)
            continue
        command = re.sub(r"\s+#\s.*$", "", line.removeprefix("$ ")).strip()
        if command:
            found.append((command, []))
    return found


def normalise_output(text: str) -> str:
    text = re.sub(r"\b[0-9a-f]{64}\b|\b[0-9a-f]{12}\b|\b[0-9a-f]{4}\.\.\.", "<ID>", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def test_every_see_it_command_is_checked():
    blocks = see_it_blocks()
    assert {"0", "1", "2", "4", "5", "6", "9", "10", "11", "12", "13"} <= set(blocks)
    shown = {command for block in blocks.values() for command, _ in commands(*block)
             if not re.match(r"[A-Z]+=", command)}
    assert shown == set(SEE_IT), f"not checked: {shown - set(SEE_IT)}; gone: {set(SEE_IT) - shown}"


def run_block(daemon, env: dict, step: str, language: str, body: str, values: dict) -> None:
    """Each command of the block in the daemon's network and mount namespaces, as a reader would."""
    assignments = []
    for command, shown in commands(language, body):
        script = command
        for doc, ours in values["substitute"].items():
            script = script.replace(doc, ours)
        if re.match(r"[A-Z]+=", command):
            assignments.append(script)
            continue
        result = subprocess.run(["nsenter", "-t", str(daemon.proc.pid), "-n", "-m", "sh", "-c",
                                 "; ".join([*assignments, script])],
                                capture_output=True, text=True, env=env, timeout=60)
        where = f"step {step}: {command}\n{result.stdout}{result.stderr}"
        if command.startswith("printf '[\"run\",\"-d\""):     # the ID the next commands name
            values["second_id"] = values["substitute"]["4f0c2b9e1a7d"] = result.stdout.strip()
        assert result.returncode == 0, where
        for pattern in SEE_IT[command]:
            for name, value in (("{ROOT}", daemon.root), ("{CID}", values["cid"]), ("{SHORT}", values["cid"][:12])):
                pattern = pattern.replace(name, re.escape(value))
            if pattern.startswith("!"):
                assert not re.search(pattern[1:], result.stdout, re.M), where
            else:
                assert re.search(pattern, result.stdout, re.M), f"{where}\nno match for {pattern}"
        actual = normalise_output(result.stdout).splitlines()
        for line in shown:          # what a console block shows, in that order
            line = normalise_output(line)
            assert line in actual, f"{where}\nthe walkthrough shows: {line}"
            actual = actual[actual.index(line) + 1:]


def test_the_walkthrough_see_it_blocks(daemon, tmp_path):
    """Every "See it" of the walkthrough, run against a test daemon at the moment of its step."""
    daemon.call("import", "-", "base", stdin=base_tar())
    bindir = gen_commands.client_dir()
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    values = {"cid": "",
              "substitute": {"/var/lib/docker": daemon.root, "/var/log/docker0.log": daemon.log_path}}
    blocks = see_it_blocks()
    client = None
    try:
        for step in BEFORE_THE_RUN:
            run_block(daemon, env, step, *blocks[step], values)
        client = subprocess.Popen(["ip", "netns", "exec", daemon.netns.name, PYTHON, "-m", "docker0_2013",
                                   "run", "-p", "80", "base", "httpd", "-f", "-p", "80"],
                                  cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # a terminal's
        deadline = time.time() + 30                                        # stdin stays open
        while not (short := daemon.call("ps", "-q").strip()) and time.time() < deadline:
            time.sleep(0.05)
        [cid] = os.listdir(os.path.join(daemon.root, "containers"))
        assert cid.startswith(short), daemon.logs()
        pid = re.search(r'"Pid": (\d+)', daemon.call("inspect", cid)).group(1)
        deadline = time.time() + 30
        while not (httpd := [p for p in descendants(pid) if open(f"/proc/{p}/comm").read() == "httpd\n"]):
            assert time.time() < deadline, "httpd did not start"
            time.sleep(0.05)
        values["cid"] = env["CID"] = cid
        # Other tests on this host may run an httpd too: the walkthrough's pgrep means this one.
        values["substitute"]['$(pgrep -f "^httpd -f -p 80$")'] = httpd[0]
        for step in sorted(set(blocks) - set(BEFORE_THE_RUN) - set(AFTER_THE_STOP) - {"13"}, key=int):
            run_block(daemon, env, step, *blocks[step], values)
        daemon.call("kill", values["second_id"])            # step 1's second container, as it says
        daemon.call("rm", values["second_id"])
        assert daemon.call("stop", cid) == cid[:12] + "\n"   # step 13's command
        client.wait(30)
        for step in ["13", *AFTER_THE_STOP]:
            run_block(daemon, env, step, *blocks[step], values)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        subprocess.run(["rm", "-rf", bindir], check=False)


# -- retired words ---------------------------------------------------------------------------

RETIRED = ("lxc-" + "execute", "init" + ".lxc")    # split: this file is searched too


def project_files() -> list[str]:
    """The project's files, relative to REPO, without git (a checkout may be a tarball's):
    no hidden, bytecode or build directories."""
    found = []
    for top, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"
                   and not d.endswith(".egg-info") and d != "build"]
        found += [os.path.relpath(os.path.join(top, name), REPO) for name in files]
    return sorted(found)


def test_lxc_execute_and_its_init_appear_only_where_the_text_is_about_2013_or_the_benchmarks():
    """docker0 once ran containers with the RETIRED pair, LXC's execute tool and its small
    init; sysinit is PID 1 under `lxc-start -F` now. Outside bench/ (which measures against
    them), a line may name them only if it says it is about 2013 or earlier times."""
    found = []
    for path in project_files():
        # contrib/install checks that LXC is installed by one of its programs (not prose).
        if path.startswith("bench/") or path == "contrib/install" or path.endswith((".png", ".c")):
            continue
        with open(os.path.join(REPO, path), errors="replace") as f:
            for number, line in enumerate(f, 1):
                if any(word in line for word in RETIRED) and not re.search(r"2013|formerly|until", line):
                    found.append(f"{path}:{number}: {line.strip()}")
    assert not found, "retired words in text about today:\n" + "\n".join(found)


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
