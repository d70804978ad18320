"""usagereport: the samples' lines and the per-student sums of `gpushell-admin report` (pure)."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given
from hypothesis import strategies as st

from gpushell.core import usagereport
from gpushell.core.usagereport import Sample, UsageRow, aggregate, parse_line, sample_line

T0 = 1_700_000_000.0
MINUTE, HOUR = 60.0, 3600.0
GIB = 2**30


def minutes(user: str, count: int, start: float = T0, **fields: object) -> list[Sample]:
    """count samples a minute apart, each with the same fields."""
    base = {"gpus": (3,), "loans": ((3, int(T0)),), "busy": (3,), "cpu_ns": None, "memory": None} | fields
    return [Sample(start + index * MINUTE, user, **base) for index in range(count)]  # type: ignore[arg-type]


def test_a_line_reads_back_as_the_sample_it_was() -> None:
    sample = Sample(T0, "alice", (2, 3), ((3, int(T0) - 600),), (3,), 12_000_000_000, 3 * GIB)
    line = sample_line(sample)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "t": int(T0), "user": "alice", "gpus": [2, 3], "loans": [[3, int(T0) - 600]], "busy": [3],
        "cpu_ns": 12_000_000_000, "mem": 3 * GIB,
    }  # fmt: skip
    assert parse_line(line) == sample


def test_unknown_figures_are_null_and_read_back_as_none() -> None:
    sample = Sample(T0, "bob", (1,), (), None, None, None)
    assert '"busy":null' in sample_line(sample)
    assert parse_line(sample_line(sample)) == sample


def test_anything_but_a_sample_reads_as_none() -> None:
    good = json.loads(sample_line(Sample(T0, "alice", (3,), (), (3,), 1, 2)))
    broken = [
        "", "{", '{"t": 1', "[]", "null", sample_line(Sample(T0, "alice", (3,), ()))[:30],
        json.dumps({**good, "extra": 1}), json.dumps({k: v for k, v in good.items() if k != "mem"}),
        json.dumps({**good, "t": -1}), json.dumps({**good, "t": True}), json.dumps({**good, "gpus": "3"}),
        json.dumps({**good, "gpus": [1.5]}), json.dumps({**good, "user": ""}),
        json.dumps({**good, "user": 7}),
        json.dumps({**good, "loans": [[3]]}), json.dumps({**good, "loans": [3]}),
        json.dumps({**good, "cpu_ns": "1"}), json.dumps({**good, "user": "a\nb"}), "[" * 100000,
    ]  # fmt: skip
    for text in broken:
        assert parse_line(text) is None, text


@given(
    st.builds(
        Sample,
        st.integers(0, 2**40).map(float),
        st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True),
        st.lists(st.integers(0, 1023), max_size=8).map(tuple),
        st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 2**40)), max_size=4).map(tuple),
        st.none() | st.lists(st.integers(0, 1023), max_size=8).map(tuple),
        st.none() | st.integers(0, 2**62),
        st.none() | st.integers(0, 2**62),
    )
)
def test_every_sample_survives_its_line(sample: Sample) -> None:
    assert parse_line(sample_line(sample)) == sample


def test_held_and_busy_hours_count_each_minute_once() -> None:
    found = minutes("alice", 60) + minutes("bob", 30, gpus=(1, 2), loans=(), busy=(1,))
    alice, bob = aggregate(found)
    assert (alice.user, alice.samples, alice.held_hours, alice.busy_hours, alice.loans) == (
        "alice",
        60,
        1.0,
        1.0,
        1,
    )
    assert (bob.held_hours, bob.busy_hours, bob.loans, bob.unknown_hours) == (1.0, 0.5, 0, 0.0)


def test_a_tick_run_by_hand_between_two_adds_no_time() -> None:
    by_hand = Sample(T0 + 90, "alice", (3,), (), (3,))
    found = [*minutes("alice", 3), by_hand]  # the timer's at 0, 60 and 120 s, one by hand at 90 s
    (row,) = aggregate(found)
    assert row.held_hours * HOUR == 3 * MINUTE and row.samples == 4


def test_a_gap_counts_as_one_minute_not_as_use() -> None:
    found = minutes("alice", 2) + minutes("alice", 2, start=T0 + 10 * HOUR)
    (row,) = aggregate(found)
    assert row.held_hours * HOUR == 4 * MINUTE


def test_without_nvml_busy_is_unknown_and_held_still_counts() -> None:
    (row,) = aggregate(minutes("alice", 60, busy=None))
    assert row.held_hours == 1.0 and row.busy_hours is None and row.unknown_hours == 1.0
    assert usagereport.render_table([row]).splitlines()[1].split()[2] == "unknown"


def test_part_of_the_time_without_figures_is_marked() -> None:
    found = minutes("alice", 30) + minutes("alice", 30, start=T0 + 30 * MINUTE, busy=None)
    (row,) = aggregate(found)
    assert (row.held_hours, row.busy_hours, row.unknown_hours) == (1.0, 0.5, 0.5)
    table = usagereport.render_table([row])
    assert "0.50*" in table and table.splitlines()[-1].startswith("* part of the time held")


def test_loans_are_counted_by_gpu_and_start() -> None:
    first, second = (3, int(T0)), (3, int(T0 + HOUR))
    found = (
        minutes("alice", 5, loans=(first,))
        + minutes("alice", 5, start=T0 + HOUR, loans=(second,))
        + minutes("alice", 5, start=T0 + 2 * HOUR, gpus=(3, 4), loans=(second, (4, int(T0 + 2 * HOUR))))
    )
    assert aggregate(found)[0].loans == 3


def test_cpu_hours_grow_with_the_counter_and_survive_a_restart() -> None:
    ns = 10**9
    counters = [100 * ns, 1900 * ns, 3700 * ns, 60 * ns, 1860 * ns]  # restarted before the fourth sample
    found = [Sample(T0 + i * MINUTE, "alice", (3,), (), (3,), cpu, None) for i, cpu in enumerate(counters)]
    (row,) = aggregate(found)
    assert row.cpu_hours is not None
    assert round(row.cpu_hours * HOUR) == 1800 + 1800 + 60 + 1800


def test_cpu_and_memory_unknown_while_the_container_never_ran() -> None:
    (row,) = aggregate(minutes("alice", 3))
    assert row.cpu_hours is None and row.peak_memory is None
    assert usagereport.render_table([row]).splitlines()[1].split()[4:6] == ["unknown", "unknown"]


def test_peak_memory_is_the_highest_sample() -> None:
    found = [
        Sample(T0 + i * MINUTE, "alice", (3,), (), (3,), None, mem)
        for i, mem in enumerate([GIB, 5 * GIB, None, 2 * GIB])
    ]
    assert aggregate(found)[0].peak_memory == 5 * GIB


def test_the_period_is_since_inclusive_until_exclusive() -> None:
    found = minutes("alice", 10)
    assert aggregate(found, since=T0 + 5 * MINUTE)[0].samples == 5
    assert aggregate(found, until=T0 + 5 * MINUTE)[0].samples == 5
    assert aggregate(found, since=T0 + HOUR) == []


def test_rows_come_by_name_whatever_order_the_samples_came_in() -> None:
    found = list(reversed(minutes("carol", 2) + minutes("alice", 2) + minutes("bob", 2)))
    assert [row.user for row in aggregate(found)] == ["alice", "bob", "carol"]


ROWS = [
    UsageRow("alice", 60, 1.0, 0.75, 0.0, 2, 0.5, 3 * GIB),
    UsageRow("bob", 30, 0.5, None, 0.5, 1, None, None),
]


def test_the_table_has_a_row_per_student_under_its_header() -> None:
    lines = usagereport.render_table(ROWS).splitlines()
    assert lines[0].split() == [
        "USER",
        "GPU-H",
        "HELD",
        "GPU-H",
        "BUSY",
        "LOANS",
        "CPU-H",
        "PEAK",
        "MEM",
        "SAMPLES",
    ]
    assert lines[1].split() == ["alice", "1.00", "0.75", "2", "0.50", "3.0G", "60"]
    assert lines[2].split() == ["bob", "0.50", "unknown", "1", "unknown", "unknown", "30"]
    assert usagereport.render_table([]).splitlines()[-1] == "(no samples in this period)"


def test_json_has_the_period_and_nulls_for_unknown() -> None:
    data = json.loads(usagereport.to_json(ROWS, "2024-06-01", None))
    assert data["since"] == "2024-06-01" and data["until"] is None
    assert data["students"][0] == {
        "user": "alice", "gpu_hours_held": 1.0, "gpu_hours_busy": 0.75, "gpu_hours_unknown": 0.0, "loans": 2,
        "cpu_hours": 0.5, "peak_memory_bytes": 3 * GIB, "samples": 60,
    }  # fmt: skip
    assert data["students"][1]["gpu_hours_busy"] is None and data["students"][1]["cpu_hours"] is None


def test_csv_has_a_header_and_says_unknown() -> None:
    rows = list(csv.reader(io.StringIO(usagereport.to_csv(ROWS))))
    assert rows[0] == list(usagereport.CSV_FIELDS)
    assert rows[1] == ["alice", "1.0", "0.75", "0.0", "2", "0.5", str(3 * GIB), "60"]
    assert rows[2][2] == "unknown" and rows[2][5] == "unknown"
