"""The GPU table and the snapshot list as the student reads them (pure rendering).

Their wire formats, shared with the helper, are core/gputable.py and
core/snapshotlist.py; this is the student's side of them.
"""

from __future__ import annotations

import time  # loaded at interpreter start-up anyway

from ..core import gputable, snapshotlist
from ..core.units import size_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .banner import Palette


def _or(text: str, unit: str) -> str:
    return f"{text}{unit}" if text else "?"


def gpu_table(answer: dict[str, str], p: Palette) -> str:
    """The table a student reads: one row per GPU, own processes numbered."""
    if answer.get("state") == gputable.NO_DRIVER:
        return gputable.NO_DRIVER_TEXT + "\n"
    rows = gputable.decode(answer)
    seen_from = answer.get("seen_from")
    inside = seen_from in (gputable.SEEN_FROM_CONTAINER, gputable.SEEN_FROM_MEMBER)
    if not rows:
        return "no GPUs in your container\n" if inside else "no GPUs found on this host\n"
    pids = gputable.own_pids(rows)
    lines = [f"{p.bold}{'GPU':<4}{'Name':<24}{'Util':>6}{'Memory':>18}{'Temp':>6}  Processes{p.reset}"]
    for row in rows:
        if row.error is not None:
            lines.append(f"{row.index:<4}{p.bad}did not answer: {row.error}{p.reset}")
            continue
        name, util, used, total, temp = row.fields
        memory = f"{used or '?'}/{total or '?'} MiB"
        shown = []
        for kind, pid, proc_name, mib in row.procs:
            size = _or(mib, " MiB")
            if kind == "you":
                number = pids.index(int(pid)) + 1 if pid.isdigit() and int(pid) in pids else 0
                shown.append(f"{p.good}[{number}] you: pid {pid} {proc_name} {size}{p.reset}")
            elif kind == "student":
                shown.append(f"{proc_name} {size}")
            else:
                shown.append(f"{p.dim}other {size}{p.reset}")
        lines.append(
            f"{row.index:<4}{name[:23]:<24}{_or(util, ' %'):>6}{memory:>18}{_or(temp, ' C'):>6}  "
            + ("; ".join(shown) if shown else "-")
        )
    if inside:
        member = seen_from == gputable.SEEN_FROM_MEMBER
        told = gputable.SEEN_FROM_MEMBER_TEXT if member else gputable.SEEN_FROM_CONTAINER_TEXT
        lines.append(f"{p.dim}{told}{p.reset}")
    return "\n".join(lines) + "\n"


def when_text(created: int) -> str:
    """UTC time of day and date, without `time.strftime`'s locale (it is the same everywhere)."""
    t = time.gmtime(created)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d} UTC"


def snapshot_list(info: dict[str, str], p: Palette) -> str:
    listed = snapshotlist.decode(info)
    limit = snapshotlist.count(info.get("snapshot_limit", "0"))
    if not listed:
        return f"You have no snapshots (you may keep {limit}).\n"
    rows = [
        f"  {p.bold}{n}{p.reset}) {s.name:<32} {when_text(s.created)}  {size_text(s.size):>10}"
        f"  {p.dim}taken while {'running' if s.running else 'stopped'}{p.reset}"
        for n, s in enumerate(listed, 1)
    ]
    total = size_text(sum(s.size for s in listed))
    # On copy-on-write storage a snapshot's size is what it alone keeps: the rest it shares.
    held = "kept by them alone" if info.get("snapshot_sizes") == "own" else "in all"
    return f"Your snapshots ({len(listed)} of {limit}, {total} {held}):\n" + "\n".join(rows) + "\n"
