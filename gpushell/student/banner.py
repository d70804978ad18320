"""What the student reads: banner, status and help text (pure rendering)."""

from __future__ import annotations

from ..core.expiry import WARN_DAYS, soon_text
from ..core.menu import MENU
from ..core.protocol import Answer


class Palette:
    """Escape sequences for emphasis; all empty when colour is off."""

    __slots__ = ("bad", "bold", "dim", "good", "reset")

    def __init__(self, bold: str = "", good: str = "", bad: str = "", dim: str = "", reset: str = "") -> None:
        self.bold, self.good, self.bad, self.dim, self.reset = bold, good, bad, dim, reset

    def _values(self) -> tuple[str, ...]:
        return (self.bold, self.good, self.bad, self.dim, self.reset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Palette) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    @classmethod
    def ansi(cls) -> Palette:
        from colorama import Fore, Style  # only a terminal pays for the import

        return cls(Style.BRIGHT, Fore.GREEN, Fore.RED, Style.DIM, Style.RESET_ALL)


PLAIN = Palette()


def state_text(info: Answer, p: Palette) -> str:
    state = str(info.get("state", "UNKNOWN"))
    colour = p.good if state == "RUNNING" else p.bad
    return f"{colour}{state.lower()}{p.reset}"


def connect_command(info: Answer) -> str:
    return f"ssh -p {info['port']} {info['user']}@{info['host']}"


def status(info: Answer, p: Palette = PLAIN) -> str:
    return (
        f"Container {p.bold}{info['container']}{p.reset}: {state_text(info, p)}, "
        f"IP {info['ip']}, port {info['port']}\n" + usage(info)
    )


def _count(info: Answer, key: str) -> int | None:
    text = info.get(key, "")
    return int(text) if text.isascii() and text.isdigit() else None


def _memory_text(used: int, limit: int | None) -> str:
    """`memory 1.2 of 16 GiB`, `memory 45 MiB of 8 GiB`, `memory 30 MiB of 256 MiB`, `memory 30 MiB`."""
    if limit is None:
        return f"memory {used / 2**20:.0f} MiB"
    if limit < 2**30:
        return f"memory {used / 2**20:.0f} MiB of {limit // 2**20} MiB"
    of = f" of {limit / 2**30:.3g} GiB"
    if used >= 2**30:
        return f"memory {used / 2**30:.1f}{of}"
    return f"memory {used / 2**20:.0f} MiB{of}"


def _disk_text(used: int, quota: int | None, info: Answer) -> str:
    """`disk 1.50 of 50 GiB`, `disk 1.50 GiB (no quota)`, `disk at least 9.31 GiB (no quota; too many
    files to count them all)`, `... (no quota; counted 4 min ago)`."""
    if quota:
        return f"disk {used / 2**30:.2f} of {quota / 2**30:.3g} GiB"
    partial, age = _count(info, "disk_partial"), _count(info, "disk_age_seconds")
    notes = ["no quota"]
    if partial:
        notes.append("too many files to count them all")
    if age:
        notes.append(f"counted {age // 60} min ago")
    return f"disk {'at least ' if partial else ''}{used / 2**30:.2f} GiB ({'; '.join(notes)})"


def usage(info: Answer) -> str:
    """The container's CPU, memory, processes and disk against its limits, where the helper measured them."""
    parts = []
    cpu_ns, cpus = _count(info, "cpu_ns"), _count(info, "cpu_limit_millis")
    if cpu_ns is not None:
        parts.append(f"CPU time {cpu_ns / 1e9:.1f} s" + (f" (at most {cpus / 1000:g} CPUs)" if cpus else ""))
    memory = _count(info, "memory_bytes")
    if memory is not None:
        parts.append(_memory_text(memory, _count(info, "memory_limit_bytes")))
    processes, most = _count(info, "pids"), _count(info, "pids_limit")
    if processes is not None:
        parts.append(f"processes {processes}" + (f" of {most}" if most is not None else ""))
    disk = _count(info, "disk_bytes")
    if disk is not None:
        parts.append(_disk_text(disk, _count(info, "disk_limit_bytes"), info))
    if not parts:
        return ""
    text = f"Using:           {', '.join(parts)}\n"
    kills = _count(info, "oom_kills")
    if kills:
        text += (
            f"Out of memory:   {kills} {'process was' if kills == 1 else 'processes were'} killed "
            "at your memory limit since the container started\n"
        )
    return text


def repaired(info: Answer) -> str:
    """What `keys` repaired, one line each."""
    lines = [info.get(f"repaired{index}", "") for index in range(min(_count(info, "repaired") or 0, 50))]
    done = "".join(f"  {line}\n" for line in lines if line)
    return (done or "  nothing needed repair\n") + "Try again: " + connect_command(info) + "\n"


def banner(info: Answer, p: Palette = PLAIN) -> str:
    return (
        f"\n{p.bold}Welcome, {info['user']}.{p.reset} This host gives you your own container.\n"
        + status(info, p)
        + expiry_line(info, p)
        + gpu_lines(info, p)
        + f"\nConnect to it:   {p.bold}{connect_command(info)}{p.reset}\n"
        + help_text(info, p, brief=True)
    )


