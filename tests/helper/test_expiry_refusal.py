"""An expired student's every helper verb: their container stopped, one line with the day and whom to ask."""

from __future__ import annotations

import pytest

from gpushell.core import expiry, menu, protocol
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.helper import services, verbs
from gpushell.system import registry_store
from tests.fakes import FakeBackend

TEXT = """
contact: 'Dr. Rossi, room 3.14, rossi@lab.example'
users:
  alice:
    port: 22001
    ip: 10.0.3.2
    idmap: 1000000
    expires: 2025-06-30
"""
TODAY = (2025, 7, 1)


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(run_dir=str(tmp_path / "run"))


@pytest.fixture
def driver(monkeypatch) -> FakeBackend:
    fake = FakeBackend(default="RUNNING")
    reg = parse(TEXT, "/etc/gpushell.yaml")
    monkeypatch.setattr(registry_store, "load_user", lambda paths, name: (reg, reg.users[name]))
    monkeypatch.setattr(verbs, "backend_for", lambda reg: fake)
    monkeypatch.setattr(expiry, "today", lambda now=None: TODAY)
    return fake


@pytest.fixture
def records(monkeypatch) -> list[tuple[object, ...]]:
    seen: list[tuple[object, ...]] = []
    monkeypatch.setattr(verbs.audit, "open_log", lambda ident: None)
    monkeypatch.setattr(verbs.audit, "record", lambda *args, **_: seen.append(args))
    monkeypatch.setattr(verbs, "caller_name", lambda environ: "alice")
    return seen


MESSAGE = "your account expired on 2025-06-30; ask Dr. Rossi, room 3.14, rossi@lab.example"


@pytest.mark.parametrize("verb", sorted(menu.HELPER_VERBS))
def test_every_verb_is_refused_and_the_container_stopped(paths, driver, monkeypatch, verb) -> None:
    for name in verbs.ACTIONS:  # nothing a verb does may run
        monkeypatch.setitem(verbs.ACTIONS, name, lambda ctx, user: pytest.fail("a verb ran"))
    with pytest.raises(GpushellError) as raised:
        verbs.run_action(paths, "alice", verb)
    assert raised.value.user_message == MESSAGE
    assert raised.value.status == ExitStatus.ERROR
    assert raised.value.log_message == f"{verb} refused: account expired on 2025-06-30; container stopped"
    assert driver.calls == ["stop alice"]


def test_a_stopped_container_is_left_alone(paths, driver) -> None:
    driver.states["alice"] = "STOPPED"
    with pytest.raises(GpushellError) as raised:
        verbs.run_action(paths, "alice", "login")
    assert raised.value.log_message == "login refused: account expired on 2025-06-30"
    assert driver.calls == []


def test_a_frozen_container_is_thawed_and_stopped(paths, driver) -> None:
    driver.states["alice"] = "FROZEN"
    with pytest.raises(GpushellError):
        verbs.run_action(paths, "alice", "status")
    assert driver.calls == ["unfreeze alice", "stop alice"]
    assert driver.states["alice"] == "STOPPED"


def test_main_answers_the_student_with_the_day_and_whom_to_ask(paths, driver, records, capsys) -> None:
    assert verbs.main(paths, ["gpushell-helper", "login"]) == ExitStatus.ERROR
    answer = protocol.decode(capsys.readouterr().out)
    assert answer == {"error": MESSAGE, "status": str(ExitStatus.ERROR)}
    assert records[-1][:3] == ("alice", "login", "failed")
    assert "expired on 2025-06-30" in str(records[-1][3])


def test_the_day_before_the_login_works_and_names_the_day(paths, driver, monkeypatch) -> None:
    monkeypatch.setattr(expiry, "today", lambda now=None: (2025, 6, 27))
    monkeypatch.setattr(services, "start_unless_answering", lambda ctx, user, slot: None)
    monkeypatch.setattr(services, "ensure_forward", lambda ctx, user: False)
    answer = verbs.run_action(paths, "alice", "login")
    assert (answer["expires"], answer["expires_in"]) == ("2025-06-30", 3)
    assert answer["state"] == "RUNNING" and driver.calls == []


def test_far_from_the_day_the_login_says_nothing_of_it(paths, driver, monkeypatch) -> None:
    monkeypatch.setattr(expiry, "today", lambda now=None: (2025, 6, 15))
    monkeypatch.setattr(services, "start_unless_answering", lambda ctx, user, slot: None)
    monkeypatch.setattr(services, "ensure_forward", lambda ctx, user: False)
    answer = verbs.run_action(paths, "alice", "login")
    assert "expires" not in answer and "expires_in" not in answer
