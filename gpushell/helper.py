"""The root helper: the only privileged code a student can reach.

Run as `sudo -n gpushell-helper VERB`; the sudoers drop-in lists each verb.
The user is whoever sudo says called it (SUDO_UID), never an argument, and
only that user's registry entry is ever acted on.  The answer is a few
`key=value` lines on stdout (see protocol.py), rendered by the login shell.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys

from . import audit, protocol, registry_cache, services
from .containers import RUNNING, LxcDriver
from .errors import CONTACT_ADMIN, ExitStatus, GpushellError
from .lock import locked
from .paths import DEFAULT, Paths

TYPE_CHECKING = False  # `typing` stays off the login path
if TYPE_CHECKING:
    from collections.abc import Callable

    from .model import User

    Answer = dict[str, object]
    Action = Callable[[services.Context, User], Answer]


def _login(ctx: services.Context, user: User) -> Answer:
    started = services.ensure_running(ctx, user)
    forward_changed = services.ensure_forward(ctx, user)
    return services.describe(ctx, user, RUNNING, started=started, forward_changed=forward_changed)


def _status(ctx: services.Context, user: User) -> Answer:
    return services.describe(ctx, user)


def _stop(ctx: services.Context, user: User) -> Answer:
    ctx.driver.stop(user.container)
    return services.describe(ctx, user)


def _restart(ctx: services.Context, user: User) -> Answer:
    ctx.driver.stop(user.container)
    return _login(ctx, user)


def _owners(paths: Paths) -> dict[str, str]:
    """Container name -> registry user, for every user (the full registry: not the login path)."""
    from . import registry, registry_file

    text, _info = registry_file.read_text_and_stat(paths.registry)
    reg = registry.parse(text, paths.registry)
    return {entry.container: entry.name for entry in reg.users.values()}


def _gpus(ctx: services.Context, user: User) -> Answer:
    from . import gpustatus

    nvml = gpustatus.load_nvml()
    owners = _owners(ctx.paths) if nvml is not None else {}
    return gpustatus.status_answer(nvml, user.name, owners)


def _gpu_kill(ctx: services.Context, user: User) -> Answer:
    """SIGTERM one of the caller's GPU processes; its PID is the one line on stdin."""
    from . import gpustatus

    pid = gpustatus.parse_pid(sys.stdin.readline(gpustatus.MAX_PID_TEXT + 2))
    return gpustatus.kill(pid, user.container)


ACTIONS: dict[str, Action] = {
    "login": _login,
    "status": _status,
    "help": _status,  # help shows the student's own port and host
    "start": _login,
    "stop": _stop,
    "restart": _restart,
    "gpus": _gpus,
    "gpu-kill": _gpu_kill,
}


def caller_name(environ: dict[str, str]) -> str:
    """The invoking user's name, from SUDO_UID only."""
    if os.geteuid() != 0:
        raise GpushellError("the helper must run through sudo", "helper run without root")
    uid_text = environ.get("SUDO_UID", "")
    if not uid_text.isdigit() or int(uid_text) == 0:
        raise GpushellError(
            "the helper must be run by a student through sudo",
            f"helper called with SUDO_UID={uid_text!r}",
            ExitStatus.USAGE,
        )
    try:
        return pwd.getpwuid(int(uid_text)).pw_name
    except KeyError:
        raise GpushellError(CONTACT_ADMIN, f"SUDO_UID {uid_text} has no account") from None


def _real_user() -> str:
    """Who ran the helper when SUDO_UID could not say: the real uid."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def run_action(paths: Paths, name: str, verb: str) -> Answer:
    reg, user = registry_cache.load_user(paths, name)
    ctx = services.Context(paths, reg, LxcDriver(reg.lxcpath))
    # One action per user at a time: two logins at once start the container
    # once and leave one forward rule.
    with locked(paths.user_lock(name)):
        return ACTIONS[verb](ctx, user)


def main(paths: Paths = DEFAULT, argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    # Finish what was begun even if the student hangs up or presses Ctrl-C.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(signum, signal.SIG_IGN)
    audit.open_log(f"{paths.syslog_ident}-helper")
    name = "?"
    verb = argv[1] if len(argv) == 2 else " ".join(argv[1:])
    try:
        if len(argv) != 2 or verb not in ACTIONS:
            raise GpushellError(
                "unknown helper request", f"refused helper argv {argv[1:]!r}", ExitStatus.USAGE
            )
        name = caller_name(dict(os.environ))
        answer = run_action(paths, name, verb)
    except GpushellError as exc:
        if name == "?":  # refused before SUDO_UID named anyone: log who really ran it
            name = _real_user()
        audit.record(name, verb, "failed", exc.log_message, warning=True)
        message = exc.user_message if exc.status in (ExitStatus.ERROR, ExitStatus.TIMEOUT) else CONTACT_ADMIN
        print(protocol.encode({"error": message, "status": int(exc.status)}), end="")
        return int(exc.status)
    except Exception as exc:  # fail closed: the student sees one line, the log the rest
        audit.record(name, verb, "crashed", f"{type(exc).__name__}: {exc}", warning=True)
        print(protocol.encode({"error": CONTACT_ADMIN, "status": int(ExitStatus.HELPER)}), end="")
        return int(ExitStatus.HELPER)
    detail = " ".join(
        f"{key}={answer[key]}" for key in ("state", "port", "started", "gpus", "killed") if key in answer
    )
    audit.record(name, verb, "ok", detail)
    print(protocol.encode(answer), end="")
    return 0
