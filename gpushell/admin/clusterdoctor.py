"""`doctor` on a cluster's front door: every member's API, the engine's word on each member, and
where each student's container is.

`gather` asks each member directly (a member that is down is one finding,
never a hang: the client's own timeouts bound each question); the checks
are pure functions of what it found.
"""

from __future__ import annotations

import contextlib
import dataclasses

from ..containers import lxdbackup
from ..containers.backend import UNKNOWN
from ..core import gpureport
from ..core.errors import GpushellError
from ..core.model import Registry
from ..gpu import driverfiles
from .findings import Finding

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..containers.lxdinstance import Cards
    from ..core.gpureport import GpuReport

MOVE_OR_EDIT = "gpushell-admin move USER MEMBER, or correct the student's member: in the registry"


@dataclasses.dataclass(frozen=True)
class ClusterFacts:
    reachable: dict[str, str]  # registry member -> "" when its API answered, else why not
    members: dict[str, tuple[str, str]]  # the engine's members: name -> (status, message)
    instances: dict[str, tuple[str, str]] | None  # container -> (state, member); None: not listed
    image: bool | None = None  # the registry's template is an image alias of the project; None: not asked
    project: dict[str, str] | None = None  # the project's config (its restrictions); None: not read
    gpus: dict[str, Cards] = dataclasses.field(default_factory=dict)  # member -> its GPUs, where asked
    volumes: dict[str, str] | None = None  # the pool's custom volumes: name -> member; None: not listed
    reports: dict[str, GpuReport | None] = dataclasses.field(default_factory=dict)  # member -> its GPU report
    pools: dict[str, str] = dataclasses.field(default_factory=dict)  # container -> its root disk's pool
    # container -> the driver versions its libraries carry (driver: container, GPU students only)
    driver_versions: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    engine: str = ""  # "lxd" or "incus", as the cluster says; "" when not asked


def gather(reg: Registry) -> ClusterFacts:
    from ..containers.lxd import LxdDriver

    assert reg.cluster is not None
    driver = LxdDriver(reg)
    reachable = {name: driver.silent(name) or "" for name in reg.cluster.members}
    gpus = {}
    for name, member in reg.cluster.members.items():
        if member.gpus and not reachable[name]:  # what the registry's GPU numbers are on that server
            with contextlib.suppress(GpushellError):
                gpus[name] = driver.member_gpus(name)
    members: dict[str, tuple[str, str]] = {}
    reports: dict[str, GpuReport | None] = {}
    instances, image, project, volumes, pools = None, None, None, None, {}
    versions: dict[str, frozenset[str]] = {}
    engine = ""
    if any(not why for why in reachable.values()):
        try:
            for entry in driver.members():
                name = str(entry.get("server_name"))
                members[name] = (str(entry.get("status")), str(entry.get("message")))
                reports[name] = gpureport.of_member(entry)
            listed = driver.listing()
            instances, pools = driver.states(listed), driver.root_pools(listed)
            image = driver.has_image(reg.template)
            project, engine = driver.project_config(), driver.engine()
            volumes = driver.custom_volumes()
        except GpushellError:
            pass
    for user in reg.users.values() if reg.driver == "container" else ():
        if user.gpus != "none" and not reachable.get(user.member):
            with contextlib.suppress(GpushellError):  # its container is a finding of its own
                versions[user.container] = driver.driver_versions(user.container)
    return ClusterFacts(
        reachable, members, instances, image, project, gpus, volumes, reports, pools, versions, engine
    )


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


def check_gpus(reg: Registry, facts: ClusterFacts) -> list[Finding]:
    """The registry's GPU numbers of each member are GPUs its engine lists (as /dev/nvidiaN)."""
    assert reg.cluster is not None
    found = []
    for name, member in reg.cluster.members.items():
        cards = facts.gpus.get(name)
        if cards is None or not member.gpus:
            continue  # not asked: no GPU in the registry, or the member did not answer
        seen = ", ".join(f"{number}: {card.what}" for number, card in sorted(cards.items())) or "none"
        missing = [number for number in member.gpus if number not in cards]
        if missing:
            found.append(
                Finding(
                    False,
                    f"member {name}: the registry gives GPU {', '.join(map(str, missing))}, "
                    f"which its engine does not list (its NVIDIA GPUs: {seen}); containers with it "
                    "cannot be made or started",
                    f"correct lxd.members.{name}.gpus to the numbers of its /dev/nvidiaN "
                    f"(`lxc info --resources --target {name}` shows each card's nvidiaN), "
                    "or load the NVIDIA driver there",
                )
            )
            continue
        found.append(Finding(True, f"member {name}: GPUs {seen}"))
    return found


