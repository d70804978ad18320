"""gpuhistory: a day of figures per minute, padded, trimmed, bucketed, and its file read strictly."""

from __future__ import annotations

import json

import pytest

from gpushell.core import gpuhistory
from gpushell.core.gpuhistory import WINDOW, History, Track, buckets, extended, record

M = 29_000_000  # a minute, in minutes since the epoch


def test_a_first_figure_starts_a_track() -> None:
    assert extended(None, M, 40) == Track(M, (40,))


def test_minutes_without_a_tick_are_gaps_and_the_same_minute_is_replaced() -> None:
    track = extended(Track(M, (40,)), M + 3, 50)
    assert track == Track(M, (40, None, None, 50))
    assert extended(track, M + 3, 55) == Track(M, (40, None, None, 55))


def test_a_clock_set_back_drops_what_lies_after_it() -> None:
    assert extended(Track(M, (1, 2, 3, 4)), M + 1, 9) == Track(M, (1, 9))
    assert extended(Track(M, (1, 2)), M - 5, 9) == Track(M - 5, (9,))


def test_only_the_last_day_is_kept_and_a_leading_gap_is_dropped() -> None:
    track = Track(M, (7,) + (None,) * 10 + (8,))
    later = extended(track, M + WINDOW + 5, 9)
    assert later is not None
    assert later.start == M + 11 and later.values[0] == 8 and later.values[-1] == 9
    assert len(later.values) == WINDOW + 5 - 11 + 1  # from M+11 to M+WINDOW+5
    full = Track(M, tuple(range(WINDOW)))
    moved = extended(full, M + WINDOW, 100)
    assert moved == Track(M + 1, (*range(1, WINDOW), 100))


def test_a_track_with_nothing_but_gaps_left_in_the_day_is_gone() -> None:
    assert extended(Track(M, (5,)), M + WINDOW, None) is None
    assert extended(None, M, None) is None


def test_record_pads_figures_not_read_this_minute_and_forgets_a_gpu_gone_a_day() -> None:
    history = record(gpuhistory.EMPTY, M, {"gpu0.util": 10, "gpu1.util": 20}, (1.0, 2.0))
    history = record(history, M + 1, {"gpu0.util": 11}, (1.5, 3.0))
    assert history == History(
        {"gpu0.util": Track(M, (10, 11)), "gpu1.util": Track(M, (20, None))}, (1.5, 3.0)
    )
    later = record(history, M + WINDOW, {"gpu0.util": 12}, None)
    assert sorted(later.tracks) == ["gpu0.util"]  # gpu1's last figure is older than a day


def test_buckets_are_means_over_the_window_ending_now_none_where_nothing_was_read() -> None:
    track = Track(M - 9, (10, 20, None, None, None, 0, 0, 0, 0, 100))  # M-9 .. M
    points = buckets(track, M, 5)
    assert len(points) == WINDOW // 5
    assert points[-2:] == [15, 20]  # (10+20)/2 (its gaps ignored), (0+0+0+0+100)/5
    assert points[:-2] == [None] * (WINDOW // 5 - 2)
    assert buckets(None, M, 5) == [None] * (WINDOW // 5)


def test_window_is_the_day_ending_at_the_minute_oldest_first() -> None:
    values = gpuhistory.window(Track(M - WINDOW - 1, tuple([1] * 2 + [2] * (WINDOW - 1))), M)  # to M - 1
    assert len(values) == WINDOW and values[0] == 2 and values[-1] is None
    assert gpuhistory.latest(Track(M, (3, 4)), M + 1) == 4
    assert gpuhistory.latest(Track(M, (3, 4)), M + 2) is None


def test_the_file_round_trips() -> None:
    history = History({"gpu0.util": Track(M, (1, None, 100)), "host.cpu": Track(M + 2, (50,))}, (12.5, 100.0))
    text = gpuhistory.to_json(history)
    assert gpuhistory.from_json(text) == history
    assert gpuhistory.from_json(gpuhistory.to_json(gpuhistory.EMPTY)) == gpuhistory.EMPTY


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"format": 2, "tracks": {}},
        {"format": 1, "tracks": []},
        {"format": 1, "tracks": {"gpu0.util": [M, [101]]}},
        {"format": 1, "tracks": {"gpu0.util": [M, [True]]}},
        {"format": 1, "tracks": {"gpu0.util": [M, [1.5]]}},
        {"format": 1, "tracks": {"gpu0.util": ["M", [1]]}},
        {"format": 1, "tracks": {"gpu0.util": [M, [1] * (WINDOW + 1)]}},
        {"format": 1, "tracks": {}, "cpu": [1, "2"]},
    ],
)
def test_a_damaged_file_is_refused_with_a_reason(data: object) -> None:
    with pytest.raises(ValueError):
        gpuhistory.from_json(json.dumps(data))
