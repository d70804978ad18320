"""The root helper: the only privileged code a student can reach.

Run as `sudo -n gpushell-helper VERB`; the sudoers drop-in lists each verb.
The user is whoever sudo says called it (SUDO_UID), never an argument, and
only that user's registry entry is ever acted on.  The answer is a few
`key=value` lines on stdout (see protocol.py), rendered by the login shell.
"""

from __future__ import annotations

import os
import pwd
import sys

from ..containers.backend import FROZEN, RUNNING
from ..containers.factory import backend_for
from ..core import expiry, menu, protocol
from ..core.errors import CONTACT_ADMIN, ExitStatus, GpushellError
from ..core.paths import DEFAULT, Paths
from ..system import audit, loginproc, registry_store, runner
from ..system.files import write_private
from ..system.lock import locked
from . import services

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..containers.lxd import LxdDriver
    from ..core.model import User

    Answer = dict[str, object]
    Action = Callable[[services.Context, User], Answer]


# What main() does once the answer is written (the GPU snapshot's refresh): nobody waits for it.
after_answer: list[Callable[[], None]] = []


def _login(ctx: services.Context, user: User) -> Answer:
    thaw_if_left_frozen(ctx, user)
    with services.boot_slot(ctx) as slot:  # taken only when the container must boot
        started = services.start_unless_answering(ctx, user, slot)
        forward_changed = services.ensure_forward(ctx, user)  # while the container boots
        if started is not None:
            services.wait_until_ready(ctx, user, slot)
    answer = services.describe(ctx, user, RUNNING, started=bool(started), forward_changed=forward_changed)
    today = expiry.today()
    if user.expires is not None and expiry.shown_soon(user.expires, today):  # the banner's last 14 days
        answer.update(expires=expiry.day_text(user.expires), expires_in=expiry.days_left(user.expires, today))
    if ctx.registry.lending is not None:  # the banner's loan lines; `json` only where the lab lends
        from . import loans

        answer.update(loans.shown_loans(ctx, user))
    if user.gpus != "none":
        answer.update(banner_gpus(ctx, user))
    return answer


def banner_gpus(ctx: services.Context, user: User) -> Answer:
    """The banner's GPU keys, from a cached snapshot (a small file read).  On one host a stale
    one is refreshed in the background once this answer is out; on a cluster the front door's
    tick keeps one per member, from the report the member publishes (gpureport.py)."""
    from ..gpu import gpucache

    if ctx.registry.cluster is not None:
        return gpucache.for_member_login(ctx.paths, user.member)
    keys, stale = gpucache.for_login(ctx.paths)
    if stale:
        after_answer.append(lambda: gpucache.refresh_in_background(ctx.paths, lambda: _owners(ctx.paths)))
    return keys


def _status(ctx: services.Context, user: User) -> Answer:
    return services.describe(ctx, user)


def _stop(ctx: services.Context, user: User) -> Answer:
    ctx.driver.stop(user.container)
    return services.describe(ctx, user)


def _restart(ctx: services.Context, user: User) -> Answer:
    ctx.driver.stop(user.container)
    return _login(ctx, user)


def _owners(paths: Paths) -> dict[str, str]:
    """Container name -> registry user, with each user's host id range (the full registry)."""
    from ..gpu import gpustatus

    reg = registry_store.load_all(paths)
    return gpustatus.Owners(
        {entry.container: entry.name for entry in reg.users.values()},
        [(entry.idmap, reg.idmap_size, entry.name) for entry in reg.users.values()],
    )


def _gpus(ctx: services.Context, user: User) -> Answer:
    if ctx.registry.cluster is not None:  # the GPUs are on a member: seen from inside the container
        from ..containers import lxdgpus

        neighbours = {
            entry.container: entry.name
            for entry in registry_store.load_all(ctx.paths).users.values()
            if entry.member == user.member
        }
        answer = lxdgpus.answer(_cluster_driver(ctx), user, neighbours)
    else:
        from ..gpu import gpucache  # NVML is asked here; the login banner's snapshot is refreshed too

        answer = gpucache.gpus_answer(ctx.paths, user.name, lambda: _owners(ctx.paths))
    if ctx.registry.lending is not None:
        from . import loans

        answer.update(loans.loan_keys(ctx, user))
    return answer


