"""`keys` on a cluster: the student's way back into their container, through the engine.

The same repairs as on one host (keyrescue.py), made the engine's way:
its file API writes as the container's root inside the container, and its
exec runs inside it, so nothing the container planted can lead a write out
of it, and no path-by-path guard is needed.  Whatever the student's own
sshd drop-ins were, they are moved aside, not deleted.
"""

from __future__ import annotations

from ..core.model import User
from . import template
from .backend import RUNNING
from .lxd import LxdDriver

# Inside the running container, as its root: other drop-ins aside, host keys
# where missing, sshd restarted (its start limit reset first: a boot without
# host keys leaves ssh.service failed).
REPAIR_SCRIPT = (
    "set -e; cd /etc/ssh; mkdir -p sshd_config.d.gpushell-old; "
    "for f in sshd_config.d/*.conf; do "
    '[ -e "$f" ] && [ "$f" != sshd_config.d/gpushell.conf ] && mv -f "$f" sshd_config.d.gpushell-old/ '
    "|| true; done; ssh-keygen -A >/dev/null; systemctl reset-failed ssh.service || true; "
    "systemctl restart ssh.service"
)


def rescue(driver: LxdDriver, user: User, keys: str) -> list[str]:
    """Repair the student's way in; short lines saying what was repaired."""
    client, name = driver.client(user.container), user.container
    driver.install_keys(user, keys)
    lines = ["~/.ssh/authorized_keys: copied your keys from the host"]
    client.push_file(name, "/etc/ssh/sshd_config", template.FALLBACK_SSHD_CONFIG)
    dropin = f"/{template.GPUSHELL_DROPIN}"
    client.push_file(name, dropin, template.CUSTOM_FILES[template.GPUSHELL_DROPIN].encode())
    lines.append("/etc/ssh/sshd_config: put back Debian's default and gpushell's drop-in")
    if driver.state(name) != RUNNING:
        return [*lines, "your container is stopped; run keys again once it runs to restart sshd"]
    if driver.run_inside(name, ["sh", "-c", REPAIR_SCRIPT]) != 0:
        return [*lines, "could not restart sshd in your container; restart your container to apply: restart"]
    return [
        *lines,
        "moved other sshd drop-ins to /etc/ssh/sshd_config.d.gpushell-old",
        "restarted sshd in your container",
    ]
