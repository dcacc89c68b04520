"""Write docs/commands.md: every docker0 command, its usage line and a real run.

    /opt/docker0/bin/python docs/gen_commands.py [OUTPUT]       (as root; default docs/commands.md)

It starts a real `docker0 -d` in a private network namespace (tests/netns.py,
the same isolation the tests use: its own lxcbr0, iptables and
127.0.0.1:4242, a temporary root), imports the busybox `base` image from
contrib/mkimage-busybox, starts Debian's `docker-registry` on 127.0.0.1:5000
in the same namespace for login/push/pull, then runs each example below with
`sh -c` inside the namespace and writes the command and its output.

IDs, times, durations, PIDs and ports differ from run to run; `normalise()`
replaces them with placeholders, and tests/test_docs.py compares a fresh run
with the committed file through it. The temporary root is shown as
/var/lib/docker (the default root) and the source tree as /path/to/docker0.
"""
from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)

from netns import PYTHON, Daemon  # noqa: E402

from docker0_2013.commands import COMMANDS  # noqa: E402

REGISTRY = "127.0.0.1:5000"
SHOWN_ROOT = "/var/lib/docker"
SHOWN_REPO = "/path/to/docker0"


@dataclass
class Step:
    """One example: a shell line run in the daemon's namespace, and what its output must show."""
    command: str                 # may name earlier captures: {web}, {port}, ...
    expect: str = ""             # a regular expression the output must match (re.search)
    capture: str = ""            # keep the output's first line under this name
    stdin: str = ""
    note: str = ""               # a sentence shown before the example


@dataclass
class Section:
    name: str
    text: str
    steps: list[Step] = field(default_factory=list)


