"""`doctor` on a cluster's front door: every member's API, the engine's word on each member, and
where each student's container is.

`gather` asks each member directly (a member that is down is one finding,
never a hang: the client's own timeouts bound each question); the checks
are pure functions of what it found.
"""

from __future__ import annotations

import dataclasses

from ..core.errors import GpushellError
from ..core.model import Registry
from .findings import Finding

MOVE_OR_EDIT = "gpushell-admin move USER MEMBER, or correct the student's member: in the registry"


@dataclasses.dataclass(frozen=True)
class ClusterFacts:
    reachable: dict[str, str]  # registry member -> "" when its API answered, else why not
    members: dict[str, tuple[str, str]]  # the engine's members: name -> (status, message)
    instances: dict[str, tuple[str, str]] | None  # container -> (state, member); None: not listed
    image: bool | None = None  # the registry's template is an image alias of the project; None: not asked


def gather(reg: Registry) -> ClusterFacts:
    from ..containers import lxdapi
    from ..containers.lxd import LxdDriver

    assert reg.cluster is not None
    cluster = reg.cluster
    reachable = {}
    for name, member in cluster.members.items():
        client = lxdapi.Client([member.address], cluster.port, cluster.project, cluster.credentials)
        try:
            client.get("")
            reachable[name] = ""
        except GpushellError as exc:
            reachable[name] = exc.log_message
        finally:
            client.close()
    driver = LxdDriver(reg)
    members: dict[str, tuple[str, str]] = {}
    instances, image = None, None
    if any(not why for why in reachable.values()):
        try:
            for entry in driver.members():
                members[str(entry.get("server_name"))] = (str(entry.get("status")), str(entry.get("message")))
            instances = driver.states()
            image = driver.has_image(reg.template)
        except GpushellError:
            pass
    return ClusterFacts(reachable, members, instances, image)


def check_members(reg: Registry, facts: ClusterFacts) -> list[Finding]:
    assert reg.cluster is not None
    found = []
    for name, member in reg.cluster.members.items():
        why = facts.reachable.get(name, "not asked")
        if why:
            found.append(
                Finding(
                    False,
                    f"member {name} ({member.address}): its API does not answer: {why}",
                    "check that the server is up and its LXD/Incus daemon runs; "
                    "its students get one line saying so meanwhile",
                )
            )
            continue
        status, message = facts.members.get(name, ("not in the cluster", ""))
        if status != "Online":
            found.append(
                Finding(
                    False,
                    f"member {name}: the cluster says {status}" + (f" ({message})" if message else ""),
                    "see `lxc cluster list` on a member",
                )
            )
        else:
            found.append(Finding(True, f"member {name} ({member.address}) answers and is online"))
    strangers = sorted(set(facts.members) - set(reg.cluster.members))
    if strangers:
        found.append(
            Finding(
                True,
                f"cluster members not in the registry: {', '.join(strangers)}",
                "add them to lxd.members for gpushell to place students there",
                warning=True,
            )
        )
    return found


def check_image(reg: Registry, facts: ClusterFacts) -> list[Finding]:
    """The image new students' containers are made from (the registry's template)."""
    assert reg.cluster is not None
    if facts.image is None:
        return []
    if facts.image:
        return [Finding(True, f"image {reg.template} is in project {reg.cluster.project}")]
    return [
        Finding(
            False,
            f"image {reg.template} is not in project {reg.cluster.project}: adds will fail",
            "gpushell-admin template build",
        )
    ]


def check_containers(reg: Registry, facts: ClusterFacts) -> list[Finding]:
    if facts.instances is None:
        return [
            Finding(False, "the cluster's containers could not be listed", "see the member findings above")
        ]
    found = []
    for user in sorted(reg.users.values(), key=lambda u: u.port):
        if user.container not in facts.instances:
            found.append(
                Finding(
                    False,
                    f"{user.name}: container {user.container} does not exist on the cluster",
                    f"gpushell-admin remove {user.name} && gpushell-admin add {user.name} --on {user.member}",
                )
            )
            continue
        state, member = facts.instances[user.container]
        if member and member != user.member:
            found.append(
                Finding(
                    False,
                    f"{user.name}: the registry says member {user.member}, the cluster says {member}",
                    MOVE_OR_EDIT,
                )
            )
        else:
            found.append(Finding(True, f"{user.name}: container {user.container} on {user.member} ({state})"))
    assert reg.cluster is not None
    project, known = reg.cluster.project, {user.container for user in reg.users.values()}
    for name in sorted(set(facts.instances) - known):
        state, member = facts.instances[name]
        found.append(
            Finding(
                False,
                f"instance {name} on {member or '?'} ({state}) belongs to no student in the registry"
                " (an add that was stopped half way, or one made by hand)",
                f"lxc delete --force {name} --project {project} once nothing in it is needed",
            )
        )
    return found
