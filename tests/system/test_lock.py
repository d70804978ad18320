"""lock.locked: an unbounded wait by default, a bounded one raising Busy when asked."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from gpushell.system.lock import Busy, locked


def hold(path: str) -> int:
    """Hold path's flock from another open file description, as another process would."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_free_lock_is_taken_and_private(tmp_path) -> None:
    path = str(tmp_path / "run" / "user-alice.lock")
    with locked(path, timeout=5):
        other = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_held_lock_gives_busy_after_the_timeout(tmp_path) -> None:
    path = str(tmp_path / "user-alice.lock")
    holder = hold(path)
    began = time.monotonic()
    with (
        pytest.raises(Busy) as raised,
        locked(path, timeout=0.3, busy="busy: another action of yours is running"),
    ):
        pass
    assert 0.3 <= time.monotonic() - began < 1.0
    assert raised.value.user_message == "busy: another action of yours is running"
    assert path in raised.value.log_message and path not in raised.value.user_message
    os.close(holder)


def test_a_lock_released_during_the_wait_is_taken(tmp_path) -> None:
    path = str(tmp_path / "user-alice.lock")
    holder = hold(path)
    pid = os.fork()
    if pid == 0:  # the holder's process lets go after 0.2 s
        time.sleep(0.2)
        os._exit(0)
    os.close(holder)  # ours closed; the child's copy of the description keeps it held
    began = time.monotonic()
    with locked(path, timeout=5):
        assert 0.1 < time.monotonic() - began < 2
    os.waitpid(pid, 0)


def test_a_zero_timeout_tries_once(tmp_path) -> None:
    path = str(tmp_path / "user-alice.lock")
    holder = hold(path)
    with pytest.raises(Busy), locked(path, timeout=0):
        pass
    os.close(holder)
    with locked(path, timeout=0):
        pass


def test_a_link_in_place_of_the_lock_is_refused(tmp_path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    os.symlink(target, tmp_path / "user-alice.lock")
    with pytest.raises(OSError), locked(str(tmp_path / "user-alice.lock"), timeout=1):
        pass


def test_every_user_lock_is_taken_with_a_bounded_wait() -> None:
    """No gpushell program (helper or admin) waits forever on a student's lock."""
    import pathlib
    import re

    package = pathlib.Path(__file__).resolve().parents[2] / "gpushell"
    takes = []
    for source in package.glob("**/*.py"):
        for line in source.read_text().splitlines():
            if "locked(paths.user_lock(" in line:
                takes.append((source.name, line.strip()))
    assert len(takes) >= 5
    unbounded = [take for take in takes if not re.search(r"user_lock\([\w.]+\), \w", take[1])]
    assert unbounded == []


def test_admin_busy_names_the_student() -> None:
    from gpushell.system.lock import admin_busy

    assert admin_busy("alice") == (
        "alice is busy: an action of theirs is running; try again when it has finished"
    )
