"""The generated LXC 5 configuration and init command line (pure logic)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from docker0_2013 import lxc
from docker0_2013 import sysinit
from docker0_2013.sysinit import find_program, parse_args
from netns import REPO


class Iface:
    ip, prefixlen, gateway = "10.0.3.7", 24, "10.0.3.1"


def config(**kw) -> str:
    args = dict(hostname="foobar", rootfs="/r/rootfs", bridge="lxcbr0", iface=Iface(),
                env=lxc.environment(["A=b c"], False), memory=0, memory_swap=0)
    args.update(kw)
    return lxc.lxc_config(**args)


def test_config_uses_lxc5_keys():
    text = config()
    assert "lxc.uts.name = foobar\n" in text
    assert "lxc.net.0.ipv4.address = 10.0.3.7/24 10.0.3.255\n" in text
    assert "lxc.rootfs.path = /r/rootfs\n" in text
    assert "lxc.environment = A=b c\n" in text
    assert "lxc.environment = HOME=/\n" in text
    assert not any(old in text for old in ("lxc.utsname", "lxc.network.", "lxc.rootfs =", "lxc.pts"))
    assert "memory" not in text


def test_memory_limit_lines():
    text = config(memory=33554432)
    if lxc.cgroup_v2_only():        # a hard limit only, as 2013's -m: memory.low would protect it all
        assert "lxc.cgroup2.memory.max = 33554432\n" in text and "memory.low" not in text
    else:
        assert "lxc.cgroup.memory.limit_in_bytes = 33554432\n" in text
        if lxc.swap_accounting():
            assert "lxc.cgroup.memory.memsw.limit_in_bytes = 67108864\n" in text


def test_values_cannot_inject_config_lines():
    with pytest.raises(ValueError, match="newline"):
        config(hostname="x\nlxc.mount.entry = / host none bind 0 0")
    with pytest.raises(ValueError, match="newline"):
        config(env=["A=1\nlxc.cap.drop ="])


def test_environment_order():
    assert lxc.environment(None, True)[0] == "TERM=xterm"
    assert lxc.environment(["X=1"], False)[-1] == "X=1"


def test_init_command_line():
    command = lxc.init_command("10.0.3.1", "daemon", "echo", ["hi"])
    assert command[0].startswith("/dev/.docker0/usr/") and command[0].endswith("ld-linux-x86-64.so.2")
    assert command[-7:] == ["-g", "10.0.3.1", "-u", "daemon", "--", "echo", "hi"]
    assert "-u" not in lxc.init_command("10.0.3.1", "", "true", [])


def test_sysinit_runs_compiled_when_current(tmp_path):
    """The init runs sysinit's .pyc (no compile at every start), never a stale one."""
    command = lxc.init_command("10.0.3.1", "", "true", [])
    script = command[command.index("-B") + 1]
    if lxc.sysinit_file() != lxc.SYSINIT:
        assert script.startswith("/dev/.docker0/docker0_2013/__pycache__/sysinit.") and script.endswith(".pyc")
        assert lxc.compiled_from(lxc.SYSINIT, lxc.sysinit_file())
    source, compiled = tmp_path / "s.py", tmp_path / "s.pyc"
    source.write_text("x = 1\n")
    import py_compile
    py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    assert lxc.compiled_from(str(source), str(compiled))
    source.write_text("x = 22\n")                      # another size: stale
    assert not lxc.compiled_from(str(source), str(compiled))
    assert not lxc.compiled_from(str(source), str(tmp_path / "missing.pyc"))


def test_sysinit_argument_parsing():
    assert parse_args(["-g", "1.2.3.4", "-u", "root", "--", "ls", "-u"]) == (
        {"-g": "1.2.3.4", "-u": "root", "-w": ""}, ["ls", "-u"])
    assert parse_args(["-g", "1.2.3.4", "-w", "/srv", "--", "pwd"]) == (
        {"-g": "1.2.3.4", "-u": "", "-w": "/srv"}, ["pwd"])
    assert find_program("sh", "/nonexistent:/bin") == "/bin/sh"
    assert find_program("no-such-program", "/bin") is None


