"""The commands a client can send: commands.go of 2013 (spec 3).

Each `Cmd<Name>(stdin, stdout, *args)` is one command. It writes its output to
`stdout`, reads `stdin` (the rest of the connection), and reports failure by
raising an exception whose text is the 2013 error; the server turns it into
`Error: <text>`. These methods are a mixin of `Runtime` (2013: a `Server`
holding the runtime), so `self` is the runtime, with its graph, tags,
network and containers (runtime.py).

Runs in: the daemon's event loop; blocking work goes to worker threads.

Changed since 2013: see each command's docstring; the list is in
docs/then-and-now.md.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time

from . import VERSION, registry
from .archive import tar_directory
from .auth import AuthConfig, save_config
from .changes import changes
from .container import Config, apply_image_config
from .flag import HELP_REQUESTED, FlagError, FlagSet
from .graph import is_mounted, mount_rootfs, unmount_rootfs
from .tags import ImageNotFound
from .utils import (NoSuchId, client_paced, human_duration, json_pretty, parse_time, remove_or_set_aside, short_id,
                    since, tabwrite)

HELP = """Usage: docker COMMAND [arg...]

A self-sufficient runtime for linux containers.

Commands:
"""
COMMANDS = [
    ("attach", "Attach to a running container"),
    ("commit", "Create a new image from a container's changes"),
    ("diff", "Inspect changes on a container's filesystem"),
    ("export", "Stream the contents of a container as a tar archive"),
    ("history", "Show the history of an image"),
    ("images", "List images"),
    ("import", "Create a new filesystem image from the contents of a tarball"),
    ("info", "Display system-wide information"),
    ("inspect", "Return low-level information on a container"),
    ("kill", "Kill a running container"),
    ("login", "Register or Login to the docker registry server"),
    ("logs", "Fetch the logs of a container"),
    ("port", "Lookup the public-facing port which is NAT-ed to PRIVATE_PORT"),
    ("ps", "List containers"),
    ("pull", "Pull an image or a repository from the docker registry server"),
    ("push", "Push an image or a repository to the docker registry server"),
    ("restart", "Restart a running container"),
    ("rm", "Remove a container"),
    ("rmi", "Remove an image"),
    ("run", "Run a command in a new container"),
    ("start", "Start a stopped container"),
    ("stop", "Stop a running container"),
    ("tag", "Tag an image into a repository"),
    ("version", "Show the docker version information"),
    ("wait", "Block until a container stops, then print its exit code"),
]


def global_help() -> str:
    return HELP + "".join(f"    {name:<10.10}{text}\n" for name, text in COMMANDS)


def handler_name(command: str) -> str:
    """`ps`, `PS` and `pS` all name CmdPs (spec 2.3)."""
    return "Cmd" + command[:1].upper() + command[1:].lower()


def git_commit() -> str:
    """`git rev-parse --short HEAD` of the source tree, `+CHANGES` if dirty, else ""."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+CHANGES" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return ""


GIT_COMMIT = git_commit()


def check_stream(name: str) -> None:
    if name not in ("stdin", "stdout", "stderr"):
        raise ValueError(f"Unsupported stream name: {name}")


def subcmd(name: str, signature: str, description: str) -> FlagSet:
    """The flag set of one command, with its usage header (spec 3.1)."""
    return FlagSet(name, header=f"\nUsage: docker {name} {signature}\n\n{description}\n\n")


def parse(stdout, flags: FlagSet, args: tuple[str, ...], accept=None) -> list[str] | None:
    """Parse a command's flags and return the positional arguments.

    On a parse failure, or when `accept(count)` rejects the number of
    positional arguments, print the usage (spec 3.1) and return None.
    """
    try:
        positional = flags.parse(list(args))
    except FlagError as e:
        if str(e) != HELP_REQUESTED:
            stdout.write(f"{e}\n")
        usage(stdout, flags)
        return None
    if accept is not None and not accept(len(positional)):
        usage(stdout, flags)
        return None
    return positional


def usage(stdout, flags: FlagSet) -> None:
    stdout.write(flags.header + flags.defaults())


