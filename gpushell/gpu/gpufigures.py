"""What each GPU shows NVML: name, utilization and memory, for the status page.

GPUs are numbered by their /dev/nvidiaN (NVML's minor number), as loans
and the registry number them.  A figure a GPU does not report is None; a
GPU whose handle or number NVML cannot give is left out (the page still
lists it from its device node, without figures).  The NVML object is an
argument, as in gpustatus.py: the tests pass a stand-in.
"""

from __future__ import annotations

from ..core.statusmodel import GpuReading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def read(nvml: Any) -> list[GpuReading]:
    """Every GPU NVML can name; none when it cannot count them."""
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError:
        return []
    found = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            minor = int(nvml.nvmlDeviceGetMinorNumber(handle))
        except nvml.NVMLError:
            continue
        name = _figure(nvml, nvml.nvmlDeviceGetName, handle)
        rates = _figure(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _figure(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        found.append(
            GpuReading(
                minor,
                name.decode(errors="replace") if isinstance(name, bytes) else name and str(name),
                None if rates is None else int(rates.gpu),
                None if memory is None else int(memory.used),
                None if memory is None else int(memory.total),
            )
        )
    return found


def _figure(nvml: Any, call: Callable[[Any], Any], handle: Any) -> Any:
    """A figure some GPUs do not report (utilization on some models): None then."""
    try:
        return call(handle)
    except nvml.NVMLError:
        return None
