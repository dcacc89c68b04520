"""Pure logic: Go's flag parsing, tabwriter, HumanDuration, TruncIndex, times, auth."""
from __future__ import annotations

import datetime as dt
import errno
import os
import stat

import pytest

from docker0_2013.auth import AuthConfig, decode_auth, encode_auth, load_config, save_config
from docker0_2013.cli import request_line
from docker0_2013.flag import FlagError, FlagSet, parse_go_int
from docker0_2013.server import parse_command_line
from docker0_2013.utils import (TruncIndex, create_in_root, format_time, human_duration, json_compact,
                                json_pretty, parse_time, resolve_in_root, tabwrite)


def run_flags() -> FlagSet:
    f = FlagSet("run")
    f.bool("d", "Detached mode")
    f.string("h", "Container host name")
    f.int("m", "Memory limit (in bytes)")
    f.list("e", "Set environment variables")
    return f


def test_flag_parsing_like_go():
    f = run_flags()
    assert f.parse(["-d", "--h=x", "-m", "0x10", "-e", "A=1", "-e", "B", "base", "-d"]) == ["base", "-d"]
    assert (f["d"], f["h"], f["m"], f["e"]) == (True, "x", 16, ["A=1", "B"])
    assert run_flags().parse(["--", "-d"]) == ["-d"]
    assert run_flags().parse(["-", "x"]) == ["-", "x"]
    g = run_flags()
    g.parse(["-m", "010", "-d=false"])
    assert (g["m"], g["d"]) == (8, False)
    for args, message in [(["-x"], "flag provided but not defined: -x"),
                          (["-h"], "flag needs an argument: -h"),
                          (["-m", "abc"], 'invalid value "abc" for flag -m: strconv.ParseInt: parsing "abc": invalid syntax'),
                          (["---x"], "bad flag syntax: ---x"),
                          (["-help"], "flag: help requested")]:
        with pytest.raises(FlagError, match=message):
            run_flags().parse(args)


def test_flag_defaults_text():
    assert run_flags().defaults() == ('  -d=false: Detached mode\n  -e=[]: Set environment variables\n'
                                      '  -h="": Container host name\n  -m=0: Memory limit (in bytes)\n')


def test_parse_go_int():
    assert parse_go_int("-0x1f") == -31
    assert parse_go_int("0") == 0
    with pytest.raises(ValueError, match="value out of range"):
        parse_go_int(str(2**63))


def test_tabwriter_matches_go():
    out = tabwrite(["ID\tIMAGE\tCOMMENT", "a1b2c3d4e5f6\tbase:latest\t"], 12)
    assert out == "ID             IMAGE         COMMENT\na1b2c3d4e5f6   base:latest   \n"


def test_human_duration():
    cases = [(0.5, "Less than a second"), (1, "1 seconds"), (59, "59 seconds"),
             (60, "About a minute"), (150, "2 minutes"), (3600, "About an hour"),
             (3 * 3600, "3 hours"), (50 * 3600, "2 days"), (15 * 86400, "2 weeks"),
             (100 * 86400, "3 months"), (800 * 86400, "2 years")]
    for seconds, text in cases:
        assert human_duration(seconds) == text


def test_truncindex():
    index = TruncIndex(["abc123", "abd456"])
    assert index.get("abc") == "abc123"
    assert index.get("abd456") == "abd456"
    for bad in ["ab", "", "zzz", "bc"]:
        with pytest.raises(KeyError, match="No such id"):
            index.get(bad)
    with pytest.raises(KeyError):
        TruncIndex().get("")
    with pytest.raises(ValueError, match="Id already exists"):
        index.add("abc123")
    index.delete("abc123")
    assert index.get("ab") == "abd456"


