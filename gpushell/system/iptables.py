"""Reading and changing the nat table: one iptables-save, one iptables-restore."""

from __future__ import annotations

import os

from ..core import forward
from . import nftgen
from .runner import LARGE_OUTPUT, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

IPTABLES_SAVE = "/usr/sbin/iptables-save"
IPTABLES_RESTORE = "/usr/sbin/iptables-restore"


def read_nat() -> forward.NatTable:
    """The nat table, marked with the ruleset generation from just before the read
    (a change during the read leaves it marked stale, never current)."""
    seen = generation()
    # A thousand users' rules: well past the default cap (runner.py), from a trusted tool.
    return forward.NatTable(run([IPTABLES_SAVE, "-t", "nat"], max_output=LARGE_OUTPUT).stdout, seen)


def still_current(table: forward.NatTable) -> forward.NatTable:
    """table when the ruleset has not changed since it was read; else a fresh read."""
    if table.generation is not None and generation() == table.generation:
        return table
    return read_nat()


def apply(lines: Sequence[str]) -> bool:
    """Apply lines in one atomic iptables-restore; False when there was nothing to do."""
    if not lines:
        return False
    # -w: wait for the xtables lock instead of failing next to another writer.
    run([IPTABLES_RESTORE, "-w", "--noflush"], stdin=forward.restore_script(lines))
    return True


def generation() -> int | None:
    """nf_tables' ruleset generation, when iptables is its front end here.

    With the legacy iptables backend nf_tables never sees the rules, so
    its counter proves nothing: None, and callers read the rules instead.
    """
    if not os.path.realpath(IPTABLES_SAVE).endswith("xtables-nft-multi"):
        return None
    return nftgen.generation()
