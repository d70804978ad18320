"""rebuild: a fresh container from the template on real files (useradd --prefix, ssh-keygen)."""

from __future__ import annotations

import errno
import ipaddress
import os
import stat
from pathlib import Path

import pytest

from gpushell.containers import provision, rebuild, snapshots, treecopy
from gpushell.core.errors import GpushellError
from gpushell.core.model import Registry, User
from tests.fakes import FakeBackend, host_key_pairs

KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfAnn ann@laptop\n"
USER = User("ann", 22001, ipaddress.IPv4Address("10.0.3.2"), 1065536, "c-ann", "none", ())


@pytest.fixture(scope="module")
def old_keys(tmp_path_factory) -> dict[str, tuple[bytes, bytes]]:
    return host_key_pairs(tmp_path_factory.mktemp("keys"))


def base_system(root: Path, version: str) -> None:
    for directory in ("etc/ssh", "etc/network", "etc/skel", "etc/sudoers.d", "home"):
        (root / directory).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\n")
    (root / "etc/skel/.bashrc").write_text("# skeleton\n")
    (root / "etc/template-version").write_text(version)


@pytest.fixture
def setup(tmp_path, old_keys):
    lxcpath = tmp_path / "lxc"
    reg = Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", str(lxcpath), "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True, {"ann": USER},
    )  # fmt: skip
    base_system(lxcpath / "tpl" / "rootfs", "v2\n")
    directory = lxcpath / "c-ann"
    root = directory / "rootfs"
    base_system(root, "v1\n")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/bash\n"
    )
    (root / "opt").mkdir()
    (root / "opt/installed-by-ann").write_text("gone after a rebuild\n")
    for kind, (private, public) in old_keys.items():
        (root / f"etc/ssh/ssh_host_{kind}_key").write_bytes(private)
        (root / f"etc/ssh/ssh_host_{kind}_key.pub").write_bytes(public)
    home = root / "home/ann"
    (home / ".ssh").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work\n")
    (home / ".ssh/authorized_keys").write_text("ssh-ed25519 AAAAold old@key\n")
    for path in (home, home / ".ssh", home / "thesis.tex", home / ".ssh/authorized_keys"):
        os.chown(path, 1000, 1000)
    (directory / "config").write_text("lxc.rootfs.path = dir:...\n")
    (directory / provision.ORIGIN_FILE).write_text("old-tpl\n")
    (directory / "gpushell-snapshots" / "kept" / "rootfs").mkdir(parents=True)
    return reg, directory


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "host-dir"
    (directory / "ann").mkdir(parents=True)
    (directory / "ann" / "secret").write_text("host secret\n")
    return directory


def host_key_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "etc/ssh").glob("ssh_host_*"))}


