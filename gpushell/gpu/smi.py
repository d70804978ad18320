"""GPU figures as nvidia-smi prints them inside a container (pure): `gpus` on a cluster.

A cluster's GPUs are on its members, which gpushell reaches through the
engine's API alone; the student's own container sees its GPUs through its
member's driver.  So there `gpus` runs nvidia-smi inside that container
(containers/lxdgpus.py) and reads its CSV back.  The text is the
container's word, shown to its owner alone: a lie misleads only whoever
told it.  It is parsed strictly and bounded all the same.  The processes
are the container's own (its PID namespace hides everyone else's), with
the PIDs that `kill` takes inside it; other students' memory still counts
in each GPU's total.
"""

from __future__ import annotations

QUERY_GPUS = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu"
QUERY_APPS = "gpu_uuid,pid,used_memory,process_name"  # the name last: it may hold commas
MARK = "--"  # between the two listings
MAX_GPUS = 64
MAX_PROCS = 512
MAX_FIGURE = 2**50  # MiB, %, degrees: anything larger is not a reading
MIB = 1024 * 1024


def command(path: str) -> list[str]:
    """What runs inside the container: both listings into path, or a non-zero status (no driver)."""
    options = "--format=csv,noheader,nounits"
    script = (
        f"nvidia-smi --query-gpu={QUERY_GPUS} {options} > {path} && echo {MARK} >> {path} && "
        f"nvidia-smi --query-compute-apps={QUERY_APPS} {options} >> {path}"
    )
    return ["sh", "-c", script]


def parse(text: str) -> list[dict[str, object]]:
    """The GPUs in nvidia-smi's two listings, as gputable.encode takes them (memory in bytes)."""
    gpu_lines, _, app_lines = text.partition(f"\n{MARK}\n")
    gpus: dict[str, dict[str, object]] = {}  # by UUID, in nvidia-smi's order
    for line in gpu_lines.splitlines()[:MAX_GPUS]:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 7 or _whole(fields[0]) is None or not fields[1]:
            continue
        index, uuid, name, util, used, total, temp = fields
        gpus[uuid] = {
            "uuid": uuid,  # how the member's report names it (gpureport.with_neighbours)
            "index": _whole(index),
            "name": name,
            "util": _whole(util),
            "mem_used": _bytes(used),
            "mem_total": _bytes(total),
            "temp": _whole(temp),
            "procs": [],
        }
    for line in app_lines.splitlines()[:MAX_PROCS]:
        fields = [field.strip() for field in line.split(",", 3)]
        if len(fields) != 4 or fields[0] not in gpus or _whole(fields[1]) is None:
            continue
        uuid, pid, used, process = fields
        procs: list[tuple[str, int | None, str, int | None]] = gpus[uuid]["procs"]  # type: ignore[assignment]
        procs.append(("you", _whole(pid), process.rsplit("/", 1)[-1], _bytes(used)))
    return list(gpus.values())


def _whole(text: str) -> int | None:
    """A figure, or None for what nvidia-smi could not tell ("[N/A]", "[Not Supported]") or garbage."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_FIGURE:
        return None
    return int(text)


def _bytes(mib: str) -> int | None:
    figure = _whole(mib)
    return None if figure is None else figure * MIB
