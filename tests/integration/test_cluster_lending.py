"""GPU lending and GPU figures on a real cluster: each member lends its own GPUs, as the engine's
devices, and publishes its own GPUs' figures for the front door.

The members' stand-in GPUs (standin_gpus.py): m1 has GPU 0 and 1, m2 GPU 0.
A student owns m1's GPU 0, so m1 lends GPU 1 and m2 its GPU 0: two loans of
different members' GPUs sit in one book without touching each other.  A
loan is a `gpu` device the engine plugs into the running container; its
end takes the device out and restarts the container, since the front door
sees no process that holds the GPU (README: Several servers), unless the
member's fresh report shows none of the container's processes on it: then
the first report after the take decides (helper/loanwatch.py).

The figures: no member has an NVIDIA driver here, so NVML's answers are the
real H200's recorded ones (tests/data/real_gpu), carrying the host PIDs of
real processes; the rest is real: the member's engine names the container
whose id range holds a process, the report goes into the member's entry in
the cluster, the front door's tick reads it, and a real login shows it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from gpushell.admin import driversync, gpupublish, lendingops
from gpushell.containers.lxdapi import LocalClient
from gpushell.core import gpureport
from gpushell.core.lending import LoanBook
from gpushell.core.paths import Paths
from gpushell.helper import loanwatch
from gpushell.system import loanstore
from tests.gpu.test_gpustatus import FakeNvml
from tests.gpu.test_real_gpu_replay import RECORDED

from .lab import Student
from .lxd_fixtures import cluster  # noqa: F401 - the session's cluster fixture
from .lxdcluster import Cluster
from .test_cluster import STAND_IN_SMI, FrontDoor
from .test_login import login

NODE = "stat -c '%n %t:%T' /dev/nvidia0 /dev/nvidia1"
INIT_START = "cut -d' ' -f22 /proc/1/stat"  # the container's init's start, in ticks since the member booted


class LendingFrontDoor(FrontDoor):
    MEMBERS: ClassVar[dict[str, str]] = {
        "m1": "gpus: 2, memory: 2G",
        "m2": "gpus: 1, memory: 2G",
        "m3": "gpus: 0, memory: 1G",
    }
    LENDING = "lending: {gpus: all, max_per_student: 1, max_duration: 4h}\n"


@pytest.fixture(scope="module")
def front(cluster: Cluster) -> Iterator[LendingFrontDoor]:  # noqa: F811 - the fixture of that name
    with LendingFrontDoor(cluster).made() as lab:
        yield lab


@pytest.fixture(scope="module")
def students(front: LendingFrontDoor) -> dict[str, Student]:
    return {
        "owner": front.add_student("own", "--gpus", "0", "--on", "m1"),
        "m1": front.add_student("b1", "--gpus", "none", "--on", "m1"),
        "m2": front.add_student("b2", "--gpus", "none", "--on", "m2"),
    }


def inside_once_up(
    front: LendingFrontDoor, student: Student, command: str
) -> subprocess.CompletedProcess[str]:
    """command in the container once its sshd answers again (a restart takes a few seconds)."""
    deadline = time.monotonic() + 90
    while True:
        result = front.inside(student, command)
        if result.returncode != 255 or time.monotonic() > deadline:  # 255: ssh could not connect
            return result
        time.sleep(1)


def lent(front: LendingFrontDoor, student: Student) -> dict[str, object]:
    devices = front.instance(student)["devices"]
    assert isinstance(devices, dict)
    return {name: device for name, device in devices.items() if name.startswith("loan-")}


def test_each_member_lends_its_own_gpu_into_the_running_container(
    front: LendingFrontDoor, students: dict[str, Student]
) -> None:
    for where in ("m1", "m2"):
        assert front.ssh(students[where], "start").returncode == 0
    on_m1 = front.ssh(students["m1"], "borrow 1 1h")
    assert on_m1.returncode == 0, on_m1.stderr
    assert "You have GPU 1 now." in on_m1.stdout  # m1's GPU 0 is the owner's
    on_m2 = front.ssh(students["m2"], "borrow 1 1h")
    assert on_m2.returncode == 0, on_m2.stderr
    assert "You have GPU 0 now." in on_m2.stdout  # m2's GPU 0: another card than the owner's
    assert lent(front, students["m1"]) == {
        "loan-gpu1": {"type": "gpu", "gputype": "physical", "pci": "0000:00:07.0"}
    }
    assert lent(front, students["m2"]) == {
        "loan-gpu0": {"type": "gpu", "gputype": "physical", "pci": "0000:00:06.0"}
    }
    # Plugged into the running containers: each sees its own member's card, nothing else.
    assert front.inside(students["m1"], NODE).stdout.splitlines() == ["/dev/nvidia1 c3:1"]
    assert front.inside(students["m2"], NODE).stdout.splitlines() == ["/dev/nvidia0 c3:0"]
    # Nothing more is free on m1: its other GPU is the owner's.
    more = front.ssh(students["owner"], "borrow 1")
    assert more.returncode != 0 and "none free" in more.stderr, more.stderr
    # A loan is of its member's card: the student stays there while it lasts.
    moved = front.admin("move", students["m2"].name, "m3", "--stop", check=False)
    assert moved.returncode != 0 and "borrowed GPU 0 of m2; end the loan first" in moved.stderr, moved.stderr
    # apply leaves the loans' devices alone: they are not the registry's to compare.
    applied = front.admin("apply")
    assert "regenerate" not in applied.stdout, applied.stdout
    assert set(lent(front, students["m1"])) == {"loan-gpu1"}


def test_a_return_takes_the_device_out_and_restarts_the_container(
    front: LendingFrontDoor, students: dict[str, Student]
) -> None:
    student = students["m1"]
    before = front.inside(student, INIT_START).stdout.strip()
    returned = front.ssh(student, "return 1")
    assert returned.returncode == 0 and "Returned GPU 1." in returned.stdout, returned.stderr
    assert "Your container restarted to end the processes on it." in returned.stdout
    assert lent(front, student) == {}
    assert front.instance(student)["status"] == "Running"
    after = inside_once_up(front, student, INIT_START)
    assert after.returncode == 0 and after.stdout.strip() != before  # a new init: its processes ended
    assert front.inside(student, NODE).stdout == ""


def test_a_revoked_loan_goes_the_same_way(front: LendingFrontDoor, students: dict[str, Student]) -> None:
    student = students["m2"]
    revoked = front.admin("loans", "revoke", student.name, "0")
    assert f"revoked: {student.name}'s loan of GPU 0" in revoked.stdout, revoked.stderr
    assert lent(front, student) == {}
    assert inside_once_up(front, student, NODE).stdout == ""
    again = front.ssh(student, "borrow 1 1h")  # free again on m2
    assert again.returncode == 0 and "You have GPU 0 now." in again.stdout, again.stderr


def test_a_tick_on_the_front_door_ends_an_expired_loan_on_its_member(
    front: LendingFrontDoor, students: dict[str, Student]
) -> None:
    student, paths = students["m2"], Paths(**front.paths)
    assert set(lent(front, student)) == {"loan-gpu0"}  # borrowed again by the test before
    doctor = front.admin("doctor", check=False).stdout
    assert "FAIL: gpushell-admin tick has not run since boot: GPU loans do not end" in doctor, doctor

    now = time.time()  # a loan that began two minutes ago and has just ended
    change_loans(paths, student, started=now - 120, ends=now - 1, last_used=now - 120)
    ticked = front.admin("tick")
    assert f"expired: {student.name}'s loan of GPU 0" in ticked.stdout, ticked.stdout + ticked.stderr
    assert lent(front, student) == {} and loanstore.read(paths).of(student.name) == ()
    assert inside_once_up(front, student, NODE).stdout == ""
    assert "ok: gpushell-admin tick ran" in front.admin("doctor", check=False).stdout


def change_loans(paths: Paths, student: Student, **fields: float) -> None:
    """The student's loans in the book with these fields changed (as time passing would)."""

    def change(book: LoanBook) -> tuple[LoanBook, None]:
        changed = [loan.replace(**fields) if loan.user == student.name else loan for loan in book.loans]
        return LoanBook(changed, book.queue), None

    loanstore.update(paths, change)