ID = r"[0-9a-f]{12}\n"
SECTIONS = [
    Section("help", "The list of commands; `docker0 help COMMAND` prints a command's usage.",
            [Step("docker0 help", r"Commands:\n    attach")]),
    Section("version", "The version and the git commit of the source tree the daemon runs "
            "(`+CHANGES` when it has uncommitted edits).",
            [Step("docker0 version", r"^Version:0\.1\.3\nGit Commit:")]),
    Section("import", "A new image from a tarball on stdin (`-`) or at a URL; prints its ID. "
            "contrib/mkimage-busybox writes a busybox root filesystem as a tar archive.",
            [Step("contrib/mkimage-busybox | docker0 import - base", "^" + ID + "$", capture="base")]),
    Section("images", "The tagged images (`-a`: every image, `-q`: IDs only, `-viz`: the image "
            "tree in Graphviz's dot language, as Docker 0.4 added it).",
            [Step("docker0 images", r"base +latest +{base}"),
             Step("docker0 images -viz", r'"{base}" \[label="{base}\\nbase:latest"')]),
    Section("info", "Counts of containers and images.",
            [Step("docker0 info", r"containers: 0\nversion: 0\.1\.3\nimages: 1\n")]),
    Section("history", "An image and its parents, newest first.",
            [Step("docker0 history base", r"{base}")]),
    Section("tag", "Give an image another name; prints nothing.",
            [Step("docker0 tag base busybox", r"^$"),
             Step("docker0 images", r"busybox +latest +{base}")]),
    Section("run", "Create a container from an image and start a command in it. Without `-d` "
            "the client stays attached to the output until the command ends; with `-d` it "
            "prints the new container's ID. `-p 80` maps a public port to port 80 of the "
            "container.",
            [Step("docker0 run base echo hello world", r"^hello world\n$"),
             Step("docker0 run -d -p 80 base httpd -f -p 80 -h /etc", "^" + ID + "$", capture="web"),
             Step("docker0 run -i base cat", r"^typed on stdin\n$", stdin="typed on stdin\n",
                  note="With `-i` the client's stdin reaches the container:"),
             Step("docker0 run base sh -c 'echo hi > /tmp/x; rm /etc/hostname; echo changed'",
                  r"^changed\n$")]),
    Section("ps", "Running containers (`-a`: all, `-q`: IDs only, `-notrunc`: whole commands), "
            "newest first.",
            [Step("docker0 ps", r"ID +IMAGE +COMMAND +CREATED +STATUS +COMMENT\n{web} +base:latest "
                  r"+httpd -f -p 80 -h /e +.* ago +Up "),
             Step("docker0 ps -a", r"Exit 0"),
             Step("docker0 ps -a -q | head -n 1", "^" + ID + "$", capture="changed")]),
    Section("port", "The public port that iptables maps to a private port of the container.",
            [Step("docker0 port {web} 80", r"^\d+\n$", capture="port"),
             Step("busybox wget -qO- http://10.0.3.1:{port}/hostname", r"^base\n$",
                  note="The mapping is a DNAT rule for local destinations, so the public "
                  "port answers on the host's addresses, here the bridge's:")]),
    Section("inspect", "The container's record (the `config.json` of its directory), "
            "or an image's.",
            [Step("docker0 inspect {web}", r'"IpAddress": "10\.0\.3\.\d+"')]),
    Section("logs", "Everything the container wrote to stdout and stderr, from its log files.",
            [Step("docker0 logs {changed}", r"^changed\n$")]),
    Section("diff", "Changes in the container's filesystem against its image: "
            "`A` added, `C` changed, `D` deleted.",
            [Step("docker0 diff {changed}", r"D /etc/hostname\n(.|\n)*A /tmp/x\n")]),
    Section("commit", "A new image from the container's changes; prints its ID.",
            [Step("docker0 commit -m 'a file in /tmp' {changed} mine v1", "^" + ID + "$",
                  capture="mine"),
             Step("docker0 run mine:v1 cat /tmp/x", r"^hi\n$"),
             Step("docker0 history mine:v1", r"{mine}(.|\n)*{base}")]),
    Section("export", "The container's whole filesystem as a tar archive on stdout "
            "(here only its first entries).",
            [Step("docker0 export {changed} | tar -tf - | sed -n 1,6p", r"^\./\n")]),
    Section("stop", "SIGTERM, then SIGKILL after 10 seconds; prints the ID.",
            [Step("docker0 stop {web}", "^{web}\n$"),
             Step("docker0 ps -a", r"{web} .* Exit 143")]),
    Section("start", "Start a stopped container again, with a new IP and new ports.",
            [Step("docker0 start {web}", "^{web}\n$"),
             Step("docker0 port {web} 80", r"^\d+\n$")]),
    Section("restart", "Stop, then start.",
            [Step("docker0 restart {web}", "^{web}\n$")]),
    Section("kill", "SIGKILL to the container at once; prints nothing.",
            [Step("docker0 kill {web}", "^$")]),
    Section("wait", "Block until the container stops, then print its exit code "
            "(-1 for a killed container).",
            [Step("docker0 wait {web}", r"^-1\n$")]),
    Section("attach", "Follow a running container's output (and feed its stdin if it was "
            "started with `-i`) until it stops.",
            [Step("docker0 run -d base sh -c 'sleep 2; echo late output; exit 3'", "^" + ID + "$",
                  capture="late"),
             Step("docker0 attach {late}", r"^late output\n$"),
             Step("docker0 wait {late}", r"^3\n$")]),
    Section("rm", "Remove a stopped container, its rw layer and its logs; prints nothing.",
            [Step("docker0 rm {late}", r"^$"),
             Step("docker0 ps -a -q", r"^(?!(.|\n)*{late})")]),
    Section("rmi", "Remove an image by ID; prints nothing.",
            [Step("docker0 rmi {mine}", r"^Error: .* uses it\n$",
                  note="An image that a container was made from stays until that container is removed:"),
             Step("docker0 rm $(docker0 ps -a -q | head -n 1)", r"^$"),
             Step("docker0 rmi {mine}", r"^$"),
             Step("docker0 images", r"^(?!(.|\n)*mine)")]),
    Section("login", "Log in to Docker Hub, or to the registry SERVER (2013 took no argument). "
            "Here a local `docker-registry` with the user `demo` (password `secret`) on "
            f"{REGISTRY}; the answers are typed on stdin. The record is kept in "
            "`/var/lib/docker/.dockercfg`.",
            [Step(f"printf 'demo\\nsecret\\ndemo@example.com\\n' | docker0 login {REGISTRY}",
                  r"Login Succeeded")]),
    Section("push", "Push a repository to the registry its name starts with (the v2 API; "
            "a name without a server means Docker Hub and needs `login`).",
            [Step(f"docker0 tag base {REGISTRY}/demo/base", r"^$"),
             Step(f"docker0 push {REGISTRY}/demo/base", rf"Registering tag {REGISTRY}/demo/base:latest")]),
    Section("pull", "Pull a repository (all its tags, or NAME:TAG) with the layers it does not "
            "have yet, from the registry its name starts with (Docker Hub without one).",
            [Step(f"docker0 pull {REGISTRY}/demo/base", rf"Pulling repository {REGISTRY}/demo/base")]),
]


# -- Output as the docs show it, and as the tests compare it ----------------------------------

def render(text: str) -> str:
    """What a terminal would show: a line rewritten with `\\r` keeps its last version."""
    lines = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


NORMALISERS = [
    (r"\b[0-9a-f]{64}\b", "<ID64>"),
    (r"\b[0-9a-f]{12}\b", "<ID>"),
    (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?Z?", "<TIME>"),
    (r"\b(\d+|About an?|Less than a) (second|minute|hour|day|week|month|year)s?\b", "<DURATION>"),
    (r"\b(49(15[3-9]|1[6-9]\d|[2-9]\d\d)|5\d{4}|6[0-5]\d{3})\b", "<PORT>"),
    (r'"Pid": \d+', '"Pid": <PID>'),
    (r"Git Commit:\S*", "Git Commit:<COMMIT>"),
    (r"\d+/\d+ \(\d+%\)", "<PROGRESS>"),
    (r"  +", "  "),                  # column widths follow the lengths of the values above
    (r" +\n", "\n"),
]


def normalise(text: str) -> str:
    for pattern, replacement in NORMALISERS:
        text = re.sub(pattern, replacement, text)
    return text


# -- Running the examples ------------------------------------------------------------------------

def client_dir() -> str:
    """A directory with a `docker0` that runs this source tree's client."""
    directory = tempfile.mkdtemp(prefix="docker0-bin-")
    path = os.path.join(directory, "docker0")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nPYTHONPATH={REPO} exec {PYTHON} -m docker0_2013 \"$@\"\n")
    os.chmod(path, stat.S_IRWXU)
    return directory


