"""The login shell's self-service flows: what is asked, what reaches the helper.

The one OS boundary, `Session.helper` (sudo and the root helper), is
replaced by a recorder; everything else is the real menu loop.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from gpushell.core import protocol
from gpushell.core.paths import Paths
from gpushell.student.shell import Session, Terminal
from gpushell.system import audit

STATUS = {
    "user": "alice", "host": "gpu1", "port": "22001", "container": "alice", "ip": "10.0.3.2",
    "state": "RUNNING", "idle_timeout": "0",
}  # fmt: skip
LISTED = {
    **STATUS, "snapshots": "2", "snapshot_limit": "3",
    "snapshot0": "first|1764331200|1024|stopped", "snapshot1": "second|1764340200|2048|running",
}  # fmt: skip


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class Recorder:
    def __init__(self, answers: dict[str, dict[str, str]]) -> None:
        self.calls: list[tuple[str, dict[str, str] | None]] = []
        self.answers = answers

    def __call__(self, session: Session, verb: str, progress: str = "", stdin: str | None = None) -> Any:
        self.calls.append((verb, None if stdin is None else protocol.decode(stdin)))
        return dict(self.answers.get(verb, STATUS))


def run(lines: str, monkeypatch: pytest.MonkeyPatch, answers: dict[str, dict[str, str]] | None = None,
        argv_action: tuple[str, str] | None = None) -> tuple[Recorder, str]:  # fmt: skip
    recorder = Recorder({"snapshots": LISTED} if answers is None else answers)

    def helper(session: Session, verb: str, progress: str = "", stdin: str | None = None) -> Any:
        return recorder(session, verb, progress, stdin)

    monkeypatch.setattr(Session, "helper", helper)
    monkeypatch.setattr(audit, "record", lambda *args, **kwargs: None)
    out = Pipe()
    session = Session(Paths(), "alice", Terminal(Pipe(lines), out, Pipe(), {}))
    if argv_action:
        session.act(*argv_action)
    else:
        session.interactive()
    return recorder, out.getvalue()


def test_restore_by_number_with_the_name_typed(monkeypatch):
    recorder, out = run("restore\n2\nalice\nquit\n", monkeypatch)
    assert recorder.calls == [("login", None), ("snapshots", None),
                              ("restore", {"name": "second", "confirm": "alice"})]  # fmt: skip
    assert "This replaces everything in your container with snapshot second." in out
    assert "Type your user name (alice) to confirm: " in out
    assert "Restored snapshot second." in out


@pytest.mark.parametrize("typed", ["yes", "y", "Alice", "bob", ""])
def test_restore_not_confirmed_changes_nothing(monkeypatch, typed):
    recorder, out = run(f"8\nfirst\n{typed}\nquit\n", monkeypatch)
    assert [verb for verb, _ in recorder.calls] == ["login", "snapshots"]
    assert "Not confirmed; nothing changed." in out


def test_pick_of_an_unknown_snapshot(monkeypatch):
    recorder, out = run("delete-snapshot\n../bob/first\nquit\n", monkeypatch)
    assert [verb for verb, _ in recorder.calls] == ["login", "snapshots"]
    assert "No such snapshot; nothing changed." in out


def test_delete_snapshot(monkeypatch):
    recorder, _out = run("9\nfirst\nalice\n", monkeypatch)
    assert recorder.calls[-1] == ("delete-snapshot", {"name": "first", "confirm": "alice"})


def test_no_snapshots_asks_nothing_more(monkeypatch):
    recorder, out = run("restore\nalice\n", monkeypatch, answers={})
    assert [verb for verb, _ in recorder.calls] == ["login", "snapshots"]
    assert "You have no snapshots" in out
    assert "please choose" in out  # `alice` was read as the next menu choice


@pytest.mark.parametrize(("answer", "home"), [("", "keep"), ("y", "keep"), ("n", "wipe"), ("No", "wipe")])
def test_rebuild_asks_about_home_then_for_the_name(monkeypatch, answer, home):
    recorder, out = run(f"rebuild\n{answer}\nalice\n", monkeypatch)
    assert recorder.calls[-1] == ("rebuild", {"confirm": "alice", "home": home})
    assert ("DELETING your home" in out) is (home == "wipe")


def test_snapshot_name_asked_and_checked(monkeypatch):
    recorder, out = run("snapshot\n../../etc\nsnapshot\nbefore-upgrade\nsnapshot\n\n", monkeypatch)
    assert recorder.calls[1:] == [("snapshot", {"name": "before-upgrade"}), ("snapshot", {"name": ""})]
    assert "Not a snapshot name" in out


def test_command_forms_send_the_confirmation_themselves(monkeypatch):
    recorder, _ = run("", monkeypatch, argv_action=("restore", "first"))
    assert recorder.calls == [("restore", {"name": "first", "confirm": "alice"})]
    recorder, _ = run("", monkeypatch, argv_action=("rebuild", "--wipe-home"))
    assert recorder.calls == [("rebuild", {"confirm": "alice", "home": "wipe"})]
    repaired = {"keys": {**STATUS, "repaired": "1", "repaired0": "sshd_config reset"}}
    recorder, out = run("", monkeypatch, argv_action=("keys", ""), answers=repaired)
    assert recorder.calls == [("keys", None)]
    assert out == "  sshd_config reset\nTry again: ssh -p 22001 alice@gpu1\n"


def test_turned_off_actions_are_not_offered(monkeypatch):
    answers = {"login": {**STATUS, "disabled": "rebuild,snapshot"}}
    recorder, out = run("rebuild\n6\nquit\n", monkeypatch, answers=answers)
    assert " rebuild " not in out.split("gpushell>")[0]
    assert "rebuild is turned off on this host" in out
    assert [verb for verb, _ in recorder.calls] == ["login", "snapshots"]  # 6 is now `snapshots`
