"""gpushell on a real three-member LXD cluster: placement, logins through the front door, move, limits,
snapshots, and a member that is down.

The cluster (lxdcluster.py) runs three LXD daemons on this machine, each in
its own network namespace with its own state directory, joined with the
engine's own tokens.  The front door is this host's root namespace: a real
sshd with gpushell as the students' shell, the registry, the forwards.
Students ssh from the client namespace, as on one host.  The GPUs the
registry gives the members are stand-ins (there is no GPU here): placement
counts them, and a container given one is made but never started.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from typing import ClassVar

import pexpect
import pytest
import yaml

from gpushell.core import registry
from gpushell.core.forward import member_masquerade_rule
from gpushell.core.registry import parse

from .lab import Lab, Student, sh
from .lxd_fixtures import IMAGE_ALIAS, cluster  # noqa: F401 - the session's cluster fixture
from .lxdcluster import PORT, Cluster
from .test_login import login

MEMORY = 512 * 2**20  # every student's memory limit here


class FrontDoor(Lab):
    """A lab whose registry says `backend: lxd`, with the cluster's members and gpushell's credentials."""

    def __init__(self, engine: Cluster) -> None:
        super().__init__()
        self.cluster = engine
        self.credentials = f"{self.root}/lxd"

    def create(self) -> None:
        os.makedirs(f"{self.root}/lxd", mode=0o700)
        for source, name in (
            (self.cluster.cert_path, "client.crt"),
            (self.cluster.key_path, "client.key"),
            (self.cluster.cluster_cert_path, "cluster.crt"),
        ):
            shutil.copyfile(source, f"{self.credentials}/{name}")
        os.chmod(f"{self.credentials}/client.key", 0o600)
        super().create()

    def destroy(self) -> None:
        """The students' instances too: another front door on this cluster gives out the same addresses."""
        for name in self.students:
            self.cluster.lxc("m1", "delete", "--force", name, "--project", "gpushell", check=False)
        super().destroy()

    # m1 and m2 one stand-in GPU each and 1 GiB; m3 no GPU and 4 GiB.
    MEMBERS: ClassVar[dict[str, str]] = {
        "m1": "gpus: 1, memory: 1G",
        "m2": "gpus: 1, memory: 1G",
        "m3": "gpus: 0, memory: 4G",
    }
    LENDING = ""  # the registry's lending: line, if any

    def registry_text(self, idle_timeout: int = 600) -> str:
        members = self.MEMBERS
        return (
            f"# test registry for {self.prefix} on cluster {self.cluster.prefix}\n"
            "backend: lxd\n"
            f"hostname: {self.host_ip}\n"
            f"bridge: {self.cluster.network}\n"
            f"subnet: {self.cluster.container_subnet}\n"
            f"ports: {self.ports[0]}-{self.ports[1]}\n"
            f"template: {IMAGE_ALIAS}\n"
            f"lxcpath: {self.lxcpath}\n"
            f"chain: {self.chain}\n"
            "start_timeout: 120\n"
            f"idle_timeout: {idle_timeout}\n"
            "limits: {memory: 512M, cpus: 1, pids: 300, disk: 2G}\n" + self.LENDING + "lxd:\n"
            f"  credentials: {self.credentials}\n"
            "  members:\n"
            + "".join(
                f"    {name}: {{address: {address}, {members[name]}}}\n"
                for name, address in self.cluster.members
            )
            + "users:\n"
        )

    def create_template(self) -> None:
        """The cluster has the image already (lxd_fixtures imports it)."""

    def member_of(self, student: Student) -> str:
        return registry.parse(self.read_registry(), self.registry).users[student.name].member

    def instances(self) -> list[dict[str, object]]:
        """The engine's word on the project's containers, asked as its admin (member 1's unix socket)."""
        listing = self.cluster.lxc("m1", "list", "--project", "gpushell", "--format", "json")
        return list(json.loads(listing.stdout))

    def instance(self, student: Student) -> dict[str, object]:
        return next(entry for entry in self.instances() if entry["name"] == student.container)

    def inside(self, student: Student, command: str) -> subprocess.CompletedProcess[str]:
        """A command in the student's container, through the front door's forward (their own ssh -p)."""
        return self.ssh(student, command, port=student.port)


@pytest.fixture(scope="module")
def front(cluster: Cluster) -> Iterator[FrontDoor]:  # noqa: F811 - the fixture of that name
    with FrontDoor(cluster).made() as lab:
        yield lab


@pytest.fixture(scope="module")
def placed(front: FrontDoor) -> dict[str, Student]:
    """Students added in an order that places one by GPUs on m1, on m2, then by memory on m3."""
    return {
        "gpu-on-m1": front.add_student("g1", "--gpus", "0"),
        "gpu-on-m2": front.add_student("g2", "--gpus", "0"),
        "m3": front.add_student("c3"),
        "m1": front.add_student("c1", "--on", "m1"),
        "m2": front.add_student("c2", "--on", "m2"),
    }


