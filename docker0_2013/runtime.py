"""The runtime: root directories, start-up, and the container registry: runtime.go of 2013.

`Runtime` owns everything a command needs: the image graph, the tag store,
the network manager, the registry credentials and the containers. The
`Cmd*` methods that the server calls live in `commands.py` (a mixin).

Runs in: the daemon; restore() before the event loop starts, the rest on the
loop and in worker threads (create, commit, import).

Changed since 2013 (spec 4.2, DESIGN.md):
- `-g ROOT` and `-b BRIDGE`; a root that holds a modern Docker engine's data is refused;
- start-up checks the host (cgroups, overlayfs, the bridge) and names what
  is missing; 2013 started anyway and every `run` failed;
- a container directory is created and removed under a `:` name and renamed,
  so a crash leaves no half-made or half-deleted container;
- what start-up cannot read or remove goes to `ROOT/quarantine/`, with a
  log line, instead of stopping the daemon;
- containers that outlived the last daemon are adopted again (reconnect);
- `import URL` reads http(s) URLs only, as Go's http.Get did (urllib also
  opens file: and ftp:, which would let any user read root's files), with a
  connect and read timeout (URL_TIMEOUT).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request

from . import archive, lxc
from .auth import load_config
from .commands import Commands
from .container import Config, Container, NetworkSettings, State, config_record
from .graph import Graph, Image, is_mounted, unmount_rootfs
from .network import NetworkManager, bridge_network
from .shim_client import process_alive, shim_answers
from .tags import TagStore
from .utils import (ProgressReader, TruncIndex, generate_id, mountinfo, now_string, remove_or_set_aside,
                    remove_tree, set_aside)

DEFAULT_ROOT = "/var/lib/docker"
DEFAULT_BRIDGE = "lxcbr0"
HALF_DONE = ":"          # prefix of a container directory being created or removed; never an ID
MODERN_DOCKER_MARKERS = ("image", "overlay2", "containerd", "buildkit", "swarm")
URL_TIMEOUT = 60.0       # seconds an `import URL` waits for the connection or the next bytes
# urlopen() also reads file:, ftp: and data: URLs: with them any local user could have
# the daemon (root) read the host's files. Go's http.Get of 2013 knew http and https
# only, so does this opener, for the URL given and for every redirect.
HTTP_ONLY = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler, urllib.request.HTTPHandler, urllib.request.HTTPSHandler,
                 urllib.request.HTTPRedirectHandler, urllib.request.HTTPDefaultErrorHandler,
                 urllib.request.HTTPErrorProcessor, urllib.request.UnknownHandler):
    HTTP_ONLY.add_handler(_handler())

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


def cgroup_hierarchies(path: str = "/proc/self/mountinfo") -> list[str]:
    """The cgroup mounts LXC can use: v1 hierarchies below /sys/fs/cgroup, or v2 at it."""
    return [point for point, fstype, _ in mountinfo(path)
            if (fstype == "cgroup" and point.startswith(lxc.CGROUP_ROOT + "/"))
            or (fstype == "cgroup2" and point == lxc.CGROUP_ROOT)]


def has_overlayfs() -> bool:
    """overlay in /proc/filesystems, after asking for the module if it is not there yet."""
    def listed() -> bool:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    if listed():
        return True
    try:
        subprocess.run(["modprobe", "-q", "overlay"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed()


def check_host(bridge: str) -> None:
    """What every container needs, checked once at start (2013 found out at the first `run`),
    and the containers' AppArmor profile loaded where the kernel has AppArmor.

    One fatal error names everything that is missing.
    """
    missing = []
    if not cgroup_hierarchies():
        missing.append(f"no cgroup hierarchy is mounted at {lxc.CGROUP_ROOT} (neither cgroup v1 "
                       f"hierarchies below it nor cgroup2 on it); LXC cannot run a container "
                       f"without one. Mount them, e.g. 'mount -t cgroup2 none {lxc.CGROUP_ROOT}'")
    if not has_overlayfs():
        missing.append("the kernel does not support overlayfs ('overlay' is not in "
                       "/proc/filesystems; try 'modprobe overlay')")
    for check in (lambda: bridge_network(bridge), lxc.load_apparmor_profile):
        try:
            check()
        except RuntimeError as e:
            missing.append(str(e))
    if missing:
        raise RuntimeError("This host cannot run containers: " + "; ".join(missing))


class Runtime(Commands):
    def __init__(self, root: str = DEFAULT_ROOT, bridge: str = DEFAULT_BRIDGE) -> None:
        self.root = os.path.abspath(root)
        if os.path.isdir(self.root):
            check_not_modern_docker(self.root)
        check_host(bridge)
        self.containers_dir = os.path.join(self.root, "containers")     # 2013: runtime.repository
        self.quarantine = os.path.join(self.root, "quarantine")
        os.makedirs(self.containers_dir, 0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.graph = Graph(os.path.join(self.root, "graph"), self.quarantine)
        try:
            self.tags = TagStore(os.path.join(self.root, "repositories"), self.graph)
        except RuntimeError as e:        # unreadable: set aside, start with no tags
            set_aside(os.path.join(self.root, "repositories"), self.quarantine, e)
            self.tags = TagStore(os.path.join(self.root, "repositories"), self.graph)
        self.network = NetworkManager(bridge)
        self.auth = load_config(self.root)
        self.containers: dict[str, Container] = {}
        self.container_index = TruncIndex()
        self.still_running: list[Container] = []
        self.restore()

    def resume(self) -> None:
        """Inside the event loop: watch the containers that outlived the last daemon."""
        for container in self.still_running:
            container.monitor_task = asyncio.create_task(container.monitor(container.State.Pid))
        self.still_running = []

    # -- Containers -----------------------------------------------------------------

    def restore(self) -> None:
        """Load every saved container (spec 4.6)."""
        for name in sorted(os.listdir(self.containers_dir)):
            path = os.path.join(self.containers_dir, name)
            if name.startswith(HALF_DONE):       # a create or rm the last daemon died in
                remove_or_set_aside(path, self.quarantine)
                continue
            try:
                container = Container.load(path, graph=self.graph, network=self.network)
                if container.Id != name:
                    raise ValueError(f"the record is of container {container.Id}")
                self.register(container)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                set_aside(path, self.quarantine, f"Failed to load container: {e}")
                continue
            try:
                self.reconnect(container)
            except (OSError, RuntimeError, ValueError) as e:
                log.error("Container %s: %s", name, e)

    def reconnect(self, container: Container) -> None:
        """A container saved as running: adopt it again through its shim (shim.py),
        or record how it ended (the shim wrote its status before it left).

        A stopped one keeps nothing mounted (the last daemon may have died starting it).
        """
        if not container.State.Running:
            if is_mounted(container.rootfs):
                unmount_rootfs(container.rootfs)
            return
        if process_alive(container.State.Pid, container.root) and shim_answers(container.root):
            ns = container.NetworkSettings
            container.iface = self.network.restore(ns.IpAddress, ns.PortMapping)
            self.still_running.append(container)
            return
        ended = container.ended_state()
        container.set_stopped(ended)
        container.finish(ended)              # unmount, save
        container.set_released()

    def register(self, container: Container) -> None:
        if not container.Id:
            raise ValueError("Invalid empty id")
        if container.Id in self.containers:
            raise ValueError("Container is already loaded")
        self.containers[container.Id] = container
        self.container_index.add(container.Id)

    def get(self, name: str) -> Container | None:
        """A container by full ID or unique ID prefix."""
        try:
            return self.containers[self.container_index.get(name)]
        except KeyError:
            return None

    def list(self) -> list[Container]:
        """Newest first (spec 4.7)."""
        return sorted(self.containers.values(), key=lambda c: c.created_at, reverse=True)

    def create(self, config: Config) -> Container:
        """A new stopped container (spec 4.3); nothing is mounted or allocated yet."""
        image = self.tags.lookup_image(config.Image)
        lxc.check_memory_limit(config.Memory)
        container_id = generate_id()
        config.Hostname = config.Hostname or container_id[:12]
        command = (config.Entrypoint or []) + (config.Cmd or [])
        container = Container(Id=container_id, Created=now_string(), Path=command[0],
                              Args=command[1:], Config=config, State=State(),
                              Image=image.id, NetworkSettings=NetworkSettings(),
                              SysInitPath=lxc.SYSINIT, root=os.path.join(self.containers_dir, container_id),
                              graph=self.graph, network=self.network)
        # Written aside and renamed into place: a crash leaves no container without a record.
        staging = os.path.join(self.containers_dir, HALF_DONE + "new-" + container_id)
        os.mkdir(staging, 0o700)
        container.root = staging
        container.to_disk()
        container.root = os.path.join(self.containers_dir, container_id)
        os.rename(staging, container.root)
        self.register(container)
        return container

    async def destroy(self, container: Container) -> None:
        """Stop, unmount and delete a container (spec 4.5)."""
        while True:
            await container.stop()
            async with container.lock:      # after the release that saves its last record
                if container.State.Running:  # a start got the lock first: stop that run too
                    continue
                if container.removed:       # another rm was first
                    raise LookupError(f"Container {container.Id} not found - maybe it was already destroyed?")
                if is_mounted(container.rootfs):
                    try:
                        await asyncio.to_thread(unmount_rootfs, container.rootfs)
                    except OSError as e:
                        raise RuntimeError(f"Unable to unmount container {container.Id}: {e}") from None
                del self.containers[container.Id]
                self.container_index.delete(container.Id)
                container.set_removed()
                # Renamed away first: a crash during the rmtree leaves no half-deleted container.
                garbage = os.path.join(self.containers_dir, HALF_DONE + "rm-" + container.Id)
                try:
                    os.rename(container.root, garbage)
                    await asyncio.to_thread(remove_tree, garbage)
                except OSError as e:
                    raise RuntimeError(f"Unable to remove filesystem for {container.Id}: {e}") from None
                return

    def commit(self, container: Container, repository: str = "", tag: str = "",
               comment: str = "") -> Image:
        """A new image from the container's rw layer (spec 6.5); blocking."""
        def fill_layer(layer: str) -> None:
            with tempfile.TemporaryFile(dir=container.root) as spool:
                archive.tar_layer(container.rw, spool)
                spool.seek(0)
                archive.untar(spool, layer)
        image = self.graph.create(fill_layer, comment=comment, parent=container.Image,
                                  container=container.Id,
                                  container_config=config_record(container.Config))
        if repository:
            self.tags.set(repository, tag, image.id, force=True)
        return image

    # -- Images ----------------------------------------------------------------------

    def import_image(self, source: str, repository: str, tag: str, stdin, out) -> Image:
        """A new image from a tarball: the client's stdin for `-`, else a URL (spec 3.8)."""
        url = import_url(source)        # refused before anything is read

        def fill_layer(layer: str) -> None:
            if source == "-":
                return archive.untar(stdin, layer)
            out.write(f"Downloading from {url}\n".encode())
            try:    # the timeout bounds the connect and every read: a silent server frees the thread
                with HTTP_ONLY.open(url, timeout=URL_TIMEOUT) as response:
                    length = int(response.headers.get("Content-Length") or -1)
                    archive.untar(ProgressReader(response, length, lambda t: out.write(t.encode())), layer)
            except urllib.error.HTTPError as e:
                raise RuntimeError(f"Got HTTP status code >= 400: {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise RuntimeError(f"Get {url}: {e.reason}") from None
            except (TimeoutError, ConnectionError) as e:
                raise RuntimeError(f"Get {url}: {e.strerror or e}") from None
        image = self.graph.create(fill_layer, comment=f"Imported from {source}",
                                  container_config=config_record(Config()))
        if repository:
            self.tags.set(repository, tag, image.id, force=True)
        return image


def import_url(source: str) -> str:
    """What `import` reads: `-`, or an http(s) URL; `host[:port]/path` is taken for http,
    as in 2013. Any other scheme (file:, ftp:, data:, ...) is refused (HTTP_ONLY)."""
    scheme, colon, rest = source.partition(":")
    if source == "-" or not colon or rest[:1].isdigit() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return source if source == "-" else "http://" + source
    if scheme.lower() not in ("http", "https"):
        raise ValueError(f"Unsupported URL scheme {scheme}: import takes an http:// or https:// URL, "
                         "or - for the standard input")
    return source
