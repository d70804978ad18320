"""Property: whatever a student types at the menu, only allow-listed actions reach the helper.

The menu loop (`Session.interactive`) reads from a stream built like the real
sys.stdin (a TextIOWrapper over bytes, universal newlines, surrogateescape as
under the C.UTF-8 locale the login shell gets), and the one OS boundary, the
root helper call `Session.helper`, is replaced by a recorder that answers
with a fixed status dict.
"""

from __future__ import annotations

import io
import re
import signal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpushell.core.errors import ExitStatus
from gpushell.core.paths import Paths
from gpushell.student import shell
from gpushell.student.shell import MAX_LINE, Session, Terminal
from gpushell.system import audit

ALLOWED_VERBS = {
    "login", "status", "start", "stop", "restart", "gpus", "help", "snapshot", "snapshots", "restore",
    "delete-snapshot", "rebuild", "keys",
}  # fmt: skip
NUMBERED = (
    "status", "start", "stop", "restart", "gpus", "snapshot", "snapshots", "restore", "delete-snapshot",
    "rebuild", "keys", "help", "quit",
)  # fmt: skip
SNAPSHOT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
STATUS = {
    "user": "alice",
    "host": "gpu1.example",
    "port": 22001,
    "container": "alice",
    "ip": "10.0.3.2",
    "state": "RUNNING",
    "idle_timeout": 0,  # no alarm in a unit test
    "started": False,
    "disabled": "borrow,extend,return",  # a lab without `lending:`, as services.describe says
}
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP, signal.SIGQUIT, signal.SIGALRM)


class PipeText(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


class PipeOut(io.StringIO):
    def isatty(self) -> bool:
        return False


def expected_actions(data: bytes) -> list[str]:
    """An independent model of the menu: which helper verbs the lines must cause."""
    text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]  # the last "line" after the final newline is end of input
    # Overlong lines are cut and never a valid choice or answer.
    lines = ["\0" if len(line) >= MAX_LINE else line for line in lines]
    actions = ["login"]
    while lines:
        choice = lines.pop(0).strip().lower()
        digits = choice and len(choice) <= 3 and all(c in "0123456789" for c in choice)
        if digits and 1 <= int(choice) <= len(NUMBERED):
            choice = NUMBERED[int(choice) - 1]  # "1", "01", "006"
        if choice in ("quit", "exit", "logout", "q"):
            break
        if choice == "snapshot":  # asks for a name: empty or a valid one
            if lines:
                name = lines.pop(0).strip()
                if name == "" or SNAPSHOT_NAME.fullmatch(name):
                    actions.append("snapshot")
        elif choice in ("restore", "delete-snapshot"):
            actions.append("snapshots")  # the fake helper lists none, so nothing more is asked
        elif choice == "rebuild":  # keep home? then the user name typed out
            answers = lines[:2]
            del lines[:2]
            if len(answers) == 2 and answers[1].strip() == "alice":
                actions.append("rebuild")
        elif choice in NUMBERED:
            actions.append(choice)
    return actions


def run_menu(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str], str, str]:
    calls: list[str] = []

    def fake_helper(self: Session, verb: str, progress: str = "", stdin: str | None = None) -> dict[str, Any]:
        calls.append(verb)
        return dict(STATUS)

    monkeypatch.setattr(Session, "helper", fake_helper)
    monkeypatch.setattr(audit, "record", lambda *args, **kwargs: None)
    stdin = PipeText(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    out, err = PipeOut(), PipeOut()
    term = Terminal(stdin, out, err, {"TERM": "xterm"})
    result = Session(Paths(), "alice", term).interactive()
    return result, calls, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    signal.alarm(0)


WORDS = st.sampled_from(
    [
        *NUMBERED,
        "1", "2", "3", "4", "5", "6", "7", "0", "-1", "01", "\uff11", "٣", "²",
        "STATUS", " start ", "\tstop\t", "restart;id", "status; bash", "bash", "sh", "exit",
        "logout", "q", "$(id)", "`id`", "\x1b[A", "\x1b[2J", "\x00", "\x7f", "\x04", "\x03",
        "\uff53\uff54\uff41\uff54\uff55\uff53", "statu\u017f", "status\u200b", "help\x00", "../../bin/sh",
        "alice", " alice ", "Alice", "bob", "snap1", "../snap", "n", "y", "10", "13", "14",
    ]
)  # fmt: skip
LINE = st.one_of(
    WORDS,
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
    st.builds(lambda word, n: word + " " * n, WORDS, st.integers(MAX_LINE - 10, MAX_LINE + 10)),
    st.builds(lambda n: "x" * n, st.integers(MAX_LINE - 2, 3 * MAX_LINE)),
)


def encode(lines: list[str], ending: str, final_newline: bool) -> bytes:
    text = ending.join(lines) + (ending if final_newline else "")
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(LINE, max_size=12),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    final_newline=st.booleans(),
)
def test_menu_only_requests_allowed_actions(monkeypatch, lines, ending, final_newline):
    data = encode(lines, ending, final_newline)
    result, calls, _out, err = run_menu(data, monkeypatch)
    assert result == ExitStatus.OK
    assert set(calls) <= ALLOWED_VERBS
    assert calls[0] == "login" and "login" not in calls[1:]
    assert calls == expected_actions(data)
    assert err == ""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3 * MAX_LINE))
def test_menu_survives_arbitrary_bytes(monkeypatch, data):
    result, calls, out, _err = run_menu(data, monkeypatch)
    assert result == ExitStatus.OK
    assert set(calls) <= ALLOWED_VERBS
    assert calls == expected_actions(data)
    # one prompt before every read: the first, and one after each action
    assert out.count("gpushell>") >= len(calls)


def test_overlong_line_with_a_valid_word_runs_nothing(monkeypatch):
    data = ("1" + " " * (2 * MAX_LINE) + "\nstatus\n").encode()
    _result, calls, out, _err = run_menu(data, monkeypatch)
    assert calls == ["login", "status"]
    assert "please choose" in out


def test_quit_stops_reading(monkeypatch):
    _result, calls, _out, _err = run_menu(b"1\nquit\n2\n3\n", monkeypatch)
    assert calls == ["login", "status"]


def test_session_end_signal_in_the_loop_is_handled_by_main(monkeypatch):
    """SIGTSTP/SIGQUIT at the prompt end the session through main(), never a traceback."""

    class Raising(PipeText):
        def readline(self, size: int = -1) -> str:  # type: ignore[override]
            raise shell.SessionEnd("SIGTSTP")

    monkeypatch.setattr(Session, "helper", lambda self, verb, progress="", stdin=None: dict(STATUS))
    monkeypatch.setattr(shell, "check_installation", lambda: None)
    monkeypatch.setattr(audit, "record", lambda *args, **kwargs: None)
    monkeypatch.setattr(audit, "open_log", lambda ident: None)
    out, err = PipeOut(), PipeOut()
    term = Terminal(Raising(io.BytesIO(b""), encoding="utf-8"), out, err, {})
    assert shell.main(Paths(), ["gpushell"], term) == ExitStatus.OK
    assert "Session ended (SIGTSTP)" in out.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