def _gpu_kill(ctx: services.Context, user: User) -> Answer:
    """SIGTERM one of the caller's GPU processes; its PID is the one line on stdin."""
    from ..gpu import gpustatus

    pid = gpustatus.parse_pid(sys.stdin.readline(gpustatus.MAX_PID_TEXT + 2))
    if ctx.registry.cluster is not None:  # a PID of the container's own, killed inside it
        from ..containers import lxdgpus

        return lxdgpus.kill(_cluster_driver(ctx), user, pid)
    return gpustatus.kill(pid, user.idmap, ctx.registry.idmap_size)


def _cluster_driver(ctx: services.Context) -> LxdDriver:
    from ..containers.lxd import LxdDriver

    assert isinstance(ctx.driver, LxdDriver)
    return ctx.driver


# Arguments come as `key=value` lines on stdin (protocol.py), never in argv:
# sudoers lists each verb exactly, and each value is checked again here.
MAX_REQUEST = 512


def _request() -> dict[str, str]:
    return protocol.decode(sys.stdin.read(MAX_REQUEST))


def _snapshot_name(request: dict[str, str]) -> str:
    name = request.get("name", "")
    if not menu.is_snapshot_name(name):
        raise GpushellError(menu.SNAPSHOT_NAME_RULE, f"refused snapshot name {name!r}", ExitStatus.USAGE)
    return name


def _confirm(request: dict[str, str], user: User) -> None:
    """Destructive verbs carry the student's own name, which the login shell got typed or `--yes`."""
    if request.get("confirm") != user.name:
        raise GpushellError("not confirmed; nothing changed", "destructive action without confirmation")


def _with_snapshots(ctx: services.Context, user: User, **extra: object) -> Answer:
    from ..containers import snapshots
    from ..core import snapshotlist

    listed = snapshots.list_snapshots(ctx.registry, user, measured=True)
    if ctx.registry.storage == "btrfs":  # sizes are what each snapshot alone keeps
        extra = {"snapshot_sizes": "own", **extra}
    return services.describe(ctx, user, **snapshotlist.encode(listed, user.snapshot_limit), **extra)


def thaw_if_left_frozen(ctx: services.Context, user: User) -> None:
    """Resume a container that a killed snapshot left frozen (one stat on the login path).

    A frozen container still completes TCP handshakes, so the readiness
    probe alone would call it ready while its sshd never answers.  Under
    the user lock no snapshot is running, so a marker left over is stale.
    """
    marker = ctx.paths.freeze_marker(user.name)
    if os.path.exists(marker):
        if ctx.driver.state(user.container) == FROZEN:
            ctx.driver.unfreeze(user.container)
        os.unlink(marker)


def _snapshot(ctx: services.Context, user: User) -> Answer:
    from ..containers import snapshots

    request = _request()
    name = _snapshot_name(request) if request.get("name") else None  # none given: one with the date
    marker = ctx.paths.freeze_marker(user.name)
    write_private(marker, "")  # removed below; only a SIGKILL can leave it
    try:
        made = snapshots.create(ctx.registry, user, ctx.driver, name)
    finally:
        os.unlink(marker)
    return _with_snapshots(ctx, user, made=made.name)


def _list_snapshots(ctx: services.Context, user: User) -> Answer:
    return _with_snapshots(ctx, user)


def _restore(ctx: services.Context, user: User) -> Answer:
    from ..containers import snapshots

    request = _request()
    name = _snapshot_name(request)
    _confirm(request, user)
    if snapshots.restore(ctx.registry, user, ctx.driver, name):
        return _login(ctx, user) | {"restored": name}
    return services.describe(ctx, user, restored=name)


