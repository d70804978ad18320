"""Where a container's trees live and how they are copied: the storage seam.

Directory copies today (`dir`): a new container gets a full copy of the
template (root's own tree, never run) by `cp -a`; a snapshot, restore or
rebuild copies a tree the container wrote by treecopy, which walks it by
descriptors and never follows a link.  Copy-on-write storage (btrfs
subvolumes and their snapshots) is another class with these methods,
picked by for_registry.
"""

from __future__ import annotations

from ..core.errors import GpushellError
from ..system.runner import run
from . import treecopy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry


class DirStorage:
    """Full directory copies on whatever filesystem holds the lxcpath."""

    def copy_template(self, template_root: str, target: str) -> None:
        """A full copy of the template's rootfs (target must not exist yet): ids, modes, links, xattrs.

        `cp -a` copies links as links and special files as special files; it
        never follows a link.  The template is root's and never runs, so a
        path walk is safe here, unlike in a container's own tree.
        """
        run(["cp", "-a", "--reflink=auto", template_root, target], timeout=900)

    def check_space(self, directory: str, size: int, what: str) -> None:
        """Refuse up front (a clear message) when `size` bytes more will not fit beside directory."""
        treecopy.check_space(directory, size, what)

    def copy_tree(self, source: str, target: str, what: str) -> None:
        """A copy of a tree a container wrote, its failures told without host paths (the log keeps them)."""
        try:
            treecopy.copy_tree(source, target)
        except OSError as exc:
            if exc.errno in treecopy.SPACE_ERRORS:
                raise GpushellError(
                    f"not enough disk space for {what}; nothing was kept", f"copy to {target}: {exc}"
                ) from None
            raise GpushellError(
                f"the copy for {what} failed; nothing was kept; ask your admin",
                f"copy {source} to {target}: {exc}",
            ) from None


def for_registry(reg: Registry) -> DirStorage:
    """How the registry's containers are stored and copied: directory copies, the only kind yet."""
    return DirStorage()