PUBLISH_FIX = "on {member}: install gpushell and run systemctl enable --now gpushell-publish-gpus.timer"
DRIVER_FIX = "on {member}: load the NVIDIA driver and install NVML's bindings (pip install nvidia-ml-py)"


def check_reports(reg: Registry, facts: ClusterFacts, now: float) -> list[Finding]:
    """Each member with GPUs publishes their figures (publish-gpus): the banners and the status page."""
    assert reg.cluster is not None
    return [
        _report_finding(name, facts.reports.get(name), now)
        for name, member in reg.cluster.members.items()
        if member.gpus and name in facts.members  # not asked: no GPU, or the member did not answer
    ]


def _report_finding(member: str, report: GpuReport | None, now: float) -> Finding:
    publish = PUBLISH_FIX.format(member=member)
    if report is None:
        what = "publishes no GPU figures: its students' banners and the status page show none"
        return Finding(False, f"member {member} {what}", publish)
    if not report.fresh(now):
        age = f"{abs(now - report.taken) / 60:.0f} minutes old"
        return Finding(
            False, f"member {member}'s GPU figures are {age}: its publish-gpus timer stopped", publish
        )
    if report.state != gpureport.OK:
        said = "no NVIDIA driver" if report.state == gpureport.NO_DRIVER else "that NVML failed"
        return Finding(False, f"member {member} publishes {said}", DRIVER_FIX.format(member=member))
    return Finding(True, f"member {member} published its GPU figures {now - report.taken:.0f} s ago")


def check_drivers(reg: Registry, facts: ClusterFacts, now: float) -> list[Finding]:
    """driver: container: each GPU container's libraries at its own member's module version."""
    if reg.driver != "container":
        return []
    found = []
    for user in sorted(reg.users.values(), key=lambda u: u.name):
        module = gpureport.module(facts.reports.get(user.member), now)
        if user.gpus == "none" or module is None or user.container not in facts.driver_versions:
            continue  # no module to match (the report's own finding says why), or not read
        mine = f"{user.name}: container {user.container} "
        problem = driverfiles.mismatch(
            module, facts.driver_versions[user.container], f"its member {user.member}"
        )
        good = f"has its member's NVIDIA driver {module}"
        fix = f"gpushell-admin driver sync {user.name} (NVIDIA's {module} installer)"
        found.append(Finding(problem is None, mine + (problem or good), fix))
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
    assert reg.cluster is not None
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
        if state == UNKNOWN:
            found.append(
                Finding(
                    False,
                    f"{user.name}: container {user.container} not checked: member {member} did not answer",
                    "see the member findings above",
                )
            )
        elif member and member != user.member:
            found.append(
                Finding(
                    False,
                    f"{user.name}: the registry says member {user.member}, the cluster says {member}",
                    MOVE_OR_EDIT,
                )
            )
        else:
            found.append(Finding(True, f"{user.name}: container {user.container} on {user.member} ({state})"))
        pool = facts.pools.get(user.container)
        if pool and pool != reg.cluster.pool:
            found.append(Finding(
                True, f"{user.name}: container {user.container} is on pool {pool}, not lxd.pool "
                f"{reg.cluster.pool}", f"gpushell-admin storage migrate {user.name}", warning=True,
            ))  # fmt: skip
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


def check_volumes(reg: Registry, facts: ClusterFacts) -> list[Finding]:
    """Home volumes a rebuild that did not finish left: the student's home is on one (lxdrebuild.py)."""
    from ..containers.lxdinstance import HOME_VOLUME_SUFFIX, home_volume

    assert reg.cluster is not None
    owners = {home_volume(user.container): user for user in reg.users.values()}
    found = []
    for volume, member in sorted((facts.volumes or {}).items()):
        user = owners.get(volume)
        if user is not None:
            found.append(Finding(
                False,
                f"{user.name}: a rebuild that did not finish left their home on volume {volume} ({member})",
                f"{user.name}'s next rebuild brings it back (the log has why the last one stopped)",
            ))  # fmt: skip
        elif volume.endswith(HOME_VOLUME_SUFFIX):
            found.append(Finding(
                False,
                f"volume {volume} on {member} looks like a rebuild's home volume but belongs to no student",
                f"lxc storage volume delete {reg.cluster.pool} {volume} --target {member} "
                f"--project {reg.cluster.project} once nothing on it is needed",
            ))  # fmt: skip
    return found


