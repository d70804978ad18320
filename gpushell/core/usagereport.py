"""GPU usage samples and the report made from them (pure).

`gpushell-admin tick` writes one sample a minute for each student who
holds a GPU (a loan, or GPUs of their own while their container runs):
one JSON line, `sample_line`.  `gpushell-admin report` reads them back
(`parse_line`) and `aggregate` sums them per student.

A sample stands for the time since the student's previous one (the
tick's period), at most MAX_STEP; the first one, or one after a longer
gap (the host was down, the student held nothing), for STEP.  So a tick
run by hand between two timer ticks adds nothing twice, and a stopped
timer adds nothing.

- GPU-hours held: the GPUs held, times the time each sample stands for.
- GPU-hours busy: the same for the held GPUs where NVML showed a process
  of the student's; unknown (None) where NVML gave no figures (no driver).
- Loans: the different loans (GPU and start) seen in the samples.
- CPU-hours: the growth of the container's cgroup CPU counter between
  samples (a counter that fell means the container restarted: its new
  value is what it used since).
- Peak memory: the highest of the sampled memory figures (once a minute,
  so a spike between two samples is missed).
"""

from __future__ import annotations

import json

from .units import short_size
from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

STEP = 60.0  # seconds: the tick's period
MAX_STEP = 2 * STEP  # a longer gap between two samples is a pause, not use
NS_PER_HOUR = 3600 * 10**9
UNKNOWN = "unknown"


class Sample(Value):
    """One student at one tick: GPUs held (lent ones also as (gpu, started)), busy, cgroup figures.

    busy: the held GPUs with a process of the student's, None where NVML
    gave no figures; cpu_ns and memory: the container's cgroup counters,
    None while it is not running.
    """

    __slots__ = ("busy", "cpu_ns", "gpus", "loans", "memory", "time", "user")

    def __init__(
        self,
        time: float,
        user: str,
        gpus: tuple[int, ...],
        loans: tuple[tuple[int, int], ...] = (),
        busy: tuple[int, ...] | None = None,
        cpu_ns: int | None = None,
        memory: int | None = None,
    ) -> None:
        self.time, self.user, self.gpus, self.loans = time, user, gpus, loans
        self.busy, self.cpu_ns, self.memory = busy, cpu_ns, memory


class UsageRow(Value):
    """One student's sums over a report's period (hours; None: unknown)."""

    __slots__ = ("busy_hours", "cpu_hours", "held_hours", "loans", "peak_memory", "samples", "unknown_hours",
                 "user")  # fmt: skip

    def __init__(
        self,
        user: str,
        samples: int,
        held_hours: float,
        busy_hours: float | None,
        unknown_hours: float,
        loans: int,
        cpu_hours: float | None,
        peak_memory: int | None,
    ) -> None:
        self.user, self.samples, self.loans = user, samples, loans
        self.held_hours, self.busy_hours, self.unknown_hours = held_hours, busy_hours, unknown_hours
        self.cpu_hours, self.peak_memory = cpu_hours, peak_memory


# --- one line per sample ---------------------------------------------------------


def sample_line(sample: Sample) -> str:
    """The sample as one JSON line (newline included); keys short, nothing left out."""
    data = {
        "t": int(sample.time),
        "user": sample.user,
        "gpus": list(sample.gpus),
        "loans": [list(loan) for loan in sample.loans],
        "busy": None if sample.busy is None else list(sample.busy),
        "cpu_ns": sample.cpu_ns,
        "mem": sample.memory,
    }
    return json.dumps(data, separators=(",", ":")) + "\n"


def parse_line(text: str) -> Sample | None:
    """The sample on a line, or None for anything else (a line torn by a crash, say)."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"t", "user", "gpus", "loans", "busy", "cpu_ns", "mem"}:
            return None
        user = data["user"]
        if not isinstance(user, str) or not user.isprintable() or not 0 < len(user) <= 64:
            return None
        busy = None if data["busy"] is None else _numbers(data["busy"])
        loans = tuple((_whole(gpu), _whole(started)) for gpu, started in data["loans"])
        return Sample(
            float(_whole(data["t"])),
            user,
            _numbers(data["gpus"]),
            loans,
            busy,
            _optional_whole(data["cpu_ns"]),
            _optional_whole(data["mem"]),
        )
    except (ValueError, TypeError, RecursionError):
        return None


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{value!r} is not a count")
    return value


def _optional_whole(value: Any) -> int | None:
    return None if value is None else _whole(value)


def _numbers(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError("not a list")
    return tuple(_whole(item) for item in value)


# --- sums -----------------------------------------------------------------------------


def aggregate(
    samples: Iterable[Sample], since: float | None = None, until: float | None = None
) -> list[UsageRow]:
    """Each student's row over [since, until) (None: open), by name."""
    by_user: dict[str, list[Sample]] = {}
    for sample in samples:
        if (since is None or sample.time >= since) and (until is None or sample.time < until):
            by_user.setdefault(sample.user, []).append(sample)
    return [_row(user, sorted(found, key=lambda s: s.time)) for user, found in sorted(by_user.items())]


