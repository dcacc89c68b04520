"""Fixtures: a real daemon in a private network namespace, torn down even on failure."""
from __future__ import annotations

import os

import pytest

from netns import Daemon, Netns, remove_abandoned_namespaces

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