def recorded_h200s(pids_by_gpu: list[list[int]]) -> FakeNvml:
    """The recorded H200 once per GPU (numbered 0, 1, ...), with these host PIDs on each."""
    gpus = []
    for minor, pids in enumerate(pids_by_gpu):
        gpu = copy.deepcopy(RECORDED["nvml"][0])
        gpu["minor"], gpu["uuid"] = minor, f"GPU-standin-{minor}"  # as nvidia-smi inside names it
        gpu["compute_processes"] = [{"pid": pid, "usedGpuMemory": 2**30} for pid in pids]
        gpus.append(gpu)
    return FakeNvml({"gpus": gpus})


def host_pid(argv: list[str], seconds: float = 10) -> int:
    """The one host process with exactly this command line.  It is waited for: `setsid -f` returns
    once it has forked, and the child may not have exec'd the command yet."""
    wanted = "\0".join(argv).encode() + b"\0"
    deadline = time.monotonic() + seconds
    while True:
        found = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as stream:
                    if name.isdigit() and stream.read() == wanted:
                        found.append(int(name))
            except OSError:
                continue
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 1, found
    return found[0]


def publish(
    cluster: Cluster,  # noqa: F811
    member: str,
    nvml: FakeNvml,
    driver_root: str = "/",
) -> gpureport.GpuReport:
    """What the member's publish-gpus does, with this NVML (and this stand-in driver tree): the report
    in its cluster entry."""
    client = LocalClient(f"{cluster.state_dir(member)}/unix.socket", cluster.project)
    try:
        return gpupublish.publish(client, lambda: nvml, time.time(), driver_root=driver_root)[1]
    finally:
        client.close()


