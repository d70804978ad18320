"""GPU lending's decisions (pure): who may borrow which GPU, for how long, and what a tick does.

Data in, data out: the registry, the loan book (`LoanBook`: the loans and
the line of students waiting), the time as epoch seconds, and what the host
showed (its GPUs; those with a process on them, or None where NVML did not
answer).  Nothing here reads a clock, a file or a device; loanstore.py keeps
the book, the helper and gpushell-admin act on what these functions decide.

The rules:

- Lendable: the lab's `lending.gpus` on this host, less every GPU fixed to
  a student (one with `gpus: all` fixes them all).  Free: lendable, not
  lent, and, where NVML answers, with no process on it.
- Borrow: 1 minute to the student's `max_duration`, at most
  `max_per_student` GPUs held at once, the lowest free numbers first.
  While anyone waits nobody borrows past them: the line is first come,
  first served, and its head is served (by a tick, or `serve_queue` after a
  return) as soon as enough GPUs are free for its whole request.
- Extend: only the student's own running loan, only while nobody else
  waits, and never past `max_duration` counted from the loan's start (a
  loan lasts at most that long; extending is for a loan borrowed shorter).
- Warn once, `warning_lead` before the end: 15 minutes, or a quarter of a
  loan shorter than an hour.
- A tick ends loans that expired, that sat `idle_return` with no process
  (only while NVML answers; a tick without figures counts as use), and
  those the registry no longer allows (the student gone, lending off, the
  GPU no longer lendable).  A GPU ended in a tick is granted from the next
  one on, once its processes are gone.
- The book's file is JSON (`to_json`, `from_json`): `{"format": 1, "loans":
  [...], "queue": [...]}`, read strictly, and anything unexpected refused.
"""

from __future__ import annotations

from . import expiry
from .durations import duration_text
from .errors import ExitStatus, GpushellError
from .model import LoanLimits, Registry, User
from .value import Value

TYPE_CHECKING = False  # `typing` stays off the login path
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

FORMAT = 1
MIN_LOAN = 60  # seconds: the shortest loan or extension
MAX_LOAN = 365 * 86400  # longer than any registry allows (registry.MAX_LOAN)
WARNING_LEAD = 15 * 60  # warn this long before a loan ends, or a quarter of a shorter loan
MAX_GPU = 1024  # GPU numbers are below it, as in the registry
ALL = "all"  # give_back's "every GPU I hold"
WAIT_HINT = "; add --wait to queue"
UNAVAILABLE = "GPU loans are unavailable right now; please contact your administrator."


class Loan(Value):
    """A GPU lent to a student from `started` to `ends` (epoch seconds).

    warned: the student was told the end is near; last_used: when a process
    was last seen on it (or the loan started, or NVML last said nothing), the
    start of its idle time.
    """

    __slots__ = ("ends", "gpu", "last_used", "started", "user", "warned")

    def __init__(
        self,
        user: str,
        gpu: int,
        started: float,
        ends: float,
        warned: bool = False,
        last_used: float | None = None,
    ) -> None:
        self.user, self.gpu, self.started, self.ends, self.warned = user, gpu, started, ends, warned
        self.last_used = started if last_used is None else last_used


class Waiter(Value):
    """A student in line for `count` GPUs for `duration` seconds, since `since`."""

    __slots__ = ("count", "duration", "since", "user")

    def __init__(self, user: str, count: int, duration: int, since: float) -> None:
        self.user, self.count, self.duration, self.since = user, count, duration, since


