"""Keeping a container's files as a tarball before `remove` destroys it."""

from __future__ import annotations

import contextlib
import datetime
import os

from ..core.errors import GpushellError
from ..system.runner import run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def archive_name(user: str, when: datetime.datetime) -> str:
    """USER-20250101T120000Z.tar (UTC, sorts by time)."""
    return f"{user}-{when.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}.tar"


def tar_argv(rootfs: str, output: str) -> list[str]:
    # Numeric owners: the ids on disk are the template's plain ids, which
    # mean nothing on another host under their names.
    return ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", rootfs, "-cf", output, "."]


def archive_rootfs(rootfs: str, directory: str, user: str, when: datetime.datetime) -> str:
    """The rootfs as DIRECTORY/USER-<time>.tar (keep_whole); its path."""
    if not os.path.isdir(rootfs):
        raise GpushellError(f"cannot archive: {rootfs} does not exist")

    def tar(temporary: str) -> None:
        result = run(tar_argv(rootfs, temporary), check=False, timeout=3600)
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()
            raise GpushellError(f"tar of {rootfs} failed: {detail[-1] if detail else result.returncode}")

    return keep_whole(directory, archive_name(user, when), tar)


def keep_whole(directory: str, name: str, fill: Callable[[str], None]) -> str:
    """DIRECTORY/NAME as fill writes it under a temporary name, synced and renamed; its path.

    fill gets the temporary path, made empty with mode 0600 (the tarball
    holds the student's files).  Any failure removes the partial file and
    raises: the caller destroys nothing unless this returned.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise GpushellError(f"cannot create archive directory {directory}: {exc.strerror}") from None
    final = os.path.join(directory, name)
    if os.path.lexists(final):
        raise GpushellError(f"{final} already exists; not overwriting it")
    # The writer is another program or a stream, so not files.write_atomically; the rename still makes
    # the archive appear whole.
    temporary = os.path.join(directory, f".{name}.partial")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
        fill(temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.rename(temporary, final)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise GpushellError(f"cannot write the archive in {directory}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return final
