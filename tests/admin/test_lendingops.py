"""The admin side of GPU lending: tick, loans revoke, apply's loans step, the samples, the NVML look.

A fake backend that keeps each container's devices (and real `sleep`
processes standing in for programs holding a GPU node), stand-in GPU
nodes, and a stand-in NVML answering from recorded readings: no driver,
GPU or container here.  The registry is parsed from text and handed to
the tick in place of the registry file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gpushell.admin import commands, lendingops, loansview, samples
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core import usagereport
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.lending import Loan, LoanBook, Waiter
from gpushell.core.model import StatusPage
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.gpu import gpudevices, gpuuse
from gpushell.gpu.gpudevices import Node
from gpushell.system import loanstore, runner
from tests.fakes import FakeBackend

NOW = 1_700_000_000.0
HOUR = 3600.0
NODES = (
    Node("nvidia0", 195, 0),
    Node("nvidia1", 195, 1),
    Node("nvidia2", 195, 2),
    Node("nvidiactl", 195, 255),
    Node("nvidia-uvm", 509, 0),
)
SHARED = {"nvidiactl", "nvidia-uvm"}
ANN_IDS, BEN_IDS, CAL_IDS = 1_000_000, 1_065_536, 1_131_072


def registry(lending: str | None = "{gpus: [1, 2], idle_return: 1h}", cal_gpus: str = "[0]") -> Any:
    text = "" if lending is None else f"lending: {lending}\n"
    return parse(
        text
        + "users:\n"
        + f"  ann: {{port: 22001, ip: 10.0.3.2, idmap: {ANN_IDS}}}\n"
        + f"  ben: {{port: 22002, ip: 10.0.3.3, idmap: {BEN_IDS}}}\n"
        + f"  cal: {{port: 22003, ip: 10.0.3.4, idmap: {CAL_IDS}, gpus: {cal_gpus}}}\n",
        "/etc/gpushell.yaml",
    )


class DeviceBackend(FakeBackend):
    """The fake backend, plus each running container's device nodes and who holds them."""

    def __init__(self, states: dict[str, str]) -> None:
        super().__init__(states)
        self.devices: dict[str, set[str]] = {}
        self.holders: dict[tuple[str, str], list[subprocess.Popen[bytes]]] = {}
        self.stuck: set[str] = set()  # containers whose devices cannot be taken now

    def add_device(self, name: str, source: str, node: Node) -> None:
        self.calls.append(f"add {name} {node.name}")
        if self.state(name) == RUNNING:
            self.devices.setdefault(name, set()).add(node.name)

    def remove_device(self, name: str, node: Node) -> None:
        self.calls.append(f"remove {name} {node.name}")
        if name in self.stuck:
            raise GpushellError("the GPU could not be taken", f"{name}: /dev/{node.name} is busy")
        self.devices.get(name, set()).discard(node.name)

    def device_holders(self, name: str, node: Node) -> list[int]:
        return sorted(proc.pid for proc in self.holders.get((name, node.name), []) if proc.poll() is None)

    def hold(self, name: str, node: str) -> subprocess.Popen[bytes]:
        """A program in the container with the node open (a `sleep`, standing in)."""
        proc = subprocess.Popen(["sleep", "60"])
        self.holders.setdefault((name, node), []).append(proc)
        return proc


class Lab:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths = Paths(run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))
        self.reg = registry()
        self.driver = DeviceBackend({"ann": RUNNING, "ben": RUNNING, "cal": STOPPED})
        self.said: list[str] = []
        self.warned: list[str] = []
        self.nvml: Any = None
        self.usage: dict[int, dict[str, int]] = {}
        monkeypatch.setattr(lendingops.registry_store, "load_all", lambda paths: self.reg)
        monkeypatch.setattr(lendingops, "backend_for", lambda reg: self.driver)
        monkeypatch.setattr(gpudevices, "scan", lambda dev_dir: NODES)
        monkeypatch.setattr(lendingops, "GRACE", 2.0)
        monkeypatch.setattr(lendingops, "boot_time", lambda: NOW - 30 * 86400)
        monkeypatch.setattr(samples.cgroups, "read_usage", lambda pid, keys: self.usage.get(pid, {}))
        monkeypatch.setattr(lendingops.audit, "record", lambda *args, **kwargs: None)

    def book(self, loans: list[Loan], queue: list[Waiter] | None = None) -> None:
        loanstore.update(self.paths, lambda _: (LoanBook(loans, queue or ()), None))

    def read(self) -> LoanBook:
        return loanstore.read(self.paths)

    def tick(self, now: float = NOW) -> int:
        return lendingops.tick(
            self.paths, self.said.append, self.warned.append, now, self.driver, lambda: self.nvml
        )

    def samples(self) -> list[usagereport.Sample]:
        return samples.read(self.paths, None, None)[0]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    return Lab(tmp_path, monkeypatch)


