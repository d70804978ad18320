"""gpushell's GPU readers on what a real NVIDIA H200 showed (data/real_gpu/h200.json).

tests/gpu/record_real_gpu.py ran gpushell's readers on a host with an H200
(driver 580.159.04, the open kernel module, no nvidia-drm: no DRM node),
with two CUDA processes on it: one of root (a host process) and one as uid
1001000 (a uid of alice's id range), busy with matrix products.  Every
check there passed (data/real_gpu/h200.log).  It kept the raw readings:
NVML's answers, nvidia-smi's CSV, /proc/devices, the driver's version and
`information` files, the device nodes.  These tests replay them through
the same code on machines without a GPU, so a change that would misread a
real driver's answers fails here.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any

from gpushell.core import gputable, protocol
from gpushell.gpu import driverfiles, gpudevices, gpufigures, gpustatus, gpuuse, smi
from gpushell.student.banner import PLAIN
from gpushell.student.tables import gpu_table
from tests.gpu.test_gpustatus import FakeNvml

RECORDED: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).parents[1] / "data/real_gpu/h200.json").read_text()
)
HOST_PID, ALICE_PID = RECORDED["pids"]["host"], RECORDED["pids"]["alice"]
OWNERS = gpustatus.Owners(
    {"gpushell-alice": "alice", "gpushell-bob": "bob"},
    [(1_000_000, 65_536, "alice"), (1_065_536, 65_536, "bob")],
)
MIB = 1024 * 1024


def nvml() -> FakeNvml:
    return FakeNvml({"gpus": RECORDED["nvml"]})


def recorded_proc(tmp_path: pathlib.Path) -> str:
    """A /proc holding the two processes' recorded status and comm files."""
    for pid, files in RECORDED["proc"].items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "status").write_text(files["status"])
        (tmp_path / pid / "comm").write_text(files["comm"])
    return str(tmp_path)


def test_the_recording_is_of_a_real_h200_with_both_processes_on_it() -> None:
    gpu = RECORDED["nvml"][0]
    assert gpu["name"] == "NVIDIA H200" and gpu["minor"] == 0
    assert {proc["pid"] for proc in gpu["compute_processes"]} == {HOST_PID, ALICE_PID}
    assert "28 passed, 0 failed" in (pathlib.Path(__file__).parents[1] / "data/real_gpu/h200.log").read_text()


def test_a_later_run_on_the_h200_read_a_members_report_by_container() -> None:
    """2026-12-04: the same script with the member report's checks (publish-gpus' reader), all passed."""
    log = (pathlib.Path(__file__).parents[1] / "data/real_gpu/h200-member-report.log").read_text()
    assert "30 passed, 0 failed" in log
    assert "PASS member report: GPU 0, alice's container and a host process" in log


def test_gather_reads_the_real_answers() -> None:
    (reading,) = gpustatus.gather(nvml())
    assert reading["name"] == "NVIDIA H200" and reading["util"] == 100 and reading["temp"] == 60
    assert reading["mem_total"] == 150_754_820_096 and reading["mem_used"] == 7_517_700_096
    assert dict(reading["procs"]) == {HOST_PID: 1_686_110_208, ALICE_PID: 5_171_576_832}  # type: ignore[call-overload]


def test_alice_sees_her_process_by_pid_and_the_host_process_without_one(tmp_path: pathlib.Path) -> None:
    proc = recorded_proc(tmp_path)
    readings = gpustatus.classify(
        gpustatus.gather(nvml()),
        "alice",
        lambda pid: gpustatus.pid_owner(pid, OWNERS, proc),
        lambda pid: gpustatus.pid_command(pid, proc),
    )
    assert readings[0]["procs"] == [
        ("other", None, "", 1_686_110_208),
        ("you", ALICE_PID, "python3", 5_171_576_832),
    ]
    answer = protocol.decode(protocol.encode(gputable.encode(readings)))
    table = gpu_table(answer, PLAIN)
    assert table == RECORDED["alice_table"]  # what the real run printed, byte for byte
    assert f"[1] you: pid {ALICE_PID} python3 4932 MiB" in table and "other 1608 MiB" in table