def _delete_snapshot(ctx: services.Context, user: User) -> Answer:
    from ..containers import snapshots

    request = _request()
    name = _snapshot_name(request)
    _confirm(request, user)
    snapshots.delete(ctx.registry, user, name)
    return _with_snapshots(ctx, user, deleted=name)


def _rebuild(ctx: services.Context, user: User) -> Answer:
    from ..containers import rebuild
    from ..system import accounts

    request = _request()
    _confirm(request, user)
    keep_home = request.get("home", "keep") != "wipe"
    keys = accounts.existing_keys(user.name)
    if ctx.registry.cluster is not None:
        from ..containers import lxdrebuild

        lxdrebuild.rebuild(ctx.registry, user, _cluster_driver(ctx), keys, keep_home)
    else:
        rebuild.rebuild(ctx.registry, user, ctx.driver, keys, keep_home)
    return _login(ctx, user) | {"rebuilt": "kept-home" if keep_home else "wiped-home"}


def _keys(ctx: services.Context, user: User) -> Answer:
    from ..containers import keyrescue
    from ..system import accounts

    repaired = keyrescue.rescue(ctx.registry, user, ctx.driver, accounts.existing_keys(user.name))
    lines = {f"repaired{index}": protocol_line(line) for index, line in enumerate(repaired)}
    return services.describe(ctx, user, repaired=len(repaired), **lines)


def protocol_line(text: str) -> str:
    """One line of text made safe for a `key=value` answer."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200]


def _borrow(ctx: services.Context, user: User) -> Answer:
    from . import loans

    return services.describe(ctx, user, **loans.borrow(ctx, user, _request()))


def _extend(ctx: services.Context, user: User) -> Answer:
    from . import loans

    return services.describe(ctx, user, **loans.extend(ctx, user, _request()))


def _return(ctx: services.Context, user: User) -> Answer:
    from . import loans

    return services.describe(ctx, user, **loans.give_back(ctx, user, _request()))


def _status_with_usage(ctx: services.Context, user: User) -> Answer:
    from ..containers import usage

    measured = usage.container_usage(ctx.registry, user, ctx.driver, ctx.paths.disk_count(user.name))
    return services.describe(ctx, user, **measured)


ACTIONS: dict[str, Action] = {
    "login": _login,
    "status": _status_with_usage,
    "help": _status,  # help shows the student's own port and host
    "start": _login,
    "stop": _stop,
    "restart": _restart,
    "gpus": _gpus,
    "gpu-kill": _gpu_kill,
    "snapshot": _snapshot,
    "snapshots": _list_snapshots,
    "restore": _restore,
    "delete-snapshot": _delete_snapshot,
    "rebuild": _rebuild,
    "keys": _keys,
    "borrow": _borrow,
    "extend": _extend,
    "return": _return,
}
# The menu word an admin turns off (registry `disabled_actions`) for each verb.
MENU_WORD = {"gpu-kill": menu.KILL_COMMAND}


UNSAFE_MESSAGE = "that did not work; the details are in the system log for your administrator"


def without_host_paths(message: str) -> str:
    """The message, unless a word in it is an absolute path: then a plain line instead (pure).

    A student never sees where the host keeps things (a last guard behind
    every message written for students: a path that slipped into one stays
    in the log, which has the whole message).  `~/.ssh/...` is theirs.
    """
    for word in message.split():
        if word.strip("'\"`([{<:,;").startswith("/"):
            return UNSAFE_MESSAGE
    return message


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


def _named_or_real(caller: Callable[[], str]) -> str:
    try:
        return caller()
    except GpushellError:
        return _real_user()


def _real_user() -> str:
    """Who ran the helper when SUDO_UID could not say: the real uid."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


# --- deadlines and the user lock -----------------------------------------------------