class LoanBook(Value):
    """Every loan (by GPU number) and the line of waiters (first come first)."""

    __slots__ = ("loans", "queue")

    def __init__(self, loans: Iterable[Loan] = (), queue: Iterable[Waiter] = ()) -> None:
        self.loans: tuple[Loan, ...] = tuple(sorted(loans, key=lambda loan: loan.gpu))
        self.queue: tuple[Waiter, ...] = tuple(queue)

    @property
    def lent(self) -> frozenset[int]:
        return frozenset(loan.gpu for loan in self.loans)

    def of(self, user: str) -> tuple[Loan, ...]:
        """The student's loans, by GPU number."""
        return tuple(loan for loan in self.loans if loan.user == user)

    def place(self, user: str) -> int | None:
        """The student's place in line (1: next), or None when not waiting."""
        for index, waiter in enumerate(self.queue):
            if waiter.user == user:
                return index + 1
        return None


EMPTY = LoanBook()


class Tick(Value):
    """What one tick decided: the new book, and what the caller has to do about it.

    expired, idle and revoked are loans that end now (end the student's
    processes on the GPU, take its device away); warned: loans to warn
    about (banner line, notify_command); granted: new loans from the line
    (give the device); dropped: waiters the registry no longer allows.
    """

    __slots__ = ("book", "dropped", "expired", "granted", "idle", "revoked", "warned")

    def __init__(
        self,
        book: LoanBook,
        expired: tuple[Loan, ...] = (),
        idle: tuple[Loan, ...] = (),
        revoked: tuple[Loan, ...] = (),
        warned: tuple[Loan, ...] = (),
        granted: tuple[Loan, ...] = (),
        dropped: tuple[Waiter, ...] = (),
    ) -> None:
        self.book, self.expired, self.idle, self.revoked = book, expired, idle, revoked
        self.warned, self.granted, self.dropped = warned, granted, dropped

    @property
    def ended(self) -> tuple[Loan, ...]:
        return self.revoked + self.expired + self.idle


# --- which GPUs -------------------------------------------------------------


def fixed_gpus(reg: Registry, host_gpus: Iterable[int]) -> frozenset[int]:
    """The GPUs some student has as their own (`gpus: all` holds every one of the host's)."""
    host = frozenset(host_gpus)
    fixed: set[int] = set()
    for user in reg.users.values():
        if user.gpus == "all":
            return host | fixed
        if not isinstance(user.gpus, str):
            fixed.update(user.gpus)
    return frozenset(fixed)


def lendable(reg: Registry, host_gpus: Iterable[int]) -> frozenset[int]:
    """The host's GPUs the lab lends: `lending.gpus` less every fixed GPU; none without lending."""
    if reg.lending is None:
        return frozenset()
    host = frozenset(host_gpus)
    offered = host if reg.lending.gpus == "all" else host & frozenset(reg.lending.gpus)
    return offered - fixed_gpus(reg, host)


def free_gpus(
    reg: Registry, book: LoanBook, host_gpus: Iterable[int], busy: frozenset[int] | set[int] | None
) -> tuple[int, ...]:
    """Lendable, not lent, and (when NVML answered: busy is not None) with no process, lowest first."""
    return tuple(sorted(lendable(reg, host_gpus) - book.lent - (busy or frozenset())))


# --- a student's requests ---------------------------------------------------


def allowance(reg: Registry, user: str) -> LoanLimits:
    """What the student may borrow; refused when the lab lends nothing or they are not registered."""
    entry = reg.user(user)
    if reg.lending is None:
        raise _refused("this lab does not lend GPUs", status=ExitStatus.USAGE)
    return reg.lending.limits_for(entry)


def borrow(
    reg: Registry,
    user: str,
    book: LoanBook,
    count: int,
    duration: int,
    now: float,
    free: tuple[int, ...],
) -> tuple[LoanBook, tuple[int, ...]]:
    """Lend `count` of the `free` GPUs for `duration` seconds: the new book and the GPUs lent."""
    _check_request(reg, user, book, count, duration)
    if book.queue:
        raise _refused(f"none free: {_people(len(book.queue))} waiting before you{WAIT_HINT}")
    if len(free) < count:
        raise _refused(_none_free(count, free) + WAIT_HINT)
    return _grant(book, user, free[:count], duration, now)