def test_bob_sees_alices_process_by_her_name_alone(tmp_path: pathlib.Path) -> None:
    proc = recorded_proc(tmp_path)
    readings = gpustatus.classify(
        gpustatus.gather(nvml()), "bob", lambda pid: gpustatus.pid_owner(pid, OWNERS, proc), lambda pid: "x"
    )
    assert ("student", None, "alice", 5_171_576_832) in readings[0]["procs"]  # type: ignore[operator]
    assert all(kind != "you" for kind, *_ in readings[0]["procs"])  # type: ignore[attr-defined]


def test_the_tick_and_the_status_page_number_the_gpu_by_its_device_node(tmp_path: pathlib.Path) -> None:
    use = gpuuse.read(nvml(), OWNERS, recorded_proc(tmp_path))
    assert use is not None and use.busy == {0} and use.by_user == {"alice": frozenset({0})}
    (figure,) = gpufigures.read(nvml())
    assert (figure.gpu, figure.name, figure.util) == (0, "NVIDIA H200", 100)
    assert (figure.memory_used, figure.memory_total) == (7_517_700_096, 150_754_820_096)


def test_nvidia_smis_csv_as_gpus_reads_it_on_a_cluster_agrees_with_nvml() -> None:
    (gpu,) = smi.parse(RECORDED["smi_csv"])
    assert gpu["name"] == "NVIDIA H200" and gpu["index"] == 0 and gpu["util"] == 100
    # nvidia-smi prints MiB: the total is NVML's to the byte; the processes' to the MiB.
    assert gpu["mem_total"] == RECORDED["nvml"][0]["memory"]["total"]
    by_pid = {pid: memory for _, pid, _, memory in gpu["procs"]}  # type: ignore[attr-defined]
    assert by_pid == {HOST_PID: 1608 * MIB, ALICE_PID: 4932 * MIB}
    assert {name for *_, name, _ in gpu["procs"]} == {"python3"}  # type: ignore[attr-defined]


def test_the_open_kernel_modules_version_line() -> None:
    assert driverfiles.parse_version(RECORDED["host"]["driver_version"]) == "580.159.04"
    assert RECORDED["driver"]["smi_version"] == "580.159.04"


def test_the_nodes_the_driver_calls_for_are_the_ones_it_made(tmp_path: pathlib.Path) -> None:
    gpus = tmp_path / "gpus"
    for path, text in RECORDED["host"]["gpus_information"].items():
        (gpus / path.split("/")[-2]).mkdir(parents=True)
        (gpus / path.split("/")[-2] / "information").write_text(text)
    nodes = tuple(
        sorted(
            gpudevices.Node(path.removeprefix("/dev/"), int(numbers[0]), int(numbers[1]))
            for path, mode_and_numbers in RECORDED["host"]["dev"].items()
            if mode_and_numbers.startswith("0o20") and gpudevices.is_nvidia_name(path.removeprefix("/dev/"))
            for numbers in [re.split("[ :]", mode_and_numbers)[1:]]
        )
    )
    host = gpudevices.GpuHost(
        nodes=nodes,
        proc_devices=RECORDED["host"]["proc_devices"],
        gpu_minors=gpudevices.gpu_minors(str(gpus)),
    )
    assert host.gpu_minors == (0,)
    assert [repr(node) for node in gpudevices.expected(host)] == RECORDED["gpudevices"]["expected"]
    assert not gpudevices.missing(host) and not gpudevices.wrong(host)
    # nvidia-uvm's major is the kernel's choice (238 there), never 195.
    assert {node.name: node.major for node in nodes} == {
        "nvidia0": 195, "nvidiactl": 195, "nvidia-uvm": 238, "nvidia-uvm-tools": 238,
    }  # fmt: skip


def test_the_gpu_nvidia_smi_shows_inside_is_the_one_the_members_report_names(tmp_path: pathlib.Path) -> None:
    """`gpus` on a cluster joins the two by UUID: nvidia-smi's and NVML's, the same on the real H200."""
    from gpushell.core import gpureport
    from gpushell.gpu import memberreading

    owner = {ALICE_PID: "gpushell-alice"}.get
    report = memberreading.read(nvml(), owner, int(time.time()))
    rows = smi.parse(RECORDED["smi_csv"])
    students = {"gpushell-alice": "alice"}
    (gpu,) = gpureport.with_neighbours(rows, report, time.time(), "gpushell-bob", students) or [{}]
    assert gpu["index"] == 0
    assert [proc for proc in gpu["procs"] if proc[0] != "you"] == [  # type: ignore[attr-defined]
        ("other", None, "", 1_686_110_208),
        ("student", None, "alice", 5_171_576_832),
    ]