# Seconds a verb may work once it holds the user lock.  Verbs that may start
# the container get the registry's start_timeout on top (STARTS); copies of
# a whole rootfs (snapshot, restore, rebuild) get the copy's own timeout.
WORK_SECONDS = {
    "login": 60, "start": 60, "restart": 100, "stop": 60,
    "status": 60, "help": 30, "gpus": 60, "gpu-kill": 30, "snapshots": 60,
    "snapshot": 1200, "restore": 1200, "delete-snapshot": 600, "rebuild": 1500, "keys": 300,
    "borrow": 60, "extend": 30, "return": 60,
}  # fmt: skip
STARTS = frozenset({"login", "start", "restart", "restore", "rebuild"})
# How long a verb waits for the user's lock.  A second login waits for the
# first one's start (one start, one forward rule); a look waits a little;
# anything else says "busy" at once rather than queue behind a long action.
JOINS = frozenset({"login", "start"})
LOOK_WAIT = 10.0
OTHER_WAIT = 3.0
BUSY = "busy: another action of yours is running; try again when it has finished"
# The alarm that ends a verb stuck outside any program (a backstop: each
# program already ends at the deadline, runner.py) comes this much later.
ALARM_GRACE = 15
# What is left to thaw a container after a verb ran out of time.
RECOVERY_SECONDS = 30.0


def work_deadline(verb: str, start_timeout: float) -> float:
    return WORK_SECONDS[verb] + (start_timeout if verb in STARTS else 0)


def lock_wait(verb: str, start_timeout: float) -> float:
    if verb in JOINS:
        return start_timeout + 30
    return LOOK_WAIT if verb in ("status", "help", "gpus", "snapshots") else OTHER_WAIT


def _alarm_ended(_signum: int, _frame: object) -> None:
    raise runner.Deadline("the helper's alarm ended the action (stuck outside any program)")


def refuse_expired(ctx: services.Context, user: User, expires: expiry.Day, verb: str) -> GpushellError:
    """An expired student's every verb: their container stopped if it runs, then one line saying why.

    Called under the user lock; the error is theirs to read (ExitStatus.ERROR),
    and the login shell prints it and ends.
    """
    stopped = ""
    if ctx.driver.may_be_running(user.container):
        runner.set_deadline(WORK_SECONDS["stop"])
        try:
            state = ctx.driver.state(user.container)
            if state == FROZEN:  # a killed snapshot's leftover: lxc-stop stops only a running one
                ctx.driver.unfreeze(user.container)
            if state in (RUNNING, FROZEN):
                ctx.driver.stop(user.container)
                stopped = "; container stopped"
        finally:
            runner.set_deadline(None)
    return GpushellError(
        expiry.expired_message(expires, ctx.registry.contact),
        f"{verb} refused: account expired on {expiry.day_text(expires)}{stopped}",
        ExitStatus.ERROR,
    )


def run_action(paths: Paths, name: str, verb: str) -> Answer:
    reg, user = registry_store.load_user(paths, name)
    if user.expires is not None and expiry.is_expired(user.expires, expiry.today()):
        # Before anything else, disabled or not: an ended account does nothing but stop.
        ctx = services.Context(paths, reg, backend_for(reg))
        with locked(paths.user_lock(name), lock_wait(verb, reg.start_timeout), BUSY):
            raise refuse_expired(ctx, user, user.expires, verb)
    word = MENU_WORD.get(verb, verb)
    if word in reg.disabled_actions:
        raise GpushellError(f"{word} is turned off on this host; ask your admin", f"{word} is disabled")
    ctx = services.Context(paths, reg, backend_for(reg))
    # One action per user at a time: two logins at once start the container
    # once and leave one forward rule.  The wait is bounded, and so is the
    # action once the lock is held; the kernel drops the lock however it ends.
    with locked(paths.user_lock(name), lock_wait(verb, reg.start_timeout), BUSY):
        return _within_deadline(ctx, user, verb, work_deadline(verb, reg.start_timeout))


def _within_deadline(ctx: services.Context, user: User, verb: str, seconds: float) -> Answer:
    runner.set_deadline(seconds)
    loginproc.handle(loginproc.SIGALRM, _alarm_ended)
    loginproc.alarm(int(seconds) + ALARM_GRACE)
    try:
        return ACTIONS[verb](ctx, user)
    except runner.Deadline:
        loginproc.alarm(0)
        _recover(ctx, user, verb)
        raise
    finally:
        loginproc.alarm(0)
        runner.set_deadline(None)


