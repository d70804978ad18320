"""The kernel's host-wide pools that every student's container draws from, and how large they must be.

Each container's user namespace is made by host root (lxc-start runs as
root), and the kernel charges some per-user counts to a namespace's owner
at every level up to the host's.  The inotify instances and watches made
in every student's container therefore all count against host root's
`fs.inotify.max_user_instances` (128 by default) and `max_user_watches`:
a few containers reach 128 in ordinary use, and one container can take
them all, so that inotify fails in its neighbours' containers (systemd's
path units, an IDE's or a notebook's file watching, `tail -f`) and for
host root.  The kernel offers no cap per container for these counts, so
gpushell makes the shared pools larger than the host's memory could
fill: an instance costs the kernel about 1 KiB and a watch about 90 bytes
(measured on Linux 6.x), charged to the memory limit of the container
that made it, which stops that container long before the pool runs out.

Pseudo-terminals are one more such pool: every devpts instance but the
host's own draws on `kernel.pty.max` less `kernel.pty.reserve` (3072 of
4096 by default).  The `max` LXC gives a container's /dev/pts does not
hold container root, which may mount a devpts instance of its own: one
container took all 3072 for ~9 MB of its memory, and its neighbours'
interactive ssh sessions, tmux and notebook terminals got none ("No space
left on device").  A pty costs the kernel ~3 KiB, charged to the container
(measured), and the kernel numbers them below 2**20; so the pool is that
large, and filling it takes a container ~3 GiB of its memory limit and a
million open files.  That is a bound, not a cap: a container allowed that
much memory can still fill it, since the kernel counts ptys per host only.

Asynchronous I/O contexts (io_setup(2), as libaio uses them: databases,
fio, NVMe offload of training state) draw on `fs.aio-max-nr`, one count
for the whole host (65536 by default): one container took it all for 4 MB
and its neighbours' io_setup failed (EAGAIN).  An event costs 64 bytes of
ring, charged to the container (measured), so that pool too is made larger
than the host's memory could fill.

Open files draw on `fs.file-max`, one count for the whole host (a tenth of
memory in KiB by default, 2466290 on a 23 GiB host); past it only root of
the host may open a file.  An open file costs ~260 bytes, charged to the
container, so one container allowed ~650 MB could leave every other
container unable to open anything ("Too many open files in system").
systemd raises it to the largest value at boot; elsewhere it is made larger
than the host's memory could fill here too.
"""

from __future__ import annotations

INSTANCES = "fs.inotify.max_user_instances"
WATCHES = "fs.inotify.max_user_watches"
PTYS = "kernel.pty.max"
AIO = "fs.aio-max-nr"
FILES = "fs.file-max"
# Bytes of host memory per unit of each pool: about half of what one costs
# the kernel (988 bytes an instance, 88 a watch, ~3000 a pty, 64 an aio
# event, 262 an open file), so filling a pool would take more than the host's
# whole memory, on top of every memory limit, wherever the kernel lets the
# pool be that large.
BYTES_PER = {INSTANCES: 512, WATCHES: 32, PTYS: 1536, AIO: 32, FILES: 128}
# The largest each pool can be: the kernels before 5.x hold the inotify
# counts in an int; pty numbers stay below NR_UNIX98_PTY_MAX; aio's and the
# files' are longs.
CEILING = {INSTANCES: 2**31 - 1, WATCHES: 2**31 - 1, PTYS: 1 << 20, AIO: 2**63 - 1, FILES: 2**63 - 1}


# Queued real-time signals are counted the same way, against a pool that is
# no sysctl: the RLIMIT_SIGPENDING of the process that made the container's
# user namespace (lxc-start), counted together with every other container's
# and host root's own.  A queued signal costs the kernel about 90 bytes,
# charged to the memory limit of the container that queued it.
SIGNAL_BYTES = 48


def signals_wanted(memory: int) -> int:
    """The queued-signal pool each container should get on a host with `memory` bytes."""
    return max(1, memory // SIGNAL_BYTES)


def wanted(memory: int) -> dict[str, int]:
    """The size of each pool on a host with `memory` bytes."""
    return {key: min(CEILING[key], max(1, memory // size)) for key, size in BYTES_PER.items()}


def shortfalls(current: dict[str, int], memory: int) -> dict[str, tuple[int, int]]:
    """The pools smaller than wanted: key -> (now, wanted).  A larger pool is the admin's and stays."""
    return {
        key: (current[key], size)
        for key, size in wanted(memory).items()
        if key in current and current[key] < size
    }


def dropin_text(memory: int) -> str:
    """The sysctl drop-in (Paths.sysctl_dropin): the pools as they must be from the next boot on."""
    lines = "".join(f"{key} = {size}\n" for key, size in wanted(memory).items())
    return (
        "# Written by gpushell-admin init.  Every container draws on these host-wide\n"
        "# pools (host root's inotify counts, ptys, aio, open files); each is as large as the host's\n"
        "# memory could fill, or as the kernel allows (gpushell-admin(8), KERNEL POOLS).\n"
        "# A file read later wins; doctor says if it makes a pool too small again.\n" + lines
    )


def shortfall_text(key: str, now: int, size: int) -> str:
    return f"{key} is {now}, below {size}"
