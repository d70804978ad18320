"""The GPU table: NVML readings -> classified rows -> answer lines -> what a student reads.

There is no NVIDIA driver or GPU on the machines these tests run on, so
pynvml cannot answer here.  `FakeNvml` stands in for the pynvml module:
it has the same function names, constant and exception class, and
replays the readings in data/nvml_readings.json (written by hand in
pynvml's shape: two GPUs with processes of two students and one host
process, a third GPU that raises an NVML error).  Readings recorded on a
real GPU go through the same stand-in in test_real_gpu_replay.py.  The
gathering functions take the NVML object as an argument precisely so that
this stand-in can be passed.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import types
from typing import Any

import pytest

from gpushell.core import gputable, protocol
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.gpu import gpucache, gpustatus
from gpushell.student import tables
from gpushell.student.banner import PLAIN, Palette

DATA = json.loads((pathlib.Path(__file__).parents[1] / "data/nvml_readings.json").read_text())
# Each student's host id range, as the registry gives it (idmap .. idmap + idmap_size).
ALICE_IDS, BOB_IDS, SIZE = 1_000_000, 1_065_536, 65_536
OWNERS = gpustatus.Owners(
    {"gpushell-alice": "alice", "gpushell-bob": "bob"},
    [(ALICE_IDS, SIZE, "alice"), (BOB_IDS, SIZE, "bob")],
)
# The recorded processes' host uids (fake data in the shape of /proc/PID/status; no
# NVIDIA driver here): alice's python as her container's uid 1000, bob's as root and
# 1000, the host's ollama as a host user.  Their cgroups (recorded) agree, but are not asked.
UIDS = {"4242": ALICE_IDS + 1000, "5151": BOB_IDS, "5152": BOB_IDS + 1000, "777": 998}


def status_text(uid: int, fs_uid: int | None = None) -> str:
    return (
        "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\n"
        f"PPid:\t1\nUid:\t{uid}\t{uid}\t{uid}\t{uid if fs_uid is None else fs_uid}\n"
        f"Gid:\t{uid}\t{uid}\t{uid}\t{uid}\nFDSize:\t64\n"
    )


GIB = 1024**3


class FakeNvml:
    """The part of pynvml that gpustatus uses, answering from recorded readings."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.gpus = recorded["gpus"]
        self.shut_down = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        gpu = self.gpus[index]
        if "handle_error" in gpu:
            raise self.NVMLError(gpu["handle_error"])
        return gpu

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> bytes:
        return handle["name"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetMinorNumber(self, handle: dict[str, Any]) -> int:
        return int(handle["minor"]) if "minor" in handle else self.gpus.index(handle)

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        if "uuid" not in handle:
            raise self.NVMLError("Not Supported")
        return str(handle["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> types.SimpleNamespace:
        return types.SimpleNamespace(**handle["memory"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> types.SimpleNamespace:
        if "error" in handle["utilization"]:
            raise self.NVMLError(handle["utilization"]["error"])
        return types.SimpleNamespace(**handle["utilization"])

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return int(handle["temperature"])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict[str, Any]) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(**proc) for proc in handle["compute_processes"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: dict[str, Any]) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(**proc) for proc in handle["graphics_processes"]]

    def nvmlShutdown(self) -> None:
        self.shut_down = True


def fake_proc(tmp_path: pathlib.Path) -> str:
    """A /proc stand-in holding the recorded cgroup and comm files."""
    for pid, text in DATA["cgroups"].items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cgroup").write_text(text)
        (tmp_path / pid / "comm").write_text(DATA["comms"][pid] + "\n")
        (tmp_path / pid / "status").write_text(status_text(UIDS[pid]))
    return str(tmp_path)


def answer_for(caller: str, tmp_path: pathlib.Path) -> dict[str, str]:
    proc = fake_proc(tmp_path)
    readings = gpustatus.gather(FakeNvml(DATA))
    table = gpustatus.classify(
        readings,
        caller,
        lambda pid: gpustatus.pid_owner(pid, OWNERS, proc),
        lambda pid: gpustatus.pid_command(pid, proc),
    )
    # Through the real wire format, as the shell gets it.
    return protocol.decode(protocol.encode(gputable.encode(table)))


def test_gather_reads_each_gpu_and_turns_a_failing_one_into_an_error_reading():
    nvml = FakeNvml(DATA)
    readings = gpustatus.gather(nvml)
    assert readings[0] == {
        "index": 0, "name": "NVIDIA A100-SXM4-40GB", "util": 87, "mem_used": 12 * GIB,
        "mem_total": 40 * GIB, "temp": 61, "procs": [(777, GIB), (4242, 8 * GIB), (5151, 3 * GIB)],
        "error": None,
    }  # fmt: skip
    # Utilisation not supported: unknown, not an error; a PID in both lists once, with its memory.
    assert readings[1]["util"] is None
    assert readings[1]["procs"] == [(5152, 2 * GIB)]
    assert readings[2] == {"index": 2, "error": "GPU is lost"}


def test_status_answer_shuts_nvml_down_and_without_nvml_says_no_driver():
    nvml = FakeNvml(DATA)
    answer = gpustatus.status_answer(nvml, "alice", OWNERS)
    assert nvml.shut_down
    assert answer["gpus"] == 3
    assert gpustatus.status_answer(None, "alice", OWNERS) == {"state": "no-driver"}


def test_count_failure_is_one_error():
    nvml = FakeNvml(DATA)
    nvml.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(FakeNvml.NVMLError("Unknown Error"))  # type: ignore[method-assign]
    with pytest.raises(GpushellError) as info:
        gpustatus.gather(nvml)
    assert info.value.user_message == "the GPUs did not answer"


def test_the_wire_form_for_alice(tmp_path):
    answer = answer_for("alice", tmp_path)
    assert answer == {
        "state": "ok",
        "gpus": "3",
        "gpu0": "0|NVIDIA A100-SXM4-40GB|87|12288|40960|61",
        "gpu0.procs": "3",
        "gpu0.proc0": "other|||1024",
        "gpu0.proc1": "you|4242|python3|8192",
        "gpu0.proc2": "student||bob|3072",
        "gpu1": "1|NVIDIA A100-SXM4-40GB||2048|40960|38",
        "gpu1.procs": "1",
        "gpu1.proc0": "student||bob|2048",
        "gpu2.error": "2|GPU is lost",
    }


def test_another_students_process_never_shows_its_pid_or_command(tmp_path):
    answer = answer_for("alice", tmp_path)
    text = "".join(f"{key}={value}\n" for key, value in answer.items())
    for secret in ("5151", "5152", "jupyter", "evil", "train.py", "777", "ollama"):
        assert secret not in text


def test_the_wire_form_for_bob_cleans_his_command_name(tmp_path):
    answer = answer_for("bob", tmp_path)
    assert answer["gpu0.proc1"] == "student||alice|8192"
    # His own command name had the separator and an escape sequence: both replaced.
    assert answer["gpu0.proc2"] == "you|5151|python?evil?[2J|3072"
    assert answer["gpu1.proc0"] == "you|5152|train.py|2048"


def test_render_for_alice(tmp_path):
    text = tables.gpu_table(answer_for("alice", tmp_path), PLAIN)
    assert text.splitlines() == [
        "GPU Name                      Util            Memory  Temp  Processes",
        "0   NVIDIA A100-SXM4-40GB     87 %   12288/40960 MiB  61 C  other 1024 MiB; "
        "[1] you: pid 4242 python3 8192 MiB; bob 3072 MiB",
        "1   NVIDIA A100-SXM4-40GB        ?    2048/40960 MiB  38 C  bob 2048 MiB",
        "2   did not answer: GPU is lost",
    ]


def test_render_numbers_own_processes_in_order(tmp_path):
    answer = answer_for("bob", tmp_path)
    rows = gputable.decode(answer)
    assert gputable.own_pids(rows) == [5151, 5152]
    text = tables.gpu_table(answer, Palette(bold="<B>", good="<G>", bad="<R>", dim="<D>", reset="</>"))
    assert "<G>[1] you: pid 5151 python?evil?[2J 3072 MiB</>" in text
    assert "<G>[2] you: pid 5152 train.py 2048 MiB</>" in text
    assert "<R>did not answer: GPU is lost</>" in text


def test_render_without_a_driver_is_one_line():
    assert tables.gpu_table({"state": "no-driver"}, PLAIN) == "no NVIDIA driver/GPU on this host\n"


@pytest.mark.parametrize(
    "answer",
    [
        {"state": "ok", "gpus": "1"},
        {"state": "ok", "gpus": "1", "gpu0": "0|x|1"},
        {"state": "ok", "gpus": "2", "gpu0": "0|A|1|2|3|4", "gpu0.procs": "9", "gpu0.proc0": "root|1|2|3"},
        {"state": "ok", "gpus": "99999999999"},
        {"state": "ok", "gpus": "-1"},
    ],
)
def test_malformed_answers_render_without_a_crash(answer):
    text = tables.gpu_table(answer, PLAIN)
    assert text.endswith("\n")
    assert "Traceback" not in text


def test_field_never_carries_a_separator_or_control_character():
    assert gputable.field("a|b\nc\x1b") == "a?b?c?"
    assert gputable.field(None) == ""
    assert len(gputable.field("x" * 500)) == gputable.MAX_FIELD


def test_encode_refuses_an_unknown_kind():
    with pytest.raises(ValueError):
        gputable.encode([{"index": 0, "name": "x", "procs": [("root", 1, "sh", 0)]}])


def test_uids_of_reads_the_four_uids():
    assert gpustatus.uids_of(status_text(1_001_000)) == (1_001_000,) * 4
    assert gpustatus.uids_of("Name:\tx\nUid:\t1\t2\n") is None
    assert gpustatus.uids_of("Name:\tx\nUid:\t1\t2\t3\tfour\n") is None
    assert gpustatus.uids_of("") is None


def test_a_process_is_its_students_by_its_uids_not_its_cgroup(tmp_path):
    proc = fake_proc(tmp_path)
    # Bob's process, in a cgroup that names alice's container: still bob's.
    (tmp_path / "5151" / "cgroup").write_text("0::/lxc.payload.gpushell-alice\n")
    assert gpustatus.pid_owner(5151, OWNERS, proc) == "bob"
    # A host process in a cgroup named like alice's container: nobody's.
    (tmp_path / "777" / "cgroup").write_text("0::/lxc.payload.gpushell-alice\n")
    assert gpustatus.pid_owner(777, OWNERS, proc) is None
    # One uid of another range (a setfsuid across): nobody's, not half of each.
    (tmp_path / "4242" / "status").write_text(status_text(ALICE_IDS, fs_uid=BOB_IDS))
    assert gpustatus.pid_owner(4242, OWNERS, proc) is None
    # The first id past a range belongs to the next one, the last id in it to it.
    assert OWNERS.by_uid(ALICE_IDS + SIZE - 1) == "alice" and OWNERS.by_uid(ALICE_IDS + SIZE) == "bob"
    assert gpustatus.pid_owner(99999, OWNERS, proc) is None  # gone
    assert gpustatus.pid_owner(4242, dict(OWNERS), proc) is None  # no ranges known: no guess


class GpuUsers:
    """An NVML stand-in whose only GPU process is `pid`."""

    class NVMLError(Exception):
        pass

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "fake"

    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=0, total=1)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        raise self.NVMLError("not supported")

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        raise self.NVMLError("not supported")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=self.pid, usedGpuMemory=1)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[types.SimpleNamespace]:
        return []

    def nvmlShutdown(self) -> None:
        pass


def test_kill_signals_only_a_process_in_the_callers_id_range(tmp_path):
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / str(child.pid)).mkdir()
        status = tmp_path / str(child.pid) / "status"
        status.write_text(status_text(BOB_IDS + 1000))
        with pytest.raises(GpushellError) as refused:
            gpustatus.kill(child.pid, ALICE_IDS, SIZE, lambda: GpuUsers(child.pid), str(tmp_path))
        assert refused.value.user_message == f"process {child.pid} is not in your container"
        assert child.poll() is None
        status.write_text(status_text(ALICE_IDS + 1000))
        answer = gpustatus.kill(child.pid, ALICE_IDS, SIZE, lambda: GpuUsers(child.pid), str(tmp_path))
        assert answer == {"state": "ok", "killed": child.pid}
        assert child.wait(5) == -15
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("text", ["1", "4242\n", "9999999"])
def test_parse_pid_accepts(text):
    assert gpustatus.parse_pid(text) == int(text)


