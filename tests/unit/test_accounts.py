"""accounts.validate_keys: authorized_keys text in, key lines out."""

from __future__ import annotations

import pytest

from gpushell.accounts import validate_keys
from gpushell.errors import GpushellError

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
