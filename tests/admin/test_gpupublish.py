"""publish-gpus on a member: NVML's figures (the recorded H200), its processes by container, into the
member's entry; the front door's tick turns the reports into banner snapshots."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from gpushell.admin import gpupublish
from gpushell.containers import lxdinstance
from gpushell.core import gpureport, protocol
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.gpu import gpucache, memberreading
from gpushell.student.banner import PLAIN, gpu_lines
from tests.gpu.test_gpustatus import FakeNvml
from tests.gpu.test_real_gpu_replay import ALICE_PID, HOST_PID, RECORDED, recorded_proc

ALICE_IDS = [{"Isuid": True, "Isgid": False, "Hostid": 1_000_000, "Nsid": 0, "Maprange": 65536}]
INSTANCES = [
    {"name": "gpushell-alice", "location": "m1", "config": {"volatile.idmap.current": json.dumps(ALICE_IDS)}},
    {"name": "gpushell-bob", "location": "m1", "config": {}},  # stopped: no current map
    # On m2, which picked the same ids for abe: numbers of another machine, never m1's.
    {"name": "gpushell-abe", "location": "m2", "config": {"volatile.idmap.current": json.dumps(ALICE_IDS)}},
]
MEMBER = {
    "server_name": "m1",
    "description": "rack 2",
    "failure_domain": "default",
    "groups": ["default"],
    "roles": ["database"],
    "config": {"scheduler.instance": "all"},
    "status": "Online",
}


class Engine:
    """The calls publish makes of a member's engine, answered as LXD 5.0.2 answers them; PUTs kept."""

    def __init__(self, clustered: bool = True) -> None:
        self.clustered = clustered
        self.put: list[tuple[str, Any]] = []

    def get(self, endpoint: str, **query: str) -> Any:
        if endpoint == "":
            return {"environment": {"server_name": "m1", "server_clustered": self.clustered}}
        if endpoint == "/instances" and query == {"recursion": "1"}:
            return INSTANCES
        assert endpoint == "/cluster/members/m1"
        return MEMBER

    def call(self, method: str, endpoint: str, body: object = None) -> None:
        self.put.append((f"{method} {endpoint}", body))


def h200() -> FakeNvml:
    return FakeNvml({"gpus": RECORDED["nvml"]})


def test_the_report_names_alices_process_by_her_container_and_roots_by_nobody(tmp_path: pathlib.Path) -> None:
    engine, nvml = Engine(), h200()
    member, report = gpupublish.publish(engine, lambda: nvml, 1_700_000_000.5, recorded_proc(tmp_path))  # type: ignore[arg-type]
    assert member == "m1" and report.taken == 1_700_000_000 and report.state == gpureport.OK
    (gpu,) = report.gpus
    assert (gpu.gpu, gpu.name, gpu.util, gpu.temp) == (0, "NVIDIA H200", 100, 60)
    assert gpu.uuid == RECORDED["nvml"][0]["uuid"]  # how nvidia-smi inside a container names it
    assert sorted(gpu.procs) == [("", 1_686_110_208), ("gpushell-alice", 5_171_576_832)]
    assert nvml.shut_down
    # Into the member's own entry, everything else in it as it was.
    ((request, body),) = engine.put
    assert request == "PUT /cluster/members/m1"
    assert body["config"]["scheduler.instance"] == "all"
    assert gpureport.decode(body["config"][gpureport.REPORT_KEY]) == report
    assert {key: body[key] for key in ("description", "failure_domain", "groups", "roles")} == {
        key: MEMBER[key] for key in ("description", "failure_domain", "groups", "roles")
    }
    assert {HOST_PID, ALICE_PID} <= {proc["pid"] for proc in RECORDED["nvml"][0]["compute_processes"]}


def test_without_nvml_it_publishes_that_there_is_no_driver() -> None:
    engine = Engine()
    _, report = gpupublish.publish(engine, lambda: None, 5.0)  # type: ignore[arg-type]
    assert report == gpureport.GpuReport(5, gpureport.NO_DRIVER)
    assert gpureport.decode(engine.put[0][1]["config"][gpureport.REPORT_KEY]) == report


def test_nvml_that_cannot_count_its_gpus_is_an_error_report() -> None:
    nvml = h200()
    nvml.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(nvml.NVMLError("Unknown Error"))  # type: ignore[method-assign]
    assert memberreading.read(nvml, lambda pid: None, 9) == gpureport.GpuReport(9, gpureport.ERROR)
    assert nvml.shut_down


def test_an_engine_that_is_no_cluster_member_is_refused_and_nothing_written() -> None:
    engine = Engine(clustered=False)
    with pytest.raises(GpushellError, match="not a cluster member"):
        gpupublish.publish(engine, h200, 1.0)  # type: ignore[arg-type]
    assert engine.put == []


def test_no_socket_found_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setattr(gpupublish, "SOCKETS", (str(tmp_path / "none.socket"),))
    with pytest.raises(GpushellError, match="no LXD or Incus socket found"):
        gpupublish.engine_socket(None)
    assert gpupublish.engine_socket("/run/x.socket") == "/run/x.socket"


