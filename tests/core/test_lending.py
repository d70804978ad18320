"""lending: free GPUs, borrow, the line, extend, return, the tick, and the book's JSON (all pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpushell.core import lending
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.lending import EMPTY, Loan, LoanBook, Waiter
from gpushell.core.registry import parse

HOUR, DAY = 3600, 86400
NOW = 1_700_000_000.0
HOST = range(8)  # GPUs 0..7


def registry(lending_yaml: str | None = "{gpus: all}", **users: str):
    """A registry whose users are alice, bob, carol, dave (or those given), each `KEY: VALUE` extra."""
    names = users or {name: "" for name in ("alice", "bob", "carol", "dave")}
    lines = ["users:"]
    for index, (name, extra) in enumerate(names.items()):
        lines.append(
            f"  {name}: {{port: {22001 + index}, ip: 10.0.3.{2 + index}, idmap: {1000000 + index * 65536}"
        )
        lines[-1] += f", {extra}}}" if extra else "}"
    text = ("" if lending_yaml is None else f"lending: {lending_yaml}\n") + "\n".join(lines) + "\n"
    return parse(text, "/etc/gpushell.yaml")


REG = registry(
    "{gpus: [2, 3, 4], max_duration: 1d}", alice="gpus: [0]", bob="gpus: [1, 2]", carol="", dave=""
)


def refused(call, *args, **kwargs) -> GpushellError:
    with pytest.raises(GpushellError) as info:
        call(*args, **kwargs)
    return info.value


# --- which GPUs are free ------------------------------------------------------


def test_lendable_is_the_labs_list_on_this_host_less_every_fixed_gpu() -> None:
    assert lending.lendable(REG, HOST) == {3, 4}  # 2 is bob's
    assert lending.lendable(REG, [3, 5]) == {3}  # 4 is not on this host
    assert lending.lendable(registry("{}", alice="gpus: [0]", bob=""), range(3)) == {1, 2}


def test_a_student_with_every_gpu_leaves_none_to_lend() -> None:
    reg = registry("{gpus: all}", alice="gpus: all", bob="")
    assert lending.fixed_gpus(reg, HOST) == set(HOST)
    assert lending.lendable(reg, HOST) == frozenset()


def test_no_lending_section_lends_nothing() -> None:
    reg = registry(None)
    assert reg.lending is None
    assert lending.lendable(reg, HOST) == frozenset()
    error = refused(lending.borrow, reg, "alice", EMPTY, 1, HOUR, NOW, (3,))
    assert error.user_message == "this lab does not lend GPUs"


def test_free_leaves_out_lent_gpus_and_busy_ones_where_nvml_answers() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + HOUR)])
    assert lending.free_gpus(REG, book, HOST, None) == (4,)
    assert lending.free_gpus(REG, EMPTY, HOST, {4}) == (3,)
    assert lending.free_gpus(REG, EMPTY, HOST, set()) == (3, 4)
    assert lending.free_gpus(REG, book, HOST, {4}) == ()


# --- borrow -------------------------------------------------------------------


def test_borrow_lends_the_lowest_free_gpu_for_the_time_asked() -> None:
    book, gpus = lending.borrow(REG, "carol", EMPTY, 1, 8 * HOUR, NOW, (3, 4))
    assert gpus == (3,)
    assert book == LoanBook([Loan("carol", 3, NOW, NOW + 8 * HOUR, False, NOW)])
    assert book.of("carol") == (Loan("carol", 3, NOW, NOW + 8 * HOUR),)
    assert book.of("dave") == ()


def test_two_students_for_the_last_free_gpu_one_gets_it_the_other_hears_none_free() -> None:
    free = lending.free_gpus(REG, EMPTY, [3], None)
    book, gpus = lending.borrow(REG, "carol", EMPTY, 1, HOUR, NOW, free)
    assert gpus == (3,)
    free = lending.free_gpus(REG, book, [3], None)  # what the second sees, after the first's change
    error = refused(lending.borrow, REG, "dave", book, 1, HOUR, NOW, free)
    assert error.user_message == "none free: every GPU that can be lent is in use; add --wait to queue"
    assert error.status == ExitStatus.ERROR


def test_asking_for_more_than_are_free_says_how_many_are() -> None:
    reg = registry("{max_per_student: 3}")
    error = refused(lending.borrow, reg, "alice", EMPTY, 2, HOUR, NOW, (5,))
    assert error.user_message == "none free: 1 GPU free, you asked for 2; add --wait to queue"


@pytest.mark.parametrize(
    ("count", "duration", "message", "status"),
    [
        (1, 59, "at least 1m per loan", ExitStatus.USAGE),
        (1, DAY + 1, "at most 1d per loan", ExitStatus.USAGE),
        (0, HOUR, "borrow at least 1 GPU", ExitStatus.USAGE),
        (2, HOUR, "at most 1 GPU at a time for you", ExitStatus.ERROR),
    ],
)
def test_borrow_refuses_outside_the_limits(count: int, duration: int, message: str, status: int) -> None:
    error = refused(lending.borrow, REG, "carol", EMPTY, count, duration, NOW, (3, 4))
    assert (error.user_message, error.status) == (message, status)


def test_the_limits_count_what_the_student_already_holds() -> None:
    book, _ = lending.borrow(REG, "carol", EMPTY, 1, DAY, NOW, (3, 4))  # exactly the maximum: fine
    error = refused(lending.borrow, REG, "carol", book, 1, HOUR, NOW, (4,))
    assert error.user_message == "at most 1 GPU at a time for you; you have 1"


def test_a_students_own_allowance_beats_the_labs() -> None:
    reg = registry("{max_duration: 8h}", alice="lending: {max_per_student: 2, max_duration: 2d}", bob="")
    book, gpus = lending.borrow(reg, "alice", EMPTY, 2, 2 * DAY, NOW, (0, 1, 2))
    assert gpus == (0, 1)
    assert (
        refused(lending.borrow, reg, "bob", book, 1, 9 * HOUR, NOW, (2,)).user_message
        == "at most 8h per loan"
    )


def test_an_allowance_of_zero_borrows_nothing() -> None:
    reg = registry("{}", alice="lending: {max_per_student: 0}", bob="")
    error = refused(lending.borrow, reg, "alice", EMPTY, 1, HOUR, NOW, (0,))
    assert error.user_message == "you may not borrow GPUs in this lab"


def test_an_unregistered_student_borrows_nothing() -> None:
    error = refused(lending.borrow, REG, "mallory", EMPTY, 1, HOUR, NOW, (3,))
    assert error.status == ExitStatus.NOT_REGISTERED


# --- the line -----------------------------------------------------------------


def test_wait_lends_at_once_when_it_can() -> None:
    book, gpus, place = lending.wait(REG, "carol", EMPTY, 1, HOUR, NOW, (3,))
    assert (gpus, place, book.queue) == ((3,), 0, ())


def test_wait_queues_first_come_first_served_with_places() -> None:
    book = LoanBook([Loan("alice", 3, NOW, NOW + HOUR), Loan("bob", 4, NOW, NOW + HOUR)])
    book, gpus, place = lending.wait(REG, "carol", book, 1, 2 * HOUR, NOW + 1, ())
    assert (gpus, place) == ((), 1)
    book, gpus, place = lending.wait(REG, "dave", book, 1, HOUR, NOW + 2, ())
    assert (gpus, place) == ((), 2)
    assert book.queue == (Waiter("carol", 1, 2 * HOUR, NOW + 1), Waiter("dave", 1, HOUR, NOW + 2))
    assert (book.place("carol"), book.place("dave"), book.place("alice")) == (1, 2, None)
    error = refused(lending.wait, REG, "dave", book, 1, HOUR, NOW, ())
    assert error.user_message == "you are already waiting for a GPU (place 2 in line)"


def test_nobody_jumps_the_line_even_when_a_gpu_is_free() -> None:
    reg = registry("{max_per_student: 2}")
    waiting = LoanBook([], [Waiter("alice", 2, HOUR, NOW)])
    error = refused(lending.borrow, reg, "bob", waiting, 1, HOUR, NOW, (5,))  # 1 free, alice wants 2
    assert error.user_message == "none free: 1 student is waiting before you; add --wait to queue"
    book, gpus, place = lending.wait(reg, "bob", waiting, 1, HOUR, NOW, (5,))
    assert (gpus, place, book.loans) == ((), 2, ())


def test_the_head_of_the_line_is_served_first_and_whole() -> None:
    reg = registry("{max_per_student: 2}")
    book = LoanBook([], [Waiter("alice", 2, HOUR, NOW), Waiter("bob", 1, 2 * HOUR, NOW + 5)])
    after, granted, dropped = lending.serve_queue(reg, book, NOW + 60, (6,))
    assert (after, granted, dropped) == (book, (), ())  # one free: alice waits for two, bob behind her
    after, granted, dropped = lending.serve_queue(reg, book, NOW + 60, (5, 6, 7))
    assert granted == (
        Loan("alice", 5, NOW + 60, NOW + 60 + HOUR),
        Loan("alice", 6, NOW + 60, NOW + 60 + HOUR),
        Loan("bob", 7, NOW + 60, NOW + 60 + 2 * HOUR),
    )
    assert (after.queue, after.loans, dropped) == ((), granted, ())


def test_the_line_drops_who_may_no_longer_borrow_and_trims_to_todays_maximum() -> None:
    reg = registry("{max_duration: 2h}", alice="", carol="lending: {max_per_student: 0}")
    book = LoanBook(
        [], [Waiter("bob", 1, HOUR, NOW), Waiter("carol", 1, HOUR, NOW), Waiter("alice", 1, DAY, NOW)]
    )
    after, granted, dropped = lending.serve_queue(reg, book, NOW, (4,))
    assert dropped == (Waiter("bob", 1, HOUR, NOW), Waiter("carol", 1, HOUR, NOW))  # bob left; carol: 0
    assert granted == (Loan("alice", 4, NOW, NOW + 2 * HOUR),)
    assert after.queue == ()


def test_leave_queue() -> None:
    book = LoanBook([], [Waiter("alice", 1, HOUR, NOW), Waiter("bob", 1, HOUR, NOW)])
    assert lending.leave_queue(book, "alice") == (LoanBook([], [Waiter("bob", 1, HOUR, NOW)]), True)
    assert lending.leave_queue(book, "carol") == (book, False)


# --- extend and return --------------------------------------------------------------


def test_extend_pushes_the_end_back_within_the_maximum_from_the_start() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + 8 * HOUR, warned=True)])
    book, loan = lending.extend(REG, "carol", book, 3, 16 * HOUR, NOW + HOUR)
    assert loan == Loan("carol", 3, NOW, NOW + DAY, warned=False)  # warned again before the new end
    assert book.loans == (loan,)
    error = refused(lending.extend, REG, "carol", book, 3, 60, NOW + HOUR)
    assert error.user_message == "a loan lasts at most 1d"


def test_extend_says_how_much_is_left_to_extend() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + 20 * HOUR)])
    error = refused(lending.extend, REG, "carol", book, 3, 5 * HOUR, NOW + HOUR)
    assert error.user_message == "a loan lasts at most 1d; GPU 3 can be extended by 4h more"
    assert error.status == ExitStatus.USAGE


def test_extend_is_refused_while_someone_else_waits() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + HOUR)], [Waiter("dave", 1, HOUR, NOW)])
    error = refused(lending.extend, REG, "carol", book, 3, HOUR, NOW)
    assert error.user_message == "not extended: 1 student is waiting for a GPU"
    alone = LoanBook(book.loans, [Waiter("carol", 1, HOUR, NOW)])  # only carol herself: fine
    assert lending.extend(REG, "carol", alone, 3, HOUR, NOW)[1].ends == NOW + 2 * HOUR


def test_extend_only_ones_own_running_loan() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + HOUR)])
    assert refused(lending.extend, REG, "dave", book, 3, HOUR, NOW).user_message == "GPU 3 is not lent to you"
    assert (
        refused(lending.extend, REG, "carol", book, 4, HOUR, NOW).user_message == "GPU 4 is not lent to you"
    )
    ended = refused(lending.extend, REG, "carol", book, 3, HOUR, NOW + HOUR)  # ended, the tick not yet run
    assert ended.user_message == "GPU 3 is not lent to you"
    assert refused(lending.extend, REG, "carol", book, 3, 30, NOW).user_message == "extend by at least 1m"


def test_give_back_one_or_all() -> None:
    mine = [Loan("alice", 3, NOW, NOW + HOUR), Loan("alice", 4, NOW, NOW + HOUR)]
    book = LoanBook([*mine, Loan("bob", 5, NOW, NOW + HOUR)], [Waiter("alice", 1, HOUR, NOW)])
    after, ended = lending.give_back(book, "alice", 4)
    assert ended == (mine[1],)
    assert after == LoanBook([mine[0], book.loans[2]], book.queue)
    after, ended = lending.give_back(book, "alice", lending.ALL)
    assert ended == tuple(mine)
    assert after == LoanBook([book.loans[2]])  # out of the line too
    assert refused(lending.give_back, book, "alice", 5).user_message == "GPU 5 is not lent to you"
    assert lending.give_back(EMPTY, "alice", lending.ALL) == (EMPTY, ())


# --- the tick -------------------------------------------------------------------------


def test_warning_lead_is_a_quarter_hour_or_a_quarter_of_a_short_loan() -> None:
    assert lending.warning_lead(Loan("a", 0, NOW, NOW + 8 * HOUR)) == 15 * 60
    assert lending.warning_lead(Loan("a", 0, NOW, NOW + HOUR)) == 15 * 60
    assert lending.warning_lead(Loan("a", 0, NOW, NOW + 20 * 60)) == 5 * 60


def test_tick_warns_once_before_the_end() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + HOUR)])
    early = lending.tick(REG, book, NOW + 44 * 60, HOST, None)
    assert early.warned == ()
    due = lending.tick(REG, book, NOW + 45 * 60, HOST, None)
    assert due.warned == (Loan("carol", 3, NOW, NOW + HOUR, warned=True),)
    assert due.book.loans[0].warned is True
    again = lending.tick(REG, due.book, NOW + 50 * 60, HOST, None)
    assert again.warned == () and again.expired == ()


def test_tick_ends_expired_loans_and_grants_their_gpu_only_on_the_next_tick() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + HOUR)], [Waiter("dave", 1, HOUR, NOW)])
    first = lending.tick(REG, book, NOW + HOUR, [3], set())
    assert first.expired == book.loans
    assert first.granted == ()  # carol's processes are ended first
    assert first.book == LoanBook([], book.queue)
    second = lending.tick(REG, first.book, NOW + HOUR + 60, [3], set())
    assert second.granted == (Loan("dave", 3, NOW + HOUR + 60, NOW + 2 * HOUR + 60),)
    assert second.book == LoanBook(second.granted)


def test_tick_returns_a_loan_idle_past_idle_return_only_on_nvmls_word() -> None:
    reg = registry("{idle_return: 2h}")
    book = LoanBook([Loan("alice", 1, NOW, NOW + DAY)])
    used = lending.tick(reg, book, NOW + HOUR, HOST, {1})
    assert used.book.loans[0].last_used == NOW + HOUR
    quiet = lending.tick(reg, used.book, NOW + 3 * HOUR - 1, HOST, set())
    assert quiet.idle == () and quiet.book.loans[0].last_used == NOW + HOUR
    blind = lending.tick(reg, quiet.book, NOW + 3 * HOUR, HOST, None)  # no NVML: counts as used
    assert blind.idle == () and blind.book.loans[0].last_used == NOW + 3 * HOUR
    idle = lending.tick(reg, used.book, NOW + 3 * HOUR, HOST, set())
    assert idle.idle == used.book.loans
    assert idle.book == EMPTY and idle.ended == used.book.loans


def test_idle_return_zero_never_returns() -> None:
    reg = registry("{idle_return: 0}")
    book = LoanBook([Loan("alice", 1, NOW, NOW + DAY)])
    assert lending.tick(reg, book, NOW + DAY - 1, HOST, set()).idle == ()


def test_tick_revokes_what_the_registry_no_longer_allows() -> None:
    loans = [
        Loan("alice", 3, NOW, NOW + DAY),
        Loan("carol", 4, NOW, NOW + DAY),
        Loan("mallory", 5, NOW, NOW + DAY),
    ]
    book = LoanBook(loans)
    reg = registry("{gpus: [3, 4, 5]}", alice="", bob="gpus: [4]", carol="")  # 4 now bob's; mallory gone
    result = lending.tick(reg, book, NOW + 60, HOST, None)
    assert result.revoked == tuple(loans[1:])
    assert result.book.loans == (loans[0].replace(last_used=NOW + 60),)
    assert lending.tick(registry(None), book, NOW + 60, HOST, None).revoked == tuple(loans)
    missing = lending.tick(registry("{}"), LoanBook(loans[:1]), NOW + 60, [0, 1], None)
    assert missing.revoked == ()  # a GPU NVML does not list today is not taken for that


def test_tick_with_nothing_to_do_changes_nothing_but_the_use() -> None:
    book = LoanBook([Loan("carol", 3, NOW, NOW + DAY)])
    result = lending.tick(REG, book, NOW + 60, HOST, {4})
    assert result == lending.Tick(book)  # GPU 3 not busy, not idle long: the book as it was


def test_expired_on_boot() -> None:
    old, current = Loan("alice", 3, NOW, NOW + HOUR), Loan("bob", 4, NOW, NOW + DAY)
    book = LoanBook([old, current], [Waiter("carol", 1, HOUR, NOW)])
    after, ended = lending.expired_on_boot(book, NOW + 2 * HOUR)
    assert ended == (old,)
    assert after == LoanBook([current.replace(last_used=NOW + 2 * HOUR)], book.queue)


def test_words_for_the_student_and_the_notify_command() -> None:
    loan = Loan("carol", 3, NOW, NOW + HOUR)
    assert lending.warning_text(loan, NOW + 45 * 60) == (
        "GPU 3 goes back in 15m: save your work (extend it if nobody waits)"
    )
    reg = registry("{notify_command: /usr/local/bin/lab-notify --mail}")
    assert lending.notify_argv(reg, loan) == (
        "/usr/local/bin/lab-notify",
        "--mail",
        "carol",
        "3",
        "1700003600",
    )
    assert lending.notify_argv(REG, loan) == ()


# --- the book's file --------------------------------------------------------------------


BOOK = LoanBook(
    [Loan("carol", 3, NOW, NOW + HOUR, True, NOW + 60.5), Loan("alice", 0, NOW + 1, NOW + DAY)],
    [Waiter("dave", 2, HOUR, NOW + 2)],
)


def test_the_book_round_trips_through_json() -> None:
    text = lending.to_json(BOOK)
    assert lending.from_json(text) == BOOK
    assert json.loads(text)["format"] == 1
    assert lending.from_json(lending.to_json(EMPTY)) == EMPTY


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob", "_x", "a-1"]),
            st.floats(0, 2**39, allow_nan=False),
            st.integers(0, 10**6),
            st.booleans(),
        ),
        max_size=5,
    )
)
def test_any_book_round_trips(items: list[tuple[str, float, int, bool]]) -> None:
    loans = [
        Loan(user, gpu, start, start + length, warned)
        for gpu, (user, start, length, warned) in enumerate(items)
    ]
    book = LoanBook(loans, [Waiter(user, 1, 60, start) for user, start, _, _ in items[:1]])
    assert lending.from_json(lending.to_json(book)) == book


def forged(change) -> str:
    data = json.loads(lending.to_json(BOOK))
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "Expecting value"),
        ("{", "Expecting"),
        ("[]", "the book must have exactly"),
        ('{"format": 1, "loans": [], "queue": [], "format": 1}', "a key appears twice"),
        ('{"format": 2, "loans": [], "queue": []}', "format 2 is not 1"),
        ('{"format": true, "loans": [], "queue": []}', "format True is not 1"),
        ('{"format": 1, "loans": {}, "queue": []}', "must be lists"),
        ('{"format": 1, "loans": [], "queue": [], "extra": 0}', "the book must have exactly"),
        (forged(lambda d: d["loans"][0].update(gpu=-1)), "-1 is not a whole number from 0 to 1023"),
        (forged(lambda d: d["loans"][0].update(gpu=True)), "True is not a whole number"),
        (forged(lambda d: d["loans"][0].update(gpu=3.0)), "3.0 is not a whole number"),
        (forged(lambda d: d["loans"][1].update(gpu=0)), "a GPU is lent twice"),
        (forged(lambda d: d["loans"][0].update(user="root; id")), "'root; id' is not a user name"),
        (forged(lambda d: d["loans"][0].update(user="Alice")), "'Alice' is not a user name"),
        (forged(lambda d: d["loans"][0].update(ends=NOW - 1)), "times out of order"),
        (forged(lambda d: d["loans"][0].update(started="now")), "started 'now' is not a time"),
        (forged(lambda d: d["loans"][0].update(warned=1)), "warned must be true or false"),
        (forged(lambda d: d["loans"][0].pop("warned")), "a loan must have exactly"),
        (forged(lambda d: d["loans"][0].update(owner="x")), "a loan must have exactly"),
        (forged(lambda d: d["queue"][0].update(count=0)), "0 is not a whole number from 1 to 1024"),
        (forged(lambda d: d["queue"][0].update(duration=59)), "59 is not a whole number from 60"),
        (forged(lambda d: d["queue"].append(d["queue"][0])), "a student waits twice"),
        (lending.to_json(BOOK).replace(str(NOW + 2), "NaN"), "NaN is not a number"),
        (lending.to_json(BOOK).replace(str(NOW + 2), "1e400"), "since inf is not a time"),
        ("[" * 100000, "recursion"),
    ],
)
def test_a_damaged_or_forged_book_is_refused_in_one_line(text: str, why: str) -> None:
    error = refused(lending.from_json, text, "/var/lib/gpushell/loans.json")
    assert error.user_message == lending.UNAVAILABLE
    assert error.log_message.startswith("/var/lib/gpushell/loans.json: damaged, refused: ")
    assert why in error.log_message
    assert "\n" not in error.log_message
    assert error.status == ExitStatus.CONFIG


# --- a cluster: each member lends its own GPUs -------------------------------------

CLUSTER = """\
backend: lxd
bridge: labnet
subnet: 10.9.0.0/24
lending: {gpus: all, max_per_student: 2}
lxd:
  members:
    m1: {address: 192.168.5.11, gpus: 2, memory: 64G}
    m2: {address: 192.168.5.12, gpus: 2, memory: 64G}
