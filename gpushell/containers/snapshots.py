"""A student's snapshots: whole copies of their container's rootfs, kept beside it.

    {lxcpath}/{container}/gpushell-snapshots/NAME/rootfs   the copy (ids as on disk)
    {lxcpath}/{container}/gpushell-snapshots/NAME/info     created=, size=, running=

The snapshot directory is root's alone (0700) and outside the rootfs, so
the container never sees it, and a student can only ever name snapshots
under their own container's directory.  A copy is made in a dot-named
staging directory and renamed into place when complete: a failed or
killed copy never lists.  A running container is frozen for the copy, so
the snapshot is one point in time without a shutdown; a stopped one is
kept from starting (hold.py), and either way a copy made while the hold
failed is thrown away.  The copy itself never follows a link the
container made (treecopy.py), and is refused up front when the disk
cannot take it.

Replacing a rootfs (restore here, rebuild in rebuild.py) copies into
`rootfs.new` first and swaps with two renames; `settle` finishes or undoes
a swap that a killed helper left half done.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from ..core.errors import ExitStatus, GpushellError
from ..core.menu import SNAPSHOT_NAME_RULE, is_snapshot_name
from ..core.model import Registry, User
from ..core.snapshotlist import Snapshot
from ..system import rootfs
from ..system.files import read_private
from . import hold, provision, storage
from .backend import FROZEN, RUNNING, ContainerDriver

SNAPSHOT_DIR = "gpushell-snapshots"
INFO_FILE = "info"
ROOTFS, ROOTFS_NEW, ROOTFS_OLD = "rootfs", "rootfs.new", "rootfs.old"
# Written (by rebuild) before a student's home is moved into rootfs.new:
# from then on rootfs.new may hold the only copy of it.  Its content is
# the home's path inside the rootfs.
HOLDS_HOME = "rootfs.new.holds-home"
MAX_INFO = 4096


# --- pure ------------------------------------------------------------------


def auto_name(now: float) -> str:
    return time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime(now))


def format_info(snapshot: Snapshot) -> str:
    return f"created={snapshot.created}\nsize={snapshot.size}\nrunning={int(snapshot.running)}\n"


def parse_info(name: str, text: str) -> Snapshot | None:
    """A snapshot from its info text; None when it is not one we wrote."""
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    fields = [values.get(key, "") for key in ("created", "size", "running")]
    if not all(field.isascii() and field.isdigit() for field in fields):
        return None
    return Snapshot(name, int(fields[0]), int(fields[1]), fields[2] == "1")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def refusal(existing: list[str], name: str, limit: int) -> str | None:
    """Why a snapshot named `name` may not be made now, or None (pure)."""
    if limit <= 0:
        return "snapshots are turned off for you (your limit is 0); ask your admin"
    if name in existing:
        return f"you already have a snapshot named {name}; choose another name or: delete-snapshot {name}"
    if len(existing) >= limit:
        return (
            f"you have {plural(len(existing), 'snapshot')}, your limit; "
            "delete one first: delete-snapshot NAME"
        )
    return None


# --- where they live ---------------------------------------------------------


def container_dir(reg: Registry, user: User) -> str:
    return provision.container_dir(reg, user.container)


def snapshots_dir(reg: Registry, user: User) -> str:
    return os.path.join(container_dir(reg, user), SNAPSHOT_DIR)


def _checked_name(name: str) -> str:
    # Checked by the login shell and the helper already; a path never gets here.
    if not is_snapshot_name(name):
        raise GpushellError(SNAPSHOT_NAME_RULE, f"refused snapshot name {name!r}", ExitStatus.USAGE)
    return name


def list_snapshots(reg: Registry, user: User, measured: bool = False) -> list[Snapshot]:
    """The user's complete snapshots, oldest first.

    measured: each one's size as the storage tells it now where it can (on
    btrfs, the bytes that snapshot alone keeps) instead of its recorded size.
    """
    if reg.cluster is not None:
        from . import lxdsnapshots

        return lxdsnapshots.list_snapshots(reg, user)
    directory = snapshots_dir(reg, user)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        # Staging and deleted ones start with a dot, which no snapshot name does.
        if not is_snapshot_name(name) or not os.path.isdir(os.path.join(directory, name, ROOTFS)):
            continue
        text = read_private(os.path.join(directory, name, INFO_FILE), MAX_INFO)
        snapshot = None if text is None else parse_info(name, text)
        if snapshot is not None:
            found.append(snapshot)
    found.sort(key=lambda snap: (snap.created, snap.name))
    if measured and found:
        roots = {snap.name: os.path.join(directory, snap.name, ROOTFS) for snap in found}
        sizes = storage.for_registry(reg).snapshot_sizes(container_dir(reg, user), roots)
        found = [snap.replace(size=sizes.get(snap.name, snap.size)) for snap in found]
    return found


def _find(reg: Registry, user: User, name: str) -> str:
    """The directory of the user's snapshot `name`; refused when they have none of that name."""
    _checked_name(name)
    if name not in {snapshot.name for snapshot in list_snapshots(reg, user)}:
        raise GpushellError(f"no snapshot {name}; see: snapshots", f"{user.name} has no snapshot {name!r}")
    return os.path.join(snapshots_dir(reg, user), name)