def start_registry(daemon: Daemon, workdir: str) -> subprocess.Popen:
    """Debian's docker-registry on 127.0.0.1:5000 in the daemon's namespace, user demo/secret."""
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "demo", "secret"], check=True,
                              capture_output=True, text=True).stdout.strip()
    with open(os.path.join(workdir, "htpasswd"), "w") as f:
        f.write(htpasswd + "\n")
    config = os.path.join(workdir, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {workdir}/storage\nhttp:\n  addr: {REGISTRY}\n  secret: docs\n"
                f"auth:\n  htpasswd:\n    realm: docs\n    path: {workdir}/htpasswd\n")
    log = open(os.path.join(workdir, "log"), "wb")
    proc = daemon.netns.popen("docker-registry", "serve", config, stdout=log, stderr=log)
    deadline = time.time() + 20
    while True:
        try:
            daemon.netns.socket_connect(("127.0.0.1", 5000), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("docker-registry did not start") from None
            time.sleep(0.05)


class Runner:
    def __init__(self, daemon: Daemon, bindir: str) -> None:
        self.daemon, self.bindir = daemon, bindir
        self.captured: dict[str, str] = {}

    def fill(self, text: str) -> str:
        """`{name}` becomes what an earlier step captured under that name."""
        return re.sub(r"\{(\w+)\}", lambda m: self.captured.get(m.group(1), m.group(0)), text)

    def run(self, step: Step) -> tuple[str, str]:
        """(the command as shown, its output as shown); raises if it does not match `expect`."""
        command = self.fill(step.command)
        env = {"PATH": f"{self.bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
        result = subprocess.run(["ip", "netns", "exec", self.daemon.netns.name, "sh", "-c", command],
                                input=step.stdin.encode(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=REPO, env=env, timeout=120)
        output = render(result.stdout.decode(errors="replace"))
        expect = self.fill(step.expect)
        if result.returncode != 0 or (expect and not re.search(expect, output)):
            raise RuntimeError(f"`{command}` exited {result.returncode} and printed:\n{output}\n"
                               f"expected: {expect!r}\ndaemon log:\n{self.daemon.logs()}")
        if step.capture:
            self.captured[step.capture] = output.split("\n")[0].strip()
        return command, output


def usage_of(runner: Runner, name: str) -> str:
    _, text = runner.run(Step(f"docker0 help {name}"))
    return text.strip("\n") if text.lstrip("\n").startswith("Usage:") else ""


def shown(text: str, daemon: Daemon) -> str:
    return text.replace(daemon.root, SHOWN_ROOT).replace(REPO, SHOWN_REPO)


def generate() -> str:
    covered = {s.name for s in SECTIONS}
    missing = [name for name, _ in COMMANDS if name not in covered]
    if missing:
        raise RuntimeError(f"commands without an example: {missing}")
    daemon = Daemon()
    bindir = client_dir()
    workdir = tempfile.mkdtemp(prefix="docker0-registry-")
    registry = None
    try:
        registry = start_registry(daemon, workdir)
        runner = Runner(daemon, bindir)
        out = [HEADER]
        for section in SECTIONS:
            out.append(f"\n## {section.name}\n\n{section.text}\n")
            usage = usage_of(runner, section.name)
            if usage:
                out.append(f"\n```\n{usage}\n```\n")
            for step in section.steps:
                command, output = runner.run(step)
                if step.note:
                    out.append(f"\n{step.note}\n")
                out.append(f"\n```console\n$ {command}\n{output}```\n")
        return shown("".join(out), daemon)
    finally:
        if registry is not None:
            os.kill(registry.pid, signal.SIGTERM)
            registry.wait(10)
        daemon.destroy()
        subprocess.run(["rm", "-rf", bindir, workdir], check=False)


HEADER = """# docker0 commands

Every command of docker0 with its usage and a real run, in the order of a
short session. This file is generated by `docs/gen_commands.py` (run it as
root: `/opt/docker0/bin/python docs/gen_commands.py`), which starts a real
daemon in a private network namespace with its own `lxcbr0` (10.0.3.1/24),
imports the busybox `base` image and runs each command below with `sh -c`;
`tests/test_docs.py` runs it again and checks this file still matches, apart
from IDs, times, durations, PIDs and port numbers. The daemon's temporary
root is shown as `/var/lib/docker`.

The daemon side of every command is `Cmd<Name>` in `docker0_2013/commands.py`
(commands.go of 2013); the usage text is the 2013 one, `docker` included.
`docker0 -H HOST:PORT COMMAND` talks to a daemon elsewhere than 127.0.0.1:4242.
"""


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(DOCS, "commands.md")
    text = generate()
    with open(target + ".tmp", "w") as f:
        f.write(text)
    os.replace(target + ".tmp", target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