def start_sleeper(front: LendingFrontDoor, student: Student) -> int:
    """A process in the student's container, standing in for a program on a GPU; its host PID."""
    argv = ["sleep", f"{86000 + secrets.randbelow(400)}.{secrets.randbelow(10**6)}"]
    started = inside_once_up(front, student, f"setsid -f {' '.join(argv)} </dev/null >/dev/null 2>&1")
    assert started.returncode == 0, started.stderr
    return host_pid(argv)


def test_members_gpu_reports_reach_the_banner_and_the_status_page(
    front: LendingFrontDoor,
    students: dict[str, Student],
    cluster: Cluster,  # noqa: F811
) -> None:
    owner = students["owner"]  # m1's GPU 0 is theirs
    assert front.ssh(owner, "start").returncode == 0
    on_gpu = [start_sleeper(front, owner), os.getpid()]  # the owner's process, and a host process (this test)

    m1 = publish(cluster, "m1", recorded_h200s([on_gpu, []]))
    assert [sorted(gpu.procs) for gpu in m1.gpus] == [[("", 2**30), (owner.container, 2**30)], []]
    publish(cluster, "m2", recorded_h200s([[]]))
    # m3 through the command itself: no NVIDIA driver on this machine.
    m3_socket = f"{cluster.state_dir('m3')}/unix.socket"
    published = front.admin("publish-gpus", "--socket", m3_socket, "--verbose")
    assert "m3: no-driver, 0 GPU(s) published" in published.stdout, published.stderr
    entry = json.loads(cluster.lxc("m1", "query", "/1.0/cluster/members/m3").stdout)
    assert gpureport.decode(entry["config"][gpureport.REPORT_KEY]).state == gpureport.NO_DRIVER  # type: ignore[union-attr]

    front.admin("tick")
    # The owner's banner, through a real login at the front door: m1's GPUs, counts only.
    child = login(front, owner)
    banner = re.sub(r"\x1b\[[0-9;]*m", "", child.before)
    child.sendline("quit")
    child.close()
    assert re.search(r"^GPU 0 +100% +7\.0/140\.4 GiB +60 C +1 student\b", banner, re.MULTILINE), banner
    assert re.search(r"^GPU 1 +100% +7\.0/140\.4 GiB +60 C +0 students\b", banner, re.MULTILINE), banner
    assert str(on_gpu[0]) not in banner
    # The status page: each member's cards with their readings.
    page = os.path.join(Paths(**front.paths).status_dir, "status.json")
    with open(page, encoding="utf-8") as stream:
        cards = {(card["member"], card["gpu"]): card for card in json.load(stream)["gpus"]}
    assert sorted(cards) == [("m1", 0), ("m1", 1), ("m2", 0)]
    assert all(card["reading"] and card["util"] == 100 for card in cards.values())
    assert cards[("m1", 0)]["state"] == "assigned" and cards[("m1", 1)]["state"] == "free"
    # doctor: both GPU members publish; m3 has no GPU to publish.
    doctor = front.admin("doctor", check=False).stdout
    for member in ("m1", "m2"):
        assert re.search(rf"^ok: member {member} published its GPU figures \d+ s ago$", doctor, re.M), doctor
    assert "member m3 publish" not in doctor


