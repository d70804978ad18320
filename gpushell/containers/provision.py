"""Making and destroying a student's container.

A container is a full copy of the template's rootfs (plain ids on disk)
mounted id-mapped into the student's own id range; see the README for why
this beats an overlay clone with a shared range.  Everything written into
the copy goes through rootfs.write_file, which never follows a link.
"""

from __future__ import annotations

import os
import tempfile

from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..gpu import gpudevices
from ..system import accounts, rootfs
from ..system.runner import run
from . import cgroups, confinement, lxcconfig, storage, template

STUDENT_UID = lxcconfig.STUDENT_ID  # the student's uid inside their own container
ORIGIN_FILE = "gpushell-template"  # in the container's directory, beside config and rootfs


def container_dir(reg: Registry, name: str) -> str:
    return os.path.join(reg.lxcpath, name)


def create(reg: Registry, user: User, keys: str) -> str:
    """Copy the template into a new container for user; return its directory."""
    template_root = os.path.join(container_dir(reg, reg.template), "rootfs")
    if not os.path.isdir(template_root):
        raise GpushellError(f"template {reg.template} is missing; run: gpushell-admin template build")
    directory = container_dir(reg, user.container)
    if os.path.lexists(directory):
        raise GpushellError(f"container {user.container} already exists in {reg.lxcpath}")
    store = storage.for_registry(reg)
    staging = store.new_container_dir(reg.lxcpath, f".{user.container}-")
    try:
        root = os.path.join(staging, "rootfs")
        store.copy_template(template_root, root)
        store.set_quota(staging, user.limits.disk)
        give_identity(root, user)
        create_account(root, user.name, keys)
        final_root = os.path.join(directory, "rootfs")
        with open(os.path.join(staging, "config"), "w", encoding="utf-8") as config:
            host = gpudevices.read_host(reg.gpu_devices, reg.driver_root)
            nodes = gpudevices.select(host.nodes, user.gpus)
            ids = accounts.student_ids(user)
            text = lxcconfig.container_config(
                reg, user, final_root, confinement.apparmor_profile(), nodes, ids, cgroups.layout()
            )
            config.write(text)
        confinement.write_seccomp_profile(staging)
        # Which template it was copied from, for `gpushell-admin template list`.
        with open(os.path.join(staging, ORIGIN_FILE), "w", encoding="utf-8") as origin_file:
            origin_file.write(f"{reg.template}\n")
        os.rename(staging, directory)
    except BaseException:
        store.remove(staging, ignore_errors=True)
        raise
    return directory


HOST_KEY_KINDS = ("ed25519", "ecdsa")  # what the template's sshd drop-in names (template.py)
SSHD_DROPIN = "etc/ssh/sshd_config.d/gpushell.conf"


def give_identity(root: str, user: User, host_keys: dict[str, tuple[bytes, bytes]] | None = None) -> None:
    """Hostname, hosts, machine id and SSH host keys of the clone's own.

    host_keys: kind -> (private, public) to keep (a rebuild keeps the old
    container's, so the student's known_hosts stays valid); the other
    kinds get new keys.
    """
    rootfs.write_file(root, "etc/hostname", f"{user.container}\n")
    rootfs.write_file(root, "etc/hosts", lxcconfig.hosts_file(user.container))
    rootfs.write_file(root, "etc/machine-id", new_machine_id(), mode=0o444)
    rootfs.write_file(root, "etc/network/interfaces", lxcconfig.INTERFACES)
    # The template's own keys are the same in every copy: none may stay.
    # (A template cached before its drop-in named the host keys still has
    # an RSA key; the drop-in is written here too, so its clones match.)
    rootfs.write_file(root, SSHD_DROPIN, template.CUSTOM_FILES[SSHD_DROPIN], create_dirs=0o755)
    for name in ("ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_dsa_key", "ssh_host_dsa_key.pub"):
        rootfs.remove_file(root, f"etc/ssh/{name}")
    for kind in HOST_KEY_KINDS:
        private, public = (host_keys or {}).get(kind) or new_host_key(kind, user.container)
        write_host_key(root, kind, private, public)


def new_machine_id() -> str:
    """A fresh /etc/machine-id: 128 random bits as hex, one line."""
    return os.urandom(16).hex() + "\n"


def new_host_key(kind: str, container: str) -> tuple[bytes, bytes]:
    """A fresh SSH host key pair (private, public), made on the host by ssh-keygen."""
    with tempfile.TemporaryDirectory() as keydir:
        key = os.path.join(keydir, f"ssh_host_{kind}_key")
        run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{container}", "-f", key])
        with open(key, "rb") as private, open(key + ".pub", "rb") as public:
            return private.read(), public.read()


def write_host_key(root: str, kind: str, private: bytes, public: bytes) -> None:
    rootfs.write_file(root, f"etc/ssh/ssh_host_{kind}_key", private, 0o600)
    rootfs.write_file(root, f"etc/ssh/ssh_host_{kind}_key.pub", public, 0o644)


def create_account(root: str, name: str, keys: str) -> None:
    """The student's account inside: sudo without password, key login."""
    # --prefix edits the copy's own passwd/group files, no chroot: nothing
    # from the rootfs runs on the host.  The copy has never been started,
    # so no path in it is the container's doing yet.
    run(
        [
            "useradd",
            "--prefix",
            root,
            "--create-home",
            "--uid",
            str(STUDENT_UID),
            "--user-group",
            "--shell",
            "/bin/bash",
            "--password",
            "*",
            name,
        ]
    )
    owner = (STUDENT_UID, STUDENT_UID)
    rootfs.write_file(root, f"etc/sudoers.d/gpushell-{name}", f"{name} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    install_keys(root, f"home/{name}", keys, owner)


def install_keys(root: str, home: str, keys: str, owner: tuple[int, int]) -> None:
    rootfs.make_dir(root, f"{home}/.ssh", 0o700, owner)
    rootfs.write_file(root, f"{home}/.ssh/authorized_keys", keys, 0o600, owner)


def destroy(reg: Registry, name: str) -> bool:
    """Remove a (stopped) container's directory, snapshots and all; False if there was none."""
    directory = container_dir(reg, name)
    if not os.path.lexists(directory):
        return False
    storage.for_registry(reg).remove(directory)
    return True


def origin(reg: Registry, name: str) -> str | None:
    """The template a container was copied from; None if it does not say."""
    try:
        with open(os.path.join(container_dir(reg, name), ORIGIN_FILE), encoding="utf-8") as stream:
            return stream.read().strip() or None
    except OSError:
        return None
