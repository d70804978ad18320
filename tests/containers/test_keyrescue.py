"""keyrescue: the student's way back into their container, on a fake rootfs with planted links."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from gpushell.containers import keyrescue, template
from gpushell.core.errors import GpushellError
from gpushell.core.model import Registry, User
from gpushell.system import runner
from gpushell.system.runner import Result
from tests.fakes import FakeBackend, host_key_pairs

KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfAnn ann@laptop\n"
DEFAULT_CONFIG = "# Debian default\nInclude /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n"
DROPIN = "etc/ssh/sshd_config.d/gpushell.conf"


def make_registry(lxcpath: str, user: User) -> Registry:
    return Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", lxcpath, "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True, {user.name: user},
    )  # fmt: skip


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory) -> dict[str, tuple[bytes, bytes]]:
    return host_key_pairs(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def setup(tmp_path, host_keys):
    user = User("ann", 22001, ipaddress.IPv4Address("10.0.3.2"), 1065536, "c-ann", "none", ())
    reg = make_registry(str(tmp_path / "lxc"), user)
    tpl = tmp_path / "lxc" / "tpl" / "rootfs" / "etc" / "ssh"
    tpl.mkdir(parents=True)
    (tpl / "sshd_config").write_text(DEFAULT_CONFIG)
    root = tmp_path / "lxc" / "c-ann" / "rootfs"
    for directory in ("etc/ssh/sshd_config.d", "usr/lib/systemd/system", "usr/bin", "home/ann/.ssh"):
        (root / directory).mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/bash\n"
    )
    (root / "etc/ssh/sshd_config").write_text(DEFAULT_CONFIG)
    (root / DROPIN).write_text(template.CUSTOM_FILES[DROPIN])
    for kind, (private, public) in host_keys.items():
        (root / f"etc/ssh/ssh_host_{kind}_key").write_bytes(private)
        os.chmod(root / f"etc/ssh/ssh_host_{kind}_key", 0o600)
        (root / f"etc/ssh/ssh_host_{kind}_key.pub").write_bytes(public)
    (root / keyrescue.SSH_UNIT).write_text("[Service]\nExecStart=/usr/sbin/sshd -D\n")
    (root / keyrescue.SYSTEMCTL).write_text("")
    wants = root / keyrescue.SSH_WANTS
    wants.parent.mkdir(parents=True)
    wants.symlink_to(keyrescue.SSH_UNIT_TARGET)
    (root / "home/ann/.ssh/authorized_keys").write_text("ssh-ed25519 AAAAold old@key\n")
    for path in ("home/ann", "home/ann/.ssh", "home/ann/.ssh/authorized_keys"):
        os.chown(root / path, 1000, 1000)
    os.chmod(root / "home/ann", 0o755)
    return reg, user, root


@pytest.fixture
def outside(tmp_path):
    """A host directory a planted link points at, with a file that must never change."""
    directory = tmp_path / "host-dir"
    directory.mkdir()
    target = directory / "authorized_keys"
    target.write_text("host secret\n")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    return directory


def unchanged(outside: Path) -> bool:
    target = outside / "authorized_keys"
    info = target.stat()
    return (
        os.listdir(outside) == ["authorized_keys"]
        and target.read_text() == "host secret\n"
        and info.st_mtime == 1_000_000_000
        and stat.S_IMODE(info.st_mode) == 0o644
        and (info.st_uid, info.st_gid) == (0, 0)
        and stat.S_IMODE(outside.stat().st_mode) == 0o755
    )


ATTACH = FakeBackend().attach("c-ann", [])


def attach_recorder(monkeypatch, returncode: int = 0) -> list[list[str]]:
    """Commands run inside the container (the fake backend's attach) recorded, never run;
    everything else (ssh-keygen) runs for real."""
    calls: list[list[str]] = []
    real = keyrescue.run

    def fake(argv, **kwargs):
        if argv[:2] == ATTACH:
            calls.append(list(argv))
            return Result(returncode, "", "")
        return real(argv, **kwargs)

    monkeypatch.setattr(keyrescue, "run", fake)
    return calls


def assert_keys_in_place(root: Path) -> None:
    ssh = root / "home/ann/.ssh"
    keys = ssh / "authorized_keys"
    assert keys.read_text() == KEYS
    for path, mode in ((root / "home/ann", None), (ssh, 0o700), (keys, 0o600)):
        info = path.lstat()
        assert not stat.S_ISLNK(info.st_mode)
        assert (info.st_uid, info.st_gid) == (1000, 1000)
        assert info.st_mode & 0o022 == 0
        if mode is not None:
            assert stat.S_IMODE(info.st_mode) == mode


def test_keys_are_put_back_and_the_old_file_kept(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert_keys_in_place(root)
    assert (
        root / "home/ann/.ssh/authorized_keys.gpushell-old"
    ).read_text() == "ssh-ed25519 AAAAold old@key\n"
    assert lines == [
        "~/.ssh/authorized_keys: copied your keys from the host "
        "(the previous one is now authorized_keys.gpushell-old)",
        "your container is stopped; the repairs apply when it starts",
    ]


def test_a_deleted_authorized_keys_and_a_group_writable_home_are_repaired(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    (root / "home/ann/.ssh/authorized_keys").unlink()
    os.chmod(root / "home/ann", 0o777)
    os.chown(root / "home/ann", 1234, 1234)
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert_keys_in_place(root)
    assert stat.S_IMODE((root / "home/ann").stat().st_mode) == 0o755
    assert "made it yours and not writable by others" in lines[0]
    assert "previous one" not in lines[1]


def test_planted_authorized_keys_link_to_a_host_file_is_moved_aside(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    keys = root / "home/ann/.ssh/authorized_keys"
    keys.unlink()
    keys.symlink_to(outside / "authorized_keys")
    keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert unchanged(outside)
    assert_keys_in_place(root)
    assert os.readlink(root / "home/ann/.ssh/authorized_keys.gpushell-old") == str(
        outside / "authorized_keys"
    )


def test_planted_ssh_dir_link_to_a_host_dir_is_moved_aside(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    ssh = root / "home/ann/.ssh"
    (ssh / "authorized_keys").unlink()
    ssh.rmdir()
    ssh.symlink_to(outside)
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert unchanged(outside)
    assert_keys_in_place(root)
    assert os.readlink(root / "home/ann/.ssh.gpushell-old") == str(outside)
    assert lines[0] == "/home/ann/.ssh was a link; moved it aside to .ssh.gpushell-old"


def test_planted_home_link_to_the_host_root_is_moved_aside(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    os.rename(root / "home", root / "home-real")
    # `home -> /` in the container; here it points at a host directory
    # with an ann/.ssh inside, which root must never write into.
    (outside / "ann" / ".ssh").mkdir(parents=True)
    (root / "home").symlink_to(outside)
    keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert os.listdir(outside / "ann" / ".ssh") == []
    assert (outside / "authorized_keys").read_text() == "host secret\n"
    assert_keys_in_place(root)
    assert os.readlink(root / "home.gpushell-old") == str(outside)


def test_a_file_where_the_ssh_dir_should_be_is_moved_aside(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    ssh = root / "home/ann/.ssh"
    (ssh / "authorized_keys").unlink()
    ssh.rmdir()
    ssh.write_text("oops\n")
    keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert_keys_in_place(root)
    assert (root / "home/ann/.ssh.gpushell-old").read_text() == "oops\n"


def test_sshd_config_and_dropins_go_back_to_a_fresh_containers(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    (root / "etc/ssh/sshd_config").write_text(DEFAULT_CONFIG + "AllowUsers nobody\n")
    (root / "etc/ssh/sshd_config.d/lockout.conf").write_text("DenyUsers ann\n")
    (root / "etc/ssh/sshd_config.d/notes.txt").write_text("not read by sshd\n")
    (root / DROPIN).write_text("PasswordAuthentication yes\n")
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert (root / "etc/ssh/sshd_config").read_text() == DEFAULT_CONFIG
    assert (root / "etc/ssh/sshd_config.gpushell-old").read_text().endswith("AllowUsers nobody\n")
    assert sorted(os.listdir(root / "etc/ssh/sshd_config.d")) == ["gpushell.conf", "notes.txt"]
    assert (root / DROPIN).read_text() == template.CUSTOM_FILES[DROPIN]
    backup = root / "etc/ssh/sshd_config.d.gpushell-old"
    assert (backup / "lockout.conf").read_text() == "DenyUsers ann\n"
    assert (backup / "gpushell.conf").read_text() == "PasswordAuthentication yes\n"
    assert (
        "/etc/ssh/sshd_config: put back the default (yours is now /etc/ssh/sshd_config.gpushell-old)" in lines
    )
    assert (
        "moved gpushell.conf, lockout.conf from /etc/ssh/sshd_config.d "
        "to /etc/ssh/sshd_config.d.gpushell-old/" in lines
    )


def test_a_second_rescue_keeps_the_first_backups(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    for text in ("DenyUsers ann\n", "DenyUsers root\n"):
        (root / "etc/ssh/sshd_config.d/lockout.conf").write_text(text)
        keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    backup = root / "etc/ssh/sshd_config.d.gpushell-old"
    assert sorted(path.read_text() for path in backup.iterdir()) == ["DenyUsers ann\n", "DenyUsers root\n"]


def test_a_linked_sshd_config_and_a_fifo_dropin_are_handled_without_following(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    config = root / "etc/ssh/sshd_config"
    config.unlink()
    config.symlink_to(outside / "authorized_keys")
    os.mkfifo(root / "etc/ssh/sshd_config.d/hang.conf")
    keyrescue.rescue(reg, user, FakeBackend(), KEYS)  # would hang on reading the FIFO
    assert unchanged(outside)
    assert config.read_text() == DEFAULT_CONFIG and not config.is_symlink()
    assert stat.S_ISFIFO((root / "etc/ssh/sshd_config.d.gpushell-old/hang.conf").lstat().st_mode)


def test_without_a_template_the_built_in_default_is_used(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    (Path(reg.lxcpath) / "tpl" / "rootfs" / "etc/ssh/sshd_config").unlink()
    keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert (root / "etc/ssh/sshd_config").read_bytes() == template.FALLBACK_SSHD_CONFIG


def test_valid_host_keys_stay_and_missing_or_broken_ones_are_made(setup, host_keys, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    (root / "etc/ssh/ssh_host_ecdsa_key").write_text("not a key\n")
    os.chmod(root / "etc/ssh/ssh_host_ed25519_key", 0o644)  # sshd would refuse it
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    ed25519 = root / "etc/ssh/ssh_host_ed25519_key"
    assert ed25519.read_bytes() == host_keys["ed25519"][0]
    assert stat.S_IMODE(ed25519.stat().st_mode) == 0o600
    private = (root / "etc/ssh/ssh_host_ecdsa_key").read_bytes()
    assert private != host_keys["ecdsa"][0]
    assert keyrescue.public_key(private, "ecdsa") is not None
    assert (root / "etc/ssh/ssh_host_ecdsa_key.gpushell-old").read_text() == "not a key\n"
    assert "/etc/ssh/ssh_host_ed25519_key: made it root's and private again" in lines
    assert sum("was missing or broken" in line for line in lines) == 1
    (root / "etc/ssh/ssh_host_ecdsa_key").unlink()
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert sum("was missing or broken" in line for line in lines) == 1
    assert keyrescue.public_key((root / "etc/ssh/ssh_host_ecdsa_key").read_bytes(), "ecdsa") is not None


def test_a_key_of_the_wrong_kind_is_not_taken(host_keys):
    assert keyrescue.public_key(host_keys["ecdsa"][0], "ed25519") is None
    assert keyrescue.public_key(host_keys["ecdsa"][0], "ecdsa") == " ".join(
        host_keys["ecdsa"][1].decode().split()[:2]
    )


def test_a_masked_and_disabled_ssh_unit_is_unmasked_and_enabled(setup, monkeypatch):
    reg, user, root = setup
    calls = attach_recorder(monkeypatch)
    (root / keyrescue.SSH_WANTS).unlink()
    (root / "etc/systemd/system/ssh.service").symlink_to("/dev/null")
    lines = keyrescue.rescue(reg, user, FakeBackend(default="RUNNING"), KEYS)
    assert os.readlink(root / keyrescue.SSH_WANTS) == "/lib/systemd/system/ssh.service"
    assert os.readlink(root / "etc/systemd/system/ssh.service.gpushell-old") == "/dev/null"
    assert "ssh.service was not enabled; enabled it" in lines
    attach = ATTACH
    assert calls == [
        [*attach, "systemctl", "daemon-reload"],
        [*attach, "systemctl", "restart", "ssh.service"],
    ]
    assert lines[-1] == "restarted sshd in your container"


def test_a_running_container_gets_its_sshd_restarted(setup, monkeypatch):
    reg, user, _root = setup
    calls = attach_recorder(monkeypatch)
    lines = keyrescue.rescue(reg, user, FakeBackend(default="RUNNING"), KEYS)
    assert calls == [[*ATTACH, "systemctl", "restart", "ssh.service"]]
    assert lines[-1] == "restarted sshd in your container"


def test_a_failed_restart_says_to_restart_the_container(setup, monkeypatch):
    reg, user, _root = setup
    attach_recorder(monkeypatch, returncode=1)
    lines = keyrescue.rescue(reg, user, FakeBackend(default="RUNNING"), KEYS)
    assert lines[-1] == "could not restart sshd in your container; restart your container to apply: restart"


def test_without_systemd_nothing_is_attached(setup, monkeypatch):
    reg, user, root = setup
    calls = attach_recorder(monkeypatch)
    (root / keyrescue.SYSTEMCTL).unlink()
    lines = keyrescue.rescue(reg, user, FakeBackend(default="RUNNING"), KEYS)
    assert calls == []
    assert lines[-1].endswith("restart your container to apply: restart")


def test_a_linked_systemd_dir_is_reported_not_followed(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    system = root / "etc/systemd/system"
    os.rename(system, root / "etc/systemd/system-real")
    system.symlink_to(outside)
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert unchanged(outside)
    assert any(line.startswith("could not repair ssh.service: refusing to follow a link") for line in lines)
    assert_keys_in_place(root)


def test_a_missing_account_is_reported(setup, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    lines = keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert "there is no user ann in your container's /etc/passwd; start afresh with: rebuild --yes" in lines


def test_a_linked_etc_is_refused(setup, outside, monkeypatch):
    reg, user, root = setup
    attach_recorder(monkeypatch)
    os.rename(root / "etc", root / "etc-real")
    (root / "etc").symlink_to(outside)
    with pytest.raises(GpushellError, match="/etc is not a directory"):
        keyrescue.rescue(reg, user, FakeBackend(), KEYS)
    assert unchanged(outside)


def test_a_missing_container_is_said_so(setup):
    reg, _user, _root = setup
    ghost = User("bob", 22002, ipaddress.IPv4Address("10.0.3.3"), 2065536, "c-bob", "none", ())
    with pytest.raises(GpushellError, match="does not exist"):
        keyrescue.rescue(reg, ghost, FakeBackend(), KEYS)


def test_many_planted_dropins_are_moved_with_one_listing_each(setup, monkeypatch):
    """Linear in what the container planted: the backup directory is listed once, not per file."""
    _reg, _user, root = setup
    dropins, backup = root / "etc/ssh/sshd_config.d", root / "etc/ssh/sshd_config.d.gpushell-old"
    backup.mkdir()
    for number in range(2000):
        (dropins / f"{number:05}.conf").write_text("PasswordAuthentication yes\n")
        (backup / f"{number:05}.conf").write_text("an earlier one\n")
    listings: list[str] = []
    entries = keyrescue.rootfs.entries
    monkeypatch.setattr(
        keyrescue.rootfs, "entries", lambda r, path: listings.append(path) or entries(r, path)
    )
    keyrescue.repair_sshd_config(str(root), DEFAULT_CONFIG.encode())
    assert sorted(listings) == [keyrescue.DROPIN_DIR, keyrescue.DROPIN_BACKUP]
    assert sorted(os.listdir(dropins)) == ["gpushell.conf"]
    assert len(os.listdir(backup)) == 4000  # none replaced: the earlier ones kept too


def test_free_name_never_takes_a_name_in_use():
    taken = {"a.conf", "b.conf"}
    assert keyrescue._free_name("c.conf", taken) == "c.conf"
    fresh = keyrescue._free_name("a.conf", taken)
    assert fresh.startswith("a.conf.gpushell-") and fresh not in taken


def test_host_keys_are_parsed_by_nobody(host_keys):
    seen: list[list[str]] = []
    runner.observers.append(lambda argv: seen.append(list(argv)))
    try:
        assert keyrescue.public_key(host_keys["ed25519"][0], "ed25519") is not None
    finally:
        runner.observers.clear()
    assert seen[0][:5] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]
    assert seen[0][5:9] == ["ssh-keygen", "-y", "-P", ""]


def test_an_oversized_key_is_not_parsed_at_all():
    assert keyrescue.public_key(b"x" * (keyrescue.MAX_KEY_FILE + 1), "ed25519") is None