def test_rebuild_keeping_home_gives_a_fresh_system_with_the_old_home_and_host_keys(setup, old_keys):
    reg, directory = setup
    driver = FakeBackend(default="RUNNING")
    before = host_key_files(directory / "rootfs")
    rebuild.rebuild(reg, USER, driver, KEYS, keep_home=True)
    root = directory / "rootfs"
    # Left stopped (the caller starts it); nothing could start it between the stop and the swap.
    assert (
        driver.calls == ["stop c-ann", "block-start c-ann", "unblock-start c-ann"]
        and driver.state("c-ann") == "STOPPED"
    )
    assert (root / "etc/template-version").read_text() == "v2\n"
    assert not (root / "opt").exists()
    assert (root / "home/ann/thesis.tex").read_text() == "years of work\n"
    assert (root / "home/ann/.ssh/authorized_keys").read_text() == KEYS
    assert (
        root / "home/ann/.ssh/authorized_keys.gpushell-old"
    ).read_text() == "ssh-ed25519 AAAAold old@key\n"
    assert (root / "home/ann/.ssh/authorized_keys").stat().st_uid == 1000
    # Same host keys: the student's known_hosts stays valid.
    assert host_key_files(root) == before
    assert stat.S_IMODE((root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode) == 0o600
    # The identity and the account are the new system's.
    assert (root / "etc/hostname").read_text() == "c-ann\n"
    assert "ann:x:1000:1000:" in (root / "etc/passwd").read_text()
    assert (root / "etc/sudoers.d/gpushell-ann").exists()
    # Config and snapshots untouched; no leftovers; the origin is the current template.
    assert (directory / "config").read_text() == "lxc.rootfs.path = dir:...\n"
    assert (directory / "gpushell-snapshots/kept/rootfs").is_dir()
    assert sorted(os.listdir(directory)) == ["config", "gpushell-snapshots", "gpushell-template", "rootfs"]
    assert (directory / provision.ORIGIN_FILE).read_text() == "tpl\n"


def test_rebuild_wiping_home_gives_a_fresh_home_with_the_keys(setup):
    reg, directory = setup
    driver = FakeBackend()
    rebuild.rebuild(reg, USER, driver, KEYS, keep_home=False)
    root = directory / "rootfs"
    assert not (root / "home/ann/thesis.tex").exists()
    assert not (root / "home/ann/.ssh/authorized_keys.gpushell-old").exists()
    assert (root / "home/ann/.ssh/authorized_keys").read_text() == KEYS
    assert driver.calls == ["block-start c-ann", "unblock-start c-ann"]  # it was stopped already


def test_broken_old_host_keys_are_replaced_good_ones_kept(setup, old_keys):
    reg, directory = setup
    root = directory / "rootfs"
    (root / "etc/ssh/ssh_host_ecdsa_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")
    (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text("tampered\n")
    rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == old_keys["ed25519"][0]
    # The public half is derived from the private key, not copied.
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_bytes().split()[:2] == old_keys["ed25519"][
        1
    ].split()[:2]
    ecdsa = (root / "etc/ssh/ssh_host_ecdsa_key").read_bytes()
    assert ecdsa != old_keys["ecdsa"][0] and ecdsa.startswith(b"-----BEGIN OPENSSH PRIVATE KEY")


def test_a_planted_home_link_is_refused_when_keeping_and_nothing_changes(setup, outside):
    reg, directory = setup
    root = directory / "rootfs"
    os.rename(root / "home", root / "home-real")
    (root / "home").symlink_to(outside)  # `home -> /` in the container
    driver = FakeBackend(default="RUNNING")
    with pytest.raises(GpushellError) as refused:
        rebuild.rebuild(reg, USER, driver, KEYS, keep_home=True)
    assert refused.value.user_message == (
        "your /home is not a directory, so it cannot be kept; "
        "to rebuild without it: rebuild --wipe-home --yes"
    )
    assert driver.calls == [] and driver.state("c-ann") == "RUNNING"
    assert (root / "etc/template-version").read_text() == "v1\n"
    assert sorted(os.listdir(directory)) == ["config", "gpushell-snapshots", "gpushell-template", "rootfs"]
    assert os.listdir(outside) == ["ann"] and os.listdir(outside / "ann") == ["secret"]
    # Wiping the home instead works, and still never touches the host directory.
    rebuild.rebuild(reg, USER, driver, KEYS, keep_home=False)
    assert not (root / "home").is_symlink()
    assert (root / "home/ann/.ssh/authorized_keys").read_text() == KEYS
    assert os.listdir(outside) == ["ann"] and os.listdir(outside / "ann") == ["secret"]
    assert (outside / "ann" / "secret").read_text() == "host secret\n"


def test_a_planted_home_dir_link_is_refused_when_keeping(setup, outside):
    reg, directory = setup
    root = directory / "rootfs"
    os.rename(root / "home/ann", root / "home/ann-real")
    (root / "home/ann").symlink_to(outside / "ann")
    with pytest.raises(GpushellError, match="your /home/ann is not a directory"):
        rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    assert os.listdir(outside / "ann") == ["secret"]
    assert (root / "home/ann").is_symlink()


def test_a_planted_ssh_link_in_the_kept_home_is_moved_aside(setup, outside):
    reg, directory = setup
    root = directory / "rootfs"
    ssh = root / "home/ann/.ssh"
    (ssh / "authorized_keys").unlink()
    ssh.rmdir()
    ssh.symlink_to(outside / "ann")
    rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    assert os.listdir(outside / "ann") == ["secret"]
    assert (root / "home/ann/.ssh/authorized_keys").read_text() == KEYS
    assert os.readlink(root / "home/ann/.ssh.gpushell-old") == str(outside / "ann")
    assert (root / "home/ann/thesis.tex").read_text() == "years of work\n"


def test_a_failed_swap_puts_the_home_back_and_starts_the_container_again(setup, monkeypatch):
    reg, directory = setup

    def broken_swap(path: str, *_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshots, "swap", broken_swap)
    driver = FakeBackend(default="RUNNING")
    with pytest.raises(OSError):
        rebuild.rebuild(reg, USER, driver, KEYS, keep_home=True)
    root = directory / "rootfs"
    assert (root / "home/ann/thesis.tex").read_text() == "years of work\n"
    # The keys went in before the swap failed; the student's own file is kept beside them.
    assert (
        root / "home/ann/.ssh/authorized_keys.gpushell-old"
    ).read_text() == "ssh-ed25519 AAAAold old@key\n"
    assert (root / "etc/template-version").read_text() == "v1\n"
    assert (root / "opt/installed-by-ann").exists()
    assert sorted(os.listdir(directory)) == ["config", "gpushell-snapshots", "gpushell-template", "rootfs"]
    assert (
        driver.calls == ["stop c-ann", "block-start c-ann", "unblock-start c-ann", "start c-ann"]
        and driver.state("c-ann") == "RUNNING"
    )
    assert (directory / provision.ORIGIN_FILE).read_text() == "old-tpl\n"


def test_a_failed_copy_changes_nothing(setup, monkeypatch):
    reg, directory = setup

    def half_copy(source: str, target: str) -> None:
        os.makedirs(os.path.join(target, "etc"))
        raise OSError(errno.ENOSPC, "No space left on device", f"{target}/etc/passwd")

    monkeypatch.setattr(treecopy, "copy_tree", half_copy)
    driver = FakeBackend(default="RUNNING")
    with pytest.raises(GpushellError) as caught:
        rebuild.rebuild(reg, USER, driver, KEYS, keep_home=True)
    # What the student reads names no host path; the log has it.
    assert caught.value.user_message == "not enough disk space for the rebuild; nothing was kept"
    assert str(directory) in caught.value.log_message
    assert driver.calls == [] and driver.state("c-ann") == "RUNNING"
    assert sorted(os.listdir(directory)) == ["config", "gpushell-snapshots", "gpushell-template", "rootfs"]
    assert (directory / "rootfs/home/ann/thesis.tex").exists()


def test_a_missing_template_is_said_so(setup):
    reg, directory = setup
    os.rename(Path(reg.lxcpath) / "tpl", Path(reg.lxcpath) / "tpl-gone")
    with pytest.raises(GpushellError, match="template for new containers is missing"):
        rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    assert (directory / "rootfs/etc/template-version").read_text() == "v1\n"


def test_a_student_without_a_home_gets_a_fresh_one(setup):
    reg, directory = setup
    root = directory / "rootfs"
    import shutil

    shutil.rmtree(root / "home/ann")
    rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    assert (root / "home/ann/.ssh/authorized_keys").read_text() == KEYS


def test_the_templates_own_rsa_key_never_reaches_a_clone(setup, tmp_path):
    """A template cached before its drop-in named the host keys still carries a shared RSA key."""
    from gpushell.containers import template

    reg, directory = setup
    template_ssh = Path(reg.lxcpath) / "tpl" / "rootfs" / "etc/ssh"
    template_ssh.mkdir(parents=True, exist_ok=True)
    (template_ssh / "ssh_host_rsa_key").write_text("the template's, the same in every copy\n")
    (template_ssh / "ssh_host_rsa_key.pub").write_text("ssh-rsa AAAA root@template\n")
    rebuild.rebuild(reg, USER, FakeBackend(), KEYS, keep_home=True)
    ssh = directory / "rootfs" / "etc/ssh"
    assert not (ssh / "ssh_host_rsa_key").exists() and not (ssh / "ssh_host_rsa_key.pub").exists()
    dropin = (ssh / "sshd_config.d/gpushell.conf").read_text()
    assert dropin == template.CUSTOM_FILES["etc/ssh/sshd_config.d/gpushell.conf"]
    assert "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n" in dropin
