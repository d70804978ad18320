"""gpushell, the students' login shell: banner, menu, and `-c WORD`.

Runs as the student, never as root.  It reads no registry and imports no
YAML: everything privileged, and everything it shows, comes from one call
of the root helper per action.
"""

from __future__ import annotations

import os
import pwd
import sys

from ..core import gputable, menu, protocol, snapshotlist
from ..core.errors import CONTACT_ADMIN, ExitStatus, GpushellError
from ..core.paths import DEFAULT, Paths
from ..core.protocol import Answer
from ..system import audit, helperlink, loginproc, spawn
from ..system.environment import SAFE_ENV
from ..system.ownership import check_owned_by_root, check_tree_owned_by_root
from . import banner, loans, tables

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

SPINNER = "|/-\\"
PROGRESS = {
    "start": "Starting your container",
    "restart": "Restarting your container",
    "stop": "Stopping your container",
    "snapshot": "Saving your snapshot",
    "restore": "Restoring your snapshot",
    "rebuild": "Rebuilding your container",
    "keys": "Repairing your keys",
    "status": "Measuring",
}
MAX_LINE = 1024


class SessionEnd(Exception):
    """Hang-up, Ctrl-Z, Ctrl-\\, terminate or idle timeout: leave cleanly."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _end_session(signum: int, _frame: object) -> None:
    why = "idle timeout" if signum == loginproc.SIGALRM else loginproc.NAMES.get(signum, str(signum))
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
        self.idle = 0  # the idle timeout, from the login answer

    def helper(self, verb: str, progress: str = "", stdin: str | None = None) -> Answer:
        """Ask the root helper for verb; show a spinner on a terminal while it works.

        The resident helper answers when it runs; otherwise the helper runs
        through sudo.  Either way a Ctrl-C ends the shell, never the
        helper's work (a restart half done).
        """
        argv = [self.paths.sudo, "-n", self.paths.helper, verb]
        spinner = Spinner(self.term, progress)
        data = None if stdin is None else stdin.encode()
        tick = spinner.tick
        try:
            served = helperlink.ask(self.paths.helper_socket, protocol.request(verb, data or b""), tick)
            if served is None:
                status, out, err = spawn.run(argv, SAFE_ENV, tick, stdin=data, finish_on_interrupt=True)
            else:
                status, out, err = 0, served, "(the resident helper's answer)"
        except OSError as exc:
            raise GpushellError(CONTACT_ADMIN, f"cannot ask the helper: {exc}", ExitStatus.HELPER) from None
        finally:
            spinner.clear()
        answer = protocol.decode(out)
        if "error" in answer:
            code = answer.get("status", "")
            raise GpushellError(
                answer["error"],
                f"helper {verb}: {answer['error']}",
                int(code) if code.isdigit() and ExitStatus.known(int(code)) else ExitStatus.ERROR,
            )
        if status != 0 or "state" not in answer:
            raise GpushellError(
                CONTACT_ADMIN,
                f"helper {verb} exited {status}: {audit.clean(err.strip(), 300)}",
                ExitStatus.HELPER,
            )
        return answer

    def act(self, action: str, argument: str = "") -> None:
        """Run one allowed action from `-c` (arguments already checked, `--yes` given)."""
        if action == menu.KILL_COMMAND:
            self.kill_gpu_process(int(argument))
        elif action == "gpus":
            self.gpus()
        elif action == "snapshot":
            self.snapshot(argument)
        elif action in ("restore", "delete-snapshot"):
            self.named_change(action, argument)
        elif action == "rebuild":
            self.rebuild(keep_home=argument != menu.WIPE_HOME)
        elif action in menu.LENDING_WORDS:
            self.lend(action, argument)
        else:
            self.simple(action)

    def request(self, verb: str, fields: dict[str, str] | None = None) -> Answer:
        """One helper call with its arguments as `key=value` lines on its stdin; audited."""
        stdin = None if fields is None else protocol.encode(dict(fields))
        info = self.helper(verb, PROGRESS.get(verb, ""), stdin)
        audit.record(self.user, verb, "ok", fields.get("name", "") if fields else "")
        return info

    def simple(self, action: str) -> None:
        p = self.term.palette
        info = self.request(action)
        if action == "help":
            self.term.write(f"Connect:         {banner.connect_command(info)}\n" + banner.help_text(info, p))
        elif action == "snapshots":
            self.term.write(tables.snapshot_list(info, p))
        elif action == "keys":
            self.term.write(banner.repaired(info))
        else:
            self.term.write(banner.status(info, p))

    def lend(self, action: str, argument: str) -> None:
        """borrow, extend or return, with arguments decide_lending checked."""
        info = self.request(action, menu.lending_request(action, argument))
        self.term.write(loans.outcome(action, info, self.term.palette))

    def ask_lending(self, action: str) -> None:
        """The menu's borrow, extend and return: ask for what the `-c` form takes as words."""
        if action == "borrow":
            questions = [
                "How many GPUs? [1]: ",
                "For how long (like 30m, 8h or 2d; Enter: the longest allowed)? ",
            ]
        elif action == "extend":
            questions = ["Which borrowed GPU (its number)? ", "By how long (like 1h or 30m)? "]
        else:
            questions = [f"Which GPU to return (its number, or {menu.ALL_GPUS})? "]
        answers = []
        for question in questions:
            answer = self.ask(question)
            if answer is None:
                return
            answers.append(answer.strip())
        if action == "borrow":
            answers[0] = answers[0] or "1"
        decision = menu.decide_lending(action, [word for word in answers if word])
        if decision.action is None:
            self.term.write(decision.reason + "\n")
        else:
            self.lend(action, decision.argument)

    def snapshot(self, name: str) -> None:
        info = self.request("snapshot", {"name": name})
        self.term.write(
            f"Saved snapshot {info.get('made', name)}.\n" + tables.snapshot_list(info, self.term.palette)
        )

    def named_change(self, action: str, name: str) -> None:
        """restore or delete-snapshot NAME, confirmed by the caller."""
        info = self.request(action, {"name": name, "confirm": self.user})
        if action == "restore":
            self.term.write(f"Restored snapshot {name}.\n" + banner.status(info, self.term.palette))
        else:
            self.term.write(f"Deleted snapshot {name}.\n" + tables.snapshot_list(info, self.term.palette))

    def rebuild(self, keep_home: bool) -> None:
        fields = {"confirm": self.user, "home": "keep" if keep_home else "wipe"}
        info = self.request("rebuild", fields)
        kept = "your home directory kept" if keep_home else "your home directory is fresh too"
        self.term.write(f"Rebuilt your container ({kept}).\n" + banner.status(info, self.term.palette))

    def gpus(self) -> list[int]:
        """Show the GPU table; return the PIDs of the student's own GPU processes, numbered from 1."""
        info = self.helper("gpus", "Asking the GPUs")
        self.term.write(tables.gpu_table(info, self.term.palette) + loans.lines(info, self.term.palette))
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
        disabled = tuple(info.get("disabled", "").split(","))
        term.write(banner.banner(info, p) + loans.lines(info, p) + banner.menu(p, menu.offered(disabled)))
        self.idle = int(info.get("idle_timeout", 0))
        while True:
            term.write(f"{p.bold}gpushell>{p.reset} ")
            line = self._read_line(self.idle)
            if line is None:
                term.write("\n")
                return ExitStatus.OK
            decision = menu.decide_choice(line, disabled)
            if decision.action is None:
                term.write(decision.reason + "\n")
            elif decision.action == "quit":
                return ExitStatus.OK
            else:
                try:
                    self.choose(decision.action)
                except GpushellError as exc:
                    audit.record(self.user, decision.action, "failed", exc.log_message, warning=True)
                    term.error(exc.user_message)

    def choose(self, action: str) -> None:
        """A menu choice: the actions that need more ask for it, then run."""
        if action == "gpus":
            self.offer_kill(self.gpus(), self.idle)
        elif action == "snapshot":
            name = self.ask(
                f"Name for the snapshot (Enter for one with the date; {menu.SNAPSHOT_NAME_RULE}): "
            )
            if name is not None and (name == "" or menu.is_snapshot_name(name)):
                self.snapshot(name)
            elif name is not None:
                self.term.write(f"Not a snapshot name: {menu.SNAPSHOT_NAME_RULE}.\n")
        elif action in ("restore", "delete-snapshot"):
            self.pick_and_change(action)
        elif action in menu.LENDING_WORDS:
            self.ask_lending(action)
        elif action == "rebuild":
            answer = self.ask("Keep your home directory? [Y/n]: ")
            if answer is None:
                return
            keep_home = answer.lower() not in ("n", "no")
            what = "keeping" if keep_home else "DELETING"
            if self.confirm(
                f"This replaces your container with a fresh one from the template, {what} your home."
            ):
                self.rebuild(keep_home)
        else:
            self.simple(action)

    def pick_and_change(self, action: str) -> None:
        """Show the student's snapshots, take one by number or name, confirm, act."""
        info = self.request("snapshots")
        names = [snap.name for snap in snapshotlist.decode(info)]
        self.term.write(tables.snapshot_list(info, self.term.palette))
        if not names:
            return
        line = self.ask(
            f"Which snapshot to {action.replace('-snapshot', '')}? (number or name, Enter to go back): "
        )
        name = menu.decide_snapshot_pick(line or "", names)
        if name is None:
            if line:
                self.term.write("No such snapshot; nothing changed.\n")
            return
        what = (
            f"This replaces everything in your container with snapshot {name}"
            if action == "restore"
            else (f"This deletes snapshot {name}")
        )
        if self.confirm(what + "."):
            self.named_change(action, name)

    def ask(self, question: str) -> str | None:
        """A follow-up question's answer, stripped; None at end of input."""
        self.term.write(question)
        line = self._read_line(self.idle)
        return None if line is None else line.strip()

    def confirm(self, what: str) -> bool:
        """A destructive step goes ahead only when the student types their own user name."""
        line = self.ask(f"{what}\nType your user name ({self.user}) to confirm: ")
        if line is not None and menu.confirms(line, self.user):
            return True
        self.term.write("Not confirmed; nothing changed.\n")
        return False

    def _read_line(self, idle_timeout: int) -> str | None:
        """One menu line, or None at end of input; overlong lines are cut."""
        loginproc.alarm(idle_timeout)
        try:
            line = self.term.stdin.readline(MAX_LINE)
        finally:
            loginproc.alarm(0)
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
    ending = (loginproc.SIGHUP, loginproc.SIGTERM, loginproc.SIGTSTP, loginproc.SIGQUIT, loginproc.SIGALRM)
    for signum in ending:
        loginproc.handle(signum, _end_session)
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
