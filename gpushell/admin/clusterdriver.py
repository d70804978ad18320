"""`gpushell-admin driver sync` on a cluster: each GPU container's driver at its member's version.

For `driver: container`, as on one host (driversync.py), with the
engine doing the container work: the module version is each member's own,
from its GPU report (`publish-gpus` reads the member's
/proc/driver/nvidia/version), and the container's library versions are
read through the engine's file API.  A lagging container gets the
installer streamed in through that API, runs it through the engine's exec
(started for it if it was stopped, and stopped again), and loses the copy.
A student whose member has no fresh report naming a loaded module is
skipped with one line: there is nothing to match yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

from ..containers.backend import RUNNING
from ..containers.lxd import LxdDriver
from ..core import gpureport
from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..core.paths import Paths
from ..gpu import driverfiles
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from .driversync import INSIDE, INSTALL_TIMEOUT, INSTALLER_OPTIONS, chosen_students, installer_path


def member_versions(driver: LxdDriver, now: float) -> dict[str, str]:
    """Each member's loaded module version, from its fresh GPU report; members without one left out."""
    found = {member: gpureport.module(report, now) for member, report in driver.gpu_reports().items()}
    return {member: version for member, version in found.items() if version is not None}


def sync(
    reg: Registry, paths: Paths, names: Sequence[str], option: str | None, say: Callable[[str], None]
) -> int:
    """Sync the chosen GPU containers to their members' drivers, one line each; how many failed."""
    driver = LxdDriver(reg)
    versions = member_versions(driver, time.time())
    lagging, failures = [], 0
    for user in chosen_students(reg, names):
        version = versions.get(user.member)
        if version is None:
            failures += 1
            say(f"{user.name}: skipped: member {user.member} reports no loaded NVIDIA driver (publish-gpus)")
        elif driverfiles.mismatch(version, driver.driver_versions(user.container)) is not None:
            lagging.append((user, version))
    if not lagging:
        if not failures:
            say("every GPU container has its member's NVIDIA driver")
        return failures
    installer = installer_path(reg, option)
    for user, version in lagging:
        try:
            say(f"{user.name}: {sync_one(driver, paths, user, installer, version)}")
        except GpushellError as exc:
            failures += 1
            say(f"{user.name}: FAILED: {exc.log_message}")
    return failures


def sync_one(driver: LxdDriver, paths: Paths, user: User, installer: str, version: str) -> str:
    """Run the installer in user's container; a one-line report, or GpushellError."""
    name = user.container
    with locked(paths.user_lock(user.name), ADMIN_WAIT, admin_busy(user.name)):
        was_running = driver.state(name) == RUNNING
        driver.put_file(name, INSIDE, installer, 0o700)
        try:
            if not was_running:
                driver.start(name)  # the engine holds the disk quota: nothing to set first
            status = driver.run_inside(name, ["sh", INSIDE, *INSTALLER_OPTIONS], timeout=INSTALL_TIMEOUT)
        finally:
            with contextlib.suppress(GpushellError):  # a copy left behind is the container's own file
                driver.delete_file(name, INSIDE)
            if not was_running:
                driver.stop(name)
    if status != 0:
        raise GpushellError(f"installer exited {status}")
    problem = driverfiles.mismatch(version, driver.driver_versions(name), f"its member {user.member}")
    if problem:
        raise GpushellError(f"installer ran, but the container still {problem}")
    return f"installed NVIDIA driver {version}"
