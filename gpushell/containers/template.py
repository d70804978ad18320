"""The Debian template every student's container is copied from.

Built once with debootstrap from the mirror apt already uses on this host,
then kept as a tarball under a fixed cache directory: a second build (or a
CI run on the same machine) unpacks it in seconds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile

from ..core.errors import GpushellError
from ..core.paths import DEBIAN_SUITE
from ..system import rootfs
from ..system.runner import run
from . import lxcconfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .dirstorage import Storage

SUITE = DEBIAN_SUITE
PACKAGES = (
    "systemd-sysv", "openssh-server", "sudo", "iproute2", "ifupdown",
    "netbase", "dbus", "ca-certificates", "less",
)  # fmt: skip
# Bumped whenever the customisation below changes, so old caches are not reused.
RECIPE_VERSION = "2"

GPUSHELL_DROPIN = "etc/ssh/sshd_config.d/gpushell.conf"
# The non-comment lines of Debian bookworm's default, used only when the
# template's own copy cannot be read (the template was removed, say).
FALLBACK_SSHD_CONFIG = (
    "# Debian's default sshd_config, put back by gpushell `keys`\n"
    "Include /etc/ssh/sshd_config.d/*.conf\n"
    "KbdInteractiveAuthentication no\n"
    "UsePAM yes\n"
    "X11Forwarding yes\n"
    "PrintMotd no\n"
    "AcceptEnv LANG LC_*\n"
    "Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n"
).encode("ascii")

# A volatile journal: a killed container otherwise leaves ~8 MB of dirty
# journal on disk each time.  The masked units cannot work in a container.
CUSTOM_FILES = {
    "etc/systemd/journald.conf.d/gpushell.conf": "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n",
    "etc/network/interfaces": lxcconfig.INTERFACES,
    # Each clone gets its own ed25519 and ECDSA host keys (provision.give_identity).
    # No RSA: making one took ~0.8 s of every `add`, and every OpenSSH client
    # since 6.5 (2014) takes ed25519.
    GPUSHELL_DROPIN: (
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n"
    ),
}
MASKED_UNITS = (
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "apt-daily.timer",
    "apt-daily-upgrade.timer", "systemd-timesyncd.service", "getty@tty1.service",
)  # fmt: skip


def mirror_from_apt_sources(texts: list[str]) -> str | None:
    """The first Debian mirror URI in apt sources (one-line or deb822 style)."""
    for text in texts:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                uri = _first_uri(words[1:])
                if uri and not uri.rstrip("/").endswith(("-security", "security")):
                    return uri
            if len(words) >= 2 and words[0] == "URIs:" and not words[1].rstrip("/").endswith("-security"):
                return words[1]
    return None


def _first_uri(words: list[str]) -> str | None:
    """The first word after an optional `[opt=x opt=y]` block."""
    in_options = False
    for word in words:
        if word.startswith("["):
            in_options = True
        if in_options:
            in_options = not word.endswith("]")
            continue
        return word
    return None


def host_mirror() -> str:
    paths = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    texts = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as stream:
                texts.append(stream.read())
        except OSError:
            continue
    mirror = mirror_from_apt_sources(texts)
    if mirror is None:
        raise GpushellError("no Debian mirror found in /etc/apt/sources*; pass --mirror URL")
    return mirror


def cache_key(suite: str, packages: tuple[str, ...]) -> str:
    digest = hashlib.sha256(" ".join((RECIPE_VERSION, suite, *packages)).encode()).hexdigest()
    return f"{suite}-{digest[:12]}"


def customise(root: str) -> None:
    for path, content in CUSTOM_FILES.items():
        rootfs.write_file(root, path, content, create_dirs=0o755)
    for unit in MASKED_UNITS:
        link = os.path.join(root, "etc/systemd/system", unit)
        if not os.path.lexists(link):
            os.symlink("/dev/null", link)
    # Each clone gets its own machine id and host keys.
    rootfs.write_file(root, "etc/machine-id", "")
    for key in glob.glob(os.path.join(root, "etc/ssh/ssh_host_*")):
        os.unlink(key)


def ensure_cached(
    cache_dir: str, suite: str = SUITE, extra: tuple[str, ...] = (), mirror: str | None = None
) -> str:
    """Path of the cached rootfs tarball, building it first if needed."""
    packages = tuple(sorted(set(PACKAGES + extra)))
    tarball = os.path.join(cache_dir, f"{cache_key(suite, packages)}.tar")
    if os.path.exists(tarball):
        return tarball
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
    try:
        root = os.path.join(work, "rootfs")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                suite,
                root,
                mirror or host_mirror(),
            ],
            timeout=1800,
        )
        customise(root)
        # tar writes the file, so not files.write_atomically; the rename still makes it appear whole.
        partial = tarball + ".partial"
        run(["tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", partial, "."], timeout=600)
        os.rename(partial, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


SUITE_MARK = "# gpushell suite: "


def suite_of(config: str) -> str | None:
    """The suite an installed template's config records, if any."""
    for line in config.splitlines():
        if line.startswith(SUITE_MARK):
            return line[len(SUITE_MARK) :].strip() or None
    return None


def install(tarball: str, lxcpath: str, name: str, suite: str | None, store: Storage) -> str:
    """Unpack the tarball as container `name` (never started: only copied).

    store: the registry's storage (storage.for_registry), which decides the
    tree, never the lxcpath's filesystem: with `btrfs` the rootfs is a
    subvolume (every new container a snapshot of it); with `dir` a plain
    directory, on btrfs too (`storage migrate` copes with it, and
    BtrfsStorage.copy_template with a template from `dir` days).
    """
    directory = os.path.join(lxcpath, name)
    if os.path.exists(directory):
        raise GpushellError(f"{directory} already exists; remove it or choose another template name")
    os.makedirs(lxcpath, mode=0o755, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=lxcpath)
    try:
        os.chmod(staging, 0o700)
        store.make_root(os.path.join(staging, "rootfs"))
        run(
            ["tar", "--numeric-owner", "--xattrs", "-C", os.path.join(staging, "rootfs"), "-xf", tarball],
            timeout=600,
        )
        with open(os.path.join(staging, "config"), "w", encoding="utf-8") as config:
            config.write(
                "# gpushell template: copied for each student, never started\n"
                + (f"{SUITE_MARK}{suite}\n" if suite else "")
                + f"lxc.rootfs.path = dir:{directory}/rootfs\nlxc.uts.name = {name}\n"
            )
        os.rename(staging, directory)
    except BaseException:
        store.remove(staging, ignore_errors=True)
        raise
    return directory