@pytest.mark.parametrize(
    ("current", "found"),
    [
        (ALICE_IDS, (1_000_000, 65536)),
        ([{"Isuid": False, "Isgid": True, "Hostid": 1_000_000, "Maprange": 65536}], None),
        ([{"Isuid": True, "Hostid": 0, "Maprange": 65536}], None),  # host root is no container's
        ("not a list", None),
    ],
)
def test_an_instances_host_uids_come_from_the_engines_own_record(current: object, found: object) -> None:
    instance = {"config": {"volatile.idmap.current": json.dumps(current)}}
    assert lxdinstance.host_uids(instance) == found
    assert lxdinstance.host_uids({"config": {"volatile.idmap.current": "{"}}) is None


CLUSTER = """\
backend: lxd
bridge: labnet
subnet: 10.9.0.0/24
template: lab-image
lxd:
  members:
    m1: {address: 192.168.5.11, gpus: 1, memory: 64G}
    m2: {address: 192.168.5.12, gpus: 1, memory: 64G}
    m3: {address: 192.168.5.13, gpus: 0, memory: 64G}
users:
  alice: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1, gpus: [0], container: gpushell-alice}
"""


def test_the_tick_writes_each_members_banner_lines_and_a_login_reads_its_own(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, reg = Paths(run_dir=str(tmp_path)), parse(CLUSTER, "/etc/gpushell.yaml")
    now = 1_700_000_000
    _, report = gpupublish.publish(Engine(), h200, now, recorded_proc(tmp_path))  # type: ignore[arg-type]
    pathlib.Path(paths.member_gpu_snapshot("m3")).write_text("taken=1\n")  # a report m3 no longer has
    gpucache.write_members(paths, reg, {"m1": report, "m2": gpureport.GpuReport(now, gpureport.NO_DRIVER)})
    assert not pathlib.Path(paths.member_gpu_snapshot("m3")).exists()
    monkeypatch.setattr(gpucache.time, "time", lambda: now + 40)
    keys = protocol.decode(protocol.encode(gpucache.for_member_login(paths, "m1")))  # through the wire
    assert gpu_lines(keys, PLAIN) == "GPU 0  100%    7.0/140.4 GiB  60 C  1 student  (as of 40 s ago)\n"
    m2 = gpucache.for_member_login(paths, "m2")
    assert gpu_lines(m2, PLAIN) == "GPUs: none on m2 (no NVIDIA driver)\n"
    assert gpu_lines(gpucache.for_member_login(paths, "m3"), PLAIN) == "GPU status: run `gpus`\n"


def test_doctor_wants_each_gpu_member_to_publish_fresh_figures_of_a_driver() -> None:
    from gpushell.admin import clusterdoctor

    reg, now = parse(CLUSTER, "/etc/gpushell.yaml"), 1_700_000_000
    online = {name: ("Online", "") for name in ("m1", "m2", "m3")}
    driverless = gpureport.GpuReport(now - 20, gpureport.NO_DRIVER)

    def findings(reports: dict[str, gpureport.GpuReport | None]) -> list[tuple[bool, str]]:
        facts = clusterdoctor.ClusterFacts({}, online, {}, reports=reports)
        return [(found.ok, found.what) for found in clusterdoctor.check_reports(reg, facts, now)]

    fresh = gpureport.GpuReport(now - 20, gpureport.OK)
    assert findings({"m1": fresh, "m2": driverless}) == [
        (True, "member m1 published its GPU figures 20 s ago"),
        (False, "member m2 publishes no NVIDIA driver"),
    ]  # m3 has no GPU: nothing to publish
    stale = gpureport.GpuReport(now - 600, gpureport.OK)
    assert findings({"m1": stale}) == [
        (False, "member m1's GPU figures are 10 minutes old: its publish-gpus timer stopped"),
        (False, "member m2 publishes no GPU figures: its students' banners and the status page show none"),
    ]
    facts = clusterdoctor.ClusterFacts({}, {"m1": ("Online", "")}, {}, reports={})
    (only,) = clusterdoctor.check_reports(reg, facts, now)  # m2 did not answer: its own finding says so
    assert only.fix == "on m1: install gpushell and run systemctl enable --now gpushell-publish-gpus.timer"


def test_processes_are_summed_per_container_so_a_crowd_of_them_hides_no_neighbour() -> None:
    crowd = [("gpushell-mallory", 10)] * 5000 + [("gpushell-alice", 7), ("", None), ("", 3)]
    summed = memberreading.by_container(crowd)
    assert summed == (("", 3), ("gpushell-alice", 7), ("gpushell-mallory", 50_000))
    report = gpureport.GpuReport(1, gpureport.OK, (gpureport.ReportedGpu(0, procs=summed),))
    table = gpureport.banner_table(gpureport.decode(gpureport.encode(report)), {"gpushell-alice": "alice"})  # type: ignore[arg-type]
    assert ("student", None, "alice", 7) in table[0]["procs"]  # type: ignore[operator]
