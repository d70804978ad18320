"""dropins: the sudoers and sshd drop-ins."""

from __future__ import annotations

from gpushell.core.dropins import sshd, starter_limits, starter_registry, sudoers
from gpushell.core.menu import HELPER_VERBS as ACTIONS
from gpushell.core.paths import DEFAULT, Paths
from gpushell.core.registry import parse

OTHER = Paths(helper="/opt/gp/bin/gp-helper", group="students")


def sudoers_commands(text: str) -> list[str]:
    [rule] = [line for line in text.splitlines() if line.startswith("%")]
    _, _, commands = rule.partition(" NOPASSWD: ")
    return commands.split(", ")


def test_sudoers_lists_each_verb_once():
    text = sudoers(DEFAULT)
    commands = sudoers_commands(text)
    assert sorted(commands) == sorted(f"/usr/local/bin/gpushell-helper {verb}" for verb in ACTIONS)
    assert len(commands) == len(set(commands)) == len(ACTIONS)


def test_sudoers_exact():
    assert sudoers(DEFAULT) == (
        "# Installed by gpushell-admin init.  Students run the root helper with\n"
        "# one fixed verb; sudo resets the environment and sets SUDO_UID.  No PAM\n"
        "# session or credentials for it: it runs on every login, and sudo still logs.\n"
        "Defaults!/usr/local/bin/gpushell-helper env_reset, !requiretty, !lecture, "
        "!pam_session, !pam_setcred\n"
        "%gpushell ALL=(root) NOPASSWD: /usr/local/bin/gpushell-helper borrow, "
        "/usr/local/bin/gpushell-helper delete-snapshot, /usr/local/bin/gpushell-helper extend, "
        "/usr/local/bin/gpushell-helper gpu-kill, "
        "/usr/local/bin/gpushell-helper gpus, /usr/local/bin/gpushell-helper help, "
        "/usr/local/bin/gpushell-helper keys, /usr/local/bin/gpushell-helper login, "
        "/usr/local/bin/gpushell-helper rebuild, "
        "/usr/local/bin/gpushell-helper restart, /usr/local/bin/gpushell-helper restore, "
        "/usr/local/bin/gpushell-helper return, "
        "/usr/local/bin/gpushell-helper snapshot, /usr/local/bin/gpushell-helper snapshots, "
        "/usr/local/bin/gpushell-helper start, "
        "/usr/local/bin/gpushell-helper status, /usr/local/bin/gpushell-helper stop\n"
    )


def test_sudoers_has_no_wildcards():
    for text in (sudoers(DEFAULT), sudoers(OTHER)):
        assert not any(ch in text for ch in "*?[]\\")
        assert "ALL, " not in text
        for command in sudoers_commands(text):
            assert len(command.split(" ")) == 2


def test_sudoers_other_paths():
    text = sudoers(OTHER)
    assert (
        "Defaults!/opt/gp/bin/gp-helper env_reset, !requiretty, !lecture, !pam_session, !pam_setcred\n"
        in text
    )
    assert sudoers_commands(text) == [f"/opt/gp/bin/gp-helper {verb}" for verb in sorted(ACTIONS)]
    assert next(line for line in text.splitlines() if line.startswith("%")).startswith(
        "%students ALL=(root) NOPASSWD: "
    )


def test_sshd():
    lines = sshd(DEFAULT).splitlines()
    settings = [line for line in lines if not line.startswith("#")]
    assert settings == [
        "PermitUserEnvironment no",
        "Match Group gpushell",
        "    DisableForwarding yes",
        "    AllowTcpForwarding no",
        "    AllowAgentForwarding no",
        "    AllowStreamLocalForwarding no",
        "    X11Forwarding no",
        "    PermitTunnel no",
        "    PermitOpen none",
        "    PermitListen none",
        "    GatewayPorts no",
        "    PermitUserRC no",
        "    PermitTTY yes",
        "Match all",
    ]
    assert sshd(DEFAULT).endswith("Match all\n")


def test_sshd_other_group():
    text = sshd(OTHER)
    assert "Match Group students\n" in text
    assert "(group students)" in text
    assert "gpushell\n" not in text.replace("(group students) get the gpushell\n", "")


def test_starter_registry_parses():
    reg = parse(starter_registry("gpu1", 64 * 2**30, 16), "/etc/gpushell.yaml")
    assert reg.hostname == "gpu1"
    assert reg.users == {}
    assert reg.mounts == ()
    assert reg.gpus == "none"
    assert (reg.limits.memory, reg.limits.cpus, reg.limits.pids) == (32 * 2**30, 8.0, 4096)
    assert reg.allow_container_traffic is False
    assert reg.egress_deny == ()


def test_starter_limits_are_half_the_host_and_never_zero():
    assert starter_limits(24 * 2**30, 2) == ("12G", 1)
    assert starter_limits(1 * 2**30, 1) == ("1G", 0.5)
    assert starter_limits(256 * 2**30 + 5, 7) == ("128G", 3.5)
