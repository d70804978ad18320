"""A stored day of a four-GPU host, replayed for the status page's tests.

There is no GPU or NVIDIA driver where the tests run.  data/status_day.json
holds a made-up day of readings in NVML's units, not a capture from real
hardware (every 10 minutes: each GPU's utilization
and memory, the host's CPU and memory); `DayNvml` answers pynvml's calls
from the reading of one moment, so the figures reach the page through
gpufigures.read, the way a tick reads a real GPU.  `replay` runs the day
minute by minute, each reading standing for its 10 minutes, and returns
the history and the document of the day's last minute.
"""

from __future__ import annotations

import json
import pathlib
import types
from typing import Any

from gpushell.core import gpuhistory, statusmodel
from gpushell.core.lending import LoanBook
from gpushell.core.model import Registry
from gpushell.core.statusmodel import HostFigures
from gpushell.gpu import gpufigures

DAY: dict[str, Any] = json.loads((pathlib.Path(__file__).parent / "data/status_day.json").read_text())
STEP = DAY["step_minutes"]
READINGS = len(DAY["host"]["cpu"])
MINUTES = READINGS * STEP
FIRST_MINUTE = DAY["start"] // 60
LAST = (FIRST_MINUTE + MINUTES - 1) * 60  # the day's last minute, epoch seconds
GPUS = [gpu["minor"] for gpu in DAY["gpus"]]


class DayNvml:
    """The part of pynvml gpufigures uses, answering with the day's reading number `at`."""

    class NVMLError(Exception):
        pass

    def __init__(self, at: int) -> None:
        self.at = at
        self.shut_down = False

    def nvmlDeviceGetCount(self) -> int:
        return len(DAY["gpus"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        gpu: dict[str, Any] = DAY["gpus"][index]
        if "handle_error" in gpu:
            raise self.NVMLError(gpu["handle_error"])
        return gpu

    def nvmlDeviceGetMinorNumber(self, handle: dict[str, Any]) -> int:
        return int(handle["minor"])

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> bytes:
        return str(handle["name"]).encode()  # older pynvml returns bytes

    def _recorded(self, handle: dict[str, Any], key: str) -> Any:
        value = handle[key][self.at]
        if value is None:
            raise self.NVMLError("Unknown Error")
        return value

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=self._recorded(handle, "util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> types.SimpleNamespace:
        used = self._recorded(handle, "memory_used")
        total = handle["memory_total"]
        return types.SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlShutdown(self) -> None:
        self.shut_down = True


def host_at(minute: int) -> HostFigures:
    """The host's figures in the day's minute number `minute`: CPU seconds summed from the recorded use."""
    host = DAY["host"]
    per_minute = host["cpus"] * 60  # CPU seconds in a minute
    busy = sum(host["cpu"][m // STEP] for m in range(minute + 1)) / 100 * per_minute
    return HostFigures(
        cpu_times=(busy, (minute + 1) * per_minute),
        cpus=host["cpus"],
        load=host["load"],
        memory_used=host["memory_used"][minute // STEP],
        memory_total=host["memory_total"],
        disk_used=host["disk_used"],
        disk_total=host["disk_total"],
        running=host["running"],
        logged_in=host["logged_in"],
    )


def day_history() -> gpuhistory.History:
    """The history a tick each minute would have kept, up to (not with) the day's last minute."""
    history = gpuhistory.EMPTY
    for offset in range(MINUTES - 1):
        host = host_at(offset)
        cpu = statusmodel.cpu_use(history.cpu, host.cpu_times)
        figures = statusmodel.figures(gpufigures.read(DayNvml(offset // STEP)), host, cpu)
        history = gpuhistory.record(history, FIRST_MINUTE + offset, figures, host.cpu_times)
    return history


def last_minute() -> tuple[list[statusmodel.GpuReading], HostFigures]:
    """What the tick of the day's last minute reads."""
    return gpufigures.read(DayNvml(READINGS - 1)), host_at(MINUTES - 1)


def replay(reg: Registry, book: LoanBook) -> tuple[gpuhistory.History, dict[str, object]]:
    readings, host = last_minute()
    return statusmodel.page(reg, book, day_history(), {"": readings}, host, {"": GPUS}, LAST)
