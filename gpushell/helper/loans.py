"""A student's GPU loans, root side: borrow, extend, return, and the loans an answer shows.

The decisions are core/lending.py's and the book is system/loanstore.py's;
this module reads the host (its GPU nodes, NVML where there is a driver),
writes the book first and then gives or takes the devices, so a helper
killed between the two leaves a loan that `tick` and `apply` finish, never
a device without a loan.
"""

from __future__ import annotations

import time

from ..containers.backend import RUNNING, end_holders
from ..core import gpureport, lending, menu
from ..core.durations import parse_duration
from ..core.errors import ExitStatus, GpushellError
from ..gpu import gpudevices
from ..system import audit, loanstore
from . import loanwatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from ..core.gpureport import GpuReport
    from ..core.model import Registry, User
    from ..gpu.gpudevices import Node
    from .context import Context

    Answer = dict[str, object]
    Result = TypeVar("Result")

GRACE = 5.0  # seconds a returned GPU's processes get between SIGTERM and SIGKILL


def host_nodes(reg: Registry) -> tuple[Node, ...]:
    return gpudevices.read_host(reg.gpu_devices, reg.driver_root).nodes


def host_gpus(nodes: tuple[Node, ...]) -> tuple[int, ...]:
    return tuple(sorted(node.gpu for node in nodes if node.gpu is not None))


def busy_gpus(reg: Registry) -> frozenset[int] | None:
    """The GPUs (by /dev/nvidiaN number) with a process on them; None where NVML cannot tell."""
    from ..gpu import gpuuse

    use = gpuuse.from_host(reg)
    return None if use is None else use.busy


def whole_registry(ctx: Context) -> Registry:
    """Every student's entry: a helper's context holds the caller's alone (registry_store.load_user),
    and which GPUs are free, and where, depends on every student's own GPUs and member."""
    from ..system import registry_store

    return registry_store.load_all(ctx.paths)


def on_members(
    reg: Registry, user: User, decide: Callable[[Registry, lending.LoanBook], tuple[lending.LoanBook, Result]]
) -> Callable[[lending.LoanBook], tuple[lending.LoanBook, Result]]:
    """A change of the book made on the part of it of the student's member (one host: all of it)."""

    def change(book: lending.LoanBook) -> tuple[lending.LoanBook, Result]:
        users = lending.members(reg)[user.member]
        part_reg, part = lending.on_member(reg, book, users)
        new, result = decide(part_reg, part)
        return lending.with_member(book, users, new), result

    return change


def _duration(request: dict[str, str], default: int | None = None) -> int:
    text = request.get("duration", "")
    if not text and default is not None:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise GpushellError(str(exc), "refused duration", ExitStatus.USAGE) from None


def _whole(text: str, usage: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= menu.MAX_GPU_DIGITS):
        raise GpushellError(usage, f"refused number {text!r}", ExitStatus.USAGE)
    return int(text)


def borrow(ctx: Context, user: User, request: dict[str, str]) -> Answer:
    reg = whole_registry(ctx)
    count = _whole(request.get("count", ""), menu.LENDING_USAGE["borrow"])
    duration = _duration(request, lending.allowance(reg, user.name).max_duration)
    queue = request.get("wait") == "1"
    nodes = host_nodes(reg)
    gpus, now = lending.server_gpus(reg, host_gpus(nodes))[user.member], time.time()
    busy = busy_gpus(reg) if reg.cluster is None else _member_busy(ctx, user, gpus, now)

    def change(reg: Registry, book: lending.LoanBook) -> tuple[lending.LoanBook, tuple[tuple[int, ...], int]]:
        free = lending.free_gpus(reg, book, gpus, busy)
        if queue:
            new, lent, place = lending.wait(reg, user.name, book, count, duration, now, free)
            return new, (lent, place)
        new, lent = lending.borrow(reg, user.name, book, count, duration, now, free)
        return new, (lent, 0)

    lent, _place = loanstore.update(ctx.paths, on_members(reg, user, change))  # a place: in loan_keys
    if lent:
        give(ctx, user, lent, nodes)
    return answer(ctx, user, lent=",".join(map(str, lent)))


def extend(ctx: Context, user: User, request: dict[str, str]) -> Answer:
    gpu = _whole(request.get("gpu", ""), menu.LENDING_USAGE["extend"])
    duration, now = _duration(request), time.time()
    decide = on_members(
        whole_registry(ctx), user, lambda reg, book: lending.extend(reg, user.name, book, gpu, duration, now)
    )
    loanstore.update(ctx.paths, decide)
    return answer(ctx, user, extended=gpu)


def give_back(ctx: Context, user: User, request: dict[str, str]) -> Answer:
    which_text = request.get("gpu", "")
    which: int | str = (
        lending.ALL if which_text == menu.ALL_GPUS else _whole(which_text, menu.LENDING_USAGE["return"])
    )
    ended = loanstore.update(ctx.paths, lambda book: lending.give_back(book, user.name, which))
    gpus = tuple(loan.gpu for loan in ended)
    quiet = _quiet(ctx, user, gpus)
    restarted = take(ctx, user, gpus, host_nodes(ctx.registry), restart=not quiet)
    if quiet:
        loanwatch.add(ctx.paths, [loanwatch.taken(user, gpu) for gpu in gpus], _warn)
    returned = ",".join(str(loan.gpu) for loan in ended)
    return answer(
        ctx, user, returned=returned, restarted="1" if restarted else "", watched="1" if quiet else ""
    )


