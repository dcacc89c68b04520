"""Fixtures: a real daemon in a private network namespace, torn down even on failure."""
from __future__ import annotations

import os

import pytest

from netns import Daemon, Netns

if os.geteuid() != 0:
    pytest.exit("the docker0 tests run real containers and need root", returncode=1)


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
