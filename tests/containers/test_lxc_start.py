"""LxcDriver.start: one lxc-start, and lxc-info only when lxc-start failed."""

from __future__ import annotations

import pytest

from gpushell.containers import lxc
from gpushell.core.errors import GpushellError
from gpushell.system.runner import Result


class Recorder:
    def __init__(self, *results: Result) -> None:
        self.results = list(results)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], check: bool = True, **_: object) -> Result:
        self.calls.append(list(argv))
        return self.results.pop(0)


@pytest.fixture
def driver(tmp_path: pytest.TempPathFactory) -> lxc.LxcDriver:
    (tmp_path / "alice").mkdir()  # type: ignore[operator]
    (tmp_path / "alice" / "config").write_text("lxc.uts.name = alice\n")  # type: ignore[operator]
    return lxc.LxcDriver(str(tmp_path))


def programs(recorder: Recorder) -> list[str]:
    return [argv[0] for argv in recorder.calls]


def test_a_stopped_container_is_started_with_lxc_start_alone(driver, monkeypatch):
    recorder = Recorder(Result(0, "", ""))
    monkeypatch.setattr(lxc, "run", recorder)
    assert driver.start("alice") is True
    log = f"{driver.lxcpath}/alice/lxc.log"
    assert recorder.calls == [["lxc-start", "-P", driver.lxcpath, "-n", "alice", "-o", log, "-l", "WARN"]]


def test_a_running_container_is_left_alone_and_not_called_started(driver, monkeypatch):
    said = "lxc-start: alice: ../src/lxc/tools/lxc_start.c: main: 256 Container is already running\n"
    recorder = Recorder(Result(0, "", said))
    monkeypatch.setattr(lxc, "run", recorder)
    assert driver.start("alice") is False
    assert programs(recorder) == ["lxc-start"]


def test_a_failed_start_asks_the_state_once(driver, monkeypatch):
    recorder = Recorder(Result(1, "", "lxc-start: alice: failed to start"), Result(0, "STOPPED\n", ""))
    monkeypatch.setattr(lxc, "run", recorder)
    with pytest.raises(GpushellError) as raised:
        driver.start("alice")
    assert raised.value.user_message == "your container failed to start"
    assert "exited 1: lxc-start: alice: failed to start" in raised.value.log_message
    assert programs(recorder) == ["lxc-start", "lxc-info"]


def test_a_container_started_by_someone_else_meanwhile_is_no_failure(driver, monkeypatch):
    recorder = Recorder(Result(1, "", "busy"), Result(0, "RUNNING\n", ""))
    monkeypatch.setattr(lxc, "run", recorder)
    assert driver.start("alice") is False


def test_an_undefined_container_runs_nothing(driver, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(lxc, "run", recorder)
    with pytest.raises(GpushellError, match="does not exist"):
        driver.start("bob")
    assert recorder.calls == []
