"""The network: IP and port allocators, `-p` specs, the iptables port mapper (issue 4, spec 8).

Unit tests cover the allocators and the spec parser. The port mapper runs for
real inside private network namespaces: a "host" namespace with lxcbr0 and a
"container" namespace attached to it with a veth, as LXC would attach it.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading

import pytest

from docker0_2013.network import IPAllocator, PortAllocator, go_quote, parse_port_spec
from netns import PYTHON, REPO, Netns, run


def allocator(cidr: str) -> IPAllocator:
    return IPAllocator(ipaddress.IPv4Interface(cidr))


def acquire_or_error(alloc) -> str:
    try:
        return str(alloc.acquire())
    except RuntimeError as e:
        return f"error: {e}"


# -- IP allocator (spec 8.2) ---------------------------------------------------------

def test_ip_reference_sequence():
    """The 2013 unit test: bridge 127.0.0.1/29."""
    ips = allocator("127.0.0.1/29")
    assert [ips.acquire() for _ in range(5)] == [f"127.0.0.{n}" for n in (2, 3, 4, 5, 6)]
    assert acquire_or_error(ips) == "error: No unallocated IP available"
    for n in (5, 4, 6):
        ips.release(f"127.0.0.{n}")
    assert [ips.acquire() for _ in range(3)] == ["127.0.0.5", "127.0.0.6", "127.0.0.4"]
    assert acquire_or_error(ips) == "error: No unallocated IP available"


def test_ip_prepared_answer_survives_a_release():
    """2013 prepares the next answer; a release while it is pending does not change it."""
    ips = allocator("127.0.0.1/29")
    for _ in range(5):
        ips.acquire()
    ips.release("127.0.0.3")           # the pool was full: .3 comes next
    ips.release("127.0.0.5")
    assert ips.acquire() == "127.0.0.3"
    ips.release("127.0.0.4")           # .5 was already prepared; .4 waits for the wrap
    assert [acquire_or_error(ips) for _ in range(3)] == [
        "127.0.0.5", "127.0.0.4", "error: No unallocated IP available"]


def test_ip_round_robin_and_bridge_anywhere():
    ips = allocator("10.1.0.5/29")      # the bridge in the middle of 10.1.0.0/29
    assert [ips.acquire() for _ in range(5)] == ["10.1.0.1", "10.1.0.2", "10.1.0.3",
                                                 "10.1.0.4", "10.1.0.6"]
    ips.release("10.1.0.2")
    assert ips.acquire() == "10.1.0.2"  # the pool was full
    ips = allocator("10.0.3.1/24")
    first = [ips.acquire() for _ in range(3)]
    ips.release(first[0])
    assert ips.acquire() == "10.0.3.5"  # freed addresses wait for the wrap


def test_ip_release_is_forgiving_and_reserve_checks():
    ips = allocator("10.0.3.1/24")
    ips.release("10.0.3.9")             # never allocated: nothing happens
    assert ips.acquire() == "10.0.3.2"
    ips.reserve("10.0.3.3")             # the prepared answer: the next one is prepared
    assert ips.acquire() == "10.0.3.4"
    with pytest.raises(ValueError, match="IP already in use: 10.0.3.4"):
        ips.reserve("10.0.3.4")
    for outside in ("10.0.3.1", "10.0.3.0", "10.0.3.255", "10.0.4.2"):
        with pytest.raises(ValueError, match="not an allocatable address"):
            ips.reserve(outside)


@pytest.mark.parametrize("cidr", ["10.0.3.1/31", "10.0.3.1/32"])
def test_ip_degenerate_masks_are_an_error_not_0000(cidr):
    assert acquire_or_error(allocator(cidr)) == "error: No unallocated IP available"


def test_ip_pool_of_a_slash_16_is_not_a_list():
    ips = allocator("172.30.0.1/16")
    stored = [v for v in vars(ips).values() if isinstance(v, (set, list, dict, tuple))]
    assert all(len(v) == 0 for v in stored)                 # nothing per address up front
    assert [ips.acquire() for _ in range(3)] == ["172.30.0.2", "172.30.0.3", "172.30.0.4"]
    assert all(len(v) <= 3 for v in stored)
    ips.reserve("172.30.255.254")                           # the top address is usable
    assert len(ips.in_use) == 4
    with pytest.raises(ValueError, match="not an allocatable address"):
        ips.reserve("172.30.255.255")                       # the broadcast address is not


def test_ip_exhaustion_of_a_slash_24_and_threads():
    ips = allocator("10.0.3.1/24")
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(40):
            value = acquire_or_error(ips)
            with lock:
                results.append(value)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    addresses = [r for r in results if not r.startswith("error")]
    assert len(addresses) == len(set(addresses)) == 253
    assert results.count("error: No unallocated IP available") == 320 - 253
    assert "10.0.3.1" not in addresses and "10.0.3.255" not in addresses


# -- Port allocator (spec 8.4) ---------------------------------------------------------

def test_ports_round_robin_without_rewind():
    ports = PortAllocator()
    assert [ports.acquire() for _ in range(3)] == [49153, 49154, 49155]
    ports.release(49153)
    assert ports.acquire() == 49156
    ports.reserve(49158)                # an explicit port inside the range is skipped
    assert [ports.acquire() for _ in range(2)] == [49157, 49159]


def test_ports_whole_range_then_error_then_reuse():
    ports = PortAllocator()
    got = [ports.acquire() for _ in range(65535 - 49153 + 1)]
    assert got[0] == 49153 and got[-1] == 65535 and len(set(got)) == 16383
    with pytest.raises(RuntimeError, match="^No more ports available$"):
        ports.acquire()
    ports.release(50000)
    assert ports.acquire() == 50000
    with pytest.raises(RuntimeError, match="^No more ports available$"):
        ports.acquire()


def test_ports_explicit():
    ports = PortAllocator()
    ports.reserve(80)
    ports.reserve(0)                    # 2013 did not check the range
    with pytest.raises(RuntimeError, match="^Port already in use: 80$"):
        ports.reserve(80)
    ports.release(80)
    ports.reserve(80)


# -- `-p` specs (spec 8.4) ---------------------------------------------------------------

def test_spec_forms():
    assert parse_port_spec("80") == (80, None)
    assert parse_port_spec(":80") == (80, 80)
    assert parse_port_spec("080") == (80, None)   # the map key becomes "80"
    assert parse_port_spec("65535") == (65535, None)
    assert parse_port_spec(":0") == (0, 0)


@pytest.mark.parametrize("spec,message", [
    ("abc", 'strconv.ParseUint: parsing "abc": invalid syntax'),
    ("70000", 'strconv.ParseUint: parsing "70000": value out of range'),
    ("", 'strconv.ParseUint: parsing "": invalid syntax'),
    (":", 'strconv.ParseUint: parsing "": invalid syntax'),
    (":abc", 'strconv.ParseUint: parsing "abc": invalid syntax'),
    ("-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
    ("+80", 'strconv.ParseUint: parsing "+80": invalid syntax'),
    ("80:8080", 'strconv.ParseUint: parsing "80:8080": invalid syntax'),
    ("8x", 'strconv.ParseUint: parsing "8x": invalid syntax'),
    ("70000x", 'strconv.ParseUint: parsing "70000x": value out of range'),
    ("99999999999999999999999", 'strconv.ParseUint: parsing "99999999999999999999999": value out of range'),
    (" 80", 'strconv.ParseUint: parsing " 80": invalid syntax'),
    ('8"\n', 'strconv.ParseUint: parsing "8\\"\\n": invalid syntax'),
])
def test_spec_errors(spec, message):
    with pytest.raises(ValueError) as err:
        parse_port_spec(spec)
    assert str(err.value) == message


def test_go_quote():
    assert go_quote("a\x00\x7f\\é\u200b\U0001F600") == '"a\\x00\\x7f\\\\é\\u200b😀"'


# -- The port mapper, for real, in private namespaces (spec 8.5) --------------------------------

def host_rules() -> str:
    """The host's own iptables rules (nat and filter), never to be changed by a test."""
    return run("iptables", "-t", "nat", "-S").stdout + run("iptables", "-S").stdout


