"""Bridge address, IP and port allocators, iptables port mapper: network.go of 2013 (spec 8).

The daemon reads the bridge's address (it never creates the bridge; see
lxc-net/), hands each starting container an IP from the bridge's subnet and
maps public TCP ports to it with DNAT rules in the nat table.

Runs in: the daemon, in the worker threads of starts and releases (hence the locks).

Changed since 2013:
- the chain is `DOCKER0`, not `DOCKER`, so a modern Docker keeps its own
  (DESIGN.md difference 2); start-up removes only docker0's leftovers;
- full port or IP ranges, /31 and /32 bridges and an empty `-p ""` are
  errors, not loops, wrong addresses or crashes; the port range reaches 65535;
- addresses a DHCP server on the bridge hands out are never allocated;
- `NetworkManager.restore` re-reserves the address and ports of a container
  that survived a daemon restart and re-adds its rules (2013 lost them).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading

import sh
from pyroute2 import IPRoute

log = logging.getLogger("docker0")

CHAIN = "DOCKER0"
PORT_RANGE_BEGIN = 49153
PORT_RANGE_END = 65535           # inclusive: 2013 stopped at 65534 by mistake


def bridge_network(bridge: str) -> ipaddress.IPv4Interface:
    """The bridge's first IPv4 address with its prefix, read over netlink (spec 8.1)."""
    hint = (f"Couldn't find bridge interface {bridge} ({{}}).\n"
            f"Please create it with 'lxc-net/lxc-net start' (see lxc-net/README.md), "
            f"or 'ip link add {bridge} type bridge; ip addr add ADDRESS/MASK dev {bridge}'")
    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=bridge)
        if not links:
            raise RuntimeError(hint.format("no such network interface"))
        addrs = ipr.get_addr(index=links[0], family=socket.AF_INET)
    if not addrs:
        raise RuntimeError(hint.format(f"Interface {bridge} has no IP addresses"))
    first = addrs[0]
    address = ipaddress.IPv4Interface(f"{first.get_attr('IFA_ADDRESS')}/{first['prefixlen']}")
    if len(addrs) > 1:
        print(f"Interface {bridge} has more than 1 IPv4 address. Defaulting to using {address.ip}",
              flush=True)
    return address


def dhcp_ranges(bridge: str) -> list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]:
    """The DHCP ranges of every dnsmasq in this network namespace serving `bridge`,
    read from their command lines (`--interface=BRIDGE`, `--dhcp-range=FIRST,LAST,...`)."""
    ranges = []
    here = os.stat("/proc/self/ns/net").st_ino
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "dnsmasq" or os.stat(f"/proc/{pid}/ns/net").st_ino != here:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        words = []                           # `--opt=value` and `--opt value` alike
        for arg in args:
            words.extend(arg.split("=", 1) if arg.startswith("--") else [arg])
        options = list(zip(words, words[1:]))
        if (("--interface", bridge) in options or ("-i", bridge) in options) or not any(
                name in ("--interface", "-i") for name, _ in options):
            for name, value in options:
                if name in ("--dhcp-range", "-F"):
                    fields = [v for v in value.split(",") if v.count(".") == 3]
                    try:
                        ranges.append((ipaddress.IPv4Address(fields[0]), ipaddress.IPv4Address(fields[1])))
                    except (IndexError, ValueError):
                        pass
    return ranges


# -- `-p` specs (spec 8.4) ------------------------------------------------------------

