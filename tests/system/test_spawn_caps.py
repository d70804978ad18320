"""Capped output, deadlines and tool messages: spawn.run and runner."""

from __future__ import annotations

import os
import resource
import time

import pytest

from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.system import runner, spawn
from gpushell.system.environment import SAFE_ENV

FLOOD = "head -c 300000000 /dev/zero"  # 300 MB: far more than any cap


def test_capped_keeps_the_first_bytes_and_counts_the_rest() -> None:
    capped = spawn.Capped(5)
    for chunk in (b"abc", b"defg", b"hij"):
        capped.add(chunk)
    assert (capped.text(), capped.kept, capped.dropped) == ("abcde", 5, 5)


def test_run_keeps_the_cap_of_a_flood_and_drains_the_rest() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, out, err = spawn.run(["/bin/sh", "-c", f"{FLOOD}; {FLOOD} >&2; echo end"], SAFE_ENV,
                                 timeout=60, max_output=1024)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (status, len(out), len(err)) == (0, 1024, 1024)
    assert after - before < 50_000  # KiB: the 600 MB went through, never into memory


def test_run_default_cap_is_bounded() -> None:
    _, out, _ = spawn.run(["/bin/sh", "-c", "head -c 1000000 /dev/zero"], SAFE_ENV, timeout=30)
    assert len(out) == spawn.DEFAULT_MAX_OUTPUT


def test_a_flood_that_never_ends_ends_at_its_timeout_and_is_reaped() -> None:
    began = time.monotonic()
    with pytest.raises(spawn.Timeout):
        spawn.run(["/usr/bin/yes"], SAFE_ENV, timeout=0.5, max_output=10)
    assert time.monotonic() - began < 5


def test_a_child_keeping_its_streams_open_elsewhere_still_meets_the_timeout() -> None:
    # The shell ends at once; its background sleep holds the pipes open.
    began = time.monotonic()
    with pytest.raises(spawn.Timeout):
        spawn.run(["/bin/sh", "-c", "sleep 30 & exec sleep 30"], SAFE_ENV, timeout=0.3)
    assert time.monotonic() - began < 5


def test_an_exception_in_the_tick_kills_the_child() -> None:
    def boom(_elapsed: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        spawn.run(["/bin/sh", "-c", "echo $$ >&2; exec sleep 30"], SAFE_ENV, tick=boom, interval=0.05)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # nothing of ours left, not even a zombie


def test_runner_passes_the_cap() -> None:
    assert len(runner.run(["/bin/sh", "-c", FLOOD], max_output=100).stdout) == 100
    assert len(runner.run(["/bin/sh", "-c", "head -c 100000 /dev/zero"]).stdout) == runner.DEFAULT_MAX_OUTPUT


@pytest.fixture
def student_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_quote_tools", [False])


@pytest.mark.usefixtures("student_messages")
def test_for_students_a_failure_names_the_tool_only() -> None:
    with pytest.raises(GpushellError) as raised:
        runner.run(["/bin/sh", "-c", "echo /var/lib/lxc/alice/rootfs: denied >&2; exit 3"])
    assert raised.value.user_message == "sh failed; the details are in the system log"
    assert "/var/lib/lxc/alice/rootfs: denied" in raised.value.log_message
    with pytest.raises(GpushellError) as missing:
        runner.run(["/nonexistent/dir/tool"])
    assert missing.value.user_message == "could not run tool"
    assert "/nonexistent/dir" in missing.value.log_message


def test_for_students_switch_changes_only_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_quote_tools", [True])
    runner.for_students()
    assert runner._quote_tools == [False]


@pytest.fixture
def deadline() -> object:
    yield runner.set_deadline
    runner.set_deadline(None)


def test_a_deadline_shortens_every_timeout(deadline: object) -> None:
    runner.set_deadline(0.5)
    began = time.monotonic()
    with pytest.raises(runner.Deadline) as raised:
        runner.run(["/bin/sleep", "30"], timeout=60)
    assert time.monotonic() - began < 3
    assert raised.value.status == ExitStatus.TIMEOUT
    assert "sleep" in raised.value.log_message and "/" not in raised.value.user_message
    with pytest.raises(runner.Deadline):  # passed: nothing more runs
        runner.run(["/bin/true"])


def test_a_program_own_timeout_within_the_deadline_is_a_plain_failure(deadline: object) -> None:
    runner.set_deadline(60)
    with pytest.raises(GpushellError) as raised:
        runner.run(["/bin/sleep", "30"], timeout=0.2)
    assert not isinstance(raised.value, runner.Deadline)
    assert 0 < (runner.remaining() or 0) <= 60


def test_no_deadline_means_the_timeout_alone() -> None:
    assert runner.remaining() is None and runner.bounded(7.0) == 7.0


def _interrupting_tick(_elapsed: float) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(("finish", "survives"), [(True, True), (False, False)])
def test_a_ctrl_c_leaves_the_child_running_only_when_asked(tmp_path, finish: bool, survives: bool) -> None:
    done = tmp_path / "done"
    argv = ["/bin/sh", "-c", f"sleep 0.5; : > {done}"]
    with pytest.raises(KeyboardInterrupt):
        spawn.run(argv, {"PATH": "/bin"}, _interrupting_tick, interval=0.01, finish_on_interrupt=finish)
    time.sleep(1.0)
    assert done.exists() == survives
