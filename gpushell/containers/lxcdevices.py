"""A device node put into a running LXC container and taken out again, live: no restart.

At start, LXC bind-mounts each GPU node from the host (lxcconfig's
`lxc.mount.entry`) and allows its numbers in the devices cgroup.  A GPU
lent later takes the same two steps into the running container:

- **The node**: a forked child clones the host's node as a detached mount
  (`open_tree`, in the host's mount namespace), joins the mount namespace
  of the container's init (`setns` on a pidfd), creates an empty file at
  /dev/NAME (relative to an O_NOFOLLOW handle of /dev, O_EXCL|O_NOFOLLOW)
  and moves the clone onto it (`move_mount`).  A bind mount of the host's
  node is the only node that opens in an unprivileged container: one made
  with mknod inside would sit on the container's own /dev tmpfs, mounted
  in its user namespace and so nodev, and the kernel refuses the mknod
  anyway (`lxc-device add` fails on both counts).  The child creates the
  file with the owner of the container's /dev as its filesystem uid:
  host root is not mapped in the container's user namespace, and that
  tmpfs refuses to make a file for an unmapped owner (EOVERFLOW).
- **The rule**: cgroup v1 (each controller its own hierarchy, as on the
  reference machine) writes `c MAJ:MIN rwm` to devices.allow of the
  container's cgroup *and of every cgroup below it*: systemd in the
  container puts its processes in child cgroups (init.scope, user.slice),
  which copied the parent's list when they were made and do not see a
  later allow.  Parents come first (a child may not allow what its parent
  denies), each before its children are listed, so a child made meanwhile
  copies the new list.  A deny on the container's own cgroup reaches every
  child (the kernel propagates it).  cgroup v2 has no such files: LXC
  keeps one BPF program per container, and `lxc-cgroup` asks the running
  container's monitor to rebuild it (LXC does so for `devices.*` keys on a
  pure v2 host only; elsewhere it writes the top cgroup's file alone,
  which is why v1 walks the tree itself).

Container root is hostile.  Whatever sits at /dev/NAME before an add
(a symlink, a FIFO, an empty directory, a mount) is unmounted without
following (UMOUNT_NOFOLLOW) and unlinked, never opened or followed; a
non-empty directory stops the add with a message.  The host path (the
node in the registry's `gpu_devices`) is opened before the child enters
the container, checked (a character device with the node's numbers), and
never named inside.  The child runs no program; the parent waits for it a
bounded time and kills it after, so a container that hangs its own /dev
(a FUSE mount on it) hangs nothing of the host's.

A node copied elsewhere by container root (a bind mount of ours) is
still the same device: the cgroup deny is what revokes access.  An
already open file survives the deny, which is why `holders` exists:
every process of the container (found through its cgroup tree, not its
cgroup names or PIDs it shows) with the node open or mapped.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import signal
import stat
import struct

from ..core.errors import GpushellError
from ..system.runner import run
from . import cgroups

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..gpu.gpudevices import Node

# open_tree and move_mount (Linux 5.2) have the same numbers on x86_64 and
# aarch64 (the numbers shared by every architecture since 5.1); glibc has
# wrappers only since 2.36, so they are called by number.
SYSCALLS = {"x86_64": (428, 429), "aarch64": (428, 429)}
OPEN_TREE_CLONE = 1
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT = -100, 0x100, 0x800
AT_STATX_DONT_SYNC = 0x4000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
CLONE_NEWNS = 0x20000
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
STATX_TYPE = 0x1

DEV = "/dev"
CHILD_TIMEOUT = 10.0  # seconds the child may take in the container's mount namespace
MAX_STACKED_MOUNTS = 64  # mounts taken off one name before giving up
MAX_CGROUPS = 10000  # cgroups in one container's tree: more is an attack or a fault
MAX_PIDS_TEXT = 4 * 1024 * 1024  # one cgroup.procs file
MAX_MAPS_TEXT = 64 * 1024 * 1024  # one /proc/PID/maps

# What the child reports (the first word of its message) and what a student reads then.
IN_THE_WAY = "in-the-way"
USER_MESSAGES = {
    IN_THE_WAY: "/dev/{name} in your container is in the way (a directory with files?); "
    "remove it and try again",
    "source": "the GPU device on the host is missing or wrong; ask your admin",
}
DEFAULT_USER_MESSAGE = "the GPU device could not be {done} your container; ask your admin"
DONE = {"add": "added to", "remove": "taken from"}


# --- pure ----------------------------------------------------------------------


def syscall_numbers(machine: str) -> tuple[int, int]:
    """(open_tree, move_mount) for this architecture; refuses the ones not checked."""
    numbers = SYSCALLS.get(machine)
    if numbers is None:
        raise GpushellError(
            "a GPU cannot be added to a running container on this host; ask your admin",
            f"live device add: no open_tree/move_mount numbers for architecture {machine!r} "
            f"(known: {', '.join(sorted(SYSCALLS))})",
        )
    return numbers


def payload_cgroup(proc_cgroup: str, name: str, v2: bool, root: str = cgroups.ROOT) -> str | None:
    """The container's own cgroup directory for its device rules, from its init's /proc/PID/cgroup.

    v1: the devices hierarchy; v2: the unified one.  The path is cut after
    the `lxc.payload.NAME` level (cgroups.container_level) and must end in
    exactly that name: the levels below it are the container's to name.
    """
    path = cgroups.controller_path(proc_cgroup, "" if v2 else "devices")
    if path is None:
        return None
    level = cgroups.container_level(path)
    if level.rpartition("/")[2] != cgroups.PAYLOAD_PREFIX + name:
        return None
    return f"{root}{level}" if v2 else f"{root}/devices{level}"


def lxc_cgroup_argv(lxcpath: str, name: str, verb: str, node: Node) -> list[str]:
    """The v2 rule change: LXC's monitor rebuilds the container's BPF device program."""
    return ["lxc-cgroup", "-P", lxcpath, "-n", name, f"devices.{verb}", node.rule()]


def parse_pids(text: str) -> list[int]:
    """The numbers of a cgroup.procs text, in order, each once (pure)."""
    seen: dict[int, None] = {}
    for word in text.split():
        if word.isascii() and word.isdigit():
            seen.setdefault(int(word), None)
    return list(seen)


def mapped_files(maps: str) -> list[str]:
    """One address range (a map_files name) per distinct file a /proc/PID/maps text maps (pure).

    A line is `start-end perms offset dev inode [path]`; inode 0 maps no file.
    """
    ranges: dict[tuple[str, str], str] = {}
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and fields[4] != "0":
            ranges.setdefault((fields[3], fields[4]), fields[0])
    return list(ranges.values())


def child_failure(report: str, name: str, verb: str) -> GpushellError:
    """The error for a child's report `WHAT ERRNO DETAIL` (pure)."""
    what, _, rest = report.partition(" ")
    code, _, detail = rest.partition(" ")
    reason = os.strerror(int(code)) if code.isdigit() else "no answer"
    user = USER_MESSAGES.get(what, DEFAULT_USER_MESSAGE).format(name=name, done=DONE[verb])
    return GpushellError(user, f"live device {verb} of /dev/{name}: {what}: {reason} {detail}".rstrip())


