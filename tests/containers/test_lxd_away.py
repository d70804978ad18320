"""A member that is away, in the engine's own words: the student gets the one line that names the member.

The real member taken off the network runs in tests/integration/test_cluster.py;
here, each of the engine's answers that mean "away" (LXD 5.0's and Incus's
words, a member just back whose database is not reachable yet) against an
answer that means something else.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpushell.containers import lxdapi
from gpushell.containers.lxd import LxdDriver, MemberDown
from gpushell.core.registry import parse
from tests.fakes import ONE_MEMBER_CLUSTER


class Answering(lxdapi.Client):
    """A client whose every call fails as given."""

    def __init__(self, error: Exception) -> None:
        super().__init__(["192.168.5.11"], 8443, "gpushell", "/nonexistent")
        self.error = error

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def driver_failing_with(error: Exception) -> LxdDriver:
    driver = LxdDriver(parse(ONE_MEMBER_CLUSTER, "/etc/gpushell.yaml"))
    driver.client = lambda name=None: Answering(error)  # type: ignore[method-assign]
    return driver


@pytest.mark.parametrize(
    "words",
    [
        "Failed to begin transaction: failed to create dqlite connection: no available dqlite leader "
        "server found",
        "Failed to begin transaction: failed to create cowsql connection: no available cowsql leader "
        "server found",
        "Failed to get instance: Member m1 is offline",
        "dial tcp 192.168.5.11:8443: connect: no route to host",
    ],
)
def test_the_engine_saying_the_member_is_away_is_the_students_one_line(words: str) -> None:
    driver = driver_failing_with(lxdapi.ApiError(500, words))
    with pytest.raises(MemberDown) as raised:
        driver.start(driver.reg.users["alice"].container)
    assert raised.value.member == "m1"
    assert str(raised.value) == (
        "the server holding your container (m1) is not answering; your files are safe there; "
        "try again later or tell your administrator"
    )
    assert words in raised.value.log_message  # the engine's words are for the log alone


def test_a_member_that_does_not_answer_at_all_is_the_same_line() -> None:
    driver = driver_failing_with(lxdapi.Unreachable("GET /1.0/instances/alice/state: timed out"))
    with pytest.raises(MemberDown, match=r"\(m1\) is not answering"):
        driver.start(driver.reg.users["alice"].container)


def test_any_other_refusal_is_the_engines_own() -> None:
    driver = driver_failing_with(lxdapi.ApiError(400, "Instance is busy running a snapshot operation"))
    with pytest.raises(lxdapi.ApiError) as raised:
        driver.start(driver.reg.users["alice"].container)
    assert not isinstance(raised.value, MemberDown)
    assert "busy running a snapshot" in str(raised.value)
