"""btrfs storage: subvolumes, their snapshots, and a quota group per container.

    {lxcpath}/TEMPLATE/rootfs                       a subvolume, never run
    {lxcpath}/NAME/                                  a subvolume (id D): config, logs
    {lxcpath}/NAME/rootfs                            a writable snapshot of the template's rootfs
    {lxcpath}/NAME/gpushell-snapshots/SNAP/rootfs    a read-only snapshot of NAME/rootfs

A new container shares every block with the template; a snapshot is one
atomic act of the filesystem (no path walk, nothing for a running
container to race); restore and rebuild make `rootfs.new` a snapshot and
swap it in by rename, as with directories.

Quota: the container's directory is a subvolume so that its id D stays
the same through rebuilds and restores; the level-1 quota group 1/D
holds it, its rootfs and every snapshot (made into the group with
`snapshot -i`).  Its limit is on *exclusive* bytes: what only the
container's own subvolumes reference, so the blocks it still shares with
the template cost it nothing, and a snapshot costs what it alone keeps.
A write past it fails with EDQUOT inside the container.  Cloning the
template into a group leaves the filesystem's accounting inconsistent
(the template is in no group), so a rescan follows each such clone.

Every `btrfs` call goes through system.runner.run (argv, never a shell).
Subvolumes below one being removed (a container's snapshots, or one its
root made inside its rootfs) are found by id from `btrfs subvolume list`,
never by walking the tree, and removed deepest first.
"""

from __future__ import annotations

import os
import re
import stat

from ..core.errors import GpushellError
from ..system.runner import LARGE_OUTPUT, run
from . import treecopy
from .dirstorage import Storage, copy_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SUBVOLUME_ROOT_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume
QUOTA_LEVEL = 1
RESCAN_TIMEOUT = 1800.0
SUBVOLUME_LINE = re.compile(r"ID (\d+) gen \d+ parent (\d+) top level \d+ path ")
QGROUP_ID = re.compile(r"\d+/\d+")


class BtrfsError(GpushellError):
    pass


# --- pure ---------------------------------------------------------------------


def quota_group(subvolume_id: int) -> str:
    """The level-1 quota group of the container whose directory is subvolume subvolume_id."""
    return f"{QUOTA_LEVEL}/{subvolume_id}"


class Qgroup:
    """One row of `btrfs qgroup show -pcre --raw`: bytes referenced and exclusive, the limit, relations."""

    __slots__ = ("children", "exclusive", "max_exclusive", "parents", "referenced")

    def __init__(
        self,
        referenced: int,
        exclusive: int,
        max_exclusive: int | None,
        parents: tuple[str, ...],
        children: tuple[str, ...],
    ) -> None:
        self.referenced, self.exclusive, self.max_exclusive = referenced, exclusive, max_exclusive
        self.parents, self.children = parents, children


def _relations(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if QGROUP_ID.fullmatch(part))


def parse_qgroups(text: str) -> dict[str, Qgroup]:
    """Qgroup id -> its row, from `btrfs qgroup show -pcre --raw` (pure; header and odd lines skipped).

    Columns: id, referenced, exclusive, max referenced, max exclusive,
    parents, children (and, from btrfs-progs 6.x, a path, ignored: it may
    name what a container made).
    """
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 7 or not QGROUP_ID.fullmatch(words[0]) or not (words[1] + words[2]).isdigit():
            continue
        limit = None if words[4] == "none" or not words[4].isdigit() else int(words[4])
        found[words[0]] = Qgroup(
            int(words[1]), int(words[2]), limit, _relations(words[5]), _relations(words[6])
        )
    return found


def parse_subvolume_parents(text: str) -> dict[int, int]:
    """Subvolume id -> its parent's id, from `btrfs subvolume list -p` (pure).

    The path at each line's end is a name a container may have chosen,
    newlines included: a forged line naming an id twice is refused, never
    believed (it could make another container's subvolume look like ours).
    """
    parents: dict[int, int] = {}
    for line in text.splitlines():
        match = SUBVOLUME_LINE.match(line)
        if match is None:
            continue
        subvolume, parent = int(match[1]), int(match[2])
        if subvolume in parents:
            raise BtrfsError(
                "your container's storage could not be read; ask your admin",
                f"btrfs subvolume list names subvolume {subvolume} twice (a forged path?); nothing removed",
            )
        parents[subvolume] = parent
    return parents


