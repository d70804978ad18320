"""bootslots.BootSlot: a free slot is taken at once, a full house waits its bound, a slot comes back."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest

from gpushell.system import bootslots
from gpushell.system.bootslots import BootSlot


@pytest.fixture
def slot_paths(tmp_path) -> list[str]:
    return [str(tmp_path / "run" / f"boot-{number}.lock") for number in range(2)]


def held(path: str) -> bool:
    """Whether another open file description holds path's flock, as another process would see it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_free_slot_is_taken_at_once_and_given_back(slot_paths) -> None:
    slot = BootSlot(slot_paths)
    began = time.monotonic()
    assert slot.take(wait=5)
    assert time.monotonic() - began < 0.1
    assert [held(path) for path in slot_paths] == [True, False]  # one slot, not all of them
    assert oct(os.stat(slot_paths[0]).st_mode & 0o777) == "0o600"
    slot.give_back()
    assert not held(slot_paths[0])


def test_starts_take_different_slots_until_all_are_held(slot_paths) -> None:
    first, second, third = BootSlot(slot_paths), BootSlot(slot_paths), BootSlot(slot_paths)
    assert first.take(wait=1) and second.take(wait=1)
    assert all(held(path) for path in slot_paths)
    began = time.monotonic()
    assert not third.take(wait=0.3)  # a full house: the start boots without a slot, after the bound
    assert 0.3 <= time.monotonic() - began < 1.0
    assert third.fd == -1
    first.give_back()
    assert third.take(wait=1)
    second.give_back()
    third.give_back()


def test_a_waiting_start_gets_the_slot_soon_after_it_is_given_back(slot_paths) -> None:
    holders = [BootSlot(slot_paths), BootSlot(slot_paths)]
    for holder in holders:
        assert holder.take(wait=1)
    threading.Timer(0.2, holders[1].give_back).start()
    waiter = BootSlot(slot_paths)
    began = time.monotonic()
    assert waiter.take(wait=5)
    waited = time.monotonic() - began
    assert 0.2 <= waited < 0.2 + 2 * bootslots.LONGEST_POLL + 0.1
    waiter.give_back()
    holders[0].give_back()


def test_a_boot_gives_its_slot_back_once_held_too_long(slot_paths) -> None:
    with BootSlot(slot_paths) as slot:
        assert slot.take(wait=1)
        slot.give_back_when_held(seconds=0.2)
        assert held(slot_paths[0])  # not yet
        time.sleep(0.25)
        slot.give_back_when_held(seconds=0.2)
        assert not held(slot_paths[0])
        slot.give_back()  # twice is harmless


def test_leaving_the_block_gives_the_slot_back_on_an_error(slot_paths) -> None:
    with pytest.raises(RuntimeError), BootSlot(slot_paths) as slot:
        slot.take(wait=1)
        raise RuntimeError("the start failed")
    assert not any(held(path) for path in slot_paths)


def test_no_slots_means_no_wait(tmp_path) -> None:
    began = time.monotonic()
    assert not BootSlot([]).take(wait=5)
    assert time.monotonic() - began < 0.1
    assert not (tmp_path / "run").exists()


def test_a_program_the_start_runs_does_not_carry_the_slot_away(slot_paths) -> None:
    """lxc-start's monitor outlives the login: were the slot inherited, it would hold it for good."""
    with BootSlot(slot_paths) as slot:
        assert slot.take(wait=1)
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; print(flush=True); time.sleep(5)"],
            close_fds=False,
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            child.stdout.readline()  # running: past its exec, whatever it inherited
            slot.give_back()
            assert not held(slot_paths[0])
        finally:
            child.kill()
            child.wait()


def test_a_planted_link_is_not_followed(slot_paths, tmp_path) -> None:
    os.makedirs(os.path.dirname(slot_paths[0]))
    target = tmp_path / "elsewhere"
    target.write_text("")
    os.symlink(target, slot_paths[0])
    with pytest.raises(OSError):
        BootSlot(slot_paths).take(wait=0.1)
