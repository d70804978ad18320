"""Small file reads shared by the admin side and the helper."""

from __future__ import annotations


def read_text_or_none(path: str) -> str | None:
    """The file's text (undecodable bytes replaced), or None if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read()
    except OSError:
        return None