# --- the container: its init, its cgroup -----------------------------------------


class Container:
    """A running container's init, held by a pidfd, and its cgroup for device rules."""

    def __init__(self, pidfd: int, cgroup: str, v2: bool) -> None:
        self.pidfd, self.cgroup, self.v2 = pidfd, cgroup, v2

    def close(self) -> None:
        os.close(self.pidfd)


def find(name: str, pid: int | None, root: str = cgroups.ROOT) -> Container | None:
    """The running container whose init is pid, or None when it is not (any more) running.

    The PID comes from LXC; the pidfd keeps it from being reused, and the
    cgroup the kernel shows for it must be the container's own, read while
    the pidfd's process still lives, so the two are the same process.
    """
    if pid is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as stream:
            text = stream.read(cgroups.MAX_FILE)
        signal.pidfd_send_signal(pidfd, 0)  # still the same process: the text is its own
    except (OSError, ProcessLookupError):
        os.close(pidfd)
        return None
    v2 = cgroups.unified(root)
    directory = payload_cgroup(text, name, v2, root)
    if directory is None:
        os.close(pidfd)
        raise GpushellError(
            "your container's devices could not be changed; ask your admin",
            f"container {name}: init {pid} has no {'unified' if v2 else 'devices'} cgroup "
            f"named {cgroups.PAYLOAD_PREFIX}{name}",
        )
    return Container(pidfd, directory, v2)


