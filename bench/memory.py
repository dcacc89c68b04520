"""Memory: the daemon's RSS (VmRSS) idle, with the base image imported, and with
COUNT running containers (`run -d base sleep 1000`, started 10 at a time over
the raw protocol). Baseline: the RSS of a bare interpreter of the same Python.
Also what docker0 as a whole holds then: the daemon, a spare shim, and each
container's shim and lxc-start monitor (its processes in the namespace with
the host's root; the containers' own have theirs).

    /opt/docker0/bin/python bench/memory.py [COUNT]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from common import PYTHON, daemon_with_base, host_rooted, rss_kb
from helpers import daemon_rss_kb, exchange, inside

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 50


def bare_interpreter_kb() -> int:
    script = "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1])"
    return int(subprocess.run([PYTHON, "-c", script], check=True, capture_output=True, text=True).stdout)


def main() -> None:
    daemon, _ = daemon_with_base()
    try:
        line = json.dumps(["run", "-d", "base", "sleep", "1000"]).encode() + b"\n"
        with inside(daemon.netns.name):
            exchange([(b'["ps","-a"]\n', b""), (b'["images"]\n', b"")])
            idle = daemon_rss_kb(daemon)
            for _ in range(COUNT // 10):
                replies = exchange([(line, b"")] * 10)
                assert all(len(r) == 13 for r in replies), replies
            assert len(daemon.call("ps", "-q").split()) == COUNT
            busy = daemon_rss_kb(daemon)
            processes = host_rooted(daemon.netns.name, {os.getpid()})
            whole, proportional = rss_kb(processes), rss_kb(processes, "smaps_rollup", "Pss:")
            daemon.call("rm", *daemon.call("ps", "-q").split())
        bare = bare_interpreter_kb()
        print(f"memory: daemon RSS idle {idle / 1024:.1f} MB (target 60), with {COUNT} running containers "
              f"{busy / 1024:.1f} MB (target 120); a bare interpreter {bare / 1024:.1f} MB; "
              f"ratios {idle / bare:.2f} and {busy / bare:.2f}", flush=True)
        print(f"memory: docker0's {len(processes)} processes with {COUNT} running containers "
              f"{whole / 1024:.1f} MB ({(whole - busy) / 1024 / COUNT:.2f} MB per container beside the "
              f"daemon); PSS {proportional / 1024:.1f} MB", flush=True)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    main()