def go_quote(text: str) -> str:
    """Go's strconv.Quote, which the ParseUint error message uses."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
               "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = []
    for ch in text:
        code = ord(ch)
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def parse_uint16(text: str) -> int:
    """strconv.ParseUint(text, 10, 16) of Go 1.0, with its error texts.

    Scanning is left to right and stops at the first problem, so "70000x"
    is out of range while "7x" is a syntax error, as in Go.
    """
    def error(reason: str) -> ValueError:
        return ValueError(f"strconv.ParseUint: parsing {go_quote(text)}: {reason}")
    if not text:
        raise error("invalid syntax")
    value = 0
    for ch in text:
        if not "0" <= ch <= "9":
            raise error("invalid syntax")
        value = value * 10 + ord(ch) - ord("0")
        if value > 0xFFFF:
            raise error("value out of range")
    return value


def parse_port_spec(spec: str) -> tuple[int, int | None]:
    """(private, public) from `PORT` (public chosen later: None) or `:PORT` (the same port)."""
    if spec.startswith(":"):
        port = parse_uint16(spec[1:])
        return port, port
    return parse_uint16(spec), None


# -- Allocators (spec 8.2, 8.4) ---------------------------------------------------------

class IPAllocator:
    """Next-fit, round-robin addresses of a subnet, never its network, broadcast or gateway.

    A faithful model of 2013's allocator: the next answer is always prepared
    (an address, or exhaustion), which decides what a release does (spec 8.2).
    Only the addresses in use are stored.
    """

    def __init__(self, bridge: ipaddress.IPv4Interface,
                 excluded: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]] = ()) -> None:
        network = bridge.network
        self.base = int(network.network_address)
        self.max = network.num_addresses - 2            # candidate offsets 1 .. max
        self.gateway = int(bridge.ip) - self.base
        # Offset ranges someone else hands out (DHCP), clipped to the candidates.
        self.excluded = [(max(int(a) - self.base, 1), min(int(b) - self.base, self.max))
                         for a, b in excluded]
        self.excluded = [(a, b) for a, b in self.excluded if a <= b]
        self.usable = max(self.max, 0) - len({o for a, b in self.excluded for o in range(a, b + 1)}
                                             | ({self.gateway} if 1 <= self.gateway <= self.max else set()))
        self.in_use: set[int] = set()                   # offsets
        self.pos = 1
        self.answer: int | None = None                  # prepared offset; None = exhausted
        self.lock = threading.Lock()
        self._prepare()

    def _advance(self) -> None:
        self.pos = self.pos + 1 if self.pos < self.max else 1

    def _prepare(self) -> None:
        self.answer = None
        if len(self.in_use) >= self.usable:
            return           # a full pool: the 2013 scan would fail and leave pos where it was
        for _ in range(self.max):
            candidate = self.pos
            self._advance()
            if candidate != self.gateway and candidate not in self.in_use and not self._excluded(candidate):
                self.answer = candidate
                return

    def _excluded(self, offset: int) -> bool:
        return any(a <= offset <= b for a, b in self.excluded)

    def _offset(self, ip: str) -> int:
        offset = int(ipaddress.IPv4Address(ip)) - self.base
        if not 1 <= offset <= self.max or offset == self.gateway:
            raise ValueError(f"{ip} is not an allocatable address of this network")
        return offset

    def _address(self, offset: int) -> str:
        return str(ipaddress.IPv4Address(self.base + offset))

    def acquire(self) -> str:
        with self.lock:
            if self.answer is None:
                self._prepare()
                raise RuntimeError("No unallocated IP available")
            offset = self.answer
            self.in_use.add(offset)
            self._prepare()
            return self._address(offset)

    def reserve(self, ip: str) -> None:
        """Mark a given address in use (a container restored after a daemon restart)."""
        with self.lock:
            offset = self._offset(ip)
            if offset in self.in_use:
                raise ValueError(f"IP already in use: {ip}")
            self.in_use.add(offset)
            if offset == self.answer:
                self._prepare()      # the cursor is just past it: the scan goes on from there

    def release(self, ip: str) -> None:
        with self.lock:
            offset = self._offset(ip)
            if offset not in self.in_use:
                return
            self.in_use.discard(offset)
            if self.answer is None:
                self.pos = offset
            else:
                self.pos = self.pos - 1 if self.pos > 1 else self.max
            self._prepare()


class PortAllocator:
    """Public TCP ports: automatic ones round-robin over the range, explicit ones on request."""

    def __init__(self, begin: int = PORT_RANGE_BEGIN, end: int = PORT_RANGE_END) -> None:
        self.begin, self.end = begin, end
        self.next = begin                  # 2013's generator: never rewinds on release
        self.in_use: set[int] = set()
        self.lock = threading.Lock()

    def acquire(self) -> int:
        with self.lock:
            for _ in range(self.end - self.begin + 1):
                port = self.next
                self.next = port + 1 if port < self.end else self.begin
                if port not in self.in_use:
                    self.in_use.add(port)
                    return port
            raise RuntimeError("No more ports available")

    def reserve(self, port: int) -> None:
        """An explicit `:PORT`: any 0-65535, as in 2013; the range is not checked."""
        with self.lock:
            if port in self.in_use:
                raise RuntimeError(f"Port already in use: {port}")
            self.in_use.add(port)

    def release(self, port: int) -> None:
        with self.lock:
            self.in_use.discard(port)


# -- iptables (spec 8.5) ------------------------------------------------------------------

def iptables(*args: str) -> None:
    """Run iptables; its output is discarded, as in 2013. Errors carry the 2013 texts."""
    try:
        command = sh.Command("iptables")
    except sh.CommandNotFound:
        raise RuntimeError("command not found: iptables") from None
    try:
        command(*args)
    except sh.ErrorReturnCode:
        raise RuntimeError("iptables failed: iptables " + " ".join(args)) from None


def chain_jumps(chain: str) -> list[tuple[str, ...]]:
    new = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", chain)
    return [("PREROUTING", *new), ("OUTPUT", *new),
            ("PREROUTING", "-j", chain), ("OUTPUT", "-j", chain)]       # v0.1.0 style


def remove_chain(chain: str = CHAIN) -> None:
    """Remove the chain and the jumps to it, ignoring errors (nothing to remove).
    Start-up and contrib/uninstall call it."""
    for jump in chain_jumps(chain):
        for _ in range(100):          # a crashed earlier setup may have left several
            try:
                iptables("-t", "nat", "-D", *jump)
            except RuntimeError:
                break
    for step in ("-F", "-X"):
        try:
            iptables("-t", "nat", step, chain)
        except RuntimeError:
            pass


class PortMapper:
    """DNAT rules in the nat table's own chain, jumped to for local destinations."""

    def __init__(self, chain: str = CHAIN) -> None:
        self.chain = chain
        self.mapping: dict[int, tuple[str, int]] = {}     # public port -> (ip, private port)
        self.lock = threading.Lock()                      # one iptables change at a time
        self.cleanup()
        self.setup()

    def _jumps(self) -> list[tuple[str, ...]]:
        return chain_jumps(self.chain)

    def cleanup(self) -> None:
        """Remove this chain and the jumps to it, ignoring errors (nothing to remove)."""
        with self.lock:
            remove_chain(self.chain)

    def setup(self) -> None:
        with self.lock:
            steps = [(("-N", self.chain), f"Failed to create {self.chain} chain"),
                     (("-A", *self._jumps()[0]), "Failed to inject docker in PREROUTING chain"),
                     (("-A", *self._jumps()[1]), "Failed to inject docker in OUTPUT chain")]
            for args, failure in steps:
                try:
                    iptables("-t", "nat", *args)
                except RuntimeError as e:
                    raise RuntimeError(f"{failure}: {e}") from None

    def _rule(self, action: str, public: int, ip: str, private: int) -> None:
        iptables("-t", "nat", action, self.chain, "-p", "tcp", "--dport", str(public),
                 "-j", "DNAT", "--to-destination", f"{ip}:{private}")

    def map(self, public: int, ip: str, private: int) -> None:
        with self.lock:
            self._rule("-A", public, ip, private)
            self.mapping[public] = (ip, private)

    def unmap(self, public: int) -> None:
        with self.lock:
            if public not in self.mapping:
                raise RuntimeError("Port is not mapped")
            ip, private = self.mapping[public]
            self._rule("-D", public, ip, private)
            del self.mapping[public]


