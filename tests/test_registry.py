"""pull, push and login against a real registry (issue: registry).

Every test starts Debian's `docker-registry` (the distribution v2 server) on
127.0.0.1:5000 inside the daemon's private network namespace, with its own
config file and storage under the test's tmp_path, plain HTTP. Images from
"another client" are OCI layouts built here and copied in with `skopeo`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from netns import REPO, Daemon

from docker0_2013.auth import AuthConfig, load_config, save_config
from docker0_2013.registry import (Decompressor, RegistryError, chain_ids, parse_challenge,
                                   parse_reference, server_key)

SERVER = "127.0.0.1:5000"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


# -- A registry inside the test's namespace ---------------------------------------


class Registry:
    """`docker-registry serve CONFIG` on 127.0.0.1:5000 in `netns`; ended by PID."""

    def __init__(self, netns, workdir: str, users: dict[str, str] | None = None,
                 token_auth: str = "") -> None:
        self.netns = netns
        self.dir = os.path.join(workdir, "registry")
        self.storage = os.path.join(self.dir, "storage")
        os.makedirs(self.storage)
        auth = token_auth
        if users:
            htpasswd = os.path.join(self.dir, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in users.items():
                    f.write(subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                           capture_output=True, text=True).stdout.strip() + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\n  formatter: text\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
                    f"http:\n  addr: {SERVER}\n  secret: docker0-test\n{auth}")
        self.log_path = os.path.join(self.dir, "log")
        with open(self.log_path, "wb") as log:
            self.proc = netns.popen("docker-registry", "serve", config, stdout=log, stderr=log)
        wait_listening(netns, 5000, self.proc)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request, from the access log."""
        return [(m, p, int(s)) for m, p, s in
                re.findall(r'"([A-Z]+) (\S+) HTTP/1\.1" (\d+)', self.log())]

    def blob_gets(self) -> list[str]:
        return [p for m, p, s in self.requests() if m == "GET" and "/blobs/" in p]

    def blob_file(self, digest: str) -> str:
        hexdigest = digest.split(":")[1]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexdigest[:2],
                            hexdigest, "data")