def wait(
    reg: Registry,
    user: str,
    book: LoanBook,
    count: int,
    duration: int,
    now: float,
    free: tuple[int, ...],
) -> tuple[LoanBook, tuple[int, ...], int]:
    """Borrow now if nobody waits and enough are free, else join the end of the line.

    Returns the new book, the GPUs lent (none when queued) and the place in
    line (0 when lent).
    """
    _check_request(reg, user, book, count, duration)
    if not book.queue and len(free) >= count:
        return (*_grant(book, user, free[:count], duration, now), 0)
    line = (*book.queue, Waiter(user, count, duration, now))
    return LoanBook(book.loans, line), (), len(line)


def leave_queue(book: LoanBook, user: str) -> tuple[LoanBook, bool]:
    """The book without the student's place in line, and whether they had one."""
    line = tuple(waiter for waiter in book.queue if waiter.user != user)
    return LoanBook(book.loans, line), len(line) != len(book.queue)


def extend(
    reg: Registry, user: str, book: LoanBook, gpu: int, duration: int, now: float
) -> tuple[LoanBook, Loan]:
    """Push the end of the student's loan of `gpu` back by `duration`: the new book and loan."""
    limits = allowance(reg, user)
    loan = next((loan for loan in book.of(user) if loan.gpu == gpu), None)
    if loan is None or loan.ends <= now:
        raise _refused(f"GPU {gpu} is not lent to you", status=ExitStatus.USAGE)
    if duration < MIN_LOAN:
        raise _refused(f"extend by at least {duration_text(MIN_LOAN)}", status=ExitStatus.USAGE)
    others = sum(1 for waiter in book.queue if waiter.user != user)
    if others:
        raise _refused(f"not extended: {_people(others)} waiting for a GPU")
    room = loan.started + limits.max_duration - loan.ends
    if duration > room:
        longest = f"a loan lasts at most {duration_text(limits.max_duration)}"
        more = f"; GPU {gpu} can be extended by {duration_text(room)} more" if room >= MIN_LOAN else ""
        raise _refused(longest + more, status=ExitStatus.USAGE)
    longer = loan.replace(ends=loan.ends + duration, warned=False)
    return LoanBook([longer if item is loan else item for item in book.loans], book.queue), longer


def give_back(book: LoanBook, user: str, which: int | str) -> tuple[LoanBook, tuple[Loan, ...]]:
    """Return one GPU the student holds, or ALL of them (and leave the line): new book, loans ended."""
    if which == ALL:
        ended = book.of(user)
        line = tuple(waiter for waiter in book.queue if waiter.user != user)
    else:
        ended = tuple(loan for loan in book.of(user) if loan.gpu == which)
        if not ended:
            raise _refused(f"GPU {which} is not lent to you", status=ExitStatus.USAGE)
        line = book.queue
    return LoanBook([loan for loan in book.loans if loan not in ended], line), ended


# --- the clock --------------------------------------------------------------


def warning_lead(loan: Loan) -> float:
    """How long before its end a loan is warned about: WARNING_LEAD, or a quarter of a short loan."""
    return min(float(WARNING_LEAD), (loan.ends - loan.started) / 4)


