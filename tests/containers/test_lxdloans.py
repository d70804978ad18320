"""Lent GPUs on a cluster, around a stand-in for the engine: what end_loans does in each state.

The engine's side (devices plugged in and out, the restart) runs for real
in tests/integration/test_cluster_lending.py; here: that a container is
restarted only when a lent device left it while it ran or was frozen, and
that the registry's own devices and the other loans stay.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpushell.containers import lxdinstance
from gpushell.containers.backend import FROZEN, RUNNING, STOPPED
from gpushell.containers.lxd import LxdDriver
from gpushell.core.registry import parse
from tests.fakes import ONE_MEMBER_CLUSTER

CARDS = {0: lxdinstance.GpuCard("0000:00:06.0", "H200"), 1: lxdinstance.GpuCard("0000:00:07.0", "H200")}
TWO_GPUS = ONE_MEMBER_CLUSTER.replace("gpus: 1, memory", "gpus: 2, memory")


class Engine(LxdDriver):
    """One instance as the engine holds it; every PUT and every stop and start recorded."""

    def __init__(self, state: str, devices: dict[str, dict[str, str]]) -> None:
        super().__init__(parse(TWO_GPUS, "/etc/gpushell.yaml"))
        self.state_now, self.actions = state, list[str]()
        self.instance: dict[str, Any] = {"architecture": "x86_64", "config": {}, "devices": devices}

    def request(
        self, method: str, name: str, path: str = "", body: object = None, *rest: Any, **more: Any
    ) -> Any:
        if method == "PUT":
            assert isinstance(body, dict)
            self.instance = body
            return None
        return self.instance

    def member_gpus(self, member: str) -> lxdinstance.Cards:
        return CARDS

    def state(self, name: str) -> str:
        return self.state_now

    def stop(self, name: str) -> None:
        self.actions.append("stop")

    def start(self, name: str) -> bool:
        self.actions.append("start")
        return True


def engine_with_loans(state: str) -> Engine:
    engine = Engine(state, {})
    engine.lend_gpus(engine.reg.users["alice"], (1,))
    return engine


def test_a_loan_adds_its_device_beside_the_registrys() -> None:
    engine = engine_with_loans(RUNNING)
    devices = engine.instance["devices"]
    assert devices["gpu0"]["pci"] == "0000:00:06.0"  # alice's own GPU 0
    assert devices["loan-gpu1"] == {"type": "gpu", "gputype": "physical", "pci": "0000:00:07.0"}
    assert engine.actions == []  # plugged in: no restart


@pytest.mark.parametrize(("state", "restarted"), [(RUNNING, True), (FROZEN, True), (STOPPED, False)])
def test_the_end_of_a_loan_takes_the_device_and_restarts_what_could_hold_it(
    state: str, restarted: bool
) -> None:
    engine = engine_with_loans(state)
    assert engine.end_loans(engine.reg.users["alice"], (1,)) is restarted
    assert "loan-gpu1" not in engine.instance["devices"] and "gpu0" in engine.instance["devices"]
    assert engine.actions == (["stop", "start"] if restarted else [])


def test_ending_a_loan_the_container_never_got_restarts_nothing() -> None:
    engine = engine_with_loans(RUNNING)
    assert engine.end_loans(engine.reg.users["alice"], (0,)) is False  # GPU 0 is not lent: its own
    assert set(engine.instance["devices"]) >= {"gpu0", "loan-gpu1"} and engine.actions == []
