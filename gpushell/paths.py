"""Where gpushell finds its registry and its helper.

These are fixed when gpushell is installed, never taken from the environment
or the command line of the login shell: a student controls both.  The
installed entry points use `DEFAULT`; the integration tests build their own
entry-point scripts that pass another `Paths` (root-owned, like the real ones).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Paths:
    registry: str = "/etc/gpushell.yaml"
    helper: str = "/usr/local/bin/gpushell-helper"
    shell: str = "/usr/local/bin/gpushell"
    sudo: str = "/usr/bin/sudo"
    run_dir: str = "/run/gpushell"  # per-user and registry locks
    template_cache: str = "/var/cache/gpushell/templates"
    sudoers_dropin: str = "/etc/sudoers.d/gpushell"
    sshd_dropin: str = "/etc/ssh/sshd_config.d/gpushell.conf"
    group: str = "gpushell"
    syslog_ident: str = "gpushell"

    @property
    def registry_lock(self) -> str:
        return f"{self.run_dir}/registry.lock"

    def user_lock(self, user: str) -> str:
        return f"{self.run_dir}/user-{user}.lock"


DEFAULT = Paths()
