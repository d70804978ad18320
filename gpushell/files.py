"""Small file reads and writes shared by the admin side and the helper.

Imported on the login path: nothing beyond `os`.
"""

from __future__ import annotations

import os


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


def write_private(path: str, text: str) -> None:
    """Replace one of gpushell's own small files at once (rename): root's, 0600, no link followed.

    No fsync: these live in the run directory and describe only this boot.
    """
    temporary = f"{path}.{os.getpid()}"
    data = text.encode()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:  # noqa: SIM105 - contextlib would cost the login path an import
            os.unlink(temporary)
        except OSError:
            pass
        raise
