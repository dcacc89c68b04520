"""Scale: `ps -a` with 1,000 saved containers, and daemon start-up with them.

One real container is run and stopped; with the daemon down, its record is
copied to COUNT-1 more containers/<ID>/config.json (new IDs and creation
times, as real stopped containers would have). Then:
- start-up: from starting `docker0 -d` to its port answering (median of
  STARTS; a poll every 2 ms), also with no containers, for comparison;
- `ps -a` and `version` over the raw protocol from inside the namespace
  (median of RUNS each), so the client's own start-up is not counted.
Both are also given as a ratio to `version` on the same daemon.

    /opt/docker0/bin/python bench/scale.py [COUNT]
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import time

from common import daemon_with_base, median_ms
from helpers import inside

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1000
STARTS, RUNS = 5, 20


def request(line: bytes) -> tuple[float, bytes]:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", 4242)) as sock:
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    return time.perf_counter() - started, b"".join(chunks)


def start_time(daemon) -> float:
    """Seconds from starting the daemon until it accepts a connection."""
    daemon.kill()
    started = time.perf_counter()
    daemon.start(wait=False)
    while True:
        try:
            socket.create_connection(("127.0.0.1", 4242), timeout=1).close()
            return time.perf_counter() - started
        except OSError:
            if daemon.proc.poll() is not None:
                raise RuntimeError(daemon.logs())
            time.sleep(0.002)


def clone_records(root: str, count: int) -> None:
    containers = os.path.join(root, "containers")
    [model_id] = os.listdir(containers)
    with open(os.path.join(containers, model_id, "config.json")) as f:
        model = json.load(f)
    for i in range(count):
        record = dict(model, Id=secrets.token_hex(32), Created=f"2013-03-{1 + i % 28:02d}T10:{i // 60 % 60:02d}:"
                      f"{i % 60:02d}.{i:06d}Z")
        record["Config"] = dict(model["Config"], Hostname=record["Id"][:12])
        path = os.path.join(containers, record["Id"])
        os.mkdir(path, 0o700)
        shutil.copy(os.path.join(containers, model_id, "exit-code"), path)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(record, f)
        os.chmod(os.path.join(path, "config.json"), 0o600)


def main() -> None:
    daemon, _ = daemon_with_base()
    try:
        assert daemon.call("run", "base", "true") == ""
        with inside(daemon.netns.name):
            empty_start = [start_time(daemon) for _ in range(STARTS)]
            daemon.kill()
            clone_records(daemon.root, COUNT - 1)
            starts = [start_time(daemon) for _ in range(STARTS)]
            versions = [request(b'["version"]\n')[0] for _ in range(RUNS)]
            lists = []
            for _ in range(RUNS):
                elapsed, reply = request(b'["ps","-a"]\n')
                assert reply.count(b"\n") == COUNT + 1, reply[:200]
                lists.append(elapsed)
        v, p, s, e = median_ms(versions), median_ms(lists), median_ms(starts), median_ms(empty_start)
        print(f"scale ({COUNT} containers): ps -a {p:.1f} ms (target < 50), ratio to version ({v:.1f} ms) "
              f"{p / v:.1f}; daemon start-up {s:.0f} ms (target < 1000; with no containers {e:.0f} ms), "
              f"ratio to version {s / v:.0f}", flush=True)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    main()