def tick(
    reg: Registry,
    book: LoanBook,
    now: float,
    host_gpus: Iterable[int],
    busy: frozenset[int] | set[int] | None,
) -> Tick:
    """One minute's decisions: end, warn, note use, and serve the line.

    busy: the GPUs with a process on them now, or None when NVML did not
    answer (then no loan counts as idle: unknown counts as used).
    """
    host = frozenset(host_gpus)
    allowed = lendable(reg, host | book.lent)  # a lent GPU missing from the host is not revoked for that
    revoked, expired, idle, warned, kept = [], [], [], [], []
    for loan in book.loans:
        used = busy is None or loan.gpu in busy
        gone = loan.user not in reg.users or account_expired(reg, loan.user, now)  # expired: stopped
        if reg.lending is None or gone or loan.gpu not in allowed:
            revoked.append(loan)
        elif loan.ends <= now:
            expired.append(loan)
        elif not used and reg.lending.idle_return and now - loan.last_used >= reg.lending.idle_return:
            idle.append(loan)
        else:
            if not loan.warned and now >= loan.ends - warning_lead(loan):
                loan = loan.replace(warned=True)
                warned.append(loan)
            kept.append(loan.replace(last_used=now) if used else loan)
    after = LoanBook(kept, book.queue)
    ended = frozenset(loan.gpu for loan in (*revoked, *expired, *idle))
    free = tuple(gpu for gpu in free_gpus(reg, after, host, busy) if gpu not in ended)
    served, granted, dropped = serve_queue(reg, after, now, free)
    return Tick(served, tuple(expired), tuple(idle), tuple(revoked), tuple(warned), granted, dropped)


def holds(user: User, book: LoanBook, gpu: int) -> bool:
    """Whether the GPU is the student's now: one of their own in the registry, or lent to them."""
    own = user.gpus == "all" or (not isinstance(user.gpus, str) and gpu in user.gpus)
    return own or any(loan.gpu == gpu for loan in book.of(user.name))


def account_expired(reg: Registry, user: str, now: float) -> bool:
    """Whether the student's account has expired at `now` (their helper verbs are refused, expiry.py)."""
    entry = reg.users.get(user)
    return entry is not None and expiry.is_expired(entry.expires, expiry.today(now))


def serve_queue(
    reg: Registry, book: LoanBook, now: float, free: tuple[int, ...]
) -> tuple[LoanBook, tuple[Loan, ...], tuple[Waiter, ...]]:
    """Lend to the line's head while enough GPUs are free for its whole request.

    Returns the new book, the loans made and the waiters dropped (no longer
    registered, expired, lending off, or asking past their allowance now).  A loan
    from the line starts now, for the time asked, within today's maximum.
    """
    line, granted, dropped = list(book.queue), list[Loan](), list[Waiter]()
    while line:
        head = line[0]
        try:
            limits = allowance(reg, head.user)
        except GpushellError:
            dropped.append(line.pop(0))
            continue
        if account_expired(reg, head.user, now):
            dropped.append(line.pop(0))
            continue
        if not 1 <= head.count <= limits.max_per_student - len(book.of(head.user)):
            dropped.append(line.pop(0))
            continue
        if head.count > len(free):
            break
        duration = min(head.duration, limits.max_duration)
        book, gpus = _grant(LoanBook(book.loans, line[1:]), head.user, free[: head.count], duration, now)
        granted.extend(loan for loan in book.loans if loan.gpu in gpus)
        free, line = free[head.count :], line[1:]
    return LoanBook(book.loans, line), tuple(granted), tuple(dropped)


def expired_on_boot(book: LoanBook, now: float) -> tuple[LoanBook, tuple[Loan, ...]]:
    """At boot: drop the loans that ended while the host was down; the others' idle time starts again."""
    ended = tuple(loan for loan in book.loans if loan.ends <= now)
    kept = [loan.replace(last_used=max(loan.last_used, now)) for loan in book.loans if loan.ends > now]
    return LoanBook(kept, book.queue), ended


# --- a cluster: each member lends its own GPUs ---------------------------------


def members(reg: Registry) -> dict[str, frozenset[str]]:
    """Each member's students: a GPU is lent to students on its own member alone, numbered there.

    One host is one group of every student, under the name "".
    """
    if reg.cluster is None:
        return {"": frozenset(reg.users)}
    found: dict[str, set[str]] = {name: set() for name in reg.cluster.members}
    for user in reg.users.values():
        found.setdefault(user.member, set()).add(user.name)
    return {name: frozenset(users) for name, users in found.items()}


