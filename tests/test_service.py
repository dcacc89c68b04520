"""The daemon as a service: `-p PIDFILE`, and a clean stop (SIGTERM, SIGINT) that
leaves running containers running for the next daemon to follow."""
from __future__ import annotations

import ipaddress
import os
import signal
import time

import pytest

from helpers import run_detached
from netns import PYTHON, REPO, Daemon, Netns


@pytest.fixture
def served(base_tar, tmp_path):
    pidfile = str(tmp_path / "docker0.pid")
    daemon = Daemon(extra=("-p", pidfile))
    try:
        daemon.call("import", "-", "base", stdin=base_tar)
        yield daemon, pidfile
    finally:
        daemon.destroy()


def wait_gone(path: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_pidfile_and_clean_stop_keep_containers(served, signum):
    d, pidfile = served
    with open(pidfile) as f:
        assert int(f.read()) == d.proc.pid
    assert oct(os.stat(pidfile).st_mode & 0o777) == "0o644"
    cid = run_detached(d, "base", "sleep", "1000")
    pid = [c for c in d.call("inspect", cid).split("\n") if '"Pid"' in c]
    assert pid, d.call("inspect", cid)
    wrapper = int(pid[0].split(":")[1].strip(" ,"))

    os.kill(d.proc.pid, signum)
    assert d.proc.wait(15) == 0, d.logs()
    assert not os.path.exists(pidfile)
    assert "shutting down" in d.logs()
    os.kill(wrapper, 0)                  # the container's process outlived the daemon
    d.log.close()

    d.start()                            # a new daemon follows it again
    assert int(open(pidfile).read()) == d.proc.pid
    ps = d.call("ps")
    assert cid in ps and "Up " in ps, ps
    assert d.call("kill", cid) == ""
    assert d.call("wait", cid).strip() == "-1"


def test_live_pidfile_is_refused(served, tmp_path):
    d, pidfile = served
    second = d.netns.exec(PYTHON, "-m", "docker0_2013", "-d", "-g", str(tmp_path / "other"),
                          "-H", "127.0.0.1:4243", "-p", pidfile, check=False, timeout=30, cwd=REPO)
    assert second.returncode == 1
    assert f"pid file found, ensure docker0 is not running or delete {pidfile}" in second.stderr
    assert int(open(pidfile).read()) == d.proc.pid      # left as it was


def test_stale_pidfile_is_replaced(base_tar, tmp_path):
    pidfile = tmp_path / "docker0.pid"
    pidfile.write_text("999999\n")
    d = Daemon(extra=("-p", str(pidfile)))
    try:
        assert int(pidfile.read_text()) == d.proc.pid
        os.kill(d.proc.pid, signal.SIGTERM)
        assert d.proc.wait(15) == 0
        assert wait_gone(str(pidfile))
    finally:
        d.destroy()


# -- Addresses a DHCP server on the bridge hands out --------------------------------

def test_allocator_skips_dhcp_range():
    from docker0_2013.network import IPAllocator
    net = ipaddress.IPv4Interface("10.0.3.1/24")
    ips = IPAllocator(net, [(ipaddress.IPv4Address("10.0.3.2"), ipaddress.IPv4Address("10.0.3.250"))])
    assert [ips.acquire() for _ in range(4)] == ["10.0.3.251", "10.0.3.252", "10.0.3.253", "10.0.3.254"]
    with pytest.raises(RuntimeError, match="No unallocated IP available"):
        ips.acquire()
    ips.release("10.0.3.252")
    assert ips.acquire() == "10.0.3.252"


def test_daemon_avoids_dnsmasq_range(base_tar, netns, tmp_path):
    """A real dnsmasq on the namespace's lxcbr0 (as Debian's lxc-net runs it)."""
    dnsmasq = netns.popen("dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "-u", "nobody",
                          "--bind-interfaces", "--listen-address", "10.0.3.1", "--interface=lxcbr0",
                          "--except-interface=lo", "--dhcp-range", "10.0.3.2,10.0.3.199",
                          f"--dhcp-leasefile={tmp_path}/leases", f"--pid-file={tmp_path}/pid")
    try:
        time.sleep(0.5)
        assert dnsmasq.poll() is None
        d = Daemon(netns=netns)
        try:
            d.call("import", "-", "base", stdin=base_tar)
            out = d.call("run", "base", "ip", "-4", "-o", "addr", "show", "eth0")
            assert "inet 10.0.3.200/24" in out, out
            assert "10.0.3.2-10.0.3.199" in d.logs()
        finally:
            d.kill()
            d.netns = Netns(bridge=None)       # the fixture removes the shared namespace
            d.destroy()
    finally:
        dnsmasq.kill()
        dnsmasq.wait()
