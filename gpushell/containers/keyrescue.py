"""`keys`: let a student who locked themselves out of their container back in.

Puts the host account's authorized_keys back into the container, makes the
path to it pass sshd's StrictModes, puts sshd's configuration back to what
a new container has, checks the host keys and the ssh unit, and restarts
sshd when the container runs.

The container's root may have planted links anywhere in this path, so
every read and write goes through rootfs.py (component by component,
O_NOFOLLOW).  Whatever is in the way is renamed aside within its own
directory (a rename moves the entry, never what a link points to), so the
student can look at what was wrong and nothing of theirs is deleted.

The sshd configuration chosen: Debian's own default sshd_config, taken
verbatim from the current template (so the package's ucf sees an
unmodified file and a later `apt upgrade` of openssh-server inside neither
prompts nor keeps a stale copy), Include line and all, plus the template's
gpushell drop-in.  Every other sshd_config.d/*.conf is moved aside into
sshd_config.d.gpushell-old/: the effective configuration is then exactly
a fresh container's, and the student can see what broke it and put back
what they need.  Dropping the Include instead would leave those files
silently ignored, and surprise whoever edits one later.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from ..core.errors import GpushellError
from ..core.model import Registry, User
from ..system import rootfs
from ..system.runner import MESSAGE_OUTPUT, run
from . import provision, template
from .backend import RUNNING, ContainerDriver

STUDENT = (provision.STUDENT_UID, provision.STUDENT_UID)
ROOT = (0, 0)
MAX_KEY_FILE = 16 * 1024
MAX_CONFIG = 256 * 1024
DROPIN_DIR = "etc/ssh/sshd_config.d"
DROPIN_BACKUP = "etc/ssh/sshd_config.d.gpushell-old"
# What `ssh-keygen -y` prints first for each host key kind.
KEY_TYPES = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp"}
SSH_UNIT = "usr/lib/systemd/system/ssh.service"
SSH_UNIT_TARGET = "/lib/systemd/system/ssh.service"  # as Debian's `systemctl enable` links it
SSH_WANTS = "etc/systemd/system/multi-user.target.wants/ssh.service"
SSH_OVERRIDES = ("etc/systemd/system/ssh.service", "etc/systemd/system/ssh.service.d")
SYSTEMCTL = "usr/bin/systemctl"


def rescue(reg: Registry, user: User, driver: ContainerDriver, keys: str) -> list[str]:
    """Repair the student's way in; short lines saying what was repaired."""
    if reg.cluster is not None:
        from . import lxdkeys
        from .lxd import LxdDriver

        assert isinstance(driver, LxdDriver)
        return lxdkeys.rescue(driver, user, keys)
    root = os.path.join(provision.container_dir(reg, user.container), "rootfs")
    if not os.path.isdir(root):
        raise GpushellError("your container does not exist", f"{root} is missing")
    if rootfs.entry_type(root, "etc") != "dir":
        raise GpushellError(
            "your container's /etc is not a directory; start afresh with: rebuild --yes",
            f"{root}/etc is not a directory",
        )
    template_root = os.path.join(provision.container_dir(reg, reg.template), "rootfs")
    # The keys are the point: a failure there is the action's failure.  The
    # other repairs each report their own failure and let the rest go on.
    lines = install_authorized_keys(root, user.name, keys)
    lines += _attempt("your account", lambda: account_check(root, user.name))
    lines += _attempt("sshd_config", lambda: repair_sshd_config(root, default_sshd_config(template_root)))
    lines += _attempt("the host keys", lambda: repair_host_keys(root, user.container))
    units_changed = False

    def units() -> list[str]:
        nonlocal units_changed
        unit_lines, units_changed = repair_ssh_unit(root)
        return unit_lines

    lines += _attempt("ssh.service", units)
    if driver.state(user.container) == RUNNING:
        lines += restart_sshd(driver, user.container, root, units_changed)
    else:
        lines.append("your container is stopped; the repairs apply when it starts")
    return lines


def _attempt(what: str, repair: Callable[[], list[str]]) -> list[str]:
    try:
        return repair()
    except GpushellError as exc:
        return [f"could not repair {what}: {exc.user_message}"]
    except OSError as exc:
        return [f"could not repair {what}: {exc.strerror or exc}"]


# --- the way to authorized_keys ------------------------------------------------


def real_dir(root: str, path: str, mode: int, owner: tuple[int, int]) -> list[str]:
    """Make rootfs/path a real directory, moving whatever else is there aside."""
    kind = rootfs.entry_type(root, path)
    if kind == "dir":
        return []
    lines = []
    if kind is not None:
        aside = rootfs.move_aside(root, path)
        lines.append(f"/{path} was a {_what(kind)}; moved it aside to {aside}")
    rootfs.make_dir(root, path, mode, owner)
    return lines


def _what(kind: str) -> str:
    return {"link": "link", "file": "file, not a directory"}.get(kind, "special file")


