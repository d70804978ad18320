"""The host's boot slots: as many containers boot at once as the host has CPUs, the rest in turn.

Why: twenty students logging in at once start twenty boots, and twenty
boots at once on two cores finish later than the same boots two at a
time (3.5 s against 3.1 s for all of them here): they thrash each other.
In turn, every student but the last gets in sooner, and the last no later.

A slot is an flock on one of as many files in the run directory, so the
helper's forked children share them and a dead holder's slot comes back
by itself.  The descriptors are close-on-exec: lxc-start's monitor, which
outlives the login, must not carry a slot away.  A start takes one before
it boots the container and gives it back once the container answers.
Neither side can be held up for long by a container root controls: a
boot that does not answer gives its slot back after HOLD seconds anyway,
and a start that finds no slot free within WAIT seconds boots without
one, as it would have without slots.
"""

from __future__ import annotations

import os
import time

from . import lock

HOLD = 5.0  # seconds a boot keeps its slot at most: a container whose sshd never comes up
WAIT = 15.0  # seconds a start waits for a slot at most, then boots beside the others
FIRST_POLL, LONGEST_POLL = 0.002, 0.02  # a boot frees a slot every ~0.15 s in a crowd


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


class BootSlot:
    """One of the slots whose lock files are `paths`, taken by take() and given back by give_back()."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.fd = -1
        self.taken_at = 0.0

    def take(self, wait: float = WAIT) -> bool:
        """Hold a free slot, waiting up to `wait` seconds for one; False when none came free (or none is)."""
        if not self.paths:
            return False
        fds = [lock.open_lock_file(path) for path in self.paths]

        def one_free() -> bool:
            self.fd = next((fd for fd in fds if lock.try_lock(fd)), -1)
            return self.fd >= 0

        try:
            lock.poll(one_free, wait, FIRST_POLL, LONGEST_POLL)
        finally:
            for fd in fds:
                if fd != self.fd:
                    os.close(fd)
        self.taken_at = time.monotonic()
        return self.fd >= 0

    def give_back(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the flock goes with the last descriptor
            self.fd = -1

    def give_back_when_held(self, seconds: float = HOLD) -> None:
        """Give the slot back once it has been held `seconds` (asked while the boot is awaited)."""
        if self.fd >= 0 and time.monotonic() - self.taken_at >= seconds:
            self.give_back()

    def __enter__(self) -> BootSlot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.give_back()