def test_go_time_and_json():
    t = dt.datetime(2013, 4, 4, 23, 10, 11, 200000, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    assert format_time(t) == "2013-04-04T23:10:11.2-07:00"
    assert format_time(t.replace(microsecond=0, tzinfo=dt.timezone.utc)) == "2013-04-04T23:10:11Z"
    assert parse_time("2013-04-04T23:10:11.123456789-07:00").microsecond == 123456
    assert json_compact({"a": "<&>", "b": None}) == '{"a":"\\u003c\\u0026\\u003e","b":null}'
    assert json_pretty({"a": [], "b": {}}) == '{\n    "a": [],\n    "b": {}\n}'


def test_client_request_line_is_go_json():
    args = ["run", "<a&b>", "x\ny\r", 'q"\\', "\t", "é", ""]
    line = request_line(args)
    assert line == b'["run","\\u003ca\\u0026b\\u003e","x\\ny\\r","q\\"\\\\","\\u0009","\xc3\xa9",""]\n'
    assert parse_command_line(line) == args
    assert request_line([]) == b"[]\n"
    assert request_line([os.fsdecode(b"a\xffb")]) == '["a\ufffdb"]\n'.encode()


def test_command_line_forms():
    assert parse_command_line(b'["ps","-a"]\n') == ["ps", "-a"]
    assert parse_command_line(b"ps -a\r\n") == ["ps", "-a"]
    assert parse_command_line(b"run base echo 'hi there'\n") == ["run", "base", "echo", "hi there"]
    assert parse_command_line(b"null\n") == []


def test_auth_file_round_trip(tmp_path):
    assert encode_auth(AuthConfig("ken", "test")) == "a2VuOnRlc3Q="
    assert decode_auth("a2VuOnRlc3Q=") == ("ken", "test")
    save_config(str(tmp_path), AuthConfig("ken", "pa:ss", "ken@example.com"))
    text = (tmp_path / ".dockercfg").read_text()
    assert text.startswith("auth = ") and text.endswith("email = ken@example.com\n")
    assert (tmp_path / ".dockercfg").stat().st_mode & 0o777 == 0o600
    assert load_config(str(tmp_path)) == AuthConfig("ken", "pa:ss", "ken@example.com")
    (tmp_path / ".dockercfg").write_text("auth = !!!\n")
    assert load_config(str(tmp_path)) == AuthConfig()


# -- resolve_in_root, create_in_root ------------------------------------------------------------


def test_resolve_in_root_follows_links_as_if_the_root_were_slash(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var" / "tmp").mkdir(parents=True)
    (root / "run" / "systemd").mkdir(parents=True)
    links = {"abs": "/var/tmp/x", "rel": "../var/tmp", "up": "../../../../../../var",
             "stub": "../run/systemd/resolve/stub-resolv.conf", "loop": "loop", "root": "/",
             "chain": "abs", "host": str(tmp_path)}
    for name, target in links.items():
        os.symlink(target, root / "etc" / name)
    resolved = {name: "/".join(resolve_in_root(str(root), f"/etc/{name}/f")) for name in links if name != "loop"}
    assert resolved == {"abs": "var/tmp/x/f", "rel": "var/tmp/f", "up": "var/f",
                        "stub": "run/systemd/resolve/stub-resolv.conf/f", "root": "f",
                        "chain": "var/tmp/x/f", "host": str(tmp_path).lstrip("/") + "/f"}
    assert resolve_in_root(str(root), "../../etc/./rel/../..//x") == ["x"]
    with pytest.raises(OSError) as e:
        resolve_in_root(str(root), "/etc/loop")
    assert e.value.errno == errno.ELOOP


def test_create_in_root_never_follows_a_link(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), root / "etc")
    with pytest.raises(OSError):
        create_in_root(str(root), ["etc", "resolv.conf"])
    assert stat.S_ISLNK(create_in_root(str(root), ["etc"], directory=True).st_mode)    # kept, not followed
    assert os.listdir(outside) == []
    st = create_in_root(str(root), ["run", "systemd", "resolve", "stub-resolv.conf"])
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert stat.S_ISDIR(create_in_root(str(root), ["dev"], directory=True).st_mode)
    assert stat.S_ISDIR(create_in_root(str(root), ["run"]).st_mode)          # kept as it is
