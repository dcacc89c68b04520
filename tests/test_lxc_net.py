"""lxc-net/lxc-net: the bridge, forwarding, NAT and DHCP, run inside private namespaces (issue 4)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from netns import PYTHON, REPO, Netns
from test_network import attach_container, greeting, host_untouched, listen  # noqa: F401

SCRIPT = os.path.join(REPO, "lxc-net", "lxc-net")
MARK = "docker0-lxc-net:lxcbr0"


@pytest.fixture
def namespaces():
    """Namespaces made by a test, destroyed even when it fails."""
    made: list[Netns] = []

    def make(**kw) -> Netns:
        made.append(Netns(**kw))
        return made[-1]
    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.destroy()


def lxc_net(ns: Netns, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return ns.exec("env", *(f"{k}={v}" for k, v in (env or {}).items()), SCRIPT, *args,
                   check=False)


def rules(ns: Netns) -> str:
    return ns.exec("iptables", "-S").stdout + ns.exec("iptables", "-t", "nat", "-S").stdout


def addresses(ns: Netns, dev: str) -> list[str]:
    out = ns.exec("ip", "-4", "-o", "addr", "show", "dev", dev, check=False).stdout
    return [line.split()[3] for line in out.splitlines()]


def test_start_and_stop_are_idempotent(namespaces):
    ns = namespaces(bridge=None)
    for _ in range(2):
        result = lxc_net(ns, "start")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "lxc-net: lxcbr0 is up: 10.0.3.1/24, NAT for 10.0.3.0/24\n"
    assert addresses(ns, "lxcbr0") == ["10.0.3.1/24"]
    assert ",UP" in ns.exec("ip", "-o", "link", "show", "lxcbr0").stdout.split(">")[0]
    assert ns.exec("cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"
    ours = [line for line in rules(ns).splitlines() if MARK in line]
    assert sorted(ours) == sorted([
        f'-A FORWARD -i lxcbr0 -m comment --comment "{MARK}" -j ACCEPT',
        f'-A FORWARD -o lxcbr0 -m comment --comment "{MARK}" -j ACCEPT',
        f'-A POSTROUTING -s 10.0.3.0/24 ! -d 10.0.3.0/24 -m comment --comment "{MARK}" -j MASQUERADE'])
    assert lxc_net(ns, "status").stdout.startswith("lxcbr0: present (made by this script)")

    for _ in range(2):
        result = lxc_net(ns, "stop")
        assert result.returncode == 0, result.stderr
    assert ns.exec("ip", "link", "show", "lxcbr0", check=False).returncode != 0
    assert MARK not in rules(ns)
    assert lxc_net(ns, "status").returncode == 3


def test_a_bridge_made_by_someone_else_is_left_alone(namespaces):
    ns = namespaces()                                   # Netns made lxcbr0 itself
    ns.exec("ip", "addr", "add", "10.9.9.1/24", "dev", "lxcbr0")
    before = rules(ns)
    result = lxc_net(ns, "start")
    assert result.returncode == 0
    assert "already exists and was not made by this script; leaving it as it is" in result.stdout
    assert lxc_net(ns, "dhcp-start").returncode != 0
    assert rules(ns) == before
    assert lxc_net(ns, "stop").returncode == 0
    assert addresses(ns, "lxcbr0") == ["10.0.3.1/24", "10.9.9.1/24"]
    assert rules(ns) == before


def test_environment_overrides(namespaces):
    ns = namespaces(bridge=None)
    env = {"LXC_BRIDGE": "br9", "LXC_ADDR": "172.30.0.1", "LXC_NETWORK": "172.30.0.0/16"}
    assert lxc_net(ns, "start", env=env).returncode == 0
    assert addresses(ns, "br9") == ["172.30.0.1/16"]
    assert "-s 172.30.0.0/16 ! -d 172.30.0.0/16 -m comment --comment \"docker0-lxc-net:br9\"" \
        in rules(ns)
    assert lxc_net(ns, "stop").returncode == 0          # lxcbr0's stop leaves br9 alone
    assert addresses(ns, "br9") == ["172.30.0.1/16"]
    assert lxc_net(ns, "stop", env=env).returncode == 0
    assert addresses(ns, "br9") == []
    assert "docker0-lxc-net" not in rules(ns)


def test_containers_reach_the_outside_through_nat(namespaces):
    """container 10.0.3.2 -> host (lxcbr0, FORWARD policy DROP) -> outside 192.0.2.2."""
    host = namespaces(bridge=None)
    host.exec("iptables", "-P", "FORWARD", "DROP")      # as a modern Docker leaves hosts
    assert lxc_net(host, "start").returncode == 0
    outside = namespaces(bridge=None)
    host.exec("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
              "netns", outside.name)
    host.exec("ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
    host.exec("ip", "link", "set", "up0", "up")
    outside.exec("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    outside.exec("ip", "link", "set", "eth0", "up")
    listen(outside, 7000)
    container = attach_container(host)
    try:
        # The outside world sees the host's address: MASQUERADE did its work.
        assert greeting(container, ("192.0.2.2", 7000)) == "port 7000 hello 192.0.2.1\n"
        for direction in ("-i", "-o"):
            host.exec("iptables", "-D", "FORWARD", direction, "lxcbr0", "-m", "comment",
                      "--comment", MARK, "-j", "ACCEPT")
        with pytest.raises(OSError):                    # the FORWARD policy drops it now
            greeting(container, ("192.0.2.2", 7000), timeout=2)
        assert lxc_net(host, "start").returncode == 0   # puts back only what is missing
        assert rules(host).count(MARK) == 3
        assert greeting(container, ("192.0.2.2", 7000)) == "port 7000 hello 192.0.2.1\n"
    finally:
        container.destroy()


def test_dhcp_hands_out_a_lease(namespaces):
    host = namespaces(bridge=None)
    assert lxc_net(host, "start").returncode == 0
    try:
        result = lxc_net(host, "dhcp-start")
        assert result.returncode == 0, result.stderr
        assert "dnsmasq serves 10.0.3.200,10.0.3.254 on lxcbr0" in result.stdout
        assert lxc_net(host, "dhcp-start").stdout.startswith("lxc-net: dnsmasq already runs")
        status = lxc_net(host, "status").stdout
        pid = int(re.search(r"dnsmasq: running \((\d+)\)", status).group(1))
        assert pid in host.pids()
        client = namespaces(bridge=None)
        host.exec("ip", "link", "add", "vdhcp", "type", "veth", "peer", "name", "eth0",
                  "netns", client.name)
        host.exec("ip", "link", "set", "vdhcp", "master", "lxcbr0", "up")
        client.exec("ip", "link", "set", "eth0", "up")
        lease = client.exec("/bin/busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                            "-t", "5", "-s", "/bin/true", check=False, timeout=60)
        found = re.search(r"lease of 10\.0\.3\.(\d+) obtained from 10\.0\.3\.1", lease.stderr)
        assert found, lease.stderr
        assert 200 <= int(found.group(1)) <= 254       # above what docker0 hands out first
    finally:
        assert lxc_net(host, "stop").returncode == 0
    assert pid not in host.pids()
    assert "docker0-lxc-net" not in rules(host)


def test_usage():
    result = subprocess.run([SCRIPT, "frob"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: ")
    result = subprocess.run([SCRIPT, "status"], capture_output=True, text=True,
                            env={**os.environ, "LXC_NETWORK": "10.0.3.0"})
    assert result.returncode == 1
    assert "LXC_NETWORK must be ADDRESS/PREFIX" in result.stderr


def test_daemon_finds_the_bridge_the_script_made(namespaces):
    """`lxc-net start`, then the network manager of a daemon start-up, in one namespace."""
    ns = namespaces(bridge=None)
    assert lxc_net(ns, "start").returncode == 0
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from docker0_2013.network import NetworkManager; m = NetworkManager('lxcbr0'); "
             "i = m.allocate(); print(m.bridge_network, i.ip, i.gateway)")
    assert ns.exec(PYTHON, "-c", probe, REPO).stdout == "10.0.3.1/24 10.0.3.2 10.0.3.1\n"


def test_dhcp_in_the_foreground_as_the_unit_runs_it(namespaces):
    host = namespaces(bridge=None)
    assert lxc_net(host, "start").returncode == 0
    proc = host.popen(SCRIPT, "dhcp", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):                 # the script execs dnsmasq: the same process
            if f"dnsmasq: running ({proc.pid})" in lxc_net(host, "status").stdout:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        else:
            pytest.fail("dnsmasq did not start")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        assert lxc_net(host, "stop").returncode == 0


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_units_are_valid(tmp_path):
    for unit in ("lxc-net.service", "lxc-dhcp.service"):
        with open(os.path.join(REPO, "lxc-net", unit)) as f:
            text = f.read()
        assert "ExecStart=/usr/local/sbin/docker0-lxc-net " in text
        (tmp_path / unit).write_text(text.replace("/usr/local/sbin/docker0-lxc-net", SCRIPT))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "lxc-net.service"),
                             str(tmp_path / "lxc-dhcp.service")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(tmp_path) not in result.stderr            # unknown keys are only warnings
