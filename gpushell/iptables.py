"""Reading and changing the nat table: one iptables-save, one iptables-restore."""

from __future__ import annotations

import os

from . import forward, nftgen
from .runner import LARGE_OUTPUT, Started, start

TYPE_CHECKING = False  # `collections.abc` stays off the login path
if TYPE_CHECKING:
    from collections.abc import Sequence

IPTABLES_SAVE = "/usr/sbin/iptables-save"
IPTABLES_RESTORE = "/usr/sbin/iptables-restore"


def read_nat() -> forward.NatTable:
    return Reading().table()


class Reading:
    """iptables-save of the nat table, started; table() collects it, the caller working meanwhile."""

    def __init__(self) -> None:
        # The generation first: a change during the read leaves the table marked stale, never current.
        self._generation = generation()
        self._save = start([IPTABLES_SAVE, "-t", "nat"])

    def table(self) -> forward.NatTable:
        # A thousand users' rules: well past the default cap (runner.py), from a trusted tool.
        return forward.NatTable(self._save.result(max_output=LARGE_OUTPUT).stdout, self._generation)


def still_current(table: forward.NatTable) -> forward.NatTable:
    """table when the ruleset has not changed since it was read; else a fresh read."""
    if table.generation is not None and generation() == table.generation:
        return table
    return read_nat()


def apply(lines: Sequence[str]) -> bool:
    """Apply lines in one atomic iptables-restore; False when there was nothing to do."""
    started = start_apply(lines)
    if started is None:
        return False
    started.result()
    return True


def start_apply(lines: Sequence[str]) -> Started | None:
    """apply(), left running in the background; None when there is nothing to do.

    The kernel's share of a thousand-rule restore (~20 ms here) is most of
    it; the caller can work on another core meanwhile.
    """
    if not lines:
        return None
    # -w: wait for the xtables lock instead of failing next to another writer.
    return start([IPTABLES_RESTORE, "-w", "--noflush"], stdin=forward.restore_script(lines))


def generation() -> int | None:
    """nf_tables' ruleset generation, when iptables is its front end here.

    With the legacy iptables backend nf_tables never sees the rules, so
    its counter proves nothing: None, and callers read the rules instead.
    """
    if not os.path.realpath(IPTABLES_SAVE).endswith("xtables-nft-multi"):
        return None
    return nftgen.generation()
