"""gpushell on a three-member LXD and Incus cluster: each figure beside a baseline measured in the same run.

Run as root with `make bench` (after bench/run.py) or alone.  For each
engine it builds the integration tests' cluster (three daemons in network
namespaces) and a front door lab, measures, prints a table like run.py's,
and removes both.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.run import ROWS, login_to_prompt, report, samples, ssh_handshake
from tests.integration.lab import Student
from tests.integration.lxd_fixtures import ENGINE_NAMES, IMAGE_ALIAS, running_cluster
from tests.integration.test_cluster import FrontDoor

REPEAT = int(os.environ.get("BENCH_REPEAT", "21"))
STUDENTS = 300


def booted(front: FrontDoor, student: Student) -> None:
    """Running, with its boot finished (its services' start-up would be counted against what follows)."""
    front.ssh(student, "start")
    front.inside(student, "timeout 60 systemctl is-system-running --wait")


def bench_login(front: FrontDoor, student: Student) -> list[float]:
    booted(front, student)
    login = samples(lambda: login_to_prompt(front, student), REPEAT)
    handshake = samples(lambda: ssh_handshake(front, student), max(5, REPEAT // 2))
    report(f"C1. {front.cluster.engine.name}: login to menu, container on another member", login,
           "ssh key login into it", handshake, "<= 0.3", lambda r: r <= 0.3)  # fmt: skip
    return login


def bench_add(front: FrontDoor) -> None:
    """Placing and creating a student (gpushell-admin add) beside the engine's own create of the image."""
    count = max(3, REPEAT // 7)
    ours, theirs = [], []
    for index in range(count):
        name = f"{front.prefix}a{index}"
        began = time.perf_counter()
        front.add_student(f"a{index}")
        ours.append((time.perf_counter() - began) * 1000)
        front.admin("remove", name, "--purge")
        front.students.remove(name)
        raw = f"{front.prefix}r{index}"
        began = time.perf_counter()
        front.cluster.lxc("m1", "init", IMAGE_ALIAS, raw, "--target", "m3", "--project", "gpushell")
        theirs.append((time.perf_counter() - began) * 1000)
        front.cluster.lxc("m1", "delete", raw, "--project", "gpushell")
    engine = front.cluster.engine
    report(f"C2. {engine.name}: add: place and create a student", ours, f"{engine.client} init of the image",
           theirs, "(report)", lambda r: True)  # fmt: skip


def bench_many(front: FrontDoor, student: Student, few: list[float]) -> None:
    """The same login with STUDENTS more students registered across the three members."""
    original = front.read_registry()
    first = front.ports[0] + 100
    subnet = front.cluster.container_subnet
    # More students than a /24 holds: their entries take addresses from the
    # /22 around it (registry only; they never get a container).
    wider = subnet.supernet(new_prefix=22)
    spare = [address for address in wider.hosts() if address not in subnet][1:]
    lines = [
        f"  {front.prefix}s{index}: {{port: {first + index}, ip: {spare[index]}, "
        f"idmap: {3000000000 + index * 65536}, member: m{index % 3 + 1}}}\n"
        for index in range(STUDENTS)
    ]
    try:
        text = original.replace(f"subnet: {subnet}\n", f"subnet: {wider}\n")
        front.write_registry(text + "".join(lines))
        front.admin("list")  # the registry's compiled copy, made once (as any admin command after an edit)
        many = samples(lambda: login_to_prompt(front, student), REPEAT)
    finally:
        front.write_registry(original)
    report(f"C3. {front.cluster.engine.name}: login with {STUDENTS} students on 3 members", many,
           "with 5", few, "<= 1.2 (flat)", lambda r: r <= 1.2)  # fmt: skip


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (make bench)", file=sys.stderr)
        return 2
    began = time.monotonic()
    print("| figure | median (min..max) | baseline | median (min..max) | ratio | target | |")
    print("|---|---|---|---|---|---|---|")
    for engine in ENGINE_NAMES:
        with running_cluster(engine=engine) as cluster, FrontDoor(cluster).made() as front:
            student = front.add_student("bench", "--on", "m2")
            for index in range(4):
                front.add_student(f"o{index}")
            few = bench_login(front, student)
            bench_many(front, student, few)
            bench_add(front)
    print(f"\n{len(ROWS)} figures in {time.monotonic() - began:.0f} s, repeat={REPEAT}; cluster removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
