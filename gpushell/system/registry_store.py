"""The registry store: every read of the registry file and every change to it.

    load(paths)              the whole registry, parsed and validated from the file
    load_user(paths, name)   the settings and one student's entry  } from the compiled copy
    load_all(paths)          the whole registry                    } while it is current
    load_for_doctor(paths)   the registry even when its file is unsafe (doctor reports, it does not act)
    load_text_for_doctor(paths)  the same, with its text
    update(paths, edit)      one change: lock, read, parse, edit, validate, atomic write
    Change(paths)            the same, for commands with work to do under the lock around the write
    create(paths, text)      init's starter registry, where there is none

Like sshd's StrictModes: a registry that anyone but root could change (the
file or any directory above it) is refused, because the registry decides
which container and port a student gets.

The helper's login path imports this (load_user): PyYAML (registry.py) is
imported only where a full parse is needed, and only small modules at the
top.
"""

from __future__ import annotations

import os

from ..core.errors import ExitStatus, GpushellError
from ..core.paths import Paths
from . import registry_cache
from .files import write_atomically
from .lock import locked
from .ownership import check_owned_by_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..core.model import Registry, User

# How long a command that changes the registry waits for another to finish.
# Twenty adds at once queue behind each other's template copies for a minute
# or more; past this, one clear line rather than a hang behind a stuck holder.
REGISTRY_WAIT = 600.0
REGISTRY_BUSY = (
    "the registry is busy: another gpushell-admin command is changing it; try again when it has finished"
)


# --- reading -------------------------------------------------------------------------------


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


def load(paths: Paths) -> Registry:
    """The whole registry, parsed and validated from the file."""
    from ..core import registry  # PyYAML: imported only by the commands that parse

    return registry.parse(read_text_and_stat(paths.registry)[0], paths.registry)


def _current(paths: Paths) -> dict[str, Any] | Registry:
    """The compiled copy when it is current; else the registry parsed in full (and the copy renewed)."""
    check_owned_by_root(paths.registry)
    cached = registry_cache.read(paths.registry_cache, registry_cache.identity(os.stat(paths.registry)))
    if cached is not None:
        return cached
    from ..core import registry  # the slow path: PyYAML, full validation

    text, info = read_text_and_stat(paths.registry)
    reg = registry.parse(text, paths.registry)
    os.makedirs(paths.run_dir, mode=0o755, exist_ok=True)
    check_owned_by_root(paths.run_dir)
    registry_cache.write(paths.registry_cache, registry_cache.identity(info), reg)
    return reg


def load_user(paths: Paths, name: str) -> tuple[Registry, User]:
    """The registry's settings and `name`'s entry (the other students are not built): a login's read."""
    current = _current(paths)
    if isinstance(current, dict):
        return registry_cache.from_plain(current, name)
    return current, current.user(name)


def load_all(paths: Paths) -> Registry:
    """The whole registry, from the compiled copy when it is current (`apply` with a thousand students)."""
    current = _current(paths)
    return registry_cache.registry_from_plain(current) if isinstance(current, dict) else current


def load_for_doctor(paths: Paths) -> Registry:
    """The registry even when its file is unsafe: doctor checks ownership itself and reports."""
    return load_text_for_doctor(paths)[1]


def load_text_for_doctor(paths: Paths) -> tuple[str, Registry]:
    """The same, with the text it was parsed from (doctor's upgrade advice reads which keys are written)."""
    from ..core import registry

    try:
        with open(paths.registry, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise GpushellError(f"cannot read {paths.registry}: {exc}") from None
    return text, registry.parse(text, paths.registry)


# --- changing --------------------------------------------------------------------------------


def first_problem(exc: GpushellError) -> str:
    """One line: a registry that would not validate says why in its first problem."""
    lines = exc.user_message.splitlines()
    return lines[0] if lines else "invalid"


class Change:
    """One change of the registry, under the registry lock from start to end.

        with registry_store.Change(paths) as change:  # locked; change.old read and validated
            new = change.propose(edited_text)          # validated, nothing written yet
            ...                                        # what must come before the entry (add's container)
            change.write()                             # the new text, atomically
            ...                                        # what needs the entry, still under the lock

    Leaving the block without write() (an exception, a refusal) leaves the
    file exactly as it was.  The edit is made on the text (registry_edit.py),
    so the administrator's comments and layout are kept.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock = locked(paths.registry_lock, REGISTRY_WAIT, REGISTRY_BUSY)
        self.old_text = ""
        self.old: Registry
        self.new_text: str | None = None  # set by propose()
        self.new: Registry

    def __enter__(self) -> Change:
        from ..core import registry

        self._lock.__enter__()
        try:
            self.old_text = read_text_and_stat(self.paths.registry)[0]
            self.old = registry.parse(self.old_text, self.paths.registry)
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._lock.__exit__()

    def propose(self, text: str, status: int = ExitStatus.USAGE) -> Registry:
        """Parse and validate the new text; a text that does not validate ends the change in one line."""
        from ..core import registry

        try:
            self.new = registry.parse(text, self.paths.registry)
        except registry.RegistryError as exc:
            raise GpushellError(f"not changed: {first_problem(exc)}", exc.log_message, status) from None
        self.new_text = text
        return self.new

    def write(self) -> None:
        """Replace the registry with the proposed text (fsync'd, renamed: never half written)."""
        if self.new_text is None:
            raise AssertionError("Change.write() before a propose()")
        if self.new_text != self.old_text:  # nothing changed: the file (and the helper's copy) stay
            write_atomically(self.paths.registry, self.new_text)


def update(paths: Paths, edit: Callable[[str, Registry], str]) -> tuple[Registry, Registry]:
    """Apply edit(old_text, old_registry) -> new_text under the lock and write it; (old, new).

    edit may raise to refuse the change; then, or when the new text does not
    validate, nothing is written.
    """
    with Change(paths) as change:
        change.propose(edit(change.old_text, change.old))
        change.write()
        return change.old, change.new


def create(paths: Paths, text: str) -> bool:
    """Write `text` as the registry where there is none (init's starter); False when one exists."""
    from ..core import registry

    with locked(paths.registry_lock, REGISTRY_WAIT, REGISTRY_BUSY):
        if os.path.lexists(paths.registry):
            return False
        registry.parse(text, paths.registry)  # a starter that would not load is never written
        write_atomically(paths.registry, text)
        return True
