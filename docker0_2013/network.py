"""Bridge address, IP and port allocators, iptables port mapper: network.go of 2013.

(The allocators and port mapper are filled in by the network issue.)
"""
from __future__ import annotations

import ipaddress
import logging
import socket

from pyroute2 import IPRoute

log = logging.getLogger("docker0")


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


class NetworkManager:
    """Owns the bridge address and hands out per-container network interfaces."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self.bridge_network = bridge_network(bridge)
