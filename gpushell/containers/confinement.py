"""What confines every student's container beyond its user namespace: AppArmor and seccomp.

lxcconfig writes the config lines that name them; this module looks at the
host (AppArmor's presence) and writes the seccomp file the config names.
"""

from __future__ import annotations

import os

from ..system.files import write_atomically
from . import lxcconfig


def apparmor_profile() -> str:
    # "generated" needs AppArmor in the kernel; without it LXC refuses to start.
    return "generated" if os.path.isdir("/sys/kernel/security/apparmor") else "unconfined"


def write_seccomp_profile(directory: str) -> None:
    """The seccomp profile its config names (lxcconfig.seccomp_profile), in the container's directory."""
    write_atomically(os.path.join(directory, lxcconfig.SECCOMP_FILE), lxcconfig.seccomp_profile(), 0o644)
