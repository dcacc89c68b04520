"""Fixtures: a real daemon in a private network namespace, torn down even on failure;
`d` is one with the busybox `base` image imported, `base_tar` that image."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from netns import REPO, Daemon, Netns, remove_abandoned_namespaces

if os.geteuid() != 0:
    pytest.exit("the docker0 tests run real containers and need root", returncode=1)


def pytest_sessionstart(session) -> None:
    remove_abandoned_namespaces()    # what a killed earlier run could not tear down


@pytest.fixture
def netns():
    ns = Netns()
    try:
        yield ns
    finally:
        ns.destroy()


@pytest.fixture
def daemon():
    d = Daemon()
    try:
        yield d
    finally:
        d.destroy()


@pytest.fixture(scope="session")
def base_tar() -> bytes:
    return subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")],
                          check=True, capture_output=True).stdout


@pytest.fixture
def d(base_tar):
    """A daemon with the busybox `base` image imported."""
    daemon = Daemon()
    try:
        out = daemon.call("import", "-", "base", stdin=base_tar)
        assert re.fullmatch(r"[0-9a-f]{12}\n", out), out
        yield daemon
    finally:
        daemon.destroy()
