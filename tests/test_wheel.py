"""The package installs whole from a wheel (issue 21), as a packager or pipx would:
built with `pip wheel`, installed into a fresh virtual environment of Debian's
python3 outside the checkout, and a daemon of that install runs a container.
(2013's seccomp.policy was left out of the wheel, and every `run` failed.)

Needs the package index: pip fetches setuptools to build, then pyroute2 and sh.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import zipfile

import pytest

from netns import REPO, Daemon

SYSTEM_PYTHON = "/usr/bin/python3"      # also the containers' init interpreter (lxc.HOST_PYTHON)


@pytest.fixture(scope="module")
def wheel_venv():
    """A venv outside the checkout with the checkout's wheel installed, not editable."""
    top = tempfile.mkdtemp(prefix="docker0-wheel-")
    try:
        source = os.path.join(top, "source")      # a copy: building writes build/ and *.egg-info
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "build", "*.egg-info", ".pytest_cache", ".hypothesis"))
        venv = os.path.join(top, "venv")
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True)
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "wheel", "--no-deps", "-w", os.path.join(top, "wheels"), source],
                       check=True, capture_output=True, timeout=600)
        wheel, = glob.glob(os.path.join(top, "wheels", "docker0-*.whl"))
        subprocess.run([*pip, "install", wheel], check=True, capture_output=True, timeout=600)
        shutil.rmtree(source)                     # nothing of the checkout is left to lean on
        yield venv, wheel
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.network
def test_wheel_holds_every_file_the_package_reads(wheel_venv):
    _, wheel = wheel_venv
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docker0_2013", "*"))
               if os.path.isfile(p)}
    assert package <= names, package - names
    assert any(name.endswith(".data/scripts/docker0") for name in names)


@pytest.mark.network
def test_a_daemon_installed_from_the_wheel_runs_a_container(wheel_venv, base_tar):
    venv, _ = wheel_venv
    program = os.path.join(venv, "bin", "docker0")
    d = Daemon(program=(program,), cwd=os.path.dirname(venv))
    try:
        assert len(d.call("import", "-", "base", stdin=base_tar).strip()) == 12
        assert d.call("run", "base", "echo", "hi") == "hi\n", d.logs()
        config = glob.glob(os.path.join(d.root, "containers", "*", "config.lxc"))[0]
        with open(config) as f:
            assert f"lxc.seccomp.profile = {venv}/lib/" in f.read()     # the wheel's, not the checkout's
    finally:
        d.destroy()