def test_an_idle_loan_ends_without_a_restart_and_one_kept_by_a_process_restarts_it(
    front: LendingFrontDoor,
    students: dict[str, Student],
    cluster: Cluster,  # noqa: F811
) -> None:
    student, paths = students["m1"], Paths(**front.paths)
    assert front.ssh(student, "start").returncode == 0
    borrowed = front.ssh(student, "borrow 1 1h")
    assert borrowed.returncode == 0 and "You have GPU 1 now." in borrowed.stdout, borrowed.stderr

    # Idle time counts from the host's boot at the earliest (nobody used a GPU while it was down):
    # on a host up for less than the default idle_return of 2h no loan could be idle that long, so
    # this tick runs with an idle_return of 2m, and the loan unused for five minutes.
    long_ago = time.time() - 5 * 60
    assert lendingops.boot_time() < long_ago, "this host booted under five minutes ago"
    change_loans(paths, student, started=long_ago, last_used=long_ago)
    before = front.inside(student, INIT_START).stdout.strip()
    publish(cluster, "m1", recorded_h200s([[], []]))  # m1's fresh report: GPU 1 quiet
    text = front.read_registry()
    quick = LendingFrontDoor.LENDING.replace("}", ", idle_return: 2m}")
    assert LendingFrontDoor.LENDING in text
    with front.registry_replaced(text.replace(LendingFrontDoor.LENDING, quick)):
        ticked = front.admin("tick")
    assert f"returned idle: {student.name}'s GPU 1, no process for 5m" in ticked.stdout, ticked.stdout
    assert lent(front, student) == {} and loanstore.read(paths).of(student.name) == ()
    assert front.inside(student, NODE).stdout == ""  # the device went out of the running container
    assert front.inside(student, INIT_START).stdout.strip() == before  # and it did not restart
    # A program opened GPU 1 between the report and the take: the member's next report shows it there.
    [watch] = loanwatch.read(paths, pytest.fail)
    holder = start_sleeper(front, student)
    time.sleep(max(0.0, watch.since + 1 - time.time()))  # a report taken after the take, to the second
    publish(cluster, "m1", recorded_h200s([[], [holder]]))
    ticked = front.admin("tick")
    restarted = f"restarted: {student.name}'s container, whose processes may still hold GPU 1"
    assert restarted in ticked.stdout, ticked.stdout + ticked.stderr
    after = inside_once_up(front, student, INIT_START)
    assert after.returncode == 0 and after.stdout.strip() != before
    assert loanwatch.read(paths, pytest.fail) == []


