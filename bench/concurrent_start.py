"""Concurrent start: 20 `docker0 run -d base sleep 1000` at once (the real client) vs
20 concurrent `lxc-execute` of /bin/true, each on its own overlay mount and IP.

`run -d` returns once the container is started; lxc-execute of /bin/true once
it has started and ended, so the baseline is if anything a little slow. The
20 docker0 containers are then checked for 20 distinct IPs and removed (not
timed). Median of ROUNDS rounds.

    /opt/docker0/bin/python bench/concurrent_start.py [ROUNDS]
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

from common import CLIENT, REPO, Baseline, daemon_with_base, median_ms, reexec_inside, wall
from helpers import exchange

COUNT = 20
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 5


def inner(layer: str) -> None:
    baseline = Baseline(layer, COUNT)
    try:
        ours, raw, theirs = [], [], []
        line = json.dumps(["run", "-d", "base", "sleep", "1000"]).encode() + b"\n"
        for _ in range(ROUNDS + 1):                         # the first round warms caches
            theirs.append(wall([baseline.command(i, "/bin/true") for i in range(COUNT)]))
            ours.append(wall([[*CLIENT, "run", "-d", "base", "sleep", "1000"]] * COUNT))
            remove_all_checking_ips()
            started = time.perf_counter()
            exchange([(line, b"")] * COUNT)
            raw.append(time.perf_counter() - started)
            remove_all_checking_ips()
        a, r, b = median_ms(ours[1:]), median_ms(raw[1:]), median_ms(theirs[1:])
        print(f"concurrent start: {COUNT} x docker0 run -d {a:.0f} ms (the daemon alone, raw protocol: "
              f"{r:.0f} ms), {COUNT} x lxc-execute {b:.0f} ms (median of {ROUNDS}); ratio {a / b:.2f} "
              f"(daemon alone {r / b:.2f}) (target <= 1.5); {COUNT} distinct IPs each round", flush=True)
    finally:
        baseline.close()


def remove_all_checking_ips() -> None:
    ids = call("ps", "-q").split()
    ips = {json.loads(call("inspect", cid))["NetworkSettings"]["IpAddress"] for cid in ids}
    assert len(ids) == COUNT and len(ips) == COUNT, (ids, ips)
    call("rm", *ids)


def call(*args: str) -> str:
    return subprocess.run([*CLIENT, *args], check=True, capture_output=True, text=True, cwd=REPO).stdout


def main() -> None:
    daemon, layer = daemon_with_base()
    try:
        reexec_inside(daemon, __file__, str(ROUNDS), layer)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    if "--inner" in sys.argv:
        rounds, layer = sys.argv[sys.argv.index("--inner") + 1:]
        ROUNDS = int(rounds)
        inner(layer)
    else:
        main()
