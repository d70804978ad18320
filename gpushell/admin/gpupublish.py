"""`gpushell-admin publish-gpus`: a cluster member's GPU report, written into its own member entry.

Runs on each member (gpushell-publish-gpus.timer, every 20 seconds), as
root, with no registry: the registry is the front door's.  It asks the
member's own engine, through its unix socket, which running containers of
gpushell's project hold which host id range; asks NVML for the GPUs and
their processes; and writes the report (core/gpureport.py) as the
member's config key REPORT_KEY, where the front door reads it.
"""

from __future__ import annotations

import os
import time

from ..containers import lxdapi, lxdinstance
from ..core import gpureport
from ..core.errors import ExitStatus, GpushellError
from ..gpu import driverfiles, gpustatus, memberreading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..core.gpureport import GpuReport

# Where Debian's LXD, Incus and the LXD snap keep their socket, in that order of asking.
SOCKETS = ("/var/lib/incus/unix.socket", "/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket")


def engine_socket(given: str | None) -> str:
    if given is not None:
        return given
    for path in SOCKETS:
        if os.path.exists(path):
            return path
    raise GpushellError(
        f"no LXD or Incus socket found ({', '.join(SOCKETS)}); name it with --socket",
        status=ExitStatus.USAGE,
    )


def publish(
    client: lxdapi.Client,
    load_nvml: Callable[[], Any | None],
    now: float,
    proc: str = "/proc",
    driver_root: str = "/",
) -> tuple[str, GpuReport]:
    """Read this member's GPUs and write the report into its member entry; the member and the report.

    driver_root: where proc/driver/nvidia/version is (the loaded module's version, which `driver
    sync` matches containers to); tests pass a stand-in tree.
    """
    server = client.get("") or {}
    environment = server.get("environment") or {}
    member = str(environment.get("server_name") or "")
    if not environment.get("server_clustered") or not member:
        raise GpushellError(
            "this engine is not a cluster member: publish-gpus runs on the members of gpushell's cluster",
            status=ExitStatus.USAGE,
        )
    owners = gpustatus.Owners({}, _ranges(client.get("/instances", recursion="1") or [], member))
    report = memberreading.read(load_nvml(), lambda pid: gpustatus.pid_owner(pid, owners, proc), int(now))
    report = report.replace(driver=driverfiles.read_version(driver_root))
    entry = client.get(f"/cluster/members/{member}") or {}
    config = {**(entry.get("config") or {}), gpureport.REPORT_KEY: gpureport.encode(report)}
    # PUT takes the whole entry: everything but our key goes back as it came.
    body = {key: entry[key] for key in ("description", "failure_domain", "groups", "roles") if key in entry}
    client.call("PUT", f"/cluster/members/{member}", {**body, "config": config})
    return member, report


def _ranges(instances: list[dict[str, Any]], member: str) -> list[tuple[int, int, str]]:
    """(first host uid, count, container) of each running instance of the project on this member.

    The listing is the whole cluster's, and each member picks its own
    containers' id ranges: another member's may be the same numbers.
    """
    found = []
    for instance in instances:
        uids = lxdinstance.host_uids(instance)
        if uids is not None and instance.get("location") == member and isinstance(instance.get("name"), str):
            found.append((*uids, instance["name"]))
    return found


def cmd_publish_gpus(_paths: object, args: Any, say: Callable[[str], None]) -> int:
    client = lxdapi.LocalClient(engine_socket(args.socket), args.project)
    try:
        member, report = publish(client, gpustatus.load_nvml, time.time())
    finally:
        client.close()
    if args.verbose:
        say(f"{member}: {report.state}, {len(report.gpus)} GPU(s) published")
    return ExitStatus.OK
