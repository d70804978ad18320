"""Our cached Debian rootfs tarball as an LXD image.

LXD takes a "unified" image: one tarball holding `metadata.yaml` and the
root filesystem under `rootfs/`.  The rootfs tarball template.ensure_cached
keeps (members `./etc/...`) already has everything else, so packing is a
rename of every member, streamed: the tarball is a few hundred MB, and
unpacking it to pack it again would need root's ownership and device nodes
on disk for nothing.  Each member's header is copied whole, so numeric
owners, modes, links, device nodes and the xattrs tarfile reads (pax
`SCHILY.xattr.*`) reach the image unchanged.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from typing import BinaryIO

from ..core.paths import DEBIAN_SUITE

ROOTFS = "rootfs"
RECIPE = "1"  # bumped whenever pack's output changes: an image cached by an older one is not reused
# pax keys that would override a member's new name (tarfile writes the pax
# header's own `path` over TarInfo.name, and the same for `linkpath`).
RENAMED_PAX_KEYS = ("path", "linkpath")


def metadata_yaml(description: str, created: int) -> str:
    """LXD's metadata.yaml for an x86_64 Debian image made at `created` (Unix time).

    The description goes in as a JSON string: a JSON string is a valid YAML
    double-quoted scalar, so any text is safe without a YAML library.
    """
    quoted = json.dumps(description, ensure_ascii=False)
    return (
        "architecture: x86_64\n"
        f"creation_date: {created}\n"
        "properties:\n"
        "  os: debian\n"
        f"  release: {DEBIAN_SUITE}\n"
        f"  description: {quoted}\n"
    )


def in_rootfs(name: str) -> str:
    """A rootfs tarball's member name (`./etc/x`, `etc/x`, `./`) under `rootfs/`."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"tarball member {name!r} climbs out of the root filesystem")
    return "/".join([ROOTFS, *parts])


def pack(rootfs_tarball: str, destination: str, description: str) -> None:
    """Write the unified image for `rootfs_tarball` to `destination`.

    Written to destination + ".partial" and renamed when whole, so a reader
    never sees half an image; the partial file is removed on any failure.
    """
    partial = destination + ".partial"
    try:
        with open(partial, "wb") as stream:
            _write_image(rootfs_tarball, stream, description)
            stream.flush()
            os.fsync(stream.fileno())
        os.rename(partial, destination)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _write_image(rootfs_tarball: str, stream: BinaryIO, description: str) -> None:
    created = int(time.time())
    metadata = metadata_yaml(description, created).encode()
    with (
        tarfile.open(rootfs_tarball, "r:") as source,
        tarfile.open(fileobj=stream, mode="w:", format=tarfile.PAX_FORMAT) as image,
    ):
        header = tarfile.TarInfo("metadata.yaml")
        header.size, header.mode, header.mtime = len(metadata), 0o644, created
        image.addfile(header, io.BytesIO(metadata))
        for member in source:
            _rename(member)
            image.addfile(member, source.extractfile(member) if member.isreg() else None)


def _rename(member: tarfile.TarInfo) -> None:
    member.name = in_rootfs(member.name)
    # A hard link names another member, which moved too; a symlink's target is a path inside the rootfs.
    if member.islnk():
        member.linkname = in_rootfs(member.linkname)
    member.pax_headers = {
        key: value for key, value in member.pax_headers.items() if key not in RENAMED_PAX_KEYS
    }
