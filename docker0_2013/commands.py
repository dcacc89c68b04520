"""The commands a client can send: commands.go of 2013 (spec 3).

Each `Cmd<Name>(stdin, stdout, *args)` is one command. It writes its output to
`stdout`, reads `stdin` (the rest of the connection), and reports failure by
raising an exception whose text is the 2013 error; the server turns it into
`Error: <text>`. These methods are a mixin of `Runtime`, so `self` is the
runtime with its graph, tags, network and containers.

Changed since 2013: see each command's docstring; the list is in
docs/then-and-now.md.
"""
from __future__ import annotations

import os
import subprocess

from . import VERSION
from .flag import HELP_REQUESTED, FlagError, FlagSet

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


def subcmd(name: str, signature: str, description: str) -> FlagSet:
    """The flag set of one command, with its usage header (spec 3.1)."""
    return FlagSet(name, header=f"\nUsage: docker {name} {signature}\n\n{description}\n\n")


def parse(stdout, flags: FlagSet, args: tuple[str, ...]) -> list[str] | None:
    """Parse a command's flags; on failure print the message and usage, return None."""
    try:
        return flags.parse(list(args))
    except FlagError as e:
        if str(e) != HELP_REQUESTED:
            stdout.write(f"{e}\n")
        usage(stdout, flags)
        return None


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
        positional = parse(stdout, flags, args)
        if positional is None:
            return
        if positional:
            return usage(stdout, flags)
        stdout.write(f"containers: {len(self.containers)}\nversion: {VERSION}\n"
                     f"images: {self.graph.count()}\n")

    # -- Images: import, images, history, tag, rmi (graph.py, tags.py, archive.py) --------

    # -- Containers: run, start, stop, kill, restart, wait, attach, logs, ps, rm,
    #    inspect, diff, commit, export, port (container.py, lxc.py, network.py) ----------

    # -- Registry: pull, push, login (registry.py, auth.py) ---------------------------