def _live_rootfs(reg: Registry, user: User) -> str:
    path = os.path.join(container_dir(reg, user), ROOTFS)
    if not os.path.isdir(path):
        raise GpushellError("your container does not exist", f"{path} is missing")
    return path


def _remove_stale_staging(directory: str, copies: storage.Storage) -> None:
    """Leftovers of a killed copy or delete (dot names).  The helper holds the user's lock."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.startswith("."):
                copies.remove(os.path.join(directory, name), ignore_errors=True)


# --- create, delete ----------------------------------------------------------


def create(
    reg: Registry, user: User, driver: ContainerDriver, name: str | None, now: float | None = None
) -> Snapshot:
    """Copy the user's rootfs into a new snapshot; a running container is frozen meanwhile."""
    now = time.time() if now is None else now
    name = _checked_name(auto_name(now) if name is None else name)
    why_not = refusal([snapshot.name for snapshot in list_snapshots(reg, user)], name, user.snapshot_limit)
    if why_not is not None:
        # ERROR, not USAGE: the helper shows the student only ERROR's message.
        raise GpushellError(why_not, f"snapshot {name!r} refused: {why_not}")
    if reg.cluster is not None:
        from . import lxdsnapshots

        return lxdsnapshots.create(reg, user, driver, name, now)
    live = _live_rootfs(reg, user)
    directory = snapshots_dir(reg, user)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # the copies hold the container's files with their ids
    copies = storage.for_registry(reg)
    _remove_stale_staging(directory, copies)
    # An estimate, before the freeze keeps the student's processes waiting:
    # a copy that still runs out of room fails cleanly (storage.copy_tree).
    copies.check_space(directory, lambda: rootfs.tree_size(live), "a snapshot")
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    try:
        with hold.held(driver, user.container, "snapshot") as held:
            copies.snapshot(live, os.path.join(staging, ROOTFS), "a snapshot")
            held.check()  # a restart meanwhile: the copy is no one moment, so it goes
        copies.settle_counts()  # after the hold: a quota rescan must not keep the container frozen
        # The copy's size on disk; 0 where the storage tells what a snapshot keeps when listed.
        size = 0 if copies.has_quota else rootfs.tree_size(os.path.join(staging, ROOTFS))
        snapshot = Snapshot(name, int(now), size, held.running)
        with open(os.path.join(staging, INFO_FILE), "w", encoding="ascii") as info:
            info.write(format_info(snapshot))
        # Fails (not replaces) if the name appeared meanwhile: it is a non-empty directory.
        os.rename(staging, os.path.join(directory, name))
    except BaseException:
        copies.remove(staging, ignore_errors=True)
        raise
    return snapshot


def delete(reg: Registry, user: User, name: str) -> None:
    if reg.cluster is not None:
        from . import lxdsnapshots

        return lxdsnapshots.delete(reg, user, _checked_name(name))
    path = _find(reg, user, name)
    # Out of the listing at once (a dot name), then removed.
    doomed = f"{snapshots_dir(reg, user)}/.deleting-{name}-{os.urandom(4).hex()}"
    os.rename(path, doomed)
    storage.for_registry(reg).remove(doomed, ignore_errors=True)


