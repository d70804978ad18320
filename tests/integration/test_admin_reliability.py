"""gpushell-admin set, remove --archive, templates, parallel adds, kill -9 of add, comments kept."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import signal
import subprocess
import tarfile
import time

import pytest

from gpushell.core import registry

from .lab import ENV, Lab, Student, sh


def registered(lab: Lab) -> dict[str, registry.User]:
    return registry.parse(lab.read_registry(), lab.registry).users


def key_file(lab: Lab, name: str) -> str:
    key = f"{lab.root}/{name}_key"
    if not os.path.exists(key):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key])
    return key + ".pub"


def config_of(lab: Lab, container: str) -> str:
    with open(f"{lab.lxcpath}/{container}/config", encoding="utf-8") as stream:
        return stream.read()


# --- set ---------------------------------------------------------------------------


def test_set_port_replaces_the_forward_and_autostart_the_config(lab: Lab, student: Student) -> None:
    new_port = student.port + 500
    result = lab.admin("set", student.name, f"port={new_port}", "autostart=true", "gpus=0,2")
    assert f"set {student.name}: port={new_port}, autostart=true, gpus=0,2" in result.stdout
    assert "takes effect" in result.stdout
    user = registered(lab)[student.name]
    assert (user.port, user.autostart, user.gpus) == (new_port, True, (0, 2))
    rules = lab.rules_for(student.name)
    assert len(rules) == 1 and f"--dport {new_port} " in rules[0], rules
    assert "lxc.start.auto = 1" in config_of(lab, student.container)
    # The container answers on the new port.
    assert lab.ssh(student, "start").returncode == 0
    reached = lab.ssh(student, "hostname", port=new_port)
    assert (reached.returncode, reached.stdout.strip()) == (0, student.container), reached.stderr
    lab.admin("set", student.name, "autostart=false")
    assert "lxc.start.auto = 0" in config_of(lab, student.container)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["colour=red"], "unknown key 'colour'"),
        (["port=abc"], "port=abc: not a port number"),
        (["port=1"], "not changed:"),
        (["autostart=maybe"], "use true or false"),
        (["gpus=x"], "use all, none or GPU numbers"),
    ],
)
def test_set_refuses_bad_input_with_one_line_and_no_change(
    lab: Lab, student: Student, words: list[str], message: str
) -> None:
    before = lab.read_registry()
    result = lab.admin("set", student.name, *words, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert lab.read_registry() == before


def test_set_of_a_taken_port_or_an_unknown_user_is_refused(lab: Lab, student: Student) -> None:
    other = lab.add_student("settaken")
    try:
        before = lab.read_registry()
        taken = lab.admin("set", student.name, f"port={other.port}", check=False)
        assert taken.returncode != 0
        assert (
            taken.stderr
            == f"gpushell-admin: not changed: port {other.port} is already used by {other.name}\n"
        )
        unknown = lab.admin("set", f"{lab.prefix}nobody", "port=1", check=False)
        assert unknown.returncode == 4 and "is not registered" in unknown.stderr
        assert lab.read_registry() == before
    finally:
        lab.admin("remove", other.name, "--purge", check=False)


# --- remove --archive -----------------------------------------------------------------


def test_remove_archive_keeps_the_rootfs_with_numeric_owners(lab: Lab) -> None:
    student = lab.add_student("arch")
    out = f"{lab.root}/archives"
    try:
        result = lab.admin("remove", student.name, "--archive", out, "--purge")
        tarballs = glob.glob(f"{out}/{student.name}-*Z.tar")
        assert len(tarballs) == 1 and f"rootfs kept in {tarballs[0]}" in result.stdout
        assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary left
        assert os.stat(tarballs[0]).st_mode & 0o777 == 0o600
        with tarfile.open(tarballs[0]) as archive:
            keys = archive.getmember(f"./home/{student.name}/.ssh/authorized_keys")
            assert (keys.uid, keys.gid) == (1000, 1000)  # the student's ids inside, as numbers
            assert archive.getmember("./etc/hostname").isfile()
        assert not os.path.exists(f"{lab.lxcpath}/{student.container}")
        assert student.name not in registered(lab)
    finally:
        lab.admin("remove", student.name, "--purge", check=False)
        sh(["rm", "-rf", out])


def test_a_failed_archive_destroys_nothing(lab: Lab, student: Student) -> None:
    blocker = f"{lab.root}/not-a-dir"
    with open(blocker, "w", encoding="utf-8") as stream:
        stream.write("x")
    try:
        before = lab.read_registry()
        result = lab.admin("remove", student.name, "--archive", blocker, check=False)
        assert result.returncode != 0 and "archive" in result.stderr
        assert lab.read_registry() == before
        assert os.path.isdir(f"{lab.lxcpath}/{student.container}/rootfs")
        assert len(lab.rules_for(student.name)) == 1
    finally:
        os.unlink(blocker)


# --- templates ----------------------------------------------------------------------


def test_templates_side_by_side(lab: Lab) -> None:
    second = f"{lab.prefix}-tpl2"
    student = None
    try:
        refused = lab.admin("template", "use", second, check=False)
        assert refused.returncode != 0 and "is not built" in refused.stderr
        built = lab.admin("template", "build", "--name", second)
        assert f"template {second} built from" in built.stdout
        listing = lab.admin("template", "list").stdout.splitlines()
        rows = {line.split()[0]: line for line in listing[1:]}
        assert set(rows) == {lab.template, second}
        assert rows[lab.template].rstrip().endswith("yes") and not rows[second].rstrip().endswith("yes")
        assert "bookworm" in rows[second] and "MiB" in rows[second]

        text = lab.read_registry()
        lab.admin("template", "use", second)
        assert registry.parse(lab.read_registry(), lab.registry).template == second
        assert lab.read_registry() == text.replace(f"template: {lab.template}\n", f"template: {second}\n")
        student = lab.add_student("tpl2user")
        import json

        data = {row["name"]: row for row in json.loads(lab.admin("template", "list", "--json").stdout)}
        assert data[second]["users"] == [student.name] and data[second]["default"] is True
    finally:
        if student is not None:
            lab.admin("remove", student.name, "--purge", check=False)
        lab.admin("template", "use", lab.template, check=False)
        sh(["rm", "-rf", f"{lab.lxcpath}/{second}"], check=False)
    assert registry.parse(lab.read_registry(), lab.registry).template == lab.template


# --- comments survive add, set and remove ----------------------------------------------


def test_comments_and_odd_layout_survive_add_set_and_remove(lab: Lab) -> None:
    original = lab.read_registry()
    odd = (
        "#   hand-written header, odd spacing\n"
        + original.replace(
            "masquerade: false\n", "masquerade:   false    # no NAT here\n\n\n# a lonely comment\n"
        ).replace("users:\n", "users:     # the students\n")
        + "    # indented comment at the end\n"
    )
    name = f"{lab.prefix}cmt"
    try:
        lab.write_registry(odd)
        comments = [line.strip() for line in odd.splitlines() if "#" in line]
        lab.admin("add", name, "--key", key_file(lab, name))
        lab.admin("set", name, "port=" + str(lab.ports[0] + 700), "gpus=1")
        lab.admin("remove", name, "--purge")
        final = lab.read_registry()
        kept = [line.strip() for line in final.splitlines() if "#" in line]
        assert kept == comments
        assert name not in registry.parse(final, lab.registry).users
    finally:
        lab.admin("remove", name, "--purge", check=False)
        lab.write_registry(original)


# --- 20 adds at once -------------------------------------------------------------------------


def test_twenty_parallel_adds_get_distinct_ports_ips_and_ids(lab: Lab) -> None:
    names = [f"{lab.prefix}p{index:02d}" for index in range(20)]
    keys = {name: key_file(lab, name) for name in names}
    try:
        running = [
            subprocess.Popen(
                [lab.admin_path, "add", name, "--key", keys[name]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            for name in names
        ]
        results = [(proc.wait(timeout=900), proc.stderr.read() if proc.stderr else "") for proc in running]
        assert [code for code, _ in results] == [0] * 20, [r for r in results if r[0]]
        users = registered(lab)
        mine = [users[name] for name in names]
        assert len({u.port for u in mine}) == len({str(u.ip) for u in mine}) == 20
        starts = sorted(u.idmap for u in mine)
        assert all(b - a >= 65536 for a, b in itertools.pairwise(starts))
        for name in names:
            assert len(lab.rules_for(name)) == 1
            assert os.path.isdir(f"{lab.lxcpath}/{name}/rootfs")
    finally:
        for name in names:
            lab.admin("remove", name, "--purge", check=False)
    assert not set(names) & set(registered(lab))


# --- kill -9 of add ---------------------------------------------------------------------------


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def group_of(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


@pytest.mark.parametrize("point", ["account", "staging", "0.3", "0.8", "1.5"])
def test_kill_9_of_add_leaves_before_or_after_and_apply_cleans_up(lab: Lab, point: str) -> None:
    name = f"{lab.prefix}k{point.replace('.', '')}"
    key = key_file(lab, name)
    proc = subprocess.Popen(
        [lab.admin_path, "add", name, "--key", key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True,
    )  # fmt: skip
    try:
        if point == "account":
            wait_for(lambda: account_exists(name), 30)
        elif point == "staging":
            wait_for(lambda: glob.glob(f"{lab.lxcpath}/.{name}-*"), 30)
        else:
            time.sleep(float(point))
        os.kill(proc.pid, signal.SIGKILL)  # only gpushell-admin, like `kill -9 PID`
        proc.wait(10)
        # What it had started (useradd, cp) runs to its end; wait for that.
        assert wait_for(lambda: not group_of(proc.pid), 120)

        users = registered(lab)  # parses: never a half-written registry
        if name in users:
            # Killed after the registry write: the student is fully there.
            assert account_exists(name) and os.path.isdir(f"{lab.lxcpath}/{name}/rootfs")
            assert len(lab.rules_for(name)) == 1
        else:
            doctor = lab.admin("doctor", check=False)
            leftover_lines = [
                line for line in doctor.stdout.splitlines() if line.startswith("FAIL:") and name in line
            ]
            made_something = account_exists(name) or glob.glob(f"{lab.lxcpath}/*{name}*")
            if made_something:
                assert leftover_lines, doctor.stdout
                assert all("fix: gpushell-admin apply" in line for line in leftover_lines), doctor.stdout
            lab.admin("apply")
            assert not account_exists(name)
            assert not glob.glob(f"{lab.lxcpath}/*{name}*") and not glob.glob(f"{lab.lxcpath}/.{name}-*")
            assert lab.rules_for(name) == []
            after = lab.admin("doctor", check=False).stdout
            assert f"ok: no leftovers of interrupted adds in {lab.lxcpath}" in after
            assert not [line for line in after.splitlines() if line.startswith("FAIL:") and name in line]
        # Other students are untouched, and the registry still parses.
        assert registry.parse(lab.read_registry(), lab.registry) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        lab.admin("remove", name, "--purge", check=False)
        lab.admin("apply", check=False)
        if account_exists(name):
            sh(["userdel", "--remove", name], check=False)
