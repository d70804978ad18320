"""Holding a container still while root works on its rootfs.

Root copies (snapshot) or swaps (restore, rebuild) a tree that container
root controls, so it first makes the container's state a known one and
keeps it so for the whole operation:

- running: frozen, and the freeze checked by two witnesses, LXC's state
  (FROZEN) and the kernel's freezer cgroup itself, with the same init PID
  as before the freeze.  A frozen container changes nothing and cannot
  reboot, and the same checks after the work prove it stayed so; a
  container that restarted in between shows another init PID.
- stopped: unable to start.  The driver blocks every start (LXC: its
  command socket name is held, see LxcDriver.block_start), which covers
  gpushell's own starts (they also wait for the student's lock), an
  admin's lxc-start and lxc-autostart alike, and ends with this process.
- anything else (starting, stopping, aborting): refused; try again later.

Whatever the check, a failure means the work is thrown away, never kept.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from ..core.errors import GpushellError
from .backend import FROZEN, RUNNING, STOPPED, ContainerDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .backend import Closable

# LXC's states of a running container: its freezer's THAWED, FREEZING, FROZEN (RUNNING for THAWED).
ALIVE = (RUNNING, "FREEZING", FROZEN, "THAWED")
FREEZE_WAIT = 10.0  # seconds a freeze may take to reach every task after lxc-freeze returned
STOP_WAIT = 5.0  # seconds LXC's monitor may linger on its socket after lxc-stop returned
POLL = 0.05


class Held:
    """A container held still for `action` (a snapshot, the restore, ...): running and frozen, or stopped."""

    def __init__(self, driver: ContainerDriver, container: str, action: str, pid: int | None) -> None:
        self.driver, self.container, self.action, self.pid = driver, container, action, pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def is_still(self) -> bool:
        """Whether the container is exactly as it was held (a look: it changes nothing)."""
        state, pid = self.driver.info(self.container)
        if self.pid is None:
            return state == STOPPED and pid is None
        return state == FROZEN and pid == self.pid and self.driver.cgroup_frozen(self.pid)

    def check(self) -> None:
        """Raise unless the container stayed held: call after the work, before keeping it."""
        if not self.is_still():
            raise restarted(self.container, self.action, self.pid)


def restarted(container: str, action: str, pid: int | None) -> GpushellError:
    return GpushellError(
        f"your container restarted during the {action}; nothing was kept; try again",
        f"{container} left its held state (init PID {pid}) during the {action}; result discarded",
    )


def busy(container: str, state: str, action: str) -> GpushellError:
    return GpushellError(
        f"your container is {state.lower()}; try the {action} again in a moment",
        f"{action} refused: {container} is {state}",
    )


@contextlib.contextmanager
def held(driver: ContainerDriver, container: str, action: str) -> Iterator[Held]:
    """The container frozen (if it runs) or unable to start (if stopped) for the block.

    The block calls Held.check() once its work is done; on leaving, a
    frozen container is thawed and a blocked one may start again.
    """
    state, pid = driver.info(container)
    if state == STOPPED:
        with stopped(driver, container, action) as hold:
            yield hold
    elif state in ALIVE and pid is not None:
        # Frozen, or on the way: a helper killed mid-snapshot left it so; it is thawed after.
        with _frozen(driver, container, action, pid) as hold:
            yield hold
    else:
        raise busy(container, state, action)


@contextlib.contextmanager
def stopped(driver: ContainerDriver, container: str, action: str) -> Iterator[Held]:
    """A stopped container that nothing can start for the block; refused if it is not stopped."""
    guard = _block_start(driver, container, action)
    try:
        hold = Held(driver, container, action, None)
        if not hold.is_still():  # it had a monitor a moment ago and runs on
            raise restarted(container, action, None)
        yield hold
    finally:
        guard.close()


def _block_start(driver: ContainerDriver, container: str, action: str) -> Closable:
    """The driver's start block, waiting out a monitor that lingers after a stop."""
    deadline = time.monotonic() + STOP_WAIT
    while True:
        try:
            return driver.block_start(container)
        except GpushellError as exc:
            state, _pid = driver.info(container)
            if state != STOPPED:
                raise busy(container, state, action) from exc
            if time.monotonic() >= deadline:
                raise
        time.sleep(POLL)


@contextlib.contextmanager
def _frozen(driver: ContainerDriver, container: str, action: str, pid: int) -> Iterator[Held]:
    hold = Held(driver, container, action, pid)
    try:
        try:
            driver.freeze(container)
        except GpushellError as exc:
            raise GpushellError(
                f"your container could not be paused for the {action}; nothing was kept; try again",
                exc.log_message,
            ) from None
        _wait_frozen(hold)
        yield hold
    except BaseException:
        with contextlib.suppress(GpushellError):  # the first error is the one to tell
            driver.unfreeze(container)
        raise
    driver.unfreeze(container)


def _wait_frozen(hold: Held) -> None:
    """Until both witnesses say frozen, with the init PID seen before; raise if that never comes."""
    deadline = time.monotonic() + FREEZE_WAIT
    while not hold.is_still():
        state, pid = hold.driver.info(hold.container)
        if pid != hold.pid or state not in ALIVE:
            raise restarted(hold.container, hold.action, hold.pid)
        if time.monotonic() >= deadline:
            raise GpushellError(
                f"your container could not be paused for the {hold.action}; nothing was kept; try again",
                f"{hold.container} not frozen after {FREEZE_WAIT} s (state {state}, cgroup not frozen)",
            )
        time.sleep(POLL)
