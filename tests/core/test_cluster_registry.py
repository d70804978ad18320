"""A cluster in the registry (`backend: lxd`): its keys, placement, forwards to members, the cache."""

from __future__ import annotations

import json
import marshal

import pytest

from gpushell.containers import lxdinstance
from gpushell.containers.lxdsnapshots import epoch, from_engine
from gpushell.core import chaincheck, placement
from gpushell.core.errors import GpushellError
from gpushell.core.forward import NatTable, destination, ensure_user_lines, rebuild_lines, user_rule
from gpushell.core.registry import RegistryError, parse
from gpushell.system import registry_cache

CLUSTER = """\
backend: lxd
bridge: labnet
subnet: 10.9.0.0/24
limits: {memory: 16G}
lxd:
  credentials: /etc/gpushell/lxd
  members:
    m1: {address: 192.168.5.11, gpus: 2, memory: 64G}
    m2: {address: 192.168.5.12, gpus: [0, 1, 2, 3], memory: 64G}
    m3: {address: 192.168.5.13, memory: 256G}
users:
  alice: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m2, gpus: [0, 1]}
  bob: {port: 22002, ip: 10.9.0.3, idmap: 1065536, member: m1, gpus: all}
"""


def registry(text: str = CLUSTER):
    return parse(text, "/etc/gpushell.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        registry(text)
    return caught.value.problems


def test_members_and_their_students_parse() -> None:
    reg = registry()
    assert reg.backend == "lxd"
    assert reg.cluster is not None
    assert reg.cluster.project == "gpushell" and reg.cluster.port == 8443 and reg.cluster.pool == "default"
    assert reg.cluster.members["m1"].gpus == (0, 1)  # a count numbers them from 0
    assert reg.cluster.members["m2"].gpus == (0, 1, 2, 3)
    assert reg.cluster.members["m3"].gpus == () and reg.cluster.members["m3"].memory == 256 * 2**30
    assert reg.users["alice"].member == "m2" and reg.users["bob"].member == "m1"


def test_one_host_registries_have_no_cluster_and_no_member() -> None:
    reg = registry("users:\n  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n")
    assert reg.backend == "lxc" and reg.cluster is None and reg.users["alice"].member == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backend: lxd\n", "lxd: backend: lxd needs an lxd: mapping"),
        ("backend: lxc\nlxd: {members: {m1: {address: 10.1.1.1}}}\n", "lxd: only with backend: lxd"),
        ("backend: lxd\nlxd: {members: {}}\n", "lxd.members: needs at least one member"),
        ("backend: kvm\n", "backend: 'kvm' must be one of lxc, lxd"),
        ("backend: lxd\nlxd: {members: {m1: {gpus: 2}}}\n", "lxd.members.m1: needs address"),
        ("backend: lxd\nlxd: {members: {m1: {address: nope}}}\n", "lxd.members.m1.address"),
        ("backend: lxd\nlxd: {members: {m1: {address: 10.1.1.1, gpus: all}}}\n", "say how many"),
        ("backend: lxd\nlxd: {port: 0, members: {m1: {address: 10.1.1.1}}}\n", "lxd.port"),
        ("backend: lxd\nlxd: {members: {'bad name': {address: 10.1.1.1}}}\n", "not a cluster member's name"),
        ("backend: lxd\nstorage: btrfs\nlxd: {members: {m1: {address: 10.1.1.1}}}\n", "storage pool keeps"),
        (CLUSTER.replace("member: m2", "member: m9"), "'m9' is not in lxd.members (m1, m2, m3)"),
        (CLUSTER.replace(", member: m2", ""), "users.alice.member: needs member"),
        ("users:\n  a: {port: 22001, ip: 10.0.3.2, idmap: 1000000, member: m1}\n", "only with backend: lxd"),
        (CLUSTER.replace("users:", "egress_deny: [10.1.0.0/16]\nusers:"), "egress_deny: with backend: lxd"),
    ],
)
def test_bad_cluster_settings_are_one_line_each(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in line for line in found), found


def test_the_cache_keeps_the_cluster_and_each_member() -> None:
    reg = registry()
    plain = registry_cache.to_plain(reg)
    assert registry_cache.registry_from_plain(marshal.loads(marshal.dumps(plain))) == reg
    one, alice = registry_cache.from_plain(plain, "alice")
    assert one.cluster == reg.cluster and alice.member == "m2"


