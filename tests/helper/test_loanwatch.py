"""The end of a loan on a cluster: a restart only where a member's report cannot clear the container.

Around the stand-in engine of tests/containers/test_lxdloans.py (one
instance, its devices, every stop and start recorded) and reports made
here; the engine, the members' reports and the restarts run for real in
tests/integration/test_cluster_lending.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpushell.admin import lendingops
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core import gpureport
from gpushell.core.errors import GpushellError
from gpushell.core.gpureport import GpuReport, ReportedGpu
from gpushell.core.lending import Loan, LoanBook
from gpushell.core.model import User
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.helper import loans, loanwatch, services
from gpushell.helper.loanwatch import Watch
from gpushell.system import loanstore
from tests.containers.test_lxdloans import TWO_GPUS, Engine, engine_with_loans


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    for name in ("run", "state"):
        (tmp_path / name).mkdir(mode=0o700)
    return Paths(run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))


def report(taken: float, *on_gpu1: str) -> dict[str, GpuReport | None]:
    """m1's report: GPU 0 busy with a neighbour, GPU 1 with these containers' processes."""
    gpus = (
        ReportedGpu(0, procs=(("zed", 1),)),
        ReportedGpu(1, procs=tuple((c, 1) for c in on_gpu1)),
    )
    return {"m1": GpuReport(int(taken), gpureport.OK, gpus)}


def alice(engine: Engine) -> User:
    return engine.reg.users["alice"]


def end(paths: Paths, engine: Engine, reports: dict[str, GpuReport | None]) -> list[str]:
    """The tick's taking step for alice's ended loan of m1's GPU 1; the warnings."""
    warnings: list[str] = []
    lendingops.write_taking(paths, [("alice", 1)])
    assert lendingops.finish_taking(paths, engine.reg, engine, (), warnings.append, reports) == 0
    assert "loan-gpu1" not in engine.instance["devices"]
    assert lendingops.read_taking(paths, warnings.append) == []
    return warnings


def test_a_report_showing_the_container_off_the_gpu_spares_the_restart_and_watches_it(paths: Paths) -> None:
    engine = engine_with_loans(RUNNING)
    before = time.time()
    assert end(paths, engine, report(before - 10)) == []
    assert engine.actions == []
    [watch] = loanwatch.read(paths, pytest.fail)
    assert watch.user == "alice" and watch.gpu == 1 and before <= watch.since <= time.time()


@pytest.mark.parametrize(
    "reports",
    [
        pytest.param(report(time.time(), "alice"), id="its-process-on-it"),
        pytest.param({}, id="no-report"),
        pytest.param(report(time.time() - gpureport.STALE_AFTER - 5), id="stale-report"),
    ],
)
def test_otherwise_the_container_restarts_and_nothing_is_watched(
    paths: Paths, reports: dict[str, GpuReport | None]
) -> None:
    engine = engine_with_loans(RUNNING)
    assert alice(engine).container == "alice"  # the name the reports give
    end(paths, engine, reports)
    assert engine.actions == ["stop", "start"]
    assert loanwatch.read(paths, pytest.fail) == []


class Restarts:
    """check's restart: records who, answers whether the container ran, or fails."""

    def __init__(self, ran: bool = True, fails: bool = False) -> None:
        self.ran, self.fails, self.users = ran, fails, list[str]()

    def __call__(self, user: User) -> bool:
        if self.fails:
            raise GpushellError("could not restart", "the member is away")
        self.users.append(user.name)
        return self.ran


def check(paths: Paths, reports: dict[str, GpuReport | None], now: float, restart: Restarts) -> list[str]:
    """One tick's watch step on alice's GPU 1, taken at 1000; what it told and warned."""
    engine = engine_with_loans(STOPPED)
    told: list[str] = []
    loanwatch.check(paths, engine.reg, reports, now, restart, told.append, told.append)
    return told


SINCE = 1_700_000_000.0


@pytest.mark.parametrize(
    ("reports", "now", "restarted", "watched"),
    [
        pytest.param(report(SINCE + 20, "alice"), SINCE + 60, True, False, id="kept-by-a-process"),
        pytest.param(report(SINCE + 20), SINCE + 60, False, False, id="let-go"),
        pytest.param(report(SINCE - 5, "alice"), SINCE + 60, False, True, id="report-from-before"),
        pytest.param({}, SINCE + 60, False, True, id="no-report-yet"),
        pytest.param({}, SINCE + gpureport.STALE_AFTER + 1, True, False, id="no-report-in-time"),
    ],
)
def test_the_first_report_after_the_take_decides(
    paths: Paths, reports: dict[str, GpuReport | None], now: float, restarted: bool, watched: bool
) -> None:
    loanwatch.write(paths, [Watch("alice", 1, SINCE)])
    restart = Restarts()
    told = check(paths, reports, now, restart)
    assert restart.users == (["alice"] if restarted else [])
    assert told == (
        ["restarted: alice's container, whose processes may still hold GPU 1"] if restarted else []
    )
    assert loanwatch.read(paths, pytest.fail) == ([Watch("alice", 1, SINCE)] if watched else [])


