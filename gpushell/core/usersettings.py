"""`gpushell-admin set USER key=value ...`: which keys, which values (pure).

Each value is turned into what the registry holds (a list of GPU numbers,
a port, a boolean); the registry's own validation (port range, clashes)
runs afterwards on the edited text.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from .errors import ExitStatus, GpushellError

SETTABLE = ("gpus", "port", "autostart", "snapshot_limit", "memory", "cpus", "pids", "disk", "expires")
# Kept in the user's own `limits:` mapping rather than as keys of their own.
LIMIT_KEYS = ("memory", "cpus", "pids", "disk")
GPU_LIST = re.compile(r"\d{1,4}(,\d{1,4})*")


def _usage(message: str) -> GpushellError:
    return GpushellError(message, status=ExitStatus.USAGE)


def gpus_value(text: str) -> str | list[int]:
    if text in ("all", "none"):
        return text
    if not GPU_LIST.fullmatch(text):
        raise _usage(f"gpus={text}: use all, none or GPU numbers like 0,2")
    numbers = [int(part) for part in text.split(",")]
    if len(set(numbers)) != len(numbers):
        raise _usage(f"gpus={text}: lists a GPU twice")
    return sorted(numbers)


def port_value(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _usage(f"port={text}: not a port number")
    return int(text)


def autostart_value(text: str) -> bool:
    if text not in ("true", "false"):
        raise _usage(f"autostart={text}: use true or false")
    return text == "true"


def snapshot_limit_value(text: str) -> int:
    if not text.isdigit() or int(text) > 100:
        raise _usage(f"snapshot_limit={text}: use a number from 0 (no snapshots) to 100")
    return int(text)


def _size_value(key: str, text: str, example: str) -> str:
    """The size as the admin wrote it (`16G`), once the registry's own rule for key accepts it."""
    from .registry import LIMIT_CONVERTERS

    try:
        LIMIT_CONVERTERS[key](text)
    except ValueError:
        raise _usage(f"{key}={text}: use a size like {example}") from None
    return text.upper()


def memory_value(text: str) -> str:
    return _size_value("memory", text, "16G or 512M (at least 64M)")


def disk_value(text: str) -> str:
    return _size_value("disk", text, "50G or 1T (at least 256M)")


def cpus_value(text: str) -> int | float:
    from .registry import LIMIT_CONVERTERS

    try:
        number = float(text)
        LIMIT_CONVERTERS["cpus"](number)
    except ValueError:
        raise _usage(f"cpus={text}: use a number of CPUs like 4 or 0.5") from None
    return int(number) if number.is_integer() else number


def pids_value(text: str) -> int:
    from .registry import LIMIT_CONVERTERS, MAX_PIDS, MIN_PIDS

    try:
        return int(LIMIT_CONVERTERS["pids"](int(text) if text.isdigit() else text))
    except ValueError:
        raise _usage(f"pids={text}: use a number of processes from {MIN_PIDS} to {MAX_PIDS}") from None


def expires_value(text: str) -> datetime.date | None:
    """The day the account expires (a date: YAML writes it unquoted), or None for `never` (no key)."""
    from .expiry import parse_day

    if text == "never":
        return None
    try:
        return datetime.date(*parse_day(text))
    except ValueError:
        raise _usage(f"expires={text}: use a date like 2025-06-30, or never") from None


CONVERTERS = {
    "gpus": gpus_value,
    "port": port_value,
    "autostart": autostart_value,
    "snapshot_limit": snapshot_limit_value,
    "memory": memory_value,
    "cpus": cpus_value,
    "pids": pids_value,
    "disk": disk_value,
    "expires": expires_value,
}


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """{"port": 22005, ...} from ["port=22005", ...]; one clear error for anything else."""
    if not words:
        raise _usage(f"nothing to set; give key=value with key one of {', '.join(SETTABLE)}")
    result: dict[str, Any] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep:
            raise _usage(f"{word!r} is not key=value")
        if key not in CONVERTERS:
            raise _usage(f"unknown key {key!r}; settable: {', '.join(SETTABLE)}")
        if key in result:
            raise _usage(f"{key} is given twice")
        result[key] = CONVERTERS[key](text)
    return result


def describe(key: str, value: Any) -> str:
    if key == "expires":
        return f"expires={'never' if value is None else value.isoformat()}"
    if key == "gpus" and isinstance(value, list):
        return f"gpus={','.join(map(str, value))}"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={value}"
