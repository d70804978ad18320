"""StrictModes for gpushell's own files: refuse what a non-root user could change."""

from __future__ import annotations

import os
import stat

from ..core.errors import ExitStatus, GpushellError


def _unsafe(path: str, why: str) -> GpushellError:
    return GpushellError(f"{path} is unsafe: {why}", f"refusing {path}: {why}", ExitStatus.CONFIG)


def check_owned_by_root(path: str) -> None:
    """Refuse if path or a directory above it is a link, not root's, or writable by others.

    Like sshd's secure_path: root-owned sticky directories (/tmp) pass, as
    their other users cannot replace what root put there.
    """
    current = os.path.abspath(path)
    while True:
        try:
            info = os.lstat(current)
        except OSError as exc:
            raise _unsafe(path, f"cannot inspect {current}: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            raise _unsafe(path, f"{current} is a symbolic link")
        sticky_dir = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
        if info.st_uid != 0 or (info.st_mode & 0o022 and not sticky_dir):
            raise _unsafe(path, f"{current} is writable by a user other than root")
        if current == "/":
            return
        current = os.path.dirname(current)


def check_tree_owned_by_root(directory: str) -> None:
    """The directory (and its parents) and every file directly inside it."""
    check_owned_by_root(directory)
    with os.scandir(directory) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if info.st_uid != 0 or info.st_mode & 0o022 or stat.S_ISLNK(info.st_mode):
                raise _unsafe(entry.path, "not root's, writable by others, or a link")