# -- Per-container interfaces (spec 8.3) ---------------------------------------------------

class NetworkInterface:
    """One container's address and its port mappings, until `release`."""

    def __init__(self, manager: NetworkManager, ip: str) -> None:
        self.manager = manager
        self.ip = ip
        self.prefixlen = manager.bridge_network.network.prefixlen
        self.gateway = str(manager.bridge_network.ip)
        self.port_mapping: dict[str, str] = {}     # spec 5.1: private -> public, as strings
        self.public_ports: list[int] = []          # every mapped port, also overwritten entries
        self.released = False
        self.lock = threading.Lock()

    def allocate_port(self, spec: str) -> int:
        """Parse a `-p` spec, reserve the public port, add its DNAT rule; return the port."""
        private, public = parse_port_spec(spec)
        return self.map_port(private, public)

    def map_port(self, private: int, public: int | None) -> int:
        ports = self.manager.ports
        if public is None:
            public = ports.acquire()
        else:
            ports.reserve(public)
        try:
            self.manager.mapper.map(public, self.ip, private)
        except BaseException:
            ports.release(public)
            raise
        with self.lock:
            self.public_ports.append(public)
            self.port_mapping[str(private)] = str(public)
        return public

    def release(self) -> None:
        """Remove the DNAT rules, free the ports and the address. Idempotent."""
        with self.lock:
            if self.released:
                return
            self.released = True
            ports, self.public_ports = self.public_ports, []
        for public in ports:
            try:
                self.manager.mapper.unmap(public)
            except RuntimeError as e:
                log.warning("releasing port %d of %s: %s", public, self.ip, e)
            self.manager.ports.release(public)
        self.manager.ips.release(self.ip)


class NetworkManager:
    """Owns the bridge address, the allocators and the port mapper (spec 4.2 step 4)."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self.bridge_network = bridge_network(bridge)
        dhcp = dhcp_ranges(bridge)
        if dhcp:
            log.info("Not allocating what DHCP hands out on %s: %s", bridge,
                     ", ".join(f"{a}-{b}" for a, b in dhcp))
        self.ips = IPAllocator(self.bridge_network, dhcp)
        self.ports = PortAllocator()
        self.mapper = PortMapper()

    def allocate(self) -> NetworkInterface:
        return NetworkInterface(self, self.ips.acquire())

    def restore(self, ip: str, port_mapping: dict[str, str] | None) -> NetworkInterface:
        """The interface of a container still running after a daemon restart.

        Start-up flushed the chain, so the DNAT rules are added again. On any
        error nothing stays reserved.
        """
        self.ips.reserve(ip)
        iface = NetworkInterface(self, ip)
        try:
            for private, public in (port_mapping or {}).items():
                iface.map_port(parse_uint16(private), parse_uint16(public))
        except BaseException:
            iface.release()
            raise
        return iface
