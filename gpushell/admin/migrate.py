"""`gpushell-admin storage migrate [USER...]`: move a `dir` lab onto btrfs, one student at a time.

The lxcpath must already be on btrfs (a `dir` lab whose filesystem is
btrfs; an admin moving to a new disk first moves the lxcpath there).  For
each student, under the registry lock and their own lock:

    LXCPATH/.NAME.migrating            a new subvolume with the container's quota group (btrfs.py)
        config, ...                    copied (root's own files)
        gpushell-snapshots/SNAP/rootfs each snapshot copied into a read-only subvolume,
                                       while the container still runs (it never sees them)
        rootfs                         the rootfs copied into a subvolume, the container
                                       stopped and unable to start for this copy only
    rename NAME -> .NAME.dir-old, .NAME.migrating -> NAME (snapshots.replace); the disk
    quota set, then the container started again if it ran; the old tree goes.

Before anything is made, the pool must have room for a full copy of the
student's directory (BtrfsStorage.check_space), or they are refused and
left as they were.  Until the first rename the student's container is
untouched: a failure removes `.NAME.migrating` and starts the container
again if it ran.  A killed run is finished or undone by the next one
(`settle`): while NAME is missing, `.NAME.migrating` is complete (it is
renamed only when it is); a `.NAME.new-…` (the subvolume made, not yet
renamed `.NAME.migrating`) and any other leftover go.
The registry says `storage: btrfs` only once every student's container
directory is a subvolume; until then the lab runs on as `dir`, which copes
with both.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable

from ..containers import hold, snapshots
from ..containers.btrfs import BtrfsStorage, is_btrfs, is_subvolume
from ..containers.factory import backend_for
from ..core import registry_edit
from ..core.errors import ExitStatus, GpushellError
from ..core.menu import is_snapshot_name
from ..core.model import Registry, User
from ..core.paths import Paths
from ..core.registry import size_text
from ..system import pool, registry_store, rootfs
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from ..system.runner import run

Report = Callable[[str], None]
MIGRATING, OLD, NEW = ".migrating", ".dir-old", ".new-"
ACTION = "storage migrate"


# --- pure ------------------------------------------------------------------


def refusal(reg: Registry, filesystem: str) -> str | None:
    """Why the lab cannot move to btrfs now, or None (pure)."""
    if reg.storage == "btrfs":
        return "the registry already says storage: btrfs; nothing to migrate"
    if filesystem != "btrfs":
        return (
            f"{reg.lxcpath} is on {filesystem}, not btrfs: storage migrate moves a lab to btrfs on the "
            "filesystem it is on; to move to a new disk, first move the lxcpath onto it "
            "(stop the containers, copy it with cp -a, mount the disk there), then migrate"
        )
    return None


def chosen(reg: Registry, names: Iterable[str]) -> list[User]:
    """The students named (all, when none is), in port order; unknown names refused (pure)."""
    wanted = list(names)
    unknown = sorted(set(wanted) - set(reg.users))
    if unknown:
        raise GpushellError(f"not registered: {', '.join(unknown)}", status=ExitStatus.NOT_REGISTERED)
    users = [reg.users[name] for name in wanted] if wanted else list(reg.users.values())
    return sorted({user.name: user for user in users}.values(), key=lambda user: user.port)


def plan(users: list[User], moved: set[str]) -> tuple[list[User], list[User]]:
    """(to move, already moved): `moved` holds the containers whose directory is a subvolume (pure)."""
    return [u for u in users if u.container not in moved], [u for u in users if u.container in moved]


def place(reg: Registry, container: str, suffix: str = "") -> str:
    return os.path.join(reg.lxcpath, f".{container}{suffix}" if suffix else container)


# --- one student ---------------------------------------------------------------


def strays(reg: Registry, container: str, entries: Iterable[str]) -> list[str]:
    """The `.NAME.new-…` subvolumes a run killed before renaming one `.NAME.migrating` left (pure)."""
    made = re.compile(re.escape(f".{container}{NEW}") + "[0-9a-f]+")
    return [os.path.join(reg.lxcpath, entry) for entry in sorted(entries) if made.fullmatch(entry)]


def settle(reg: Registry, container: str, storage: BtrfsStorage) -> None:
    """Finish or undo what a killed migrate left of this container; then drop the leftovers."""
    current, new, old = (place(reg, container, suffix) for suffix in ("", MIGRATING, OLD))
    if not os.path.lexists(current):
        if os.path.isdir(new):  # killed between the renames: the new one was complete
            os.rename(new, current)
        elif os.path.isdir(old):
            os.rename(old, current)
    if not os.path.lexists(current):
        return  # nothing to keep the leftovers for, nor to take them from
    for leftover in (new, old, *strays(reg, container, os.listdir(reg.lxcpath))):
        if os.path.lexists(leftover):
            storage.remove(leftover)


def copy_entry(source: str, target: str) -> None:
    """One of root's own files or directories in a container's directory (config, logs)."""
    run(["cp", "-a", "--reflink=auto", "-T", source, target], timeout=900)


def copy_snapshots(source_dir: str, target_dir: str, storage: BtrfsStorage, user: User) -> int:
    """Each complete snapshot into a read-only subvolume under target_dir; how many."""
    source = os.path.join(source_dir, snapshots.SNAPSHOT_DIR)
    if not os.path.isdir(source):
        return 0
    target = os.path.join(target_dir, snapshots.SNAPSHOT_DIR)
    os.mkdir(target, 0o700)
    count = 0
    for name in sorted(os.listdir(source)):
        # Staging and half-deleted ones start with a dot, which no snapshot name does: they stay behind.
        root = os.path.join(source, name, snapshots.ROOTFS)
        if not is_snapshot_name(name) or not os.path.isdir(root) or os.path.islink(root):
            continue
        os.mkdir(os.path.join(target, name), 0o700)
        info = os.path.join(source, name, snapshots.INFO_FILE)
        if os.path.isfile(info):
            copy_entry(info, os.path.join(target, name, snapshots.INFO_FILE))
        copied = os.path.join(target, name, snapshots.ROOTFS)
        storage.tree_to_subvolume(root, copied, f"{user.name}'s snapshot {name}", readonly=True)
        count += 1
    return count


def move_student(reg: Registry, user: User, storage: BtrfsStorage, report: Report) -> None:
    """Move one student's container directory into a subvolume; they are left as they were on failure."""
    driver = backend_for(reg)
    current, new, old = (place(reg, user.container, suffix) for suffix in ("", MIGRATING, OLD))
    settle(reg, user.container, storage)
    if is_subvolume(current):
        return
    # Snapshots and rootfs are copied whole (the old tree goes only after the swap).
    storage.check_space(reg.lxcpath, lambda: rootfs.tree_size(current), f"moving {user.name}", copied=True)
    made = storage.new_container_dir(reg.lxcpath, f".{user.container}{NEW}")
    was_running = False
    try:
        os.rename(made, new)
        made = new
        for entry in sorted(os.listdir(current)):
            if entry not in (snapshots.ROOTFS, snapshots.SNAPSHOT_DIR):
                copy_entry(os.path.join(current, entry), os.path.join(new, entry))
        kept = copy_snapshots(current, new, storage, user)
        was_running = snapshots.stop_for_swap(driver, user.container)
        # From here to the rename the old rootfs is copied: nothing may start it.
        with hold.stopped(driver, user.container, ACTION):
            storage.tree_to_subvolume(
                os.path.join(current, snapshots.ROOTFS), os.path.join(new, snapshots.ROOTFS), "the migration"
            )
            snapshots.replace(current, new, old)
    except BaseException:
        storage.remove(made, ignore_errors=True)
        if was_running:
            driver.start(user.container)
        raise
    try:
        storage.set_quota(current, user.limits.disk)  # before it starts again, as every start
    finally:
        if was_running:
            driver.start(user.container)
    shutil.rmtree(old, ignore_errors=True)  # a plain tree; what stays is taken by the next run's settle
    report(
        f"moved {user.name}: container {user.container} is a subvolume now"
        + (f", {kept} snapshot(s) converted" if kept else "")
        + (", running again" if was_running else "")
        + f"; disk quota {size_text(user.limits.disk)}"
    )


