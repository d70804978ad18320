"""The sudoers and sshd drop-ins and the starter registry (pure text)."""

from __future__ import annotations

from .paths import Paths


def sudoers(paths: Paths) -> str:
    """Members of the group may run the helper with exactly these verbs, nothing else."""
    from .helper import ACTIONS  # the helper's modules, only when a drop-in is written or checked

    commands = ", ".join(f"{paths.helper} {verb}" for verb in sorted(ACTIONS))
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


def starter_registry(hostname: str) -> str:
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
        "users:\n"
    )