def test_add_places_students_by_free_gpus_then_memory(front: FrontDoor, placed: dict[str, Student]) -> None:
    for where, student in placed.items():
        member = where.removeprefix("gpu-on-")
        assert front.member_of(student) == member
        engine = front.instance(student)
        assert engine["location"] == member, engine
        assert engine["status"] == "Stopped"  # add makes the container; the first login starts it
    # By the PCI address the member's engine lists for its /dev/nvidia0 (its stand-in, standin_gpus.py).
    gpu = front.instance(placed["gpu-on-m2"])["devices"]
    assert isinstance(gpu, dict) and gpu["gpu0"] == {
        "type": "gpu",
        "gputype": "physical",
        "pci": "0000:00:06.0",
    }
    listed = front.admin("list").stdout
    assert "MEMBER" in listed.splitlines()[0]
    assert any(placed["m3"].name in line and line.rstrip().endswith("m3") for line in listed.splitlines())
    # Every member is full now but m3: a fourth GPU student fits nowhere, and says why.
    refused = front.admin("add", f"{front.prefix}nx", "--gpus", "0", check=False)
    assert refused.returncode != 0
    assert "no member has room for this student" in refused.stderr
    assert "m1 GPU 0 already assigned" in refused.stderr and "m3 has no GPU 0" in refused.stderr
    assert f"{front.prefix}nx" not in front.read_registry()


@pytest.mark.parametrize(("where", "drm"), [("m1", ["card1", "renderD129"]), ("m2", [])])
def test_a_gpu_student_gets_their_gpus_nodes_and_no_one_else_does(
    front: FrontDoor, placed: dict[str, Student], where: str, drm: list[str]
) -> None:
    """m1's stand-in GPU has DRM nodes, as with nvidia-drm loaded; m2's has none, like the real H200
    recorded.  The engine gives both by their PCI address."""
    student, neighbour = placed[f"gpu-on-{where}"], placed[where]
    started = front.ssh(student, "start")
    assert started.returncode == 0, started.stderr
    nodes = "stat -c '%n %F %t:%T' /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm; ls /dev/dri"
    seen = front.inside(student, nodes)
    assert seen.stdout.splitlines() == [
        "/dev/nvidia0 character special file c3:0",  # 195:0, in hex
        "/dev/nvidiactl character special file c3:ff",
        "/dev/nvidia-uvm character special file ee:0",  # the recorded driver's 238:0
        *drm,
    ], seen.stderr
    # The devices cgroup lets the open through to the kernel, which has no driver behind 195:0.
    opened = front.inside(student, "head -c1 /dev/nvidia0")
    assert "No such device or address" in opened.stderr, opened.stderr
    assert front.ssh(neighbour, "start").returncode == 0
    assert front.inside(neighbour, "ls /dev/nvidia0 /dev/nvidiactl").returncode != 0


@pytest.mark.parametrize("where", ["m1", "m2", "m3"])
def test_logins_through_the_front_door_reach_each_member(
    front: FrontDoor, placed: dict[str, Student], where: str
) -> None:
    student = placed[where]
    started = front.ssh(student, "start")
    assert started.returncode == 0, started.stderr
    status = front.ssh(student, "status")
    assert status.returncode == 0, status.stderr
    assert f"Container {student.container}: running, IP {student.ip}, port {student.port}" in status.stdout
    rules = front.rules_for(student.name)
    assert rules and rules[0].endswith(f"--to-destination {front.cluster.address(where)}:{student.port}")
    inside = front.inside(student, "hostname; id -un")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() == [student.container, student.name]
    assert front.instance(student)["location"] == where


