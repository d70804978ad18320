"""The resident helper: the root helper's verbs over a Unix socket, one forked child per request.

Why: a login through sudo pays for sudo and for a fresh Python interpreter
importing the helper, ~25 ms of CPU that twenty students logging in at
once pay on the same cores as their containers' boots.  The server has
imported everything once; each request gets a child of its own, forked
from it, that does exactly what `sudo gpushell-helper VERB` does
(verbs.answer) and exits.  Without the server the shell uses sudo.

Who asks is the kernel's word: the connecting process's uid from
SO_PEERCRED, never a word of the request.  The socket is root's, group
`gpushell`, mode 0660, as sudo's rule names that group.  What a caller
controls is bounded: the request (protocol.MAX_REQUEST bytes within
REQUEST_SECONDS), the children at once (per caller and in all; one past
either gets the busy line at once), and what each child does (the verbs'
own deadlines and the per-user lock, as under sudo).

Started by root alone (gpushell-helper.service runs `gpushell-helper
--serve`); a child's work goes on when the server stops or restarts, so
an upgrade restarts it without breaking a login half way.
"""

from __future__ import annotations

import contextlib
import gc
import grp
import os
import pwd
import signal
import socket
import struct
import sys
import time

from ..core import protocol
from ..core.errors import CONTACT_ADMIN, ExitStatus, GpushellError
from ..system import audit
from ..system.environment import SAFE_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.paths import Paths

    # verbs' answer to one request: (paths, argv's words, stdin, who asked) -> exit status
    Respond = Callable[[Paths, list[str], str, Callable[[], str]], int]

REQUEST_SECONDS = 10.0  # to send the request whole: a login's shell sends it at once
MAX_CHILDREN = 128  # requests worked on at once, all callers together
MAX_PER_CALLER = 8  # and from one uid: a student's few logins, not a flood
BUSY = "busy: too many of your actions are running at once; try again in a minute"
# What the verbs import when they run (beyond verbs' own imports), imported once here rather than in
# every child: the registry's slow path after a change (PyYAML), the ruleset checks, both backends, GPUs,
# a cold start's wait (ctypes for setns).
PRELOADED = (
    "gpushell.core.registry",
    "gpushell.core.chaincheck",
    "gpushell.system.nftrun",
    "gpushell.containers.lxc",
    "gpushell.system.listeners",
    "ctypes",
    "gpushell.containers.lxcdevices",
    "gpushell.containers.storage",
    "gpushell.containers.lxd",
    "gpushell.helper.loans",
    "gpushell.gpu.gpucache",
    "lxc",
)


def serve(paths: Paths, respond: Respond, after_answer: Callable[[], None]) -> int:
    """Listen at paths.helper_socket until SIGTERM; each accepted request answered by a child.

    respond: verbs' answer to a request, written to stdout; after_answer: what
    comes once the answer is out (verbs.main's own two steps, given here so
    that the server does not import the verbs that import it).
    """
    if os.getuid() != 0 or "SUDO_UID" in os.environ:
        print("gpushell-helper --serve: root starts the server, never through sudo", file=sys.stderr)
        return int(ExitStatus.USAGE)
    os.environ.clear()  # what sudo's env_reset gives the helper
    os.environ.update(SAFE_ENV)
    os.umask(0o022)
    os.chdir("/")
    audit.open_log(f"{paths.syslog_ident}-helper")
    _preload()
    # Everything imported so far is the children's to share: out of the collector's sight, a child's
    # collection never touches (and so never copies) the server's pages.
    gc.freeze()
    listener = listen(paths.helper_socket, paths.group)
    made = os.stat(paths.helper_socket)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    children: dict[int, int] = {}  # pid -> the uid it answers
    audit.record("root", "serve", "ok", f"listening on {paths.helper_socket}")
    try:
        while True:
            _reap(children)
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                uid = peer_uid(connection)
                if not admitted(list(children.values()), uid):
                    audit.record(f"uid {uid}", "request", "refused", "busy", warning=True)
                    _busy(connection)
                    continue
                sys.stdout.flush()  # nothing of the server's own goes out on a child's answer
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    _child(paths, connection, uid, respond, after_answer)  # never returns
                children[pid] = uid
    except _Stopped:
        return 0
    finally:
        _unlink_own(paths.helper_socket, made)
        listener.close()


class _Stopped(Exception):
    pass


def _stop(_signum: int, _frame: object) -> None:
    raise _Stopped


