"""Registry mounts (a lab NAS) in a real container: owners and read-only vs read-write.

The student is uid 1000 inside the container but has another uid on the
host (the host account `add` made).  gpushell maps container id 1000 to the
student's host uid and gid when the user has mounts, so on a plain bind
mount the student's own host files are theirs inside and what they write
lands owned by their host account; every other owner shows as nobody.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import Iterator

import pytest

from .lab import Lab, Student, sh

OTHER_UID = 4242  # some other host user's files on the NAS
NOBODY = 65534


@contextlib.contextmanager
def nas(lab: Lab) -> Iterator[str]:
    """A NAS stand-in under the lab's root, mounted ro at /nas-ro and rw at /nas-rw."""
    directory = f"{lab.root}/nas"
    os.mkdir(directory, 0o755)
    setting = (
        "mounts:\n"
        f"  - {{source: {directory}/ro, target: /nas-ro}}\n"
        f"  - {{source: {directory}/rw, target: /nas-rw, mode: rw}}\n"
    )
    try:
        for sub in ("ro", "rw"):
            os.mkdir(f"{directory}/{sub}", 0o755)
        with lab.setting_added(setting):
            yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def subid_lines_restored() -> Iterator[None]:
    """/etc/subuid and /etc/subgid as they were: `add` gives root the student's own ids."""
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        with open(path, encoding="utf-8") as stream:
            saved[path] = set(stream.read().splitlines())
    try:
        yield
    finally:
        for path, before in saved.items():
            with open(path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
            # Only the single-id lines this test's student brought; others' lines stay.
            kept = [line for line in lines if line in before or not line.endswith(":1")]
            with open(path, "w", encoding="utf-8") as stream:
                stream.write("".join(f"{line}\n" for line in kept))


@pytest.fixture
def nas_student(lab: Lab) -> Iterator[tuple[Student, str]]:
    with subid_lines_restored(), nas(lab) as directory:
        made = lab.add_student("nas")
        try:
            yield made, directory
        finally:
            sh(["lxc-stop", "-P", lab.lxcpath, "-n", made.container, "-k"], check=False)
            lab.admin("remove", made.name, "--purge", check=False)


def inside(lab: Lab, student: Student, *argv: str, uid: int = 1000) -> str:
    attach = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "-u", str(uid), "-g", str(uid)]
    result = sh([*attach, "--", *argv], check=False)
    return (result.stdout + result.stderr).strip()


def test_nas_files_keep_their_owner_and_modes_hold(lab: Lab, nas_student: tuple[Student, str]) -> None:
    student, directory = nas_student
    account = pwd.getpwnam(student.name)
    assert account.pw_uid != 1000 or account.pw_gid != 1000  # else the test proves nothing
    for sub in ("ro", "rw"):
        with open(f"{directory}/{sub}/mine", "w", encoding="utf-8") as stream:
            stream.write("student's data\n")
        os.chown(f"{directory}/{sub}/mine", account.pw_uid, account.pw_gid)
        with open(f"{directory}/{sub}/theirs", "w", encoding="utf-8") as stream:
            stream.write("someone else's\n")
        os.chown(f"{directory}/{sub}/theirs", OTHER_UID, OTHER_UID)
        os.chmod(f"{directory}/{sub}/theirs", 0o644)
    os.chown(f"{directory}/rw", account.pw_uid, account.pw_gid)  # the student's own NAS directory

    assert lab.ssh(student, "start").returncode == 0
    assert inside(lab, student, "stat", "-c", "%u:%g %U", "/nas-ro/mine") == f"1000:1000 {student.name}"
    assert inside(lab, student, "stat", "-c", "%u:%g", "/nas-rw/theirs") == f"{NOBODY}:{NOBODY}"

    # Read-write: the student's writes land on the host owned by their host account.
    assert inside(lab, student, "sh", "-c", "echo new > /nas-rw/made-inside && echo done") == "done"
    made = os.stat(f"{directory}/rw/made-inside")
    assert (made.st_uid, made.st_gid) == (account.pw_uid, account.pw_gid)
    assert inside(lab, student, "sh", "-c", "echo more >> /nas-rw/mine && echo done") == "done"
    # Someone else's file stays theirs, even for container root.
    assert "Permission denied" in inside(lab, student, "sh", "-c", "echo x >> /nas-rw/theirs")
    assert "Permission denied" in inside(lab, student, "sh", "-c", "echo x >> /nas-rw/theirs", uid=0)
    with open(f"{directory}/rw/theirs", encoding="utf-8") as stream:
        assert stream.read() == "someone else's\n"

    # Read-only: even the owner cannot write.
    assert "Read-only file system" in inside(lab, student, "sh", "-c", "echo x >> /nas-ro/mine")
    assert "Read-only file system" in inside(lab, student, "touch", "/nas-ro/new")
    assert not os.path.exists(f"{directory}/ro/new")
    with open(f"{directory}/ro/mine", encoding="utf-8") as stream:
        assert stream.read() == "student's data\n"

    # The container's own files are unchanged by the map: the home is still the student's.
    assert inside(lab, student, "stat", "-c", "%U", f"/home/{student.name}") == student.name
