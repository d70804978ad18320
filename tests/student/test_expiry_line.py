"""The banner's line in an account's last days (banner.expiry_line renders the helper's expires keys)."""

from __future__ import annotations

import pytest

from gpushell.student import banner
from tests.student.test_banner import INFO

MARKS = banner.Palette(bold="<b>", good="<g>", bad="<r>", dim="<d>", reset="</>")


def test_the_line_names_the_day_and_the_days_left() -> None:
    info = {**INFO, "expires": "2025-06-30", "expires_in": "3"}
    assert banner.expiry_line(info) == "Your account expires on 2025-06-30 (in 3 days)\n"
    assert (
        banner.expiry_line({**info, "expires_in": "1"}) == "Your account expires on 2025-06-30 (in 1 day)\n"
    )
    assert banner.expiry_line(info, MARKS) == "<r>Your account expires on 2025-06-30 (in 3 days)</>\n"


def test_the_banner_shows_it_under_the_status() -> None:
    shown = banner.banner({**INFO, "expires": "2025-06-30", "expires_in": "14"})
    status = banner.status(INFO)
    assert status + "Your account expires on 2025-06-30 (in 14 days)\n" in shown
    assert "expires" not in banner.banner(INFO)


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"expires": "2025-06-30"},
        {"expires_in": "3"},
        {"expires": "2025-06-30", "expires_in": "0"},
        {"expires": "2025-06-30", "expires_in": "15"},
        {"expires": "2025-06-30", "expires_in": "-1"},
        {"expires": "2025-6-30", "expires_in": "3"},
        {"expires": "2025-06-30\x1b[2J", "expires_in": "3"},
        {"expires": "\uff12\uff10\uff12\uff15-06-30", "expires_in": "3"},
        {"expires": "/etc/passwd", "expires_in": "3"},
    ],
)
def test_anything_malformed_or_out_of_range_says_nothing(keys: dict[str, str]) -> None:
    assert banner.expiry_line({**INFO, **keys}) == ""
