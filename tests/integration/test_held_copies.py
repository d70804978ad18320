"""Root's copies of a rootfs against a hostile container: it reboots, plants links, is started meanwhile.

Snapshot, restore and rebuild copy or swap a tree that the container's root
controls.  These tests let that root (and, for the start, the host's own
root) do its worst while the copy runs, then check what the snapshot holds
and what the host saw.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .lab import ENV, Lab, Student, sh

# What a student may be told when the container would not hold still.
CLEAR_REFUSALS = (
    "restarted during the snapshot",
    "your container is starting",
    "your container is stopping",
    "your container is aborting",
    "could not be paused for the snapshot",
    "your container's files changed during the copy",
)


def attach(lab: Lab, student: Student, script: str, timeout: float = 120) -> str:
    result = sh(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
         "/bin/sh", "-c", script],
        check=False, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def started(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"


def snapshot_dir(lab: Lab, student: Student) -> Path:
    return Path(lab.lxcpath) / student.container / "gpushell-snapshots"


def rootfs(lab: Lab, student: Student) -> Path:
    return Path(lab.lxcpath) / student.container / "rootfs"


def assert_no_host_detail(lab: Lab, text: str) -> None:
    """Nothing of the host in what the student reads: no lxcpath, no tool's own words."""
    for leak in (lab.lxcpath, lab.root, "lxc-", "Traceback", "/proc/self"):
        assert leak not in text, text


def stop(lab: Lab, student: Student) -> None:
    sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False, timeout=60)


