"""Sizes as people read them (pure), for the student's side and the helper's messages alike."""

from __future__ import annotations


def size_text(size: int) -> str:
    """Bytes as a short figure: 512 B, 3.4 MiB, 1.2 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_size(size: int) -> str:
    """Bytes as the admin's tables show them: 512B, 3.4M, 1.2G, 2.0T."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
