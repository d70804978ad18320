"""shell: colour decisions and the refusals that must never run anything."""

from __future__ import annotations

import io
import signal
import subprocess

import pytest

from gpushell.core.errors import ExitStatus
from gpushell.student import shell
from gpushell.student.banner import PLAIN, Palette
from gpushell.student.shell import Terminal, main


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


class PipeIO(io.StringIO):
    def isatty(self) -> bool:
        return False


SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP, signal.SIGQUIT, signal.SIGALRM)


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def no_processes(monkeypatch):
    """Fail if anything is started; main() swallows exceptions, so calls are also recorded."""
    started: list[object] = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise AssertionError(f"a process was started: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(shell, "check_installation", lambda: started.append("check_installation"))
    yield
    assert started == []


def terminal(stdout=None, environ=None) -> tuple[Terminal, io.StringIO, io.StringIO]:
    out = stdout if stdout is not None else PipeIO()
    err = PipeIO()
    return Terminal(PipeIO(), out, err, environ if environ is not None else {"TERM": "xterm"}), out, err


def test_colour_on_a_terminal():
    term, _, _ = terminal(TtyIO(), {"TERM": "xterm-256color"})
    assert term.interactive is True
    assert term.palette == Palette.ansi()
    assert term.palette != PLAIN


@pytest.mark.parametrize(
    "environ",
    [
        {"TERM": "xterm", "NO_COLOR": ""},
        {"TERM": "xterm", "NO_COLOR": "1"},
        {"TERM": "dumb"},
        {"TERM": ""},
        {},
    ],
)
def test_no_colour_on_a_terminal(environ):
    term, _, _ = terminal(TtyIO(), environ)
    assert term.interactive is True
    assert term.palette == PLAIN


def test_no_colour_without_a_terminal():
    term, _, _ = terminal(PipeIO(), {"TERM": "xterm"})
    assert term.interactive is False
    assert term.palette == PLAIN


def test_terminal_write_and_error():
    term, out, err = terminal()
    term.write("hello")
    term.error("something failed")
    assert out.getvalue() == "hello"
    assert err.getvalue() == "gpushell: something failed\n"


ALLOWED = (
    "(allowed commands: status, start, stop, restart, gpus, snapshots, keys, help, snapshot [NAME], "
    "restore NAME --yes, delete-snapshot NAME --yes, rebuild [--wipe-home] --yes, kill-gpu-process PID, "
    "borrow N [DURATION] [--wait], extend GPU DURATION, return GPU|all)"
)
REFUSED = f"gpushell: bash: not allowed here {ALLOWED}\n"


def test_main_refuses_command(no_processes):
    term, out, err = terminal()
    assert main(argv=["gpushell", "-c", "bash"], term=term) == 2
    assert main(argv=["gpushell", "-c", "bash"], term=term) == ExitStatus.USAGE
    assert err.getvalue() == REFUSED * 2
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            "status; id",
            f"status; id: not allowed here {ALLOWED}",
        ),
        (
            "/usr/lib/openssh/sftp-server",
            "file transfer to this host is not allowed (/usr/lib/openssh/sftp-server); "
            "copy files to your container's port instead",
        ),
        (
            "scp -t .",
            "file transfer to this host is not allowed (scp -t .); "
            "copy files to your container's port instead",
        ),
        ("", "an empty command is not allowed"),
        (
            "status\nid",
            f"'status\\nid': not allowed here {ALLOWED}",
        ),
    ],
)
def test_main_refuses_other_commands(no_processes, command, message):
    term, out, err = terminal()
    assert main(argv=["gpushell", "-c", command], term=term) == ExitStatus.USAGE
    assert err.getvalue() == f"gpushell: {message}\n"
    assert err.getvalue().count("\n") == 1
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["gpushell", "x", "y"],
        ["gpushell", "-c"],
        ["gpushell", "status"],
        ["gpushell", "-c", "status", "extra"],
        ["gpushell", "-l", "-c"],
        ["gpushell", "--", "status"],
    ],
)
def test_main_refuses_other_arguments(no_processes, argv):
    term, out, err = terminal()
    assert main(argv=argv, term=term) == ExitStatus.USAGE
    assert err.getvalue() == "gpushell: this account only offers the gpushell menu; try: ssh HOST help\n"
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("typed", "ended"), [("2\n", [222]), ("1\n", [111]), ("3\n", []), ("x\n", []), ("\n", [])]
)
def test_offer_kill_ends_only_the_chosen_listed_process(monkeypatch, typed, ended):
    """The number typed picks from the student's own list; anything else ends nothing."""
    from gpushell.core.paths import Paths
    from gpushell.student.shell import Session

    out = PipeIO()
    term = Terminal(PipeIO(typed), out, PipeIO(), {})
    session = Session(Paths(), "alice", term)
    calls: list[int] = []
    monkeypatch.setattr(session, "kill_gpu_process", calls.append)
    session.offer_kill([111, 222], idle=0)
    assert calls == ended
    assert "enter its number (1-2)" in out.getvalue()