def tree_digest(top: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, link text) of everything under top, links not followed."""
    found = {}
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = Path(directory, name)
            info = path.lstat()
            text = os.readlink(path) if path.is_symlink() else ""
            found[str(path.relative_to(top))] = (info.st_mode, info.st_size if not path.is_dir() else 0, text)
    return found


# --- links planted while the snapshot is taken ---------------------------------------------


def test_links_planted_during_snapshots_never_bring_host_files_in(lab: Lab, student: Student) -> None:
    """A loop in the container swaps a directory for links to / and to another student's rootfs.

    Whatever moment the copy catches, the snapshot holds the container's
    own files and links as links: no host file, no other student's file.
    """
    with_victim = lab.add_student(f"v{len(lab.students)}")
    try:
        victim_secret = rootfs(lab, with_victim) / "home" / with_victim.name / "secret"
        victim_secret.write_text("the victim's thesis\n")
        host_canary = Path(lab.root) / f"{student.name}-canary"
        host_canary.write_text("host canary\n")
        before = (victim_secret.read_text(), host_canary.read_text(), tree_digest(rootfs(lab, with_victim)))
        started(lab, student)
        victim_root = str(rootfs(lab, with_victim))
        # Runs in the container until it is stopped; each round leaves d a
        # directory, a link to /, or a link to the victim's rootfs as the host sees it.
        attach(lab, student, (
            "mkdir -p /data/d && echo mine > /data/d/f && "
            "(while :; do mv /data/d /data/real && ln -s / /data/d && rm /data/d && "
            f"ln -s {victim_root} /data/d && rm /data/d && ln -s {host_canary} /data/d && rm /data/d && "
            "mv /data/real /data/d; done) </dev/null >/dev/null 2>&1 &"
        ))  # fmt: skip
        for round_ in range(3):
            result = lab.ssh(student, "snapshot", f"links{round_}", timeout=600)
            if result.returncode != 0:
                assert any(word in result.stderr for word in CLEAR_REFUSALS), result.stderr
                assert_no_host_detail(lab, result.stderr)
                continue
            copy = snapshot_dir(lab, student) / f"links{round_}" / "rootfs"
            data = copy / "data" / "d"  # caught as a link, a directory, or between the two
            if data.is_symlink():
                assert os.readlink(data) in ("/", victim_root, str(host_canary))
            elif data.exists():
                assert (data / "f").read_text() == "mine\n"
            leaked = sh(
                ["grep", "-rl", "-e", "the victim's thesis", "-e", "host canary", str(copy)], check=False
            )
            assert leaked.stdout == "", leaked.stdout  # grep -r follows no link
            assert not (copy / "data" / "real" / "home").exists()
            lab.ssh(student, "delete-snapshot", f"links{round_}", "--yes")
        stop(lab, student)
        after = (victim_secret.read_text(), host_canary.read_text(), tree_digest(rootfs(lab, with_victim)))
        assert after == before  # the host and the other student saw nothing change
    finally:
        lab.admin("remove", with_victim.name, "--purge", check=False)


# --- a container that keeps rebooting ----------------------------------------------------


class Restarter(threading.Thread):
    """Root on the host starting the container again whenever it stopped: its reboots come back.

    (A reboot from inside ends in STOPPED on this host: LXC cannot reopen the
    0700 container directory from the container's user namespace.  With
    this loop the container comes back with a new init, as a reboot would.)
    """

    def __init__(self, lab: Lab, student: Student) -> None:
        super().__init__(daemon=True)
        self.lab, self.student, self.done = lab, student, threading.Event()
        self.starts = 0

    def run(self) -> None:
        while not self.done.is_set():
            if self.lab.state(self.student) == "STOPPED":
                argv = ["lxc-start", "-P", self.lab.lxcpath, "-n", self.student.container]
                self.starts += sh(argv, check=False, timeout=60).returncode == 0
            time.sleep(0.05)


def test_a_container_rebooting_in_a_loop_gets_a_whole_snapshot_or_a_clear_no(
    lab: Lab, student: Student
) -> None:
    started(lab, student)
    # At each boot: wait a moment, then reboot again (systemd starts it; the
    # container's own root could do the same with a cron job or an rc script).
    attach(lab, student, (
        "printf '[Unit]\\nDescription=reboot loop\\n[Service]\\nExecStart=/bin/sh -c \"sleep 0.5; "
        "systemctl reboot --force\"\\n[Install]\\nWantedBy=multi-user.target\\n' "
        "> /etc/systemd/system/rebooter.service && systemctl enable rebooter.service >/dev/null 2>&1 && "
        "echo marker > /root/marker && systemctl start --no-block rebooter.service"
    ))  # fmt: skip
    restarter = Restarter(lab, student)
    restarter.start()
    pids = set()
    outcomes = []
    try:
        for round_ in range(5):
            time.sleep(0.4 * round_)
            pids.add(_pid_or_none(lab, student))
            result = lab.ssh(student, "snapshot", f"loop{round_}", timeout=600)
            outcomes.append(result.stderr.strip() or "ok")
            assert lab.state(student) != "FROZEN"  # never left paused
            if result.returncode != 0:
                assert any(word in result.stderr for word in CLEAR_REFUSALS), result.stderr
                assert_no_host_detail(lab, result.stderr)
            else:
                copy = snapshot_dir(lab, student) / f"loop{round_}" / "rootfs"
                assert (copy / "root" / "marker").read_text() == "marker\n"
                assert (copy / "etc" / "hostname").read_text() == f"{student.container}\n"
                lab.ssh(student, "delete-snapshot", f"loop{round_}", "--yes")
            assert [name for name in os.listdir(snapshot_dir(lab, student)) if name.startswith(".")] == []
        pids.add(_pid_or_none(lab, student))
    finally:
        restarter.done.set()
        restarter.join(timeout=60)
        stop(lab, student)
    print(f"snapshots while rebooting ({restarter.starts} restarts): {outcomes}")
    assert restarter.starts > 1, "the container never rebooted: the test proves nothing"


def _pid_or_none(lab: Lab, student: Student) -> int | None:
    out = sh(["lxc-info", "-P", lab.lxcpath, "-n", student.container, "-pH"], check=False).stdout.strip()
    return int(out) if out.isdigit() else None


# --- starting a container while it is held stopped ---------------------------------------


def bulk(lab: Lab, student: Student, files: int) -> None:
    """Many small files, so a copy of the rootfs takes a while."""
    directory = rootfs(lab, student) / "bulk"
    directory.mkdir()
    for index in range(files):
        (directory / f"f{index}").write_text(f"{index}\n")


def test_nothing_starts_a_stopped_container_while_its_snapshot_is_copied(lab: Lab, student: Student) -> None:
    """lxc-start run directly by root fails while the copy runs, and works again after it."""
    bulk(lab, student, 40000)
    staging_root = None
    client = subprocess.Popen(
        [*lab.ssh_argv(student), "snapshot", "held"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while staging_root is None and time.monotonic() < deadline and client.poll() is None:
            with_rootfs = [
                name for name in os.listdir(snapshot_dir(lab, student))
                if name.startswith(".held.") and os.path.isdir(snapshot_dir(lab, student) / name / "rootfs")
            ] if snapshot_dir(lab, student).is_dir() else []  # fmt: skip
            staging_root = with_rootfs[0] if with_rootfs else None
            time.sleep(0.005)
        assert staging_root is not None, "the copy was never seen running"
        began = sh(["lxc-start", "-P", lab.lxcpath, "-n", student.container], check=False, timeout=60)
        still_copying = (snapshot_dir(lab, student) / staging_root).exists()
        assert still_copying, "the copy ended before the start was tried: make bulk() bigger"
        assert began.returncode != 0, "root's lxc-start ran a container whose snapshot was being copied"
        assert lab.state(student) == "STOPPED"
        _out, err = client.communicate(timeout=600)
        assert client.returncode == 0, err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert "held" in lab.ssh(student, "snapshots").stdout
    again = sh(["lxc-start", "-P", lab.lxcpath, "-n", student.container], check=False, timeout=60)
    assert again.returncode == 0, again.stderr  # the guard went with the helper
    stop(lab, student)


def test_a_restore_with_starts_hammering_it_ends_consistent(lab: Lab, student: Student) -> None:
    """Root keeps trying lxc-start during a restore: it never runs on a rootfs being swapped away."""
    (rootfs(lab, student) / "root" / "version").write_text("snapshot\n")
    made = lab.ssh(student, "snapshot", "base", timeout=600)
    assert made.returncode == 0, made.stderr
    (rootfs(lab, student) / "root" / "version").write_text("later\n")
    bulk(lab, student, 20000)
    client = subprocess.Popen(
        [*lab.ssh_argv(student), "restore", "base", "--yes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    starts = []
    try:
        while client.poll() is None:
            result = sh(["lxc-start", "-P", lab.lxcpath, "-n", student.container], check=False, timeout=60)
            starts.append(result.returncode)
            time.sleep(0.05)
        _out, err = client.communicate(timeout=600)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    directory = Path(lab.lxcpath) / student.container
    assert sorted(name for name in os.listdir(directory) if name.startswith("rootfs")) == ["rootfs"]
    if client.returncode == 0:
        assert (directory / "rootfs" / "root" / "version").read_text() == "snapshot\n"
        assert not (directory / "rootfs" / "bulk").exists()
    else:
        assert "try the restore again" in err or "restarted" in err, err
        assert_no_host_detail(lab, err)
    if lab.state(student) == "RUNNING":
        # Whatever runs, runs on the rootfs the host has at rootfs/: not on one swapped away.
        on_disk = (directory / "rootfs" / "root" / "version").read_text()
        assert attach(lab, student, "cat /root/version") == on_disk
    # (0 also when it ran already: lxc-start says so and succeeds.)
    print(f"lxc-start during the restore: {len(starts)} tries, {len(starts) - starts.count(0)} refused")
    stop(lab, student)


@pytest.mark.parametrize("files", [0])
def test_snapshot_timing_of_a_template_sized_container(lab: Lab, student: Student, files: int) -> None:
    """Not a check: how long a snapshot of a fresh container takes, stopped and running."""
    for state, name in (("stopped", "t-stopped"), ("running", "t-running")):
        if state == "running":
            started(lab, student)
        began = time.monotonic()
        result = lab.ssh(student, "snapshot", name, timeout=600)
        took = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        size = sh(["du", "-sh", str(snapshot_dir(lab, student) / name)]).stdout.split()[0]
        print(f"snapshot of a {state} template-sized container: {took:.2f} s ({size})")
        lab.ssh(student, "delete-snapshot", name, "--yes")
    stop(lab, student)
