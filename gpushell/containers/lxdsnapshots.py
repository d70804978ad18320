"""A student's snapshots on a cluster: the engine's own, on its copy-on-write pool where it has one.

The same verbs, names, limit and refusals as on one host (snapshots.py);
the engine freezes, copies, restores and deletes.  Whether a snapshot was
taken while the container ran is the engine's record of its power state
(`volatile.last_state.power`) in the snapshot's config.
"""

from __future__ import annotations

import time

from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..core.snapshotlist import Snapshot
from .backend import FROZEN, RUNNING, ContainerDriver
from .lxd import LxdDriver


def _driver(driver: ContainerDriver | None, reg: Registry) -> LxdDriver:
    found = driver if driver is not None else LxdDriver(reg)
    assert isinstance(found, LxdDriver)  # snapshots.py sends only a cluster's students here
    return found


def epoch(text: str) -> int:
    """Seconds since the epoch of the engine's UTC timestamps (`2026-12-03T10:20:30.123456789Z`)."""
    import calendar

    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def from_engine(entry: dict[str, object]) -> Snapshot:
    config = entry.get("config")
    power = config.get("volatile.last_state.power") if isinstance(config, dict) else None
    size = entry.get("size")
    return Snapshot(
        str(entry["name"]),
        epoch(str(entry.get("created_at", "1970-01-01T00:00:00Z"))),
        size if isinstance(size, int) and size > 0 else 0,
        power == RUNNING,
    )


def list_snapshots(reg: Registry, user: User, driver: ContainerDriver | None = None) -> list[Snapshot]:
    found = _driver(driver, reg).request("GET", user.container, "/snapshots", query={"recursion": "1"})
    listed = [from_engine(entry) for entry in found or [] if isinstance(entry, dict)]  # type: ignore[attr-defined]
    return sorted(listed, key=lambda snap: (snap.created, snap.name))


def create(reg: Registry, user: User, driver: ContainerDriver, name: str, now: float) -> Snapshot:
    """A snapshot by the engine; snapshots.create refused it already if the student may not."""
    lxd = _driver(driver, reg)
    running = lxd.state(user.container) in (RUNNING, FROZEN)
    lxd.request("POST", user.container, "/snapshots", {"name": name, "stateful": False})
    return Snapshot(name, int(now), 0, running)


def delete(reg: Registry, user: User, name: str) -> None:
    lxd = LxdDriver(reg)
    _known(reg, user, lxd, name)
    lxd.request("DELETE", user.container, f"/snapshots/{name}")


def restore(reg: Registry, user: User, driver: ContainerDriver, name: str) -> bool:
    """The engine puts the snapshot back (stopping a running container first); whether it ran."""
    lxd = _driver(driver, reg)
    _known(reg, user, lxd, name)
    running = lxd.state(user.container) in (RUNNING, FROZEN)
    if running:
        lxd.stop(user.container)
    lxd.request("PUT", user.container, "", {"restore": name})
    return running


def _known(reg: Registry, user: User, driver: LxdDriver, name: str) -> None:
    if name not in {snap.name for snap in list_snapshots(reg, user, driver)}:
        raise GpushellError(f"no snapshot {name}; see: snapshots", f"{user.name} has no snapshot {name!r}")
