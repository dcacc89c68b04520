"""Pull, push and login against a registry: registry.go of 2013 (spec 9).

2013 spoke the index API v1, which no longer exists. This module speaks the
distribution v2 / OCI API that every registry speaks today (DESIGN.md
difference 6), and keeps 2013's commands, output lines and `.dockercfg`.

Runs in: the daemon, on the CLIENT_PACED threads (utils.py): every HTTP
exchange has a timeout, so a silent registry holds up nothing else.

Changed since 2013:
- names: `busybox` is Docker Hub's `library/busybox`; a first part with `.`,
  `:` or `localhost` names a registry; loopback is plain HTTP, others HTTPS;
- `pull NAME` pulls one tag (`latest` by default), not every tag;
- each layer becomes one image whose ID is its chain ID, so a layer already
  here is never downloaded again; an image on top holds the image config's
  Entrypoint, Cmd, Env, User and WorkingDir (container.apply_image_config);
- every blob is checked against its digest before anything is registered,
  and the tag is set last: a failed pull leaves no partial image;
- `push` uploads gzip layers, skips blobs the registry has, then an OCI
  config and manifest; Docker Hub keeps 2013's rules, other registries take any name;
- `login` checks the credentials against `/v2/`; auth answers the
  registry's challenge (Basic, or a bearer token).

Not supported: schema 1 manifests, zstd layers, cross-repository blob
mounts, pulling by digest.
"""
from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import ipaddress
import json
import lzma
import os
import platform
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, replace
from typing import Callable

from . import archive
from .auth import AuthConfig
from .container import IMAGE_SETTINGS, Config, config_record
from .graph import Graph, Image
from .tags import DEFAULT_TAG, TagStore, parse_repository_tag
from .utils import ProgressReader, json_compact, now_string, parse_time, remove_or_set_aside

HUB_REGISTRY = "registry-1.docker.io"
HUB_NAMES = {"docker.io", "index.docker.io", "registry.docker.io", HUB_REGISTRY}
TIMEOUT = 60.0                       # seconds without progress on one HTTP exchange
CHUNK = 1 << 16
MAX_DOCUMENT = 8 << 20               # manifests and configs are small JSON documents

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", OCI_LAYER_GZIP,
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar")
NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                 "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

Write = Callable[[str], None]


class RegistryError(Exception):
    """A failed exchange with a registry; the text is what the user sees."""


# -- Names -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    server: str   # "" for Docker Hub, else "host[:port]"
    path: str     # the repository on the registry: "library/busybox", "team/app"
    name: str     # the local repository name, as typed: "busybox", "localhost:5000/team/app"
    tag: str      # "" when none was given


def server_key(text: str) -> str:
    """`http://Localhost:5000/v2/` -> `localhost:5000`; Docker Hub's names -> ""."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text.strip().lower()).split("/")[0]
    return "" if host in HUB_NAMES else host


def parse_reference(text: str) -> Reference:
    """Split `[host[:port]/]path[:tag]` and check it the way registries do."""
    name, tag = parse_repository_tag(text)
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        server, path = server_key(first), rest
    else:
        server, path = "", name
    if not server and "/" not in path:
        path = "library/" + path   # Docker Hub's official images
    if not all(NAME_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise ValueError(f"Illegal repository name: {name}")
    if tag and not TAG_NAME.fullmatch(tag):
        raise ValueError(f"Illegal tag name: {tag}")
    return Reference(server, path, name, tag)


def is_loopback(server: str) -> bool:
    host = server.rsplit(":", 1)[0] if server.count(":") == 1 else server
    host = host.strip("[]").split("]:")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(server: str) -> str:
    if not server:
        return "https://" + HUB_REGISTRY
    return ("http://" if is_loopback(server) else "https://") + server


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", ARCHITECTURES.get(machine, machine)


# -- HTTP and authentication -------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://x/token",service="x"` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'([A-Za-z]+)="([^"]*)"', rest))
    return scheme.lower(), params


def basic_authorization(credentials: AuthConfig) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def error_detail(response) -> str:
    """The registry's own words from an error response, or ""."""
    try:
        body = response.read(MAX_DOCUMENT)
        errors = json.loads(body)["errors"]
        texts = []
        for e in errors:
            code = str(e.get("code", "")).lower().replace("_", " ")
            message = str(e.get("message", ""))
            texts.append(message if message == code or not code else f"{code}: {message}")
        return "; ".join(texts)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def status_error(response, prefix: str = "HTTP code: ") -> RegistryError:
    detail = error_detail(response)
    return RegistryError(f"{prefix}{response.status}" + (f" ({detail})" if detail else ""))


