"""apply's nat chain rebuild, started before apply reads the rest of the host.

After a flush or a reboot, the kernel's work for the thousand-rule
iptables-restore is most of what `gpushell-admin apply` waits for.  The
rebuild needs only the registry and the nat table, so apply starts it
first and reads the containers, accounts and bridge on the other core
meanwhile; `finish` collects it where the plan puts the change.  The
forward lock is held from the start to the end, as for a rebuild made in
turn, so no login's fix of its own forward interleaves with it.
"""

from __future__ import annotations

from . import forward, iptables
from .errors import GpushellError
from .lock import locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .forward import NatTable
    from .model import Registry
    from .paths import Paths
    from .runner import Started


class Rebuild:
    """The chain rebuild, running; use it as a context manager, so it is always collected.

    wanted=False makes one that does and holds nothing, for a chain that
    needs no rebuild.
    """

    def __init__(self, reg: Registry, paths: Paths, table: NatTable, wanted: bool = True) -> None:
        self._lock: locked | None = None
        self._started: Started | None = None
        self._error: GpushellError | None = None
        if not wanted:
            return
        self._lock = locked(f"{paths.run_dir}/forward.lock")
        self._lock.__enter__()
        try:
            # The table as observed if nothing changed since, else a fresh read.
            current = iptables.still_current(table)
            self._started = iptables.start_apply(forward.rebuild_lines(current, reg, reg.users.values()))
        except GpushellError as exc:  # reported where the plan puts the change, like any failure
            self._error = exc
        except BaseException:
            self._release()
            raise

    def finish(self) -> None:
        """Wait for the rebuild and release the lock; GpushellError if it failed."""
        try:
            if self._error is not None:
                raise self._error
            if self._started is not None:
                self._started.result()
        finally:
            self._error = self._started = None  # a second finish() has nothing left to report
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.__exit__()
            self._lock = None

    def __enter__(self) -> Rebuild:
        return self

    def __exit__(self, *exc: object) -> None:
        # Never leave before the restore has ended: the lock must cover all of it.
        try:
            self.finish()
        except GpushellError:
            if exc[0] is None:
                raise