@pytest.mark.parametrize(
    "text",
    ["", "\n", "0", "0\n", "12345678", "-1", "+1", "1 ", " 1", "1\n\n", "12;id", "\u0663", "1\r\n", "0x1"],
)
def test_parse_pid_refuses(text):
    with pytest.raises(GpushellError) as info:
        gpustatus.parse_pid(text)
    assert info.value.user_message == "not a process number"


# --- the snapshot behind the login banner (gpucache), from the same readings ------


def table_for(caller: str, tmp_path: pathlib.Path) -> list[dict[str, object]]:
    proc = fake_proc(tmp_path)
    return gpustatus.classify(
        gpustatus.gather(FakeNvml(DATA)),
        caller,
        lambda pid: gpustatus.pid_owner(pid, OWNERS, proc),
        lambda pid: gpustatus.pid_command(pid, proc),
    )


@pytest.mark.parametrize("caller", ["alice", "bob", ""])  # "": the background refresh, nobody's view
def test_snapshot_counts_students_per_gpu_whoever_asked(caller, tmp_path):
    lines = gpucache.snapshot(table_for(caller, tmp_path), 1712345678)
    assert lines == {
        "taken": 1712345678,
        "gpu_state": "ok",
        "gpu_count": 3,
        "gpu.0": "0|87|12288|40960|61|2",  # alice and bob; the host's ollama is nobody's
        "gpu.1": "1||2048|40960|38|1",  # bob
        "gpu.2.error": "2|GPU is lost",
    }
    text = protocol.encode(lines)
    for private in ("alice", "bob", "4242", "5151", "5152", "777", "python", "train.py", "ollama", "jupyter"):
        assert private not in text