def expiry_line(info: Answer, p: Palette = PLAIN) -> str:
    """`Your account expires on 2025-06-30 (in 3 days)` during the last days; '' otherwise.

    The helper sends `expires=` and `expires_in=` only then; anything
    malformed says nothing rather than something wrong.
    """
    day, days = info.get("expires", ""), _whole(info.get("expires_in", ""))
    shape = [len(part) for part in day.split("-")]
    well_formed = shape == [4, 2, 2] and day.isascii() and day.replace("-", "").isdigit()
    if not well_formed or days is None or not 0 < days <= WARN_DAYS:
        return ""
    return f"{p.bad}{soon_text(day, days)}{p.reset}\n"


# --- the banner's GPU lines: the login answer's gpu_* keys (gpucache.py writes them) ---

GPU_FRESH_FOR = 5  # seconds; an older reading says how old it is
MAX_BANNER_GPUS = 64


def gpu_lines(info: Answer, p: Palette = PLAIN) -> str:
    """One line per GPU (load, memory, temperature, how many students use it); '' without gpu keys.

    No gpu_state: the student has no GPUs (or an older helper answered), so
    nothing.  Counts only: who the students are is the `gpus` action's.
    """
    state = info.get("gpu_state")
    if state is None:
        return ""
    if state == "none":
        return f"GPU status: {p.dim}run `gpus`{p.reset}\n"
    server = info.get("gpu_member", "")  # a cluster's: the member holding the container
    where = f"on {server}" if server.isascii() and server.replace("-", "").isalnum() else "on this host"
    if state == "no-driver":
        return f"GPUs: none {where} (no NVIDIA driver)\n"
    age = _whole(info.get("gpu_age", "")) or 0
    note = f"  {p.dim}(as of {_age_text(age)} ago){p.reset}" if age > GPU_FRESH_FOR else ""
    if state == "error":
        return f"GPU status: {p.bad}the GPUs did not answer{p.reset}{note}\n"
    if state != "ok":
        return ""  # a state this shell does not know: say nothing rather than something wrong
    count = min(_whole(info.get("gpu_count", "")) or 0, MAX_BANNER_GPUS)
    if count == 0:
        return f"GPUs: none found {where}{note}\n"
    rows = [gpu_row(row, info, p) for row in range(count)]
    return rows[0] + note + "\n" + "".join(f"{line}\n" for line in rows[1:])


def gpu_row(row: int, info: Answer, p: Palette = PLAIN) -> str:
    """`GPU 0    35%    10.2/80.0 GiB  41 C  2 students`; a GPU that failed is one row saying so."""
    error = info.get(f"gpu.{row}.error")
    if error is not None:
        number, _, why = error.partition("|")
        why = _printable(why) or "no reason"
        return f"GPU {_shown_number(number)}  {p.bad}did not answer: {why}{p.reset}"
    fields = info.get(f"gpu.{row}", "").split("|")
    if len(fields) != 6:
        return f"GPU ?  {p.bad}unreadable reading{p.reset}"
    index, util, used, total, temp, users = (_whole(text) for text in fields)
    memory = f"{_gib(used)}/{_gib(total)} GiB"
    util_text = "?" if util is None else f"{util}%"
    temp_text = "?" if temp is None else f"{temp} C"
    who = "? students" if users is None else f"{users} student" + ("" if users == 1 else "s")
    return f"GPU {'?' if index is None else index:<2}{util_text:>5}  {memory:>15}{temp_text:>6}  {who}"


def _whole(text: str) -> int | None:
    """A whole number from the answer, or None (unknown, or not a number)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _shown_number(text: str) -> str:
    number = _whole(text)
    return "?" if number is None else str(number)


def _gib(mib: int | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f}"


def _printable(text: str, limit: int = 64) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


def _age_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def help_text(info: Answer, p: Palette = PLAIN, brief: bool = False) -> str:
    port, user, host = info["port"], info["user"], info["host"]
    text = (
        f"Copy files:      scp -P {port} FILE {user}@{host}:\n"
        f"                 sftp -P {port} {user}@{host}\n"
        f"                 rsync -e 'ssh -p {port}' -a DIR/ {user}@{host}:DIR/\n"
        f"                 sshfs -p {port} {user}@{host}: MOUNTPOINT\n"
    )
    if brief:
        return text
    return text + (
        f"Web services in your container, through your ssh connection to it:\n"
        f"  Jupyter        ssh -p {port} -L 8888:localhost:8888 {user}@{host}\n"
        f"                 then open http://localhost:8888 on your computer\n"
        f"  TensorBoard    ssh -p {port} -L 6006:localhost:6006 {user}@{host}\n"
        f"An entry for ~/.ssh/config on your computer:\n"
        f"                 Host {host}-box\n"
        f"                     HostName {host}\n"
        f"                     Port {port}\n"
        f"                     User {user}\n"
        f"                 then: ssh {host}-box, scp FILE {host}-box:, "
        f"ssh -L 8888:localhost:8888 {host}-box\n"
        f"Locked out of your container? Choose `keys` (or: ssh {user}@{host} keys).\n"
        f"This host itself runs only this menu: no shell, no file copy, no forwarding.\n"
    )


def menu(p: Palette = PLAIN, offered: tuple[tuple[str, str], ...] = MENU) -> str:
    rows = [
        f"  {p.bold}{n:>2}{p.reset}) {word:<15} {p.dim}{what}{p.reset}"
        for n, (word, what) in enumerate(offered, 1)
    ]
    return "\n" + "\n".join(rows) + "\n"
