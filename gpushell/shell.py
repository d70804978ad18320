"""gpushell, the students' login shell: banner, menu, and `-c WORD`.

Runs as the student, never as root.  It reads no registry and imports no
YAML: everything privileged, and everything it shows, comes from one call
of the root helper per action.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys

from . import audit, banner, gputable, menu, protocol, spawn
from .environment import SAFE_ENV
from .errors import CONTACT_ADMIN, ExitStatus, GpushellError
from .ownership import check_owned_by_root, check_tree_owned_by_root
from .paths import DEFAULT, Paths
from .protocol import Answer

# Keep `typing` (and what it imports) off the login path: names for mypy only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

_STATUSES = frozenset(int(status) for status in ExitStatus)

SPINNER = "|/-\\"
MAX_LINE = 1024


class SessionEnd(Exception):
    """Hang-up, Ctrl-Z, Ctrl-\\, terminate or idle timeout: leave cleanly."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _end_session(signum: int, _frame: object) -> None:
    why = "idle timeout" if signum == signal.SIGALRM else signal.Signals(signum).name
    raise SessionEnd(why)


class Terminal:
    """The streams and whether to colour them (tests pass their own)."""

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO, environ: dict[str, str]) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.interactive = stdout.isatty()
        term = environ.get("TERM", "")
        colour = self.interactive and "NO_COLOR" not in environ and term not in ("", "dumb")
        self.palette = banner.Palette.ansi() if colour else banner.PLAIN

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def error(self, text: str) -> None:
        self.stderr.write(f"gpushell: {text}\n")
        self.stderr.flush()


class Spinner:
    """A progress line on a terminal while the helper works longer than 0.3 s."""

    def __init__(self, term: Terminal, text: str) -> None:
        self.term, self.text, self.frame = term, text, 0

    def tick(self, seconds: float) -> None:
        if self.text and self.term.interactive and seconds > 0.3:
            self.term.write(f"\r{self.text} {SPINNER[self.frame % 4]} {seconds:4.1f} s")
            self.frame += 1

    def clear(self) -> None:
        if self.frame:
            self.term.write("\r\033[K")


class Session:
    def __init__(self, paths: Paths, user: str, term: Terminal) -> None:
        self.paths, self.user, self.term = paths, user, term

    def helper(self, verb: str, progress: str = "", stdin: str | None = None) -> Answer:
        """Ask the root helper for verb; show a spinner on a terminal while it works."""
        argv = [self.paths.sudo, "-n", self.paths.helper, verb]
        spinner = Spinner(self.term, progress)
        try:
            data = None if stdin is None else stdin.encode()
            status, out, err = spawn.run(argv, SAFE_ENV, spinner.tick, stdin=data)
        except OSError as exc:
            raise GpushellError(CONTACT_ADMIN, f"cannot run {argv}: {exc}", ExitStatus.HELPER) from None
        finally:
            spinner.clear()
        answer = protocol.decode(out)
        if "error" in answer:
            code = answer.get("status", "")
            raise GpushellError(
                answer["error"],
                f"helper {verb}: {answer['error']}",
                ExitStatus(int(code)) if code.isdigit() and int(code) in _STATUSES else ExitStatus.ERROR,
            )
        if status != 0 or "state" not in answer:
            raise GpushellError(
                CONTACT_ADMIN,
                f"helper {verb} exited {status}: {audit.clean(err.strip(), 300)}",
                ExitStatus.HELPER,
            )
        return answer

    def act(self, action: str, argument: str = "") -> None:
        """Run one allowed action and print its result."""
        p = self.term.palette
        if action == menu.KILL_COMMAND:
            self.kill_gpu_process(int(argument))
            return
        if action == "gpus":
            self.gpus()
            return
        progress = {
            "start": "Starting your container",
            "restart": "Restarting your container",
            "stop": "Stopping your container",
        }.get(action, "")
        info = self.helper(action, progress)
        if action == "help":
            self.term.write(f"Connect:         {banner.connect_command(info)}\n" + banner.help_text(info, p))
        else:
            self.term.write(banner.status(info, p))
        audit.record(self.user, action, "ok")

    def gpus(self) -> list[int]:
        """Show the GPU table; return the PIDs of the student's own GPU processes, numbered from 1."""
        info = self.helper("gpus", "Asking the GPUs")
        self.term.write(gputable.render(info, self.term.palette))
        audit.record(self.user, "gpus", "ok", info.get("state", ""))
        return gputable.own_pids(gputable.decode(info))

    def kill_gpu_process(self, pid: int) -> None:
        """Ask the helper to end one GPU process; it checks, as root, that it is the student's."""
        info = self.helper("gpu-kill", stdin=f"{pid}\n")
        self.term.write(f"Sent SIGTERM to your process {info.get('killed', pid)}.\n")
        audit.record(self.user, "gpu-kill", "ok", str(pid))

    def offer_kill(self, pids: list[int], idle: int) -> None:
        """After the table: end one of the student's own processes, chosen by its number."""
        if not pids:
            return
        self.term.write(
            f"End one of YOUR processes: enter its number (1-{len(pids)}) from the list, "
            "or press Enter to go back: "
        )
        line = self._read_line(idle)
        number = menu.decide_kill_choice(line or "", len(pids))
        if number is None:
            if line and line.strip():
                self.term.write("Nothing ended.\n")
            return
        self.kill_gpu_process(pids[number - 1])

    def interactive(self) -> int:
        term, p = self.term, self.term.palette
        info = self.helper("login", progress="Starting your container")
        audit.record(self.user, "login", "ok", f"started={info.get('started')}")
        term.write(banner.banner(info, p) + banner.menu(p))
        idle = int(info.get("idle_timeout", 0))
        while True:
            term.write(f"{p.bold}gpushell>{p.reset} ")
            line = self._read_line(idle)
            if line is None:
                term.write("\n")
                return ExitStatus.OK
            decision = menu.decide_choice(line)
            if decision.action is None:
                term.write(decision.reason + "\n")
            elif decision.action == "quit":
                return ExitStatus.OK
            else:
                try:
                    if decision.action == "gpus":
                        self.offer_kill(self.gpus(), idle)
                    else:
                        self.act(decision.action)
                except GpushellError as exc:
                    audit.record(self.user, decision.action, "failed", exc.log_message, warning=True)
                    term.error(exc.user_message)

    def _read_line(self, idle_timeout: int) -> str | None:
        """One menu line, or None at end of input; overlong lines are cut."""
        signal.alarm(idle_timeout)
        try:
            line = self.term.stdin.readline(MAX_LINE)
        finally:
            signal.alarm(0)
        if not line:
            return None
        if not line.endswith("\n") and len(line) >= MAX_LINE:
            while True:  # drain the rest of the overlong line
                rest = self.term.stdin.readline(MAX_LINE)
                if not rest or rest.endswith("\n"):
                    break
            return "\0"  # never a valid choice
        return line