def server_gpus(reg: Registry, host: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each server's GPUs by `members`' names: one host's own (host), or each member's in the registry."""
    if reg.cluster is None:
        return {"": host}
    return {name: member.gpus for name, member in reg.cluster.members.items()}


def on_member(reg: Registry, book: LoanBook, users: frozenset[str]) -> tuple[Registry, LoanBook]:
    """The registry and the book as one member sees them: its students, their loans and the line."""
    return (
        reg.replace(users={name: user for name, user in reg.users.items() if name in users}),
        LoanBook(
            [loan for loan in book.loans if loan.user in users],
            [waiter for waiter in book.queue if waiter.user in users],
        ),
    )


def with_member(book: LoanBook, users: frozenset[str], part: LoanBook) -> LoanBook:
    """The whole book with one member's part put back (the other members' loans and lines unchanged)."""
    return LoanBook(
        [loan for loan in book.loans if loan.user not in users] + list(part.loans),
        [waiter for waiter in book.queue if waiter.user not in users] + list(part.queue),
    )


def tick_members(
    reg: Registry,
    book: LoanBook,
    now: float,
    gpus: dict[str, tuple[int, ...]],
    busy: dict[str, frozenset[int] | None],
) -> Tick:
    """`tick` for every member's part of the book (one host: `tick` itself); gpus and busy: each
    member's (one host's under ""), a member missing from busy has no figures.

    The loans and places of students no longer registered are a part of
    their own, which `tick` revokes and drops.
    """
    if reg.cluster is None:
        return tick(reg, book, now, gpus.get("", ()), busy.get(""))
    groups = members(reg)
    known = frozenset().union(*groups.values())
    gone = frozenset(loan.user for loan in book.loans) | frozenset(waiter.user for waiter in book.queue)
    decided = Tick(book)
    for member, users in [*sorted(groups.items()), ("", gone - known)]:
        part = tick(*on_member(reg, book, users), now, gpus.get(member, ()), busy.get(member))
        decided = Tick(
            with_member(decided.book, users, part.book),
            *(getattr(decided, key) + getattr(part, key) for key in PARTS),
        )
    return decided


PARTS = ("expired", "idle", "revoked", "warned", "granted", "dropped")  # Tick's fields after the book


# --- words for the student and the lab ---------------------------------------


def warning_text(loan: Loan, now: float) -> str:
    """The banner's and `gpus`'s line for a loan about to end."""
    left = duration_text(loan.ends - now)
    return f"GPU {loan.gpu} goes back in {left}: save your work (extend it if nobody waits)"


def notify_argv(reg: Registry, loan: Loan) -> tuple[str, ...]:
    """The lab's notify_command for a warning: its words, then the student, the GPU, the end (epoch s)."""
    if reg.lending is None or not reg.lending.notify_command:
        return ()
    return (*reg.lending.notify_command, loan.user, str(loan.gpu), str(int(loan.ends)))


# --- the file's text -----------------------------------------------------------


def to_json(book: LoanBook) -> str:
    import json  # off the login path until a loan is written

    loans = [{name: getattr(loan, name) for name in Loan.__slots__} for loan in book.loans]
    queue = [{name: getattr(waiter, name) for name in Waiter.__slots__} for waiter in book.queue]
    return json.dumps({"format": FORMAT, "loans": loans, "queue": queue}, indent=1) + "\n"


