"""The runtime: root directories, start-up, and the container registry: runtime.go of 2013.

`Runtime` owns everything a command needs: the image graph, the tag store,
the network manager, the registry credentials and the containers. The
`Cmd*` methods that the server calls live in `commands.py` (a mixin).

Changed since 2013 (spec 4.2, DESIGN.md):
- the root is chosen with `-g` (default `/var/lib/docker`), and a root that
  holds a modern Docker engine's data is refused rather than mixed with ours;
- the bridge is chosen with `-b` (default `lxcbr0`);
- a malformed `.dockercfg` is ignored with a log line, not fatal.
"""
from __future__ import annotations

import logging
import os

from .auth import load_config
from .commands import Commands
from .graph import Graph
from .network import NetworkManager
from .tags import TagStore
from .utils import TruncIndex

DEFAULT_ROOT = "/var/lib/docker"
DEFAULT_BRIDGE = "lxcbr0"
MODERN_DOCKER_MARKERS = ("image", "overlay2", "containerd", "buildkit", "swarm")

log = logging.getLogger("docker0")


def check_not_modern_docker(root: str) -> None:
    """Refuse a root that a modern Docker engine owns (DESIGN.md difference 1)."""
    found = [m for m in MODERN_DOCKER_MARKERS if os.path.isdir(os.path.join(root, m))]
    containers = os.path.join(root, "containers")
    if os.path.isdir(containers):
        for name in os.listdir(containers):
            if os.path.exists(os.path.join(containers, name, "config.v2.json")):
                found.append(f"containers/{name}/config.v2.json")
                break
    if found:
        raise RuntimeError(
            f"{root} holds the data of a modern Docker engine ({', '.join(found)}); "
            f"docker0 will not touch it. Choose another root with -g, e.g. 'docker0 -d -g /var/lib/docker0'")


class Runtime(Commands):
    def __init__(self, root: str = DEFAULT_ROOT, bridge: str = DEFAULT_BRIDGE) -> None:
        self.root = os.path.abspath(root)
        if os.path.isdir(self.root):
            check_not_modern_docker(self.root)
        self.repository = os.path.join(self.root, "containers")
        os.makedirs(self.repository, 0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.graph = Graph(os.path.join(self.root, "graph"))
        self.tags = TagStore(os.path.join(self.root, "repositories"), self.graph)
        self.network = NetworkManager(bridge)
        self.auth = load_config(self.root)
        self.containers: dict = {}
        self.container_index = TruncIndex()
        self.restore()

    def restore(self) -> None:
        """Load every saved container (filled in by the containers issue)."""