def _recover(ctx: services.Context, user: User, verb: str) -> None:
    """After a verb ran out of time: leave no container frozen (a snapshot freezes it)."""
    if verb != "snapshot" and not os.path.exists(ctx.paths.freeze_marker(user.name)):
        return
    runner.set_deadline(RECOVERY_SECONDS)
    try:
        if ctx.driver.state(user.container) == FROZEN:
            ctx.driver.unfreeze(user.container)
        if os.path.exists(ctx.paths.freeze_marker(user.name)):
            os.unlink(ctx.paths.freeze_marker(user.name))
    except (GpushellError, OSError) as exc:  # the next login's thaw_if_left_frozen tries again
        audit.record(user.name, verb, "failed", f"thaw after the deadline: {exc}", warning=True)


def main(paths: Paths = DEFAULT, argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if argv[1:] == [SERVE]:  # root starts it (gpushell-helper.service); sudo's list has no such verb
        from . import server

        return server.serve(paths, _served, _after_answer)
    # Finish what was begun even if the student hangs up or presses Ctrl-C.
    ignore_interruptions()
    audit.open_log(f"{paths.syslog_ident}-helper")
    status = answer(paths, argv[1:], lambda: caller_name(dict(os.environ)))
    _after_answer()
    return status


def _served(paths: Paths, words: list[str], stdin: str, caller: Callable[[], str]) -> int:
    """One request the resident helper's child answers, as main() answers one through sudo."""
    import io

    ignore_interruptions()
    sys.stdin = io.StringIO(stdin)
    return answer(paths, words, caller)


def _after_answer() -> None:
    for work in after_answer:
        work()


SERVE = "--serve"


def ignore_interruptions() -> None:
    for signum in (loginproc.SIGINT, loginproc.SIGHUP, loginproc.SIGQUIT, loginproc.SIGTSTP):
        loginproc.handle(signum, loginproc.SIG_IGN)


def answer(paths: Paths, words: list[str], caller: Callable[[], str]) -> int:
    """Do what words ask (one verb) for the user caller names; the answer on stdout, its exit status.

    caller: who asked, as the kernel vouches for it (sudo's SUDO_UID, the
    server's peer credentials); never a word of the request.
    """
    name = "?"
    verb = " ".join(words)
    try:
        if len(words) != 1 or verb not in ACTIONS:
            raise GpushellError("unknown helper request", f"refused helper argv {words!r}", ExitStatus.USAGE)
        name = caller()
        runner.for_students()  # a tool's stderr goes to the log, never into the answer
        done = run_action(paths, name, verb)
    except GpushellError as exc:
        if name == "?":  # refused before the caller was named: log who asked, as far as it can be told
            name = _named_or_real(caller)
        audit.record(name, verb, "failed", exc.log_message, warning=True)
        # A refusal of what the student asked (ERROR, USAGE) or a deadline is theirs to read.
        shown = (ExitStatus.ERROR, ExitStatus.USAGE, ExitStatus.TIMEOUT)
        message = exc.user_message if exc.status in shown else CONTACT_ADMIN
        message = without_host_paths(message)
        print(protocol.encode({"error": message, "status": int(exc.status)}), end="")
        return int(exc.status)
    except Exception as exc:  # fail closed: the student sees one line, the log the rest
        audit.record(name, verb, "crashed", f"{type(exc).__name__}: {exc}", warning=True)
        print(protocol.encode({"error": CONTACT_ADMIN, "status": int(ExitStatus.HELPER)}), end="")
        return int(ExitStatus.HELPER)
    detail = " ".join(
        f"{key}={done[key]}"
        for key in ("state", "port", "started", "gpus", "killed", "made", "restored", "deleted", "rebuilt")
        if key in done
    )
    audit.record(name, verb, "ok", detail)
    print(protocol.encode(done), end="")
    return 0