def test_a_gpu_theirs_again_or_a_student_gone_ends_the_watch(paths: Paths) -> None:
    again = LoanBook([Loan("alice", 1, SINCE, SINCE + 3600)])  # lent to alice again
    loanstore.update(paths, lambda book: (again, None))
    loanwatch.write(paths, [Watch("alice", 1, SINCE), Watch("alice", 0, SINCE), Watch("gone", 1, SINCE)])
    restart = Restarts()
    assert check(paths, report(SINCE + 20, "alice"), SINCE + 60, restart) == []
    assert restart.users == [] and loanwatch.read(paths, pytest.fail) == []  # GPU 0: alice's own


def test_a_restart_that_fails_is_tried_at_the_next_tick(paths: Paths) -> None:
    loanwatch.write(paths, [Watch("alice", 1, SINCE)])
    told = check(paths, report(SINCE + 20, "alice"), SINCE + 60, Restarts(fails=True))
    assert told == ["alice's container not restarted yet (GPU 1): the member is away"]
    assert loanwatch.read(paths, pytest.fail) == [Watch("alice", 1, SINCE)]


def test_a_stopped_container_is_not_restarted_and_not_announced(paths: Paths) -> None:
    loanwatch.write(paths, [Watch("alice", 1, SINCE)])
    restart = Restarts(ran=False)
    assert check(paths, report(SINCE + 20, "alice"), SINCE + 60, restart) == []
    assert restart.users == ["alice"] and loanwatch.read(paths, pytest.fail) == []


@pytest.mark.parametrize(
    "text", ["{", '{"format": 2, "watching": []}', '{"format": 1, "watching": [{"user": 1}]}']
)
def test_a_damaged_watch_file_is_a_warning(paths: Paths, text: str) -> None:
    Path(loanwatch.path(paths)).write_text(text)
    warnings: list[str] = []
    assert loanwatch.read(paths, warnings.append) == []
    assert len(warnings) == 1 and "watching.json is damaged" in warnings[0]


def test_one_host_never_spares_a_restart(paths: Paths) -> None:
    from tests.admin.test_lendingops import registry

    reg = registry()
    assert loanwatch.quiet(reg, report(time.time()), time.time(), reg.users["ann"], (1,)) is False


def test_the_tick_counts_each_members_gpus_busy_by_its_own_report() -> None:
    reg, now = engine_with_loans(STOPPED).reg, time.time()  # m1 has GPUs 0 and 1
    assert lendingops.busy(reg, None, report(now), now) == {"": None, "m1": {0}}  # 0: a neighbour's
    assert lendingops.busy(reg, None, report(now, "alice"), now) == {"": None, "m1": {0, 1}}
    assert lendingops.busy(reg, None, {}, now) == {"": None, "m1": None}  # no report: unknown


class ReportingEngine(Engine):
    """The stand-in engine, with the members' GPU reports."""

    def __init__(self, state: str, reports: dict[str, GpuReport | None]) -> None:
        super().__init__(state, {})
        self.reports = reports

    def gpu_reports(self) -> dict[str, GpuReport | None]:
        return self.reports


@pytest.mark.parametrize(("on_gpu1", "restarted"), [((), False), (("alice",), True)])
def test_a_students_return_spares_the_restart_only_where_the_report_shows_none_of_theirs(
    paths: Paths, on_gpu1: tuple[str, ...], restarted: bool
) -> None:
    engine = ReportingEngine(RUNNING, report(time.time(), *on_gpu1))
    engine.lend_gpus(alice(engine), (1,))
    lent = LoanBook([Loan("alice", 1, time.time(), time.time() + 3600)])
    loanstore.update(paths, lambda book: (lent, None))
    answer = loans.give_back(services.Context(paths, engine.reg, engine), alice(engine), {"gpu": "1"})
    assert answer["returned"] == "1" and "loan-gpu1" not in engine.instance["devices"]
    assert engine.actions == (["stop", "start"] if restarted else [])
    assert answer.get("restarted") == ("1" if restarted else None)
    assert answer.get("watched") == (None if restarted else "1")
    watched = loanwatch.read(paths, pytest.fail)
    assert [(watch.user, watch.gpu) for watch in watched] == ([] if restarted else [("alice", 1)])


@pytest.mark.parametrize(("on_gpu1", "lent"), [((), True), (("",), False)])
def test_a_borrow_on_a_cluster_lends_only_a_gpu_the_members_report_shows_unused(
    tmp_path: Path, paths: Paths, on_gpu1: tuple[str, ...], lent: bool
) -> None:
    text = TWO_GPUS + "lending: {gpus: all}\n"
    (tmp_path / "gpushell.yaml").write_text(text)
    paths = paths.replace(registry=str(tmp_path / "gpushell.yaml"))
    engine = ReportingEngine(RUNNING, report(time.time(), *on_gpu1))  # GPU 0: alice's own
    engine.reg = parse(text, paths.registry)
    ctx = services.Context(paths, engine.reg, engine)
    if lent:
        assert loans.borrow(ctx, alice(engine), {"count": "1"})["lent"] == "1"
        assert "loan-gpu1" in engine.instance["devices"]
    else:  # a host process on it: not free, as on one host
        with pytest.raises(GpushellError, match="none free"):
            loans.borrow(ctx, alice(engine), {"count": "1"})
        assert loanstore.read(paths).loans == ()
