"""`gpushell-admin driver sync`: NVIDIA's installer run in containers whose driver lags the host's.

For `driver: container`.  `select` (pure) picks the GPU containers whose
libcuda/libnvidia-ml version differs from the loaded module's (doctor's
comparison, driverfiles.mismatch).  `sync_one` streams the installer into
the container through the link-refusing rootfs writer, runs it there with
`--no-kernel-module --silent --no-questions` through the backend's attach (starting
the container for it as every start does, its disk quota set first, and
stopping it again if it was stopped), removes
the copy, and reads the versions again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ..containers.backend import RUNNING
from ..containers.factory import backend_for
from ..core.errors import ExitStatus, GpushellError
from ..core.model import Registry, User
from ..core.paths import Paths
from ..gpu import driverfiles
from ..helper import services
from ..system import rootfs
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from ..system.runner import run

INSIDE = "/root/.gpushell-nvidia-installer.run"
INSTALLER_OPTIONS = ("--no-kernel-module", "--silent", "--no-questions")
INSTALL_TIMEOUT = 1800


def chosen_students(reg: Registry, names: Sequence[str]) -> list[User]:
    """The named (or every) GPU student, by name; `driver: container` only."""
    if reg.driver != "container":
        raise GpushellError(
            "driver sync is for `driver: container`; with `driver: host` containers get the host's files",
            status=ExitStatus.USAGE,
        )
    unknown = [name for name in names if name not in reg.users]
    if unknown:
        raise GpushellError(f"not registered: {', '.join(unknown)}", status=ExitStatus.NOT_REGISTERED)
    chosen = (
        [reg.users[name] for name in names] if names else sorted(reg.users.values(), key=lambda u: u.name)
    )
    return [user for user in chosen if user.gpus != "none"]


def select(
    reg: Registry, host_version: str | None, versions: dict[str, frozenset[str]], names: Sequence[str]
) -> list[User]:
    """The named (or every) GPU student whose container's driver differs from the host's."""
    students = chosen_students(reg, names)
    if host_version is None:
        raise GpushellError("no NVIDIA driver is loaded on the host: nothing to match")
    return [
        user
        for user in students
        if driverfiles.mismatch(host_version, versions.get(user.container, frozenset())) is not None
    ]


def installer_path(reg: Registry, option: str | None) -> str:
    path = option or reg.driver_installer
    if not path:
        raise GpushellError(
            f"no installer: set driver_installer in {reg.path} or pass --installer", status=ExitStatus.USAGE
        )
    if not os.path.isfile(path):
        raise GpushellError(f"installer {path} is not a file")
    return path


def container_root(reg: Registry, user: User) -> str:
    return backend_for(reg).rootfs(user.container)


def copy_installer(root: str, installer: str) -> None:
    """The installer into the container's rootfs at INSIDE, streamed (it is hundreds of MB).

    rootfs.write_file copies it chunk by chunk and never follows a link the
    container planted on the way.
    """
    with open(installer, "rb") as stream:
        rootfs.write_file(root, INSIDE, stream, mode=0o700)


def sync_one(reg: Registry, paths: Paths, user: User, installer: str, host_version: str) -> str:
    """Run the installer in user's container; a one-line report, or GpushellError."""
    driver = backend_for(reg)
    root = container_root(reg, user)
    with locked(paths.user_lock(user.name), ADMIN_WAIT, admin_busy(user.name)):
        was_running = driver.state(user.container) == RUNNING
        copy_installer(root, installer)
        try:
            if not was_running:
                # As every start: the disk quota first (the installer writes hundreds of MB).
                services.start(services.Context(paths, reg, driver), user)
            result = run(
                driver.attach(user.container, ["sh", INSIDE, *INSTALLER_OPTIONS]),
                check=False,
                timeout=INSTALL_TIMEOUT,
            )
        finally:
            rootfs.remove_file(root, INSIDE)
            if not was_running:
                driver.stop(user.container)
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
        raise GpushellError(f"installer exited {result.returncode}: {last[0][:200]}")
    problem = driverfiles.mismatch(host_version, driverfiles.read_container_versions(root))
    if problem:
        raise GpushellError(f"installer ran, but the container still {problem}")
    return f"installed NVIDIA driver {host_version}"


def sync(
    reg: Registry, paths: Paths, names: Sequence[str], option: str | None, say: Callable[[str], None]
) -> int:
    """Sync the chosen containers, one line each; how many failed."""
    host_version = driverfiles.read_version(reg.driver_root)
    versions = {
        user.container: driverfiles.read_container_versions(container_root(reg, user))
        for user in reg.users.values()
    }
    chosen = select(reg, host_version, versions, names)
    if not chosen:
        say(f"every GPU container has the host's NVIDIA driver {host_version}")
        return 0
    installer = installer_path(reg, option)
    assert host_version is not None  # select refused otherwise
    failures = 0
    for user in chosen:
        try:
            say(f"{user.name}: {sync_one(reg, paths, user, installer, host_version)}")
        except GpushellError as exc:
            failures += 1
            say(f"{user.name}: FAILED: {exc.log_message}")
    return failures