def loan(user: str, gpu: int, ends: float, started: float = NOW - HOUR, **kwargs: Any) -> Loan:
    return Loan(user, gpu, started, ends, **kwargs)


# --- a stand-in NVML ------------------------------------------------------------------


class FakeNvml:
    """pynvml's calls the tick makes, answering from readings: minor -> PIDs, or an error."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: dict[int, list[int] | str], count_error: bool = False) -> None:
        self.gpus, self.count_error = sorted(gpus.items()), count_error
        self.shut_down = False

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error:
            raise self.NVMLError("driver gone")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[int, list[int] | str]:
        return self.gpus[index]

    def nvmlDeviceGetMinorNumber(self, handle: tuple[int, Any]) -> int:
        return handle[0]

    def _procs(self, handle: tuple[int, list[int] | str]) -> list[types.SimpleNamespace]:
        if isinstance(handle[1], str):
            raise self.NVMLError(handle[1])
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in handle[1]]

    nvmlDeviceGetComputeRunningProcesses = _procs

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: tuple[int, Any]) -> list[types.SimpleNamespace]:
        return []

    def nvmlDeviceGetName(self, handle: tuple[int, Any]) -> str:
        return "NVIDIA A100-SXM4-40GB"

    def nvmlDeviceGetUtilizationRates(self, handle: tuple[int, list[int] | str]) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=90 if handle[1] else 0)

    def nvmlDeviceGetMemoryInfo(self, handle: tuple[int, list[int] | str]) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=2**30 * len(handle[1]), total=40 * 2**30)

    def nvmlShutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recorded /proc/PID/status of the GPU processes: 4242 ann's, 5151 ben's, 777 the host's."""
    root = tmp_path / "proc"
    for pid, uid in {4242: ANN_IDS + 1000, 5151: BEN_IDS, 777: 998, 6161: CAL_IDS}.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "status").write_text(f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    monkeypatch.setattr(gpuuse, "PROC", str(root))
    return root


def test_nvml_use_names_busy_gpus_by_minor_and_whose_processes_they_are(proc: Path) -> None:
    nvml = FakeNvml({0: [6161], 1: [4242, 777], 2: [], 5: "GPU is lost"})
    use = gpuuse.read(nvml, gpuuse.owners(registry()))
    assert use == gpuuse.GpuUse(frozenset({0, 1, 5}), {"ann": frozenset({1}), "cal": frozenset({0})})


def test_nvml_that_cannot_count_its_gpus_gives_no_figures(proc: Path) -> None:
    reg = registry()
    assert gpuuse.read(FakeNvml({}, count_error=True), gpuuse.owners(reg)) is None
    nvml = FakeNvml({1: []})
    assert gpuuse.from_host(reg, lambda: nvml) == gpuuse.GpuUse(frozenset(), {})
    assert nvml.shut_down
    assert gpuuse.from_host(reg, lambda: None) is None


# --- tick: the end of a loan --------------------------------------------------------------


def test_an_expired_loan_loses_its_device_and_the_programs_holding_it(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW - 1)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    holder = lab.driver.hold("ann", "nvidia1")
    assert lab.tick() == 0
    assert lab.read().loans == ()
    assert holder.wait(timeout=5) == -15  # SIGTERM
    assert lab.driver.devices["ann"] == set()  # no GPU left: the shared nodes went too
    assert lab.said == ["expired: ann's loan of GPU 1"]
    assert (
        not os.path.exists(lendingops.taking_path(lab.paths))
        or lendingops.read_taking(lab.paths, print) == []
    )


def test_a_stopped_container_has_nothing_to_take(lab: Lab) -> None:
    lab.driver.states["ann"] = STOPPED
    lab.book([loan("ann", 1, ends=NOW - 1)])
    assert lab.tick() == 0
    assert [call for call in lab.driver.calls if call.startswith("remove")] == []
    assert lendingops.read_taking(lab.paths, print) == []


def test_a_device_that_cannot_be_taken_now_is_taken_at_a_later_tick(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW - 1)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    lab.driver.stuck.add("ann")
    assert lab.tick() == 1
    assert lab.read().loans == ()  # the book says it ended; the device waits in taking.json
    assert lendingops.read_taking(lab.paths, print) == [("ann", 1)]
    assert "not taken from ann's container yet" in lab.warned[0]
    lab.driver.stuck.clear()
    lab.warned.clear()
    assert lab.tick(NOW + 60) == 0
    assert lendingops.read_taking(lab.paths, print) == [] and lab.warned == []


def test_a_busy_student_lock_waits_for_the_next_tick(lab: Lab, monkeypatch) -> None:
    from gpushell.system.lock import locked

    monkeypatch.setattr(lendingops, "USER_WAIT", 0.05)
    lab.book([loan("ann", 1, ends=NOW - 1)])
    with locked(lab.paths.user_lock("ann")):
        assert lab.tick() == 1
    assert lendingops.read_taking(lab.paths, print) == [("ann", 1)]
    assert lab.tick(NOW + 60) == 0
    assert "remove ann nvidia1" in lab.driver.calls


def test_a_loan_noted_for_taking_but_still_in_the_book_is_left_alone(lab: Lab) -> None:
    """A tick killed between taking.json and the book: the loan is still the student's."""
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    lendingops.write_taking(lab.paths, [("ann", 1)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    lab.tick()
    assert lab.driver.devices["ann"] == {"nvidia1"} | SHARED
    assert lendingops.read_taking(lab.paths, print) == []


def test_a_damaged_taking_file_is_a_warning(lab: Lab) -> None:
    os.makedirs(lab.paths.state_dir, mode=0o700)
    Path(lendingops.taking_path(lab.paths)).write_text("{nonsense")
    lab.reg = registry(None)
    lab.book([loan("ann", 1, ends=NOW + HOUR)])  # lending off: revoked
    lab.tick()
    assert any("is damaged" in line for line in lab.warned)


def test_lending_turned_off_ends_every_loan(lab: Lab) -> None:
    lab.reg = registry(None)
    lab.book([loan("ann", 1, ends=NOW + HOUR)], [Waiter("ben", 1, 3600, NOW - 60)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    lab.tick()
    assert lab.read() == LoanBook()
    assert lab.driver.devices["ann"] == set()
    assert lab.said[0].startswith("ended: ann's loan of GPU 1 (the registry no longer lends it")


def test_a_take_left_over_is_retried_after_lending_was_turned_off(lab: Lab) -> None:
    lab.reg = registry(None)
    lab.book([])
    lendingops.write_taking(lab.paths, [("ann", 1)])
    lab.tick()
    assert "remove ann nvidia1" in lab.driver.calls
    assert lendingops.read_taking(lab.paths, print) == []


def test_no_lending_no_book_and_no_gpus_writes_the_status_page_alone(lab: Lab) -> None:
    lab.reg = registry(None, cal_gpus="none")
    assert lab.tick() == 0
    assert os.listdir(lab.paths.state_dir) == ["status-history.json"]
    assert sorted(os.listdir(lab.paths.status_dir)) == ["index.html", "status.json"]
    assert lab.said == lab.warned == []
    shutil.rmtree(lab.paths.state_dir)
    lab.reg = lab.reg.replace(status_page=StatusPage(enabled=False))
    assert lab.tick() == 0
    assert not os.path.exists(lab.paths.state_dir)
    assert os.listdir(lab.paths.status_dir) == []  # the page turned off: the old one removed


def test_a_page_that_cannot_be_written_is_one_warning_and_the_tick_goes_on(lab: Lab) -> None:
    lab.reg = registry(None, cal_gpus="none")
    os.makedirs(lab.paths.status_dir, mode=0o775)
    os.chmod(lab.paths.status_dir, 0o775)  # others may change it: refused
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    assert lab.tick() == 0
    assert len(lab.warned) == 1 and lab.warned[0].startswith("status page not written: refusing ")
    assert os.listdir(lab.paths.status_dir) == []
    assert os.listdir(os.path.join(lab.paths.state_dir, "samples"))  # the minute's samples still written


# --- tick: warnings, idle return, the line ---------------------------------------------------


def test_a_loan_near_its_end_is_warned_once_and_the_lab_notified(lab: Lab, monkeypatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(runner, "observers", [lambda argv: ran.append(list(argv))])
    lab.reg = registry("{gpus: [1, 2], notify_command: [/bin/true, --loan]}")
    lab.book([loan("ann", 1, ends=NOW + 600), loan("ben", 2, ends=NOW + 5 * HOUR)])
    lab.tick()
    assert [item.warned for item in lab.read().loans] == [True, False]
    assert ran == [["/bin/true", "--loan", "ann", "1", str(int(NOW + 600))]]
    assert lab.said == [f"warned: ann's GPU 1 goes back at {loansview.clock(NOW + 600)}"]
    lab.said.clear()
    lab.tick(NOW + 60)
    assert lab.said == [] and len(ran) == 1  # once


def test_a_failing_notify_command_is_a_warning_not_a_failure(lab: Lab) -> None:
    lab.reg = registry("{gpus: [1, 2], notify_command: /bin/false}")
    lab.book([loan("ann", 1, ends=NOW + 600)])
    assert lab.tick() == 0
    assert lab.read().loans[0].warned
    assert lab.warned == ["notify_command for ann (GPU 1) exited 1"]


def test_a_missing_notify_program_is_a_warning_too(lab: Lab) -> None:
    lab.reg = registry("{gpus: [1, 2], notify_command: /nonexistent/mailer}")
    lab.book([loan("ann", 1, ends=NOW + 600)])
    assert lab.tick() == 0
    assert lab.warned[0].startswith("notify_command for ann (GPU 1): running ['/nonexistent/mailer'")


def test_an_idle_loan_goes_back_when_nvml_shows_no_process(lab: Lab, proc: Path) -> None:
    lab.nvml = FakeNvml({0: [], 1: [], 2: []})
    lab.book([loan("ann", 1, ends=NOW + 5 * HOUR, started=NOW - 2 * HOUR)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    lab.tick()
    assert lab.read().loans == ()
    assert lab.said == ["returned idle: ann's GPU 1, no process for 2h"]
    assert lab.driver.devices["ann"] == set()


def test_a_used_loan_stays_and_its_idle_time_starts_again(lab: Lab, proc: Path) -> None:
    lab.nvml = FakeNvml({1: [4242], 2: []})
    lab.book([loan("ann", 1, ends=NOW + 5 * HOUR, started=NOW - 2 * HOUR)])
    lab.tick()
    (kept,) = lab.read().loans
    assert kept.last_used == NOW


def test_without_nvml_no_loan_counts_as_idle(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW + 5 * HOUR, started=NOW - 2 * HOUR)])
    lab.tick()
    assert [item.gpu for item in lab.read().loans] == [1]


def test_idle_time_from_before_a_boot_does_not_count(lab: Lab, proc: Path, monkeypatch) -> None:
    monkeypatch.setattr(lendingops, "boot_time", lambda: NOW - 600)
    lab.nvml = FakeNvml({1: [], 2: []})
    lab.book([loan("ann", 1, ends=NOW + 5 * HOUR, started=NOW - 3 * HOUR)])
    lab.tick()
    assert [item.gpu for item in lab.read().loans] == [1]
    assert lab.read().loans[0].last_used == NOW - 600


def test_boot_time_reads_btime(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1699990000\nprocesses 5\n")
    assert lendingops.boot_time(str(tmp_path / "stat")) == 1699990000.0
    assert lendingops.boot_time(str(tmp_path / "missing")) == 0.0


def test_a_gpu_freed_goes_to_the_line_at_the_next_tick(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW - 1)], [Waiter("ben", 1, 7200, NOW - 300)])
    lab.tick()
    assert lab.read().queue == () and [(item.user, item.gpu) for item in lab.read().loans] == [("ben", 2)]
    assert lab.driver.devices["ben"] == {"nvidia2"} | SHARED
    assert f"lent: GPU 2 to ben (from the line) until {loansview.clock(NOW + 7200)}" in lab.said


def test_a_young_loan_gets_its_device_even_if_its_helper_died_before_giving_it(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW + HOUR, started=NOW - 30)])
    lab.tick()
    assert lab.driver.devices["ann"] == {"nvidia1"} | SHARED
    lab.driver.devices.clear()
    lab.tick(NOW + lendingops.REGIVE + 60)  # old enough: no longer looked after
    assert lab.driver.devices == {}


# --- tick: samples -------------------------------------------------------------------------


def test_each_gpu_holder_gets_a_sample_a_minute(lab: Lab) -> None:
    lab.driver.states["cal"] = RUNNING
    from tests.fakes import INIT_PID

    lab.usage[INIT_PID] = {"cpu_ns": 5 * 10**9, "memory_bytes": 2**30}
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    lab.tick()
    ann, cal = lab.samples()
    assert ann == usagereport.Sample(NOW, "ann", (1,), ((1, int(NOW - HOUR)),), None, 5 * 10**9, 2**30)
    assert (cal.user, cal.gpus, cal.loans, cal.busy) == ("cal", (0,), (), None)
    month = samples.month_of(NOW)
    path = Path(lab.paths.state_dir) / "samples" / f"{month}.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_stopped_container_samples_only_its_loans(lab: Lab) -> None:
    lab.driver.states["ann"] = STOPPED
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    lab.tick()
    (ann,) = lab.samples()  # cal (own GPU 0, stopped) holds nothing
    assert (ann.user, ann.gpus, ann.cpu_ns, ann.memory) == ("ann", (1,), None, None)


def test_samples_say_which_held_gpus_ran_the_students_processes(lab: Lab, proc: Path) -> None:
    lab.driver.states["cal"] = RUNNING
    lab.nvml = FakeNvml({0: [], 1: [4242], 2: [5151, 777]})
    lab.book([loan("ann", 1, ends=NOW + HOUR), loan("ann", 2, ends=NOW + HOUR)])
    lab.tick()
    ann, cal = lab.samples()
    assert (ann.gpus, ann.busy) == ((1, 2), (1,))  # ben's process on GPU 2 is not ann's use
    assert (cal.gpus, cal.busy) == ((0,), ())


def test_the_sample_shows_what_was_held_during_the_minute_before_the_tick(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW - 1)])
    lab.tick()
    assert [(item.user, item.gpus) for item in lab.samples()] == [("ann", (1,))]
    lab.tick(NOW + 60)
    assert len(lab.samples()) == 1


def test_samples_that_cannot_be_written_are_a_warning(lab: Lab, monkeypatch) -> None:
    def refuse(paths: Paths, found: list[usagereport.Sample]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(samples, "append", refuse)
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    assert lab.tick() == 0
    assert lab.warned == ["usage samples not written: [Errno 28] No space left on device"]


def test_a_samples_file_that_is_not_roots_private_file_is_refused(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    folder = Path(lab.paths.state_dir) / "samples"
    folder.mkdir(mode=0o700)
    target = folder.parent / "elsewhere"
    (folder / f"{samples.month_of(NOW)}.jsonl").symlink_to(target)
    lab.tick()
    assert lab.warned and lab.warned[0].startswith("usage samples not written")
    assert not target.exists()


def test_a_thousand_students_and_64_gpus_tick_in_well_under_half_a_second(lab: Lab, monkeypatch) -> None:
    """The bench's case, in-process with the fake backend: the tick's own work, no LXC."""
    import time

    def entry(i: int) -> str:
        ids = ANN_IDS + i * 65536
        return f"  s{i:04d}: {{port: {20000 + i}, ip: 10.0.{i // 250}.{2 + i % 250}, idmap: {ids}}}\n"

    users = "".join(entry(i) for i in range(1000))
    lab.reg = parse(
        "subnet: 10.0.0.0/16\nports: 20000-21999\nlending: {gpus: all, max_per_student: 2}\nusers:\n" + users,
        "/etc/gpushell.yaml",
    )
    nodes = tuple(Node(f"nvidia{i}", 195, i) for i in range(64)) + NODES[3:]
    monkeypatch.setattr(gpudevices, "scan", lambda dev_dir: nodes)
    lab.driver = DeviceBackend({f"s{i:04d}": RUNNING for i in range(1000)})
    lab.book(
        [loan(f"s{i:04d}", i, ends=NOW + (i - 20) * 60, started=NOW - HOUR) for i in range(60)],
        [Waiter(f"s{i:04d}", 1, 3600, NOW - 60) for i in range(100, 200)],
    )
    began = time.perf_counter()
    lab.tick()
    elapsed = time.perf_counter() - began
    book = lab.read()
    # 21 ended (ends <= now), 39 kept, 4 GPUs never lent go to the first 4 in line (the 21 next tick).
    assert (len(book.loans), len(book.queue)) == (43, 96)
    assert sum(line.startswith("warned:") for line in lab.said) == 15
    assert len(lab.samples()) == 60
    assert elapsed < 0.5, elapsed


# --- revoke, apply, loans --------------------------------------------------------------------------


def test_revoke_ends_a_loan_as_an_expiry_does(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW + HOUR), loan("ben", 2, ends=NOW + HOUR)])
    lab.driver.devices["ann"] = {"nvidia1"} | SHARED
    holder = lab.driver.hold("ann", "nvidia1")
    assert lendingops.revoke(lab.paths, "ann", 1, lab.said.append, lab.warned.append) == 0
    assert [(item.user, item.gpu) for item in lab.read().loans] == [("ben", 2)]
    assert holder.wait(timeout=5) == -15
    assert lab.driver.devices["ann"] == set()
    assert lab.said == [f"revoked: ann's loan of GPU 1 (it was to end at {loansview.clock(NOW + HOUR)})"]


def test_revoking_a_gpu_not_lent_to_that_student_changes_nothing(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    with pytest.raises(GpushellError, match="GPU 1 is not lent to ben") as info:
        lendingops.revoke(lab.paths, "ben", 1, lab.said.append, lab.warned.append)
    assert info.value.status == ExitStatus.USAGE
    assert len(lab.read().loans) == 1 and lendingops.read_taking(lab.paths, print) == []


def test_apply_drops_ended_loans_and_puts_the_others_back(lab: Lab) -> None:
    lab.book([loan("ann", 1, ends=NOW - 60), loan("ben", 2, ends=NOW + HOUR, last_used=NOW - HOUR)])
    assert lendingops.expired_text(lab.paths, NOW) == [
        f"would drop ann's loan of GPU 1, which ended at {loansview.clock(NOW - 60)}"
    ]
    assert lendingops.restore(lab.paths, lab.reg, lab.said.append, lab.warned.append, NOW) == 0
    (kept,) = lab.read().loans
    assert (kept.user, kept.gpu, kept.last_used) == ("ben", 2, NOW)  # idle time counts from now
    assert lab.driver.devices["ben"] == {"nvidia2"} | SHARED
    assert lab.said == [f"done: drop ann's loan of GPU 1, which ended at {loansview.clock(NOW - 60)}"]


def test_apply_without_lending_imports_nothing_of_lendings(tmp_path: Path) -> None:
    code = (
        "import sys; from gpushell.admin import apply; from gpushell.core.registry import parse; "
        "from gpushell.core.paths import Paths; "
        "reg = parse('users: {}\\n', '/etc/gpushell.yaml'); "
        f"assert apply.restore_loans(reg, Paths(state_dir={str(tmp_path)!r}), print, print) == 0; "
        "assert apply.loans_dry_run(reg, Paths()) == []; "
        "print(sorted(m for m in sys.modules if 'lending' in m or 'loan' in m))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_loans_table_and_json(lab: Lab) -> None:
    book = LoanBook(
        [loan("ann", 1, ends=NOW + 90 * 60, warned=True), loan("ben", 2, ends=NOW - 5)],
        [Waiter("cal", 2, 7200, NOW - 120)],
    )
    lines = loansview.render(book, NOW).splitlines()
    assert lines[0].split() == ["USER", "GPU", "STARTED", "ENDS", "LEFT", "WARNED"]
    assert lines[1].split()[:2] == ["ann", "1"] and lines[1].split()[-3:] == ["1h", "30m", "yes"]
    assert lines[2].split()[-2:] == ["ended", "no"]
    assert lines[4].split()[:4] == ["PLACE", "USER", "GPUS", "FOR"]
    assert lines[5].split()[:4] == ["1", "cal", "2", "2h"]
    assert loansview.render(LoanBook(), NOW) == "no GPU is lent\n\nnobody is waiting\n"
    data = json.loads(loansview.to_json(book, NOW))
    assert data["loans"][0] == {
        "user": "ann", "gpu": 1, "started": int(NOW - HOUR), "ends": int(NOW + 5400), "seconds_left": 5400,
        "warned": True, "last_used": int(NOW - HOUR),
    }  # fmt: skip
    assert data["queue"] == [
        {"place": 1, "user": "cal", "count": 2, "duration": 7200, "since": int(NOW - 120)}
    ]


def test_a_clusters_loans_table_names_each_loans_member_and_places_in_its_line() -> None:
    book = LoanBook(
        [loan("ann", 1, ends=NOW + 3600), loan("bea", 1, ends=NOW + 3600)],  # GPU 1 of m1 and of m2
        [Waiter("cal", 1, 600, NOW - 60), Waiter("dan", 1, 600, NOW - 30), Waiter("eve", 1, 600, NOW)],
    )
    members = {"ann": "m1", "bea": "m2", "cal": "m2", "dan": "m1", "eve": "m2"}
    lines = loansview.render(book, NOW, members).splitlines()
    assert lines[0].split() == ["USER", "MEMBER", "GPU", "STARTED", "ENDS", "LEFT", "WARNED"]
    assert [line.split()[:3] for line in lines[1:3]] == [["ann", "m1", "1"], ["bea", "m2", "1"]]
    assert lines[4].split()[:3] == ["PLACE", "USER", "MEMBER"]
    assert [line.split()[:3] for line in lines[5:]] == [
        ["1", "cal", "m2"],
        ["1", "dan", "m1"],
        ["2", "eve", "m2"],
    ]


# --- the commands ----------------------------------------------------------------------------------


def run_admin(lab: Lab, *argv: str) -> int:
    args = commands.build_parser().parse_args(list(argv), namespace=commands.Options())
    return int(args.run(lab.paths, args))


def test_report_sums_the_samples_of_the_days_asked(lab: Lab, capsys) -> None:
    day = commands.day_start("2024-06-10")
    found = [
        usagereport.Sample(day + i * 60, "ann", (1,), ((1, int(day)),), None, None, None) for i in range(120)
    ]
    found.append(usagereport.Sample(day - 60, "ann", (1,), ((1, int(day - 3600)),), None, None, None))
    samples.append(lab.paths, found[:-1])
    samples.append(lab.paths, found[-1:])
    assert run_admin(lab, "report", "--since", "2024-06-10", "--until", "2024-06-10", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == data["until"] == "2024-06-10"
    (ann,) = data["students"]
    assert (ann["gpu_hours_held"], ann["gpu_hours_busy"], ann["loans"]) == (2.0, None, 1)
    assert run_admin(lab, "report", "--csv") == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("ann,2.0167,unknown,2.0167,2,")
    with pytest.raises(GpushellError, match="one of --json and --csv"):
        run_admin(lab, "report", "--json", "--csv")


def test_report_skips_a_torn_line_and_says_so(lab: Lab, capsys) -> None:
    samples.append(lab.paths, [usagereport.Sample(NOW, "ann", (1,), (), None)])
    path = Path(lab.paths.state_dir) / "samples" / f"{samples.month_of(NOW)}.jsonl"
    with path.open("a") as stream:
        stream.write('{"t": 17000')
    assert run_admin(lab, "report") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[0] == "ann"
    assert "1 line(s) of the samples were not samples" in err


def test_report_with_no_samples_yet(lab: Lab, capsys) -> None:
    assert run_admin(lab, "report") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(no samples in this period)"


def test_loans_command_shows_the_book_and_revoke_ends_one(lab: Lab, capsys) -> None:
    lab.book([loan("ann", 1, ends=NOW + HOUR)])
    assert run_admin(lab, "loans") == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["ann", "1"]
    assert run_admin(lab, "loans", "revoke", "ann", "1") == 0
    assert capsys.readouterr().out.startswith("revoked: ann's loan of GPU 1")
    assert lab.read().loans == ()
    assert run_admin(lab, "loans", "--json") == 0
    assert json.loads(capsys.readouterr().out)["loans"] == []


def test_each_finished_tick_leaves_its_time_for_doctor(lab: Lab) -> None:
    assert lendingops.last_tick(lab.paths) is None  # none since boot
    assert lab.tick(NOW) == 0
    assert lendingops.last_tick(lab.paths) == NOW
    assert lab.tick(NOW + 60) == 0
    assert lendingops.last_tick(lab.paths) == NOW + 60
    with open(lendingops.tick_stamp(lab.paths), "w", encoding="ascii") as stream:
        stream.write("yesterday\n")
    assert lendingops.last_tick(lab.paths) is None  # not a time: no evidence of a tick
