"""`gpus` and `kill-gpu-process` on a cluster: nvidia-smi and kill run in the student's own container.

`gpus` adds the other students' processes on those GPUs from the member's
GPU report (gpureport.py), as one host shows them: names and memory only.

The engine runs both inside the container, as its root, in its own
namespaces (LxdDriver.run_inside): they can reach nothing but that
container, whatever it made of its files.  The figures come back as a
file of the container's, read through the engine's file API with a small
bound (smi.py says what they are worth); nothing the container prints
reaches the helper, nor a member's disk.
"""

from __future__ import annotations

import time

from ..core import gpureport, gputable
from ..core.errors import GpushellError
from ..core.model import User
from ..gpu import smi
from .backend import RUNNING
from .lxd import LxdDriver

FIGURES = "/run/gpushell-gpus"  # inside the container: a tmpfs of its own
MAX_FIGURES = 64 * 1024  # bytes: 64 GPUs and 512 processes fit several times over
SMI_WAIT = 30.0  # seconds nvidia-smi may take (a driver busy with a reset takes a while)


def readings(driver: LxdDriver, user: User) -> list[dict[str, object]] | None:
    """What nvidia-smi shows in the student's running container; None when it cannot run there."""
    name = user.container
    if driver.state(name) != RUNNING:
        raise GpushellError(
            "your container is stopped, and its GPU figures come from inside it; start it first: start",
            f"gpus for {user.name}: container {name} is not running",
        )
    if driver.run_inside(name, smi.command(FIGURES), timeout=SMI_WAIT) != 0:
        return None  # no nvidia-smi in the image, or no driver it can talk to
    text = driver.client(name).pull_file(name, FIGURES, limit=MAX_FIGURES)
    return smi.parse(text.decode("utf-8", errors="replace"))


def answer(driver: LxdDriver, user: User, students: dict[str, str]) -> dict[str, object]:
    """The helper's answer to `gpus`, in the one-host table's form.

    Numbered as the member numbers its GPUs, with the other students' processes
    on them, where the member's fresh report names every GPU the container sees
    (students: container -> user on that member); else the container's view alone.
    """
    found = readings(driver, user)
    if found is None:
        return {"state": gputable.NO_DRIVER}
    try:
        report = driver.gpu_reports().get(user.member)
    except GpushellError:
        report = None  # the figures from inside stand alone
    completed = gpureport.with_neighbours(found, report, time.time(), user.container, students)
    if completed is None:
        return gputable.encode(found) | {"seen_from": gputable.SEEN_FROM_CONTAINER}
    return gputable.encode(completed) | {"seen_from": gputable.SEEN_FROM_MEMBER}


def kill(driver: LxdDriver, user: User, pid: int) -> dict[str, object]:
    """SIGTERM one of the container's own GPU processes (its PID as `gpus` showed it), inside it."""
    found = readings(driver, user)
    if found is None:
        raise GpushellError("no NVIDIA driver in your container", f"gpu-kill {pid}: refused, no nvidia-smi")
    using = {proc[1] for gpu in found for proc in gpu["procs"]}  # type: ignore[attr-defined]
    if pid not in using:
        raise GpushellError(
            f"process {pid} is not using a GPU", f"gpu-kill {pid}: refused, not a GPU process"
        )
    if driver.run_inside(user.container, ["kill", "-TERM", str(pid)]) != 0:
        raise GpushellError(f"process {pid} could not be signalled", f"gpu-kill {pid}: kill failed inside")
    return {"state": "ok", "killed": pid}