# What a restricted project may still allow that gpushell never needs, and
# that would let whoever holds its certificate reach past the containers.
RISKY = (
    ("restricted.containers.privilege", "allow", "privileged containers"),
    ("restricted.containers.lowlevel", "allow", "raw LXC settings"),
    ("restricted.containers.nesting", "allow", "nested containers"),
    ("restricted.devices.unix", "allow", "host device nodes in containers"),
)
RANGES = ("restricted.idmap.uid", "restricted.idmap.gid")  # host ids a container may map as its own


def check_project(reg: Registry, config: dict[str, str] | None, engine: str = "") -> list[Finding]:
    """The project's restrictions: what gpushell needs (targets, proxies, snapshots, GPUs, the NAS
    paths) allowed, and nothing more (no privileged container, no host path outside the NAS)."""
    assert reg.cluster is not None
    project = reg.cluster.project
    if config is None:
        return []
    if config.get("restricted") != "true":
        return [
            Finding(
                False,
                f"project {project} is not restricted: gpushell's certificate could make privileged "
                "containers and attach any host path",
                f"lxc project set {project} restricted=true (README: Several servers)",
            )
        ]
    found = [
        Finding(
            False,
            f"project {project} allows {what} ({key}={config[key]})",
            f"lxc project unset {project} {key}",
        )
        for key, value, what in RISKY
        if config.get(key) == value
    ]
    found += [
        Finding(False, f"project {project} lets containers map host ids {config[key]} ({key})",
                f"lxc project unset {project} {key}")
        for key in RANGES if config.get(key)
    ]  # fmt: skip
    needed = ["restricted.cluster.target", "restricted.devices.proxy", "restricted.snapshots"]
    if any(member.gpus for member in reg.cluster.members.values()):
        needed.append("restricted.devices.gpu")
    found += [
        Finding(
            False,
            f"project {project} blocks what gpushell needs: {key}",
            f"lxc project set {project} {key}=allow",
        )
        for key in needed
        if config.get(key) != "allow"
    ]
    found += _check_disks(reg, config)
    unchecked = bool(engine) and lxdbackup.import_unchecked(engine)
    if unchecked and not lxdbackup.blocked(config):
        found.append(Finding(
            False, f"project {project} allows backups, and LXD imports a backup without the project's "
            "restrictions: gpushell's certificate could import a privileged container",
            f"lxc project unset {project} restricted.backups (README: Several servers)",
        ))  # fmt: skip
    if not found:
        found.append(Finding(True, f"project {project} is restricted to what gpushell needs"))
    if engine and not unchecked and lxdbackup.blocked(config):
        found.append(Finding(
            True, f"project {project} blocks backups: remove --archive and expire --archive cannot keep "
            "a container", f"lxc project set {project} restricted.backups=allow (README: Several servers)",
            warning=True,
        ))  # fmt: skip
    return found


def _check_disks(reg: Registry, config: dict[str, str]) -> list[Finding]:
    """Host paths reach containers only as the registry's NAS mounts."""
    assert reg.cluster is not None
    project = reg.cluster.project
    sources = sorted(
        {mount.source for user in reg.users.values() for mount in user.mounts}
        | {mount.source for mount in reg.mounts}
    )
    allowed = config.get("restricted.devices.disk", "managed") == "allow"
    paths = [path for path in config.get("restricted.devices.disk.paths", "").split(",") if path]
    setting = f"restricted.devices.disk=allow restricted.devices.disk.paths={','.join(sources)}"
    if allowed and not paths:
        fix = setting if sources else "restricted.devices.disk=managed"
        return [
            Finding(
                False,
                f"project {project} lets any host path be attached to a container "
                "(restricted.devices.disk=allow without restricted.devices.disk.paths)",
                f"lxc project set {project} {fix}",
            )
        ]
    outside = [source for source in sources if not (allowed and any(_under(source, path) for path in paths))]
    if outside:
        return [
            Finding(
                False,
                f"project {project} does not allow the NAS mounts {', '.join(outside)}: "
                "adds and applies with them fail",
                f"lxc project set {project} {setting}",
            )
        ]
    return []


def _under(path: str, prefix: str) -> bool:
    """Whether path is prefix or inside it, as the engine matches restricted.devices.disk.paths."""
    path, prefix = path.rstrip("/") or "/", prefix.rstrip("/") or "/"
    return path == prefix or path.startswith(prefix if prefix == "/" else f"{prefix}/")