class Session:
    """HTTP to one registry, answering its authentication challenges.

    `scope` is the token scope to ask for, e.g. `repository:team/app:pull,push`.
    Credentials are only sent to the registry itself: blob downloads are often
    redirected to storage elsewhere, which must not see them.
    """

    def __init__(self, server: str, credentials: AuthConfig, scope: str = "") -> None:
        self.server = server
        self.base = base_url(server)
        self.credentials = credentials
        self.scope = scope
        self.authorization = ""
        # Loopback registries are never reached through a proxy.
        handlers = [urllib.request.ProxyHandler({})] if server and is_loopback(server) else []
        self.opener = urllib.request.build_opener(*handlers)

    def url(self, path: str) -> str:
        return path if "://" in path else urllib.parse.urljoin(self.base, path)

    def request(self, method: str, path: str, headers: dict | None = None, body=None):
        """One exchange; a 401 is answered once. Error statuses are returned, not raised."""
        url = self.url(path)
        # A streamed body cannot be sent twice; ping() answers the challenge before those.
        resendable = body is None or isinstance(body, bytes) or hasattr(body, "seek")
        for attempt in (1, 2):
            request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
            if self.authorization:
                request.add_unredirected_header("Authorization", self.authorization)
            try:
                return self.opener.open(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as response:
                if (response.status != 401 or attempt == 2 or not resendable
                        or not self.answer(response.headers.get("WWW-Authenticate", ""))):
                    return response
                response.close()
                if hasattr(body, "seek"):
                    body.seek(0)
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise RegistryError(f"{method} {url}: {reason}") from None
        raise AssertionError("unreachable")

    def answer(self, challenge: str) -> bool:
        """Set the Authorization header the challenge asks for; False if we cannot."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic" and self.credentials.username:
            self.authorization = basic_authorization(self.credentials)
            return True
        if scheme == "bearer" and params.get("realm"):
            self.authorization = "Bearer " + self.fetch_token(params)
            return True
        return False

    def fetch_token(self, params: dict[str, str]) -> str:
        query = [("service", params["service"])] if params.get("service") else []
        scopes = [s for s in (self.scope, params.get("scope", "")) if s]
        query += [("scope", s) for s in dict.fromkeys(scopes)]
        if self.credentials.username:
            query.append(("account", self.credentials.username))
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        if self.credentials.username:
            request.add_unredirected_header("Authorization", basic_authorization(self.credentials))
        try:
            with self.opener.open(request, timeout=TIMEOUT) as response:
                answer = json.loads(response.read(MAX_DOCUMENT))
        except urllib.error.HTTPError as response:
            raise status_error(response, "Authentication failed: HTTP code ") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"Authentication failed: {getattr(e, 'reason', e)}") from None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else ""
        if not token:
            raise RegistryError("Authentication failed: the token server sent no token")
        return token

    def ping(self) -> None:
        """GET /v2/: learns the authentication scheme before any upload."""
        with self.request("GET", "/v2/") as response:
            if response.status == 404:
                raise RegistryError(f"{self.base} is not a v2 registry (HTTP code: 404)")
            if response.status != 200:
                raise status_error(response)

    def get_document(self, path: str, accept: str = "", digest: str = "") -> tuple[bytes, str]:
        """A manifest or config: (body, content type), checked against `digest` if given."""
        with self.request("GET", path, {"Accept": accept} if accept else {}) as response:
            if response.status != 200:
                raise status_error(response)
            body = response.read(MAX_DOCUMENT + 1)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            sent = response.headers.get("Docker-Content-Digest", "")
            digest = digest or (sent if sent.startswith("sha256:") else "")
        if len(body) > MAX_DOCUMENT:
            raise RegistryError(f"{path}: document larger than {MAX_DOCUMENT} bytes")
        if digest and sha256_digest(body) != digest:
            raise RegistryError(f"{path}: digest mismatch: expected {digest}, got {sha256_digest(body)}")
        return body, content_type


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise RegistryError(f"Unsupported digest: {digest}")
    return hexdigest


# -- Layers: download, decompress, check ------------------------------------------------


class Decompressor:
    """Gzip, xz, bzip2 or a plain tar, told apart by the first bytes of the stream."""

    def __init__(self) -> None:
        self.head = b""
        self.kind = ""        # "gzip", "xz", "bzip2" or "tar" once the head is known
        self.engine = None

    def feed(self, data: bytes) -> bytes:
        if not self.kind:
            self.head += data
            if len(self.head) < 6 and data:
                return b""
            data = self.head
            self.start(data)
        if self.kind == "tar":
            return data
        if self.kind == "gzip":
            return self.gunzip(data)
        return self.engine.decompress(data)

    def flush(self) -> bytes:
        return self.feed(b"") if not self.kind else b""

    def start(self, head: bytes) -> None:
        self.kind = archive.compression(head) or "tar"
        if self.kind == "zstd":
            raise RegistryError("zstd-compressed layers are not supported")
        if self.kind == "gzip":
            self.engine = zlib.decompressobj(31)
        elif self.kind == "xz":
            self.engine = lzma.LZMADecompressor()
        elif self.kind == "bzip2":
            self.engine = bz2.BZ2Decompressor()

    def gunzip(self, data: bytes) -> bytes:
        out = []
        while data:   # a gzip stream may hold several members
            out.append(self.engine.decompress(data))
            if not self.engine.eof:
                break
            data = self.engine.unused_data
            self.engine = zlib.decompressobj(31)
        return b"".join(out)


def download_layer(session: Session, path: str, descriptor: dict, diff_id: str,
                   out, write: Write) -> None:
    """Write the layer's uncompressed tar to `out`; refuse it unless both digests match."""
    digest, size = descriptor["digest"], int(descriptor.get("size", -1))
    with session.request("GET", f"/v2/{path}/blobs/{digest}") as response:
        if response.status != 200:
            raise status_error(response)
        if size < 0:
            size = int(response.headers.get("Content-Length", -1))
        reader = ProgressReader(response, size, write)
        compressed, plain = hashlib.sha256(), hashlib.sha256()
        decompressor, broken = Decompressor(), None
        received = 0
        while True:
            try:
                data = reader.read(CHUNK)
            except OSError as e:
                raise RegistryError(f"Failed to download layer {digest}: {e}") from None
            received += len(data)
            if size >= 0 and received > size:
                raise RegistryError(f"Layer {digest} is longer than its {size} bytes")
            compressed.update(data)
            if broken is None:   # keep reading: the digest says more than a zlib error
                try:
                    tar = decompressor.feed(data) if data else decompressor.flush()
                except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
                    broken = e
                else:
                    plain.update(tar)
                    out.write(tar)
            if not data:
                break
    if "sha256:" + compressed.hexdigest() != digest:
        raise RegistryError(f"Layer {digest} is corrupted: its digest is sha256:{compressed.hexdigest()}")
    if broken is not None:
        raise RegistryError(f"Layer {digest} is corrupted: {broken}")
    if "sha256:" + plain.hexdigest() != diff_id:
        raise RegistryError(f"Layer {digest} is corrupted: its content digest is "
                            f"sha256:{plain.hexdigest()}, the image config says {diff_id}")


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker's ChainID of each layer: sha256(parent chain ID + " " + diff ID)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else sha256_digest(f"{chain[-1]} {diff_id}".encode()))
    return [digest_hex(c) for c in chain]


# -- Pull -----------------------------------------------------------------------------


@dataclass
class Layer:
    """One layer of a pulled image and the local image it becomes."""
    image: Image
    descriptor: dict
    diff_id: str


def fetch_manifest(session: Session, ref: Reference) -> dict:
    """The image manifest for this platform, following an index if there is one."""
    accept = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
    body, content_type = session.get_document(f"/v2/{ref.path}/manifests/{ref.tag}", accept)
    manifest = parse_json(body, "manifest")
    media_type = manifest.get("mediaType") or content_type
    if media_type in INDEX_TYPES or "manifests" in manifest:
        entry = choose_platform(manifest, ref)
        body, content_type = session.get_document(
            f"/v2/{ref.path}/manifests/{entry['digest']}", accept, entry["digest"])
        manifest = parse_json(body, "manifest")
        media_type = manifest.get("mediaType") or content_type
    if manifest.get("schemaVersion") != 2 or "config" not in manifest:
        raise RegistryError(f"Unsupported manifest for {ref.name}:{ref.tag} ({media_type or 'schema 1'})")
    return manifest


def choose_platform(index: dict, ref: Reference) -> dict:
    want_os, want_arch = host_platform()
    for entry in index.get("manifests", []):
        p = entry.get("platform", {})
        if p.get("os") == want_os and p.get("architecture") == want_arch:
            return entry
    raise RegistryError(f"{ref.name}:{ref.tag} has no image for {want_os}/{want_arch}")


def parse_json(body: bytes, what: str) -> dict:
    try:
        value = json.loads(body)
    except ValueError as e:
        raise RegistryError(f"Failed to parse the {what}: {e}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"Failed to parse the {what}: not a JSON object")
    return value


def valid_time(text) -> str:
    try:
        parse_time(text)
        return text
    except (TypeError, ValueError):
        return now_string()


def string_list(settings: dict, name: str) -> list[str] | None:
    """An image config's list of strings (Entrypoint, Cmd, Env), or None."""
    value = settings.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"The image config's {name} is not a list of strings")
    return value or None


def image_records(manifest: dict, config: dict, config_digest: str) -> tuple[list[Layer], Image]:
    """The local images a pulled image becomes: one per layer, then the config's."""
    descriptors = manifest.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(descriptors) != len(diff_ids):
        raise RegistryError(f"The manifest lists {len(descriptors)} layers, the image config {len(diff_ids)}")
    for d in descriptors:
        if d.get("mediaType", LAYER_TYPES[0]) not in LAYER_TYPES:
            raise RegistryError(f"Unsupported layer type {d.get('mediaType')}")
        digest_hex(d.get("digest", ""))
    history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != len(descriptors):
        history = [{}] * len(descriptors)
    created = valid_time(config.get("created"))
    version = str(config.get("docker_version", ""))
    ids = chain_ids(diff_ids)
    layers = []
    for i, (descriptor, diff_id) in enumerate(zip(descriptors, diff_ids)):
        image = Image(id=ids[i], parent=ids[i - 1] if i else "",
                      created=valid_time(history[i].get("created", created)),
                      comment=str(history[i].get("created_by") or history[i].get("comment") or ""),
                      container_config=config_record(Config()), docker_version=version)
        layers.append(Layer(image, descriptor, diff_id))
    settings = config.get("config") or {}
    top = Image(id=digest_hex(config_digest), parent=ids[-1] if ids else "", created=created,
                container_config=config_record(Config(
                    Entrypoint=string_list(settings, "Entrypoint"), Cmd=string_list(settings, "Cmd"),
                    Env=string_list(settings, "Env"), User=str(settings.get("User") or ""),
                    WorkingDir=str(settings.get("WorkingDir") or ""))),
                docker_version=version)
    return layers, top


def register(graph: Graph, image: Image, fill_layer: Callable[[str], None]) -> None:
    """Graph.register, except that a pull that got there first is fine."""
    try:
        graph.register(image, fill_layer)
    except ValueError:
        if not graph.exists(image.id):
            raise


def pull(graph: Graph, tags: TagStore, credentials: AuthConfig, name: str, write: Write) -> None:
    """`pull NAME[:TAG]` (blocking; run it in a thread)."""
    ref = parse_reference(name)
    tag = ref.tag or DEFAULT_TAG
    session = Session(ref.server, credentials.for_server(ref.server), f"repository:{ref.path}:pull")
    write(f"Pulling repository {ref.name}\n")
    session.ping()
    write(f"Pulling tag {ref.name}:{tag}\n")
    manifest = fetch_manifest(session, ref if ref.tag else replace(ref, tag=tag))
    config_digest = manifest["config"].get("digest", "")
    image_id = digest_hex(config_digest)
    if not graph.exists(image_id):
        write(f"Pulling {image_id} metadata\n")
        body, _ = session.get_document(f"/v2/{ref.path}/blobs/{config_digest}", digest=config_digest)
        layers, top = image_records(manifest, parse_json(body, "image config"), config_digest)
        pull_layers(session, ref.path, graph, [l for l in layers if not graph.exists(l.image.id)], write)
        register(graph, top, lambda layer: None)
    tags.set(ref.name, tag, image_id)


def pull_layers(session: Session, path: str, graph: Graph, layers: list[Layer], write: Write) -> None:
    """Download and check every layer first, then register them, parents first."""
    workdir = tempfile.mkdtemp(prefix="pull-", dir=graph.tmp)
    try:
        for layer in layers:
            write(f"Pulling {layer.image.id} fs layer\n")
            with open(os.path.join(workdir, layer.image.id), "wb") as out:
                download_layer(session, path, layer.descriptor, layer.diff_id, out, write)
        for layer in layers:
            tarball = os.path.join(workdir, layer.image.id)
            register(graph, layer.image, lambda dest, tarball=tarball: untar_file(tarball, dest))
            os.unlink(tarball)
    finally:
        remove_or_set_aside(workdir, graph.quarantine)


def untar_file(tarball: str, dest: str) -> None:
    with open(tarball, "rb") as f:
        archive.untar(f, dest)


# -- Push -----------------------------------------------------------------------------


class HashingWriter:
    """A write-only file that passes data on and keeps its sha256 and length."""

    def __init__(self, out) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        pass

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def pack_layer(layer_dir: str, out) -> tuple[dict, str]:
    """Gzip tarball of a stored layer into `out`: (OCI descriptor, diff ID)."""
    compressed = HashingWriter(out)
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        plain = HashingWriter(gz)
        archive.tar_layer(layer_dir, plain)
    descriptor = {"mediaType": OCI_LAYER_GZIP, "digest": compressed.digest(), "size": compressed.size}
    return descriptor, plain.digest()


def has_content(layer_dir: str) -> bool:
    return bool(os.listdir(layer_dir))


def blob_exists(session: Session, path: str, digest: str) -> bool:
    with session.request("HEAD", f"/v2/{path}/blobs/{digest}") as response:
        if response.status in (200, 404):
            return response.status == 200
        raise status_error(response)


def upload_blob(session: Session, path: str, body, descriptor: dict) -> None:
    """POST for an upload URL, then one PUT with the whole blob."""
    with session.request("POST", f"/v2/{path}/blobs/uploads/", {"Content-Length": "0"}, b"") as response:
        if response.status != 202 or not response.headers.get("Location"):
            raise status_error(response, "Failed to start the upload: HTTP code ")
        location = urllib.parse.urljoin(session.url(f"/v2/{path}/blobs/uploads/"),
                                        response.headers["Location"])
    location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": descriptor["digest"]})
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(descriptor["size"])}
    with session.request("PUT", location, headers, body) as response:
        if response.status != 201:
            raise status_error(response, "Failed to upload layer: HTTP code ")


