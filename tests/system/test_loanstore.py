"""loanstore: the loan book's file, read strictly, changed under a lock, written atomically (real files)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import time

import pytest

from gpushell.core import lending
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.lending import EMPTY, Loan, LoanBook, Waiter
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.system import loanstore
from gpushell.system.lock import Busy, locked

NOW = 1_700_000_000.0
BOOK = LoanBook([Loan("alice", 3, NOW, NOW + 3600)], [Waiter("bob", 1, 3600, NOW + 5)])
REG = parse(
    "lending: {gpus: [3]}\nusers:\n"
    "  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    "  bob: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n",
    "/etc/gpushell.yaml",
)


@pytest.fixture
def paths(tmp_path: os.PathLike[str]) -> Paths:
    return Paths(run_dir=os.path.join(tmp_path, "run"), state_dir=os.path.join(tmp_path, "state"))


def put(paths: Paths, book: LoanBook) -> LoanBook:
    return loanstore.update(paths, lambda _old: (book, book))


def write_raw(paths: Paths, data: bytes, mode: int = 0o600) -> None:
    os.makedirs(paths.state_dir, mode=0o700, exist_ok=True)
    with open(paths.loans, "wb") as stream:
        stream.write(data)
    os.chmod(paths.loans, mode)


def test_paths_name_the_book_in_the_state_directory() -> None:
    assert Paths().loans == "/var/lib/gpushell/loans.json"
    assert Paths().loans_lock == "/run/gpushell/loans.lock"
    assert Paths(state_dir="/srv/state").replace(run_dir="/r").loans == "/srv/state/loans.json"


def test_no_file_is_an_empty_book(paths: Paths) -> None:
    assert loanstore.read(paths) == EMPTY
    assert not os.path.exists(paths.state_dir)  # reading makes nothing


def test_update_writes_the_new_book_root_only_and_returns_the_answer(paths: Paths) -> None:
    answer = loanstore.update(paths, lambda book: (BOOK, f"was {len(book.loans)}"))
    assert answer == "was 0"
    assert loanstore.read(paths) == BOOK
    assert stat.S_IMODE(os.stat(paths.loans).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.state_dir).st_mode) == 0o700
    assert os.listdir(paths.state_dir) == ["loans.json"]  # no temporary left beside it
    with open(paths.loans, encoding="utf-8") as stream:
        assert lending.from_json(stream.read()) == BOOK


def test_an_unchanged_book_is_not_written_again(paths: Paths) -> None:
    put(paths, BOOK)
    before = os.stat(paths.loans).st_ino
    assert loanstore.update(paths, lambda book: (book, "same")) == "same"
    assert os.stat(paths.loans).st_ino == before  # a write would have renamed a new file in


def test_a_change_that_raises_leaves_the_file_as_it_was(paths: Paths) -> None:
    put(paths, BOOK)

    def refuse(book: LoanBook) -> tuple[LoanBook, tuple[int, ...]]:
        return lending.borrow(REG, "bob", book, 1, 3600, NOW, (4,))  # raises: bob is in line already

    with pytest.raises(GpushellError, match="already waiting"):
        loanstore.update(paths, refuse)
    assert loanstore.read(paths) == BOOK


def test_a_busy_lock_ends_in_a_clear_busy_past_the_timeout(paths: Paths) -> None:
    os.makedirs(paths.run_dir)
    with locked(paths.loans_lock):
        started = time.monotonic()
        with pytest.raises(Busy) as info:
            loanstore.update(paths, lambda book: (BOOK, None), timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert info.value.user_message == loanstore.BUSY
    assert loanstore.read(paths) == EMPTY


@pytest.mark.parametrize(
    ("data", "mode", "why"),
    [
        (b"{", 0o600, "damaged, refused"),
        (b'{"format": 1, "loans": [], "queue": []}', 0o644, "is not root's alone"),
        (b'{"format": 1, "loans": [], "queue": []}', 0o620, "is not root's alone"),
        (b"\xff\xfe", 0o600, "is not UTF-8 text"),
        (b" " * (loanstore.MAX_SIZE + 1), 0o600, "is larger than"),
    ],
)
def test_a_damaged_or_unsafe_file_is_refused_never_taken_as_empty(
    paths: Paths, data: bytes, mode: int, why: str
) -> None:
    write_raw(paths, data, mode)
    with pytest.raises(GpushellError) as info:
        loanstore.read(paths)
    assert why in info.value.log_message
    assert paths.loans in info.value.log_message
    assert info.value.user_message == lending.UNAVAILABLE
    assert info.value.status == ExitStatus.CONFIG
    with pytest.raises(GpushellError):  # nor does a change go ahead over it
        put(paths, BOOK)


def test_a_file_of_exactly_the_largest_size_is_read(paths: Paths) -> None:
    text = lending.to_json(BOOK)
    write_raw(paths, text.encode() + b" " * (loanstore.MAX_SIZE - len(text)))
    assert loanstore.read(paths) == BOOK


def test_a_link_in_place_of_the_file_is_refused(paths: Paths, tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "elsewhere.json")
    with open(target, "w", encoding="utf-8") as stream:
        stream.write(lending.to_json(BOOK))
    os.chmod(target, 0o600)
    os.makedirs(paths.state_dir, mode=0o700)
    os.symlink(target, paths.loans)
    with pytest.raises(GpushellError) as info:
        loanstore.read(paths)
    assert "cannot be opened" in info.value.log_message


def test_a_fifo_in_place_of_the_file_is_refused_without_hanging(paths: Paths) -> None:
    os.makedirs(paths.state_dir, mode=0o700)
    os.mkfifo(paths.loans, 0o600)
    with pytest.raises(GpushellError) as info:
        loanstore.read(paths)
    assert "is not a plain file" in info.value.log_message


def test_a_state_directory_open_to_others_is_refused(paths: Paths) -> None:
    os.makedirs(paths.state_dir)
    os.chmod(paths.state_dir, 0o755)
    with pytest.raises(GpushellError) as info:
        put(paths, BOOK)
    assert "mode must be 0700" in info.value.log_message
    os.chmod(paths.state_dir, 0o777)
    with pytest.raises(GpushellError) as info:
        put(paths, BOOK)
    assert "writable by a user other than root" in info.value.log_message
    assert info.value.user_message == lending.UNAVAILABLE
    assert not os.path.exists(paths.loans)


# --- other processes: the race, and a helper killed mid-change ---------------------


def _borrow_last_gpu(paths: Paths, user: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait()

    def change(book: LoanBook) -> tuple[LoanBook, tuple[int, ...]]:
        free = lending.free_gpus(REG, book, [3], None)
        time.sleep(0.05)  # widen the window between looking and lending
        return lending.borrow(REG, user, book, 1, 3600, NOW, free)

    try:
        loanstore.update(paths, change)
    except GpushellError as exc:
        os._exit(3 if exc.user_message.startswith("none free") else 4)
    os._exit(0)


def test_two_students_for_the_last_gpu_exactly_one_gets_it(paths: Paths) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Event()
    racers = [
        context.Process(target=_borrow_last_gpu, args=(paths, user, start)) for user in ("alice", "bob")
    ]
    for racer in racers:
        racer.start()
    start.set()
    for racer in racers:
        racer.join(30)
    assert sorted(racer.exitcode for racer in racers) == [0, 3]
    (loan,) = loanstore.read(paths).loans
    winner = "alice" if racers[0].exitcode == 0 else "bob"
    assert (loan.user, loan.gpu) == (winner, 3)


def _write_slowly(paths: Paths, book: LoanBook, ready: multiprocessing.synchronize.Event) -> None:
    real_write = os.write

    def write_and_stall(fd: int, data: bytes) -> int:
        written = real_write(fd, data[: len(data) // 2])  # half the new file is on disk...
        ready.set()
        time.sleep(60)  # ...when the helper is killed
        return written

    os.write = write_and_stall  # type: ignore[assignment]
    loanstore.update(paths, lambda _book: (book, None))
    os._exit(0)


def test_a_helper_killed_mid_write_leaves_the_old_book_and_no_lock(paths: Paths) -> None:
    put(paths, BOOK)
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    newer = LoanBook([*BOOK.loans, Loan("bob", 4, NOW, NOW + 60)])
    helper = context.Process(target=_write_slowly, args=(paths, newer, ready))
    helper.start()
    assert ready.wait(30)
    os.kill(helper.pid or 0, signal.SIGKILL)
    helper.join(30)
    assert helper.exitcode == -signal.SIGKILL
    assert loanstore.read(paths) == BOOK  # the old book, whole; the half-written one is a stray temporary
    assert any(name.endswith(".tmp") for name in os.listdir(paths.state_dir))
    assert loanstore.update(paths, lambda book: (newer, "next")) == "next"  # the lock went with it
    assert loanstore.read(paths) == newer
