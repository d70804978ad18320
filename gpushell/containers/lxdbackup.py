"""Keeping a container on a cluster as the engine's own backup, before `remove` destroys it.

The container's files are on a member and reached only through the
engine.  Its backup API packs the instance (config, devices and root disk;
no snapshots) into one tarball on the member, which is streamed to the
front door and then deleted there.  `lxc import FILE` on a member
(Incus: `incus import`), into the admin's unrestricted project, brings the
container back.

A restricted project blocks backups unless `restricted.backups=allow`
(README: Several servers), and that is checked first, for one clear line.
Only Incus should allow them: LXD (5.0.2 tested) imports a backup into a
restricted project without checking the project's restrictions (a backup
saying `security.privileged: "true"` came in as such), so there the
permission would give gpushell's certificate root on the members.  On LXD
the refusal says how the admin keeps the container instead, and doctor
fails a project that allows backups.
"""

from __future__ import annotations

import contextlib
import datetime
import os

from ..core.errors import GpushellError
from . import archive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .lxdapi import Client

BACKUP = "gpushell-archive"  # one at a time per instance: the student's lock is held
KEPT_ON_MEMBER = datetime.timedelta(hours=6)  # then the engine deletes it, should the delete below fail
BACKUP_WAIT = 3600.0  # seconds the engine may take to pack, and the front door to fetch, a large container


def request(when: datetime.datetime) -> dict[str, object]:
    """The backup to make: the instance without its snapshots, uncompressed (as one host's tar)."""
    expires = (when + KEPT_ON_MEMBER).astimezone(datetime.UTC)
    return {
        "name": BACKUP,
        "expires_at": f"{expires:%Y-%m-%dT%H:%M:%SZ}",
        "instance_only": True,
        "optimized_storage": False,  # a plain tarball, readable and importable on any pool
        "compression_algorithm": "none",
    }


def blocked(project_config: dict[str, str]) -> bool:
    """Whether the project forbids backups (a restricted project does unless told otherwise)."""
    return project_config.get("restricted") == "true" and project_config.get("restricted.backups") != "allow"


def import_unchecked(engine: str) -> bool:
    """Whether the engine's backup import skips the project's restrictions: any LXD (5.0.2 tested;
    Incus 6.0 refuses a privileged or raw.lxc backup in a restricted project)."""
    return engine != "incus"


def refusal(project: str, engine: str, name: str) -> str:
    """Why a blocked project gets no archive, and what the admin does instead."""
    if import_unchecked(engine):
        return (
            f"cannot archive {name}: project {project} blocks backups, as it should on LXD, whose backup "
            f"import skips the project's restrictions; keep it as the cluster's admin on a member "
            f"(lxc export {name} --project {project}), then remove without --archive"
        )
    return (
        f"cannot archive {name}: project {project} blocks backups; "
        f"run: lxc project set {project} restricted.backups=allow"
    )


def keep(
    client: Client, project: str, project_config: dict[str, str], engine: str, name: str, directory: str,
    user: str, when: datetime.datetime,
) -> str:  # fmt: skip
    """The stopped instance's backup as DIRECTORY/USER-<time>.tar (archive.keep_whole); its path."""
    if blocked(project_config):
        raise GpushellError(refusal(project, engine, name))
    backups = f"/instances/{name}/backups"

    def fetch(temporary: str) -> None:
        with contextlib.suppress(GpushellError):  # one a killed remove left (404 the usual answer)
            client.call("DELETE", f"{backups}/{BACKUP}")
        client.call("POST", backups, request(when), wait=BACKUP_WAIT)
        try:
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_NOFOLLOW), "wb") as output:
                client.download(f"{backups}/{BACKUP}/export", output, timeout=BACKUP_WAIT)
        finally:
            with contextlib.suppress(GpushellError):  # it expires on the member by itself
                client.call("DELETE", f"{backups}/{BACKUP}")

    return archive.keep_whole(directory, archive.archive_name(user, when), fetch)