def check_installation() -> None:
    """Refuse to run code that a non-root user could have changed."""
    check_tree_owned_by_root(os.path.dirname(os.path.abspath(__file__)))
    check_owned_by_root(os.path.abspath(sys.argv[0]))


def main(paths: Paths = DEFAULT, argv: list[str] | None = None, term: Terminal | None = None) -> int:
    argv = sys.argv if argv is None else argv
    term = term or Terminal(sys.stdin, sys.stdout, sys.stderr, dict(os.environ))
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP, signal.SIGQUIT, signal.SIGALRM):
        signal.signal(signum, _end_session)
    audit.open_log(paths.syslog_ident)
    user = "?"
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
        args = argv[1:]
        if not args:
            check_installation()
            return Session(paths, user, term).interactive()
        if len(args) == 2 and args[0] == "-c":
            decision = menu.decide_command(args[1])
            if decision.action is None:
                audit.record(user, "command", "refused", args[1], warning=True)
                term.error(decision.reason)
                return ExitStatus.USAGE
            check_installation()
            Session(paths, user, term).act(decision.action, decision.argument)
            return ExitStatus.OK
        audit.record(user, "arguments", "refused", " ".join(args), warning=True)
        term.error("this account only offers the gpushell menu; try: ssh HOST help")
        return ExitStatus.USAGE
    except GpushellError as exc:
        audit.record(user, "session", "failed", exc.log_message, warning=True)
        term.error(exc.user_message)
        return exc.status
    except KeyboardInterrupt:
        term.write("\n")
        return ExitStatus.INTERRUPTED
    except SessionEnd as end:
        audit.record(user, "session", "ended", end.why)
        # The terminal may be gone (hang-up); contextlib.suppress would cost logins an import.
        try:  # noqa: SIM105
            term.write(f"\nSession ended ({end.why}).\n")
        except OSError:
            pass
        return ExitStatus.OK
    except Exception as exc:  # fail closed: never a traceback
        audit.record(user, "session", "crashed", f"{type(exc).__name__}: {exc}", warning=True)
        term.error(CONTACT_ADMIN)
        return ExitStatus.HELPER