def test_resolv_conf_is_mounted_where_prepare_rootfs_says_and_never_created_by_lxc():
    entries = [line for line in config().splitlines() if line.startswith("lxc.mount.entry")]
    assert not any("resolv.conf" in line for line in entries)   # "": nothing to mount on
    text = config(resolv_conf=lxc.fstab_escape("run/a dir\nx/resolv.conf"))
    assert "lxc.mount.entry = /r/resolv.conf run/a\\040dir\\012x/resolv.conf none bind,ro,nosuid,nodev,noexec 0 0\n" \
        in text
    assert not any("resolv.conf" in line and "create=" in line for line in text.splitlines())


# Numbers from include/uapi/linux/capability.h, which lxc.cap.keep's names stand for.
CAPABILITY_NUMBERS = {"chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4,
                      "kill": 5, "setgid": 6, "setuid": 7, "setpcap": 8, "net_bind_service": 10,
                      "net_raw": 13, "net_admin": 12, "sys_chroot": 18, "sys_admin": 21, "mknod": 27,
                      "audit_write": 29, "setfcap": 31}


def test_sysinit_keeps_the_capabilities_lxc_keeps():
    """lxc.py names the default set, sysinit.py (which imports nothing of the package)
    numbers it: the two lists must be the same set, and INIT_DIR the same place."""
    assert sorted(CAPABILITY_NUMBERS[name] for name in lxc.DEFAULT_CAPS.split()) == sorted(sysinit.DEFAULT_CAPS)
    assert not {CAPABILITY_NUMBERS[name] for name in lxc.INIT_CAPS.split()} & set(sysinit.DEFAULT_CAPS)
    assert sysinit.INIT_DIR == lxc.INIT_DIR


def test_lxc_start_is_named_by_its_path():
    command = lxc.execute_command("abc", "/r/containers", "/r/containers/abc/config.lxc", ["init"])
    assert command[0].startswith("/") and command[0].endswith("/lxc-start") and command[-2:] == ["--", "init"]


def test_resolv_conf_source(tmp_path):
    """systemd-resolved's stub alone (Ubuntu's default) is unreachable from a container:
    its upstream servers are taken instead, as Docker does; any other file as it is."""
    etc, resolved = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    choose = lambda: lxc.resolv_conf_source(etc=str(etc), resolved=str(resolved))  # noqa: E731
    etc.write_text("# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
    assert choose() == str(etc)                   # resolved's own file is missing: as it is
    resolved.write_text("nameserver 192.0.2.1\n")
    assert choose() == str(resolved)
    for other in ("nameserver 192.0.2.9\n", "nameserver 127.0.0.53\nnameserver 192.0.2.9\n",
                  "nameserver 127.0.0.1\n", "", "# nameserver 127.0.0.53\n"):
        etc.write_text(other)
        assert choose() == str(etc), other
    etc.unlink()
    assert choose() == str(etc)                   # none at all: copy_resolv_conf writes an empty one


def test_apparmor_profile_file():
    """The profile lxc.py names is the one the package ships, named so that Debian's
    lxc-start profile lets LXC change to it, denying what Docker's denies and every
    masked path; where apparmor_parser exists, it parses (no kernel needed)."""
    with open(lxc.APPARMOR_FILE) as f:
        text = f.read()
    assert re.search(r"^profile (\S+) ", text, re.M)[1] == lxc.APPARMOR_PROFILE
    assert lxc.APPARMOR_PROFILE.startswith("lxc-")      # change_profile -> lxc-*
    for rule in ("deny mount,", "umount,", "deny /sys/** wklx,", "deny /proc/sysrq-trigger rwklx,",
                 f"signal (send,receive) peer={lxc.APPARMOR_PROFILE},", "signal (receive) peer=unconfined,",
                 f"ptrace (trace,read,tracedby,readby) peer={lxc.APPARMOR_PROFILE},"):
        assert f"\n  {rule}\n" in text, rule
    for path in lxc.MASKED_FILES:
        assert f"\n  deny /{path} rwklx,\n" in text, path
    for path in lxc.MASKED_DIRS:
        assert f"\n  deny /{path}/** rwklx,\n" in text, path
    assert "apparmor-profile" in open(os.path.join(REPO, "setup.cfg")).read()   # package data
    parser = shutil.which("apparmor_parser")
    if lxc.apparmor_enabled():
        assert parser, "the daemon needs apparmor_parser on an AppArmor host"
    if parser:
        subprocess.run([parser, "--skip-kernel-load", "--skip-cache", lxc.APPARMOR_FILE], check=True,
                       capture_output=True)
