"""Import throughput: `docker0 import -` of a ~200 MB tarball against `tar -x` of the same file.

The tarball (mixed file sizes: many small files, some medium, a few large,
plus directories and symlinks) is built once in a scratch directory next to
the daemon's root, on the same disk. Then, alternately, RUNS times each:

- baseline: `tar -xpf big.tar -C <empty dir>` (GNU tar, as root);
- docker0: the whole file sent on one connection as `import -` to a real
  daemon in a private network namespace, timed until the short ID comes back
  (parse, extract, fsync of the JSON record, rename into the graph).

Each run starts after `sync`, so neither pays for the other's writeback; the
image is removed (`rmi`) and the tar output deleted between runs, untimed;
which of the two goes first alternates, because the host's timings drift.
The medians, throughputs and their ratio (docker0 / tar, higher is better)
are printed on one line.

    /opt/docker0/bin/python bench/import_speed.py [RUNS] [MEGABYTES] [mixed|small]

`small` makes half the bytes 1-16 KiB files (about 13,000 for 200 MB), where
per-file costs dominate. The scratch directory and the daemon's root follow
TMPDIR, so `TMPDIR=/dev/shm` compares the two on tmpfs, without the disk.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from netns import Daemon  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
MEGABYTES = int(sys.argv[2]) if len(sys.argv) > 2 else 200
MIX = sys.argv[3] if len(sys.argv) > 3 else "mixed"
TARGET = 0.7
SHARES = {   # (share of the bytes, smallest file, largest file, directory)
    "mixed": [(0.6, 4 << 20, 12 << 20, "large"), (0.3, 64 << 10, 1 << 20, "medium"),
              (0.1, 1 << 10, 16 << 10, "small")],
    "small": [(0.5, 4 << 20, 12 << 20, "large"), (0.5, 1 << 10, 16 << 10, "small")],
}


def build_tree(root: str, total: int) -> None:
    """About `total` bytes, shared out as SHARES[MIX] says (mixed: 60% in 4-12 MiB
    files, 30% in 64 KiB-1 MiB, 10% in 1-16 KiB)."""
    rng = random.Random(2013)
    block = rng.randbytes(16 << 20)           # file contents are slices of it: cheap to make

    def write(path: str, size: int) -> None:
        start = rng.randrange(0, len(block) - size)
        with open(path, "wb") as f:
            f.write(block[start:start + size])
    for share, low, high, where in SHARES[MIX]:
        budget, n = int(total * share), 0
        while budget > 0:
            directory = os.path.join(root, where, f"d{n // 100:03d}")
            os.makedirs(directory, exist_ok=True)
            size = min(rng.randrange(low, high), max(budget, low))
            write(os.path.join(directory, f"f{n:05d}"), size)
            if n % 50 == 0:
                os.symlink(f"f{n:05d}", os.path.join(directory, f"link{n:05d}"))
            budget -= size
            n += 1


def timed(action) -> float:
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def send(daemon: Daemon, line: bytes, data: bytes) -> bytes:
    """Daemon.raw without its `line + stdin`, which would copy 200 MB inside the timing."""
    sock = daemon.netns.socket_connect(("127.0.0.1", 4242), timeout=600)
    with sock:
        sock.sendall(line)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def main() -> None:
    daemon = Daemon()
    work = tempfile.mkdtemp(prefix="bench-import-", dir=os.path.dirname(daemon.root))
    try:
        tree, tarball, out = (os.path.join(work, n) for n in ("tree", "big.tar", "out"))
        build_tree(tree, MEGABYTES << 20)
        subprocess.run(["tar", "--numeric-owner", "-C", tree, "-cf", tarball, "."], check=True)
        shutil.rmtree(tree)
        with open(tarball, "rb") as f:
            data = f.read()
        line = json.dumps(["import", "-"]).encode() + b"\n"

        def tar_x() -> None:
            os.mkdir(out)
            subprocess.run(["tar", "-xpf", tarball, "-C", out], check=True)

        def docker0_import() -> None:
            reply = send(daemon, line, data).decode()
            if len(reply) != 13:
                raise RuntimeError(f"import failed: {reply!r}")
            imported.append(reply.strip())

        imported: list[str] = []
        ours, theirs = [], []
        for i in range(RUNS):
            for which in ("tar", "docker0") if i % 2 == 0 else ("docker0", "tar"):   # alternate who goes first
                if which == "tar":
                    theirs.append(timed(tar_x))
                    shutil.rmtree(out)
                else:
                    ours.append(timed(docker0_import))
                    if daemon.call("rmi", imported.pop()) != "":
                        raise RuntimeError("rmi failed")
        a, b = statistics.median(ours), statistics.median(theirs)
        mb = len(data) / 1e6
        print(f"import speed ({mb:.0f} MB {MIX} tarball, median of {RUNS}): tar -x {b:.2f} s ({mb / b:.0f} MB/s), "
              f"docker0 import - {a:.2f} s ({mb / a:.0f} MB/s); ratio {b / a:.2f} (target >= {TARGET})",
              flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        daemon.destroy()


if __name__ == "__main__":
    main()
