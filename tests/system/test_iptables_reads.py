"""iptables.read_nat marks the table with the generation it saw; still_current reuses it only then."""

from __future__ import annotations

import pytest

from gpushell.system import iptables
from gpushell.system.runner import Result

SAVED = (
    "*nat\n:GPUSHELL - [0:0]\n"
    "-A GPUSHELL -p tcp -m tcp --dport 22001 -j DNAT --to-destination 10.0.3.2:22\n"
    "COMMIT\n"
)


@pytest.fixture
def host(monkeypatch):
    """A ruleset whose generation the test sets, and a count of iptables-save runs."""
    state = {"generation": 7, "saves": 0}

    def run(argv: list[str], **_: object) -> Result:
        assert argv == [iptables.IPTABLES_SAVE, "-t", "nat"]
        state["saves"] += 1
        return Result(0, SAVED, "")

    monkeypatch.setattr(iptables, "run", run)
    monkeypatch.setattr(iptables, "generation", lambda: state["generation"])
    return state


def test_an_unchanged_ruleset_is_not_read_again(host) -> None:
    table = iptables.read_nat()
    assert (table.generation, host["saves"]) == (7, 1)
    assert iptables.still_current(table) is table and host["saves"] == 1


def test_a_changed_ruleset_is_read_again(host) -> None:
    table = iptables.read_nat()
    host["generation"] = 8
    fresh = iptables.still_current(table)
    assert fresh is not table and (fresh.generation, host["saves"]) == (8, 2)
    assert fresh.chains == {"GPUSHELL"}


def test_without_a_generation_the_table_is_always_read_again(host) -> None:
    host["generation"] = None  # the legacy backend: nf_tables does not see the rules
    table = iptables.read_nat()
    assert iptables.still_current(table) is not table and host["saves"] == 2