@pytest.fixture(autouse=True)
def host_untouched():
    before = host_rules()
    yield
    assert host_rules() == before


def attach_container(host: Netns, cidr: str = "10.0.3.2/24", bridge: str = "lxcbr0") -> Netns:
    """A second namespace wired to the host's bridge with a veth, as LXC wires a container."""
    container = Netns(bridge=None)
    outside = "v" + container.name[-8:]
    host.exec("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0",
              "netns", container.name)
    host.exec("ip", "link", "set", outside, "master", bridge, "up")
    container.exec("ip", "addr", "add", cidr, "dev", "eth0")
    container.exec("ip", "link", "set", "eth0", "up")
    gateway = str(next(ipaddress.IPv4Interface(cidr).network.hosts()))
    container.exec("ip", "route", "add", "default", "via", gateway)
    return container


LISTENER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen()
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(f"port {sys.argv[1]} hello {peer[0]}\\n".encode())
    conn.close()
"""


def listen(ns: Netns, port: int) -> subprocess.Popen:
    """A TCP server in `ns` that greets each client with its own port and the client's address."""
    proc = ns.popen(PYTHON, "-c", LISTENER, str(port), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def greeting(ns: Netns, address: tuple[str, int], timeout: float = 10) -> str:
    with ns.socket_connect(address, timeout=timeout) as sock:
        return sock.makefile().readline()


MANAGER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from docker0_2013.network import NetworkManager
scope = {"__builtins__": __builtins__}
def reply(**kw):
    print(json.dumps(kw, default=str), flush=True)
try:
    scope["mgr"] = NetworkManager(sys.argv[2])
except Exception as e:
    reply(error=str(e))
    sys.exit(1)
reply(value="ready")
for line in sys.stdin:
    source = json.loads(line)
    try:
        try:
            value = eval(source, scope)
        except SyntaxError:
            exec(source, scope)
            value = None
        reply(value=value)
    except Exception as e:
        reply(error=str(e))
"""


class Manager:
    """A `NetworkManager` living in its own process inside a namespace, as in the daemon."""

    def __init__(self, ns: Netns, bridge: str = "lxcbr0", path: str | None = None) -> None:
        prefix = ("env", f"PATH={path}") if path else ()
        self.proc = ns.popen(*prefix, PYTHON, "-c", MANAGER, REPO, bridge, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.started = json.loads(self.proc.stdout.readline())

    def __call__(self, source: str):
        self.proc.stdin.write(json.dumps(source) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["value"]

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        self.proc.wait(10)


@pytest.fixture
def hosts():
    """The host namespace (with lxcbr0) and a container namespace at 10.0.3.2."""
    host = Netns()
    container = None
    managers: list[Manager] = []
    try:
        container = attach_container(host)
        yield host, container, managers
    finally:
        for manager in managers:
            manager.end()
        if container:
            container.destroy()
        host.destroy()


def nat_rules(ns: Netns) -> list[str]:
    return ns.exec("iptables", "-t", "nat", "-S").stdout.splitlines()


FRESH = ["-P PREROUTING ACCEPT", "-P INPUT ACCEPT", "-P OUTPUT ACCEPT", "-P POSTROUTING ACCEPT",
         "-N DOCKER0",
         "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER0",
         "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER0"]


def dnat(public: int, to: str) -> str:
    return f"-A DOCKER0 -p tcp -m tcp --dport {public} -j DNAT --to-destination {to}"


def test_mapping_forwards_and_unmapping_refuses(hosts):
    host, container, managers = hosts
    listen(container, 80)
    listen(container, 8080)
    managers.append(mgr := Manager(host))
    assert mgr.started == {"value": "ready"}
    assert nat_rules(host) == FRESH
    mgr("c = mgr.allocate()")
    assert mgr("[c.ip, c.prefixlen, c.gateway]") == ["10.0.3.2", 24, "10.0.3.1"]
    assert mgr("c.allocate_port('80')") == 49153
    assert mgr("c.allocate_port(':8080')") == 8080
    assert mgr("c.port_mapping") == {"80": "49153", "8080": "8080"}
    assert nat_rules(host) == FRESH + [dnat(49153, "10.0.3.2:80"), dnat(8080, "10.0.3.2:8080")]
    # From the host namespace itself to its bridge address: the OUTPUT chain's DNAT.
    assert greeting(host, ("10.0.3.1", 49153)) == "port 80 hello 10.0.3.1\n"
    assert greeting(host, ("10.0.3.1", 8080)) == "port 8080 hello 10.0.3.1\n"

    mgr("c.release()")
    mgr("c.release()")                                       # idempotent
    assert nat_rules(host) == FRESH
    for public in (49153, 8080):
        with pytest.raises(ConnectionRefusedError):
            greeting(host, ("10.0.3.1", public))
    # The address and the explicit port are free again; automatic ports move on.
    mgr("d = mgr.allocate()")
    assert mgr("d.ip") == "10.0.3.3"
    assert mgr("d.allocate_port(':8080')") == 8080
    assert mgr("d.allocate_port('80')") == 49154


def test_port_errors_leave_nothing_allocated(hosts):
    host, container, managers = hosts
    managers.append(mgr := Manager(host))
    mgr("c = mgr.allocate()")
    assert mgr("c.allocate_port(':5000')") == 5000
    for spec, message in [(":5000", "Port already in use: 5000"),
                          ("", 'strconv.ParseUint: parsing "": invalid syntax'),
                          ("x", 'strconv.ParseUint: parsing "x": invalid syntax')]:
        with pytest.raises(RuntimeError) as err:
            mgr(f"c.allocate_port({spec!r})")
        assert str(err.value) == message
    assert nat_rules(host) == FRESH + [dnat(5000, "10.0.3.2:5000")]
    # An iptables failure (someone removed the chain) gives the port back.
    host.exec("iptables", "-t", "nat", "-F")
    host.exec("iptables", "-t", "nat", "-X", "DOCKER0")
    with pytest.raises(RuntimeError) as err:
        mgr("c.allocate_port(':6000')")
    assert str(err.value) == ("iptables failed: iptables -t nat -A DOCKER0 -p tcp --dport 6000 "
                              "-j DNAT --to-destination 10.0.3.2:6000")
    host.exec("iptables", "-t", "nat", "-N", "DOCKER0")
    assert mgr("c.allocate_port(':6000')") == 6000
    assert mgr("c.port_mapping") == {"5000": "5000", "6000": "6000"}


def test_same_private_port_twice_keeps_both_rules(hosts):
    host, container, managers = hosts
    listen(container, 80)
    managers.append(mgr := Manager(host))
    mgr("c = mgr.allocate()")
    assert [mgr("c.allocate_port('80')"), mgr("c.allocate_port('80')")] == [49153, 49154]
    assert mgr("c.port_mapping") == {"80": "49154"}
    assert greeting(host, ("10.0.3.1", 49153)) == greeting(host, ("10.0.3.1", 49154))
    mgr("c.release()")
    assert nat_rules(host) == FRESH


def test_restart_leaves_only_a_fresh_chain_and_restore_maps_again(hosts):
    host, container, managers = hosts
    listen(container, 80)
    managers.append(first := Manager(host))
    first("c = mgr.allocate()")
    first("c.allocate_port('80')")
    first("c.allocate_port(':81')")
    first.end()                                        # the daemon dies; its rules stay
    # Leftovers of a crashed start-up, v0.1.0-style jumps, and rules that are not ours.
    host.exec("iptables", "-t", "nat", "-A", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL",
              "-j", "DOCKER0")
    host.exec("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "DOCKER0")
    host.exec("iptables", "-t", "nat", "-N", "DOCKER")
    host.exec("iptables", "-t", "nat", "-A", "DOCKER", "-p", "tcp", "--dport", "1", "-j", "RETURN")
    host.exec("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "DOCKER")
    foreign = ["-N DOCKER", "-A PREROUTING -j DOCKER", "-A DOCKER -p tcp -m tcp --dport 1 -j RETURN"]

    managers.append(second := Manager(host))
    assert second.started == {"value": "ready"}
    assert sorted(nat_rules(host)) == sorted(FRESH + foreign)
    with pytest.raises(ConnectionRefusedError):
        greeting(host, ("10.0.3.1", 49153))

    second("c = mgr.restore('10.0.3.2', {'80': '49153', '81': '81'})")
    assert second("[c.ip, c.port_mapping]") == ["10.0.3.2", {"80": "49153", "81": "81"}]
    assert greeting(host, ("10.0.3.1", 49153)) == "port 80 hello 10.0.3.1\n"
    assert second("mgr.allocate().ip") == "10.0.3.3"          # .2 is taken
    with pytest.raises(RuntimeError, match="Port already in use: 81"):
        second("mgr.restore('10.0.3.4', {'81': '81'})")
    assert second("mgr.restore('10.0.3.4', {}).ip") == "10.0.3.4"   # the failed one let go
    with pytest.raises(RuntimeError, match="IP already in use: 10.0.3.2"):
        second("mgr.restore('10.0.3.2', {})")
    second("c.release()")
    assert sorted(nat_rules(host)) == sorted(FRESH + foreign)


def test_start_up_errors(hosts):
    host, container, managers = hosts
    # A foreign rule that jumps to DOCKER0 keeps the chain alive through the clean-up.
    host.exec("iptables", "-t", "nat", "-N", "DOCKER0")
    host.exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "DOCKER0")
    managers.append(mgr := Manager(host))
    assert mgr.started == {"error": "Failed to create DOCKER0 chain: "
                                    "iptables failed: iptables -t nat -N DOCKER0"}
    managers.append(mgr := Manager(host, path=os.path.join(REPO, "tests")))   # no iptables
    assert mgr.started == {"error": "Failed to create DOCKER0 chain: command not found: iptables"}
    managers.append(mgr := Manager(host, bridge="nosuchbr0"))
    assert mgr.started["error"].startswith(
        "Couldn't find bridge interface nosuchbr0 (no such network interface).\nPlease create it")