class Commands:
    """The Cmd* methods; mixed into Runtime."""

    async def CmdHelp(self, stdin, stdout, *args: str) -> None:
        if not args:
            stdout.write(global_help())
            return
        method = getattr(self, handler_name(args[0]), None)
        if method is None or args[0] == "help":
            if args[0] == "help":
                return
            raise LookupError(f"No such command: {args[0]}")
        try:
            await method(stdin, stdout, "--help")
        except Exception:
            pass

    async def CmdVersion(self, stdin, stdout, *args: str) -> None:
        stdout.write(f"Version:{VERSION}\nGit Commit:{GIT_COMMIT}\n")

    async def CmdInfo(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("info", "", "Display system-wide information.")
        if parse(stdout, flags, args, accept=lambda n: n == 0) is None:
            return
        stdout.write(f"containers: {len(self.containers)}\nversion: {VERSION}\n"
                     f"images: {self.graph.count()}\n")

    # -- Images: import, images, history, tag, rmi (graph.py, tags.py, archive.py) --------

    async def CmdImport(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("import", "[OPTIONS] URL|- [REPOSITORY [TAG]]",
                       "Create a new filesystem image from the contents of a tarball")
        names = parse(stdout, flags, args)
        if names is None:
            return
        if not names:
            raise ValueError("Not enough arguments")
        source, repository, tag = (names + ["", ""])[:3]
        # On CLIENT_PACED: a client that stops sending holds a thread of its own
        # pool until the stdin idle timeout, never one that `ps` or `run` needs.
        # `-`: that thread reads the connection itself (server.SocketStdin).
        reader = stdin.direct() if source == "-" else stdin.blocking()
        try:
            image = await client_paced(self.import_image, source, repository, tag,
                                       reader, stdout.blocking())
        finally:
            reader.release()
        stdout.write(short_id(image.id) + "\n")

    async def CmdImages(self, stdin, stdout, *args: str) -> None:
        """Spec 3.7, with the "heads" fixed: an untagged image shows unless it is a parent.

        2013 listed in Go map order; here repositories and tags are sorted and
        untagged images come newest first. `-viz` is Docker 0.4's.
        """
        flags = subcmd("images", "[OPTIONS] [NAME]", "List images")
        flags.bool("a", "show all images")
        flags.bool("q", "only show numeric IDs")
        flags.bool("viz", "output in graphviz format")
        names = parse(stdout, flags, args, accept=lambda n: n <= 1)
        if names is None:
            return
        if flags["viz"]:
            stdout.write(await asyncio.to_thread(self.image_graph))
            return
        only = names[0] if names else ""
        tagged, untagged = await asyncio.to_thread(self.image_listing, flags["a"], only)
        if flags["q"]:                  # one line per tag, as in 2013
            stdout.write("".join(short_id(image.id) + "\n" for _, _, image in tagged + untagged))
            return
        lines = ["REPOSITORY\tTAG\tID\tCREATED\tPARENT"]
        for repository, tag, image in tagged + untagged:
            parent = self.tags.image_name(image.parent) if image.parent else ""
            lines.append(f"{repository}\t{tag}\t{short_id(image.id)}\t{since(image.created)}\t{parent}")
        stdout.write(tabwrite(lines, 20))

    def image_graph(self) -> str:
        """Every image as Graphviz's dot language, as Docker 0.4 drew it: an edge from
        each image's parent (from an invisible `base` for a root), and each tagged image
        a box labelled with its ID and tags. `docker0 images -viz | dot -Tpng -o images.png`"""
        lines = ["digraph docker {"]
        for image in sorted(self.graph.all(), key=lambda i: (parse_time(i.created), i.id)):
            if image.parent:
                lines.append(f' "{short_id(image.parent)}" -> "{short_id(image.id)}"')
            else:
                lines.append(f' base -> "{short_id(image.id)}" [style=invis]')
        names: dict[str, list[str]] = {}
        for repository, tag, image in self.tags.tagged_images(""):
            names.setdefault(short_id(image.id), []).append(dot_escape(f"{repository}:{tag}"))
        for image_id, tags in sorted(names.items()):
            label = "\\n".join([image_id, *tags])
            lines.append(f' "{image_id}" [label="{label}",shape=box,fillcolor="paleturquoise",'
                         f'style="filled,rounded"];')
        lines += [" base [style=invisible]", "}"]
        return "\n".join(lines) + "\n"

    def image_listing(self, everything: bool, only: str) -> tuple[list, list]:
        """(repo, tag, image) rows: the tagged ones, then `<none>` ones (not with a NAME)."""
        tagged = self.tags.tagged_images(only)
        if only:
            return tagged, []
        candidates = {image.id: image for image in self.graph.all()} if everything else self.graph.heads()
        for _, _, image in tagged:
            candidates.pop(image.id, None)
        newest_first = sorted(candidates.values(), key=lambda i: parse_time(i.created), reverse=True)
        return tagged, [("<none>", "<none>", image) for image in newest_first]

    async def CmdHistory(self, stdin, stdout, *args: str) -> None:
        """Spec 3.6: the image, then its ancestors; IDs stay short, as in 2013."""
        flags = subcmd("history", "[OPTIONS] IMAGE", "Show the history of an image")
        names = parse(stdout, flags, args, accept=lambda n: n == 1)
        if names is None:
            return
        image = self.tags.lookup_image(names[0])
        lines = ["ID\tCREATED\tCREATED BY"]
        try:
            for layer in self.graph.parents(image):
                command = " ".join(layer.container_config.get("Cmd") or [])
                lines.append(f"{short_id(layer.id)}\t{since(layer.created)}\t{command}")
        finally:                        # a missing ancestor: the rows so far, then the error
            stdout.write(tabwrite(lines, 20))

    async def CmdTag(self, stdin, stdout, *args: str) -> None:
        """Spec 3.23; `-f` changes nothing: tags are always moved (spec 6.8)."""
        flags = subcmd("tag", "[OPTIONS] IMAGE REPOSITORY [TAG]", "Tag an image into a repository")
        flags.bool("f", "Force")
        names = parse(stdout, flags, args, accept=lambda n: n >= 2)
        if names is None:
            return
        await asyncio.to_thread(self.tags.set, names[1], names[2] if len(names) > 2 else "",
                                names[0], flags["f"])

    async def CmdRmi(self, stdin, stdout, *args: str) -> None:
        """Remove images named by ID prefix (spec 6.6), in order; stop at the first error.

        Changed since 2013: `repo[:tag]` names work too (2013: IDs only); an
        image a container or another image uses is refused, and the tags of
        a removed image are removed with it.
        """
        flags = subcmd("rmimage", "[OPTIONS] IMAGE", "Remove an image")
        names = parse(stdout, flags, args, accept=lambda n: n >= 1)
        if names is None:
            return
        for name in names:
            try:
                image_id = self.tags.lookup_image(name).id
            except LookupError:
                raise NoSuchId(f"No such id: {name}") from None
            users = [c for c in self.containers.values() if c.Image == image_id]
            if users:
                raise RuntimeError(f"Unable to remove image {short_id(image_id)}: "
                                   f"container {short_id(users[0].Id)} uses it")
            # No await from the check to the rename: a `run` cannot pick the image in between.
            image_id, garbage = self.graph.unpublish(image_id)
            self.tags.delete_image(image_id)
            await asyncio.to_thread(remove_or_set_aside, garbage, self.graph.quarantine)

    # -- Containers: run, start, stop, kill, restart, wait, attach, logs, ps, rm,
    #    inspect, diff, commit, export, port (container.py, lxc.py, network.py) ----------

    def container(self, name: str):
        """The container a user named, or the 2013 error."""
        container = self.get(name)
        if container is None:
            raise LookupError(f"No such container: {name}")
        return container

    async def CmdRun(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("run", "[OPTIONS] IMAGE COMMAND [ARG...]", "Run a command in a new container")
        flags.list("a", "Attach to stdin, stdout or stderr.", shown="map[]", check=check_stream)
        flags.bool("d", "Detached mode: leave the container running in the background")
        flags.list("e", "Set environment variables")
        flags.string("h", "Container host name")
        flags.bool("i", "Keep stdin open even if not attached")
        flags.int("m", "Memory limit (in bytes)")
        flags.list("p", "Expose a container's port to the host (use 'docker port' to see the actual mapping)")
        flags.bool("t", "Allocate a pseudo-tty")
        flags.string("u", "Username or UID")
        try:
            positional = flags.parse(list(args))
        except FlagError:
            if args and args[0] == "--help":   # only then is the usage shown (spec 3.20)
                usage(stdout, flags)
            raise
        streams = set(flags["a"])
        if flags["d"] and streams:
            raise ValueError("Conflicting options: -a and -d")
        if not flags["d"] and not streams:
            streams = {"stdout", "stderr"} | ({"stdin"} if flags["i"] else set())
        if not positional or not positional[0]:
            raise ValueError("Image not specified")
        config = Config(Hostname=flags["h"], User=flags["u"], Memory=flags["m"],
                        AttachStdin="stdin" in streams, AttachStdout="stdout" in streams,
                        AttachStderr="stderr" in streams, PortSpecs=flags["p"] or None,
                        Tty=flags["t"], OpenStdin=flags["i"],
                        StdinOnce=flags["i"] and "stdin" in streams, Env=flags["e"] or None,
                        Cmd=positional[1:], Image=positional[0])
        container = await self.create_or_pull(stdin, stdout, config)
        offsets = container.log_offsets()
        attached = asyncio.create_task(container.attach(
            stdin, stdout, config.AttachStdin, config.AttachStdout, config.AttachStderr, offsets))
        try:
            await container.start()
        except BaseException:
            attached.cancel()
            raise
        if not config.AttachStdout and not config.AttachStderr:
            stdout.write(container.short_id + "\n")
        try:
            await attached
        except (ConnectionError, BrokenPipeError):
            pass

    async def create_or_pull(self, stdin, stdout, config: Config):
        """Create the container; pull its image first if it is not here (spec 3.20 step 2)."""
        for attempt in (1, 2):
            try:
                apply_image_config(config, self.tags.lookup_image(config.Image).container_config)
                if not config.Entrypoint and not config.Cmd:
                    raise ValueError("Command not specified")
                return self.create(config)
            except ImageNotFound:
                if attempt == 2:
                    raise
                stdout.write(f"Image {config.Image} not found, trying to pull it from registry.\n")
                await self.CmdPull(stdin, stdout, config.Image)

    async def CmdStart(self, stdin, stdout, *args: str) -> None:
        await self.each_container(stdout, "start", "Start a stopped container", args,
                                  lambda c: c.start())

    async def CmdStop(self, stdin, stdout, *args: str) -> None:
        await self.each_container(stdout, "stop", "Stop a running container", args,
                                  lambda c: c.stop())

    async def CmdRestart(self, stdin, stdout, *args: str) -> None:
        async def restart(container) -> None:
            await container.stop()
            await container.start()
        await self.each_container(stdout, "restart", "Restart a running container", args, restart)

    async def each_container(self, stdout, name: str, description: str, args, action) -> None:
        """start/stop/restart: act on each container in turn, print its short ID."""
        flags = subcmd(name, "[OPTIONS] NAME", description)
        names = parse(stdout, flags, args, accept=lambda n: n >= 1)
        if names is None:
            return
        for container_name in names:
            container = self.container(container_name)
            await action(container)
            stdout.write(container.short_id + "\n")

    async def CmdKill(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("kill", "[OPTIONS] CONTAINER [CONTAINER...]", "Kill a running container")
        names = parse(stdout, flags, args)
        for name in names or []:
            container = self.container(name)
            try:
                await container.kill()
            except OSError as e:
                stdout.write(f"Error killing container {name}: {e}\n")

    async def CmdWait(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("wait", "[OPTIONS] NAME", "Block until a container stops, then print its exit code.")
        names = parse(stdout, flags, args, accept=lambda n: n >= 1)
        if names is None:
            return
        for name in names:
            stdout.write(f"{await self.container(name).wait()}\n")

    async def CmdAttach(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("attach", "CONTAINER", "Attach to a running container")
        names = parse(stdout, flags, args, accept=lambda n: n == 1)
        if names is None:
            return
        await self.container(names[0]).attach(stdin, stdout, True, True, True)

    async def CmdLogs(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("logs", "[OPTIONS] CONTAINER", "Fetch the logs of a container")
        names = parse(stdout, flags, args, accept=lambda n: n == 1)
        if names is None:
            return
        container = self.container(names[0])
        for stream in ("stdout", "stderr"):
            path = container.log_path(stream)
            if not os.path.exists(path):
                raise FileNotFoundError(f"open {path}: no such file or directory")
            with open(path, "rb") as f:
                while data := f.read(1 << 18):
                    stdout.write(data)
                    await stdout.drain()

    async def CmdPs(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("ps", "[OPTIONS]", "List containers")
        flags.bool("a", "Show all containers. Only running containers are shown by default.")
        flags.bool("notrunc", "Don't truncate output")
        flags.bool("q", "Only display numeric IDs")
        if parse(stdout, flags, args) is None:
            return
        shown = [c for c in self.list() if flags["a"] or c.State.Running]
        if flags["q"]:
            stdout.write("".join(c.short_id + "\n" for c in shown))
            return
        names = self.tags.names_by_id()
        lines = ["ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tCOMMENT"]
        for c in shown:
            command = " ".join([c.Path, *c.Args]) if c.Args else c.Path + " "
            if not flags["notrunc"]:
                command = command.encode()[:20].decode(errors="ignore")
            image = min(names.get(c.Image, []), default=short_id(c.Image))
            status = (f"Up {human_duration((time.time() - parse_time(c.State.StartedAt).timestamp()))}"
                      if c.State.Running else f"Exit {c.State.ExitCode}")
            lines.append(f"{c.short_id}\t{image}\t{command}\t{since(c.Created)}\t{status}\t")
        stdout.write(tabwrite(lines, 12))

    async def CmdRm(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("rm", "[OPTIONS] CONTAINER", "Remove a container")
        for name in parse(stdout, flags, args) or []:
            container = self.container(name)
            try:
                await self.destroy(container)
            except (OSError, RuntimeError, LookupError) as e:
                stdout.write(f"Error destroying container {name}: {e}\n")

    async def CmdInspect(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("inspect", "[OPTIONS] CONTAINER", "Return low-level information on a container")
        names = parse(stdout, flags, args, accept=lambda n: n >= 1)
        if names is None:
            return
        container = self.get(names[0])
        if container is not None:
            stdout.write(json_pretty(container.to_dict()) + "\n")
            return
        try:
            image = self.tags.lookup_image(names[0])
        except (LookupError, OSError, ValueError):
            return                      # unknown: nothing, and no error (spec 3.10)
        stdout.write(json_pretty(image.to_dict()) + "\n")

    async def CmdPort(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("port", "[OPTIONS] CONTAINER PRIVATE_PORT",
                       "Lookup the public-facing port which is NAT-ed to PRIVATE_PORT")
        names = parse(stdout, flags, args, accept=lambda n: n == 2)
        if names is None:
            return
        mapping = self.container(names[0]).NetworkSettings.PortMapping or {}
        if names[1] not in mapping:
            raise LookupError(f"No private port '{names[1]}' allocated on {names[0]}")
        stdout.write(f"{mapping[names[1]]}\n")

    async def CmdDiff(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("diff", "CONTAINER [OPTIONS]", "Inspect changes on a container's filesystem")
        names = parse(stdout, flags, args)
        if names is None:
            return
        if not names:
            raise ValueError("Not enough arguments")
        container = self.get(names[0])
        if container is None:
            raise LookupError("No such container")
        if not os.path.isdir(container.rw):
            raise FileNotFoundError(f"lstat {container.rw}: no such file or directory")
        found = await asyncio.to_thread(changes, self.graph, container.Image, container.rw)
        stdout.write("".join(f"{kind} {path}\n" for kind, path in found))

    async def CmdCommit(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("commit", "[OPTIONS] CONTAINER [REPOSITORY [TAG]]",
                       "Create a new image from a container's changes")
        flags.string("m", "Commit message")
        names = parse(stdout, flags, args)
        if names is None:
            return
        if not names or not names[0]:
            return usage(stdout, flags)
        container = self.container(names[0])
        repository, tag = (names[1:] + ["", ""])[:2]
        image = await asyncio.to_thread(self.commit, container, repository, tag, flags["m"])
        stdout.write(short_id(image.id) + "\n")

    async def CmdExport(self, stdin, stdout, *args: str) -> None:
        flags = subcmd("export", "CONTAINER", "Export the contents of a filesystem as a tar archive")
        names = parse(stdout, flags, args)
        if names is None:
            return
        container = self.container(names[0] if names else "")
        async with container.lock:
            if container.removed:            # an rm that came first
                raise LookupError(f"No such container: {names[0]}")
            mounted_here = not is_mounted(container.rootfs)
            if mounted_here:
                await asyncio.to_thread(mount_rootfs, self.graph, container.Image, container.rw,
                                        container.path("rw-work"), container.rootfs)
            try:
                await client_paced(tar_directory, container.rootfs, stdout.blocking())
            finally:
                if mounted_here:     # 2013 left it mounted (spec 10.4 item 27)
                    await asyncio.to_thread(unmount_rootfs, container.rootfs)


    # -- Registry: pull, push, login (registry.py, auth.py) ---------------------------

    async def CmdPull(self, stdin, stdout, *args: str) -> None:
        """Pull NAME[:TAG] from Docker Hub or `host[:port]/NAME` (registry.py, spec 3.16)."""
        name = one_name(stdout, "pull", "Pull an image or a repository from the registry", args)
        if name:
            await client_paced(registry.pull, self.graph, self.tags, self.auth,
                                         name, stdout.write_from_thread)

    async def CmdPush(self, stdin, stdout, *args: str) -> None:
        """Push NAME[:TAG] to its registry (registry.py, spec 3.17)."""
        name = one_name(stdout, "push", "Push an image or a repository to the registry", args)
        if not name:
            return
        if not registry.parse_reference(name).server:   # Docker Hub keeps the 2013 rules
            if not self.auth.username:
                await self.login_dialogue(stdin, stdout, "")
            if not self.auth.username:
                raise PermissionError("Please login prior to push. ('docker login')")
            if "/" not in name:
                raise ValueError('Impossible to push a "root" repository. Please rename your repository '
                                 f"in <user>/<repo> (ex: {self.auth.username}/{name})")
        await client_paced(registry.push, self.graph, self.tags, self.auth,
                                     name, stdout.write_from_thread)

    async def CmdLogin(self, stdin, stdout, *args: str) -> None:
        """Log in to Docker Hub, or to SERVER (spec 3.12; 2013 took no argument)."""
        flags = subcmd("login", "[SERVER]", "Register or Login to the docker registry server")
        positional = parse(stdout, flags, args, accept=lambda n: n <= 1)
        if positional is None:
            return
        await self.login_dialogue(stdin, stdout, registry.server_key(positional[0]) if positional else "")

    async def login_dialogue(self, stdin, stdout, server: str) -> None:
        """The 2013 prompts; the record is kept only if the registry accepts it."""
        current = self.auth.for_server(server)
        stdout.write(f"Username ({current.username}): ")
        username = await read_input(stdin, stdout, echo=True) or current.username
        password, email = current.password, current.email
        if username != current.username:
            stdout.write("Password: ")
            password = await read_input(stdin, stdout, echo=False)
            if not password:
                raise ValueError("Error : Password Required")
            stdout.write(f"Email ({current.email}): ")
            email = await read_input(stdin, stdout, echo=True) or current.email
        record = AuthConfig(username, password, email)
        try:
            status = await client_paced(registry.check_login, server, record)
        except registry.RegistryError as e:
            stdout.write(f"Error: {e}\n")   # 2013 printed it and succeeded (spec 3.12)
            return
        if server:
            self.auth.servers[server] = record
        else:
            self.auth.username, self.auth.password, self.auth.email = username, password, email
        stdout.write(status)
        save_config(self.root, self.auth)


def one_name(stdout, command: str, description: str, args: tuple[str, ...]) -> str:
    """The NAME argument of pull and push; "" after printing the usage."""
    flags = subcmd(command, "NAME", description)
    positional = parse(stdout, flags, args)
    if positional is not None and (len(positional) != 1 or not positional[0]):
        usage(stdout, flags)
    return positional[0] if positional and len(positional) == 1 else ""


async def read_input(stdin, stdout, echo: bool) -> str:
    """One line typed at a login prompt, read a byte at a time (spec 3.12)."""
    line = bytearray()
    while len(line) < 64:
        byte = await stdin.read(1)
        if not byte or byte in b"\r\n":
            if byte:
                stdout.write("\n")
            break
        if byte in b"\x7f\x08":
            if line:
                del line[-1]
                if echo:
                    stdout.write("\b \b")
        elif byte[0] > 0x20:   # whitespace and controls are dropped; UTF-8 bytes are kept
            line += byte
            if echo:
                stdout.write(byte)
    return line.decode("utf-8", errors="replace")


def dot_escape(text: str) -> str:
    """Text inside a dot string: a tag may hold `"` or a backslash."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
