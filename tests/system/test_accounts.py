"""accounts.validate_keys: authorized_keys text in, key lines out."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gpushell.core.errors import GpushellError
from gpushell.system import accounts
from gpushell.system.accounts import validate_keys

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEd2Jt+5Xv3T3qF9Hn2mFNv6hYy9nK6l1pO4b3wQx7Yz alice@laptop"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7v0aB/8kZ+q9rT== alice@desktop"
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD3="
SK = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIF+x== yubikey"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20= token"
OPTIONS = 'from="10.0.0.0/8",no-pty,command="echo hi" ' + ED
RESTRICT = "restrict,port-forwarding " + RSA


@pytest.mark.parametrize("line", [ED, RSA, ECDSA, SK, SK_ECDSA, OPTIONS, RESTRICT, "ssh-ed25519 AAAA"])
def test_accepts_key(line):
    assert validate_keys(line + "\n", "keys.pub") == line + "\n"
    assert validate_keys(line, "keys.pub") == line + "\n"


def test_keeps_keys_and_drops_comments_and_blanks():
    text = f"# alice's keys\n\n   \n{ED}\n  # old laptop\n  {RSA}  \n\n{ECDSA}"
    assert validate_keys(text, "keys.pub") == f"{ED}\n{RSA}\n{ECDSA}\n"


def test_empty():
    assert validate_keys("", "keys.pub") == ""
    assert validate_keys("# nothing\n\n", "keys.pub") == ""


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("not a key\n", 1),
        (f"{ED}\ngarbage\n", 2),
        (f"# c\n\n{ED}\n{RSA}\n-----BEGIN OPENSSH PRIVATE KEY-----\n", 3),
        ("ssh-ed25519\n", 1),
        ("ssh-ed25519 not!base64\n", 1),
        ("ssh-foo AAAA\n", 1),
        ("AAAAC3NzaC1lZDI1NTE5AAAAIEd2\n", 1),
        ('command="x ' + ED + "\n", 1),
        (f"{ED}\n{ED}\nssh-dsa AAAA\n", 3),
    ],
)
def test_refuses_garbage(text, number):
    with pytest.raises(GpushellError) as info:
        validate_keys(text, "/root/alice.pub")
    assert info.value.user_message == f"/root/alice.pub: line {number} is not an SSH public key"


# --- existing_keys: the host account's file, read without links, FIFOs or floods ----------


@pytest.fixture
def home(tmp_path, monkeypatch):
    directory = tmp_path / "home" / "alice"
    (directory / ".ssh").mkdir(parents=True)
    entry = type("Entry", (), {"pw_dir": str(directory)})
    monkeypatch.setattr(accounts.pwd, "getpwnam", lambda name: entry)
    return directory


def test_existing_keys_are_read(home):
    (home / ".ssh/authorized_keys").write_text(f"# mine\n{ED}\n")
    assert accounts.existing_keys("alice") == f"{ED}\n"


def test_a_fifo_in_place_of_authorized_keys_reads_as_none_at_once(home):
    os.mkfifo(home / ".ssh/authorized_keys")
    began = time.monotonic()
    assert accounts.existing_keys("alice") == ""
    assert time.monotonic() - began < 1


def test_links_below_the_home_are_not_followed(home, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "authorized_keys").write_text(f"{ED}\n")
    (home / ".ssh/authorized_keys").symlink_to(secret / "authorized_keys")
    assert accounts.existing_keys("alice") == ""
    (home / ".ssh/authorized_keys").unlink()
    (home / ".ssh").rmdir()
    (home / ".ssh").symlink_to(secret)
    assert accounts.existing_keys("alice") == ""


def test_a_huge_file_is_refused_without_reading_it_all(home):
    with open(home / ".ssh/authorized_keys", "wb") as stream:
        stream.truncate(1 << 30)  # sparse: 1 GiB
    with pytest.raises(GpushellError) as raised:
        accounts.existing_keys("alice")
    assert raised.value.user_message == "~/.ssh/authorized_keys is too large (over 256 KiB)"
    assert str(home) in raised.value.log_message


def test_a_bad_line_names_no_host_path(home):
    (home / ".ssh/authorized_keys").write_text("not a key\n")
    with pytest.raises(GpushellError) as raised:
        accounts.existing_keys("alice")
    assert raised.value.user_message == "~/.ssh/authorized_keys: line 1 is not an SSH public key"
    assert str(home) not in raised.value.user_message


def test_no_file_no_home_no_account(home, monkeypatch):
    assert accounts.existing_keys("alice") == ""
    monkeypatch.setattr(accounts.pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    assert accounts.existing_keys("nobody-here") == ""


def test_no_descriptor_is_leaked(home):
    os.mkfifo(home / ".ssh/authorized_keys")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        accounts.existing_keys("alice")
    assert len(os.listdir("/proc/self/fd")) == before
    assert threading.active_count() >= 1
