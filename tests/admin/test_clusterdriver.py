"""clusterdriver: `driver sync` on a cluster, against a stand-in for the engine that records each call
(the real engines run it in tests/integration/test_cluster_lending.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushell.admin import clusterdriver
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.gpureport import OK, GpuReport
from gpushell.core.paths import Paths
from gpushell.core.registry import parse

CLUSTER = """\
backend: lxd
driver: container
bridge: labnet
subnet: 10.9.0.0/24
lxd:
  credentials: /etc/gpushell/lxd
  members:
    m1: {address: 192.168.5.11, gpus: 2}
    m2: {address: 192.168.5.12, gpus: 1}
users:
  ann: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1, gpus: [0]}
  bob: {port: 22002, ip: 10.9.0.3, idmap: 1065536, member: m1, gpus: [1]}
  cid: {port: 22003, ip: 10.9.0.4, idmap: 1131072, member: m2, gpus: [0]}
  dan: {port: 22004, ip: 10.9.0.5, idmap: 1196608, member: m1, gpus: none}
"""
NOW = 1_800_000_000.0


class Engine:
    """The LxdDriver calls clusterdriver makes: reports, versions, files, state, exec."""

    def __init__(self, reports: dict[str, GpuReport | None], versions: dict[str, set[str]], state: str,
                 status: int = 0) -> None:  # fmt: skip
        self.reports, self.versions, self.states, self.status = reports, versions, {}, status
        self.default_state, self.calls = state, []

    def gpu_reports(self) -> dict[str, GpuReport | None]:
        return self.reports

    def driver_versions(self, name: str) -> frozenset[str]:
        return frozenset(self.versions.get(name, ()))

    def state(self, name: str) -> str:
        return self.states.get(name, self.default_state)

    def put_file(self, name: str, path: str, source: str, mode: int) -> None:
        self.calls.append(f"put {name} {path} {mode:o}")

    def start(self, name: str) -> bool:
        self.calls.append(f"start {name}")
        return True

    def stop(self, name: str) -> None:
        self.calls.append(f"stop {name}")

    def run_inside(self, name: str, command: list[str], timeout: float = 90.0) -> int:
        self.calls.append(f"run {name} {' '.join(command)}")
        if self.status == 0:
            self.versions[name] = {"570.86.15"}
        return self.status

    def delete_file(self, name: str, path: str) -> None:
        self.calls.append(f"delete {name} {path}")


def report(driver: str | None, taken: float = NOW) -> GpuReport:
    return GpuReport(int(taken), OK, (), driver)


def sync(engine: Engine, tmp_path: Path, monkeypatch, names: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    monkeypatch.setattr(clusterdriver, "LxdDriver", lambda reg: engine)
    monkeypatch.setattr(clusterdriver.time, "time", lambda: NOW)
    installer = tmp_path / "NVIDIA.run"
    installer.write_bytes(b"#!/bin/sh\n")
    lines: list[str] = []
    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    paths = Paths(run_dir=str(tmp_path / "run"))
    return clusterdriver.sync(reg, paths, names, str(installer), lines.append), lines


def test_each_container_is_matched_to_its_own_members_driver(tmp_path, monkeypatch) -> None:
    engine = Engine(
        {"m1": report("570.86.15"), "m2": report("550.54.14")},
        {"ann": {"550.54.14"}, "bob": {"570.86.15"}, "cid": {"550.54.14"}},
        STOPPED,
    )
    failures, lines = sync(engine, tmp_path, monkeypatch)
    # ann lags m1's module; bob and cid match theirs; dan has no GPU.
    assert (failures, lines) == (0, ["ann: installed NVIDIA driver 570.86.15"])
    inside = "/root/.gpushell-nvidia-installer.run"
    assert engine.calls == [
        f"put ann {inside} 700",
        "start ann",  # stopped: started for the installer,
        f"run ann sh {inside} --no-kernel-module --silent --no-questions",
        f"delete ann {inside}",
        "stop ann",  # and stopped again
    ]
    failures, lines = sync(engine, tmp_path, monkeypatch)
    assert (failures, lines) == (0, ["every GPU container has its member's NVIDIA driver"])


def test_a_running_container_keeps_running_and_a_failed_installer_is_one_line(tmp_path, monkeypatch) -> None:
    engine = Engine({"m1": report("570.86.15")}, {}, RUNNING, status=3)
    failures, lines = sync(engine, tmp_path, monkeypatch, ("ann",))
    assert (failures, lines) == (1, ["ann: FAILED: installer exited 3"])
    assert [call.split()[0] for call in engine.calls] == ["put", "run", "delete"]


def test_a_member_without_a_fresh_report_naming_a_module_is_skipped(tmp_path, monkeypatch) -> None:
    for reports in ({"m1": report("570.86.15")}, {"m1": report("570.86.15"), "m2": report(None)},
                    {"m1": report("570.86.15"), "m2": report("550.54.14", NOW - 600)}):  # fmt: skip
        engine = Engine(reports, {"ann": {"570.86.15"}, "bob": {"570.86.15"}}, STOPPED)
        failures, lines = sync(engine, tmp_path, monkeypatch)
        assert failures == 1 and engine.calls == []
        assert lines == ["cid: skipped: member m2 reports no loaded NVIDIA driver (publish-gpus)"]


def test_driver_host_and_unknown_names_are_refused(tmp_path, monkeypatch) -> None:
    engine = Engine({}, {}, STOPPED)
    with pytest.raises(GpushellError) as caught:
        sync(engine, tmp_path, monkeypatch, ("zed",))
    assert caught.value.status == ExitStatus.NOT_REGISTERED
    monkeypatch.setattr(clusterdriver, "LxdDriver", lambda reg: engine)
    reg = parse(CLUSTER.replace("driver: container\n", ""), "/etc/gpushell.yaml")
    with pytest.raises(GpushellError, match="driver sync is for `driver: container`"):
        clusterdriver.sync(reg, Paths(run_dir=str(tmp_path)), [], None, print)


def test_doctor_matches_each_gpu_container_to_its_members_module() -> None:
    from gpushell.admin import clusterdoctor

    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    facts = clusterdoctor.ClusterFacts(
        {}, {}, {},
        reports={"m1": report("570.86.15"), "m2": report("550.54.14", NOW - 600)},
        driver_versions={"ann": frozenset({"570.86.15"}), "bob": frozenset({"550.54.14"}),
                         "cid": frozenset()},
    )  # fmt: skip
    assert [finding.line() for finding in clusterdoctor.check_drivers(reg, facts, NOW)] == [
        "ok: ann: container ann has its member's NVIDIA driver 570.86.15",
        "FAIL: bob: container bob has driver 550.54.14, its member m1 570.86.15 — fix: "
        "gpushell-admin driver sync bob (NVIDIA's 570.86.15 installer)",
        # cid: m2's report is stale, so there is no module to match; dan has no GPU.
    ]
    assert clusterdoctor.check_drivers(reg.replace(driver="host"), facts, NOW) == []
    empty = facts.__class__({}, {}, {}, reports=facts.reports, driver_versions={"bob": frozenset()})
    assert [finding.what for finding in clusterdoctor.check_drivers(reg, empty, NOW)] == [
        "bob: container bob has no NVIDIA user-space driver (its member m1: 570.86.15)"
    ]
