"""The GPU table: its line-safe form in the helper's answer, and its rendering (pure).

The helper's answer is `key=value` lines (protocol.py), so the table goes
as one key per GPU and one per process on it, fields separated by `|`:

    state=ok                 (or no-driver: no NVML, no driver, no GPU)
    gpus=2
    gpu0=0|NVIDIA A100|37|1024|40960|45     index|name|util %|used MiB|total MiB|temp C
    gpu0.procs=2
    gpu0.proc0=you|4242|python3|1000        kind|pid|name|MiB
    gpu0.proc1=student||bob|2000
    gpu1.error=GPU is lost                  a GPU that did not answer

`kind` is `you` (the caller's own process: its host PID and command name,
the number `kill-gpu-process` takes), `student` (another student's: name
and memory only, never a PID or command line) or `other` (the host's, or
a container the registry does not know: memory only).  The helper decides
what each kind may carry; the renderer only shows what it gets.  Every
field is cleaned (`field`): no separator, no control character, bounded,
so a GPU name or command name can never split a line or a field.  An empty
field means unknown.

Imported by the login shell: no imports beyond what it already has.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

SEPARATOR = "|"
MAX_FIELD = 64
NO_DRIVER = "no-driver"
NO_DRIVER_TEXT = "no NVIDIA driver/GPU on this host"
KINDS = ("you", "student", "other")
# A cluster's answer (`seen_from=container`) is what nvidia-smi shows inside the student's container.
SEEN_FROM_CONTAINER = "container"
SEEN_FROM_CONTAINER_TEXT = (
    "Seen from inside your container: other students' processes are not listed; "
    "their memory is in the totals."
)
# ... completed by the member's report (`seen_from=member`): numbered as the server numbers them.
SEEN_FROM_MEMBER = "member"
SEEN_FROM_MEMBER_TEXT = (
    "Yours seen from inside your container; other students' from your server's last report."
)
MIB = 1024 * 1024


def field(value: object) -> str:
    """One value made safe as a field: printable, no separator, bounded; None is empty."""
    if value is None:
        return ""
    text = "".join(ch if ch.isprintable() and ch != SEPARATOR else "?" for ch in str(value))
    return text[:MAX_FIELD]


def _number(value: object) -> str:
    return "" if value is None else str(int(value))  # type: ignore[call-overload]


def _mib(value: int | None) -> str:
    return "" if value is None else str(value // MIB)


def encode(gpus: list[dict[str, object]]) -> dict[str, object]:
    """The answer lines for classified GPU readings (see gpustatus.classify).

    Each reading: index, and either error, or name, util, mem_used, mem_total
    (bytes), temp and procs: a list of (kind, pid or None, name, memory bytes or None).
    """
    answer: dict[str, object] = {"state": "ok", "gpus": len(gpus)}
    for row, gpu in enumerate(gpus):
        key = f"gpu{row}"
        if gpu.get("error") is not None:
            answer[f"{key}.error"] = f"{_number(gpu['index'])}{SEPARATOR}{field(gpu['error'])}"
            continue
        answer[key] = SEPARATOR.join(
            [
                _number(gpu["index"]),
                field(gpu.get("name")),
                _number(gpu.get("util")),
                _mib(gpu.get("mem_used")),  # type: ignore[arg-type]
                _mib(gpu.get("mem_total")),  # type: ignore[arg-type]
                _number(gpu.get("temp")),
            ]
        )
        procs: list[tuple[str, int | None, str, int | None]] = gpu.get("procs", [])  # type: ignore[assignment]
        answer[f"{key}.procs"] = len(procs)
        for number, (kind, pid, name, memory) in enumerate(procs):
            if kind not in KINDS:
                raise ValueError(f"unknown process kind {kind!r}")
            shown_pid = pid if kind == "you" else None
            shown_name = name if kind in ("you", "student") else ""
            answer[f"{key}.proc{number}"] = SEPARATOR.join(
                [kind, _number(shown_pid), field(shown_name), _mib(memory)]
            )
    return answer


# --- the shell's side ------------------------------------------------------------


class Row:
    """One GPU as the shell got it: fields, or an error text."""

    __slots__ = ("error", "fields", "index", "procs")

    def __init__(
        self, index: str, fields: list[str], procs: list[list[str]], error: str | None = None
    ) -> None:
        self.index, self.fields, self.procs, self.error = index, fields, procs, error


def _count(text: str, limit: int = 4096) -> int:
    return int(text) if text.isascii() and text.isdigit() and int(text) <= limit else 0


def decode(answer: dict[str, str]) -> list[Row]:
    """The rows in an answer; malformed parts become error rows, never an exception."""
    rows = []
    for row in range(_count(answer.get("gpus", ""))):
        key = f"gpu{row}"
        if f"{key}.error" in answer:
            index, _, error = answer[f"{key}.error"].partition(SEPARATOR)
            rows.append(Row(index, [], [], error or "no answer"))
            continue
        fields = answer.get(key, "").split(SEPARATOR)
        if len(fields) != 6:
            rows.append(Row(str(row), [], [], "unreadable answer"))
            continue
        procs = []
        for number in range(_count(answer.get(f"{key}.procs", ""))):
            proc = answer.get(f"{key}.proc{number}", "").split(SEPARATOR)
            if len(proc) == 4 and proc[0] in KINDS:
                procs.append(proc)
        rows.append(Row(fields[0], fields[1:], procs))
    return rows


def own_pids(rows: list[Row]) -> list[int]:
    """The caller's own GPU processes, in the order render numbers them ([1], [2], ...)."""
    pids: list[int] = []
    for row in rows:
        for kind, pid, _name, _memory in row.procs:
            if kind == "you" and pid.isascii() and pid.isdigit() and int(pid) not in pids:
                pids.append(int(pid))
    return pids