def push_layers(session: Session, path: str, graph: Graph, chain: list[Image],
                write: Write) -> list[tuple[Image, dict, str]]:
    """Upload the layers of a chain (root first) that the registry lacks:
    [(image, descriptor, diff ID)] of every layer the manifest lists."""
    staging = graph.tmp
    # Empty layers (such as a pulled image's config layer) carry nothing; skip them.
    images = [i for i in chain if has_content(graph.layer_path(i.id))] or chain[:1]
    layers = []
    for image in images:
        with tempfile.TemporaryFile(dir=staging) as tarball:
            descriptor, diff_id = pack_layer(graph.layer_path(image.id), tarball)
            layers.append((image, descriptor, diff_id))
            if blob_exists(session, path, descriptor["digest"]):
                write(f"Image {image.id} already pushed, skipping\n")
                continue
            write(f"Pushing {image.id} fs layer\n")
            tarball.seek(0)
            upload_blob(session, path, ProgressReader(tarball, descriptor["size"], write), descriptor)
    return layers


def history_entry(image: Image) -> dict:
    command = " ".join((image.container_config or {}).get("Cmd") or [])
    entry = {"created": valid_time(image.created), "created_by": command, "comment": image.comment}
    return {k: v for k, v in entry.items() if v}


def image_config(top: Image, layers: list[tuple[Image, dict, str]]) -> dict:
    """The OCI image config of a local image: its command, environment and layers."""
    settings = top.container_config or {}
    os_name, architecture = host_platform()
    return {
        "created": valid_time(top.created),
        "architecture": architecture,
        "os": os_name,
        "config": {k: settings[k] for k in IMAGE_SETTINGS if settings.get(k)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, _, diff_id in layers]},
        "history": [history_entry(image) for image, _, _ in layers],
    }