# --- placement --------------------------------------------------------------


def test_a_student_goes_where_most_gpus_are_free_then_most_memory() -> None:
    reg = registry()
    assert reg.cluster is not None
    rooms = placement.rooms(reg.cluster, reg.users.values())
    assert rooms["m1"].free_gpus == () and rooms["m2"].free_gpus == (2, 3) and rooms["m3"].free_gpus == ()
    assert rooms["m2"].free_memory == 48 * 2**30
    assert placement.place(reg.cluster, reg.users.values(), "none", 16 * 2**30) == "m2"
    # With m2's GPUs taken too, memory decides: m3 has the most left.
    more = dict(reg.users) | {"carol": reg.users["alice"].replace(name="carol", gpus=(2, 3))}
    assert placement.place(reg.cluster, more.values(), "none", 16 * 2**30) == "m3"


def test_placement_refuses_with_each_members_reason() -> None:
    reg = registry()
    assert reg.cluster is not None
    with pytest.raises(GpushellError) as caught:
        placement.place(reg.cluster, reg.users.values(), (0,), 300 * 2**30)
    message = caught.value.user_message
    assert "m1 GPU 0 already assigned" in message
    assert "m2 GPU 0 already assigned" in message
    assert "m3 has no GPU 0" in message


def test_members_are_ranked_by_free_gpus_then_memory() -> None:
    reg = registry()
    users = reg.users.values()  # alice holds m2's GPUs 0 and 1, bob all of m1's
    # m2 has two GPUs free; then m3's 240 GiB of unclaimed memory before m1's 48.
    assert placement.ranked(reg.cluster, users, (), 2**30) == ["m2", "m3", "m1"]
    assert placement.ranked(reg.cluster, users, (2,), 2**30) == ["m2"]  # only m2 has a GPU 2


def test_on_member_checks_the_fit() -> None:
    reg = registry()
    assert reg.cluster is not None
    placement.check_on(reg.cluster, reg.users.values(), "m2", (2,), 2**30)
    with pytest.raises(GpushellError, match="m1 GPU 1 already assigned"):
        placement.check_on(reg.cluster, reg.users.values(), "m1", (1,), 2**30)
    with pytest.raises(GpushellError, match="m7 is not a member"):
        placement.check_on(reg.cluster, reg.users.values(), "m7", "none", 2**30)
    with pytest.raises(GpushellError, match=r"only 48\.0 GiB of memory unclaimed"):
        placement.check_on(reg.cluster, reg.users.values(), "m2", "none", 60 * 2**30)


def test_a_member_without_memory_in_the_registry_is_not_counted() -> None:
    reg = registry(CLUSTER.replace("memory: 256G", "gpus: 0"))
    assert reg.cluster is not None
    placement.check_on(reg.cluster, reg.users.values(), "m3", "none", 2**40)


# --- forwards to members ----------------------------------------------------


def test_a_students_port_leads_to_their_member_on_the_same_port() -> None:
    reg = registry()
    alice = reg.users["alice"]
    assert destination(alice, reg.cluster) == ("192.168.5.12", 22001)
    assert destination(alice) == ("10.9.0.2", 22)  # one host: the container's own sshd
    assert user_rule("GPUSHELL", alice, reg.cluster)[-1] == "192.168.5.12:22001"


def test_forwards_to_members_leave_with_the_front_doors_address() -> None:
    reg = registry()
    lines = rebuild_lines(NatTable(""), reg, reg.users.values())
    masquerades = [line for line in lines if "MASQUERADE" in line]
    assert masquerades == [
        f"-A POSTROUTING -d 192.168.5.1{n}/32 -p tcp -m conntrack --ctstate DNAT -m comment "
        f"--comment gpushell:GPUSHELL:192.168.5.1{n} -j MASQUERADE"
        for n in (1, 2, 3)
    ]
    assert not any("10.9.0.0/24" in line for line in lines)  # no bridge of its own on the front door
    login = ensure_user_lines(NatTable(""), "GPUSHELL", reg.users["alice"], reg.cluster)
    assert masquerades[1] in login and login[-1].endswith("--to-destination 192.168.5.12:22001")