def _preload() -> None:
    import importlib

    for name in PRELOADED:
        # python-lxc may be missing on a cluster's front door: its children import what they use.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def listen(path: str, group: str) -> socket.socket:
    """The listening socket at path: root's, group's, 0660, made anew (a stale one is removed)."""
    gid = grp.getgrnam(group).gr_gid
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(path):
            os.unlink(path)
        old_umask = os.umask(0o177)  # never reachable by others, not even between bind and chmod
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chown(path, 0, gid)
        os.chmod(path, 0o660)
        listener.listen(128)
        listener.settimeout(1.0)  # the loop reaps its children at least this often
    except BaseException:
        listener.close()
        raise
    return listener


def _unlink_own(path: str, made: os.stat_result) -> None:
    """Remove the socket file if it is still the one this server made (a newer one may have its own)."""
    with contextlib.suppress(OSError):
        if os.path.samestat(os.stat(path), made):
            os.unlink(path)


def peer_credentials(connection: socket.socket) -> tuple[int, int, int]:
    """The other end's pid, uid and gid, as the kernel recorded them at connect (or at listen)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", credentials)
    return int(pid), int(uid), int(gid)


def peer_uid(connection: socket.socket) -> int:
    """The connecting process's uid."""
    return peer_credentials(connection)[1]


def admitted(busy_uids: list[int], uid: int) -> bool:
    """Whether one more child may answer uid, with children answering busy_uids already."""
    return len(busy_uids) < MAX_CHILDREN and busy_uids.count(uid) < MAX_PER_CALLER


def caller_name(uid: int) -> str:
    """The account behind a peer uid; root and unknown uids are no student."""
    if uid == 0:
        raise GpushellError(
            "the helper answers students only", "a request from uid 0 on the socket", ExitStatus.USAGE
        )
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise GpushellError(CONTACT_ADMIN, f"peer uid {uid} has no account") from None


def _reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.pop(pid, None)


def _child(
    paths: Paths, connection: socket.socket, uid: int, respond: Respond, after_answer: Callable[[], None]
) -> None:
    """Answer one request as `sudo gpushell-helper VERB` would, with stdout on the connection; exit."""
    status = int(ExitStatus.HELPER)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            words, stdin = _read_request(connection)
        except (OSError, ValueError) as exc:
            audit.record(f"uid {uid}", "request", "failed", f"unreadable request: {exc}", warning=True)
            status = int(ExitStatus.USAGE)
            _send(connection, protocol.encode({"error": "unknown helper request", "status": status}))
            return
        connection.settimeout(None)
        os.dup2(connection.fileno(), 1)
        status = respond(paths, words, stdin, lambda: caller_name(uid))
        sys.stdout.flush()
    except BaseException as exc:
        audit.record(f"uid {uid}", "request", "crashed", f"{type(exc).__name__}: {exc}", warning=True)
    finally:
        _finish(connection, status, after_answer)


def _read_request(connection: socket.socket) -> tuple[list[str], str]:
    """The request's verb (as argv's words) and stdin, read to the caller's end of it, bounded."""
    deadline = time.monotonic() + REQUEST_SECONDS
    data = b""
    while len(data) <= protocol.MAX_REQUEST:
        connection.settimeout(max(0.01, deadline - time.monotonic()))  # the whole request, not each piece
        chunk = connection.recv(protocol.MAX_REQUEST + 1)
        if not chunk:
            break
        data += chunk
    verb, stdin = protocol.split_request(data)
    return [verb], stdin


def _busy(connection: socket.socket) -> None:
    """Tell a caller past its bound so, without waiting for it: what it sent so far is read first,
    since closing on unread bytes would reset the connection before the caller reads the line."""
    connection.setblocking(False)
    with contextlib.suppress(OSError):
        connection.recv(protocol.MAX_REQUEST + 1)
    _send(connection, protocol.encode({"error": BUSY, "status": int(ExitStatus.ERROR)}))


def _send(connection: socket.socket, text: str) -> None:
    with contextlib.suppress(OSError):  # the caller left: nobody to tell
        connection.settimeout(REQUEST_SECONDS)
        connection.sendall(text.encode())


def _finish(connection: socket.socket, status: int, after_answer: Callable[[], None]) -> None:
    """Hang up (the shell has its answer), do what comes after the answer, exit."""
    with contextlib.suppress(OSError):  # the caller left before reading it
        sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    connection.close()
    with contextlib.suppress(Exception):  # nobody waits for it
        after_answer()
    os._exit(status)
