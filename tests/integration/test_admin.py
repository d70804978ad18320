"""gpushell-admin on the real host: init, template, add, remove, and rollback."""

from __future__ import annotations

import os
import pwd

import pytest

from gpushell.core import registry

from .lab import Lab, Student, sh


def registered(lab: Lab) -> dict[str, registry.User]:
    return registry.parse(lab.read_registry(), lab.registry).users


def test_init_is_idempotent(lab: Lab) -> None:
    before = sh(["iptables-save", "-t", "nat"]).stdout.splitlines()
    result = lab.admin("init")
    after = sh(["iptables-save", "-t", "nat"]).stdout.splitlines()
    # Nothing new to do: only the summary line (and the rebuilt chain report).
    assert [
        line for line in result.stdout.splitlines() if line.startswith(("created", "installed", "added"))
    ] == []
    strip = [line for line in before if not line.startswith("#")]
    assert strip == [line for line in after if not line.startswith("#")]
    jumps = [line for line in after if line.endswith(f"-j {lab.chain}")]
    assert jumps == [
        f"-A PREROUTING -m addrtype --dst-type LOCAL -j {lab.chain}",
        f"-A OUTPUT -m addrtype --dst-type LOCAL -j {lab.chain}",
    ]
    assert os.stat(lab.paths["sudoers_dropin"]).st_mode & 0o777 == 0o440
    assert sh(["visudo", "-cqf", lab.paths["sudoers_dropin"]]).returncode == 0


def test_template_build_reuses_the_cache(lab: Lab) -> None:
    result = lab.admin("template", "build")
    assert "already built" in result.stdout
    rebuilt = lab.admin("template", "build", "--force")
    assert "/var/cache/gpushell/templates/bookworm-" in rebuilt.stdout
    assert os.path.exists(f"{lab.lxcpath}/{lab.template}/rootfs/usr/sbin/sshd")
    # The template is never started, so it keeps no host keys to hand on.
    assert not [n for n in os.listdir(f"{lab.lxcpath}/{lab.template}/rootfs/etc/ssh") if "host" in n]


def test_add_makes_account_container_rule_and_entry(lab: Lab, student: Student) -> None:
    entry = pwd.getpwnam(student.name)
    assert entry.pw_shell == lab.paths["shell"]
    assert student.name in sh(["id", "-nG", student.name]).stdout.split()
    assert student.name in registered(lab)
    assert len(lab.rules_for(student.name)) == 1
    root = f"{lab.lxcpath}/{student.container}/rootfs"
    with open(f"{root}/etc/hostname") as stream:
        assert stream.read() == f"{student.container}\n"
    with (
        open(f"{root}/home/{student.name}/.ssh/authorized_keys") as stream,
        open(student.key + ".pub") as key,
    ):
        assert stream.read() == key.read()
    with open(f"{entry.pw_dir}/.ssh/authorized_keys") as stream, open(student.key + ".pub") as key:
        assert stream.read() == key.read()
    template_key = f"{lab.lxcpath}/{lab.template}/rootfs/etc/machine-id"
    with open(f"{root}/etc/machine-id") as mine, open(template_key) as template:
        assert mine.read().strip() != template.read().strip()
    assert os.stat(f"{lab.lxcpath}/{student.container}").st_mode & 0o777 == 0o700


def test_two_students_get_distinct_ports_ips_ids_and_host_keys(lab: Lab, student: Student) -> None:
    other = lab.add_student("twin")
    try:
        users = registered(lab)
        mine, theirs = users[student.name], users[other.name]
        assert mine.port != theirs.port and mine.ip != theirs.ip
        assert abs(mine.idmap - theirs.idmap) >= 65536
        keys = []
        for made in (student, other):
            with open(f"{lab.lxcpath}/{made.container}/rootfs/etc/ssh/ssh_host_ed25519_key.pub") as stream:
                keys.append(stream.read())
        assert keys[0] != keys[1]
    finally:
        lab.admin("remove", other.name, "--purge")


def test_add_refuses_a_taken_port_and_leaves_nothing(lab: Lab, student: Student) -> None:
    before = lab.read_registry()
    name = f"{lab.prefix}dup"
    result = lab.admin("add", name, "--port", str(student.port), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"gpushell-admin: port {student.port} is already used by {student.name}"
    assert lab.read_registry() == before
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def test_failed_add_rolls_back_every_step(lab: Lab) -> None:
    """A clash discovered half-way (the container directory exists) undoes the account too."""
    name = f"{lab.prefix}half"
    os.makedirs(f"{lab.lxcpath}/{name}")
    before = lab.read_registry()
    try:
        result = lab.admin("add", name, check=False)
        assert result.returncode != 0
        assert "already exists" in result.stderr
        assert lab.read_registry() == before
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert lab.rules_for(name) == []
        assert os.listdir(f"{lab.lxcpath}/{name}") == []  # the admin's directory, untouched
        assert not [n for n in os.listdir(lab.lxcpath) if n.startswith(f".{name}")]
    finally:
        os.rmdir(f"{lab.lxcpath}/{name}")


def test_bad_key_file_is_refused_before_anything_happens(lab: Lab, tmp_path: object) -> None:
    bad = f"{lab.root}/not-a-key.pub"
    with open(bad, "w") as stream:
        stream.write("hello\n")
    name = f"{lab.prefix}badkey"
    result = lab.admin("add", name, "--key", bad, check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"gpushell-admin: {bad}: line 1 is not an SSH public key"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def test_remove_keeps_account_unless_purged(lab: Lab) -> None:
    student = lab.add_student("rm")
    assert lab.ssh(student, "start").returncode == 0
    result = lab.admin("remove", student.name)
    assert "host account kept" in result.stdout
    assert student.name not in registered(lab)
    assert not os.path.exists(f"{lab.lxcpath}/{student.container}")
    assert lab.rules_for(student.name) == []
    assert pwd.getpwnam(student.name).pw_shell == lab.paths["shell"]
    # Still a gpushell login, but unregistered: refused, one clear line.
    refused = lab.ssh(student, "status")
    assert refused.returncode != 0 and "contact your administrator" in refused.stderr

    # Re-adding picks up the account's existing authorized_keys (no --key).
    again = lab.admin("add", student.name)
    assert "key installed" in again.stdout
    lab.admin("remove", student.name, "--purge")
    with pytest.raises(KeyError):
        pwd.getpwnam(student.name)


def test_remove_of_an_unknown_user_says_so(lab: Lab) -> None:
    result = lab.admin("remove", f"{lab.prefix}nobody", check=False)
    assert result.returncode == 4
    assert result.stderr.strip() == (
        f"gpushell-admin: {lab.prefix}nobody is not registered in {lab.registry}"
    )


def test_admin_refuses_a_broken_registry_with_file_and_line(lab: Lab) -> None:
    broken = lab.read_registry() + "  ghost:\n    port: 80\n    ip: 10.0.0.1\n    idmap: 5\n"
    with lab.registry_replaced(broken):
        result = lab.admin("add", f"{lab.prefix}x", check=False)
    assert result.returncode == 3
    line = broken.splitlines().index("    port: 80") + 1
    assert (
        f"{lab.registry}:{line}: users.ghost.port: 80 is outside {lab.ports[0]}..{lab.ports[1]}"
        in result.stderr
    )