# --- the whole lab ---------------------------------------------------------------


def moved_containers(reg: Registry) -> set[str]:
    return {user.container for user in reg.users.values() if is_subvolume(place(reg, user.container))}


def migrate(paths: Paths, names: list[str], report: Report, fail: Report) -> int:
    """Move the students named (all when none is); how many failed.  The registry switches at the end."""
    reg = registry_store.load(paths)
    why = refusal(reg, "btrfs" if is_btrfs(reg.lxcpath) else pool.filesystem_type(reg.lxcpath))
    if why is not None:
        raise GpushellError(why, status=ExitStatus.USAGE)
    if pool.enable_quotas(reg.lxcpath):
        report(f"turned on btrfs quotas for {reg.lxcpath}")
    storage = BtrfsStorage(reg.lxcpath)
    todo, done = plan(chosen(reg, names), moved_containers(reg))
    for already in done:
        report(f"{already.name}: already moved")
    failures = 0
    for wanted in todo:
        # Each student under the registry lock (no add, remove, set or apply meanwhile)
        # and their own (no login, snapshot or restore): from a fresh read of the registry.
        with registry_store.Change(paths) as held:  # nothing written: the lock and a fresh read
            reg = held.old
            if wanted.name not in reg.users:
                continue  # removed meanwhile
            user = reg.users[wanted.name]
            try:
                with locked(paths.user_lock(user.name), ADMIN_WAIT, admin_busy(user.name)):
                    move_student(reg, user, storage, report)
            except (GpushellError, OSError) as exc:
                failures += 1
                message = exc.user_message if isinstance(exc, GpushellError) else str(exc)
                fail(f"{user.name} not moved (left as they were): {message}")
    pool.rescan_quotas(reg.lxcpath)
    switch_registry(paths, report)
    return failures


def switch_registry(paths: Paths, report: Report) -> None:
    """`storage: btrfs` in the registry once every student's container directory is a subvolume."""

    def edit(text: str, reg: Registry) -> str:
        if reg.storage == "btrfs" or len(moved_containers(reg)) < len(reg.users):
            return text
        return registry_edit.set_setting(text, "storage", "btrfs")

    old, new = registry_store.update(paths, edit)
    if new.storage == "btrfs" and old.storage != "btrfs":
        report("every student has moved: the registry says storage: btrfs")
    elif new.storage != "btrfs":
        left = len(new.users) - len(moved_containers(new))
        report(f"{left} student(s) still on dir storage; the registry says storage: dir until they move")