def from_json(text: str, source: str = "the loan book") -> LoanBook:
    """The book in text, checked strictly: anything damaged or unexpected raises GpushellError."""
    import json

    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        return _book(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise GpushellError(UNAVAILABLE, f"{source}: damaged, refused: {exc}", ExitStatus.CONFIG) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key appears twice")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _book(data: Any) -> LoanBook:
    _fields(data, "the book", ("format", "loans", "queue"))
    if data["format"] != FORMAT or isinstance(data["format"], bool):
        raise ValueError(f"format {data['format']!r} is not {FORMAT}")
    if not isinstance(data["loans"], list) or not isinstance(data["queue"], list):
        raise ValueError("loans and queue must be lists")
    loans = [_loan(item) for item in data["loans"]]
    queue = [_waiter(item) for item in data["queue"]]
    if len({loan.gpu for loan in loans}) != len(loans):
        raise ValueError("a GPU is lent twice")
    if len({waiter.user for waiter in queue}) != len(queue):
        raise ValueError("a student waits twice")
    return LoanBook(loans, queue)


def _loan(item: Any) -> Loan:
    _fields(item, "a loan", Loan.__slots__)
    started, ends, last_used = (_time(item[key], key) for key in ("started", "ends", "last_used"))
    if not started <= ends or not started <= last_used:
        raise ValueError(f"a loan of GPU {item['gpu']!r} has its times out of order")
    if not isinstance(item["warned"], bool):
        raise ValueError("warned must be true or false")
    return Loan(
        _user(item["user"]), _whole(item["gpu"], 0, MAX_GPU - 1), started, ends, item["warned"], last_used
    )


def _waiter(item: Any) -> Waiter:
    _fields(item, "a waiter", Waiter.__slots__)
    count, duration = _whole(item["count"], 1, MAX_GPU), _whole(item["duration"], MIN_LOAN, MAX_LOAN)
    return Waiter(_user(item["user"]), count, duration, _time(item["since"], "since"))


def _fields(item: Any, what: str, names: tuple[str, ...]) -> None:
    if not isinstance(item, dict) or set(item) != set(names):
        raise ValueError(f"{what} must have exactly {', '.join(sorted(names))}")


def _whole(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not a whole number from {low} to {high}")
    return value


def _time(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**40:
        raise ValueError(f"{name} {value!r} is not a time")
    return float(value)


def _user(value: Any) -> str:
    """A name as the registry allows them ([a-z_][a-z0-9_-]{0,31}), checked without `re`."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 32
        or not (value[0] == "_" or "a" <= value[0] <= "z")
        or not all(c in "_-" or "a" <= c <= "z" or "0" <= c <= "9" for c in value)
    ):
        raise ValueError(f"{value!r} is not a user name")
    return value


# --- small helpers --------------------------------------------------------------


def _check_request(reg: Registry, user: str, book: LoanBook, count: int, duration: int) -> LoanLimits:
    """What every borrow and wait is held to: the limits, and not already in line."""
    place = book.place(user)
    if place is not None:
        raise _refused(f"you are already waiting for a GPU (place {place} in line)")
    limits = allowance(reg, user)
    if limits.max_per_student < 1:
        raise _refused("you may not borrow GPUs in this lab")
    if count < 1:
        raise _refused("borrow at least 1 GPU", status=ExitStatus.USAGE)
    if duration < MIN_LOAN:
        raise _refused(f"at least {duration_text(MIN_LOAN)} per loan", status=ExitStatus.USAGE)
    if duration > limits.max_duration:
        raise _refused(f"at most {duration_text(limits.max_duration)} per loan", status=ExitStatus.USAGE)
    held = len(book.of(user))
    if held + count > limits.max_per_student:
        have = f"; you have {held}" if held else ""
        raise _refused(f"at most {_gpus(limits.max_per_student)} at a time for you{have}")
    return limits


def _grant(
    book: LoanBook, user: str, gpus: tuple[int, ...], duration: int, now: float
) -> tuple[LoanBook, tuple[int, ...]]:
    loans = [Loan(user, gpu, now, now + duration) for gpu in gpus]
    return LoanBook((*book.loans, *loans), book.queue), gpus


def _none_free(count: int, free: tuple[int, ...]) -> str:
    if not free:
        return "none free: every GPU that can be lent is in use"
    return f"none free: {_gpus(len(free))} free, you asked for {count}"


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def _people(count: int) -> str:
    return "1 student is" if count == 1 else f"{count} students are"


def _refused(message: str, status: int = ExitStatus.ERROR) -> GpushellError:
    return GpushellError(message, f"lending: {message}", status)
