"""A compiled copy of the registry for the helper's hot path.

Importing PyYAML and parsing the registry would be most of a login's cost,
and grow with every student.  After a full parse and validation the helper
keeps the result (plain values, `marshal`) in the run directory, keyed by
the registry file's identity: device, inode, size, mtime and ctime.  Any
write, rename or chmod of the registry changes the key and the next helper
call parses again, so the copy can never be staler than the file.  The copy
is root's, mode 0600, in a root-only directory, and checked like the
registry itself before it is read.  `gpushell-admin apply` reads the whole
registry from it too: with a thousand students the YAML parse was most of
that command.  This module is the copy's format and file; when to use it
and when to parse is registry_store's (load_user, load_all).
"""

from __future__ import annotations

import marshal
import os

from .. import __version__
from ..core.errors import ExitStatus, GpushellError
from ..core.model import Cluster, Lending, Limits, LoanLimits, Member, Mount, Registry, StatusPage, User
from .files import write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 13
Identity = tuple[int, int, int, int, int]


def identity(info: os.stat_result) -> Identity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _mounts(mounts: tuple[Mount, ...]) -> tuple[tuple[str, str, bool], ...]:
    return tuple((m.source, m.target, m.readonly) for m in mounts)


def _limits(limits: Limits) -> tuple[int, float, int, int]:
    return (limits.memory, limits.cpus, limits.pids, limits.disk)


def _lending(lending: Lending | None) -> tuple[object, ...] | None:
    if lending is None:
        return None
    return tuple(getattr(lending, field) for field in Lending.__slots__)


def _loan_limits(limits: LoanLimits | None) -> tuple[int, int] | None:
    return None if limits is None else (limits.max_per_student, limits.max_duration)


# Registry's fields but `users`, in the order the cache stores them.
SETTINGS = (
    "path", "hostname", "bridge", "subnet", "ports", "template", "lxcpath", "chain", "idmap_start",
    "idmap_size", "gpus", "mounts", "start_timeout", "idle_timeout", "masquerade", "gpu_devices",
    "driver", "driver_root", "snapshot_limit", "disabled_actions", "driver_installer", "limits",
    "allow_container_traffic", "egress_deny", "storage", "pool_file", "lending", "expire_grace", "contact",
    "status_page", "backend", "cluster",
)  # fmt: skip
_MOUNTS = SETTINGS.index("mounts")
_LIMITS = SETTINGS.index("limits")
_LENDING = SETTINGS.index("lending")
_STATUS_PAGE = SETTINGS.index("status_page")
_CLUSTER = SETTINGS.index("cluster")


def _cluster(cluster: Cluster | None) -> tuple[object, ...] | None:
    if cluster is None:
        return None
    members = tuple((m.name, m.address, m.gpus, m.memory) for m in cluster.members.values())
    return (members, cluster.project, cluster.port, cluster.credentials, cluster.pool)


def _cluster_from(plain: tuple[Any, ...] | None) -> Cluster | None:
    if plain is None:
        return None
    members, *settings = plain
    return Cluster({entry[0]: Member(*entry) for entry in members}, *settings)


def to_plain(reg: Registry) -> dict[str, object]:
    """The registry as marshal-able values (str, int, float, bool, tuple, dict)."""
    plain = {
        "subnet": reg.network,
        "mounts": _mounts(reg.mounts),
        "limits": _limits(reg.limits),
        "lending": _lending(reg.lending),
        "status_page": (reg.status_page.enabled, reg.status_page.names),
        "cluster": _cluster(reg.cluster),
    }
    settings = tuple(plain.get(field, getattr(reg, field)) for field in SETTINGS)
    users = {
        u.name: (
            u.port,
            u.address,
            u.idmap,
            u.container,
            u.gpus,
            _mounts(u.mounts),
            u.autostart,
            u.snapshot_limit,
            _limits(u.limits),
            _loan_limits(u.lending),
            u.expires,  # (year, month, day) or None: compared on every call without `datetime`
            u.member,
        )
        for u in reg.users.values()
    }
    # The version too: a newer gpushell may validate differently.
    return {"format": FORMAT, "version": __version__, "settings": settings, "users": users}


def _user(name: str, entry: tuple[Any, ...]) -> User:
    port, ip, idmap, container, gpus, mounts, autostart, snapshot_limit, limits, lending, expires, member = (
        entry
    )
    return User(name, port, ip, idmap, container, gpus,
                tuple(Mount(*m) for m in mounts), autostart, snapshot_limit, Limits(*limits),
                None if lending is None else LoanLimits(*lending), expires, member)  # fmt: skip


def _registry(plain: dict[str, Any], users: dict[str, User]) -> Registry:
    settings = list(plain["settings"])
    settings[_MOUNTS] = tuple(Mount(*m) for m in settings[_MOUNTS])
    settings[_LIMITS] = Limits(*settings[_LIMITS])
    settings[_STATUS_PAGE] = StatusPage(*settings[_STATUS_PAGE])
    settings[_CLUSTER] = _cluster_from(settings[_CLUSTER])
    if settings[_LENDING] is not None:
        settings[_LENDING] = Lending(**dict(zip(Lending.__slots__, settings[_LENDING], strict=True)))
    return Registry(**dict(zip(SETTINGS, settings, strict=True)), users=users)


def from_plain(plain: dict[str, Any], name: str) -> tuple[Registry, User]:
    """The settings and one user's entry (the registry's other users are not built)."""
    users: dict[str, tuple[Any, ...]] = plain["users"]
    if name not in users:
        path = plain["settings"][0]
        raise GpushellError(
            f"{name} is not registered in {path}",
            f"user {name!r} has no entry in {path}",
            ExitStatus.NOT_REGISTERED,
        )
    user = _user(name, users[name])
    return _registry(plain, {name: user}), user


def registry_from_plain(plain: dict[str, Any]) -> Registry:
    """The whole registry, every user in the file's order."""
    return _registry(plain, {name: _user(name, entry) for name, entry in plain["users"].items()})


def read(path: str, key: Identity) -> dict[str, Any] | None:
    """The copy at path if it is root's, private, of this gpushell and made from the file `key` names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if info.st_uid != 0 or info.st_mode & 0o077:
            return None
        try:
            cached = marshal.loads(stream.read())
        except (EOFError, ValueError, TypeError):
            return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    if cached.get("format") != FORMAT or cached.get("version") != __version__:
        return None
    return cached


def write(path: str, key: Identity, reg: Registry) -> None:
    """The copy of reg, made from the registry file whose identity is `key`."""
    write_atomically(path, marshal.dumps({**to_plain(reg), "key": key}), 0o600, durable=False)