def test_the_menu_login_starts_the_container_and_says_where_to_connect(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    student = placed["m2"]
    assert front.ssh(student, "stop").returncode == 0
    child = login(front, student)
    banner = child.before
    assert f"Welcome, {student.name}." in banner
    assert f"ssh -p {student.port} {student.name}@{front.host_ip}" in banner  # the same banner as on one host
    # Ready means ready: the container's sshd answers through the member's proxy at once.
    inside = front.inside(student, "hostname")
    assert inside.returncode == 0 and inside.stdout.strip() == student.container, inside.stderr
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_limits_hold_on_each_member(front: FrontDoor, placed: dict[str, Student]) -> None:
    for where in ("m1", "m2", "m3"):
        student = placed[where]
        assert front.ssh(student, "start").returncode == 0
        config = front.instance(student)["config"]
        assert isinstance(config, dict)
        assert config["limits.memory"] == str(MEMORY) and config["limits.processes"] == "300"
        # The kernel's word, from inside: the container's own cgroup.
        # Memory and swap together within the limit: v1's memsw is the limit, v2's swap.max 0.
        seen = front.inside(
            student,
            "cd /sys/fs/cgroup && cat memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes"
            " pids/pids.max 2>/dev/null || cat memory.max memory.swap.max pids.max",
        )
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.split() in (
            [str(MEMORY), str(MEMORY), "300"],
            [str(MEMORY), "0", "300"],
        ), (where, seen.stdout)


def test_containers_on_one_member_cannot_reach_each_other(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    first = placed["m3"]
    second = front.add_student("i3", "--on", "m3")
    for student in (first, second):
        assert front.ssh(student, "start").returncode == 0
    probe = "timeout 3 bash -c '</dev/tcp/{}/{}' 2>/dev/null && echo open || echo closed"
    subnet = front.cluster.container_subnet
    gateway = subnet.network_address + 1
    assert front.inside(first, probe.format(second.ip, 22)).stdout.strip() == "closed"  # the neighbour's sshd
    assert front.inside(first, probe.format(gateway, 53)).stdout.strip() == "open"  # the member's DNS
    # Taking the neighbour's address gets nothing through: the engine filters it.
    # (The student's own session comes through the proxy, inside: it stays.)
    readdress = (
        "sudo ip addr flush dev eth0; sudo ip addr add {}/{} dev eth0; sudo ip route add default via {}"
    )
    spoofed = (
        readdress.format(second.ip, subnet.prefixlen, gateway)
        + "; "
        + probe.format(gateway, 53)
        + "; "
        + readdress.format(first.ip, subnet.prefixlen, gateway)
    )
    assert front.inside(first, spoofed).stdout.strip().splitlines()[-1] == "closed"
    assert front.inside(first, probe.format(gateway, 53)).stdout.strip() == "open"  # its own address again
    assert front.admin("remove", second.name, "--purge").returncode == 0
    front.students.remove(second.name)


def test_the_readmes_egress_acl_keeps_containers_off_a_network(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    """`egress_deny` on a cluster is the engine's network ACL on the bridge: the README's commands."""
    student, lxd = placed["m3"], front.cluster
    assert front.ssh(student, "start").returncode == 0
    probe = "timeout 3 bash -c '</dev/tcp/{}/{}' 2>/dev/null && echo open || echo closed"
    denied, other = lxd.address("m1"), lxd.address("m2")  # each member's API, port 8443
    assert front.inside(student, probe.format(denied, PORT)).stdout.strip() == "open"
    acl = f"{lxd.prefix}egress"
    try:
        lxd.lxc("m1", "network", "acl", "create", acl)
        lxd.lxc(
            "m1", "network", "acl", "rule", "add", acl, "egress", "action=reject", f"destination={denied}/32"
        )
        lxd.lxc("m1", "network", "acl", "rule", "add", acl, "egress", "action=allow")
        lxd.lxc("m1", "network", "set", lxd.network, f"security.acls={acl}")
        assert front.inside(student, probe.format(denied, PORT)).stdout.strip() == "closed"
        assert front.inside(student, probe.format(other, PORT)).stdout.strip() == "open"
    finally:
        lxd.lxc("m1", "network", "unset", lxd.network, "security.acls", check=False)
        lxd.lxc("m1", "network", "acl", "delete", acl, check=False)
    assert front.inside(student, probe.format(denied, PORT)).stdout.strip() == "open"


def test_snapshots_on_each_member_restore_files(front: FrontDoor, placed: dict[str, Student]) -> None:
    for where in ("m1", "m2", "m3"):
        student = placed[where]
        assert front.ssh(student, "start").returncode == 0  # running, whichever tests ran before
        assert front.inside(student, "echo kept > ~/work.txt").returncode == 0
        made = front.ssh(student, "snapshot before")
        assert made.returncode == 0, made.stderr
        assert "before" in front.ssh(student, "snapshots").stdout
        engine = front.cluster.lxc("m1", "info", student.container, "--project", "gpushell").stdout
        assert "before" in engine  # the engine's own snapshot
        assert front.inside(student, "rm ~/work.txt").returncode == 0
        unconfirmed = front.ssh(student, "restore before")
        assert unconfirmed.returncode != 0
        restored = front.ssh(student, "restore before --yes")
        assert restored.returncode == 0, restored.stderr
        assert front.inside(student, "cat ~/work.txt").stdout.strip() == "kept", where
        unknown = front.ssh(student, "restore nothing-here --yes")
        assert unknown.returncode != 0 and "no snapshot nothing-here; see: snapshots" in unknown.stderr
        assert front.ssh(student, "delete-snapshot before --yes").returncode == 0
        assert "before" not in front.ssh(student, "snapshots").stdout


def test_move_keeps_the_students_port(front: FrontDoor, placed: dict[str, Student]) -> None:
    student = placed["m1"]
    assert front.ssh(student, "start").returncode == 0
    assert front.inside(student, "echo moved-with-me > ~/file.txt").returncode == 0
    running = front.admin("move", student.name, "m3", check=False)
    assert running.returncode != 0 and "pass --stop" in running.stderr
    moved = front.admin("move", student.name, "m3", "--stop")
    assert f"moved {student.name} from m1 to m3" in moved.stdout
    assert front.member_of(student) == "m3"
    assert front.instance(student)["location"] == "m3"
    rules = front.rules_for(student.name)
    assert rules[0].endswith(f"--to-destination {front.cluster.address('m3')}:{student.port}")
    inside = front.inside(student, "hostname; cat ~/file.txt")
    assert inside.stdout.split() == [student.container, "moved-with-me"]
    full = front.admin("move", placed["gpu-on-m1"].name, "m2", check=False)
    assert full.returncode != 0 and "m2 GPU 0 already assigned" in full.stderr
    assert front.admin("move", student.name, "m1", "--stop").returncode == 0  # back, for the tests after


def root_pool(front: FrontDoor, student: Student) -> str:
    devices = front.instance(student)["expanded_devices"]
    assert isinstance(devices, dict)
    return str(devices["root"]["pool"])


def test_storage_migrate_moves_disks_onto_the_registrys_pool_and_back(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    student, other = placed["m2"], placed["m1"]
    assert front.ssh(student, "start").returncode == 0
    assert front.inside(student, "echo on-the-old-pool > ~/pool.txt").returncode == 0
    assert front.ssh(student, "snapshot before-pool").returncode == 0
    for member, _ in front.cluster.members:  # a second pool, made on every member as an admin would
        front.cluster.lxc("m1", "storage", "create", "fast", "dir", "--target", member)
    front.cluster.lxc("m1", "storage", "create", "fast", "dir")
    text = front.read_registry()
    try:
        with front.registry_replaced(text.replace("lxd:\n", "lxd:\n  pool: fast\n", 1)):
            applied = front.admin("apply")  # the disks stay where they are until they are moved
            assert applied.returncode == 0 and root_pool(front, student) == "default", applied.stderr
            doctor = front.admin("doctor", check=False).stdout
            expected = (f"warning: {student.name}: container {student.container} is on pool default, not "
                        f"lxd.pool fast — gpushell-admin storage migrate {student.name}")  # fmt: skip
            assert expected in doctor, doctor
            moved = front.admin("storage", "migrate", student.name)
            container = student.container
            assert moved.stdout.strip() == (
                f"moved {student.name}: container {container} is on pool fast now (on m2), running again"
            )
            assert root_pool(front, student) == "fast" and front.instance(student)["location"] == "m2"
            assert front.instance(student)["status"] == "Running"
            assert front.inside(student, "cat ~/pool.txt").stdout == "on-the-old-pool\n"
            assert "before-pool" in front.ssh(student, "snapshots").stdout
            again = front.admin("storage", "migrate", student.name)
            assert again.stdout.strip() == f"{student.name}: already on pool fast"
            assert root_pool(front, other) == "default"  # only the student named
            doctor = front.admin("doctor", check=False).stdout
            assert f"{student.name}: container {container} is on pool" not in doctor
            assert (
                f"{other.name}: container {other.container} is on pool default, not lxd.pool fast" in doctor
            )
            assert front.admin("apply").returncode == 0 and root_pool(front, student) == "fast"
        front.ssh(student, "stop")
        back = front.admin("storage", "migrate")  # every student; one is off the registry's pool
        assert f"moved {student.name}: container {student.container} is on pool default now (on m2)\n" in (
            back.stdout
        )
        assert f"{other.name}: already on pool default" in back.stdout
        assert root_pool(front, student) == "default" and front.instance(student)["status"] == "Stopped"
        restored = front.ssh(student, "restore before-pool --yes")
        assert restored.returncode == 0, restored.stderr
        assert front.ssh(student, "start").returncode == 0
        assert front.inside(student, "cat ~/pool.txt").stdout == "on-the-old-pool\n"
    finally:
        front.ssh(student, "delete-snapshot before-pool --yes")
        front.cluster.lxc("m1", "storage", "delete", "fast", check=False)


def test_keys_lets_a_locked_out_student_back_in(front: FrontDoor, placed: dict[str, Student]) -> None:
    student = placed["m2"]
    assert front.ssh(student, "start").returncode == 0
    planted = (
        "rm ~/.ssh/authorized_keys; echo 'PubkeyAuthentication no' | sudo tee /etc/ssh/sshd_config.d/x.conf"
    )
    assert front.inside(student, planted + " >/dev/null && sudo systemctl restart ssh").returncode == 0
    assert front.inside(student, "true").returncode != 0  # locked out
    repaired = front.ssh(student, "keys")
    assert repaired.returncode == 0, repaired.stderr
    assert "restarted sshd in your container" in repaired.stdout
    inside = front.inside(
        student, "ls /etc/ssh/sshd_config.d.gpushell-old; stat -c %a ~/.ssh/authorized_keys"
    )
    assert inside.stdout.split() == ["x.conf", "600"], inside.stdout + inside.stderr


def test_set_and_apply_keep_the_engine_on_the_registry(front: FrontDoor, placed: dict[str, Student]) -> None:
    student = placed["m3"]
    assert front.ssh(student, "start").returncode == 0
    front.admin("set", student.name, "memory=768M", "pids=400")
    config = front.instance(student)["config"]
    assert isinstance(config, dict)
    assert (config["limits.memory"], config["limits.processes"]) == (str(768 * 2**20), "400")
    seen = front.inside(
        student,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    assert seen.stdout.strip() == str(768 * 2**20)  # at once, no restart
    # Changed behind gpushell's back: apply puts the registry's values back.
    front.cluster.lxc(
        "m1", "config", "set", student.container, "limits.processes=9999", "--project", "gpushell"
    )
    dry = front.admin("apply", "--dry-run").stdout
    assert f"instance {student.container}" in dry, dry
    # A member the registry no longer names (removed, or given a new address) leaves a MASQUERADE rule.
    stale = member_masquerade_rule(front.chain, "192.0.2.99")
    sh(["iptables", "-t", "nat", *stale])
    assert "MASQUERADE rule for no member of the registry" in front.admin("apply", "--dry-run").stdout
    front.admin("apply")
    config = front.instance(student)["config"]
    assert isinstance(config, dict) and config["limits.processes"] == "400"
    assert sh(["iptables", "-t", "nat", "-C", *stale[1:]], check=False).returncode != 0  # gone
    kept = member_masquerade_rule(front.chain, front.cluster.address("m1"))
    assert sh(["iptables", "-t", "nat", "-C", *kept[1:]], check=False).returncode == 0
    assert "nothing to do" in front.admin("apply").stdout.lower()
    front.admin("set", student.name, "memory=512M", "pids=300")  # as the other tests expect


def test_a_failed_add_leaves_nothing_behind(front: FrontDoor) -> None:
    name = f"{front.prefix}fx"
    before = front.read_registry()
    with front.registry_replaced(before.replace(f"template: {IMAGE_ALIAS}\n", "template: no-such-image\n")):
        failed = front.admin("add", name, "--on", "m1", check=False)
        assert failed.returncode != 0 and failed.stderr.count("\n") == 1, failed.stderr
        assert name not in front.read_registry()
    assert name not in [entry["name"] for entry in front.instances()]
    assert sh(["id", name], check=False).returncode != 0  # no host account either


def test_template_build_imports_the_image(front: FrontDoor) -> None:
    name = f"{front.prefix}-img"
    built = front.admin("template", "build", "--name", name)
    assert f"image {name}" in built.stdout and "imported into project gpushell" in built.stdout
    aliases = json.loads(
        front.cluster.lxc("m1", "image", "alias", "list", "--project", "gpushell", "--format", "json").stdout
    )
    assert name in [alias["name"] for alias in aliases]
    again = front.admin("template", "build", "--name", name)
    assert "already in project gpushell" in again.stdout
    # template list and use: the project's images by alias, each student's by what made its container.
    listed = json.loads(front.admin("template", "list", "--json").stdout)
    rows = {row["name"]: row for row in listed}
    assert rows[IMAGE_ALIAS]["default"] and not rows[name]["default"], listed
    assert rows[IMAGE_ALIAS]["suite"] == rows[name]["suite"] == "bookworm" and rows[name]["size"] > 0
    made = {entry["name"] for entry in front.instances()}
    users = parse(front.read_registry(), front.registry).users
    assert rows[IMAGE_ALIAS]["users"] == sorted(
        user for user, entry in users.items() if entry.container in made
    )
    assert rows[name]["users"] == [], listed  # every container so far was made from the lab's image
    missing = front.admin("template", "use", "no-such-image", check=False)
    assert missing.returncode != 0 and missing.stderr.strip() == (
        "gpushell-admin: image no-such-image is not in project gpushell; "
        "run: gpushell-admin template build --name no-such-image"
    ), missing.stderr
    used = front.admin("template", "use", name)
    assert f"new students get template {name} (was {IMAGE_ALIAS})" in used.stdout, used.stdout
    assert f"template: {name}\n" in front.read_registry()
    front.admin("template", "use", IMAGE_ALIAS)  # back, for the tests after this one
    doctor = front.admin("doctor", check=False).stdout
    assert f"ok: image {IMAGE_ALIAS} is in project gpushell" in doctor
    assert "ok: project gpushell is restricted to what gpushell needs" in doctor, doctor
    # Each member's engine lists its stand-in GPU, an H200 as recorded (standin_gpus.py).
    assert "ok: member m1: GPUs 0: NVIDIA H200 at 0000:00:06.0, 1: NVIDIA H200 at 0000:00:07.0" in doctor
    assert "ok: member m2: GPUs 0: NVIDIA H200 at 0000:00:06.0" in doctor, doctor
    for member, address in front.cluster.members:
        assert f"ok: member {member} ({address}) answers and is online" in doctor, doctor


def volumes(front: FrontDoor) -> list[str]:
    """The project's custom volumes (a rebuild's home volume while it works), asked as the admin."""
    listed = front.cluster.lxc("m1", "storage", "volume", "list", "default", "--project", "gpushell",
                               "--format", "json").stdout  # fmt: skip
    return [entry["name"] for entry in json.loads(listed) if entry["type"] == "custom"]


@contextlib.contextmanager
def volumes_allowed(front: FrontDoor) -> Iterator[None]:
    """On LXD 5.0.2, a project that lets containers mount the pool's volumes and no host path.

    LXD 5.0.2 checks a custom volume's name against the project's
    restricted.devices.disk.paths (the NAS here) and refuses it: a rebuild
    there cannot keep the home, says so, and changes nothing (the test
    below).  A lab whose project allows volumes alone
    (restricted.devices.disk=managed, no NAS) keeps it.  Incus takes the
    volume either way.
    """
    if front.cluster.engine.name != "lxd":
        yield
        return
    project = ("project", "set", "gpushell")
    front.cluster.lxc("m1", *project, "restricted.devices.disk=managed", "restricted.devices.disk.paths=")
    try:
        yield
    finally:
        front.cluster.lxc("m1", *project, "restricted.devices.disk=allow",
                          f"restricted.devices.disk.paths={front.cluster.nas}")  # fmt: skip


def test_rebuild_gives_a_fresh_root_disk_and_keeps_home_host_keys_and_port(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    """/etc from the image again, the home and host keys kept: by the engine's rebuild API (Incus
    6.0), or by deleting the instance and making it again (LXD 5.0.2, which lacks that API)."""
    student = placed["m2"]
    assert front.ssh(student, "start").returncode == 0
    made = front.inside(
        student,
        "echo mine > ~/kept.txt && sudo sh -c 'echo planted > /etc/planted' "
        "&& cat /etc/ssh/ssh_host_ed25519_key.pub",
    )
    assert made.returncode == 0, made.stderr
    host_key = made.stdout.split()[:2]
    assert front.ssh(student, "snapshot before").returncode == 0
    refused = front.ssh(student, "rebuild --yes")
    assert refused.returncode != 0
    assert (
        "a rebuild cannot keep snapshots; delete yours first (delete-snapshot NAME for each of: before)"
        in (refused.stderr)
    )
    assert front.inside(student, "cat /etc/planted").stdout.strip() == "planted"  # nothing changed
    assert front.ssh(student, "delete-snapshot before --yes").returncode == 0
    if front.cluster.engine.name == "lxd":  # its volume refused, as volumes_allowed says: nothing changes
        refused = front.ssh(student, "rebuild --yes")
        assert refused.returncode != 0
        assert "your home cannot be kept on this lab's cluster: its container engine refuses the volume" in (
            refused.stderr
        )
        assert front.inside(student, "cat /etc/planted").stdout.strip() == "planted" and volumes(front) == []
    with volumes_allowed(front):
        rebuilt = front.ssh(student, "rebuild --yes")
    assert rebuilt.returncode == 0, rebuilt.stderr
    inside = front.inside(
        student,
        "cat ~/kept.txt; stat -c %U ~/kept.txt; test -e /etc/planted && echo planted-stays; "
        "cat /etc/ssh/ssh_host_ed25519_key.pub; hostname",
    )
    assert inside.returncode == 0, inside.stderr  # the port, the keys and sshd all work
    assert inside.stdout.split()[:2] == ["mine", student.name]
    assert "planted-stays" not in inside.stdout
    assert inside.stdout.split()[2:4] == host_key
    assert inside.stdout.split()[-1] == student.container
    assert front.instance(student)["location"] == "m2" and volumes(front) == []

    wiped = front.ssh(student, "rebuild --wipe-home --yes")
    assert wiped.returncode == 0, wiped.stderr
    after = front.inside(student, "test -e ~/kept.txt && echo still-there; ls -a ~/.ssh")
    assert after.returncode == 0 and "still-there" not in after.stdout and "authorized_keys" in after.stdout
    assert volumes(front) == []


def test_remove_takes_a_home_volume_a_rebuild_left(front: FrontDoor) -> None:
    """What a rebuild that did not finish leaves (the home aside on a volume) goes with its student."""
    student = front.add_student("rv", "--on", "m3")
    front.cluster.lxc("m1", "storage", "volume", "create", "default", f"{student.container}-home",
                      "--target", "m3", "--project", "gpushell")  # fmt: skip
    assert volumes(front) == [f"{student.container}-home"]
    doctor = front.admin("doctor", check=False).stdout
    assert f"{student.name}: a rebuild that did not finish left their home on volume" in doctor, doctor
    assert front.admin("remove", student.name, "--purge").returncode == 0
    front.students.remove(student.name)
    assert volumes(front) == []


def test_remove_archive_keeps_the_engines_backup_and_refuses_when_the_project_blocks_it(
    front: FrontDoor,
) -> None:
    """Incus allows backups (it checks an import against the project); LXD's project blocks them, since
    its import does not: there the refusal says what to do, and an allowed one is a doctor failure."""
    student = front.add_student("ar", "--on", "m3")
    out = f"{front.root}/archives"
    assert front.ssh(student, "start").returncode == 0
    assert front.inside(student, "echo kept-for-later > ~/work.txt").returncode == 0
    incus = front.cluster.engine.name == "incus"
    if incus:
        front.cluster.lxc("m1", "project", "set", "gpushell", "restricted.backups=block")
    try:
        blocked = front.admin("remove", student.name, "--archive", out, check=False)
        warned = front.admin("doctor", check=False).stdout
    finally:
        front.cluster.lxc("m1", "project", "set", "gpushell", "restricted.backups=allow")
    assert blocked.returncode != 0 and blocked.stderr.count("\n") == 1, blocked.stderr
    if incus:
        assert "blocks backups; run: lxc project set gpushell restricted.backups=allow" in blocked.stderr
        assert "warning: project gpushell blocks backups: remove --archive" in warned, warned
    else:
        instead = (
            "blocks backups, as it should on LXD, whose backup import skips the project's restrictions; keep "
            f"it as the cluster's admin on a member (lxc export {student.container} --project gpushell), "
            "then remove without --archive"
        )
        assert instead in blocked.stderr, blocked.stderr
        assert "project gpushell allows backups" not in warned and "blocks backups" not in warned
        allowed = front.admin("doctor", check=False).stdout
        failed = "FAIL: project gpushell allows backups, and LXD imports a backup without the project's"
        assert failed in allowed, allowed
    assert student.name in front.read_registry() and front.instance(student)["location"] == "m3"
    assert not os.path.exists(out) or os.listdir(out) == []

    # Allowed (on LXD for this test alone): the archive itself works the same on both engines.
    try:
        removed = front.admin("remove", student.name, "--archive", out)
    finally:
        if not incus:
            front.cluster.lxc("m1", "project", "unset", "gpushell", "restricted.backups")
    front.students.remove(student.name)
    tarballs = glob.glob(f"{out}/{student.name}-*Z.tar")
    assert len(tarballs) == 1 and f"container kept in {tarballs[0]}" in removed.stdout, removed.stdout
    assert os.listdir(out) == [os.path.basename(tarballs[0])]  # no temporary left
    assert os.stat(tarballs[0]).st_mode & 0o777 == 0o600
    with tarfile.open(tarballs[0]) as archive:
        index = yaml.safe_load(archive.extractfile("backup/index.yaml").read())  # type: ignore[union-attr]
        assert index["name"] == student.container and not index.get("snapshots")
        work = archive.extractfile(f"backup/container/rootfs/home/{student.name}/work.txt")
        assert work is not None and work.read() == b"kept-for-later\n"
    assert student.container not in [entry["name"] for entry in front.instances()]
    assert student.name not in front.read_registry()
    # The engine's own import brings the container back from the file, on the member it runs on, into
    # the admin's unrestricted project: a restricted one refuses the backup's volatile keys on Incus.
    admins = ("--project", "default")
    front.cluster.lxc("m3", "import", tarballs[0], *admins)
    try:
        back = front.cluster.lxc("m1", "file", "pull", f"{student.container}/home/{student.name}/work.txt",
                                 "-", *admins)  # fmt: skip
        assert back.stdout == "kept-for-later\n"
    finally:
        front.cluster.lxc("m1", "delete", "--force", student.container, *admins, check=False)


def test_rebuild_refuses_to_keep_a_home_it_cannot_copy_and_changes_nothing(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    """A container that cannot copy its home (no cp), or whose home is a link: refused, the old
    root disk and the home as they were, no volume left; --wipe-home still starts afresh."""
    student = placed["m3"]
    assert front.ssh(student, "start").returncode == 0
    made = (
        "echo mine > ~/kept.txt && sudo sh -c 'echo planted > /etc/planted; mv /usr/bin/cp /usr/bin/cp.away'"
    )
    assert front.inside(student, made).returncode == 0
    with volumes_allowed(front):
        refused = front.ssh(student, "rebuild --yes")
    assert refused.returncode != 0
    assert "your container could not copy its home aside, so it cannot be kept; nothing was changed" in (
        refused.stderr
    )
    assert front.inside(student, "cat /etc/planted ~/kept.txt").stdout.split() == ["planted", "mine"]
    assert volumes(front) == []
    home = f"/home/{student.name}"
    planted = f"sudo sh -c 'mv /usr/bin/cp.away /usr/bin/cp && mv {home} /srv/real && ln -s /srv/real {home}'"
    assert front.inside(student, planted).returncode == 0
    with volumes_allowed(front):
        refused = front.ssh(student, "rebuild --yes")
    assert refused.returncode != 0
    assert "your home is not a real directory (a link?), so it cannot be kept" in refused.stderr
    assert front.inside(student, "cat /etc/planted").stdout.strip() == "planted"  # the old root disk
    assert volumes(front) == []
    wiped = front.ssh(student, "rebuild --wipe-home --yes")
    assert wiped.returncode == 0, wiped.stderr
    assert front.inside(student, "test -L ~ || test -e /etc/planted || echo fresh").stdout.strip() == "fresh"


# What nvidia-smi prints with the options smi.py passes; no machine here has an NVIDIA driver,
# so this stand-in goes where the image's nvidia-smi would be, as container root could put it.
STAND_IN_SMI = """#!/bin/sh
case "$*" in
  *--query-gpu=*) echo "0, GPU-standin, Stand-in GPU, 12, 300, 16000, 40" ;;
  *--query-compute-apps=*) echo "GPU-standin, $(cat /run/standin.pid), 300, /usr/bin/sleep" ;;
  *) exit 9 ;;
esac
"""


def test_gpus_and_kill_gpu_process_work_from_inside_the_container(
    front: FrontDoor, placed: dict[str, Student]
) -> None:
    student = placed["m3"]
    assert front.ssh(student, "stop").returncode == 0
    stopped = front.ssh(student, "gpus")
    assert stopped.returncode != 0 and "your container is stopped" in stopped.stderr
    assert front.ssh(student, "start").returncode == 0
    bare = front.ssh(student, "gpus")  # the image has no nvidia-smi
    assert bare.returncode == 0 and "no NVIDIA driver/GPU" in bare.stdout, bare
    front.inside(student, f"sudo tee /usr/bin/nvidia-smi >/dev/null <<'EOF'\n{STAND_IN_SMI}EOF")
    front.inside(student, "sudo chmod 755 /usr/bin/nvidia-smi")
    started = front.inside(
        student,
        "sudo sh -c 'setsid sleep 600 >/dev/null 2>&1 & echo $! > /run/standin.pid; cat /run/standin.pid'",
    )
    pid = started.stdout.strip()
    assert pid.isdigit(), started
    table = front.ssh(student, "gpus")
    assert table.returncode == 0, table.stderr
    assert "Stand-in GPU" in table.stdout and f"[1] you: pid {pid} sleep 300 MiB" in table.stdout, (
        table.stdout
    )
    assert "Seen from inside your container" in table.stdout
    not_gpu = front.ssh(student, "kill-gpu-process 1")
    assert not_gpu.returncode != 0 and "process 1 is not using a GPU" in not_gpu.stderr
    killed = front.ssh(student, f"kill-gpu-process {pid}")
    assert killed.returncode == 0 and f"Sent SIGTERM to your process {pid}" in killed.stdout, killed
    gone = front.inside(student, f"sleep 1; kill -0 {pid} 2>/dev/null && echo alive || echo gone")
    assert gone.stdout.strip() == "gone"
    front.inside(student, "sudo rm -f /usr/bin/nvidia-smi /run/standin.pid")


M2_AWAY = (
    "gpushell: the server holding your container (m2) is not answering; your files are safe there; "
    "try again later or tell your administrator"
)


def test_a_member_that_is_down_gives_one_clear_line(front: FrontDoor, placed: dict[str, Student]) -> None:
    on_m2, on_m3 = placed["m2"], placed["m3"]
    assert front.ssh(on_m2, "stop").returncode == 0
    netns = front.cluster.netns("m2")
    sh(["ip", "-n", netns, "link", "set", "eth0", "down"])  # the server is off the network
    try:
        refused = front.ssh(on_m2, "start")
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert lines == [M2_AWAY], refused.stderr
        assert front.ssh(on_m3, "start").returncode == 0  # the other members' students go on
        doctor = front.admin("doctor", check=False)
        assert doctor.returncode != 0
        assert any("m2" in line and "does not answer" in line for line in doctor.stdout.splitlines()), (
            doctor.stdout
        )
        listed = front.admin("list", check=False)  # the engine's listing: any member answers it
        assert listed.returncode == 0 and on_m2.name in listed.stdout, listed.stderr
        applied = front.admin("apply", check=False)  # everything but m2's containers, which it names
        assert applied.returncode == 0, applied.stderr
        silent = ", ".join(sorted([placed["gpu-on-m2"].container, on_m2.container]))
        assert f"member m2 is not answering: {silent} not checked" in applied.stderr, applied.stderr
        assert "UNKNOWN" in next(line for line in listed.stdout.splitlines() if on_m2.name in line)
        # With room on m2 above all, placement would pick it; a server that is down takes no one.
        m2 = f"    m2: {{address: {front.cluster.address('m2')}, gpus: 1, memory: "
        roomy = front.read_registry().replace(f"{m2}1G}}", f"{m2}64G}}")
        assert roomy != front.read_registry()
        name = f"{front.prefix}dp"
        front.students.append(name)  # the lab's tear-down removes its account should this fail
        with front.registry_replaced(roomy):
            on_down = front.admin("add", name, "--on", "m2", check=False)
            assert on_down.returncode != 0 and "m2 is not answering" in on_down.stderr, on_down.stderr
            placed_now = front.admin("add", name)
            assert "placed on m3: m2 is not answering" in placed_now.stdout, placed_now.stdout
            assert registry.parse(front.read_registry(), front.registry).users[name].member == "m3"
            front.admin("remove", name, "--purge")
    finally:
        sh(["ip", "-n", netns, "link", "set", "eth0", "up"])
    # Back on the network, m2 is in touch with the cluster's database again within seconds; until
    # then its student gets the same one line, never the engine's words.
    for _ in range(60):
        back = front.ssh(on_m2, "start")
        if back.returncode == 0:
            break
        assert [line for line in back.stderr.splitlines() if line.strip()] == [M2_AWAY], back.stderr
        time.sleep(2)
    assert back.returncode == 0, back.stderr