def put_smi(front: LendingFrontDoor, student: Student, uuid: str) -> None:
    """The stand-in nvidia-smi (test_cluster.py's) in the container, showing the member GPU of that UUID
    as the container's GPU 0, with one process of the container's, PID 4242."""
    smi = STAND_IN_SMI.replace("GPU-standin", uuid).replace("$(cat /run/standin.pid)", "4242")
    front.inside(student, f"sudo tee /usr/bin/nvidia-smi >/dev/null <<'EOF'\n{smi}EOF")
    assert front.inside(student, "sudo chmod 755 /usr/bin/nvidia-smi").returncode == 0


def test_gpus_numbers_the_members_gpus_and_names_the_students_sharing_them(
    front: LendingFrontDoor,
    students: dict[str, Student],
    cluster: Cluster,  # noqa: F811
) -> None:
    owner, borrower = students["owner"], students["m1"]
    sharer = front.add_student("sh", "--gpus", "none", "--on", "m1")
    front.admin("set", sharer.name, "gpus=0")  # m1's GPU 0, with its owner (add places none on it)
    for student in (sharer, owner, borrower):
        assert front.ssh(student, "start").returncode == 0
    publish(cluster, "m1", recorded_h200s([[], [os.getpid()]]))  # a host process on m1's GPU 1
    refused = front.ssh(borrower, "borrow 1 1h")
    assert refused.returncode != 0 and "none free" in refused.stderr, refused.stderr
    publish(cluster, "m1", recorded_h200s([[], []]))  # GPU 1 unused again
    borrowed = front.ssh(borrower, "borrow 1 1h")
    assert borrowed.returncode == 0 and "You have GPU 1 now." in borrowed.stdout, borrowed.stderr
    put_smi(front, sharer, "GPU-standin-0")
    put_smi(front, borrower, "GPU-standin-1")  # m1's GPU 1 is the only one, so GPU 0, in its container
    on_gpu0 = [start_sleeper(front, owner), start_sleeper(front, sharer), os.getpid()]
    publish(cluster, "m1", recorded_h200s([on_gpu0, []]))

    shared = front.ssh(sharer, "gpus")
    assert shared.returncode == 0, shared.stderr
    (row,) = [line for line in shared.stdout.splitlines() if "Stand-in GPU" in line]
    assert row.startswith("0 ") and "[1] you: pid 4242 sleep 300 MiB" in row, shared.stdout
    assert f"{owner.name} 1024 MiB" in row and "other 1024 MiB" in row, row  # the owner's, the host's
    assert row.count("1024 MiB") == 2  # the sharer's own is nvidia-smi's line from inside, not twice
    assert "other students' from your server's last report" in shared.stdout

    lent_view = front.ssh(borrower, "gpus")
    assert lent_view.returncode == 0, lent_view.stderr
    (row,) = [line for line in lent_view.stdout.splitlines() if "Stand-in GPU" in line]
    assert row.startswith("1 "), lent_view.stdout  # m1's number, as the loan names it
    assert "[1] you: pid 4242 sleep 300 MiB" in row and "MiB;" not in row, row  # no one else on GPU 1
    assert re.search(r"^Borrowed GPU 1: (59m|1h) left$", lent_view.stdout, re.M), lent_view.stdout


