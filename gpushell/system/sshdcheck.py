"""Is gpushell's sshd drop-in in effect?  What `sshd -T` says, and the running sshd.

doctor's `check_dropins` sees that the drop-in file is there; this module
gathers what decides whether sshd applies it.  Two questions, each with what
can and cannot be known from outside sshd:

- What does sshd apply to a student?  `sshd -T -C user=NAME,...` evaluates
  the files on disk (the main file, its includes, every Match block) for
  that account, as a freshly started sshd would.  `Match Group` needs a real
  account: for a name with no account sshd silently matches nothing and
  prints its defaults, so only accounts in the group are asked about.
  Options a running sshd got on its command line (`-o`) are not seen.
- Has the running sshd read those files since they last changed?  sshd
  re-executes itself on SIGHUP, keeping its PID and so its start time in
  /proc: the start time says nothing about reloads.  But each start and
  each reload writes the PidFile again, after reading the configuration,
  so that file's mtime is the time of the last load.  Without a PidFile
  naming the listener only the start time is known: a start after the last
  change proves the files were read, a reload cannot be seen.

Parsing is pure (recorded outputs in the unit tests); `gather` reads the
host: /proc, file times, and `sshd -T` through the runner.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from ..core.errors import GpushellError
from .runner import run

DEFAULT_CONFIG = "/etc/ssh/sshd_config"  # sshd's own default for -f
SECOND = 1_000_000_000  # ns
# sshd's options that take an argument (its getopt string), and the flags
# that make an sshd something other than a listener: a test (-t, -T), one
# connection from inetd or socket activation (-i), a re-executed child (-R).
ARGUMENT_OPTIONS = frozenset("CEbcfghkopu")
NOT_A_LISTENER = frozenset("TtiRV")
# `sshd -ddd` shows which files it reads and which line set what.
READS = re.compile(r"^debug\d: load_server_config: filename (.+)$", re.MULTILINE)
SETS = re.compile(r"^debug\d: (.+:\d+) setting (\S+)(?:[ \t]+(.*))?$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One `sshd -T` run: what sshd would apply (to `user`, or with no -C when None)."""

    user: str | None
    returncode: int
    dump: str  # stdout: one `keyword value` line per setting
    debug: str  # stderr: sshd's -ddd lines, and its error when it failed


@dataclasses.dataclass(frozen=True)
class Listener:
    """A running sshd that accepts connections, started with the configuration checked."""

    # Times in nanoseconds since the epoch, as file times are (a float would round them).
    pid: int
    started: int  # from /proc, to within a second; a SIGHUP re-exec keeps it
    loaded: int | None  # mtime of its PidFile when that names it: its last start or reload


@dataclasses.dataclass(frozen=True)
class SshdFacts:
    config: str  # the main sshd_config
    base: Probe  # `sshd -T` with no connection: errors, files read, PidFile
    probes: tuple[Probe, ...]  # one per account in the group asked about
    listeners: tuple[Listener, ...]
    changed: dict[str, int | None]  # each file sshd reads -> its mtime in ns (None: missing)
    dropin_read: bool | None  # sshd reads the drop-in; None: its debug lines were not understood


# --- parsing (pure) ------------------------------------------------------------


def settings(dump: str) -> dict[str, list[str]]:
    """`sshd -T` output as keyword -> values (a keyword such as `subsystem` may repeat)."""
    found: dict[str, list[str]] = {}
    for line in dump.splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword:
            found.setdefault(keyword.lower(), []).append(value.strip())
    return found


def value(dump: str, keyword: str) -> str | None:
    values = settings(dump).get(keyword)
    return values[0] if values else None


def files_read(debug: str) -> list[str] | None:
    """The configuration files sshd read, in order; None when no such debug line is there."""
    found = [name.strip() for name in READS.findall(debug)]
    return list(dict.fromkeys(found)) or None


def origins(debug: str, keyword: str, wanted_value: str, config: str) -> list[str]:
    """FILE:LINE of each line that set `keyword` to `wanted_value` (both case-insensitive).

    When sshd applies Match blocks it calls the main file `reprocess config`.
    """
    return list(
        dict.fromkeys(
            config + where.removeprefix("reprocess config")
            if where.startswith("reprocess config:")
            else where
            for where, name, args in SETS.findall(debug)
            if name.lower() == keyword.lower() and " ".join(args.split()).lower() == wanted_value.lower()
        )
    )


def error_line(probe: Probe) -> str:
    """What sshd said when it failed: its first line that is not a debug line."""
    for line in probe.debug.splitlines():
        if line.strip() and not line.startswith("debug"):
            return line.strip()
    return f"exit status {probe.returncode}"