def test_the_chain_check_knows_a_cluster() -> None:
    reg = registry()
    saved = "*nat\n:GPUSHELL - [0:0]\n" + "".join(
        line + "\n" for line in rebuild_lines(NatTable(""), reg, reg.users.values()) if line.startswith("-A")
    )
    assert chaincheck.problems(NatTable(saved + "COMMIT\n"), reg) == [
        problem
        for problem in chaincheck.problems(NatTable(saved + "COMMIT\n"), reg)
        if "jump" in problem.message
    ]
    missing = chaincheck.problems(NatTable(saved.replace("192.168.5.12:22001", "10.9.0.2:22")), reg)
    assert any("port 22001 -> 192.168.5.12:22001" in problem.message for problem in missing)


def test_a_member_that_left_the_registry_loses_its_masquerade_rule() -> None:
    reg = registry()
    built = [line for line in rebuild_lines(NatTable(""), reg, reg.users.values()) if line.startswith("-A")]
    gone = built[-1].replace("192.168.5.13", "192.168.5.99")  # a member since removed or readdressed
    other_lab = gone.replace("gpushell:GPUSHELL:", "gpushell:OTHER:")  # another chain's member: not ours
    saved = (
        "*nat\n:GPUSHELL - [0:0]\n" + "".join(f"{line}\n" for line in [*built, gone, other_lab]) + "COMMIT\n"
    )
    table = NatTable(saved)
    stale = [
        problem for problem in chaincheck.problems(table, reg) if problem.kind == chaincheck.STALE_MASQUERADE
    ]
    assert [problem.message for problem in stale] == [
        "MASQUERADE rule for no member of the registry: -A POSTROUTING -d 192.168.5.99/32 -p tcp "
        "-m conntrack --ctstate DNAT -m comment --comment gpushell:GPUSHELL:192.168.5.99 -j MASQUERADE"
    ]
    assert not chaincheck.chain_matches(table, reg)
    lines = rebuild_lines(table, reg, reg.users.values())
    assert [line for line in lines if "POSTROUTING" in line] == ["-D" + gone[2:]]
    one_host = registry(
        "users:\n  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    )  # gone back to one host
    assert rebuild_lines(table, one_host, one_host.users.values()).count("-D" + built[-1][2:]) == 1


# --- the engine's description of a container ------------------------------


def test_the_instance_carries_limits_ids_filters_port_gpus_and_mounts() -> None:
    reg = registry(CLUSTER.replace("users:", "mounts:\n  - {source: /nas/data, target: /data}\nusers:"))
    body = lxdinstance.body(reg, reg.users["alice"], CARDS)
    config, devices = body["config"], body["devices"]
    assert isinstance(config, dict) and isinstance(devices, dict)
    assert config["limits.memory"] == str(16 * 2**30)
    assert config["limits.cpu.allowance"] == "400ms/100ms" and config["limits.processes"] == "4096"
    assert config["security.idmap.isolated"] == "true" and config["security.privileged"] == "false"
    assert devices["root"] == {"type": "disk", "path": "/", "pool": "default", "size": str(50 * 2**30)}
    assert devices["eth0"]["ipv4.address"] == "10.9.0.2" and devices["eth0"]["network"] == "labnet"
    assert devices["eth0"]["security.ipv4_filtering"] == "true"
    assert devices["eth0"]["security.port_isolation"] == "true"
    open_lab = registry(CLUSTER.replace("users:", "allow_container_traffic: true\nusers:"))
    assert (
        lxdinstance.devices(open_lab, open_lab.users["alice"], open_lab.cluster, CARDS)["eth0"][
            "security.port_isolation"
        ]
        == "false"
    )
    assert devices[lxdinstance.SSH_DEVICE] == {
        "type": "proxy", "listen": "tcp:0.0.0.0:22001", "connect": "tcp:127.0.0.1:22", "bind": "host",
    }  # fmt: skip
    # Each GPU by the PCI address its member lists for its /dev/nvidiaN, never by the DRM `id`.
    assert {name: device for name, device in devices.items() if device["type"] == "gpu"} == {
        "gpu0": {"type": "gpu", "gputype": "physical", "pci": "0000:41:00.0"},
        "gpu1": {"type": "gpu", "gputype": "physical", "pci": "0000:00:06.0"},
    }
    assert devices["mount0"] == {"type": "disk", "source": "/nas/data", "path": "/data", "readonly": "true"}
    assert body["source"] == {"type": "image", "alias": reg.template}
    assert "gateway 10.9.0.1" in lxdinstance.interfaces(reg, reg.users["alice"])


def test_account_lines_are_added_once() -> None:
    lines = lxdinstance.account_lines("alice", 1000, 20000)
    passwd = "root:x:0:0:root:/root:/bin/bash\n"
    once = lxdinstance.with_line(passwd, lines["/etc/passwd"])
    assert once == passwd + "alice:x:1000:1000::/home/alice:/bin/bash\n"
    assert lxdinstance.with_line(once, lines["/etc/passwd"]) == once
    assert lxdinstance.with_line("root:x:0:", "alice:x:1000:\n") == "root:x:0:\nalice:x:1000:\n"


def test_engine_snapshots_become_ours() -> None:
    assert epoch("2026-12-03T10:20:30.123456789Z") == 1796293230
    snap = from_engine(
        {
            "name": "before-exam",
            "created_at": "2026-12-03T10:20:30Z",
            "config": {"volatile.last_state.power": "RUNNING"},
        }
    )
    assert (snap.name, snap.created, snap.size, snap.running) == ("before-exam", 1796293230, 0, True)
    assert not from_engine({"name": "x", "created_at": "2026-12-03T10:20:30Z", "config": {}}).running


# --- apply on a front door ------------------------------------------------------


def test_apply_compares_the_engines_instances_with_the_registry() -> None:
    from gpushell.admin import apply
    from gpushell.admin.apply import Account, HostState
    from gpushell.core.paths import Paths

    reg, paths = registry(), Paths()
    lines = rebuild_lines(NatTable(""), reg, reg.users.values())
    table = NatTable("*nat\n:GPUSHELL - [0:0]\n" + "".join(f"{line}\n" for line in lines[1:]) + "COMMIT\n")
    engine = {user.container: lxdinstance.wanted(reg, user, CARDS) for user in reg.users.values()}
    healthy = HostState(
        table=table, bridge_ready=True, forwarding_on=True, configs=engine,
        accounts={name: Account(paths.shell, True) for name in reg.users}, states={"alice": "RUNNING"},
        cards={"m1": CARDS, "m2": CARDS},
    )  # fmt: skip
    assert [c.text for c in apply.plan(reg, paths, healthy).changes if c.kind != apply.FORWARDS] == []
    # An instance whose limit was changed behind gpushell's back, one the engine lost.
    changed = json.loads(engine["alice"])
    changed["config"]["limits.processes"] = "9999"
    changed["config"]["volatile.eth0.hwaddr"] = "00:16:3e:00:00:01"  # the engine's own: never compared
    drifted = healthy.replace(configs={"alice": lxdinstance.managed(changed["config"], changed["devices"])})
    result = apply.plan(reg, paths, drifted)
    assert [(c.kind, c.subject, c.text) for c in result.changes if c.kind == apply.CONFIG] == [
        (apply.CONFIG, "alice", "regenerate the config and devices of instance alice from the registry")
    ]
    assert result.warnings == [
        "bob: container bob does not exist; "
        "recreate it with: gpushell-admin remove bob && gpushell-admin add bob"
    ]
    unchanged = json.loads(engine["alice"])
    unchanged["config"]["volatile.eth0.hwaddr"] = "00:16:3e:00:00:01"
    quiet = healthy.replace(
        configs={**engine, "alice": lxdinstance.managed(unchanged["config"], unchanged["devices"])}
    )
    assert [c for c in apply.plan(reg, paths, quiet).changes if c.kind == apply.CONFIG] == []


def test_apply_leaves_the_containers_of_a_member_that_did_not_answer_alone() -> None:
    from gpushell.admin import apply
    from gpushell.admin.apply import Account, HostState
    from gpushell.containers.backend import UNKNOWN
    from gpushell.containers.lxd import LxdDriver
    from gpushell.core.paths import Paths

    # What LXD 5.0.2 lists for an instance on a member off the network (seen in the test cluster).
    listed = [
        {
            "name": "alice",
            "status": "Error",
            "status_code": 112,
            "location": "m2",
            "config": {},
            "devices": {},
        }
    ]
    assert LxdDriver(registry()).states(listed) == {"alice": (UNKNOWN, "m2")}
    reg, paths = (
        registry(
            CLUSTER.replace(
                "users:",
                "users:\n  carol: {port: 22003, ip: 10.9.0.4, idmap: 1131072, member: m2, autostart: true}",
            )
        ),
        Paths(),
    )
    lines = rebuild_lines(NatTable(""), reg, reg.users.values())
    table = NatTable("*nat\n:GPUSHELL - [0:0]\n" + "".join(f"{line}\n" for line in lines[1:]) + "COMMIT\n")
    engine = {user.container: lxdinstance.wanted(reg, user, CARDS) for user in reg.users.values()}
    state = HostState(
        table=table, bridge_ready=True, forwarding_on=True,
        configs={**engine, "alice": LxdDriver.managed_texts(listed)["alice"], "carol": ""},
        accounts={name: Account(paths.shell, True) for name in reg.users},
        states={"alice": UNKNOWN, "carol": UNKNOWN}, unanswered={"alice": "m2", "carol": "m2"},
        cards={"m1": CARDS},  # m2 did not answer: its GPUs were not asked for
    )  # fmt: skip
    result = apply.plan(reg, paths, state)
    assert [c for c in result.changes if c.kind != apply.FORWARDS] == []  # no regenerate, no autostart
    assert result.warnings == ["member m2 is not answering: alice, carol not checked (gpushell-admin doctor)"]


# --- doctor on a front door -------------------------------------------------------


def test_doctor_names_a_member_down_an_offline_one_and_a_misplaced_container() -> None:
    from gpushell.admin import clusterdoctor

    reg = registry()
    facts = clusterdoctor.ClusterFacts(
        reachable={"m1": "", "m2": "", "m3": "192.168.5.13:8443: timed out"},
        members={"m1": ("Online", "Fully operational"), "m2": ("Offline", "No heartbeat since 30s")},
        instances={"alice": ("RUNNING", "m1"), "half-made": ("STOPPED", "m3")},
    )
    members = [(f.ok, f.what) for f in clusterdoctor.check_members(reg, facts)]
    assert members == [
        (True, "member m1 (192.168.5.11) answers and is online"),
        (False, "member m2: the cluster says Offline (No heartbeat since 30s)"),
        (False, "member m3 (192.168.5.13): its API does not answer: 192.168.5.13:8443: timed out"),
    ]
    containers = [(f.ok, f.what) for f in clusterdoctor.check_containers(reg, facts)]
    assert containers == [
        (False, "alice: the registry says member m2, the cluster says m1"),
        (False, "bob: container bob does not exist on the cluster"),
        (
            False,
            "instance half-made on m3 (STOPPED) belongs to no student in the registry"
            " (an add that was stopped half way, or one made by hand)",
        ),
    ]
    assert clusterdoctor.check_image(reg, facts) == []  # not asked: no member answered
    missing = clusterdoctor.check_image(reg, clusterdoctor.ClusterFacts({}, {}, {}, image=False))
    assert [(f.ok, f.what, f.fix) for f in missing] == [
        (
            False,
            f"image {reg.template} is not in project gpushell: adds will fail",
            "gpushell-admin template build",
        )
    ]
    silent = clusterdoctor.ClusterFacts({}, {}, {"alice": ("UNKNOWN", "m2"), "bob": ("STOPPED", "m1")})
    assert [(f.ok, f.what) for f in clusterdoctor.check_containers(reg, silent)] == [
        (False, "alice: container alice not checked: member m2 did not answer"),
        (True, "bob: container bob on m1 (STOPPED)"),
    ]
    unknown = clusterdoctor.ClusterFacts({}, {}, None)
    assert [f.ok for f in clusterdoctor.check_containers(reg, unknown)] == [False]
    elsewhere = clusterdoctor.ClusterFacts(
        {},
        {},
        {"alice": ("RUNNING", "m2"), "bob": ("STOPPED", "m1")},
        pools={"alice": "old", "bob": "default"},
    )
    assert [f.line() for f in clusterdoctor.check_containers(reg, elsewhere)] == [
        "ok: alice: container alice on m2 (RUNNING)",
        "warning: alice: container alice is on pool old, not lxd.pool default — "
        "gpushell-admin storage migrate alice",
        "ok: bob: container bob on m1 (STOPPED)",
    ]


def test_doctor_finds_a_home_a_rebuild_left_on_a_volume() -> None:
    from gpushell.admin import clusterdoctor

    reg = registry()
    volumes = {"alice-home": "m2", "gone-home": "m1", "datasets": "m1"}  # datasets: the admin's own
    found = clusterdoctor.check_volumes(reg, clusterdoctor.ClusterFacts({}, {}, {}, volumes=volumes))
    assert [(f.ok, f.what, f.fix) for f in found] == [
        (
            False,
            "alice: a rebuild that did not finish left their home on volume alice-home (m2)",
            "alice's next rebuild brings it back (the log has why the last one stopped)",
        ),
        (
            False,
            "volume gone-home on m1 looks like a rebuild's home volume but belongs to no student",
            "lxc storage volume delete default gone-home --target m1 --project gpushell"
            " once nothing on it is needed",
        ),
    ]
    assert clusterdoctor.check_volumes(reg, clusterdoctor.ClusterFacts({}, {}, {})) == []  # not listed


# What the lab's set-up gives the project (README: Several servers), with the NAS paths it mounts.
NEEDED = {
    "restricted": "true",
    "restricted.cluster.target": "allow",
    "restricted.devices.proxy": "allow",
    "restricted.snapshots": "allow",
    "restricted.devices.gpu": "allow",
    "restricted.backups": "allow",
}


def project_findings(config: dict[str, str], mounts: str = "") -> list[tuple[bool, str, str]]:
    from gpushell.admin import clusterdoctor

    reg = registry(CLUSTER.replace("users:", f"{mounts}users:"))
    return [(f.ok, f.what, f.fix) for f in clusterdoctor.check_project(reg, config)]


def test_doctor_passes_a_project_restricted_to_what_gpushell_needs() -> None:
    assert project_findings(NEEDED) == [(True, "project gpushell is restricted to what gpushell needs", "")]
    nas = "mounts:\n  - {source: /srv/nas/data, target: /data}\n"
    allowed = {**NEEDED, "restricted.devices.disk": "allow", "restricted.devices.disk.paths": "/srv/nas"}
    assert project_findings(allowed, nas)[0][0]
    exact = {**allowed, "restricted.devices.disk.paths": "/srv/other,/srv/nas/data/"}
    assert project_findings(exact, nas)[0][0]


def test_doctor_fails_a_project_that_lets_the_certificate_reach_the_host() -> None:
    assert project_findings({}) == [
        (
            False,
            "project gpushell is not restricted: gpushell's certificate could make privileged containers "
            "and attach any host path",
            "lxc project set gpushell restricted=true (README: Several servers)",
        )
    ]
    loose = {**NEEDED, "restricted.containers.privilege": "allow", "restricted.idmap.uid": "0-65535"}
    assert project_findings(loose) == [
        (
            False,
            "project gpushell allows privileged containers (restricted.containers.privilege=allow)",
            "lxc project unset gpushell restricted.containers.privilege",
        ),
        (
            False,
            "project gpushell lets containers map host ids 0-65535 (restricted.idmap.uid)",
            "lxc project unset gpushell restricted.idmap.uid",
        ),
    ]
    any_path = project_findings({**NEEDED, "restricted.devices.disk": "allow"})
    assert any_path == [
        (
            False,
            "project gpushell lets any host path be attached to a container "
            "(restricted.devices.disk=allow without restricted.devices.disk.paths)",
            "lxc project set gpushell restricted.devices.disk=managed",
        )
    ]


def test_doctor_wants_backups_allowed_on_incus_and_blocked_on_lxd() -> None:
    """LXD (5.0.2 tested) imports a backup without the project's restrictions: the permission would let
    gpushell's certificate make a privileged container.  Incus checks them: there it is remove --archive's."""
    from gpushell.admin import clusterdoctor

    reg = registry(CLUSTER)
    blocked = {key: value for key, value in NEEDED.items() if key != "restricted.backups"}
    ok = "ok: project gpushell is restricted to what gpushell needs"
    lines = [finding.line() for finding in clusterdoctor.check_project(reg, blocked, "incus")]
    assert lines == [
        ok,
        "warning: project gpushell blocks backups: remove --archive and expire --archive cannot keep a "
        "container — lxc project set gpushell restricted.backups=allow (README: Several servers)",
    ]
    assert [finding.line() for finding in clusterdoctor.check_project(reg, NEEDED, "incus")] == [ok]
    assert [finding.line() for finding in clusterdoctor.check_project(reg, blocked, "lxd")] == [ok]
    assert [finding.line() for finding in clusterdoctor.check_project(reg, NEEDED, "lxd")] == [
        "FAIL: project gpushell allows backups, and LXD imports a backup without the project's restrictions: "
        "gpushell's certificate could import a privileged container — fix: lxc project unset gpushell "
        "restricted.backups (README: Several servers)"
    ]
    assert [finding.line() for finding in clusterdoctor.check_project(reg, blocked)] == [ok]  # engine unknown


def test_doctor_names_what_the_project_blocks_that_gpushell_needs() -> None:
    blocked = {key: value for key, value in NEEDED.items() if key != "restricted.snapshots"}
    assert project_findings(blocked) == [
        (
            False,
            "project gpushell blocks what gpushell needs: restricted.snapshots",
            "lxc project set gpushell restricted.snapshots=allow",
        )
    ]
    nas = "mounts:\n  - {source: /srv/nas, target: /nas}\n"
    # A sibling whose name starts the same is not inside the allowed path.
    beside = {**NEEDED, "restricted.devices.disk": "allow", "restricted.devices.disk.paths": "/srv/na"}
    fix = "lxc project set gpushell restricted.devices.disk=allow restricted.devices.disk.paths=/srv/nas"
    expected = (
        False,
        "project gpushell does not allow the NAS mounts /srv/nas: adds and applies with them fail",
        fix,
    )
    assert project_findings(beside, nas) == [expected]
    assert project_findings(NEEDED, nas) == [expected]  # `managed`, the default: pool volumes only


# A member's GPUs as /1.0/resources lists them (the fields of LXD 5.0's api.ResourcesGPUCard,
# written by hand): on-board graphics is DRM card 0; an H100 with the nvidia-drm module's DRM
# node; an H200 as the engine lists a card without one (the real H200 of tests/data/real_gpu had
# no DRM node: the engine's `nvidia` fields come from /proc/driver/nvidia, its minor made 1 here);
# a card bound to vfio-pci, which no container can use.
RESOURCES = {
    "gpu": {
        "cards": [
            {"driver": "ast", "vendor": "ASPEED Technology, Inc.", "product": "ASPEED Graphics Family",
             "pci_address": "0000:03:00.0", "drm": {"id": 0, "card_name": "card0"}},
            {"driver": "nvidia", "vendor": "NVIDIA Corporation", "product": "GH100 [H100 PCIe]",
             "pci_address": "0000:41:00.0", "drm": {"id": 1, "card_name": "card1"},
             "nvidia": {"model": "NVIDIA H100 PCIe", "card_name": "nvidia0", "card_device": "195:0"}},
            {"driver": "nvidia", "vendor_id": "10de", "pci_address": "0000:00:06.0",
             "nvidia": {"model": "NVIDIA H200", "brand": "NVIDIA", "card_name": "nvidia1",
                        "card_device": "195:1"}},
            {"driver": "vfio-pci", "vendor": "NVIDIA Corporation", "pci_address": "0000:42:00.0"},
        ],
        "total": 4,
    }
}  # fmt: skip
CARDS = lxdinstance.gpu_cards(RESOURCES)


def test_a_members_gpus_are_its_nvidia_cards_by_their_dev_nvidia_number() -> None:
    assert {
        0: lxdinstance.GpuCard("0000:41:00.0", "NVIDIA H100 PCIe at 0000:41:00.0"),
        1: lxdinstance.GpuCard("0000:00:06.0", "NVIDIA H200 at 0000:00:06.0"),
    } == CARDS
    for nothing in (
        {},
        {"gpu": {"cards": None}},
        [],
        {"gpu": {"cards": [{"nvidia": {"card_name": "card0"}}]}},
    ):
        assert lxdinstance.gpu_cards(nothing) == {}


def test_a_gpu_its_member_does_not_list_stops_the_container_being_made() -> None:
    reg = registry()
    with pytest.raises(GpushellError) as caught:
        lxdinstance.body(reg, reg.users["alice"], {0: CARDS[0]})
    assert (
        caught.value.user_message == "your container's GPU is missing on its server; ask your administrator"
    )
    assert caught.value.log_message == (
        "member m2 lists no GPU 1 (/dev/nvidia1) for alice; its GPUs: 0: NVIDIA H100 PCIe at 0000:41:00.0"
    )
    devices = lxdinstance.body(reg, reg.users["alice"].replace(gpus="none"), {})["devices"]
    assert isinstance(devices, dict) and "gpu0" not in devices  # no GPU, no card asked for


def test_apply_says_which_students_it_could_not_check_for_want_of_their_members_gpus() -> None:
    from gpushell.admin import apply
    from gpushell.admin.apply import Account, HostState
    from gpushell.core.paths import Paths

    reg, paths = registry(), Paths()
    engine = {user.container: lxdinstance.wanted(reg, user, CARDS) for user in reg.users.values()}
    state = HostState(
        table=NatTable(""), bridge_ready=True, forwarding_on=True, configs=engine,
        accounts={name: Account(paths.shell, True) for name in reg.users}, states={},
        cards={"m1": CARDS},  # m2's could not be read
    )  # fmt: skip
    result = apply.plan(reg, paths, state)
    assert [c for c in result.changes if c.kind == apply.CONFIG] == []
    assert result.warnings == [
        "alice: container alice not checked: "
        "member m2 lists no GPU 0 (/dev/nvidia0) for alice; its GPUs: none"
    ]


def test_doctor_names_a_registry_gpu_the_member_does_not_have() -> None:
    from gpushell.admin import clusterdoctor

    reg = registry(CLUSTER.replace("gpus: 2, memory: 64G", "gpus: [1], memory: 64G"))
    facts = clusterdoctor.ClusterFacts({}, {}, {}, gpus={"m1": CARDS, "m2": CARDS})
    found = [(f.ok, f.what, f.fix) for f in clusterdoctor.check_gpus(reg, facts)]
    seen = "0: NVIDIA H100 PCIe at 0000:41:00.0, 1: NVIDIA H200 at 0000:00:06.0"
    assert found == [
        (True, f"member m1: GPUs {seen}", ""),
        (
            False,
            f"member m2: the registry gives GPU 2, 3, which its engine does not list (its NVIDIA GPUs: "
            f"{seen}); containers with it cannot be made or started",
            "correct lxd.members.m2.gpus to the numbers of its /dev/nvidiaN (`lxc info --resources "
            "--target m2` shows each card's nvidiaN), or load the NVIDIA driver there",
        ),
    ]  # m3 has no GPU in the registry: not asked
    bare = clusterdoctor.ClusterFacts({}, {}, {}, gpus={"m1": {}})
    assert (
        "which its engine does not list (its NVIDIA GPUs: none)"
        in clusterdoctor.check_gpus(reg, bare)[0].what
    )


def test_a_loan_is_a_device_of_its_members_card_that_apply_does_not_compare() -> None:
    reg = registry()
    bob = reg.users["bob"]  # on m1
    assert lxdinstance.loan_devices(bob, (1,), CARDS) == {
        "loan-gpu1": {"type": "gpu", "gputype": "physical", "pci": "0000:00:06.0"}
    }
    with pytest.raises(GpushellError) as caught:
        lxdinstance.loan_devices(bob, (7,), CARDS)
    assert caught.value.log_message.startswith("member m1 lists no GPU 7 (/dev/nvidia7) for bob")
    wanted = json.loads(lxdinstance.wanted(reg, bob, CARDS))
    lent = wanted["devices"] | lxdinstance.loan_devices(bob, (1,), CARDS)
    assert lxdinstance.managed(wanted["config"], lent) == lxdinstance.wanted(reg, bob, CARDS)


def test_the_root_disks_pool_is_storage_migrates_to_change_not_applys() -> None:
    reg = registry()
    bob = reg.users["bob"]
    engine = {
        "config": lxdinstance.config(reg, bob),
        "devices": lxdinstance.devices(reg, bob, reg.cluster, CARDS),
    }
    assert engine["devices"]["root"]["pool"] == "default"
    engine["devices"]["root"]["pool"] = "old"  # the registry's lxd.pool changed; the disk has not moved yet
    assert lxdinstance.managed(engine["config"], engine["devices"]) == lxdinstance.wanted(reg, bob, CARDS)
    assert lxdinstance.root_pool(engine) == "old"
    assert lxdinstance.root_pool({"devices": {}, "expanded_devices": {"root": {"pool": "fast"}}}) == "fast"
    assert lxdinstance.root_pool({}) == ""
    smaller = {**engine["devices"], "root": {**engine["devices"]["root"], "size": "1GB"}}
    assert lxdinstance.managed(engine["config"], smaller) != lxdinstance.wanted(reg, bob, CARDS)
