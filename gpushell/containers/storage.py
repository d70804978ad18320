"""Where a container's trees live and how they are made, copied and removed: the storage seam.

Everything provision, snapshots, rebuild and template do to a tree goes
through a `Storage`: make a template's (or a container's) empty place,
clone the template into a new container root, snapshot a live root, copy
a snapshot (or the template) back as a new root, remove any of them,
check room up front, hold a container to its disk quota and say what it
uses.  for_registry picks the kind from the registry's `storage:`.

`dir` (dirstorage.py, whose `Storage` is also the interface): directory copies on whatever filesystem holds
the lxcpath.  A new container gets a full copy of the template (root's
own tree, never run) by `cp -a`; a snapshot, restore or rebuild copies a
tree the container wrote by treecopy, which walks it by descriptors and
never follows a link.  No quota: a container's disk is only counted.

`btrfs` (btrfs.py): subvolumes and their snapshots, with a quota group
per container.  Another copy-on-write kind (ZFS datasets, LVM thin
volumes) is one more module with these methods and one branch below.
"""

from __future__ import annotations

from .btrfs import BtrfsStorage, check_lxcpath
from .dirstorage import DirStorage, Storage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry

__all__ = ["BtrfsStorage", "DirStorage", "Storage", "check_supported", "for_registry"]


def for_registry(reg: Registry) -> Storage:
    """How the registry's containers are stored: `dir` (the default) or `btrfs`."""
    if reg.storage == "btrfs":
        return BtrfsStorage(reg.lxcpath)
    return DirStorage()


def check_supported(reg: Registry) -> None:
    """Refuse, in one line, a `storage:` the lxcpath's filesystem cannot give (before any work)."""
    if reg.storage == "btrfs":
        check_lxcpath(reg.lxcpath)
