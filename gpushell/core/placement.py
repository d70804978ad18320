"""Which cluster member a new student's container goes to (pure).

A lab's members differ in GPUs and memory; a student goes where the most
GPUs are free, then the most memory, so the cards spread before anyone
shares one.  A GPU is taken on its member by every student it is assigned
to (`gpus: all` takes all of them); memory by each student's limit (a
member whose memory the registry leaves out is not counted).
"""

from __future__ import annotations

from .errors import GpushellError
from .model import Cluster, GpuSpec, Member, User

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class Room:
    """What is left on one member: the GPU numbers no student holds, and unclaimed memory (bytes)."""

    __slots__ = ("free_gpus", "free_memory", "member")

    def __init__(self, member: Member, free_gpus: tuple[int, ...], free_memory: int) -> None:
        self.member, self.free_gpus, self.free_memory = member, free_gpus, free_memory


def rooms(cluster: Cluster, users: Iterable[User]) -> dict[str, Room]:
    """Every member's room, after the registry's students on it."""
    taken: dict[str, set[int]] = {name: set() for name in cluster.members}
    claimed = dict.fromkeys(cluster.members, 0)
    for user in users:
        if user.member not in taken:
            continue
        taken[user.member].update(gpu_numbers(user.gpus, cluster.members[user.member]))
        claimed[user.member] += user.limits.memory
    return {
        name: Room(
            member,
            tuple(gpu for gpu in member.gpus if gpu not in taken[name]),
            member.memory - claimed[name],
        )
        for name, member in cluster.members.items()
    }


def gpu_numbers(gpus: GpuSpec, member: Member) -> tuple[int, ...]:
    """The member's GPU numbers a spec names (`all`: every one the member has)."""
    if isinstance(gpus, tuple):
        return gpus
    return member.gpus if gpus == "all" else ()


def fits(room: Room, gpus: GpuSpec, memory: int) -> str | None:
    """Why a student with these GPUs and this memory limit does not fit the room; None when they do."""
    wanted = gpu_numbers(gpus, room.member)
    if gpus == "all" and not wanted:
        return "has no GPU"
    missing = [gpu for gpu in wanted if gpu not in room.member.gpus]
    if missing:
        return f"has no GPU {','.join(map(str, missing))}"
    busy = [gpu for gpu in wanted if gpu not in room.free_gpus]
    if busy:
        return f"GPU {','.join(map(str, busy))} already assigned"
    if room.member.memory and room.free_memory < memory:  # 0: the registry does not say
        return f"only {_gib(room.free_memory)} of memory unclaimed, {_gib(memory)} wanted"
    return None


def place(cluster: Cluster, users: Iterable[User], gpus: GpuSpec, memory: int) -> str:
    """The member for a new student: the first of ranked()."""
    return ranked(cluster, users, gpus, memory)[0]


def ranked(cluster: Cluster, users: Iterable[User], gpus: GpuSpec, memory: int) -> list[str]:
    """The members a new student fits, best first: the most free GPUs, then the most free memory.

    Ties go to the member named first in sorted order, so the same registry
    always gives the same answer.  Raises GpushellError naming each
    member's reason when it fits none.
    """
    found = rooms(cluster, users)
    fitting = [room for room in found.values() if fits(room, gpus, memory) is None]
    if not fitting:
        reasons = "; ".join(f"{name} {fits(room, gpus, memory)}" for name, room in sorted(found.items()))
        raise GpushellError(f"no member has room for this student: {reasons}")
    fitting.sort(key=lambda room: (-len(room.free_gpus), -room.free_memory, room.member.name))
    return [room.member.name for room in fitting]


def check_on(cluster: Cluster, users: Iterable[User], name: str, gpus: GpuSpec, memory: int) -> None:
    """Refuse `--on NAME` (or a move there) when the member is unknown or the student does not fit it."""
    room = rooms(cluster, users).get(name)
    if room is None:
        raise GpushellError(f"{name} is not a member ({', '.join(sorted(cluster.members))})")
    reason = fits(room, gpus, memory)
    if reason is not None:
        raise GpushellError(f"{name} {reason}")


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
