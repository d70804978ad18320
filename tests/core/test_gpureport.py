"""A cluster member's GPU report: what publish-gpus writes, read back strictly by the front door."""

from __future__ import annotations

import json

import pytest

from gpushell.core import gpureport
from gpushell.core.gpureport import GpuReport, ReportedGpu
from gpushell.core.statusmodel import GpuReading

GIB = 2**30
H200 = ReportedGpu(
    0,
    "NVIDIA H200",
    100,
    7 * GIB,
    140 * GIB,
    60,
    (("gpushell-alice", 5 * GIB), ("", 2 * GIB)),
    uuid="GPU-6dd5",
)
REPORT = GpuReport(1_700_000_000, gpureport.OK, (H200, ReportedGpu(1, error="GPU is lost")))


def test_a_report_comes_back_as_it_was_written() -> None:
    text = gpureport.encode(REPORT)
    assert gpureport.decode(text) == REPORT
    assert json.loads(text)["format"] == gpureport.FORMAT
    assert "driver" not in json.loads(text)  # no module loaded, or an older member: no key at all
    with_driver = REPORT.replace(driver="570.86.15")
    assert gpureport.decode(gpureport.encode(with_driver)) == with_driver


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body.update(format=2),
        lambda body: body.update(state="fine"),
        lambda body: body.update(taken=-1),
        lambda body: body.update(taken=True),  # JSON's true is no time
        lambda body: body.update(gpus={}),
        lambda body: body["gpus"][0].update(gpu="0"),
        lambda body: body["gpus"][0].update(procs=[["gpushell-alice"]]),
        lambda body: body["gpus"][0].update(procs=[[7, 100]]),
        lambda body: body["gpus"][0].update(procs=[["gpushell-alice\n", 100]]),  # not printable
        lambda body: body["gpus"][0].update(procs=[["x", 1]] * (gpureport.MAX_PROCS + 1)),
        lambda body: body.update(gpus=body["gpus"] * (gpureport.MAX_GPUS + 1)),
        lambda body: body.update(driver=""),
        lambda body: body.update(driver="570.86.15; rm -rf /"),
        lambda body: body.update(driver="570.²"),  # a digit to str.isdigit, not to a version
        lambda body: body.update(driver=570),
        lambda body: body.update(driver="1." * 20 + "1"),
    ],
)
def test_anything_else_is_no_report(change) -> None:
    body = json.loads(gpureport.encode(REPORT))
    change(body)
    assert gpureport.decode(json.dumps(body)) is None


@pytest.mark.parametrize("text", [None, 7, "", "not json", "[]", "x" * (gpureport.MAX_TEXT + 1)])
def test_a_value_that_is_not_json_of_a_report_is_none(text: object) -> None:
    assert gpureport.decode(text) is None


def test_a_figure_out_of_range_or_a_name_too_long_is_no_figure() -> None:
    body = json.loads(gpureport.encode(REPORT))
    body["gpus"][0].update(util=-5, temp=2**61, name="n" * (gpureport.MAX_NAME + 1), memory_used=1.5)
    gpu = gpureport.decode(json.dumps(body)).gpus[0]  # type: ignore[union-attr]
    assert (gpu.util, gpu.temp, gpu.name, gpu.memory_used) == (None, None, None, None)
    assert gpu.memory_total == 140 * GIB


def test_the_writer_keeps_within_the_readers_bounds() -> None:
    crowded = ReportedGpu(0, "g" * 500, procs=tuple((f"c{n}", n) for n in range(200)))
    back = gpureport.decode(gpureport.encode(GpuReport(1, gpureport.OK, (crowded,) * 100)))
    assert back is not None and len(back.gpus) == gpureport.MAX_GPUS
    assert len(back.gpus[0].procs) == gpureport.MAX_PROCS and back.gpus[0].name == "g" * gpureport.MAX_NAME


def test_a_report_is_fresh_for_three_minutes_either_way() -> None:
    assert REPORT.fresh(REPORT.taken + gpureport.STALE_AFTER)
    assert not REPORT.fresh(REPORT.taken + gpureport.STALE_AFTER + 1)
    assert REPORT.fresh(REPORT.taken - 5)  # the member's clock a little ahead


def test_the_banner_table_names_students_by_their_container_and_nobody_else() -> None:
    table = gpureport.banner_table(REPORT, {"gpushell-alice": "alice"})
    assert table[0]["procs"] == [("student", None, "alice", 5 * GIB), ("other", None, "", 2 * GIB)]
    assert (table[0]["index"], table[0]["util"], table[0]["mem_total"]) == (0, 100, 140 * GIB)
    assert table[1] == {"index": 1, "error": "GPU is lost"}


def test_the_status_page_reads_a_fresh_report_and_nothing_from_a_stale_one() -> None:
    now = REPORT.taken + 30
    assert gpureport.readings(REPORT, now) == [GpuReading(0, "NVIDIA H200", 100, 7 * GIB, 140 * GIB)]
    assert gpureport.readings(REPORT, REPORT.taken + gpureport.STALE_AFTER + 60) == []
    assert gpureport.readings(None, now) == []


QUIET = GpuReport(
    1_700_000_000, gpureport.OK, (H200, ReportedGpu(1, "NVIDIA H200"), ReportedGpu(2, error="lost"))
)
TAKEN = QUIET.taken


def test_lending_counts_every_gpu_busy_but_those_a_fresh_report_shows_quiet() -> None:
    assert gpureport.busy(QUIET, TAKEN + 60, (0, 1, 2, 3)) == {0, 2, 3}  # 2 did not answer; 3 not listed
    assert gpureport.busy(QUIET, TAKEN + gpureport.STALE_AFTER + 1, (0, 1)) is None
    assert gpureport.busy(QUIET.replace(state=gpureport.NO_DRIVER), TAKEN, (0, 1)) is None
    assert gpureport.busy(None, TAKEN, (0, 1)) is None


def test_a_report_tells_whether_a_container_still_runs_on_a_gpu_only_when_it_can() -> None:
    assert gpureport.shows(QUIET, TAKEN, "gpushell-alice", (0,)) is True
    assert gpureport.shows(QUIET, TAKEN, "gpushell-alice", (1,)) is False
    assert gpureport.shows(QUIET, TAKEN, "gpushell-bob", (0, 1)) is False
    assert gpureport.shows(QUIET, TAKEN, "gpushell-bob", (1, 2)) is None  # GPU 2 did not answer
    assert gpureport.shows(QUIET, TAKEN, "gpushell-bob", (3,)) is None  # not in the report
    assert gpureport.shows(QUIET, TAKEN, "gpushell-bob", (1,), since=TAKEN) is None  # not taken after
    assert gpureport.shows(QUIET, TAKEN, "gpushell-bob", (1,), since=TAKEN - 1) is False
    assert gpureport.shows(QUIET, TAKEN + gpureport.STALE_AFTER + 1, "gpushell-bob", (1,)) is None
    crowded = ReportedGpu(1, procs=tuple((f"c{n}", 1) for n in range(gpureport.MAX_PROCS)))
    full = QUIET.replace(gpus=(crowded,))
    assert gpureport.shows(full, TAKEN, "gpushell-bob", (1,)) is None  # others may have been cut


def test_a_report_from_an_older_member_without_uuids_still_reads() -> None:
    body = json.loads(gpureport.encode(REPORT))
    for gpu in body["gpus"]:
        del gpu["uuid"]
    decoded = gpureport.decode(json.dumps(body))
    assert decoded is not None and [gpu.uuid for gpu in decoded.gpus] == [None, None]