def listener_argv(cmdline: bytes) -> list[str]:
    """The arguments of an sshd from /proc/PID/cmdline.

    A listener retitles itself, `sshd: /usr/sbin/sshd -D -f FILE [listener] 0 of
    10-100 startups`, one string: its arguments are the words before `[listener]`
    (a path with a space in it cannot be told apart then).
    """
    parts = [part.decode(errors="replace") for part in cmdline.split(b"\0")]
    while parts and not parts[-1]:
        parts.pop()
    if len(parts) == 1 and parts[0].startswith("sshd: "):
        title = parts[0][len("sshd: ") :]
        return title.split(" [listener]", 1)[0].split()
    return parts


def options(argv: Sequence[str]) -> tuple[set[str], dict[str, str]]:
    """sshd's getopt: the flags given and the last value of each option with an argument."""
    flags: set[str] = set()
    values: dict[str, str] = {}
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        for index, letter in enumerate(arg[1:], start=1):
            if letter in ARGUMENT_OPTIONS:
                tail = arg[index + 1 :]
                values[letter] = tail if tail else (rest.pop(0) if rest else "")
                break
            flags.add(letter)
    return flags, values


def proc_stat(text: str) -> tuple[int, int]:
    """(parent PID, start time in clock ticks after boot) from /proc/PID/stat."""
    fields = text[text.rindex(")") + 2 :].split()  # the name in (...) may hold anything
    return int(fields[1]), int(fields[19])


def boot_time(text: str) -> int:
    """`btime` of /proc/stat: the boot, in seconds since the epoch."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise ValueError("no btime line")


# --- reading the host ------------------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError:
        return None


def _exe(proc: str, pid: int) -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def _is_sshd(exe: str | None) -> bool:
    return exe is not None and os.path.basename(exe) == "sshd"


def find_listeners(config: str, proc: str = "/proc") -> list[tuple[int, str, int]]:
    """(PID, program, start time in ns) of each sshd listener started with `config` (-f, or the default).

    A listener is an sshd whose parent is not an sshd (children for a
    connection are) and that is not a test run or an inetd-style one.
    """
    wanted = os.path.realpath(config)
    boot_text = _read(f"{proc}/stat")
    boot = boot_time(boot_text.decode()) if boot_text else 0
    ticks = os.sysconf("SC_CLK_TCK")
    found = []
    for entry in sorted(os.listdir(proc), key=lambda name: (len(name), name)):
        if not entry.isdigit():
            continue
        pid = int(entry)
        exe = _exe(proc, pid)
        stat_text, cmdline = _read(f"{proc}/{pid}/stat"), _read(f"{proc}/{pid}/cmdline")
        if not _is_sshd(exe) or stat_text is None or cmdline is None:
            continue
        try:
            parent, start_ticks = proc_stat(stat_text.decode(errors="replace"))
        except (ValueError, IndexError):
            continue
        flags, values = options(listener_argv(cmdline))
        if _is_sshd(_exe(proc, parent)) or flags & NOT_A_LISTENER:
            continue
        path = values.get("f", DEFAULT_CONFIG)
        if not os.path.isabs(path):
            try:
                path = os.path.join(os.readlink(f"{proc}/{pid}/cwd"), path)
            except OSError:
                continue
        if os.path.realpath(path) == wanted:
            found.append((pid, exe or "sshd", boot * SECOND + start_ticks * SECOND // ticks))
    return found


def probe(program: str, config: str, user: str | None) -> Probe:
    argv = [program, "-T", "-ddd", "-f", config]
    if user is not None:
        argv += ["-C", f"user={user},host=localhost,addr=127.0.0.1"]
    try:
        result = run(argv, check=False, timeout=60)
    except GpushellError as exc:
        return Probe(user, 127, "", exc.user_message)
    return Probe(user, result.returncode, result.stdout, result.stderr)


def mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def pidfile_time(path: str | None, pid: int) -> int | None:
    """The PidFile's mtime when it names `pid`: when that sshd last started or reloaded."""
    if not path or path == "none":
        return None
    text = _read(path)
    if text is None or text.strip() != str(pid).encode():
        return None
    return mtime(path)


def gather(config: str, dropin: str, users: Sequence[str], proc: str = "/proc") -> SshdFacts:
    running = find_listeners(config, proc)
    programs = [program for _, program, _ in running if os.path.exists(program)]
    program = programs[0] if programs else "sshd"
    base = probe(program, config, None)
    probes = tuple(probe(program, config, user) for user in users) if base.returncode == 0 else ()
    read = files_read(base.debug)
    pidfile = value(base.dump, "pidfile")
    return SshdFacts(
        config=config,
        base=base,
        probes=probes,
        listeners=tuple(Listener(pid, started, pidfile_time(pidfile, pid)) for pid, _, started in running),
        changed={path: mtime(path) for path in dict.fromkeys([config, *(read or [dropin])])},
        dropin_read=None
        if read is None
        else os.path.realpath(dropin) in {os.path.realpath(path) for path in read},
    )
