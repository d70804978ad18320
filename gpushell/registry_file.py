"""Reading the registry safely and writing it atomically.

Like sshd's StrictModes: a registry that anyone but root could change (the
file or any directory above it) is refused, because the registry decides
which container and port a student gets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from .errors import ExitStatus, GpushellError
from .lock import locked
from .ownership import check_owned_by_root
from .paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Registry


def read_text(path: str) -> str:
    return read_text_and_stat(path)[0]


def read_text_and_stat(path: str) -> tuple[str, os.stat_result]:
    """The text and the identity of the very file it was read from (fstat, no race)."""
    check_owned_by_root(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise GpushellError(
            f"cannot read {path}: {exc.strerror}", f"open {path}: {exc}", ExitStatus.CONFIG
        ) from None
    with os.fdopen(fd, encoding="utf-8") as stream:
        try:
            return stream.read(), os.fstat(stream.fileno())
        except UnicodeDecodeError as exc:
            raise GpushellError(f"{path}: not UTF-8 text", f"{path}: {exc}", ExitStatus.CONFIG) from None


def load(path: str) -> Registry:
    from . import registry  # PyYAML: imported only by the commands that parse

    return registry.parse(read_text(path), path)


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replace path with text: temporary file, fsync, rename, fsync the directory.

    A reader (or a crash) sees the old file or the new one, never a mix.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.rename(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def update(paths: Paths, change: Callable[[str, Registry], str]) -> Registry:
    """Apply change(text, parsed) under the registry lock and write the result.

    The new text is parsed and validated before it replaces the old one, so
    a bad edit can never land on disk.
    """
    from . import registry

    with locked(paths.registry_lock):
        old_text = read_text(paths.registry)
        new_text = change(old_text, registry.parse(old_text, paths.registry))
        new = registry.parse(new_text, paths.registry)
        write_atomically(paths.registry, new_text)
        return new
