"""Self-service on real containers: snapshots, restore, rebuild, `keys`, usage in `status`.

Every action goes the student's way: ssh to the host's sshd from the
client namespace, `ssh HOST WORD` reaching the login shell as -c, the
helper through sudo.  What happened is then checked inside the container
through its forwarded port, as the student would, or on the host's disk.
Each rootfs copy costs seconds, so each test does only the few it needs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import ENV, Lab, Student, sh

CONNECT_OPTIONS = (
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "IdentitiesOnly=yes",
)


def inside(lab: Lab, student: Student, command: str) -> subprocess.CompletedProcess[str]:
    """Run command in the student's container through the forwarded port."""
    return lab.ssh(student, command, port=student.port)


def timed(lab: Lab, student: Student, command: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = lab.ssh(student, command, timeout=600)
    return result, time.monotonic() - began


def snapshot_dir(lab: Lab, student: Student) -> Path:
    return Path(lab.lxcpath) / student.container / "gpushell-snapshots"


@contextlib.contextmanager
def another_student(lab: Lab, suffix: str) -> Iterator[Student]:
    made = lab.add_student(f"{suffix}{len(lab.students)}")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


def known_hosts_of(lab: Lab, student: Student, path: Path) -> str:
    """The container's host keys as the student's known_hosts would hold them, written to path."""
    scan = subprocess.run(
        ["ip", "netns", "exec", lab.netns, "ssh-keyscan", "-p", str(student.port), lab.host_ip],
        capture_output=True, text=True, timeout=60, env=ENV, check=True,
    )  # fmt: skip
    keys = "".join(
        line + "\n" for line in sorted(scan.stdout.splitlines()) if line and not line.startswith("#")
    )
    assert keys, scan.stderr
    path.write_text(keys)
    return keys


def strictly_inside(
    lab: Lab, student: Student, known_hosts: Path, command: str
) -> subprocess.CompletedProcess[str]:
    """ssh into the container accepting only the host keys in known_hosts (no change tolerated)."""
    argv = [
        "ip", "netns", "exec", lab.netns, "ssh", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", *CONNECT_OPTIONS, "-i", student.key,
        "-p", str(student.port), f"{student.name}@{lab.host_ip}", command,
    ]  # fmt: skip
    return sh(argv, check=False, timeout=120)


def started(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"


# --- snapshots ------------------------------------------------------------------------


def test_snapshot_of_a_running_container_restores_its_files(lab: Lab, student: Student) -> None:
    started(lab, student)
    assert inside(lab, student, "echo before > ~/state.txt").returncode == 0
    init = lab.init_pid(student)

    result, took = timed(lab, student, "snapshot before-change")
    print(f"snapshot of a running container: {took:.1f} s")
    assert result.returncode == 0, result.stderr
    assert "before-change" in result.stdout
    # Frozen for the copy, not stopped: the same init, running again.
    assert lab.state(student) == "RUNNING" and lab.init_pid(student) == init
    listed = lab.ssh(student, "snapshots")
    assert listed.returncode == 0 and "before-change" in listed.stdout
    info = (snapshot_dir(lab, student) / "before-change" / "info").read_text()
    assert "running=1" in info
    assert stat.S_IMODE(snapshot_dir(lab, student).stat().st_mode) == 0o700

    assert inside(lab, student, "echo after > ~/state.txt && touch ~/made-after").returncode == 0
    refused = lab.ssh(student, "restore before-change")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert inside(lab, student, "cat ~/state.txt").stdout == "after\n"

    result, took = timed(lab, student, "restore before-change --yes")
    print(f"restore (copy, stop, swap, start, sshd up): {took:.1f} s")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"
    back = inside(lab, student, "cat ~/state.txt; if test -e ~/made-after; then echo still-there; fi")
    assert back.returncode == 0, back.stderr
    assert back.stdout == "before\n"
    left = set(os.listdir(Path(lab.lxcpath) / student.container))
    assert "rootfs" in left and not left & {"rootfs.new", "rootfs.old", "rootfs.new.holds-home"}

    refused = lab.ssh(student, "delete-snapshot before-change")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert (snapshot_dir(lab, student) / "before-change").is_dir()
    deleted = lab.ssh(student, "delete-snapshot before-change --yes")
    assert deleted.returncode == 0, deleted.stderr
    assert os.listdir(snapshot_dir(lab, student)) == []
    assert "before-change" not in lab.ssh(student, "snapshots").stdout


def test_snapshot_limit_and_another_students_names(lab: Lab, student: Student) -> None:
    lab.admin("set", student.name, "snapshot_limit=1")
    result, took = timed(lab, student, "snapshot mine")
    print(f"snapshot of a stopped container: {took:.1f} s")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "STOPPED"  # a snapshot starts nothing

    over = lab.ssh(student, "snapshot")
    assert over.returncode != 0
    assert "you have 1 snapshot, your limit; delete one first: delete-snapshot NAME" in over.stderr
    assert os.listdir(snapshot_dir(lab, student)) == ["mine"]

    with another_student(lab, "o") as other:
        for command in ("restore mine --yes", "delete-snapshot mine --yes"):
            unknown = lab.ssh(other, command)
            assert unknown.returncode != 0
            assert "no snapshot mine; see: snapshots" in unknown.stderr
        assert "mine" not in lab.ssh(other, "snapshots").stdout
        assert not snapshot_dir(lab, other).exists()
    assert os.listdir(snapshot_dir(lab, student)) == ["mine"]

    lab.admin("set", student.name, "snapshot_limit=0")
    off = lab.ssh(student, "snapshot other")
    assert off.returncode != 0 and "snapshots are turned off for you" in off.stderr


def test_destructive_actions_without_yes_change_nothing(lab: Lab, student: Student) -> None:
    rootfs = Path(lab.lxcpath) / student.container / "rootfs"
    before = rootfs.stat().st_ino
    for command in ("rebuild", "rebuild --wipe-home", "restore x", "delete-snapshot x"):
        result = lab.ssh(student, command)
        assert result.returncode != 0, command
        assert "--yes" in result.stderr, (command, result.stderr)
    assert rootfs.stat().st_ino == before
    assert lab.state(student) == "STOPPED"


# --- rebuild --------------------------------------------------------------------------


def test_rebuild_keeps_home_and_host_key_and_wipe_home_drops_it(
    lab: Lab, student: Student, tmp_path: Path
) -> None:
    started(lab, student)
    planted = inside(lab, student, "echo precious > ~/keep.txt && sudo touch /opt/from-before")
    assert planted.returncode == 0, planted.stderr
    known_hosts = tmp_path / "known_hosts"
    keys = known_hosts_of(lab, student, known_hosts)
    assert strictly_inside(lab, student, known_hosts, "true").returncode == 0

    result, took = timed(lab, student, "rebuild --yes")
    print(f"rebuild keeping home (copy, identity, account, stop, swap, start, sshd up): {took:.1f} s")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"
    after = strictly_inside(lab, student, known_hosts, "cat ~/keep.txt; hostname; ls /opt")
    assert after.returncode == 0, after.stderr  # same host keys: no known_hosts change
    assert after.stdout == f"precious\n{student.container}\n"
    assert known_hosts_of(lab, student, tmp_path / "again") == keys

    result, took = timed(lab, student, "rebuild --wipe-home --yes")
    print(f"rebuild wiping home: {took:.1f} s")
    assert result.returncode == 0, result.stderr
    wiped = strictly_inside(lab, student, known_hosts, "test -e ~/keep.txt && echo kept; id -un")
    assert wiped.returncode == 0, wiped.stderr
    assert wiped.stdout == f"{student.name}\n"


# --- keys --------------------------------------------------------------------------------


def test_keys_lets_a_student_who_locked_themselves_out_back_in(lab: Lab, student: Student) -> None:
    started(lab, student)
    broken = inside(
        lab, student,
        "echo 'AllowUsers nobody' | sudo tee -a /etc/ssh/sshd_config >/dev/null"
        " && rm ~/.ssh/authorized_keys && sudo systemctl restart ssh",
    )  # fmt: skip
    assert broken.returncode == 0, broken.stderr
    assert inside(lab, student, "true").returncode == 255  # locked out

    result = lab.ssh(student, "keys")
    assert result.returncode == 0, result.stderr
    back = inside(
        lab, student, "grep -c AllowUsers /etc/ssh/sshd_config.gpushell-old; cat ~/.ssh/authorized_keys"
    )
    assert back.returncode == 0, back.stderr
    with open(student.key + ".pub", encoding="utf-8") as public:
        assert back.stdout == "1\n" + public.read()


@pytest.fixture
def host_files(lab: Lab, student: Student) -> Iterator[dict[str, Path]]:
    """Host files that links planted in the container name; keys must never touch them."""
    made = {}
    for what in ("keys", "config"):
        path = Path(f"/tmp/{student.name}-host-{what}")
        path.write_text(f"host {what}, not the container's\n")
        os.chmod(path, 0o644)
        os.utime(path, (1_000_000_000, 1_000_000_000))
        made[what] = path
    try:
        yield made
    finally:
        for path in made.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def test_keys_never_writes_through_links_planted_in_the_container(
    lab: Lab, student: Student, host_files: dict[str, Path]
) -> None:
    started(lab, student)
    # Inside the container these are just path strings (its own /tmp has no such files).
    planted = inside(
        lab, student,
        f"ln -sf {host_files['keys']} ~/.ssh/authorized_keys"
        f" && sudo ln -sf {host_files['config']} /etc/ssh/sshd_config",
    )  # fmt: skip
    assert planted.returncode == 0, planted.stderr
    before = {what: (path.read_bytes(), path.stat()) for what, path in host_files.items()}

    result = lab.ssh(student, "keys")
    assert result.returncode == 0, result.stderr
    for what, path in host_files.items():
        content, info = before[what]
        now = path.lstat()
        assert path.read_bytes() == content
        assert (now.st_mtime_ns, now.st_ino, now.st_mode, now.st_uid, now.st_gid) == (
            info.st_mtime_ns, info.st_ino, info.st_mode, info.st_uid, info.st_gid,
        )  # fmt: skip
    seen = inside(
        lab, student, "readlink ~/.ssh/authorized_keys.gpushell-old /etc/ssh/sshd_config.gpushell-old"
    )
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout == f"{host_files['keys']}\n{host_files['config']}\n"


# --- status -------------------------------------------------------------------------------


def test_status_shows_what_the_container_uses(lab: Lab, student: Student) -> None:
    stopped = lab.ssh(student, "status")
    assert stopped.returncode == 0, stopped.stderr
    assert "disk" in stopped.stdout and "memory" not in stopped.stdout
    started(lab, student)
    running = lab.ssh(student, "status")
    assert running.returncode == 0, running.stderr
    assert all(word in running.stdout for word in ("CPU", "memory", "disk")), running.stdout


def helper_pids(lab: Lab, verb: str) -> list[int]:
    """The lab's root helpers running `verb`: the resident helper's children (each answers one
    request; the callers here have one in flight), or helpers run through sudo, by their exact
    argv (sudo itself left out)."""
    import psutil

    found = []
    if lab.helper_server is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            found = [child.pid for child in psutil.Process(lab.helper_server.pid).children()]
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[-2:] == [lab.paths["helper"], verb] and "sudo" not in cmdline[0]:
            found.append(proc.pid)
    return found


def test_a_snapshot_killed_while_frozen_is_thawed_at_the_next_login(lab: Lab, student: Student) -> None:
    """kill -9 of the helper mid-copy leaves the container frozen; the next login resumes it.

    A frozen container still completes TCP handshakes, so without the
    marker the login would call it ready while its sshd never answers.
    """
    started(lab, student)
    client = subprocess.Popen(
        [*lab.ssh_argv(student), "snapshot", "doomed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while lab.state(student) != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lab.state(student) == "FROZEN"
        pids = helper_pids(lab, "snapshot")
        assert len(pids) == 1, pids
        os.kill(pids[0], 9)
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    time.sleep(0.5)
    assert lab.state(student) == "FROZEN"  # nothing thawed it yet
    assert "doomed" not in lab.ssh(student, "snapshots").stdout  # half a copy is never listed
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"
    alive = inside(lab, student, "echo alive")
    assert alive.returncode == 0 and alive.stdout == "alive\n", alive.stderr