def test_gpus_answer_writes_the_snapshot_from_the_same_reading(tmp_path):
    paths = Paths(run_dir=str(tmp_path))
    nvml = FakeNvml(DATA)
    asked: list[str] = []

    def owners() -> dict[str, str]:
        asked.append("owners")
        return OWNERS

    answer = gpucache.gpus_answer(paths, "alice", owners, lambda: nvml)
    assert nvml.shut_down and asked == ["owners"]
    assert answer["state"] == "ok" and answer["gpus"] == 3 and answer["gpu2.error"] == "2|GPU is lost"
    snapshot = tmp_path / "gpus.snapshot"
    info = snapshot.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    lines = protocol.decode(snapshot.read_text())
    assert (lines["gpu_state"], lines["gpu_count"], lines["gpu.2.error"]) == ("ok", "3", "2|GPU is lost")
    assert lines["gpu.0"].startswith("0|87|12288|40960|61|")
    assert os.listdir(tmp_path) == ["gpus.snapshot"]


def test_gpus_answer_without_a_driver_or_with_nvml_failing_records_so(tmp_path):
    paths = Paths(run_dir=str(tmp_path))
    snapshot = tmp_path / "gpus.snapshot"
    never = lambda: pytest.fail("owners asked without NVML")  # noqa: E731
    assert gpucache.gpus_answer(paths, "alice", never, lambda: None) == {"state": "no-driver"}
    assert protocol.decode(snapshot.read_text())["gpu_state"] == "no-driver"

    nvml = FakeNvml(DATA)
    nvml.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(FakeNvml.NVMLError("Unknown Error"))  # type: ignore[method-assign]
    with pytest.raises(GpushellError):
        gpucache.gpus_answer(paths, "alice", never, lambda: nvml)
    assert protocol.decode(snapshot.read_text())["gpu_state"] == "error"
    assert nvml.shut_down


def test_gpus_answers_even_when_the_snapshot_cannot_be_written(tmp_path):
    paths = Paths(run_dir=str(tmp_path / "missing"))
    assert gpucache.gpus_answer(paths, "alice", dict, lambda: None) == {"state": "no-driver"}