def cgroup_tree(top: str, visit: Callable[[str], None] | None = None) -> list[str]:
    """Every cgroup directory from top down, parents first; visit(dir) runs before a dir is listed.

    A cgroup made below one already visited copied its parent's state then.
    Bounded: a container making cgroups without end stops this, not the host.
    """
    found: list[str] = []
    pending = [top]
    while pending:
        directory = pending.pop()
        if visit is not None:
            try:
                visit(directory)
            except OSError as exc:
                if not removed(exc):
                    raise
                continue
        found.append(directory)
        if len(found) > MAX_CGROUPS:
            raise GpushellError(
                "your container has too many cgroups for its devices to be changed",
                f"cgroup tree {top} has more than {MAX_CGROUPS} cgroups",
            )
        try:
            with os.scandir(directory) as entries:
                pending += sorted(
                    (entry.path for entry in entries if entry.is_dir(follow_symlinks=False)), reverse=True
                )
        except FileNotFoundError:
            continue
    return found


def removed(error: OSError) -> bool:
    """Whether a cgroup file failed because its cgroup is gone or going: ENOENT once removed,
    ENODEV from a file opened before the rmdir.  Either way no task is left in it (a cgroup
    with tasks cannot be removed): a systemd unit inside that ended while its tree was walked."""
    return isinstance(error, FileNotFoundError) or error.errno == errno.ENODEV


def _write(directory: str, file: str, text: str) -> None:
    with open(os.path.join(directory, file), "w", encoding="ascii") as stream:
        stream.write(text)


def allow(lxcpath: str, name: str, container: Container, node: Node) -> None:
    """Let the container (every cgroup of it) open node."""
    if container.v2:
        _lxc_cgroup(lxcpath, name, "allow", node)
        return
    try:
        cgroup_tree(container.cgroup, lambda directory: _write(directory, "devices.allow", node.rule()))
    except OSError as exc:
        raise GpushellError(
            "the GPU could not be allowed in your container; ask your admin",
            f"devices.allow {node.rule()} under {container.cgroup}: {exc.strerror}",
        ) from None


def deny(lxcpath: str, name: str, container: Container, node: Node) -> None:
    """Take node away from the container: the kernel passes a v1 deny down to every child."""
    if container.v2:
        _lxc_cgroup(lxcpath, name, "deny", node)
        return
    try:
        _write(container.cgroup, "devices.deny", node.rule())
    except OSError as exc:
        if removed(exc):
            return  # the container stopped meanwhile: its cgroup and rules are gone
        raise GpushellError(
            "the GPU could not be taken from your container; ask your admin",
            f"devices.deny {node.rule()} in {container.cgroup}: {exc.strerror}",
        ) from None


def _lxc_cgroup(lxcpath: str, name: str, verb: str, node: Node) -> None:
    result = run(lxc_cgroup_argv(lxcpath, name, verb, node), check=False)
    if result.returncode != 0:
        raise GpushellError(
            f"the GPU could not be {'allowed in' if verb == 'allow' else 'taken from'} your container; "
            "ask your admin",
            f"lxc-cgroup devices.{verb} {node.rule()} for {name}: {result.stderr.strip()}",
        )


# --- the node in the container's /dev: a forked child in its mount namespace ------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        raise _Step(what, ctypes.get_errno())
    return result


class _Step(Exception):
    """A step of the child failed: its name and errno travel to the parent."""

    def __init__(self, what: str, code: int, detail: str = "") -> None:
        super().__init__(what)
        self.what, self.code, self.detail = what, code, detail