def install_authorized_keys(root: str, name: str, keys: str) -> list[str]:
    """Write keys to /home/NAME/.ssh/authorized_keys so that sshd (StrictModes) accepts them.

    The previous file (or link, or anything) is kept as authorized_keys.gpushell-old.
    """
    home = f"home/{name}"
    lines = real_dir(root, "home", 0o755, ROOT)
    lines += real_dir(root, home, 0o700, STUDENT)
    if rootfs.secure_dir(root, home, STUDENT):
        lines.append(f"/{home}: made it yours and not writable by others (sshd requires it)")
    lines += real_dir(root, f"{home}/.ssh", 0o700, STUDENT)
    rootfs.make_dir(root, f"{home}/.ssh", 0o700, STUDENT)
    target = f"{home}/.ssh/authorized_keys"
    aside = rootfs.move_aside(root, target)
    rootfs.write_file(root, target, keys, 0o600, STUDENT)
    kept = f" (the previous one is now {aside})" if aside else ""
    lines.append(f"~/.ssh/authorized_keys: copied your keys from the host{kept}")
    return lines


def account_check(root: str, name: str) -> list[str]:
    """Report (not repair) a missing account: only a rebuild makes one properly."""
    passwd = rootfs.read_file(root, "etc/passwd", MAX_CONFIG) or b""
    if any(line.split(b":", 1)[0] == name.encode() for line in passwd.splitlines()):
        return []
    return [f"there is no user {name} in your container's /etc/passwd; start afresh with: rebuild --yes"]


# --- sshd's configuration --------------------------------------------------------


def default_sshd_config(template_root: str) -> bytes:
    """Debian's default sshd_config from the template (never started: root's), or the fallback."""
    text = rootfs.read_file(template_root, "etc/ssh/sshd_config", MAX_CONFIG)
    return text if text else template.FALLBACK_SSHD_CONFIG


def repair_sshd_config(root: str, default: bytes) -> list[str]:
    lines = real_dir(root, "etc/ssh", 0o755, ROOT)
    config = "etc/ssh/sshd_config"
    if rootfs.read_file(root, config, MAX_CONFIG) != default:
        aside = rootfs.move_aside(root, config)
        rootfs.write_file(root, config, default)
        kept = f" (yours is now /etc/ssh/{aside})" if aside else ""
        lines.append(f"/etc/ssh/sshd_config: put back the default{kept}")
    lines += real_dir(root, DROPIN_DIR, 0o755, ROOT)
    moved = []
    taken = _backup_names(root)  # listed once: each move adds its name here
    for name, kind in sorted(rootfs.entries(root, DROPIN_DIR).items()):
        # sshd reads `sshd_config.d/*.conf`; the glob skips dot names.
        if not name.endswith(".conf") or name.startswith(".") or _is_our_dropin(root, name, kind):
            continue
        free = _free_name(name, taken)
        rootfs.move(root, f"{DROPIN_DIR}/{name}", root, f"{DROPIN_BACKUP}/{free}", 0o755)
        taken.add(free)
        moved.append(name)
    if moved:
        lines.append(f"moved {', '.join(moved)} from /{DROPIN_DIR} to /{DROPIN_BACKUP}/")
    if rootfs.entry_type(root, template.GPUSHELL_DROPIN) is None:
        rootfs.write_file(root, template.GPUSHELL_DROPIN, template.CUSTOM_FILES[template.GPUSHELL_DROPIN])
    return lines


def _is_our_dropin(root: str, name: str, kind: str) -> bool:
    path = f"{DROPIN_DIR}/{name}"
    return (
        path == template.GPUSHELL_DROPIN
        and kind == "file"
        and rootfs.read_file(root, path, MAX_CONFIG) == template.CUSTOM_FILES[path].encode()
    )


def _backup_names(root: str) -> set[str]:
    """The names in the backup directory (none when it is not a directory yet)."""
    if rootfs.entry_type(root, DROPIN_BACKUP) != "dir":
        return set()
    return set(rootfs.entries(root, DROPIN_BACKUP))


def _free_name(name: str, taken: set[str]) -> str:
    """name, or name with a random suffix when the backup has one already (one listing, no probing)."""
    while name in taken:
        name = f"{name.split('.gpushell-', 1)[0]}.gpushell-{os.urandom(4).hex()}"
    return name


# --- host keys --------------------------------------------------------------------


