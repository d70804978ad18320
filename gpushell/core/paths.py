"""Where gpushell finds its registry and its helper.

These are fixed when gpushell is installed, never taken from the environment
or the command line of the login shell: a student controls both.  The
installed entry points use `DEFAULT`; the integration tests build their own
entry-point scripts that pass another `Paths` (root-owned, like the real ones).
"""

from __future__ import annotations

# Where the entry points of this copy of gpushell are: `make install` puts
# them here; the Debian package's build writes /usr/bin into its own copy
# (debian/rules).  The helper, the login shell and the driver hook are named
# from it, so each copy names only its own programs.
BIN_DIR = "/usr/local/bin"


class Paths:
    """The install-time locations; keyword arguments override the defaults.

    A plain class rather than a dataclass: the login shell imports this, and
    `dataclasses` would add its imports to every login.
    """

    __slots__ = (
        "group",
        "helper",
        "helper_socket",
        "registry",
        "run_dir",
        "shell",
        "sshd_config",
        "sshd_dropin",
        "state_dir",
        "status_dir",
        "sudo",
        "sudoers_dropin",
        "sysctl_dropin",
        "syslog_ident",
        "template_cache",
    )  # fmt: skip

    def __init__(
        self,
        registry: str = "/etc/gpushell.yaml",
        helper: str = f"{BIN_DIR}/gpushell-helper",
        # The resident helper's socket (helper/server.py); root's, group `group`, beside run_dir: that
        # one is root's alone.
        helper_socket: str = "/run/gpushell-helper.sock",
        shell: str = f"{BIN_DIR}/gpushell",
        sudo: str = "/usr/bin/sudo",
        run_dir: str = "/run/gpushell",  # per-user, forward, registry locks, boot turns; the registry cache
        template_cache: str = "/var/cache/gpushell/templates",
        sudoers_dropin: str = "/etc/sudoers.d/gpushell",
        sshd_dropin: str = "/etc/ssh/sshd_config.d/gpushell.conf",
        sshd_config: str = "/etc/ssh/sshd_config",  # doctor asks sshd what it applies
        group: str = "gpushell",
        syslog_ident: str = "gpushell",
        state_dir: str = "/var/lib/gpushell",  # root-only state that outlives a boot: the GPU loans
        status_dir: str = "",  # the status page, for a web server to read; "": STATE_DIR-status
        sysctl_dropin: str = "/etc/sysctl.d/10-gpushell.conf",  # the kernel pools' sizes (kernelpools.py)
    ) -> None:
        self.registry, self.helper, self.shell, self.sudo = registry, helper, shell, sudo
        self.helper_socket = helper_socket
        self.run_dir, self.template_cache = run_dir, template_cache
        self.sudoers_dropin, self.sshd_dropin, self.sysctl_dropin = sudoers_dropin, sshd_dropin, sysctl_dropin
        self.sshd_config = sshd_config
        self.group, self.syslog_ident = group, syslog_ident
        self.state_dir = state_dir
        # Beside the state directory, not in it: that one is root's alone (0700).
        self.status_dir = status_dir or f"{state_dir}-status"

    def replace(self, **changes: str) -> Paths:
        values = {name: getattr(self, name) for name in self.__slots__}
        return Paths(**{**values, **changes})

    # The run directory's files, named here only.  Root's, in a root-only
    # directory; they describe this boot and go with it.

    @property
    def registry_lock(self) -> str:
        """Serializes the commands that change the registry or act on all of it (add, remove, set, apply)."""
        return f"{self.run_dir}/registry.lock"

    @property
    def registry_cache(self) -> str:
        """The helper's compiled copy of the registry (registry_cache.py)."""
        return f"{self.run_dir}/registry.cache"

    def user_lock(self, user: str) -> str:
        """One action per student at a time."""
        return f"{self.run_dir}/user-{user}.lock"

    def boot_slot(self, number: int) -> str:
        """One of the host's boot slots (system/bootslots.py)."""
        return f"{self.run_dir}/boot-{number}.lock"

    @property
    def forward_lock(self) -> str:
        """One writer of the nat table at a time."""
        return f"{self.run_dir}/forward.lock"

    def forward_stamp(self, user: str) -> str:
        """The ruleset generation at which the student's forward was last seen right."""
        return f"{self.run_dir}/forward-{user}.stamp"

    @property
    def forwards_stamp(self) -> str:
        """The ruleset generation at which every student's forward was last seen right, and their rules."""
        return f"{self.run_dir}/forwards.stamp"

    def disk_count(self, user: str) -> str:
        """The last count of the student's rootfs on `dir` storage (containers/diskcount.py)."""
        return f"{self.run_dir}/disk-{user}.count"

    def freeze_marker(self, user: str) -> str:
        """There while a snapshot holds the student's container frozen."""
        return f"{self.run_dir}/frozen-{user}"

    @property
    def gpu_snapshot(self) -> str:
        """The login banner's GPU lines (gpucache.py)."""
        return f"{self.run_dir}/gpus.snapshot"

    def member_gpu_snapshot(self, member: str) -> str:
        """The banner's GPU lines for the students on a cluster member (the tick writes them)."""
        return f"{self.run_dir}/gpus-{member}.snapshot"

    @property
    def gpu_lock(self) -> str:
        """One refresh of the GPU snapshot at a time."""
        return f"{self.run_dir}/gpus.lock"

    @property
    def loans_lock(self) -> str:
        """One change of the GPU loans at a time (loanstore.py)."""
        return f"{self.run_dir}/loans.lock"

    # The state directory's files: root's, private, kept across reboots.

    @property
    def loans(self) -> str:
        """Which GPU is lent to whom until when, and who waits (loanstore.py)."""
        return f"{self.state_dir}/loans.json"


DEFAULT = Paths()
# Run by LXC (lxc.hook.mount) at each GPU container's start: written into
# container configs, so fixed at install like the entry points, not per Paths.
DRIVER_HOOK = f"{BIN_DIR}/gpushell-driver-hook"
# The Debian suite templates are built from unless `template build --suite` says otherwise.
DEBIAN_SUITE = "bookworm"
