"""A cluster member's GPUs as its NVML shows them: the report `publish-gpus` writes (member side, root).

The same NVML readings as on one host (gpustatus.read_gpu), numbered by
/dev/nvidiaN (NVML's minor number), the processes summed by the container
whose host id range holds their uids (`owner`), or "" when none does.  The
NVML object is an argument: the tests pass a stand-in or a recording.
"""

from __future__ import annotations

import contextlib

from ..core.gpureport import ERROR, NO_DRIVER, OK, GpuReport, ReportedGpu
from . import gpustatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def read(nvml: Any | None, owner: Callable[[int], str | None], taken: int) -> GpuReport:
    """Every GPU's figures and processes now; NVML shut down after."""
    if nvml is None:
        return GpuReport(taken, NO_DRIVER)
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError:
            return GpuReport(taken, ERROR)
        return GpuReport(taken, OK, tuple(_gpu(nvml, index, owner) for index in range(count)))
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _gpu(nvml: Any, index: int, owner: Callable[[int], str | None]) -> ReportedGpu:
    reading, handle = gpustatus.read_gpu(nvml, index), None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        number = int(nvml.nvmlDeviceGetMinorNumber(handle))
    except nvml.NVMLError:
        number = index  # the GPU did not answer: its place in NVML's order is all there is
    if reading.get("error") is not None or handle is None:
        return ReportedGpu(number, error=str(reading.get("error") or "no handle"))
    uuid = gpustatus.optional(nvml, lambda: nvml.nvmlDeviceGetUUID(handle))
    procs: list[tuple[int, int | None]] = reading["procs"]  # type: ignore[assignment]
    return ReportedGpu(
        number,
        str(reading["name"]),
        reading["util"],  # type: ignore[arg-type]
        reading["mem_used"],  # type: ignore[arg-type]
        reading["mem_total"],  # type: ignore[arg-type]
        reading["temp"],  # type: ignore[arg-type]
        by_container([(owner(pid) or "", memory) for pid, memory in procs]),
        uuid=None if uuid is None else gpustatus.text(uuid),
    )


def by_container(procs: list[tuple[str, int | None]]) -> tuple[tuple[str, int | None], ...]:
    """One entry per container (and one for the host): what the front door counts.

    A container that starts a thousand processes on a GPU is still one
    entry, so the report's bound on entries never hides a neighbour.
    """
    found: dict[str, int | None] = {}
    for container, memory in procs:
        before = found.get(container)
        found[container] = memory if before is None else before + (memory or 0)
    return tuple(sorted(found.items()))