def _row(user: str, samples: Sequence[Sample]) -> UsageRow:
    held = busy = unknown = 0.0
    known = False
    cpu_ns: int | None = None
    peak: int | None = None
    loans: set[tuple[int, int]] = set()
    previous: Sample | None = None
    for sample in samples:
        gap = STEP if previous is None else sample.time - previous.time
        weight = gap if 0 <= gap <= MAX_STEP else STEP
        held += weight * len(sample.gpus)
        if sample.busy is None:
            unknown += weight * len(sample.gpus)
        else:
            known = True
            busy += weight * len(sample.busy)
        loans.update(sample.loans)
        if sample.memory is not None:
            peak = sample.memory if peak is None else max(peak, sample.memory)
        if sample.cpu_ns is not None:
            cpu_ns = cpu_ns or 0
            if previous is not None and previous.cpu_ns is not None:
                grown = sample.cpu_ns - previous.cpu_ns
                cpu_ns += grown if grown >= 0 else sample.cpu_ns  # restarted: counted from 0 again
        previous = sample
    return UsageRow(
        user,
        len(samples),
        held / 3600,
        busy / 3600 if known else None,
        unknown / 3600,
        len(loans),
        None if cpu_ns is None else cpu_ns / NS_PER_HOUR,
        peak,
    )


# --- what the administrator reads -------------------------------------------------

HEADER = ("USER", "GPU-H HELD", "GPU-H BUSY", "LOANS", "CPU-H", "PEAK MEM", "SAMPLES")
CSV_FIELDS = ("user", "gpu_hours_held", "gpu_hours_busy", "gpu_hours_unknown", "loans", "cpu_hours",
              "peak_memory_bytes", "samples")  # fmt: skip


def hours_text(hours: float | None) -> str:
    return UNKNOWN if hours is None else f"{hours:.2f}"


def size_text(count: int | None) -> str:
    return UNKNOWN if count is None else short_size(count)


def render_table(rows: Sequence[UsageRow]) -> str:
    """A table, numbers to the right; a busy figure with held time NVML did not see ends in `*`."""
    cells = [HEADER]
    partial = False
    for row in rows:
        busy = hours_text(row.busy_hours)
        if row.busy_hours is not None and row.unknown_hours > 0:
            busy, partial = busy + "*", True
        cells.append(
            (row.user, hours_text(row.held_hours), busy, str(row.loans), hours_text(row.cpu_hours),
             size_text(row.peak_memory), str(row.samples))
        )  # fmt: skip
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADER))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in cells
    ]
    if not rows:
        lines.append("(no samples in this period)")
    if partial:
        lines.append("* part of the time held had no NVML figures: busy counts only the rest")
    return "\n".join(lines) + "\n"


def row_data(row: UsageRow) -> dict[str, object]:
    """A row for JSON and CSV: hours rounded to 4 places, unknown as None."""
    return dict(
        zip(
            CSV_FIELDS,
            (
                row.user,
                round(row.held_hours, 4),
                None if row.busy_hours is None else round(row.busy_hours, 4),
                round(row.unknown_hours, 4),
                row.loans,
                None if row.cpu_hours is None else round(row.cpu_hours, 4),
                row.peak_memory,
                row.samples,
            ),
            strict=True,
        )
    )


def to_json(rows: Sequence[UsageRow], since: str | None, until: str | None) -> str:
    """{"since": DATE|null, "until": DATE|null, "students": [row, ...]}; unknown figures are null."""
    return json.dumps({"since": since, "until": until, "students": [row_data(row) for row in rows]}, indent=2)


def to_csv(rows: Sequence[UsageRow]) -> str:
    """A header line, then one line per student; unknown figures read `unknown`."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow(UNKNOWN if value is None else value for value in row_data(row).values())
    return out.getvalue()
