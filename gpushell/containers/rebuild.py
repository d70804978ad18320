"""`rebuild`: give a student a fresh container from the current template.

The new rootfs is prepared beside the old one (`rootfs.new`: a full copy
of the template, the container's identity, the student's account) while
the old container still runs; it is stopped only to move the home over
and swap the two directories (snapshots.swap).  The old container's SSH
host keys are kept, so the student's known_hosts stays valid; its IP,
port, GPUs and LXC config come from the registry and stay as they are;
its snapshots stay too.  Until the swap nothing of the old container has
changed, and a failure puts a moved home back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil

from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..system import rootfs
from ..system.files import write_atomically
from . import hold, keyrescue, provision, snapshots, storage
from .backend import ContainerDriver


def rebuild(reg: Registry, user: User, driver: ContainerDriver, keys: str, keep_home: bool) -> None:
    """Replace the user's container with a fresh copy of the template; it is left stopped."""
    directory = provision.container_dir(reg, user.container)
    template_root = os.path.join(provision.container_dir(reg, reg.template), snapshots.ROOTFS)
    if not os.path.isdir(template_root):
        raise GpushellError(
            "the template for new containers is missing; ask your admin",
            f"template {reg.template} has no rootfs; run: gpushell-admin template build",
        )
    copies = storage.for_registry(reg)
    snapshots.settle(directory, copies)
    current = os.path.join(directory, snapshots.ROOTFS)
    if not os.path.isdir(current):
        raise GpushellError("your container does not exist", f"{current} is missing")
    home = f"home/{user.name}"
    if keep_home:
        check_keepable(current, home)  # before the long copy; checked again at the move
    host_keys = keyrescue.read_host_keys(current)
    copies.check_space(directory, lambda: rootfs.tree_size(template_root), "the rebuild")
    staging = os.path.join(directory, snapshots.ROOTFS_NEW)
    was_running = False
    try:
        # The template is root's and never runs, but one copy for all the
        # helper's copies: its failures are told without host paths.
        copies.copy_tree(template_root, staging, "the rebuild")
        provision.give_identity(staging, user, host_keys)
        provision.create_account(staging, user.name, keys)
        was_running = snapshots.stop_for_swap(driver, user.container)
        # From here to the swap the old rootfs is worked on: nothing may start it.
        with hold.stopped(driver, user.container, "rebuild"):
            if keep_home:
                move_home(directory, staging, user.name, keys, copies)
            snapshots.swap(directory, copies)
    except BaseException:
        with contextlib.suppress(OSError, GpushellError):  # the first error is the one to report
            _undo(directory, home if keep_home else None, copies)
        if was_running:
            with contextlib.suppress(GpushellError):
                driver.start(user.container)
        raise
    _record_origin(directory, reg.template)


def check_keepable(root: str, home: str) -> None:
    """Refuse to keep a home that is not a real directory under a real /home (a planted link)."""
    for path in ("home", home):
        kind = rootfs.entry_type(root, path)
        if kind not in ("dir", None):
            raise GpushellError(
                f"your /{path} is not a directory, so it cannot be kept; "
                "to rebuild without it: rebuild --wipe-home --yes",
                f"{root}/{path} is a {kind}; rebuild keeping the home refused",
            )


def move_home(
    directory: str, staging: str, name: str, keys: str, copies: storage.Storage | None = None
) -> None:
    """Move the old rootfs's /home/NAME into the new one (the container is stopped), keys put in.

    Where the two rootfs are separate filesystems to rename (btrfs
    subvolumes), the home is copied instead: the container is stopped and
    kept so, and the copy follows no link.
    """
    current = os.path.join(directory, snapshots.ROOTFS)
    home = f"home/{name}"
    check_keepable(current, home)
    if rootfs.entry_type(current, home) is None:
        return  # the student had removed their home: the fresh one stays
    # From here on the new rootfs may hold the only copy of the home.
    with open(os.path.join(directory, snapshots.HOLDS_HOME), "w", encoding="ascii") as marker:
        marker.write(home + "\n")
    # The fresh home from the template's skeleton is ours: it makes way.
    shutil.rmtree(os.path.join(staging, home))
    # Both parents opened with O_NOFOLLOW from their rootfs; the rename moves the directory itself.
    try:
        rootfs.move(current, home, staging, home)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        (copies or storage.DirStorage()).copy_tree(
            os.path.join(current, home), os.path.join(staging, home), "your home"
        )
    keyrescue.install_authorized_keys(staging, name, keys)


def _undo(directory: str, home: str | None, copies: storage.Storage) -> None:
    """After a failure before the swap: the home back where it was, no rootfs.new left."""
    current = os.path.join(directory, snapshots.ROOTFS)
    staging = os.path.join(directory, snapshots.ROOTFS_NEW)
    marker = os.path.join(directory, snapshots.HOLDS_HOME)
    if not os.path.isdir(current):
        return  # the swap itself failed half way: settle() finishes it next time
    if home is not None and os.path.lexists(marker) and rootfs.entry_type(current, home) is None:
        try:
            rootfs.move(staging, home, current, home)
        except FileNotFoundError:
            pass  # never moved (the fresh one was removed first)
        except (OSError, GpushellError):
            return  # rootfs.new and the marker stay: settle() gives the home back next time
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    copies.remove(staging, ignore_errors=True)


def _record_origin(directory: str, template_name: str) -> None:
    """The template it now comes from, for `gpushell-admin template list`."""
    write_atomically(os.path.join(directory, provision.ORIGIN_FILE), f"{template_name}\n")
