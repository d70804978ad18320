"""The isolation tables on the host: read them, compare, replace them (isolation.py writes the text)."""

from __future__ import annotations

from ..core import isolation
from ..core.errors import GpushellError
from .runner import LARGE_OUTPUT, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.model import Registry

NFT = "nft"
APPLY_HINT = "gpushell-admin apply"


def listing(reg: Registry) -> dict[str, str | None]:
    """family -> `nft list table` output; None where the table is missing."""
    found: dict[str, str | None] = {}
    for family in isolation.FAMILIES:
        # A thousand students' sets: past the default cap, from a trusted tool.
        result = run(
            [NFT, "list", "table", family, isolation.table_name(reg)], check=False, max_output=LARGE_OUTPUT
        )
        found[family] = result.stdout if result.returncode == 0 else None
    return found


def problems(reg: Registry) -> list[str]:
    """What is wrong with the isolation tables; [] when they match the registry.

    A cluster's containers are on its members' bridges, isolated by the
    engine's NIC filters (lxdinstance.py): the front door has no tables.
    """
    if reg.cluster is not None:
        return []
    try:
        listed = listing(reg)
    except GpushellError as exc:  # no nft here: said as a problem, which apply's rebuild then reports
        return [f"cannot read the nftables tables: {exc.user_message}"]
    return isolation.problems(reg, listed)


def apply(reg: Registry) -> None:
    """Replace both tables with what the registry wants, in one atomic transaction."""
    if reg.cluster is not None:
        return
    run([NFT, "-f", "-"], stdin=isolation.rebuild_script(reg))


def ensure(reg: Registry) -> bool:
    """apply() where the tables differ; False when they were right.

    A needless rebuild would move nf_tables' generation, and with it send
    every student's next login through the full forward check (iptables.py).
    """
    if not problems(reg):
        return False
    apply(reg)
    return True


def after_change(reg: Registry, warn: Callable[[str], None]) -> bool:
    """ensure() after add/remove/set changed the users; a failure is warned about, not raised:
    the registry change is made, and apply (which runs at boot) finishes the job."""
    try:
        ensure(reg)
    except GpushellError as exc:
        warn(f"network isolation rules not rebuilt ({exc.user_message}); run {APPLY_HINT}")
        return False
    return True
