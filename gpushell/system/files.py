"""Small file reads and writes shared by the admin side and the helper."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def read_text_or_none(path: str) -> str | None:
    """The file's text (undecodable bytes replaced), or None if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read()
    except OSError:
        return None


def read_private(path: str, limit: int) -> str | None:
    """At most `limit` bytes of one of gpushell's own small files, never through a link.

    None when it is missing, a link, or unreadable; undecodable bytes are
    replaced (callers check what they read).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as stream:
            return stream.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def read_format(path: str, limit: int, version: int) -> dict[str, Any] | None:
    """One of gpushell's own small JSON files, an object {"format": version, ...}; None when missing.

    ValueError when it is not one (callers warn and start afresh).
    """
    import json  # the admin side's: logins import this module and stay off json

    text = read_private(path, limit)
    if text is None:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != version:
        raise ValueError(f"not format {version}")
    return data


def write_atomically(path: str, data: str | bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace path with data at once: a reader (or a crash) sees the old file or the new one.

    gpushell's one atomic writer: a temporary file beside path (created
    afresh, no link followed), written, given `mode`, renamed over path.
    `durable` also fsyncs the file and its directory, so the new content
    survives a power cut (the registry, configs, drop-ins); files in the run
    directory describe only this boot and skip it.
    """
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, mode)
    except FileExistsError:  # left by a killed process that had our pid: nobody else writes it
        os.unlink(temporary)
        fd = os.open(temporary, flags, mode)
    try:
        try:
            view = memoryview(data.encode() if isinstance(data, str) else data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:  # noqa: SIM105 (not contextlib.suppress: contextlib stays off the login path)
            os.unlink(temporary)
        except OSError:
            pass
        raise
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_private(path: str, text: str) -> None:
    """One of gpushell's own small files in the run directory: root's, 0600, not fsync'd."""
    write_atomically(path, text, 0o600, durable=False)