def public_key(private: bytes, kind: str) -> str | None:
    """`TYPE BASE64` of a private host key, or None if ssh-keygen cannot read it as one of this kind.

    The key is container root's text: read bounded (MAX_KEY_FILE), copied
    into a private directory of ours, and parsed by ssh-keygen running as
    `nobody` (no capabilities, no new privileges), with a timeout and a
    capped output, so a key crafted against ssh-keygen's parsers reaches
    no root process.
    """
    if len(private) > MAX_KEY_FILE:
        return None
    with tempfile.TemporaryDirectory() as keydir:
        os.chmod(keydir, 0o711)  # nobody may open the one file it is given, not list
        path = os.path.join(keydir, "key")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as stream:
            stream.write(private)
        os.chown(path, *UNPRIVILEGED)
        result = run(unprivileged(["ssh-keygen", "-y", "-P", "", "-f", path]), check=False,
                     timeout=30, max_output=MESSAGE_OUTPUT)  # fmt: skip
    words = result.stdout.split()
    if result.returncode != 0 or len(words) < 2 or not words[0].startswith(KEY_TYPES[kind]):
        return None
    return f"{words[0]} {words[1]}"


# Who parses what a container wrote: no account of ours, no group, no capability.
UNPRIVILEGED = (65534, 65534)


def unprivileged(argv: list[str]) -> list[str]:
    uid, gid = UNPRIVILEGED
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", *argv]


def read_host_keys(root: str) -> dict[str, tuple[bytes, bytes]]:
    """The container's SSH host keys that are real keys: kind -> (private, public)."""
    found = {}
    for kind in provision.HOST_KEY_KINDS:
        private = rootfs.read_file(root, f"etc/ssh/ssh_host_{kind}_key", MAX_KEY_FILE)
        public = None if private is None else public_key(private, kind)
        if private is not None and public is not None:
            line = " ".join(word for word in (public, _comment(root, kind)) if word)
            found[kind] = (private, f"{line}\n".encode())
    return found


def _comment(root: str, kind: str) -> str:
    """The comment of the existing .pub (root@container), kept when it is plain text."""
    text = rootfs.read_file(root, f"etc/ssh/ssh_host_{kind}_key.pub", MAX_KEY_FILE) or b""
    words = text.decode("ascii", "replace").split()
    comment = words[2] if len(words) >= 3 else ""
    return comment if comment.isascii() and comment.isprintable() else ""


def repair_host_keys(root: str, container: str) -> list[str]:
    """Host keys sshd can load: missing or broken ones are made anew (their old files kept aside)."""
    lines = []
    valid = read_host_keys(root)
    for kind in provision.HOST_KEY_KINDS:
        path = f"etc/ssh/ssh_host_{kind}_key"
        if kind in valid:
            public = valid[kind][1]
            # sshd ignores a private key others can read.
            if rootfs.secure_file(root, path, 0o600, ROOT):
                lines.append(f"/{path}: made it root's and private again")
            if rootfs.read_file(root, f"{path}.pub", MAX_KEY_FILE) != public:
                rootfs.write_file(root, f"{path}.pub", public, 0o644)  # derived from the private key
            continue
        for name in (path, f"{path}.pub"):
            rootfs.move_aside(root, name)
        provision.write_host_key(root, kind, *provision.new_host_key(kind, container))
        lines.append(
            f"host key {kind} was missing or broken: made a new one "
            "(your ssh client may warn that the host key changed)"
        )
    return lines


# --- the ssh unit and restarting sshd --------------------------------------------------


def repair_ssh_unit(root: str) -> tuple[list[str], bool]:
    """Unmask, un-override and enable ssh.service; (lines, whether any unit file changed)."""
    if rootfs.entry_type(root, SSH_UNIT) != "file":
        return [
            "your container has no ssh.service (openssh-server removed?); start afresh with: rebuild"
        ], False
    lines = []
    for path in SSH_OVERRIDES:
        aside = rootfs.move_aside(root, path)
        if aside is not None:
            lines.append(f"/{path} masked or overrode sshd; moved it aside to {aside}")
    if rootfs.entry_type(root, SSH_WANTS) != "link":
        lines += real_dir(root, os.path.dirname(SSH_WANTS), 0o755, ROOT)
        rootfs.move_aside(root, SSH_WANTS)
        rootfs.make_link(root, SSH_WANTS, SSH_UNIT_TARGET)
        lines.append("ssh.service was not enabled; enabled it")
    return lines, bool(lines)


def restart_sshd(driver: ContainerDriver, container: str, root: str, units_changed: bool) -> list[str]:
    """Restart sshd inside the running container, through its own systemd."""
    later = "could not restart sshd in your container; restart your container to apply: restart"
    if rootfs.entry_type(root, SYSTEMCTL) != "file" or rootfs.entry_type(root, SSH_UNIT) != "file":
        return [later]
    steps: list[tuple[str, ...]] = [("systemctl", "daemon-reload")] if units_changed else []
    steps.append(("systemctl", "restart", "ssh.service"))
    for step in steps:
        # The container's own systemctl: its output is its root's to choose (capped).
        done = run(driver.attach(container, list(step)), check=False, timeout=90, max_output=MESSAGE_OUTPUT)
        if done.returncode != 0:
            return [later]
    return ["restarted sshd in your container"]
