"""`rebuild` on a cluster: a root disk fresh from the lab's image, the home carried across.

Where the engine can rebuild an instance in place (the `instances_rebuild`
API: Incus, and LXD after 5.0) it wipes the root disk and makes it anew
from the image.  Debian 12's LXD 5.0.2 lacks that API: there the instance
is deleted and made again from the image under the same name, on the same
member, from the registry as `add` makes it (config, devices, address and
port are the registry's, not copied from the old one).  Either way the
SSH host keys are kept, as on one host (rebuild.py), so known_hosts stays
valid, and so is the home unless the student wipes it.  A re-creation that
stopped between the delete and the make leaves no container but the home
on its volume; the next rebuild makes the container and brings it back.

The home is copied aside to a volume of the project's pool, on the
container's member, while the old root disk is still there, and back into
the new one.  Both copies run inside the container (the engine's exec, as the
container's root, in its namespaces): nothing the container planted can
lead them out of it, and an old container that cannot copy its home only
keeps its own home from being kept.  A rebuild that failed half way leaves
the home on the volume; the next rebuild finds it there and brings it back.

The engine refuses to wipe a root disk that has snapshots, so this refuses
first, before anything changes, naming them.
"""

from __future__ import annotations

import contextlib

from ..core.errors import GpushellError
from ..core.model import Registry, User
from . import keyrescue, lxdapi, lxdinstance, lxdsnapshots
from .backend import MISSING, RUNNING
from .lxd import LxdDriver
from .provision import HOST_KEY_KINDS

REBUILD_API = "instances_rebuild"  # the engine's API extension that rebuilds an instance in place
HOME_DEVICE = "gpushell-home"
HOME_MOUNT = "/mnt/gpushell-home"  # where the volume shows inside the container
HOME_COPY_SECONDS = 1200.0  # a large home is copied from one filesystem to the other
REBUILD_SECONDS = 600.0
NOT_A_DIRECTORY = 3  # SAVE_HOME's exit status when /home/NAME is something else

# Both scripts copy and then rename a whole copy into place, and never
# remove what they copied from: an interrupted copy (a deadline, a full
# disk) leaves a `.partial-` directory behind and the one whole home where
# it was.  The old root disk goes with the engine's rebuild, the volume
# with the engine's delete.
# Inside the old container: a copy of the home onto the volume, unless an
# earlier rebuild that did not finish left a whole one there (that is the
# one to keep: the root disk may be a fresh one since).
SAVE_HOME = (
    'set -e; saved="$1/$2"; part="$1/.partial-$2"; home="/home/$2"; [ -e "$saved" ] && exit 0; '
    f'[ -e "$home" ] || exit 0; if [ -L "$home" ] || [ ! -d "$home" ]; then exit {NOT_A_DIRECTORY}; fi; '
    'rm -rf "$part"; cp -a "$home" "$part"; mv "$part" "$saved"'
)
# Inside the new container: the template's fresh home makes way for the kept one.
BRING_BACK_HOME = (
    'set -e; saved="$1/$2"; part="/home/.partial-$2"; [ -d "$saved" ] || exit 0; '
    'rm -rf "$part"; cp -a "$saved" "$part"; rm -rf "/home/$2"; mv "$part" "/home/$2"'
)


IN_PLACE, RECREATE, MAKE = "in place", "recreate", "make"  # how: the engine's rebuild, delete + make, make


def rebuild(reg: Registry, user: User, driver: LxdDriver, keys: str, keep_home: bool) -> None:
    """Give the user's container a fresh root disk from the image; it is left running if the home
    was carried across, stopped otherwise (the caller's login starts it)."""
    name = user.container
    volume = lxdinstance.home_volume(name)
    saved = driver.has_volume(name, volume)
    how = check_possible(driver, user, saved)
    host_keys = read_host_keys(driver, name) if how != MAKE else {}
    if keep_home and how != MAKE:
        saved = save_home(driver, user, volume, saved)
    try:
        if how == IN_PLACE:
            driver.stop(name)
            driver.request("POST", name, "/rebuild", {"source": {"type": "image", "alias": reg.template}},
                           wait=REBUILD_SECONDS)  # fmt: skip
        else:
            if how == RECREATE:
                driver.stop(name)
                driver.request("DELETE", name, wait=REBUILD_SECONDS)  # the home volume stays
            driver.make(reg, user)
            if saved and keep_home:  # the new instance has the registry's devices: the volume again
                attach_home(driver, user, volume)
        driver.give_identity(user, keys, host_keys)
    except GpushellError as exc:
        if saved and keep_home:
            raise GpushellError(
                "the rebuild did not finish; your home is kept aside and comes back with your next rebuild",
                f"rebuild of {user.name}: {exc.log_message}; the home stays on volume {volume}",
            ) from None
        raise
    if saved and keep_home:
        bring_back_home(driver, user, keys, volume)
    elif saved:  # --wipe-home: a home kept aside by an earlier rebuild goes too
        _drop_volume(driver, user, volume)


