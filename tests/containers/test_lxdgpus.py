"""`gpus` and `kill-gpu-process` on a cluster, around a stand-in for the engine.

The engine's side (exec, the file API) is exercised for real by
tests/integration/test_cluster.py; here: what each of its answers makes of
the request, and that nothing is signalled that the reading did not list.
"""

from __future__ import annotations

import time

import pytest

from gpushell.containers import lxdgpus
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.containers.lxd import LxdDriver
from gpushell.core import gpureport, gputable
from gpushell.core.errors import GpushellError
from gpushell.core.gpureport import GpuReport, ReportedGpu
from gpushell.core.model import User
from gpushell.core.registry import parse
from tests.fakes import ONE_MEMBER_CLUSTER

FIGURES = b"0, GPU-a, Stand-in GPU, 12, 300, 16000, 40\n--\nGPU-a, 4242, 300, /usr/bin/python3\n"


class Engine(LxdDriver):
    """The engine as gpushell sees it: a state, exec statuses, and the file nvidia-smi wrote."""

    def __init__(
        self, state: str = RUNNING, statuses: tuple[int, ...] = (0, 0), figures: bytes = FIGURES
    ) -> None:
        super().__init__(parse(ONE_MEMBER_CLUSTER, "/etc/gpushell.yaml"))
        self.state_now, self.statuses, self.figures = state, list(statuses), figures
        self.ran: list[list[str]] = []
        self.pulled: list[tuple[str, int]] = []
        self.reports: dict[str, GpuReport | None] | GpushellError = {}

    def state(self, name: str) -> str:
        return self.state_now

    def run_inside(self, name: str, command: list[str], timeout: float = 90.0) -> int:
        self.ran.append(command)
        return self.statuses.pop(0)

    def client(self, name: str | None = None) -> Engine:  # type: ignore[override]
        return self

    def pull_file(self, instance: str, path: str, limit: int) -> bytes:
        self.pulled.append((path, limit))
        return self.figures

    def gpu_reports(self) -> dict[str, GpuReport | None]:
        if isinstance(self.reports, GpushellError):
            raise self.reports
        return self.reports


def alice(engine: Engine) -> User:
    return engine.reg.users["alice"]


def test_the_answer_is_the_one_host_table_seen_from_the_container() -> None:
    engine = Engine()
    answer = lxdgpus.answer(engine, alice(engine), {})
    assert answer["seen_from"] == gputable.SEEN_FROM_CONTAINER
    assert (
        answer["gpu0"] == "0|Stand-in GPU|12|300|16000|40" and answer["gpu0.proc0"] == "you|4242|python3|300"
    )
    assert engine.pulled == [(lxdgpus.FIGURES, lxdgpus.MAX_FIGURES)]


MIB = 1024 * 1024
# m1's report: GPU-a is its GPU 1, with alice's processes, bob's and the host's on it.
ON_GPU_1 = (("alice", 300 * MIB), ("gpushell-bob", 2048 * MIB), ("", 1024 * MIB))
SHARED = ReportedGpu(1, "Stand-in GPU", 12, 3372 * MIB, 16000 * MIB, 40, ON_GPU_1, uuid="GPU-a")


def report(*gpus: ReportedGpu, taken: float | None = None) -> dict[str, GpuReport | None]:
    return {"m1": GpuReport(int(time.time() if taken is None else taken), gpureport.OK, gpus)}


def test_a_fresh_report_numbers_the_gpus_as_the_member_does_and_names_the_neighbours() -> None:
    engine = Engine()
    engine.reports = report(ReportedGpu(0, uuid="GPU-z"), SHARED)
    answer = lxdgpus.answer(engine, alice(engine), {"alice": "alice", "gpushell-bob": "bob"})
    assert answer["seen_from"] == gputable.SEEN_FROM_MEMBER
    assert answer["gpu0"] == "1|Stand-in GPU|12|300|16000|40"  # the container's own figures, m1's number
    procs = [answer[f"gpu0.proc{n}"] for n in range(int(answer["gpu0.procs"]))]  # type: ignore[call-overload]
    assert procs == ["you|4242|python3|300", "student||bob|2048", "other|||1024"]  # alice's own: from inside


@pytest.mark.parametrize(
    "reports",
    [
        pytest.param(report(ReportedGpu(1, uuid="GPU-b")), id="a-gpu-the-report-does-not-name"),
        pytest.param(report(SHARED.replace(uuid=None)), id="an-older-report-without-uuids"),
        pytest.param(report(SHARED, taken=time.time() - 600), id="a-stale-report"),
        pytest.param({}, id="no-report"),
        pytest.param(GpushellError("the cluster did not answer"), id="the-engine-failing"),
    ],
)
def test_otherwise_the_container_view_stands_alone(
    reports: dict[str, GpuReport | None] | GpushellError,
) -> None:
    engine = Engine()
    engine.reports = reports
    answer = lxdgpus.answer(engine, alice(engine), {"gpushell-bob": "bob"})
    assert answer["seen_from"] == gputable.SEEN_FROM_CONTAINER
    assert answer["gpu0"].startswith("0|") and answer["gpu0.procs"] == 1  # type: ignore[union-attr]


def test_no_nvidia_smi_is_no_driver_and_a_stopped_container_is_one_line() -> None:
    engine = Engine(statuses=(1,))
    assert lxdgpus.answer(engine, alice(engine), {}) == {"state": gputable.NO_DRIVER}
    assert engine.pulled == []  # nothing read back from a run that failed
    stopped = Engine(state=STOPPED)
    with pytest.raises(GpushellError, match="your container is stopped"):
        lxdgpus.answer(stopped, alice(stopped), {})
    assert stopped.ran == []


def test_kill_signals_only_a_process_the_reading_lists() -> None:
    engine = Engine()
    assert lxdgpus.kill(engine, alice(engine), 4242) == {"state": "ok", "killed": 4242}
    assert engine.ran[-1] == ["kill", "-TERM", "4242"]
    for pid in (1, 4243):
        other = Engine()
        with pytest.raises(GpushellError, match=f"process {pid} is not using a GPU"):
            lxdgpus.kill(other, alice(other), pid)
        assert len(other.ran) == 1  # the reading only: no kill
    failed = Engine(statuses=(0, 1))
    with pytest.raises(GpushellError, match="could not be signalled"):
        lxdgpus.kill(failed, alice(failed), 4242)
