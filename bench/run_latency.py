"""Run latency: `docker0 run base /bin/true` against plain `lxc-execute` of the same rootfs.

The bench starts a daemon in a private network namespace with lxcbr0, then
re-runs itself inside that namespace (with the host's cgroups visible, as the
daemon sees them), so every command is timed as a direct child process:

- docker0: the real client, `docker0 run base /bin/true` (client start,
  protocol, container record, overlay mount, sysinit, teardown, client exit);
- baseline: `lxc-execute` of the same image layer, through an overlayfs mount,
  with a veth on the same bridge and an address: the same network setup.

Each is run RUNS times after a warm-up, in ABBA order (docker0, lxc-execute,
lxc-execute, docker0, ...): a container leaves the kernel work to finish after
it exits (its network namespace, RCU callbacks), and this way each command
follows itself as often as the other. The medians and their ratio are printed.
Two more medians show where docker0's time goes: the same run sent over the
raw protocol (the daemon and the container, no client process) and `docker0
version` (the client's start-up and round trip).

    /opt/docker0/bin/python bench/run_latency.py [RUNS]
"""
from __future__ import annotations

import sys
import time

from common import CLIENT, Baseline, daemon_with_base, median_ms, reexec_inside, timed
from helpers import exchange

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20


def inner(layer: str) -> None:
    """Inside the namespace: time both commands in ABBA order, so that neither
    always runs right after the other (each leaves the kernel some work)."""
    baseline = Baseline(layer)
    try:
        docker0 = lambda: timed([*CLIENT, "run", "base", "/bin/true"])    # noqa: E731
        lxc = lambda: timed(baseline.command(0, "/bin/true"))              # noqa: E731
        docker0(), lxc()                                 # warm caches
        ours, theirs = [], []
        for round in range(RUNS):
            pair = [(docker0, ours), (lxc, theirs)]
            for run, times in pair if round % 2 == 0 else reversed(pair):
                times.append(run())
        raw = [timed_raw(b'["run","base","/bin/true"]\n') for _ in range(RUNS)]
        client = [timed([*CLIENT, "version"]) for _ in range(RUNS)]
        a, b = median_ms(ours), median_ms(theirs)
        print(f"of which the daemon and the container (raw protocol, no client): {median_ms(raw):.1f} ms; "
              f"the client's own start-up and round trip (`docker0 version`): {median_ms(client):.1f} ms",
              flush=True)
        print(f"run latency: docker0 run {a:.1f} ms, lxc-execute {b:.1f} ms "
              f"(median of {RUNS}); ratio {a / b:.2f} (target <= 1.5)", flush=True)
    finally:
        baseline.close()


def timed_raw(line: bytes) -> float:
    started = time.perf_counter()
    exchange([(line, b"")])
    return time.perf_counter() - started


def main() -> None:
    daemon, layer = daemon_with_base()
    try:
        reexec_inside(daemon, __file__, str(RUNS), layer)
    finally:
        daemon.destroy()


if __name__ == "__main__":
    if "--inner" in sys.argv:
        runs, layer = sys.argv[sys.argv.index("--inner") + 1:]
        RUNS = int(runs)
        inner(layer)
    else:
        main()