def _quiet(ctx: Context, user: User, gpus: tuple[int, ...]) -> bool:
    """On a cluster: whether the member's fresh report shows none of the container's processes on
    any of the GPUs, so they may leave it without a restart (loanwatch.py); one request."""
    if not gpus or ctx.registry.cluster is None:  # no request to make
        return False
    return loanwatch.quiet(ctx.registry, _reports(ctx), time.time(), user, gpus)


def _member_busy(ctx: Context, user: User, gpus: tuple[int, ...], now: float) -> frozenset[int] | None:
    """The member's GPUs with a process on them, from its fresh report (the front door has no NVML
    of the members); None without one, as one host without NVML."""
    return gpureport.busy(_reports(ctx).get(user.member), now, gpus)


def _reports(ctx: Context) -> dict[str, GpuReport | None]:
    """The members' GPU reports (one request); none when the engine does not answer."""
    from ..containers.lxd import LxdDriver

    assert isinstance(ctx.driver, LxdDriver)
    try:
        return ctx.driver.gpu_reports()
    except GpushellError:
        return {}


def _warn(line: str) -> None:
    audit.record("root", "loan-watch", "failed", line, warning=True)


# --- the devices ------------------------------------------------------------


def give(ctx: Context, user: User, gpus: tuple[int, ...], nodes: tuple[Node, ...]) -> None:
    """Put the GPUs' nodes (and the shared ones they need) into the running container.

    A stopped container gets them at its next start (services.start).
    """
    if gpus and ctx.registry.cluster is not None:  # the engine keeps them, and plugs them in
        ctx.driver.lend_gpus(user, gpus)
        return
    if not gpus or ctx.driver.state(user.container) != RUNNING:
        return
    for node in gpudevices.select(nodes, gpus):
        ctx.driver.add_device(user.container, f"{ctx.registry.gpu_devices}/{node.name}", node)


def take(
    ctx: Context,
    user: User,
    gpus: tuple[int, ...],
    nodes: tuple[Node, ...],
    grace: float = GRACE,
    restart: bool = True,
) -> bool:
    """Take the GPUs' nodes out of the container and end the processes that hold them.

    The devices-cgroup rule goes first (no new open), then the processes
    with the node open are ended: an open descriptor outlives the rule.
    The shared nodes go too when the student keeps no GPU at all.  On a
    cluster the engine's devices go, and a running container restarts
    (LxdDriver.end_loans: the front door sees no process to end) unless
    not restart: the member's report showed none of its processes there
    (then the caller watches the GPUs, loanwatch.py).
    Returns whether the container restarted.
    """
    if gpus and ctx.registry.cluster is not None:
        restarted = ctx.driver.end_loans(user, gpus, restart)
        if restarted:
            audit.record(user.name, "loans", "ok", f"GPU {_listed(gpus)} taken back: container restarted")
        return restarted
    if not gpus or ctx.driver.state(user.container) != RUNNING:
        return False
    keeps = user.gpus != "none" or loanstore.read(ctx.paths).of(user.name)
    for node in gpudevices.select(nodes, gpus):
        if node.gpu is None and keeps:
            continue
        try:
            ctx.driver.remove_device(user.container, node)
        finally:  # a failure past the deny (container root broke its /dev) still ends the holders
            end_holders(ctx.driver, user.container, node, grace)
    return False


def give_lent(ctx: Context, user: User) -> None:
    """After a start: the student's loans back into the container (services.start calls this)."""
    loans = loanstore.read(ctx.paths).of(user.name)
    if loans:
        give(ctx, user, tuple(loan.gpu for loan in loans), host_nodes(ctx.registry))


# --- what the student sees --------------------------------------------------


def loan_keys(ctx: Context, user: User, now: float | None = None) -> dict[str, object]:
    """The student's loans and place in line for an answer: `loans=GPU:ENDS:WARNED,...`."""
    book = loanstore.read(ctx.paths)
    keys: dict[str, object] = {"now": int(time.time() if now is None else now)}
    mine = book.of(user.name)
    if mine:
        keys["loans"] = ",".join(f"{loan.gpu}:{int(loan.ends)}:{int(loan.warned)}" for loan in mine)
    place = book.place(user.name)
    if place is not None and ctx.registry.cluster is not None:  # their place in their member's line
        reg = whole_registry(ctx)  # only while they wait: off a login's usual path
        place = lending.on_member(reg, book, lending.members(reg)[user.member])[1].place(user.name)
    if place is not None:
        keys["queue_place"] = place
    return keys


def shown_loans(ctx: Context, user: User) -> dict[str, object]:
    """loan_keys for a login's banner: a book that cannot be read costs the banner its loan
    lines (and the log a warning), never the login."""
    try:
        return loan_keys(ctx, user)
    except GpushellError as exc:
        audit.record(user.name, "loans", "failed", exc.log_message, warning=True)
        return {}


def give_lent_after_start(ctx: Context, user: User) -> None:
    """give_lent for services.start: the container runs either way; a loan not given is logged,
    and `apply` or the student's `return` and `borrow` set it right."""
    try:
        give_lent(ctx, user)
    except GpushellError as exc:
        audit.record(
            user.name, "loans", "failed", f"loans not given at start: {exc.log_message}", warning=True
        )


def _listed(gpus: tuple[int, ...]) -> str:
    return ",".join(map(str, gpus))


def answer(ctx: Context, user: User, **extra: object) -> Answer:
    """The keys a borrow, extend or return adds to the helper's answer (verbs.py describes the rest)."""
    return {**loan_keys(ctx, user), **{key: value for key, value in extra.items() if value not in ("", None)}}