def check_possible(driver: LxdDriver, user: User, saved: bool) -> str:
    """How to rebuild (IN_PLACE, RECREATE or MAKE); refused, before any change, what cannot be done.

    A container that is missing is made only where its home waits on the
    volume (a re-creation that stopped half way); otherwise it is the
    administrator's to look into.
    """
    if driver.state(user.container) == MISSING:
        if saved:
            return MAKE
        raise GpushellError("your container does not exist; ask your administrator", f"no {user.container}")
    names = sorted(snap.name for snap in lxdsnapshots.list_snapshots(driver.reg, user, driver))
    if names:  # the engine's rebuild refuses them, and a delete would take them
        raise GpushellError(
            "on this lab's cluster a rebuild cannot keep snapshots; delete yours first "
            f"(delete-snapshot NAME for each of: {', '.join(names)}), then rebuild",
            f"rebuild refused for {user.name}: {len(names)} snapshots",
        )
    extensions = driver.client(user.container).get("").get("api_extensions") or []
    return IN_PLACE if REBUILD_API in extensions else RECREATE


def read_host_keys(driver: LxdDriver, name: str) -> dict[str, tuple[bytes, bytes]]:
    """The container's SSH host keys that are real keys: kind -> (private, public).

    Read through the engine, bounded, and checked by ssh-keygen running as
    nobody (keyrescue.public_key); a key that is missing, unreadable or not
    a key of its kind is made anew instead.
    """
    found = {}
    for kind in HOST_KEY_KINDS:
        try:
            private = driver.client(name).pull_file(
                name, f"/etc/ssh/ssh_host_{kind}_key", keyrescue.MAX_KEY_FILE
            )
        except (lxdapi.ApiError, lxdapi.Unreachable):
            continue
        public = keyrescue.public_key(private, kind)
        if public is not None:
            found[kind] = (private, f"{public} root@{name}\n".encode())
    return found


def _drop_volume(driver: LxdDriver, user: User, volume: str) -> None:
    """Unplugged (the registry's devices alone), then deleted."""
    driver.reconfigure(user)
    driver.volume("DELETE", user.container, volume)


def _inside(driver: LxdDriver, user: User, script: str) -> int:
    """A copy script run in the container with the volume's mount point and the student's name."""
    command = ["sh", "-c", script, "sh", HOME_MOUNT, user.name]
    return driver.run_inside(user.container, command, HOME_COPY_SECONDS)


def save_home(driver: LxdDriver, user: User, volume: str, saved: bool) -> bool:
    """Copy the running old container's home onto the volume; whether the volume holds one."""
    if not saved:
        body = {"name": volume, "type": "custom", "content_type": "filesystem", "config": {}}
        driver.volume("POST", user.container, volume, body)
    try:
        attach_home(driver, user, volume)
        if driver.state(user.container) != RUNNING:
            driver.start(user.container)
        status = _inside(driver, user, SAVE_HOME)
        if status != 0:
            raise _not_saved(user, status)
    except BaseException:
        if not saved:  # a volume made for this copy holds no whole home: it goes again
            with contextlib.suppress(GpushellError):
                _drop_volume(driver, user, volume)
        raise
    return True


def attach_home(driver: LxdDriver, user: User, volume: str) -> None:
    """The home volume into the container at HOME_MOUNT.

    LXD 5.0.2 checks a volume's name against the project's
    restricted.devices.disk.paths (the NAS) and refuses it; Incus does
    not.  The student is told how to rebuild all the same.
    """
    device = {"type": "disk", "pool": driver.cluster.pool, "source": volume, "path": HOME_MOUNT}
    try:
        driver.reconfigure(user, {HOME_DEVICE: device})
    except lxdapi.ApiError as exc:
        raise GpushellError(
            "your home cannot be kept on this lab's cluster: its container engine refuses the volume "
            "that would hold it; to rebuild without it: rebuild --wipe-home --yes",
            f"rebuild of {user.name}: the engine refused home volume {volume}: {exc.engine_message}",
        ) from None


def _not_saved(user: User, status: int) -> GpushellError:
    if status == NOT_A_DIRECTORY:
        return GpushellError(
            "your home is not a real directory (a link?), so it cannot be kept; "
            "to rebuild without it: rebuild --wipe-home --yes",
            f"rebuild refused for {user.name}: /home/{user.name} is not a directory",
        )
    return GpushellError(
        "your container could not copy its home aside, so it cannot be kept; nothing was changed; "
        "to rebuild without it: rebuild --wipe-home --yes",
        f"rebuild of {user.name}: copying the home aside inside the container ended with status {status}",
    )


def bring_back_home(driver: LxdDriver, user: User, keys: str, volume: str) -> None:
    """Into the new root disk, inside the started container, with the student's keys; the volume goes."""
    driver.start(user.container)
    status = _inside(driver, user, BRING_BACK_HOME)
    if status != 0:
        raise GpushellError(
            # No absolute path: the helper shows a student none (even one of their own).
            f"your container was rebuilt, but your home is still in its {HOME_MOUNT[1:]}/{user.name}; "
            "run rebuild again to bring it back, or copy it yourself",
            f"rebuild of {user.name}: bringing the home back ended with {status}; it stays on {volume}",
        )
    driver.install_keys(user, keys)
    _drop_volume(driver, user, volume)