users:
  alice: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1, gpus: [0]}
  bob: {port: 22002, ip: 10.9.0.3, idmap: 1065536, member: m1}
  carol: {port: 22003, ip: 10.9.0.4, idmap: 1131072, member: m2}
  dave: {port: 22004, ip: 10.9.0.5, idmap: 1196608, member: m2}
"""
GPUS = {"m1": (0, 1), "m2": (0, 1)}


def test_each_member_lends_its_own_gpus_numbered_there() -> None:
    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    assert lending.members(reg) == {"m1": frozenset({"alice", "bob"}), "m2": frozenset({"carol", "dave"})}
    # bob and carol both hold a GPU 1: m1's and m2's.
    book = LoanBook([Loan("bob", 1, 0, 3600), Loan("carol", 1, 0, 3600)])
    m1_reg, m1 = lending.on_member(reg, book, lending.members(reg)["m1"])
    assert set(m1_reg.users) == {"alice", "bob"} and m1.loans == (Loan("bob", 1, 0, 3600),)
    assert lending.free_gpus(m1_reg, m1, GPUS["m1"], None) == ()  # GPU 0 is alice's, 1 lent to bob
    m2_reg, m2 = lending.on_member(reg, book, lending.members(reg)["m2"])
    assert lending.free_gpus(m2_reg, m2, GPUS["m2"], None) == (0,)
    new, lent = lending.borrow(m2_reg, "dave", m2, 1, 600, 100, (0,))
    whole = lending.with_member(book, lending.members(reg)["m2"], new)
    assert lent == (0,) and sorted((loan.user, loan.gpu) for loan in whole.loans) == [
        ("bob", 1), ("carol", 1), ("dave", 0),
    ]  # fmt: skip


def test_one_host_is_one_member_of_everyone() -> None:
    reg = registry(alice="gpus: [0]", bob="")
    assert lending.members(reg) == {"": frozenset({"alice", "bob"})}
    book = LoanBook([Loan("bob", 1, 0, 3600)], [Waiter("alice", 1, 60, 5)])
    assert lending.with_member(book, frozenset(reg.users), book) == book


def test_a_tick_ends_and_serves_each_members_loans_on_that_member() -> None:
    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    book = LoanBook(
        [Loan("bob", 1, 0, 100), Loan("carol", 1, 0, 10_000), Loan("gone", 0, 0, 10_000)],
        [Waiter("dave", 1, 600, 50), Waiter("alice", 1, 600, 60)],
    )
    decided = lending.tick_members(reg, book, 200, GPUS, {})
    assert decided.expired == (Loan("bob", 1, 0, 100),)
    assert [loan.user for loan in decided.revoked] == ["gone"]  # no longer registered
    # m1: bob's GPU 1 ended this tick, so alice waits for the next; m2: dave gets GPU 0, carol keeps 1.
    assert [(loan.user, loan.gpu) for loan in decided.granted] == [("dave", 0)]
    assert sorted((loan.user, loan.gpu) for loan in decided.book.loans) == [("carol", 1), ("dave", 0)]
    assert decided.book.queue == (Waiter("alice", 1, 600, 60),)
    later = lending.tick_members(reg, decided.book, 260, GPUS, {})
    assert [(loan.user, loan.gpu) for loan in later.granted] == [("alice", 1)]


def test_each_member_counts_idle_time_on_its_own_figures() -> None:
    reg = parse(CLUSTER, "/etc/gpushell.yaml")  # idle_return: the default two hours
    book = LoanBook([Loan("bob", 1, 0, 10 * HOUR), Loan("carol", 1, 0, 10 * HOUR)])
    later = 3 * HOUR
    # m1's report shows GPU 1 quiet; m2 has no fresh report: unknown counts as used.
    decided = lending.tick_members(reg, book, later, GPUS, {"m1": frozenset({0})})
    assert [(loan.user, loan.gpu) for loan in decided.idle] == [("bob", 1)]
    assert [(loan.user, loan.last_used) for loan in decided.book.loans] == [("carol", later)]
    # The other way round: bob's GPU busy on m1 keeps his loan, m2's quiet GPU ends carol's.
    turned = lending.tick_members(reg, book, later, GPUS, {"m1": frozenset({1}), "m2": frozenset()})
    assert [(loan.user, loan.gpu) for loan in turned.idle] == [("carol", 1)]
    assert [(loan.user, loan.last_used) for loan in turned.book.loans] == [("bob", later)]