def _clear(dev: int, name: str) -> None:
    """Take off whatever container root put at /dev/name: mounts, then the entry, never following."""
    os.fchdir(dev)
    for _ in range(MAX_STACKED_MOUNTS):
        if _libc.umount2(name.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
            break  # EINVAL: no mount (left) on it; ENOENT: nothing there
    else:
        raise _Step(IN_THE_WAY, errno.EBUSY, "mounts stacked without end")
    try:
        os.unlink(name, dir_fd=dev)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        try:
            os.rmdir(name, dir_fd=dev)
        except OSError as exc:
            raise _Step(IN_THE_WAY, exc.errno or 0) from None
    except OSError as exc:
        raise _Step(IN_THE_WAY, exc.errno or 0) from None


def _open_dev() -> int:
    """The container's /dev (after setns: "/" is the container's root), refusing a link."""
    try:
        return os.open(DEV, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _Step("dev", exc.errno or 0) from None


def _enter(pidfd: int) -> None:
    _check(_libc.setns(pidfd, CLONE_NEWNS), "setns")


def _add_in_child(pidfd: int, source: str, node: Node, numbers: tuple[int, int]) -> str:
    open_tree, move_mount = numbers
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_SYMLINK_NOFOLLOW
    tree = _check(_libc.syscall(open_tree, AT_FDCWD, source.encode(), flags), "source")
    info = os.fstat(tree)
    if not stat.S_ISCHR(info.st_mode) or info.st_rdev != os.makedev(node.major, node.minor):
        raise _Step("source", errno.ENODEV, "not the node's character device")
    _enter(pidfd)
    dev = _open_dev()
    owner = os.fstat(dev)
    # Files are made as the owner of the container's /dev (its root): see the module's note.
    _libc.setfsgid(owner.st_gid)
    _libc.setfsuid(owner.st_uid)
    try:
        present = os.stat(node.name, dir_fd=dev, follow_symlinks=False)
    except FileNotFoundError:
        present = None
    if present is not None and stat.S_ISCHR(present.st_mode) and present.st_rdev == info.st_rdev:
        return "present"  # ours from before (or LXC's from the start): the same device
    _clear(dev, node.name)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        made = os.open(node.name, flags, 0o600, dir_fd=dev)
    except OSError as exc:
        raise _Step(IN_THE_WAY, exc.errno or 0) from None
    os.close(made)
    if _libc.syscall(move_mount, tree, b"", dev, node.name.encode(), MOVE_MOUNT_F_EMPTY_PATH) < 0:
        code = ctypes.get_errno()
        os.unlink(node.name, dir_fd=dev)
        raise _Step("mount", code)
    return "added"


def _remove_in_child(pidfd: int, name: str) -> str:
    _enter(pidfd)
    dev = _open_dev()
    _libc.setfsgid(os.fstat(dev).st_gid)
    _libc.setfsuid(os.fstat(dev).st_uid)
    try:
        _clear(dev, name)
    except _Step as step:
        if step.code not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # A directory of container root's own: not ours to empty, and no node of ours.
    return "removed"


def _in_child(work: Callable[[], str], name: str, verb: str) -> str:
    """Run work in a forked child; its one-line answer, or the GpushellError its failure means."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is the parent's answer
        code = 1
        try:
            os.close(read_end)
            answer, code = f"ok {work()}", 0
        except _Step as step:
            answer = f"{step.what} {step.code} {step.detail}"
        except OSError as exc:
            answer = f"child {exc.errno or 0} {type(exc).__name__}"
        except BaseException as exc:  # the child must always answer and exit
            answer = f"child 0 {type(exc).__name__}"
        try:
            os.write(write_end, answer.encode()[:512])
        finally:
            os._exit(code)
    os.close(write_end)
    report = f"timeout 0 after {CHILD_TIMEOUT:.0f} s"
    try:
        if select.select([read_end], [], [], CHILD_TIMEOUT)[0]:
            report = os.read(read_end, 512).decode(errors="replace") or "child 0 died"
    finally:
        os.close(read_end)
        os.kill(child, signal.SIGKILL)  # gone already, or hung in the container's /dev
        os.waitpid(child, 0)
    if report.startswith("ok "):
        return report[3:]
    raise child_failure(report, name, verb)


def check_name(name: str) -> None:
    """A node's name is one plain entry of /dev: no slash, no dot names, nothing to walk (pure)."""
    if not name or "/" in name or "\0" in name or name in (".", "..") or not name.isprintable():
        raise GpushellError(
            "the GPU device could not be changed in your container; ask your admin",
            f"live device: {name!r} is not a plain device name",
        )


def add_node(container: Container, source: str, node: Node) -> str:
    """Make /dev/NAME in the container the host's node at source: "added", or "present" already."""
    check_name(node.name)
    numbers = syscall_numbers(platform.machine())
    try:
        return _in_child(lambda: _add_in_child(container.pidfd, source, node, numbers), node.name, "add")
    except GpushellError as exc:
        exc.log_message += f" (source {source})"
        raise


def remove_node(container: Container, node: Node) -> str:
    """Take /dev/NAME out of the container (whatever container root left there)."""
    check_name(node.name)
    return _in_child(lambda: _remove_in_child(container.pidfd, node.name), node.name, "remove")


# --- who holds the node -------------------------------------------------------------

_STATX_SIZE = 256
_MODE_AT, _RDEV_AT = 28, 128  # struct statx: stx_mode (u16), stx_rdev_major/minor (u32 each)


def _rdev_of(path: str) -> int | None:
    """The device a /proc/PID/fd/N or map_files entry is open on (None: not a character device).

    statx, not stat, for AT_STATX_DONT_SYNC: the attributes the kernel has,
    no round trip to the file's filesystem, so a container's FUSE server
    that never answers cannot hang the scan.
    """
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if _libc.statx(AT_FDCWD, path.encode(), AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, STATX_TYPE, buffer) != 0:
        return None
    (mode,) = struct.unpack_from("=H", buffer, _MODE_AT)
    if not stat.S_ISCHR(mode):
        return None
    major, minor = struct.unpack_from("=II", buffer, _RDEV_AT)
    return os.makedev(major, minor)


def _entries(directory: str) -> Iterator[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        yield f"{directory}/{name}"


def _read(path: str, limit: int) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read(limit)
    except OSError:
        return ""


def holds(pid: int, rdev: int) -> bool:
    """Whether process pid has the device open (in any thread's file table) or mapped."""
    tasks = [f"/proc/{pid}"] + [
        task for task in _entries(f"/proc/{pid}/task") if task.rpartition("/")[2] != str(pid)
    ]
    for task in tasks:  # a thread may have its own table (unshare(CLONE_FILES))
        if any(_rdev_of(fd) == rdev for fd in _entries(f"{task}/fd")):
            return True
    maps = _read(f"/proc/{pid}/maps", MAX_MAPS_TEXT)
    return any(_rdev_of(f"/proc/{pid}/map_files/{where}") == rdev for where in mapped_files(maps))


def holders(container: Container, node: Node) -> list[int]:
    """Host PIDs of the container's processes that have node open or mapped, sorted.

    The processes are those of the container's cgroup tree: container root
    names the cgroups below its own but cannot leave the tree, and a PID
    namespace of its own inside would not hide a process from it.
    """
    rdev = os.makedev(node.major, node.minor)
    pids: dict[int, None] = {}
    for directory in cgroup_tree(container.cgroup):
        for pid in parse_pids(_read(f"{directory}/cgroup.procs", MAX_PIDS_TEXT)):
            pids.setdefault(pid, None)
    # A PID that ended after the listing may be another process's by now: still in the tree?
    return sorted(pid for pid in pids if holds(pid, rdev) and in_tree(pid, container))


def in_tree(pid: int, container: Container, root: str = cgroups.ROOT) -> bool:
    """Whether process pid is in the container's cgroup or one below it, now."""
    path = cgroups.controller_path(
        _read(f"/proc/{pid}/cgroup", cgroups.MAX_FILE), "" if container.v2 else "devices"
    )
    if path is None:
        return False
    where = (f"{root}{path}" if container.v2 else f"{root}/devices{path}").rstrip("/")
    return where == container.cgroup or where.startswith(container.cgroup + "/")
