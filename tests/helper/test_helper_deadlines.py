"""verbs.run_action: the user lock is waited for a bounded time, every verb has a deadline."""

from __future__ import annotations

import fcntl
import os
import time
from types import SimpleNamespace

import pytest

from gpushell.core import protocol
from gpushell.core.errors import ExitStatus
from gpushell.core.paths import Paths
from gpushell.helper import verbs
from gpushell.system import registry_store, runner
from gpushell.system.lock import Busy
from tests.fakes import FakeBackend


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(run_dir=str(tmp_path / "run"))


@pytest.fixture
def driver(monkeypatch) -> FakeBackend:
    fake = FakeBackend(default="RUNNING")
    reg = SimpleNamespace(disabled_actions=frozenset(), lxcpath="/var/lib/lxc", start_timeout=5.0)
    user = SimpleNamespace(name="alice", container="alice", expires=None)
    monkeypatch.setattr(registry_store, "load_user", lambda paths, name: (reg, user))
    monkeypatch.setattr(verbs, "backend_for", lambda reg: fake)
    return fake


@pytest.fixture
def records(monkeypatch) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(verbs.audit, "open_log", lambda ident: None)
    monkeypatch.setattr(verbs.audit, "record", lambda *args, **_: seen.append(args))
    monkeypatch.setattr(verbs, "caller_name", lambda environ: "alice")
    monkeypatch.setattr(runner, "_quote_tools", [True])  # main() turns it off: restored after
    return seen


def hold(path: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_every_verb_has_a_deadline_and_a_lock_wait() -> None:
    for verb in verbs.ACTIONS:
        assert 0 < verbs.work_deadline(verb, 60) <= 1600
        assert 0 < verbs.lock_wait(verb, 60) <= 90
    # A second login waits for the first one's start; a destructive verb does not queue.
    assert verbs.lock_wait("login", 60) > 60 and verbs.lock_wait("rebuild", 60) <= 3
    assert verbs.work_deadline("login", 60) > 60  # sshd's wait fits in it


@pytest.mark.usefixtures("driver")
def test_a_held_user_lock_means_busy(paths, monkeypatch) -> None:
    monkeypatch.setitem(verbs.ACTIONS, "stop", lambda ctx, user: {"state": "STOPPED"})
    holder = hold(paths.user_lock("alice"))
    began = time.monotonic()
    with pytest.raises(Busy) as raised:
        verbs.run_action(paths, "alice", "stop")
    assert verbs.OTHER_WAIT <= time.monotonic() - began < verbs.OTHER_WAIT + 1
    assert raised.value.user_message.startswith("busy: another action of yours is running")
    os.close(holder)
    assert verbs.run_action(paths, "alice", "stop") == {"state": "STOPPED"}


@pytest.mark.usefixtures("driver")
def test_main_answers_busy_with_a_non_zero_status(paths, records, monkeypatch, capsys) -> None:
    monkeypatch.setattr(verbs, "OTHER_WAIT", 0.1)
    holder = hold(paths.user_lock("alice"))
    assert verbs.main(paths, ["gpushell-helper", "rebuild"]) == ExitStatus.ERROR
    answer = protocol.decode(capsys.readouterr().out)
    assert answer["error"].startswith("busy: another action of yours is running")
    assert records[-1][:3] == ("alice", "rebuild", "failed")
    os.close(holder)


@pytest.mark.usefixtures("driver")
def test_a_program_past_the_deadline_ends_the_verb_with_timeout(paths, records, monkeypatch, capsys) -> None:
    monkeypatch.setitem(verbs.WORK_SECONDS, "status", 0.5)
    monkeypatch.setitem(
        verbs.ACTIONS, "status", lambda ctx, user: runner.run(["/bin/sleep", "30"], timeout=60)
    )
    began = time.monotonic()
    assert verbs.main(paths, ["gpushell-helper", "status"]) == ExitStatus.TIMEOUT
    assert time.monotonic() - began < 3
    answer = protocol.decode(capsys.readouterr().out)
    assert answer["status"] == str(ExitStatus.TIMEOUT) and "took too long" in answer["error"]
    assert runner.remaining() is None  # nothing left over for whoever runs next


@pytest.mark.usefixtures("driver")
def test_the_alarm_ends_a_verb_stuck_outside_any_program(paths, records, monkeypatch, capsys) -> None:
    monkeypatch.setitem(verbs.WORK_SECONDS, "status", 1)
    monkeypatch.setattr(verbs, "ALARM_GRACE", 0)
    monkeypatch.setitem(verbs.ACTIONS, "status", lambda ctx, user: time.sleep(30))
    began = time.monotonic()
    assert verbs.main(paths, ["gpushell-helper", "status"]) == ExitStatus.TIMEOUT
    assert time.monotonic() - began < 3
    # The lock is free again at once.
    fd = os.open(paths.user_lock("alice"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_a_snapshot_past_its_deadline_leaves_no_frozen_container(paths, driver, records, monkeypatch) -> None:
    def stuck_while_frozen():
        driver.states["alice"] = "FROZEN"
        return runner.run(["/bin/sleep", "30"])

    import gpushell.containers.snapshots

    monkeypatch.setattr(
        gpushell.containers.snapshots, "create", lambda reg, user, drv, name: stuck_while_frozen()
    )
    monkeypatch.setattr(verbs, "_request", lambda: {})
    monkeypatch.setitem(verbs.WORK_SECONDS, "snapshot", 0.3)
    assert verbs.main(paths, ["gpushell-helper", "snapshot"]) == ExitStatus.TIMEOUT
    assert driver.calls == ["unfreeze alice"]
    assert not os.path.exists(paths.freeze_marker("alice"))
