"""The storage interface (`Storage`), with directory copies as its ways, and `dir` storage itself.

Every storage kind is a `Storage`: the methods below are what provision,
snapshots, rebuild and template ask of one (storage.py picks the kind).
The defaults are `dir`'s: plain directories on whatever filesystem holds
the lxcpath, copied by `cp -a` (the template) or treecopy (a tree a
container wrote), removed by rmtree, no quota.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..core.errors import GpushellError
from ..system.runner import run
from . import treecopy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Storage:
    """What every storage kind does with a container's trees (DirStorage's ways by default).

    Paths are root's own (the lxcpath, a container's directory, its
    snapshot directory): never inside a rootfs, so no link the container
    made is on the way to them.
    """

    kind = "dir"
    has_quota = False  # whether set_quota holds a container to its limit

    # --- places ---------------------------------------------------------------

    def new_container_dir(self, lxcpath: str, prefix: str) -> str:
        """A new, empty, root-only directory under lxcpath for a container being made (a dot name)."""
        directory = tempfile.mkdtemp(prefix=prefix, dir=lxcpath)
        # Only root may enter: the rootfs holds files with plain ids on disk.
        os.chmod(directory, 0o700)
        return directory

    def make_root(self, path: str) -> None:
        """An empty root (path must not exist) for a template's tree to be unpacked into."""
        os.mkdir(path, 0o755)

    # --- copies ---------------------------------------------------------------

    def copy_template(self, template_root: str, target: str) -> None:
        """A new container's rootfs from the template (target must not exist): ids, modes, links, xattrs.

        `cp -a` copies links as links and special files as special files; it
        never follows a link.  The template is root's and never runs, so a
        path walk is safe here, unlike in a container's own tree.
        """
        run(["cp", "-a", "--reflink=auto", template_root, target], timeout=900)

    def snapshot(self, live: str, target: str, what: str) -> None:
        """A copy of a container's live rootfs (held still by the caller) as a snapshot."""
        self.copy_tree(live, target, what)

    def copy_tree(self, source: str, target: str, what: str) -> None:
        """A new rootfs (target) from a snapshot or the template, for a restore or a rebuild.

        Failures are told without host paths (the log keeps them).
        """
        try:
            treecopy.copy_tree(source, target)
        except OSError as exc:
            raise copy_error(exc, source, target, what) from None

    # --- removal ----------------------------------------------------------------

    def remove(self, path: str, ignore_errors: bool = False) -> None:
        """Remove a container's directory, a rootfs or a snapshot, whatever it holds; no link followed."""
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=ignore_errors)
        elif os.path.lexists(path):
            os.unlink(path)

    # --- room, quota, use ---------------------------------------------------------

    def check_space(self, directory: str, size: Callable[[], int], what: str) -> None:
        """Refuse up front (a clear message) when a copy of size() bytes will not fit beside directory.

        size is asked only by kinds whose copies take room at once (a walk of a tree costs).
        """
        treecopy.check_space(directory, size(), what)

    def settle_counts(self, wait: bool = False) -> None:
        """Bring the storage's use counts up to date after snapshots (held back by snapshot());
        wait: until they are, for a caller that reads them next."""

    def set_quota(self, directory: str, limit: int) -> None:
        """Hold the container in directory (its rootfs and snapshots together) to limit bytes."""

    def disk_used(self, directory: str) -> int | None:
        """Bytes the storage holds against the container in directory; None where it keeps no such
        figure (then only a walk can tell: diskcount.py)."""
        return None

    def snapshot_sizes(self, directory: str, roots: dict[str, str]) -> dict[str, int]:
        """name -> bytes each snapshot root holds that nothing else does; {} where the kind cannot tell."""
        return {}


class DirStorage(Storage):
    """Full directory copies on whatever filesystem holds the lxcpath."""


def copy_error(exc: OSError, source: str, target: str, what: str) -> GpushellError:
    """A failed copy told to the student: out of room, or failed; host paths only in the log."""
    if exc.errno in treecopy.SPACE_ERRORS:
        return GpushellError(
            f"not enough disk space for {what}; nothing was kept", f"copy to {target}: {exc}"
        )
    return GpushellError(
        f"the copy for {what} failed; nothing was kept; ask your admin", f"copy {source} to {target}: {exc}"
    )
