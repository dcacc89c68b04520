"""Fault tests: SIGKILL the daemon at random moments during imports, commits, runs
and rms, restart it each time, and check that nothing on disk or on the host is
half-done, inconsistent or leaked (issue: measured speed and proven robustness)."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time

from helpers import NOTHING, dnat_rules, run_detached, saved_containers, settled_leftovers
from netns import Daemon

KILLS_PER_OPERATION = 8          # four operations: 32 kills in all
SEED = int(os.environ.get("DOCKER0_FAULT_SEED", "7"))   # another seed: other moments
ID = re.compile(r"[0-9a-f]{64}")


def in_background(d: Daemon, *args: str, stdin: bytes = b"") -> threading.Thread:
    """Send a command and read whatever comes back; a reset by the dying daemon is fine."""
    def send() -> None:
        try:
            d.raw(json.dumps(list(args)).encode() + b"\n", stdin, timeout=30)
        except OSError:
            pass
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def timed_call(d: Daemon, *args: str, stdin: bytes = b"") -> tuple[str, float]:
    started = time.monotonic()
    out = d.call(*args, stdin=stdin)
    return out, time.monotonic() - started


def kill_during(d: Daemon, rng: random.Random, duration: float, *args: str, stdin: bytes = b"") -> None:
    """Start `args`, SIGKILL the daemon somewhere inside its usual `duration`, restart it."""
    thread = in_background(d, *args, stdin=stdin)
    time.sleep(rng.uniform(0, duration * 1.2))
    d.kill(signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive()
    d.start()
    check_consistent(d)


def check_images(d: Daemon) -> None:
    graph = os.path.join(d.root, "graph")
    assert os.listdir(os.path.join(graph, ":tmp:")) == []
    images = {}
    for name in os.listdir(graph):
        if name == ":tmp:":
            continue
        assert ID.fullmatch(name), name
        assert os.path.isdir(os.path.join(graph, name, "layer")), name
        with open(os.path.join(graph, name, "json"), "rb") as f:
            images[name] = json.loads(f.read())
        assert images[name]["id"] == name
    for image in images.values():
        assert not image.get("parent") or image["parent"] in images, image
    with open(os.path.join(d.root, "repositories"), "rb") as f:
        repositories = json.loads(f.read())["Repositories"]
    for repo, tags in repositories.items():
        for tag, image_id in tags.items():
            assert image_id in images, (repo, tag, image_id)
            assert json.loads(d.call("inspect", f"{repo}:{tag}"))["id"] == image_id


def check_containers(d: Daemon) -> None:
    records = saved_containers(d)
    for name, record in records.items():
        assert record["Id"] == name
        assert record["Image"] in os.listdir(os.path.join(d.root, "graph"))
    assert sorted(d.call("ps", "-a", "-q").split()) == sorted(name[:12] for name in records)
    # Every DNAT rule belongs to a port of a running container, and the reverse.
    mapped = sorted(
        f"{port}:{json.loads(d.call('inspect', cid))['NetworkSettings']['IpAddress']}:{private}"
        for cid in d.call("ps", "-q").split()
        for private, port in (json.loads(d.call("inspect", cid))["NetworkSettings"]["PortMapping"] or {}).items())
    rules = sorted(f"{r.split('--dport ')[1].split()[0]}:{r.split('--to-destination ')[1]}"
                   for r in dnat_rules(d))
    assert rules == mapped


def check_consistent(d: Daemon) -> None:
    check_images(d)
    check_containers(d)


def remove_all(d: Daemon) -> None:
    for cid in d.call("ps", "-a", "-q").split():
        assert d.call("rm", cid) == "", cid
    assert d.call("ps", "-a", "-q") == ""
    assert os.listdir(os.path.join(d.root, "containers")) == []
    assert settled_leftovers(d) == NOTHING


def test_sigkill_during_imports_and_commits(d, base_tar):
    rng = random.Random(SEED)
    changed = run_detached(d, "base", "sh", "-c", "echo hi > /tmp/new; cp -r /bin /copy")
    assert d.call("wait", changed) == "0\n"
    _, import_time = timed_call(d, "import", "-", "timed", stdin=base_tar)
    _, commit_time = timed_call(d, "commit", changed, "timedc")
    for i in range(KILLS_PER_OPERATION):
        kill_during(d, rng, import_time, "import", "-", f"imp{i}", stdin=base_tar)
        kill_during(d, rng, commit_time, "commit", changed, f"com{i}", "v1")
    # What survived works: a committed image runs, an imported one too.
    for repo in ("timedc", "timed"):
        assert d.call("run", repo, "cat", "/etc/hostname") != ""
    remove_all(d)


def test_sigkill_during_runs_and_rms(d):
    rng = random.Random(SEED + 1)
    out, run_time = timed_call(d, "run", "-d", "-p", "80", "base", "sleep", "1000")
    _, rm_time = timed_call(d, "rm", out.strip())
    for i in range(KILLS_PER_OPERATION):
        flags = ["-p", "80"] if i % 2 else []
        kill_during(d, rng, run_time, "run", "-d", *flags, "base", "sleep", "1000")
        victim = run_detached(d, "-p", "8080", "base", "sleep", "1000")
        kill_during(d, rng, rm_time, "rm", victim)
    running = d.call("ps", "-q").split()
    assert running        # containers outlive their daemon and are followed again
    for cid in running:
        assert d.call("run", "base", "ping", "-c1", "-W2",
                      json.loads(d.call("inspect", cid))["NetworkSettings"]["IpAddress"]).count(" 0% packet loss") == 1
    remove_all(d)
