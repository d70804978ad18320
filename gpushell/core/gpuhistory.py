"""The status page's memory: each figure once a minute over the last 24 hours (pure).

A `Track` is one figure, a percentage (0..100) or None where nothing was
read, for each minute from `start` (minutes since the epoch) on.  `record`
adds one minute's figures to a `History`, pads the minutes no tick ran with
None, and forgets what is older than WINDOW: a GPU gone for a day drops out.
`buckets` gives a track's whole window in wider steps, for a plot.

The file (admin/statuspage.py keeps it) is to_json's text, read back
strictly by from_json: `{"format": 1, "cpu": [busy, total] or null,
"tracks": {"gpu0.util": [start, [87, null, ...]], ...}}`.  cpu holds the
host's CPU seconds at the last record, so the next one can tell the CPU
use in between.  Percentages as whole numbers keep it small: 64 GPUs are
about 600 KB.
"""

from __future__ import annotations

import json

from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 1
WINDOW = 24 * 60  # minutes kept
HOST_CPU, HOST_MEMORY = "host.cpu", "host.memory"

Figure = int | None  # a percentage, or None: no reading that minute


def gpu_key(gpu: int, what: str, server: str = "") -> str:
    """The track of one GPU's figure: what is "util" or "memory"; a cluster member's GPU
    carries the member's name first (`m1:gpu0.util`), one host's none (`gpu0.util`)."""
    return f"{server}:gpu{gpu}.{what}" if server else f"gpu{gpu}.{what}"


def gpu_of(key: str) -> tuple[str, int | None, str]:
    """A track key's server, GPU number and figure; None for the number when it is not a GPU's."""
    server, _, rest = key.rpartition(":")
    name, _, what = rest.partition(".")
    number = name[3:]
    if not name.startswith("gpu") or not (number.isascii() and number.isdigit()):
        return server, None, what
    return server, int(number), what


class Track(Value):
    __slots__ = ("start", "values")

    def __init__(self, start: int, values: tuple[Figure, ...]) -> None:
        self.start, self.values = start, values


class History(Value):
    __slots__ = ("cpu", "tracks")

    def __init__(self, tracks: dict[str, Track], cpu: tuple[float, float] | None = None) -> None:
        self.tracks, self.cpu = tracks, cpu


EMPTY = History({})


def extended(track: Track | None, minute: int, value: Figure) -> Track | None:
    """track with value at minute, the minutes between as None, trimmed to the window ending at minute.

    A minute already there is replaced, and a clock set back drops what
    lies after it.  None when nothing but None is left in the window.
    """
    if track is None or minute < track.start:
        start, values = minute, [value]
    else:
        start, values = track.start, list(track.values[: minute - track.start])
        values += [None] * (minute - start - len(values)) + [value]
    first = minute - WINDOW + 1
    if start < first:
        values, start = values[first - start :], first
    known = next((index for index, value in enumerate(values) if value is not None), None)
    if known is None:
        return None
    return Track(start + known, tuple(values[known:]))  # a leading gap carries nothing


def record(
    history: History, minute: int, figures: dict[str, Figure], cpu: tuple[float, float] | None
) -> History:
    """The history with this minute's figures; a track with no figure this minute gets None."""
    tracks = {}
    for key in sorted(set(history.tracks) | set(figures)):
        track = extended(history.tracks.get(key), minute, figures.get(key))
        if track is not None:
            tracks[key] = track
    return History(tracks, cpu)


def latest(track: Track | None, minute: int) -> Figure:
    """The track's figure at minute, or None."""
    if track is None or not 0 <= minute - track.start < len(track.values):
        return None
    return track.values[minute - track.start]


def window(track: Track | None, minute: int) -> list[Figure]:
    """The WINDOW minutes ending at minute, oldest first, None where the track has nothing."""
    found: list[Figure] = [None] * WINDOW
    if track is None:
        return found
    first = minute - WINDOW + 1
    low, high = max(track.start, first), min(track.start + len(track.values), minute + 1)
    if low < high:
        found[low - first : high - first] = track.values[low - track.start : high - track.start]
    return found


def buckets(track: Track | None, minute: int, step: int) -> list[Figure]:
    """The window ending at minute in WINDOW // step buckets of step minutes: each its mean, or None."""
    values = window(track, minute)
    found: list[Figure] = []
    for first in range(0, WINDOW - WINDOW % step, step):
        known = [value for value in values[first : first + step] if value is not None]
        found.append(round(sum(known) / len(known)) if known else None)
    return found


# --- the file --------------------------------------------------------------------


def to_json(history: History) -> str:
    tracks = {key: [track.start, list(track.values)] for key, track in history.tracks.items()}
    cpu = None if history.cpu is None else list(history.cpu)
    return json.dumps({"format": FORMAT, "cpu": cpu, "tracks": tracks}, separators=(",", ":"))


def from_json(text: str) -> History:
    """The history in text; ValueError saying what is wrong with it."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not format {FORMAT}")
    return History(_tracks(data.get("tracks")), _cpu(data.get("cpu")))


def _tracks(value: Any) -> dict[str, Track]:
    if not isinstance(value, dict):
        raise ValueError("tracks is not a mapping")
    tracks = {}
    for key, item in value.items():
        if not (
            isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], list)
        ):
            raise ValueError(f"track {key!r} is not [start, [values]]")
        start, values = item
        if len(values) > WINDOW or not all(v is None or (type(v) is int and 0 <= v <= 100) for v in values):
            raise ValueError(f"track {key!r} holds more than a day, or values that are not percentages")
        tracks[key] = Track(start, tuple(values))
    return tracks


def _cpu(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) in (int, float) for v in value)):
        raise ValueError("cpu is not [busy, total]")
    return float(value[0]), float(value[1])
