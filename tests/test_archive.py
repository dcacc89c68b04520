"""archive.py: safe untar of hostile input, tar of layers and trees (issue: images)."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import subprocess
import tarfile

import pytest

from docker0_2013.archive import ArchiveError, tar_directory, tar_layer, untar

MTIME = 1365120303          # 2013-04-05


# -- helpers (also used by test_changes, test_overlay and test_images) ----------------------


def member(name: str, kind: str = "file", data: bytes = b"", link: str = "", mode: int | None = None,
           uid: int = 0, gid: int = 0, device: tuple[int, int] = (0, 0),
           xattrs: dict[str, bytes] | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
                 "fifo": tarfile.FIFOTYPE}[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.uid, info.gid, info.mtime, info.linkname = uid, gid, MTIME, link
    info.devmajor, info.devminor = device
    for key, value in (xattrs or {}).items():
        info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    if kind == "file":
        info.size = len(data)
        return info, data
    return info, None


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], format: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def listing(root: str) -> list[tuple]:
    """Everything a layer must keep, per path: type and mode, owner, content or target,
    device numbers, mtime, xattrs, and which paths are one inode."""
    rows, inodes = [], {}
    paths = [root]
    for parent, dirs, files in os.walk(root):
        paths += [os.path.join(parent, n) for n in dirs + files]
    for path in sorted(paths):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                content = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        else:
            content = ""
        xattrs = sorted((k, os.getxattr(path, k, follow_symlinks=False))
                        for k in os.listxattr(path, follow_symlinks=False))
        group = inodes.setdefault(st.st_ino, len(inodes)) if not stat.S_ISDIR(st.st_mode) else -1
        rows.append((os.path.relpath(path, root), oct(st.st_mode), st.st_uid, st.st_gid, content,
                     st.st_rdev, st.st_mtime_ns, xattrs, group))
    return rows


def untar_bytes(data: bytes, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    untar(io.BytesIO(data), dest)


def make_tree(root: str) -> None:
    """A small root filesystem with every kind of entry a layer can hold."""
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc", "deep", "er"))
    os.makedirs(os.path.join(root, "dev"))
    os.makedirs(os.path.join(root, "tmp"))
    with open(os.path.join(root, "bin", "tool"), "wb") as f:
        f.write(os.urandom(300_000))
    os.chmod(os.path.join(root, "bin", "tool"), 0o4755)
    os.link(os.path.join(root, "bin", "tool"), os.path.join(root, "bin", "tool-link"))
    os.symlink("tool", os.path.join(root, "bin", "relative"))
    os.symlink("/bin/tool", os.path.join(root, "bin", "absolute"))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\ndaemon:x:1:1::/:/bin/false\n")
    os.chown(os.path.join(root, "etc", "deep"), 1, 2)
    os.chmod(os.path.join(root, "etc", "deep"), 0o2750)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    with open(os.path.join(root, "etc", "deep", "er", "owned"), "w") as f:
        f.write("x")
    os.chown(os.path.join(root, "etc", "deep", "er", "owned"), 1000, 100)
    os.setxattr(os.path.join(root, "etc", "passwd"), "user.note", b"\x00\xffbinary")
    os.setxattr(os.path.join(root, "bin", "tool"), "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))   # cap_net_raw+ep
    os.mknod(os.path.join(root, "dev", "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(os.path.join(root, "dev", "loop9"), stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(os.path.join(root, "dev", "fifo"), 0o600)
    for parent, dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(os.path.join(parent, name), ns=(MTIME * 10**9 + 123456789,) * 2, follow_symlinks=False)
        os.utime(parent, ns=(MTIME * 10**9 + 987654321,) * 2)


# -- round trips -----------------------------------------------------------------------------


def test_tar_directory_round_trip_keeps_everything(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    make_tree(src)
    out = io.BytesIO()
    tar_directory(src, out)
    names = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames()
    assert names[:3] == [".", "./bin", "./bin/absolute"]          # relative, sorted, parents first
    untar_bytes(out.getvalue(), dst)
    assert listing(dst) == listing(src)
    assert stat.S_IMODE(os.stat(os.path.join(dst, "bin", "tool")).st_mode) == 0o4755
    assert os.stat(os.path.join(dst, "bin", "tool")).st_ino == os.stat(os.path.join(dst, "bin", "tool-link")).st_ino


def test_gnu_tar_archives_unpack_the_same(tmp_path):
    """What `tar --xattrs` writes, in every compression bsdtar recognised, and empty input."""
    src = str(tmp_path / "src")
    make_tree(src)
    plain = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", src,
                            "-cf", "-", "."], check=True, capture_output=True).stdout
    expected = listing(src)
    for name, data in [("plain", plain), ("gz", gzip.compress(plain)), ("bz2", bz2.compress(plain)),
                       ("xz", lzma.compress(plain)), ("gnu-format", subprocess.run(
                           ["tar", "--format=gnu", "--numeric-owner", "-C", src, "-cf", "-", "."],
                           check=True, capture_output=True).stdout)]:
        dst = str(tmp_path / name)
        untar_bytes(data, dst)
        if name == "gnu-format":            # no xattrs and whole-second times in that format
            assert [r[:6] for r in listing(dst)] == [r[:6] for r in expected]
        else:
            assert listing(dst) == expected, name
    untar_bytes(b"", str(tmp_path / "empty"))
    untar_bytes(b"\0" * 10240, str(tmp_path / "zeros"))
    assert os.listdir(tmp_path / "empty") == os.listdir(tmp_path / "zeros") == []


def test_long_names_large_ids_and_nanoseconds(tmp_path):
    deep = "/".join(["d" * 60] * 5) + "/file"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        dst = str(tmp_path / str(fmt))
        ustar_deep = "p" * 100 + "/" + "q" * 50 + "/" + "n" * 90     # the `prefix` field's limit
        info, data = member(ustar_deep if fmt == tarfile.USTAR_FORMAT else deep, data=b"deep",
                            uid=2_000_000 if fmt == tarfile.USTAR_FORMAT else 3_000_000, gid=7)
        untar_bytes(tar_of((info, data), format=fmt), dst)
        path = os.path.join(dst, info.name)
        assert open(path, "rb").read() == b"deep"
        assert os.stat(path).st_uid == info.uid and os.stat(path).st_gid == 7
    info, data = member("nano", data=b"")
    info.pax_headers["mtime"] = "1365120303.123456789"
    untar_bytes(tar_of((info, data)), str(tmp_path / "ns"))
    assert os.stat(tmp_path / "ns" / "nano").st_mtime_ns == 1365120303123456789


def test_pax_size_overrides_the_header(tmp_path):
    """Files over 8 GiB keep their size only in the PAX header; the ustar field says 0."""
    info, data = member("big", data=b"hello")
    info.pax_headers["size"] = "5"
    raw = bytearray(tar_of((info, data), member("after", data=b"next")))
    header = 1024                        # the PAX header and its record come first
    raw[header + 124:header + 136] = b"0" * 11 + b"\0"
    raw[header + 148:header + 156] = b" " * 8
    raw[header + 148:header + 156] = b"%06o\0 " % sum(raw[header:header + 512])
    untar_bytes(bytes(raw), str(tmp_path / "layer"))
    assert (tmp_path / "layer" / "big").read_bytes() == b"hello"
    assert (tmp_path / "layer" / "after").read_bytes() == b"next"


def test_later_entries_replace_earlier_ones_without_following_them(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    layer = str(tmp_path / "layer")
    untar_bytes(tar_of(member("x", "symlink", link=str(victim)), member("x", data=b"new"),
                       member("h", data=b"one"), member("h2", "hardlink", link="h"), member("h2", data=b"two"),
                       member("d", "dir"), member("d/inner", data=b"i"), member("d", data=b"now a file"),
                       member("e", "dir", mode=0o700), member("e", "dir", mode=0o711),
                       member("/abs/olute", data=b"stripped")), layer)
    assert victim.read_text() == "precious"
    assert open(os.path.join(layer, "x")).read() == "new" and not os.path.islink(os.path.join(layer, "x"))
    assert open(os.path.join(layer, "h")).read() == "one" and open(os.path.join(layer, "h2")).read() == "two"
    assert open(os.path.join(layer, "d")).read() == "now a file"
    assert stat.S_IMODE(os.stat(os.path.join(layer, "e")).st_mode) == 0o711
    assert open(os.path.join(layer, "abs", "olute")).read() == "stripped"


def test_symlinks_are_stored_as_they_are_whatever_they_point_at(tmp_path):
    """A link that climbs above `/` is legal in an image (`..` stops at the container's
    root); what is refused is writing through a link, wherever it points."""
    layer = str(tmp_path / "layer")
    links = {"usr/lib/up": "../../../../bin", "usr/lib/dangling": "../nowhere/at/all",
             "etc/abs": "/var/tmp", "etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf",
             "self": "self", "dotdot": ".."}
    untar_bytes(tar_of(member("usr/lib", "dir"), member("etc", "dir"),
                       *(member(name, "symlink", link=target) for name, target in links.items())), layer)
    assert {name: os.readlink(os.path.join(layer, name)) for name in links} == links
    for through in ("usr/lib/up/sh", "dotdot/escaped", "etc/abs/escaped"):
        with pytest.raises(ArchiveError, match="is a symlink"):
            untar_bytes(tar_of(*(member(name, "symlink", link=target) for name, target in links.items()
                                 if "/" not in name), member("usr", "dir"), member("usr/lib", "dir"),
                               member("etc", "dir"), member("usr/lib/up", "symlink", link="../../../../bin"),
                               member("etc/abs", "symlink", link="/var/tmp"), member(through, data=b"x")),
                        str(tmp_path / through.replace("/", "-")))
    assert not os.path.exists(tmp_path / "escaped") and not os.path.exists("/var/tmp/escaped")


def test_setuid_and_capabilities_survive_the_owner_change(tmp_path):
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    layer = str(tmp_path / "layer")
    untar_bytes(tar_of(member("su", data=b"#!", mode=0o6755, uid=0, gid=0),
                       member("ping", data=b"elf", mode=0o755, uid=5, gid=5,
                              xattrs={"security.capability": cap, "trusted.overlay.opaque": b"y"})), layer)
    assert stat.S_IMODE(os.stat(os.path.join(layer, "su")).st_mode) == 0o6755
    assert os.getxattr(os.path.join(layer, "ping"), "security.capability") == cap
    assert "trusted.overlay.opaque" not in os.listxattr(os.path.join(layer, "ping"))


# -- hostile archives --------------------------------------------------------------------------


def hostile_archives(outside: str) -> dict[str, tuple[bytes, str]]:
    """name -> (archive, part of the error). `outside` is a directory they try to reach."""
    return {
        "dotdot": (tar_of(member("../escaped", data=b"x")), "'..'"),
        "dotdot-deep": (tar_of(member("a/b/../../../escaped", data=b"x")), "'..'"),
        "absolute-dotdot": (tar_of(member("/../" + outside.lstrip("/") + "/escaped", data=b"x")), "'..'"),
        "through-absolute-symlink": (tar_of(member("link", "symlink", link=outside),
                                            member("link/escaped", data=b"x")), "is a symlink"),
        "through-inner-symlink": (tar_of(member("dir", "dir"), member("alias", "symlink", link="dir"),
                                         member("alias/file", data=b"x")), "is a symlink"),
        "through-symlink-mkdir": (tar_of(member("link", "symlink", link=outside),
                                         member("link/sub/escaped", data=b"x")), "is a symlink"),
        "write-through-symlink-above-root": (tar_of(member("a", "dir"), member("a/up", "symlink", link="../../etc"),
                                                    member("a/up/passwd", data=b"x")), "is a symlink"),
        "hardlink-dotdot": (tar_of(member("h", "hardlink", link="../../etc/passwd")), "'..'"),
        "hardlink-absolute": (tar_of(member("h", "hardlink", link="/etc/passwd")), "not a file of this archive"),
        "hardlink-through-symlink": (tar_of(member("link", "symlink", link="/etc"),
                                            member("h", "hardlink", link="link/passwd")),
                                     "not a file of this archive"),
        "hardlink-to-directory": (tar_of(member("d", "dir"), member("h", "hardlink", link="d")),
                                  "not a file of this archive"),
        "hardlink-to-itself": (tar_of(member("h", "hardlink", link="h")), "does not name another file"),
        "file-as-parent": (tar_of(member("f", data=b"x"), member("f/child", data=b"y")), "not a directory"),
        "not-a-tar": (b"this is not a tar archive, just some text\n" * 40, "Invalid tar archive"),
        "truncated-data": (tar_of(member("big", data=os.urandom(100_000)))[:60_000], "unexpected end of data"),
        "truncated-header": (tar_of(member("a", data=b"x"), member("b", data=b"y"))[:1200], "unexpected end"),
        "garbage-after-entry": (tar_of(member("a", data=b"x"))[:1024] + b"garbage!" * 128, "Invalid tar archive"),
        "bad-gzip": (gzip.compress(tar_of(member("a", data=b"x" * 5000)))[:-30], "Invalid tar archive"),
        "sparse": (subprocess_sparse_tar(), "sparse"),
        "huge-pax-header": (pax_bomb(), "header"),
    }


def subprocess_sparse_tar() -> bytes:
    info, data = member("sparse", data=b"")
    info.type = tarfile.GNUTYPE_SPARSE
    return tar_of((info, None), format=tarfile.GNU_FORMAT)


def pax_bomb() -> bytes:
    info, data = member("bomb", data=b"")
    info.pax_headers["comment"] = "x" * (2 << 20)
    return tar_of((info, data))


@pytest.mark.parametrize("name", sorted(hostile_archives("/x")))
def test_hostile_archive_is_refused(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    data, message = hostile_archives(str(outside))[name]
    layer = str(tmp_path / "layer" / "deeper")
    os.makedirs(layer)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(")):
        untar(io.BytesIO(data), layer)
    assert os.listdir(outside) == []
    assert not os.path.exists(tmp_path / "layer" / "escaped")
    assert not os.path.exists(tmp_path / "escaped")


# -- tar_layer: overlay upper dir -> AUFS-style layer -------------------------------------------


def test_tar_layer_turns_overlay_whiteouts_into_wh_files(tmp_path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "motd").write_text("changed\n")
    os.mknod(upper / "etc" / "hosts", stat.S_IFCHR, 0)          # a deleted file
    os.mknod(upper / "gone", stat.S_IFCHR, 0)                   # a deleted directory
    (upper / "var" / "cache").mkdir(parents=True)
    os.setxattr(upper / "var" / "cache", "trusted.overlay.opaque", b"y")
    os.setxattr(upper / "var", "trusted.overlay.origin", b"whatever")
    (upper / "var" / "cache" / "fresh").write_text("new\n")
    out = io.BytesIO()
    tar_layer(str(upper), out)
    archive = tarfile.open(fileobj=io.BytesIO(out.getvalue()))
    assert archive.getnames() == ["./etc", "./etc/.wh.hosts", "./etc/motd", "./.wh.gone", "./var",
                                  "./var/cache", "./var/cache/.wh..wh..opq", "./var/cache/fresh"]
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in archive.getmembers()
                   for k in m.pax_headers)
    layer = str(tmp_path / "layer")
    untar_bytes(out.getvalue(), layer)
    assert sorted(os.listdir(os.path.join(layer, "etc"))) == [".wh.hosts", "motd"]
    assert sorted(os.listdir(os.path.join(layer, "var", "cache"))) == [".wh..wh..opq", "fresh"]