def wait_listening(netns, port: int, proc: subprocess.Popen) -> None:
    """Until something listens on 127.0.0.1:port in the namespace; fails if `proc` ends."""
    deadline = time.time() + 20
    while True:
        try:
            netns.socket_connect(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


# -- Images ----------------------------------------------------------------------


def busybox_tar() -> bytes:
    return subprocess.run([os.path.join(REPO, "contrib", "mkimage-busybox")], check=True,
                          capture_output=True).stdout


class World:
    """A daemon in its namespace, holding `base` (imported from contrib/mkimage-busybox),
    plus registries and helper servers started in that namespace."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.registries: list[Registry] = []
        self.helpers: list[subprocess.Popen] = []
        self.daemon = Daemon()
        self.root = self.daemon.root
        self.base_id = ""
        try:
            reply = self.call("import", "-", "base", stdin=busybox_tar())
            self.base_id = self.repositories()["base"]["latest"]
            assert reply == self.base_id[:12] + "\n", reply
        except BaseException:
            self.daemon.destroy()
            raise

    def registry(self, users: dict[str, str] | None = None, token_auth: str = "") -> Registry:
        registry = Registry(self.daemon.netns, self.tmp, users, token_auth)
        self.registries.append(registry)
        return registry

    def call(self, *args: str, stdin: bytes = b"") -> str:
        return self.daemon.call(*args, stdin=stdin)

    def repositories(self) -> dict:
        with open(os.path.join(self.root, "repositories")) as f:
            return json.load(f)["Repositories"]

    def image_json(self, image_id: str) -> dict:
        with open(os.path.join(self.root, "graph", image_id, "json")) as f:
            return json.load(f)

    def layer(self, image_id: str) -> str:
        return os.path.join(self.root, "graph", image_id, "layer")

    def image_ids(self) -> set[str]:
        return {n for n in os.listdir(os.path.join(self.root, "graph")) if not n.startswith(":")}

    def chain(self, image_id: str) -> list[str]:
        """The image, its parent, ... up to the root."""
        ids = [image_id]
        while parent := self.image_json(ids[-1]).get("parent"):
            ids.append(parent)
        return ids

    def skopeo(self, *args: str) -> subprocess.CompletedProcess:
        return self.daemon.netns.exec("skopeo", *args, check=False)

    def destroy(self) -> None:
        try:
            for proc in [r.proc for r in self.registries] + self.helpers:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        finally:
            self.daemon.destroy()


@pytest.fixture
def world(tmp_path):
    w = World(str(tmp_path))
    try:
        yield w
    finally:
        w.destroy()


# -- OCI layouts, as another client would push them ---------------------------------


def tar_of(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A tar of (name, content) pairs; content None is a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1365000000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout directory that skopeo can copy from."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs: list[dict] = []
        self.manifests: dict[str, dict] = {}

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = digest_of(data)
        with open(os.path.join(self.path, "blobs", "sha256", digest.split(":")[1]), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, layers: list[tuple[bytes, bool]], settings: dict, diff_ids=None,
              arch: str = "amd64") -> dict:
        """Layers are (tar, gzip it?); returns the manifest's descriptor."""
        descriptors = []
        for tar, compress in layers:
            data = gzip.compress(tar, mtime=0) if compress else tar
            media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
            descriptors.append(self.blob(data, media))
        config = {"created": "2013-04-04T23:05:03.5-07:00", "architecture": arch, "os": "linux",
                  "config": settings,
                  "rootfs": {"type": "layers",
                             "diff_ids": diff_ids or [digest_of(tar) for tar, _ in layers]},
                  "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
        config_descriptor = self.blob(json.dumps(config).encode(),
                                      "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor,
                    "layers": descriptors}
        descriptor = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        self.manifests[descriptor["digest"]] = manifest
        descriptor["platform"] = {"os": "linux", "architecture": arch}
        return descriptor

    def tag(self, name: str, descriptor: dict) -> None:
        ref = dict(descriptor, annotations={"org.opencontainers.image.ref.name": name})
        ref.pop("platform", None)
        self.refs.append(ref)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.refs}, f)

    def index(self, manifests: list[dict]) -> dict:
        return self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                     "manifests": manifests}).encode(), OCI_INDEX)


def copy_in(world: World, layout: Layout, tag: str, repo: str, all_images: bool = False) -> None:
    result = world.skopeo("copy", *(["--all"] if all_images else []), "--dest-tls-verify=false",
                          f"oci:{layout.path}:{tag}", f"docker://{SERVER}/{repo}:{tag}")
    assert result.returncode == 0, result.stderr


CHANGES = tar_of([("etc/", None), ("etc/motd", b"hello from layer 2\n"),
                  ("etc/.wh.hostname", b""), ("var/", None), ("var/.wh.log", b"")])
