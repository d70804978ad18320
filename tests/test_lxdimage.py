"""lxdimage: a rootfs tarball repacked as an LXD unified image."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from gpushell.containers import lxdimage

XATTR = "SCHILY.xattr.user.gpushell"


def add(archive: tarfile.TarFile, member: tarfile.TarInfo, data: bytes = b"") -> None:
    member.size = len(data) if member.isreg() else 0
    archive.addfile(member, io.BytesIO(data) if member.isreg() else None)


def entry(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    for key, value in fields.items():
        setattr(member, key, value)
    return member


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    """A small rootfs tarball named the way `tar -C root -cf x .` names one (`./etc/...`)."""
    path = str(tmp_path / "rootfs.tar")
    long_name = "./usr/share/" + "deep/" * 30 + "file"  # past ustar's 100 characters: a pax `path`
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as archive:
        add(archive, entry("./", tarfile.DIRTYPE, mode=0o755))
        add(archive, entry("./etc", tarfile.DIRTYPE, mode=0o755))
        add(archive, entry("./etc/passwd", mode=0o644), b"root:x:0:0::/root:/bin/sh\n")
        owned = entry("./etc/shadow", mode=0o640, uid=0, gid=42, uname="", gname="")
        owned.pax_headers = {XATTR: "kept"}
        add(archive, owned, b"root:*:1::::::\n")
        add(archive, entry("./etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"))
        add(archive, entry("./etc/passwd-", tarfile.LNKTYPE, linkname="./etc/passwd"))
        add(archive, entry("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666))
        add(archive, entry(long_name, uid=1000, gid=1000), b"deep\n")
    return path


def members(path: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return {member.name: member for member in archive}


def read(path: str, name: str) -> bytes:
    with tarfile.open(path) as archive:
        stream = archive.extractfile(name)
        assert stream is not None
        return stream.read()


def test_metadata_is_yaml_lxd_reads() -> None:
    text = lxdimage.metadata_yaml('Debian "bookworm": gpushell\'s\nimage ✓', 1700000000)
    assert yaml.safe_load(text) == {
        "architecture": "x86_64",
        "creation_date": 1700000000,
        "properties": {
            "os": "debian",
            "release": "bookworm",
            "description": 'Debian "bookworm": gpushell\'s\nimage ✓',
        },
    }


@pytest.mark.parametrize(
    ("name", "renamed"),
    [("./", "rootfs"), (".", "rootfs"), ("./etc/x", "rootfs/etc/x"), ("etc/x", "rootfs/etc/x"),
     ("/etc//x", "rootfs/etc/x")],
)  # fmt: skip
def test_names_go_under_rootfs(name: str, renamed: str) -> None:
    assert lxdimage.in_rootfs(name) == renamed


def test_a_name_climbing_out_is_refused() -> None:
    with pytest.raises(ValueError, match="climbs out"):
        lxdimage.in_rootfs("./etc/../../x")


def test_pack_puts_metadata_first_and_every_member_under_rootfs(rootfs: str, tmp_path: Path) -> None:
    image = str(tmp_path / "image.tar")
    lxdimage.pack(rootfs, image, "test image")
    names = list(members(image))
    assert names[0] == "metadata.yaml"
    assert all(name == "rootfs" or name.startswith("rootfs/") for name in names[1:])
    assert len(names) == len(members(rootfs)) + 1
    assert yaml.safe_load(read(image, "metadata.yaml"))["properties"]["description"] == "test image"
    assert read(image, "rootfs/etc/passwd") == b"root:x:0:0::/root:/bin/sh\n"


def test_pack_keeps_owners_modes_links_devices_and_xattrs(rootfs: str, tmp_path: Path) -> None:
    image = str(tmp_path / "image.tar")
    lxdimage.pack(rootfs, image, "test image")
    packed = members(image)
    shadow = packed["rootfs/etc/shadow"]
    assert (shadow.uid, shadow.gid, shadow.mode, shadow.pax_headers.get(XATTR)) == (0, 42, 0o640, "kept")
    assert packed["rootfs/etc/localtime"].issym()
    assert packed["rootfs/etc/localtime"].linkname == "/usr/share/zoneinfo/UTC"
    assert packed["rootfs/etc/passwd-"].islnk()
    assert packed["rootfs/etc/passwd-"].linkname == "rootfs/etc/passwd"
    null = packed["rootfs/dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)


def test_a_long_name_is_renamed_too(rootfs: str, tmp_path: Path) -> None:
    """tarfile writes a pax `path` over the member's name: the old one must not come back."""
    image = str(tmp_path / "image.tar")
    lxdimage.pack(rootfs, image, "test image")
    deep = [name for name in members(image) if name.endswith("/file")]
    assert deep == ["rootfs/usr/share/" + "deep/" * 30 + "file"]
    assert members(image)[deep[0]].uid == 1000


def test_the_image_unpacks_with_gnu_tar(rootfs: str, tmp_path: Path) -> None:
    """LXD unpacks with GNU tar: the hard link must resolve inside the image."""
    image = str(tmp_path / "image.tar")
    lxdimage.pack(rootfs, image, "test image")
    target = tmp_path / "unpacked"
    target.mkdir()
    # No device nodes: these tests need not run as root.
    subprocess.run(
        ["tar", "--no-same-owner", "--exclude=rootfs/dev/*", "-C", str(target), "-xf", image],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    passwd, backup = target / "rootfs/etc/passwd", target / "rootfs/etc/passwd-"
    assert os.stat(passwd).st_ino == os.stat(backup).st_ino
    assert os.readlink(target / "rootfs/etc/localtime") == "/usr/share/zoneinfo/UTC"


def test_a_failed_pack_leaves_no_partial_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tarball at all" * 100)
    image = str(tmp_path / "image.tar")
    with pytest.raises(tarfile.TarError):
        lxdimage.pack(str(broken), image, "test image")
    assert os.listdir(tmp_path) == ["broken.tar"]


def test_a_pack_cut_short_leaves_no_partial_file(
    rootfs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rename = lxdimage._rename

    def rename_until_shadow(member: tarfile.TarInfo) -> None:
        if member.name.endswith("shadow"):
            raise OSError("disk full")
        rename(member)

    monkeypatch.setattr(lxdimage, "_rename", rename_until_shadow)
    with pytest.raises(OSError, match="disk full"):
        lxdimage.pack(rootfs, str(tmp_path / "image.tar"), "test image")
    assert os.listdir(tmp_path) == ["rootfs.tar"]
