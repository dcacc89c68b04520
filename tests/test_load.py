"""Load: 500 concurrent connections mixing `ps`, `images`, `inspect` and `run -d`,
all answered correctly (issue: measured speed and proven robustness)."""
from __future__ import annotations

import json
import random
import re

from helpers import NOTHING, exchange, inside, run_detached, settled_leftovers
CONNECTIONS = 500
RUNS = 20


def test_500_concurrent_connections(d):
    known = run_detached(d, "base", "sleep", "1000")
    full_id = json.loads(d.call("inspect", known))["Id"]
    kinds = ["run"] * RUNS + ["ps", "images", "inspect"] * ((CONNECTIONS - RUNS) // 3)
    kinds += ["ps"] * (CONNECTIONS - len(kinds))
    random.Random(5).shuffle(kinds)
    lines = {"run": ["run", "-d", "-p", "80", "base", "sleep", "1000"], "ps": ["ps", "-a"],
             "images": ["images"], "inspect": ["inspect", known]}
    with inside(d.netns.name):
        replies = exchange([(json.dumps(lines[k]).encode() + b"\n", b"") for k in kinds], timeout=120)
    started = []
    for kind, reply in zip(kinds, (r.decode() for r in replies)):
        if kind == "run":
            assert re.fullmatch(r"[0-9a-f]{12}\n", reply), reply
            started.append(reply.strip())
        elif kind == "ps":
            assert reply.split("\n")[0].split() == ["ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "COMMENT"]
            assert known in reply, reply
        elif kind == "images":
            assert reply.split("\n")[0].split() == ["REPOSITORY", "TAG", "ID", "CREATED", "PARENT"], reply
            assert "\nbase " in reply, reply
        else:
            assert json.loads(reply)["Id"] == full_id
    assert len(set(started)) == RUNS
    addresses = {json.loads(d.call("inspect", cid))["NetworkSettings"]["IpAddress"] for cid in started}
    ports = {json.loads(d.call("inspect", cid))["NetworkSettings"]["PortMapping"]["80"] for cid in started}
    assert len(addresses) == len(ports) == RUNS
    assert sorted(d.call("ps", "-q").split()) == sorted(started + [known])
    for cid in started + [known]:
        assert d.call("rm", cid) == ""
    assert d.call("ps", "-a", "-q") == ""
    assert settled_leftovers(d) == NOTHING