SETTINGS = {"Env": ["PATH=/bin:/usr/bin", "GREETING=hi"], "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["cat /etc/motd"]}


# -- Pure logic --------------------------------------------------------------------


def test_names():
    ref = parse_reference("busybox")
    assert (ref.server, ref.path, ref.name, ref.tag) == ("", "library/busybox", "busybox", "")
    ref = parse_reference("localhost:5000/team/app:v1")
    assert (ref.server, ref.path, ref.name, ref.tag) == ("localhost:5000", "team/app",
                                                         "localhost:5000/team/app", "v1")
    ref = parse_reference("docker.io/shykes/pybuilder")
    assert (ref.server, ref.path, ref.tag) == ("", "shykes/pybuilder", "")
    assert parse_reference("registry.example:443/a/b").server == "registry.example:443"
    for bad in ["Base", "a//b", "-x", "localhost:5000/A"]:
        with pytest.raises(ValueError, match="Illegal repository name"):
            parse_reference(bad)
    with pytest.raises(ValueError, match="Illegal tag name"):
        parse_reference("base:-x")
    assert server_key("http://LocalHost:5000/v2/") == "localhost:5000"
    assert server_key("https://index.docker.io/v1/") == ""
    assert parse_challenge('Bearer realm="https://a/token",service="reg",scope="repository:x:pull"') == \
        ("bearer", {"realm": "https://a/token", "service": "reg", "scope": "repository:x:pull"})


def test_chain_ids_match_docker():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a, b]) == ["a" * 64, hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_decompressor_handles_gzip_members_and_plain():
    data = os.urandom(100_000)
    for blob in [gzip.compress(data[:500]) + gzip.compress(data[500:]), data]:
        d = Decompressor()
        out = b"".join(d.feed(blob[i:i + 7]) for i in range(0, len(blob), 7)) + d.flush()
        assert out == data
    with pytest.raises(RegistryError, match="zstd"):
        Decompressor().feed(b"\x28\xb5\x2f\xfd" + b"\0" * 10)


def test_dockercfg_keeps_2013_lines_first(tmp_path):
    config = AuthConfig("ken", "test", "ken@example.com")
    config.servers["localhost:5000"] = AuthConfig("team", "pa:ss", "team@example.com")
    save_config(str(tmp_path), config)
    text = (tmp_path / ".dockercfg").read_text()
    assert text.startswith("auth = a2VuOnRlc3Q=\nemail = ken@example.com\n[localhost:5000]\n")
    assert (tmp_path / ".dockercfg").stat().st_mode & 0o777 == 0o600
    assert load_config(str(tmp_path)) == config
    (tmp_path / ".dockercfg").write_text(text.replace("[localhost:5000]\nauth = ", "[localhost:5000]\nauth = !!"))
    assert load_config(str(tmp_path)) == AuthConfig("ken", "test", "ken@example.com")


# -- Against the registry -------------------------------------------------------------


def pulled_lines(output: str) -> list[str]:
    """The output without progress lines."""
    return [line for line in output.replace("\r", "\n").split("\n") if line and "%)" not in line]


def test_push_rmi_pull_round_trip(world):
    registry = world.registry()
    name = f"{SERVER}/team/base"
    assert world.call("tag", "base", name, "v1") == ""
    out = world.call("push", f"{name}:v1")
    assert pulled_lines(out) == [f"Pushing repository {name} (1 tags)", f"Pushing tag {name}:v1",
                                 f"Pushing {world.base_id} fs layer",
                                 f"Pushing {world.base_id} metadata", f"Registering tag {name}:v1"]
    assert re.search(r"\d+/\d+ \(100%\)\r\n", out)
    # Another v2 client reads what we pushed.
    inspect = world.skopeo("inspect", "--tls-verify=false", f"docker://{name}:v1")
    assert inspect.returncode == 0, inspect.stderr
    assert len(json.loads(inspect.stdout)["Layers"]) == 1
    copied = os.path.join(world.tmp, "copied")
    result = world.skopeo("copy", "--src-tls-verify=false", f"docker://{name}:v1", f"oci:{copied}:v1")
    assert result.returncode == 0, result.stderr
    [layer] = oci_layers(copied)
    assert "./bin/busybox" in layer.getnames() and "./etc/hostname" in layer.getnames()
    # A second push finds the layer and config already there.
    again = world.call("push", f"{name}:v1")
    assert f"Image {world.base_id} already pushed, skipping\n" in again and "fs layer" not in again

    assert world.call("rmi", world.base_id) == ""
    assert world.base_id not in world.image_ids() and name not in world.repositories()
    out = world.call("pull", f"{name}:v1")
    lines = pulled_lines(out)
    assert lines[:2] == [f"Pulling repository {name}", f"Pulling tag {name}:v1"]
    top = world.repositories()[name]["v1"]
    chain = world.chain(top)
    assert len(chain) == 2 and lines[2:] == [f"Pulling {top} metadata", f"Pulling {chain[1]} fs layer"]
    assert os.path.isfile(os.path.join(world.layer(chain[1]), "bin", "busybox"))
    assert os.listdir(world.layer(top)) == []
    assert re.search(rf"^{re.escape(name)} +v1 +{top[:12]} ", world.call("images"), re.M)
    assert world.call("run", f"{name}:v1", "cat", "/etc/hostname") == "base\n"


def oci_layers(layout: str) -> list[tarfile.TarFile]:
    """The layers of the one image in an OCI layout, as open tar files."""
    def blob(digest: str) -> bytes:
        with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
            return f.read()
    with open(os.path.join(layout, "index.json")) as f:
        manifest = json.loads(blob(json.load(f)["manifests"][0]["digest"]))
    return [tarfile.open(fileobj=io.BytesIO(blob(d["digest"]))) for d in manifest["layers"]]


def test_push_of_a_committed_image_keeps_its_layers_whiteouts_and_command(world):
    registry = world.registry()
    short = world.call("run", "-d", "base", "sh", "-c", "echo new > /new; rm /etc/hostname").strip()
    assert world.call("wait", short) == "0\n"
    name = f"{SERVER}/team/changed"
    assert re.fullmatch(r"[0-9a-f]{12}\n", world.call("commit", short, name))
    out = world.call("push", name)
    assert "Error" not in out and out.endswith(f"Registering tag {name}:latest\n"), out
    copied = os.path.join(world.tmp, "copied")
    result = world.skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{copied}:x")
    assert result.returncode == 0, result.stderr
    base, changes = oci_layers(copied)
    assert "./bin/busybox" in base.getnames()
    assert sorted(n for n in changes.getnames() if n != ".") == ["./etc", "./etc/.wh.hostname", "./new"]
    config = json.loads(world.skopeo("inspect", "--config", "--tls-verify=false",
                                     f"docker://{name}").stdout)
    assert config["config"]["Cmd"] == ["sh", "-c", "echo new > /new; rm /etc/hostname"]
    # Back again, after removing the local copy: the same files, the same command.
    assert world.call("rmi", world.repositories()[name]["latest"]) == ""
    assert world.call("pull", name).count(" fs layer\n") == 2
    assert world.call("run", name, "cat", "/new") == "new\n"
    assert world.call("run", name, "ls", "/etc") == "group\npasswd\nresolv.conf\n"


def test_pull_image_pushed_by_another_client(world):
    registry = world.registry()
    layout = Layout(os.path.join(world.tmp, "layout"))
    base = busybox_tar()
    layout.tag("v1", layout.image([(base, True), (CHANGES, False)], SETTINGS))
    copy_in(world, layout, "v1", "other/app")
    name = f"{SERVER}/other/app:v1"
    out = world.call("pull", name)
    assert "Error" not in out, out
    top = world.repositories()[f"{SERVER}/other/app"]["v1"]
    chain = world.chain(top)
    assert len(chain) == 3
    config_digest = json.loads(world.skopeo("inspect", "--raw", "--tls-verify=false",
                                            f"docker://{name}").stdout)["config"]["digest"]
    assert top == config_digest.split(":")[1]
    assert chain[2] == hashlib.sha256(base).hexdigest()          # chain ID of layer 1 = its diff ID
    assert world.image_json(top)["container_config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert world.image_json(top)["container_config"]["Cmd"] == ["cat /etc/motd"]
    assert world.image_json(top)["container_config"]["Env"] == SETTINGS["Env"]
    changes = world.layer(chain[1])
    assert sorted(os.listdir(os.path.join(changes, "etc"))) == [".wh.hostname", "motd"]
    assert os.listdir(os.path.join(changes, "var")) == [".wh.log"]
    assert os.path.isfile(os.path.join(world.layer(chain[2]), "etc", "hostname"))
    # The image runs its own command, and the whiteouts hide the lower files.
    assert world.call("run", name) == "hello from layer 2\n"
    # A command replaces Cmd and keeps the Entrypoint (sh -c), as Docker does today.
    assert world.call("run", name, "ls /etc /var") == "/etc:\ngroup\nmotd\npasswd\nresolv.conf\n\n/var:\n"


def test_index_picks_this_platform_and_shared_layers_are_not_downloaded_again(world):
    registry = world.registry()
    layout = Layout(os.path.join(world.tmp, "layout"))
    base = busybox_tar()
    amd64 = layout.image([(base, True), (CHANGES, True)], SETTINGS)
    arm64 = layout.image([(tar_of([("arm", b"arm\n")]), True)], {"Cmd": ["/arm"]}, arch="arm64")
    layout.tag("multi", layout.index([arm64, amd64]))
    other = layout.image([(base, True), (tar_of([("etc/", None), ("etc/motd", b"v2\n")]), True)],
                         {"Cmd": ["cat", "/etc/motd"]})
    layout.tag("v2", other)
    copy_in(world, layout, "multi", "other/app", all_images=True)
    copy_in(world, layout, "v2", "other/app")
    out = world.call("pull", f"{SERVER}/other/app:multi")
    assert "Error" not in out, out
    top = world.repositories()[f"{SERVER}/other/app"]["multi"]
    assert world.image_json(top)["container_config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert world.image_json(top)["container_config"]["Cmd"] == ["cat /etc/motd"]
    # Pulling an image that is here already downloads nothing.
    gets = len(registry.blob_gets())
    again = world.call("pull", f"{SERVER}/other/app:multi")
    assert pulled_lines(again) == [f"Pulling repository {SERVER}/other/app",
                                   f"Pulling tag {SERVER}/other/app:multi"]
    assert len(registry.blob_gets()) == gets
    # v2 shares the busybox layer: only its config and its own layer come down.
    out = world.call("pull", f"{SERVER}/other/app:v2")
    fetched = [p.rsplit("/", 1)[1] for p in registry.blob_gets()[gets:]]
    manifest = layout.manifests[other["digest"]]
    assert fetched == [manifest["config"]["digest"], manifest["layers"][1]["digest"]]
    assert out.count("fs layer") == 1
    assert world.call("run", f"{SERVER}/other/app:v2") == "v2\n"


def test_corrupted_blobs_are_refused_and_leave_nothing(world):
    registry = world.registry()
    layout = Layout(os.path.join(world.tmp, "layout"))
    first = tar_of([("first", b"first layer\n" * 1000)])
    second = tar_of([("second", b"second layer\n" * 1000)])
    layout.tag("bad", layout.image([(first, True), (second, True)], {"Cmd": ["/bin/true"]}))
    copy_in(world, layout, "bad", "other/bad")
    manifest = json.loads(world.skopeo("inspect", "--raw", "--tls-verify=false",
                                       f"docker://{SERVER}/other/bad:bad").stdout)
    blob = registry.blob_file(manifest["layers"][1]["digest"])   # the second layer
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0xff
    with open(blob, "wb") as f:
        f.write(data)
    before = world.image_ids()
    out = world.call("pull", f"{SERVER}/other/bad:bad")
    assert out.endswith(f"Error: Layer {manifest['layers'][1]['digest']} is corrupted: its digest is "
                        f"{digest_of(bytes(data))}\n"), out
    # The first layer was fine, but nothing is registered before every layer checks out.
    assert world.image_ids() == before
    assert f"{SERVER}/other/bad" not in world.repositories()
    assert os.listdir(os.path.join(world.root, "graph", ":tmp:")) == []

    # A layer that matches its blob digest but not the config's diff ID is refused too.
    lying = Layout(os.path.join(world.tmp, "lying"))
    lying.tag("lie", lying.image([(first, True)], {"Cmd": ["/bin/true"]},
                                 diff_ids=[digest_of(second)]))
    copy_in(world, lying, "lie", "other/lie")
    out = world.call("pull", f"{SERVER}/other/lie:lie")
    assert out.endswith(f"its content digest is {digest_of(first)}, the image config says "
                        f"{digest_of(second)}\n"), out
    assert world.image_ids() == before


def test_basic_auth_needs_login(world):
    registry = world.registry(users={"ken": "pa:ss"})
    name = f"{SERVER}/ken/base"
    assert world.call("tag", "base", name) == ""
    out = world.call("push", name)
    assert out.endswith("Error: HTTP code: 401 (unauthorized: authentication required)\n"), out
    out = world.call("pull", name)
    assert out.endswith("Error: HTTP code: 401 (unauthorized: authentication required)\n"), out

    out = world.call("login", SERVER, stdin=b"ken\nwrong\nken@example.com\n")
    assert out == ("Username (): ken\nPassword: \nEmail (): ken@example.com\n"
                   "Error: Login: unauthorized: authentication required\n")
    assert not os.path.exists(os.path.join(world.root, ".dockercfg"))
    out = world.call("login", SERVER, stdin=b"ken\npa:ss\nken@example.com\n")
    assert out.endswith("Login Succeeded\n"), out
    cfg = os.path.join(world.root, ".dockercfg")
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    assert open(cfg).read() == ("auth = Og==\nemail = \n[127.0.0.1:5000]\n"
                                "auth = a2VuOnBhOnNz\nemail = ken@example.com\n")
    # Docker Hub's record is untouched, and the saved record survives a restart.
    world.daemon.restart()
    out = world.call("login", SERVER, stdin=b"\n")
    assert out == "Username (ken): \nLogin Succeeded\n"
    assert "Error" not in world.call("push", name)
    assert world.call("rmi", world.base_id) == ""
    assert world.base_id not in world.image_ids()
    out = world.call("pull", name)
    assert "Error" not in out, out
    assert world.call("run", name, "cat", "/etc/hostname") == "base\n"


def test_login_prompts(world):
    registry = world.registry()
    # Backspace edits, whitespace and controls are dropped, the password is not echoed.
    out = world.call("login", SERVER, stdin=b"kem\x7fn \t\npw\x01d\n\n")
    assert out == "Username (): kem\b \bn\nPassword: \nEmail (): \nLogin Succeeded\n"
    assert load_config(world.root).servers[SERVER] == AuthConfig("ken", "pwd", "")
    assert world.call("login", SERVER, stdin=b"bob\n\n") == \
        "Username (ken): bob\nPassword: \nError: Error : Password Required\n"
    assert world.call("login", "a", "b").startswith("\nUsage: docker login [SERVER]")
    # Docker Hub keeps the 2013 rules: log in first (unreachable from the test's namespace) ...
    out = world.call("push", "base")
    assert out.startswith("Username (): Error: Login: GET https://registry-1.docker.io/v2/: ")
    assert out.endswith("Error: Please login prior to push. ('docker login')\n")
    # ... and no "root" repositories.
    save_config(world.root, AuthConfig("ken", "test", "ken@example.com", load_config(world.root).servers))
    world.daemon.restart()
    assert world.call("push", "base") == ('Error: Impossible to push a "root" repository. Please rename '
                                          "your repository in <user>/<repo> (ex: ken/base)\n")
    assert world.call("login", stdin=b"\n").startswith("Username (ken): \nError: Login: GET https://")


def test_pull_errors(world):
    registry = world.registry()
    assert world.call("pull").startswith("\nUsage: docker pull NAME")
    assert world.call("pull", f"{SERVER}/nobody/here") == (
        f"Pulling repository {SERVER}/nobody/here\nPulling tag {SERVER}/nobody/here:latest\n"
        "Error: HTTP code: 404 (manifest unknown)\n")
    assert world.call("pull", "Bad/Name").endswith("Error: Illegal repository name: Bad/Name\n")
    assert world.call("push", f"{SERVER}/nobody/here") == f"Error: No such id: {SERVER}/nobody/here\n"


def test_slow_registry_blocks_nobody(world):
    """A registry that accepts and never answers: other commands still run."""
    silent = world.daemon.netns.popen("nc", "-l", "-k", "127.0.0.1", "5001",
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    world.helpers.append(silent)
    wait_listening(world.daemon.netns, 5001, silent)
    pulls = []
    for _ in range(8):   # more than asyncio's default thread pool holds on 2 cores
        sock = world.daemon.netns.socket_connect(("127.0.0.1", 4242))
        sock.sendall(b"pull 127.0.0.1:5001/slow/app\n")
        pulls.append(sock)
    for sock in pulls:
        assert sock.recv(100).startswith(b"Pulling repository 127.0.0.1:5001/slow/app\n")
    assert world.call("info").startswith("containers: ")
    assert world.call("login", SERVER, stdin=b"\n") == (   # needs a thread too
        f"Username (): \nError: Login: GET http://{SERVER}/v2/: [Errno 111] Connection refused\n")
    for sock in pulls:
        sock.close()


TOKEN_SERVER = r"""
import base64, http.server, json, subprocess, sys, time, urllib.parse
port, key, cert, user, password, log = sys.argv[1:]

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def token(scopes, actions):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(open(cert, "rb").read()).decode()]}
    access = [{"type": "repository", "name": s.split(":")[1], "actions": actions}
              for s in scopes if s.startswith("repository:")]
    now = int(time.time())
    claims = {"iss": "test-issuer", "sub": user, "aud": "test-registry", "exp": now + 3600,
              "nbf": now - 10, "iat": now, "jti": str(time.time_ns()), "access": access}
    raw = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=raw.encode(),
                               capture_output=True, check=True).stdout
    return raw + "." + b64(signature)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        given = self.headers.get("Authorization", "")
        good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        with open(log, "a") as f:
            f.write(json.dumps({"query": query, "auth": bool(given)}) + "\n")
        if given and given != good:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"token": token(query.get("scope", []),
                                          ["pull", "push"] if given else ["pull"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
"""


def start_token_server(world: World, user: str, password: str) -> tuple[str, str]:
    """A bearer-token server on 127.0.0.1:5002: anonymous callers may pull, `user` may push.
    Returns the registry's `auth:` configuration and the server's request log."""
    d = os.path.join(world.tmp, "token")
    os.makedirs(d)
    key, pem, der = (os.path.join(d, n) for n in ("key.pem", "cert.pem", "cert.der"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", pem, "-days", "2", "-subj", "/CN=test-issuer"], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER", "-out", der], check=True)
    script, log = os.path.join(d, "server.py"), os.path.join(d, "log")
    with open(script, "w") as f:
        f.write(TOKEN_SERVER)
    server = world.daemon.netns.popen(sys.executable, script, "5002", key, der, user, password,
                                      log, stderr=subprocess.DEVNULL)
    world.helpers.append(server)
    wait_listening(world.daemon.netns, 5002, server)
    return (f"auth:\n  token:\n    realm: http://127.0.0.1:5002/token\n    service: test-registry\n"
            f"    issuer: test-issuer\n    rootcertbundle: {pem}\n"), log


def test_bearer_tokens_anonymous_pull_and_login_for_push(world):
    auth, token_log = start_token_server(world, "ken", "pa:ss")
    registry = world.registry(token_auth=auth)
    name = f"{SERVER}/team/base"
    assert world.call("tag", "base", name, "v1") == ""
    out = world.call("push", f"{name}:v1")          # an anonymous token only allows pull
    assert out.endswith("Error: Failed to start the upload: HTTP code 401 (unauthorized: "
                        "authentication required)\n"), out
    assert world.call("login", SERVER, stdin=b"ken\nwrong\n\n").endswith(
        "Error: Login: Authentication failed: HTTP code 401\n")
    assert world.call("login", SERVER, stdin=b"ken\npa:ss\n\n").endswith("Login Succeeded\n")
    out = world.call("push", f"{name}:v1")
    assert "Error" not in out and out.endswith(f"Registering tag {name}:v1\n"), out
    requests = [json.loads(line) for line in open(token_log)]
    assert {"service": ["test-registry"], "scope": ["repository:team/base:pull,push"],
            "account": ["ken"]} in [r["query"] for r in requests if r["auth"]]
    # An anonymous daemon (fresh credentials) pulls with an anonymous token.
    os.unlink(os.path.join(world.root, ".dockercfg"))
    world.daemon.restart()
    assert world.call("rmi", world.base_id) == ""
    out = world.call("pull", f"{name}:v1")
    assert "Error" not in out, out
    assert requests != [json.loads(line) for line in open(token_log)]
    assert [json.loads(line) for line in open(token_log)][-1] == {
        "query": {"service": ["test-registry"], "scope": ["repository:team/base:pull"]}, "auth": False}


def test_interrupted_pull_leaves_nothing(world):
    registry = world.registry()
    layout = Layout(os.path.join(world.tmp, "layout"))
    big = tar_of([("noise", os.urandom(3 << 20))])
    layout.tag("big", layout.image([(tar_of([("small", b"x")]), True), (big, True)], {}))
    copy_in(world, layout, "big", "other/big")
    # 8 Mbit/s on the namespace's loopback: the 3 MiB layer takes about three seconds.
    # (The burst must exceed loopback's 64 KiB packets, or tbf drops them all.)
    world.daemon.netns.exec("tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8mbit",
                            "burst", "256kb", "latency", "1s")
    before = world.image_ids()
    sock = world.daemon.netns.socket_connect(("127.0.0.1", 4242))
    sock.sendall(b"pull 127.0.0.1:5000/other/big:big\n")
    seen = b""
    while seen.count(b" fs layer\n") < 2:     # the big layer is on its way
        seen += sock.recv(1 << 16)
    sock.close()
    staging = os.path.join(world.root, "graph", ":tmp:")
    deadline = time.time() + 60
    while os.listdir(staging) and time.time() < deadline:
        time.sleep(0.1)
    assert os.listdir(staging) == []
    assert world.image_ids() == before
    assert f"{SERVER}/other/big" not in world.repositories()
    assert world.call("info").startswith("containers: ")


IMAGE_CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["env; id; pwd"],
                "Env": ["PATH=/bin", "FOO=bar"], "User": "nobody", "WorkingDir": "/srv/app"}


def test_oci_image_config_is_applied_inspected_and_pushed_back(world):
    """Entrypoint + Cmd, Env, User and WorkingDir of an image another client pushed."""
    registry = world.registry()
    layout = Layout(os.path.join(world.tmp, "layout"))
    layout.tag("v1", layout.image([(busybox_tar(), True)], IMAGE_CONFIG))
    copy_in(world, layout, "v1", "other/configured")
    name = f"{SERVER}/other/configured:v1"
    assert "Error" not in world.call("pull", name)
    # Without arguments: Entrypoint + Cmd, as nobody, in the (created) WorkingDir, with
    # exactly the defaults plus the image's Env (its PATH replacing the default one;
    # SHLVL and PWD are the shell's own).
    assert world.call("run", name) == "SHLVL=1\nHOME=/\nPATH=/bin\nFOO=bar\nPWD=/srv/app\n" \
        "uid=65534(nobody) gid=65534(nogroup)\n/srv/app\n"
    # Arguments replace Cmd and keep the Entrypoint; -e and -u override by name.
    out = world.call("run", "-e", "FOO=baz", "-e", "NEW=1", "-u", "root", name, "echo $FOO $NEW; id -u; pwd")
    assert out == "baz 1\n0\n/srv/app\n"
    cid = world.call("ps", "-a", "-q").split()[0]
    record = json.loads(world.call("inspect", cid))
    assert record["Path"] == "/bin/sh" and record["Args"] == ["-c", "echo $FOO $NEW; id -u; pwd"]
    assert record["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert record["Config"]["Env"] == ["PATH=/bin", "FOO=baz", "NEW=1"]
    assert record["Config"]["User"] == "root" and record["Config"]["WorkingDir"] == "/srv/app"
    image = json.loads(world.call("inspect", name))
    assert {k: image["container_config"][k] for k in IMAGE_CONFIG} == IMAGE_CONFIG
    # A commit keeps the image's config, with the container's own Cmd and Env (as Docker).
    committed = f"{SERVER}/other/committed"
    world.call("commit", cid, committed)
    assert world.call("run", committed) == "baz 1\n0\n/srv/app\n"
    # Pushed back by docker0: the registry holds the same config, so pull-push-pull keeps it.
    pushed = f"{SERVER}/again/configured"
    world.call("tag", name, pushed)
    out = world.call("push", pushed)
    assert "Error" not in out, out
    config = json.loads(world.skopeo("inspect", "--config", "--tls-verify=false",
                                     f"docker://{pushed}").stdout)["config"]
    assert config == IMAGE_CONFIG
    assert world.call("run", pushed, "pwd; echo $FOO") == "/srv/app\nbar\n"


def test_imported_image_environment_is_exact(world):
    """No LC_CTYPE (PEP 538) or other variable leaks from the init: the 2013 defaults only."""
    assert world.call("run", "base", "env") == "HOME=/\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    assert world.call("run", "-e", "A=1", "base", "pwd") == "/\n"
