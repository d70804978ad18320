"""`gpushell-admin storage migrate [USER...]` on a cluster: students' root disks onto the registry's pool.

On a cluster the storage is the engine's: students' root disks are on the
pool `lxd.pool` names.  A lab moving to another pool (a zfs or btrfs pool
made on every member, from `dir`, say) names the new one there and runs
this.  Until a student has moved, their disk stays where it is: `apply`
and `set` keep the pool a disk is on (lxd.py), and `doctor` names each
student still to move.  For each student whose disk is elsewhere, under
the registry lock and their own: the container is stopped if it runs, the
engine moves its disk and snapshots to the pool on the same member, and it
is started again if it ran.  The engine copies before it deletes, so a
failure leaves that student on the old pool; the next student is tried.
"""

from __future__ import annotations

from collections.abc import Callable

from ..containers.backend import RUNNING
from ..containers.lxd import LxdDriver
from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..core.paths import Paths
from ..system import registry_store
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from .migrate import chosen

Report = Callable[[str], None]


def plan(users: list[User], pools: dict[str, str], pool: str) -> tuple[list[User], list[User], list[User]]:
    """(to move, on pool already, without a container) among users, from each container's pool (pure)."""
    missing = [user for user in users if user.container not in pools]
    there = [user for user in users if pools.get(user.container) == pool]
    return [user for user in users if user not in missing and user not in there], there, missing


def migrate(paths: Paths, names: list[str], report: Report, fail: Report) -> int:
    """Move the students named (all when none is) onto lxd.pool; how many failed."""
    reg = registry_store.load(paths)
    assert reg.cluster is not None
    driver = LxdDriver(reg)
    pools = driver.root_pools(driver.listing())
    todo, there, missing = plan(chosen(reg, names), pools, reg.cluster.pool)
    for user in there:
        report(f"{user.name}: already on pool {reg.cluster.pool}")
    for user in missing:
        fail(f"{user.name}: container {user.container} does not exist on the cluster (see doctor)")
    failures = len(missing)
    for wanted in todo:
        with registry_store.Change(paths) as held:  # nothing written: the lock and a fresh read
            if wanted.name not in held.old.users:
                continue  # removed meanwhile
            user = held.old.users[wanted.name]
            try:
                with locked(paths.user_lock(user.name), ADMIN_WAIT, admin_busy(user.name)):
                    moved = move_student(held.old, user)
            except GpushellError as exc:
                failures += 1
                fail(f"{user.name} not moved (left on pool {pools[user.container]}): {exc.user_message}")
                continue
            report(moved)
    return failures


def move_student(reg: Registry, user: User) -> str:
    """The student's disk onto lxd.pool, their container running again if it ran; what was done.

    Raises GpushellError, the container as it was, when the engine does not move it.
    """
    assert reg.cluster is not None
    driver, pool = LxdDriver(reg), reg.cluster.pool
    was_running = driver.state(user.container) == RUNNING
    if was_running:
        driver.stop(user.container)
    try:
        driver.move_pool(user.container, pool)
    except BaseException:
        if was_running:
            driver.start(user.container)
        raise
    done = f"moved {user.name}: container {user.container} is on pool {pool} now (on {user.member})"
    if not was_running:
        return done
    try:
        driver.start(user.container)
    except GpushellError as exc:
        return f"{done}, but it did not start again: {exc.user_message}"
    return f"{done}, running again"
