"""Who may use the daemon (issue 21): root and the members of one group (-G), nobody else.

The daemon serves TCP on 127.0.0.1:4242, which every local user can reach;
it asks the kernel (sock_diag) which user owns the connecting socket. The
tests use the host's own users and groups and change neither: the daemon
is started with `-G nogroup`, so `nobody` (primary group nogroup) is in
the group and `daemon` (uid 1, group daemon) is not. Each client runs in
the daemon's namespace with its uid and gids changed (DROP_TO_USER), in a
copy of the package any user can read (a checkout below /root is not).
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from docker0_2013.commands import COMMANDS
from docker0_2013.server import may_connect
from netns import PYTHON, REPO, Daemon

REFUSED = ("Error: Permission denied: you (uid 1) are neither root nor a member of the group nogroup, "
           "which may use this daemon\n")


CLIENT_CWD = REPO


@pytest.fixture(scope="module", autouse=True)
def readable_package():
    """CLIENT_CWD: a copy of the package that every user can read, for `python -m docker0_2013`."""
    global CLIENT_CWD
    top = tempfile.mkdtemp(prefix="docker0-test-package-")
    try:
        os.chmod(top, 0o755)
        shutil.copytree(os.path.join(REPO, "docker0_2013"), os.path.join(top, "docker0_2013"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        CLIENT_CWD = top
        yield
    finally:
        CLIENT_CWD = REPO
        shutil.rmtree(top)


def as_user(d: Daemon, user: str, *cmd: str, stdin: bytes = b"") -> str:
    """`cmd` in the daemon's namespace as `user`, with the user's primary group only: its
    output (what went wrong, where there is none)."""
    entry = pwd.getpwnam(user)
    done = subprocess.run(["ip", "netns", "exec", d.netns.name, PYTHON, "-c", DROP_TO_USER,
                           str(entry.pw_uid), str(entry.pw_gid), *cmd], input=stdin,
                          capture_output=True, timeout=60, cwd=CLIENT_CWD)
    return done.stdout.decode() or done.stderr.decode()


# What setpriv --reuid --regid --clear-groups does (Debian 13 ships setpriv apart from util-linux).
DROP_TO_USER = ("import os, sys; os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1])); "
                "os.execvp(sys.argv[3], sys.argv[3:])")


def client(d: Daemon, user: str, *args: str) -> str:
    return as_user(d, user, PYTHON, "-m", "docker0_2013", *args)


@pytest.fixture
def grouped(base_tar):
    """A daemon whose group is nogroup, with the base image."""
    daemon = Daemon(extra=("-G", "nogroup"))
    try:
        assert len(daemon.call("import", "-", "base", stdin=base_tar).strip()) == 12
        yield daemon
    finally:
        daemon.destroy()


def test_only_root_and_the_group_are_served(grouped):
    d = grouped
    cid = d.call("run", "-d", "base", "sh", "-c", "echo secret; sleep 60").strip()
    for name, _ in COMMANDS + [("help", "")]:
        assert client(d, "daemon", name, cid) == REFUSED, name
    assert as_user(d, "daemon", "nc", "-N", "127.0.0.1", "4242", stdin=b"logs " + cid.encode() + b"\n") == REFUSED
    assert as_user(d, "daemon", "nc", "-N", "127.0.0.1", "4242", stdin=b'["kill","' + cid.encode() + b'"]\n') \
        == REFUSED
    assert d.call("ps", "-q") == cid + "\n"                  # the refused kill did nothing
    assert "Root and the members of group nogroup may use the daemon" in d.logs()
    # nobody's primary group is nogroup: served, by the client and by nc
    assert client(d, "nobody", "run", "base", "echo", "hi") == "hi\n"
    assert client(d, "nobody", "logs", cid) == "secret\n"
    assert as_user(d, "nobody", "nc", "-N", "127.0.0.1", "4242", stdin=b"kill " + cid.encode() + b"\n") == ""
    assert d.call("ps", "-q") == ""


def test_without_the_group_only_root_is_served(base_tar):
    d = Daemon(extra=("-G", "d0-no-such-group"))
    try:
        assert "There is no group d0-no-such-group (-G): only root may use the daemon" in d.logs()
        assert client(d, "nobody", "version").startswith("Error: Permission denied: you (uid 65534) are neither root")
        assert client(d, "root", "version").startswith("Version:")
    finally:
        d.destroy()


def test_a_container_cannot_reach_a_daemon_on_the_bridge(base_tar):
    """Containers run as root inside: one that reaches the daemon's port (here it listens
    on every address) is not a user of this host, and is refused."""
    d = Daemon(extra=("-H", "0.0.0.0:4242"))
    try:
        assert len(d.call("import", "-", "base", stdin=base_tar).strip()) == 12
        out = d.call("run", "base", "sh", "-c", "echo version | nc 10.0.3.1 4242")
        assert out == ("Error: Permission denied: cannot tell which user of this host is connecting; "
                       "this daemon serves only local users\n"), out
    finally:
        d.destroy()


def test_may_connect_reads_the_hosts_users_and_groups():
    assert may_connect(0, "d0-no-such-group")
    assert may_connect(pwd.getpwnam("nobody").pw_uid, "nogroup")
    assert not may_connect(1, "nogroup") and not may_connect(1, "d0-no-such-group")
    assert may_connect(1, grp.getgrgid(pwd.getpwuid(1).pw_gid).gr_name)
    assert not may_connect(4_000_000, "nogroup")            # a uid with no user
    members = [(g.gr_name, m) for g in grp.getgrall() for m in g.gr_mem if m != "root"]
    for group, member in members[:3]:                        # listed in the group, not its primary one
        assert may_connect(pwd.getpwnam(member).pw_uid, group)
