"""Output streaming: a container writing SIZE bytes to stdout, through the daemon
to the real client (`docker0 run base head -c SIZE /dev/zero`, read from the
client's stdout pipe), vs the same command under `lxc-execute` writing to a pipe.

Throughput = SIZE / wall time, both including container start; the container's
output goes through a pipe to its shim (shim.py), which splices it into the log
file, which the daemon follows (container.py).
Median of ROUNDS rounds; each docker0 container is removed afterwards.

    /opt/docker0/bin/python bench/output_streaming.py [ROUNDS] [MEGABYTES]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import CLIENT, REPO, Baseline, daemon_with_base, reexec_inside

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
MEGABYTES = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 500


def drain(command: list[str], size: int) -> float:
    """Seconds until `command`'s stdout has delivered `size` bytes and it has ended."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    got = 0
    while data := proc.stdout.read(1 << 20):
        got += len(data)
    proc.wait()
    elapsed = time.perf_counter() - started
    assert got == size and proc.returncode == 0, (command[:4], got, proc.returncode)
    return elapsed


def inner(layer: str) -> None:
    size = MEGABYTES * 1000 * 1000
    baseline = Baseline(layer)
    try:
        ours, theirs = [], []
        for _ in range(ROUNDS):
            theirs.append(drain(baseline.command(0, "head", "-c", str(size), "/dev/zero"), size))
            ours.append(drain([*CLIENT, "run", "base", "head", "-c", str(size), "/dev/zero"], size))
            ids = subprocess.run([*CLIENT, "ps", "-a", "-q"], capture_output=True, text=True, cwd=REPO).stdout.split()
            subprocess.run([*CLIENT, "rm", *ids], check=True, capture_output=True, cwd=REPO)
        a = size / statistics.median(ours) / 1e6
        b = size / statistics.median(theirs) / 1e6
        print(f"output streaming ({MEGABYTES} MB): docker0 run {a:.0f} MB/s, lxc-execute to a pipe {b:.0f} MB/s "
              f"(median of {ROUNDS}); ratio {a / b:.2f} (target >= 0.5)", flush=True)
    finally:
        baseline.close()


def main() -> None:
    daemon, layer = daemon_with_base()
    try:
        reexec_inside(daemon, __file__, str(ROUNDS), str(MEGABYTES), layer)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    if "--inner" in sys.argv:
        rounds, megabytes, layer = sys.argv[sys.argv.index("--inner") + 1:]
        ROUNDS, MEGABYTES = int(rounds), int(megabytes)
        inner(layer)
    else:
        main()
