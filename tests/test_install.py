"""contrib/install and contrib/uninstall, into temporary directories
(DOCKER0_PREFIX, DOCKER0_DESTDIR): never the /opt/docker0 these tests run from.

The second install runs with pip's index unreachable and apt-get failing: it
must need neither. The uninstall runs inside a private network namespace,
where a daemon of the temporary install made its DOCKER0 chain and lxc-net
its lxcbr0: both go, with the pid file, the venv and every installed file.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from netns import REPO, Netns, cgroup_mounts_script, kill_until_gone

OPT = "/opt/docker0"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    top = tmp_path_factory.mktemp("install")
    env = {**os.environ, "DOCKER0_PREFIX": str(top / "opt"), "DOCKER0_DESTDIR": str(top / "dest"),
           "DOCKER0_PIDFILE": str(top / "docker0.pid"), "DOCKER0_LOG": str(top / "docker0.log"),
           "DOCKER0_ROOT": str(top / "root")}
    assert os.path.realpath(env["DOCKER0_PREFIX"]) != OPT
    first = subprocess.run([f"{REPO}/contrib/install", "--no-daemon"], env=env, capture_output=True,
                           text=True, timeout=600)
    yield top, env, first
    subprocess.run(["rm", "-rf", str(top)])


def offline(env: dict, top) -> dict:
    """pip's index unreachable, its local sources gone, and an apt-get that fails."""
    fake = top / "fakebin"
    fake.mkdir(exist_ok=True)
    for tool in ("apt-get", "apt"):
        (fake / tool).write_text("#!/bin/sh\necho 'apt is unavailable in this test' >&2\nexit 100\n")
        (fake / tool).chmod(0o755)
    return {**env, "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_EXTRA_INDEX_URL": "",
            "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": "/dev/null", "PIP_RETRIES": "0",
            "PIP_DEFAULT_TIMEOUT": "1", "PATH": f"{fake}:{os.environ['PATH']}"}


def test_first_install_says_what_it_did(installed):
    top, env, first = installed
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.strip().splitlines()
    assert any("Python package installed in" in line for line in lines), first.stdout
    assert lines[-1].startswith("install: done: docker0 is installed"), first.stdout
    dest = top / "dest"
    assert os.readlink(dest / "usr/local/bin/docker0") == f"{top}/opt/bin/docker0"
    for unit in ("docker0.service", "lxc-net.service", "lxc-dhcp.service"):
        assert (dest / "etc/systemd/system" / unit).is_file()
    assert os.access(dest / "usr/local/sbin/docker0-lxc-net", os.X_OK)


def test_second_install_is_offline(installed):
    top, env, first = installed
    assert first.returncode == 0
    again = subprocess.run([f"{REPO}/contrib/install", "--no-daemon"], env=offline(env, top),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Python package: up to date" in again.stdout
    assert "apt is unavailable" not in again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("install: done:")
    version = subprocess.run([f"{top}/dest/usr/local/bin/docker0", "-h"], capture_output=True, text=True)
    assert "-p" in version.stderr and "Daemon mode" in version.stderr


def test_changed_pins_need_pip(installed):
    """The stamp really guards pip: a changed stamp makes the offline install fail."""
    top, env, first = installed
    stamp = top / "opt" / ".docker0-stamp"
    saved = stamp.read_text()
    stamp.write_text("changed\n")
    try:
        again = subprocess.run([f"{REPO}/contrib/install", "--no-daemon"], env=offline(env, top),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode != 0
    finally:
        stamp.write_text(saved)


def test_someone_elses_lxcbr0_is_left_alone(installed, netns):
    """lxcbr0 that docker0's lxc-net did not make (Debian's lxc-net, say): no lxc-net units
    of ours replace it, and the install says so (in a namespace with its own lxcbr0)."""
    top, env, first = installed
    assert first.returncode == 0
    env = {**offline(env, top), "DOCKER0_DESTDIR": str(top / "dest-debian")}
    out = netns.exec(f"{REPO}/contrib/install", "--no-daemon", env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lxcbr0 exists and is not docker0's" in out.stdout, out.stdout
    units = top / "dest-debian/etc/systemd/system"
    assert sorted(os.listdir(units)) == ["docker0.service"]
    assert netns.exec("ip", "link", "show", "lxcbr0").returncode == 0


def test_uninstall_leaves_nothing(installed):
    top, env, first = installed
    assert first.returncode == 0
    ns = Netns(bridge=None)
    daemon = None
    try:
        lxc_net = ns.exec(f"{top}/dest/usr/local/sbin/docker0-lxc-net", "start")
        assert "lxcbr0 is up" in lxc_net.stdout
        daemon = ns.popen("sh", "-c", cgroup_mounts_script(), "sh", f"{top}/opt/bin/docker0", "-d",
                          "-g", env["DOCKER0_ROOT"], "-p", env["DOCKER0_PIDFILE"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        for _ in range(200):
            if ns.exec(f"{top}/opt/bin/docker0", "version", check=False).returncode == 0:
                break
            time.sleep(0.05)
        assert "DOCKER0" in ns.exec("iptables", "-t", "nat", "-S").stdout
        assert os.path.exists(env["DOCKER0_PIDFILE"])

        out = ns.exec(f"{REPO}/contrib/uninstall", "--purge", env=env)
        assert out.stdout.strip().splitlines()[-1] == "uninstall: done: docker0 is uninstalled", out.stdout
        assert daemon.wait(15) == 0
        assert "DOCKER0" not in ns.exec("iptables", "-t", "nat", "-S").stdout
        assert "docker0-lxc-net" not in ns.exec("iptables-save").stdout
        assert ns.exec("ip", "link", "show", "lxcbr0", check=False).returncode != 0
        assert not os.path.exists(env["DOCKER0_PIDFILE"])
        assert not os.path.exists(env["DOCKER0_ROOT"])
        assert not os.path.exists(env["DOCKER0_PREFIX"])
        assert [os.path.join(d, f) for d, _, files in os.walk(top / "dest") for f in files] == []
        assert not os.path.lexists(top / "dest/usr/local/bin/docker0")
        assert os.path.exists(f"{OPT}/bin/python")         # the one the tests run from
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        kill_until_gone(ns.pids)
        ns.destroy()