def test_a_return_its_member_saw_unused_keeps_the_container_running(
    front: LendingFrontDoor,
    students: dict[str, Student],
    cluster: Cluster,  # noqa: F811
) -> None:
    student, paths = students["m1"], Paths(**front.paths)
    assert set(lent(front, student)) == {"loan-gpu1"}  # borrowed by the test before
    before = front.inside(student, INIT_START).stdout.strip()
    publish(cluster, "m1", recorded_h200s([[], []]))  # GPU 1 quiet
    returned = front.ssh(student, "return 1")
    assert returned.returncode == 0 and "Returned GPU 1." in returned.stdout, returned.stderr
    assert "No process of yours was on it: your container keeps running" in returned.stdout
    assert lent(front, student) == {} and front.inside(student, NODE).stdout == ""
    assert front.inside(student, INIT_START).stdout.strip() == before
    # The member's next report still shows none of its processes there: the watch ends, no restart.
    [watch] = loanwatch.read(paths, pytest.fail)
    assert (watch.user, watch.gpu) == (student.name, 1)
    time.sleep(max(0.0, watch.since + 1 - time.time()))
    publish(cluster, "m1", recorded_h200s([[], []]))
    ticked = front.admin("tick")
    assert "restarted" not in ticked.stdout, ticked.stdout
    assert loanwatch.read(paths, pytest.fail) == []
    assert front.inside(student, INIT_START).stdout.strip() == before


MODULE = "570.86.15"  # the stand-in kernel module's version on m1
LIB = "usr/lib/x86_64-linux-gnu"


def test_driver_sync_brings_a_container_to_its_members_driver_through_the_engine(
    front: LendingFrontDoor,
    students: dict[str, Student],
    cluster: Cluster,  # noqa: F811
) -> None:
    """driver: container on a cluster: m1's version from its report, the installer run by the engine."""
    owner = students["owner"]  # a GPU student on m1
    tree = f"{front.root}/m1-driver"
    os.makedirs(f"{tree}/proc/driver/nvidia", exist_ok=True)
    with open(f"{tree}/proc/driver/nvidia/version", "w", encoding="ascii") as stream:
        stream.write(
            f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {MODULE}  Thu Jan  9 00:00:00 UTC 2025\n"
        )
    assert publish(cluster, "m1", recorded_h200s([[], []]), driver_root=tree).driver == MODULE
    installer = f"{front.root}/NVIDIA-stand-in.run"
    with open(installer, "w", encoding="ascii") as stream:
        stream.write(
            "#!/bin/sh\n"
            '[ "$1 $2 $3" = "--no-kernel-module --silent --no-questions" ] || exit 3\n'
            f"echo stand-in > /{LIB}/libcuda.so.{MODULE}\n"
            "echo ran >> /root/installer-ran\n"
        )
    assert front.ssh(owner, "stop").returncode == 0
    project = ("--project", "gpushell")
    text = front.read_registry()
    with front.registry_replaced(text.replace("backend: lxd\n", "backend: lxd\ndriver: container\n", 1)):
        before = front.admin("doctor", check=False).stdout
        lagging = (
            f"FAIL: {owner.name}: container {owner.container} has no NVIDIA user-space driver (its member m1"
        )
        assert lagging in before, before
        synced = front.admin("driver", "sync", "--installer", installer, owner.name, check=False)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert synced.stdout.strip() == f"{owner.name}: installed NVIDIA driver {MODULE}"
        assert front.instance(owner)["status"] == "Stopped"  # started for the installer, stopped again
        ran = cluster.lxc("m1", "file", "pull", f"{owner.container}/root/installer-ran", "-", *project)
        assert ran.stdout == "ran\n"
        inside = f"{owner.container}{driversync.INSIDE}"
        copy = cluster.lxc("m1", "file", "pull", inside, "-", *project, check=False)
        assert copy.returncode != 0  # the installer's copy is gone
        again = front.admin("driver", "sync", "--installer", installer, owner.name)
        assert again.stdout.strip() == "every GPU container has its member's NVIDIA driver"
        after = front.admin("doctor", check=False).stdout
        assert (
            f"ok: {owner.name}: container {owner.container} has its member's NVIDIA driver {MODULE}" in after
        )
    os.unlink(installer)