# --- restore, and the rootfs swap it shares with rebuild ----------------------


def restore(reg: Registry, user: User, driver: ContainerDriver, name: str) -> bool:
    """Replace the user's rootfs with a copy of snapshot `name`; whether it was running.

    The copy is made while the container keeps running; it is stopped only
    for the swap, which nothing can start it during (hold.stopped), and
    started again afterwards if it ran (its sshd is not waited for here).
    On any failure the current rootfs stays.  On a cluster the engine restores.
    """
    if reg.cluster is not None:
        from . import lxdsnapshots

        return lxdsnapshots.restore(reg, user, driver, _checked_name(name))
    source = os.path.join(_find(reg, user, name), ROOTFS)
    directory = container_dir(reg, user)
    copies = storage.for_registry(reg)
    settle(directory, copies)
    _live_rootfs(reg, user)
    size = sum(snapshot.size for snapshot in list_snapshots(reg, user) if snapshot.name == name)
    copies.check_space(directory, lambda: size, "the restore")
    staging = os.path.join(directory, ROOTFS_NEW)
    running = False
    try:
        # The snapshot is root's and still; rootfs.new is outside the
        # container's view: the copy may run while the container does.
        copies.copy_tree(source, staging, "the restore")
        running = stop_for_swap(driver, user.container)
        with hold.stopped(driver, user.container, "restore"):
            swap(directory, copies)
    except BaseException:
        copies.remove(staging, ignore_errors=True)
        if running:
            with contextlib.suppress(GpushellError):
                driver.start(user.container)
        raise
    if running:
        driver.start(user.container)
    return running


def stop_for_swap(driver: ContainerDriver, container: str) -> bool:
    """Stop the container if it runs (or was left frozen); whether it did."""
    state = driver.state(container)
    if state == FROZEN:
        driver.unfreeze(container)  # a frozen container cannot shut down
    if state in (RUNNING, FROZEN):
        driver.stop(container)
        return True
    return False


def swap(directory: str, copies: storage.Storage | None = None) -> None:
    """Make directory/rootfs.new the rootfs (the container is stopped); the old one goes.

    Two renames: subvolumes rename like directories within one filesystem.
    """
    current, new, old = (os.path.join(directory, name) for name in (ROOTFS, ROOTFS_NEW, ROOTFS_OLD))
    replace(current, new, old)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, HOLDS_HOME))
    # Done; a failed removal only leaves garbage that settle() takes next time.
    (copies or storage.DirStorage()).remove(old, ignore_errors=True)


def replace(current: str, new: str, old: str) -> None:
    """Put new in current's place, current kept as old: two renames, the first undone if the second fails.

    Killed between them, current is missing and new complete: the caller's
    settle finishes it (this module's, or storage migrate's).
    """
    os.rename(current, old)
    try:
        os.rename(new, current)
    except BaseException:
        os.rename(old, current)
        raise


def settle(directory: str, copies: storage.Storage | None = None) -> None:
    """Finish or undo a swap that a killed helper left half done; then drop the leftovers.

    Nothing that may hold a student's only copy of their files is removed:
    a rootfs.new that a home was moved into gives the home back first.
    """
    current, new, old = (os.path.join(directory, name) for name in (ROOTFS, ROOTFS_NEW, ROOTFS_OLD))
    marker = os.path.join(directory, HOLDS_HOME)
    if not os.path.lexists(current) and (os.path.isdir(new) or os.path.isdir(old)):
        # Killed between the two renames of swap(): rootfs.new was complete.
        os.rename(new if os.path.isdir(new) else old, current)
    elif os.path.isdir(new) and os.path.lexists(marker):
        _give_home_back(current, new, marker)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    for leftover in (new, old):
        if os.path.lexists(leftover):
            (copies or storage.DirStorage()).remove(leftover, ignore_errors=True)


def _give_home_back(current: str, new: str, marker: str) -> None:
    text = read_private(marker, MAX_INFO) or ""
    home = text.strip()
    if not home.startswith("home/") or rootfs.entry_type(current, home) is not None:
        return  # the move had not happened: the home is still in the rootfs
    if rootfs.entry_type(new, home) == "dir":
        rootfs.move(new, home, current, home)