def push_image(session: Session, path: str, graph: Graph, top: Image, write: Write) -> bytes:
    """Upload an image's layers and config; return its manifest."""
    layers = push_layers(session, path, graph, list(graph.parents(top))[::-1], write)
    config = json_compact(image_config(top, layers)).encode()
    config_descriptor = {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)}
    write(f"Pushing {top.id} metadata\n")
    if not blob_exists(session, path, config_descriptor["digest"]):
        upload_blob(session, path, config, config_descriptor)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor,
                "layers": [descriptor for _, descriptor, _ in layers]}
    return json_compact(manifest).encode()


def push(graph: Graph, tags: TagStore, credentials: AuthConfig, name: str, write: Write) -> None:
    """`push NAME[:TAG]` (blocking; run it in a thread): every local tag of NAME, or TAG."""
    ref = parse_reference(name)
    local = tags.repositories.get(ref.name, {})
    if not local or (ref.tag and ref.tag not in local):
        raise LookupError(f"No such id: {name}")
    selected = {ref.tag: local[ref.tag]} if ref.tag else dict(local)
    session = Session(ref.server, credentials.for_server(ref.server), f"repository:{ref.path}:pull,push")
    session.ping()
    write(f"Pushing repository {ref.name} ({len(selected)} tags)\n")
    for tag, image_id in sorted(selected.items()):
        try:
            image = graph.get(image_id)
        except (KeyError, OSError, ValueError):
            write(f"Skipping tag {ref.name}:{tag}: {image_id} does not exist\n")
            continue
        write(f"Pushing tag {ref.name}:{tag}\n")
        manifest = push_image(session, ref.path, graph, image, write)
        write(f"Registering tag {ref.name}:{tag}\n")
        with session.request("PUT", f"/v2/{ref.path}/manifests/{tag}",
                             {"Content-Type": OCI_MANIFEST}, manifest) as response:
            if response.status not in (200, 201):
                raise status_error(response, f"Internal server error: trying to push tag {tag} "
                                             f"on {ref.name}: HTTP code ")


# -- Login ----------------------------------------------------------------------------


def check_login(server: str, credentials: AuthConfig) -> str:
    """Try the credentials on SERVER's /v2/ (blocking); the status text, or RegistryError."""
    try:
        with Session(server, credentials).request("GET", "/v2/") as response:
            if response.status == 200:
                return "Login Succeeded\n"
            detail = error_detail(response)
            status = response.status
    except RegistryError as e:
        raise RegistryError(f"Login: {e}") from None
    raise RegistryError(f"Login: {detail or f'HTTP code: {status}'}")
