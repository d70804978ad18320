"""The sudoers and sshd drop-ins and the starter registry (pure text)."""

from __future__ import annotations

from .menu import HELPER_VERBS
from .paths import Paths


def sudoers(paths: Paths) -> str:
    """Members of the group may run the helper with exactly these verbs, nothing else."""
    commands = ", ".join(f"{paths.helper} {verb}" for verb in sorted(HELPER_VERBS))
    return (
        "# Installed by gpushell-admin init.  Students run the root helper with\n"
        "# one fixed verb; sudo resets the environment and sets SUDO_UID.  No PAM\n"
        "# session or credentials for it: it runs on every login, and sudo still logs.\n"
        f"Defaults!{paths.helper} env_reset, !requiretty, !lecture, !pam_session, !pam_setcred\n"
        f"%{paths.group} ALL=(root) NOPASSWD: {commands}\n"
    )


def sshd(paths: Paths) -> str:
    """sshd settings for students: the menu, and no way around it."""
    return (
        "# Installed by gpushell-admin init.  Students (group {group}) get the gpushell\n"
        "# menu and nothing else: no forwarding of any kind, no ~/.ssh/rc, no\n"
        "# environment from the client's files.  Keep `Subsystem sftp` pointing at\n"
        "# the sftp-server program, never internal-sftp: the external one runs\n"
        "# through the login shell, which refuses it.\n"
        "PermitUserEnvironment no\n"
        "Match Group {group}\n"
        "    DisableForwarding yes\n"
        "    AllowTcpForwarding no\n"
        "    AllowAgentForwarding no\n"
        "    AllowStreamLocalForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTunnel no\n"
        "    PermitOpen none\n"
        "    PermitListen none\n"
        "    GatewayPorts no\n"
        "    PermitUserRC no\n"
        "    PermitTTY yes\n"
        "Match all\n"
    ).replace("{group}", paths.group)


def starter_limits(memory_bytes: int, cpu_count: int) -> tuple[str, int | float]:
    """Each student's default memory and CPUs on a host this size: half of each (pure).

    One student alone can use at most half the host, so a runaway job never
    starves the rest; the admin raises or lowers it per student.
    """
    gib = max(1, memory_bytes // 2**31)  # half the memory, whole GiB, at least 1
    half = cpu_count / 2
    return f"{gib}G", int(half) if half >= 1 and half.is_integer() else max(0.5, half)


def starter_registry(hostname: str, memory_bytes: int, cpu_count: int) -> str:
    memory, cpus = starter_limits(memory_bytes, cpu_count)
    return (
        "# gpushell registry: see gpushell.yaml(5).  gpushell-admin keeps\n"
        "# comments and layout when it adds or removes students.\n"
        f"hostname: {hostname}\n"
        "bridge: lxcbr0\n"
        "subnet: 10.0.3.0/24\n"
        "ports: 22001-22999\n"
        "template: gpushell-bookworm\n"
        "gpus: none\n"
        "mounts: []\n"
        "# Each student's container, unless their entry says otherwise (sized from this host).\n"
        f"limits: {{memory: {memory}, cpus: {cpus}, pids: 4096}}\n"
        "# Containers may not connect to each other, only through the forwards.\n"
        "allow_container_traffic: false\n"
        "# Networks no container may reach (a NAS server's admin side, a management LAN).\n"
        "egress_deny: []\n"
        "users:\n"
    )