def descendants(parents: dict[int, int], top: int) -> list[int]:
    """Every subvolume below top, deepest first: the order they can be deleted in (pure)."""
    children: dict[int, list[int]] = {}
    for subvolume, parent in parents.items():
        children.setdefault(parent, []).append(subvolume)
    order: list[int] = []
    pending = [top]
    seen = {top}
    while pending:
        for child in sorted(children.get(pending.pop(), [])):
            if child not in seen:
                seen.add(child)
                order.append(child)
                pending.append(child)
    return order[::-1]


def mount_fstype(mountinfo: str, path: str) -> str | None:
    """The type of the filesystem holding path (absolute, resolved), from /proc/self/mountinfo (pure)."""
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        words = fields.split()
        if len(words) < 5 or not rest:
            continue
        point = _unescape(words[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last mount over a point wins
            best, kind = point, rest.split()[0]
    return kind


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)


# --- the host ---------------------------------------------------------------


def is_btrfs(path: str) -> bool:
    """Whether path (or, while it does not exist yet, its nearest existing parent) is on btrfs."""
    existing = os.path.realpath(path)
    while not os.path.exists(existing) and existing != "/":
        existing = os.path.dirname(existing)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as stream:
            mountinfo = stream.read()
    except OSError:
        return False
    return mount_fstype(mountinfo, os.path.realpath(existing)) == "btrfs"


def check_lxcpath(lxcpath: str) -> None:
    """One clear line when `storage: btrfs` is asked for and the lxcpath is not on btrfs."""
    if not is_btrfs(lxcpath):
        raise GpushellError(
            f"storage: btrfs needs the lxcpath {lxcpath} on a btrfs filesystem, and it is not; "
            "mount one there (mkfs.btrfs, then `btrfs quota enable`) or use storage: dir"
        )


def is_subvolume(path: str) -> bool:
    """Whether path is itself a subvolume's root (never through a link)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_ino == SUBVOLUME_ROOT_INODE


def btrfs(*args: str, check: bool = True, timeout: float = 300.0) -> str:
    return run(["btrfs", *args], check=check, timeout=timeout, max_output=LARGE_OUTPUT).stdout


def subvolume_id(path: str) -> int:
    return int(btrfs("inspect-internal", "rootid", path).strip())


class BtrfsStorage(Storage):
    """Subvolumes and snapshots on the btrfs filesystem holding lxcpath, a quota group per container."""

    kind = "btrfs"
    has_quota = True

    def __init__(self, lxcpath: str) -> None:
        self.lxcpath = lxcpath

    # --- places ---------------------------------------------------------------

    def new_container_dir(self, lxcpath: str, prefix: str) -> str:
        check_lxcpath(lxcpath)
        # Eight characters after the prefix, as mkdtemp's: leftovers knows an interrupted add's by them.
        directory = os.path.join(lxcpath, f"{prefix}{os.urandom(4).hex()}")
        btrfs("subvolume", "create", directory)
        os.chmod(directory, 0o700)
        try:
            self._ensure_group(directory)
        except BaseException:
            self.remove(directory, ignore_errors=True)
            raise
        return directory

    def make_root(self, path: str) -> None:
        check_lxcpath(os.path.dirname(path))
        btrfs("subvolume", "create", path)
        os.chmod(path, 0o755)

    def tree_to_subvolume(self, source: str, target: str, what: str, readonly: bool = False) -> None:
        """A new subvolume at target holding a copy of the directory tree source.

        For moving a container from `dir` storage: the copy is treecopy's
        (descriptors, no link followed), so source may be a tree a
        container wrote; the subvolume joins the quota group of the
        container directory it is made in.  readonly: made read-only once
        full, as every snapshot is.  A failed copy leaves nothing.
        """
        btrfs("subvolume", "create", *self._inherit(target), target)
        try:
            treecopy.copy_tree(source, target, target_made=True)
            if readonly:
                btrfs("property", "set", "-ts", target, "ro", "true")
        except BaseException as exc:
            self.remove(target, ignore_errors=True)
            if isinstance(exc, OSError):
                raise copy_error(exc, source, target, what) from None
            raise

    # --- copies ---------------------------------------------------------------

    def copy_template(self, template_root: str, target: str) -> None:
        """A writable snapshot of the template's subvolume: instant, every block shared."""
        if not is_subvolume(template_root):
            # A template unpacked before the lab moved to btrfs: a subvolume filled by cp,
            # which shares blocks by reflink on btrfs.  (The template is root's, never run.)
            btrfs("subvolume", "create", *self._inherit(target), target)
            run(["cp", "-a", "--reflink=auto", "-T", template_root, target], timeout=900)
        else:
            self._snapshot(template_root, target, "your new container", readonly=False)
        # Waited for: the new container has not run yet, so the limit holds from its first start.
        self.settle_counts(wait=True)

    def snapshot(self, live: str, target: str, what: str) -> None:
        self._snapshot(live, target, what, readonly=True)  # the caller settles the counts, unfrozen

    def copy_tree(self, source: str, target: str, what: str) -> None:
        if not is_subvolume(source):
            super().copy_tree(source, target, what)  # a snapshot kept from `dir` days
            return
        self._snapshot(source, target, what, readonly=False)
        self.settle_counts()

    def _snapshot(self, source: str, target: str, what: str, readonly: bool) -> None:
        argv = [
            "subvolume",
            "snapshot",
            *(["-r"] if readonly else []),
            *self._inherit(target),
            source,
            target,
        ]
        result = run(["btrfs", *argv], check=False, timeout=300)
        if result.returncode != 0:
            detail = f"btrfs {' '.join(argv)}: {result.stderr.strip()}"
            if "quota exceeded" in result.stderr.lower() or "no space" in result.stderr.lower():
                raise GpushellError(f"not enough disk space (or quota) for {what}; nothing was kept", detail)
            raise GpushellError(f"the copy for {what} failed; nothing was kept; ask your admin", detail)

    def _inherit(self, target: str) -> list[str]:
        """`-i GROUP` for a subvolume made in a container's directory (as its rootfs or in a snapshot)."""
        for directory in (os.path.dirname(target), os.path.dirname(os.path.dirname(os.path.dirname(target)))):
            if is_subvolume(directory) and os.path.dirname(directory) == self.lxcpath.rstrip("/"):
                return ["-i", quota_group(subvolume_id(directory))]
        return []

    # --- removal ----------------------------------------------------------------

    def remove(self, path: str, ignore_errors: bool = False) -> None:
        """Delete the subvolumes at and below path (deepest first, by id), then what else is there."""
        try:
            for subvolume in self._subvolumes_within(path):
                self._delete_subvolume(subvolume)
        except (OSError, GpushellError):
            if not ignore_errors:
                raise
        super().remove(path, ignore_errors)

    def _subvolumes_within(self, path: str, depth: int = 0) -> list[str]:
        """Subvolumes at or under path, looked for only down the layout's own root-owned directories.

        A rootfs is never walked: subvolumes a container made inside one are
        found by id under the rootfs's own subvolume (_delete_subvolume).
        """
        if is_subvolume(path):
            return [path]
        if depth >= 3 or not os.path.isdir(path) or os.path.islink(path):
            return []
        found = []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name.startswith("rootfs") and not is_subvolume(entry.path):
                        continue  # a plain rootfs: rmtree takes it
                    found += self._subvolumes_within(entry.path, depth + 1)
        return found

    def _delete_subvolume(self, path: str) -> None:
        top = subvolume_id(path)
        parents = parse_subvolume_parents(btrfs("subvolume", "list", "-p", self.lxcpath))
        for nested in descendants(parents, top):
            btrfs("subvolume", "delete", "--subvolid", str(nested), self.lxcpath)
        btrfs("subvolume", "delete", path)
        # Its quota group, if it was a container's directory (none otherwise: the failure is expected).
        btrfs("qgroup", "destroy", quota_group(top), self.lxcpath, check=False)

    # --- room, quota, use ---------------------------------------------------------

    def check_space(
        self, directory: str, size: Callable[[], int], what: str, *, copied: bool = False
    ) -> None:
        """Room for a copy of size() bytes, asked only for one that takes room (copied).

        A snapshot or a clone takes none when made (a write past room or
        quota fails cleanly): nothing to check.  copied: a tree copied in
        by tree_to_subvolume, checked as dir's copies are; it may share
        extents (copy_file_range clones within one filesystem) but need
        not, so room for all of it is asked: a copy never fills the pool
        every student writes to.
        """
        if copied:
            super().check_space(directory, size, what)

    def set_quota(self, directory: str, limit: int) -> None:
        """Hold 1/D (the directory's subvolume, its rootfs and snapshots) to limit exclusive bytes."""
        if not is_subvolume(directory):
            return  # none yet, or a plain directory from `dir` days: no quota until it is migrated
        group = self._ensure_group(directory)
        btrfs("qgroup", "limit", "-e", str(limit), group, directory)

    def _ensure_group(self, directory: str) -> str:
        group = quota_group(subvolume_id(directory))
        btrfs("qgroup", "create", group, directory, check=False)  # there already: fine
        groups = self._groups(directory)
        if group not in groups:
            raise GpushellError(
                "the disk quota could not be set; ask your admin",
                f"no quota group {group} for {directory}: is quota on? btrfs quota enable {self.lxcpath}",
            )
        member = f"0/{group.partition('/')[2]}"
        if group not in groups.get(member, Qgroup(0, 0, None, (), ())).parents:
            btrfs("qgroup", "assign", "--no-rescan", member, group, directory, check=False)
        return group

    def _groups(self, path: str) -> dict[str, Qgroup]:
        return parse_qgroups(btrfs("qgroup", "show", "-pcre", "--raw", path, check=False))

    def settle_counts(self, wait: bool = False) -> None:
        """Start a rescan when a snapshot into a quota group left the counts inconsistent.

        Until a rescan ends the kernel counts nothing, so no limit holds.
        The kernel (6.x) marks them so after a snapshot from outside the
        group (the template) and after one from inside it whose group shares
        blocks (with the template, always); when it does not, this costs one
        `qgroup show`.  The rescan walks the whole pool (seconds for a few
        GB, more for a big lab); where the container runs meanwhile, waiting
        would shorten no window, so only a caller whose container has not
        run yet, or that reads the counts next, waits (wait).
        """
        shown = run(["btrfs", "qgroup", "show", "--raw", self.lxcpath], check=False, max_output=LARGE_OUTPUT)
        if "inconsistent" in shown.stderr:
            self._rescan(wait)
        elif wait:  # one started earlier may still run
            run(["btrfs", "quota", "rescan", "-W", self.lxcpath], check=False, timeout=RESCAN_TIMEOUT)

    def _rescan(self, wait: bool) -> None:
        """Start a rescan (and wait for it when asked).

        One already running began before this snapshot, and its end leaves
        the counts inconsistent still: wait for it, then start one again.
        """
        rescan = ["btrfs", "quota", "rescan", *(["-w"] if wait else []), self.lxcpath]
        if run(rescan, check=False, timeout=RESCAN_TIMEOUT).returncode != 0:
            btrfs("quota", "rescan", "-W", self.lxcpath, timeout=RESCAN_TIMEOUT)
            btrfs(*rescan[1:], timeout=RESCAN_TIMEOUT)

    def disk_used(self, directory: str) -> int | None:
        """The container's exclusive bytes: its rootfs and snapshots, less what the template shares."""
        if not is_subvolume(directory):
            return None
        try:
            group = self._groups(directory).get(quota_group(subvolume_id(directory)))
        except (GpushellError, ValueError):
            return None
        return None if group is None else group.exclusive

    def quota_of(self, directory: str) -> int | None:
        """The limit its quota group holds now (None: none set, or no group)."""
        try:
            group = self._groups(directory).get(quota_group(subvolume_id(directory)))
        except (GpushellError, ValueError):
            return None
        return None if group is None else group.max_exclusive

    def snapshot_sizes(self, directory: str, roots: dict[str, str]) -> dict[str, int]:
        """What each snapshot alone keeps (its level-0 group's exclusive bytes)."""
        try:
            ids = {name: subvolume_id(root) for name, root in roots.items() if is_subvolume(root)}
            groups = self._groups(directory) if ids else {}
        except (GpushellError, ValueError):
            return {}
        return {
            name: groups[f"0/{number}"].exclusive for name, number in ids.items() if f"0/{number}" in groups
        }
