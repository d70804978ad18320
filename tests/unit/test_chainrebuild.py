"""chainrebuild: apply's chain rebuild runs in the background, under the forward lock, until collected.

The iptables-restore is stood in for by a real child (sh) that takes a
while and then succeeds or fails; the real restore runs in the
integration tests (test_admin_ops).
"""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from gpushell import chainrebuild, reconcile, runner
from gpushell.errors import GpushellError
from gpushell.forward import NatTable
from gpushell.paths import Paths
from gpushell.registry import parse

REG = parse(
    "chain: GPUSHELL\nmasquerade: false\nusers:\n  alice:\n    port: 22001\n    ip: 10.0.3.2\n"
    "    idmap: 1000000\n",
    "/etc/gpushell.yaml",
)
EMPTY = NatTable("*nat\n:GPUSHELL - [0:0]\nCOMMIT\n")


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(run_dir=str(tmp_path))


def lock_is_free(paths: Paths) -> bool:
    fd = os.open(f"{paths.run_dir}/forward.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def restore_taking(monkeypatch, seconds: float, status: int = 0) -> list[str]:
    """iptables-restore stood in for by sh: sleeps, prints what it was given, exits status."""
    given: list[str] = []

    def start_apply(lines):
        given.extend(lines)
        script = f"sleep {seconds}; echo 'line 2: no chain/target/match by that name' >&2; exit {status}"
        return runner.start(["/bin/sh", "-c", script])

    monkeypatch.setattr(chainrebuild.iptables, "start_apply", start_apply)
    monkeypatch.setattr(chainrebuild.iptables, "still_current", lambda table: table)
    return given


def test_the_rebuild_runs_on_while_the_caller_works_and_holds_the_lock(monkeypatch, paths) -> None:
    given = restore_taking(monkeypatch, 0.4)
    began = time.monotonic()
    rebuild = chainrebuild.Rebuild(REG, paths, EMPTY)
    assert time.monotonic() - began < 0.3
    assert given[-1].startswith("-A GPUSHELL -p tcp -m tcp --dport 22001")
    assert not lock_is_free(paths)
    rebuild.finish()
    assert time.monotonic() - began >= 0.4 and lock_is_free(paths)
    rebuild.finish()  # nothing left: no second wait, no error


def test_a_failed_rebuild_is_reported_when_collected_and_the_lock_released(monkeypatch, paths) -> None:
    restore_taking(monkeypatch, 0.05, status=1)
    rebuild = chainrebuild.Rebuild(REG, paths, EMPTY)
    with pytest.raises(GpushellError, match="no chain/target/match"):
        rebuild.finish()
    assert lock_is_free(paths)


def test_leaving_the_block_waits_for_the_rebuild(monkeypatch, paths) -> None:
    restore_taking(monkeypatch, 0.3)
    began = time.monotonic()
    with pytest.raises(KeyError), chainrebuild.Rebuild(REG, paths, EMPTY):  # apply failed elsewhere
        raise KeyError("elsewhere")
    assert time.monotonic() - began >= 0.3 and lock_is_free(paths)


def test_a_rebuild_that_could_not_start_fails_where_it_is_collected(monkeypatch, paths) -> None:
    def unreadable(table):
        raise GpushellError("iptables-save failed: permission denied")

    monkeypatch.setattr(chainrebuild.iptables, "still_current", unreadable)
    rebuild = chainrebuild.Rebuild(REG, paths, EMPTY)
    with pytest.raises(GpushellError, match="permission denied"):
        rebuild.finish()
    assert lock_is_free(paths)


def test_apply_collects_the_started_rebuild_in_the_plan_s_place(monkeypatch, paths) -> None:
    restore_taking(monkeypatch, 0.05, status=1)
    made: list[str] = []
    monkeypatch.setattr(reconcile, "execute_change", lambda change, reg, paths: made.append(change.kind))
    plan = reconcile.Plan(
        [reconcile.Change(reconcile.FORWARDING, "ipv4", "turn on IPv4 forwarding"),
         reconcile.Change(reconcile.FORWARDS, "GPUSHELL", "rebuild nat chain GPUSHELL"),
         reconcile.Change(reconcile.START, "alice", "start container alice (autostart)")],
        [],
    )  # fmt: skip
    reported: list[str] = []
    failed: list[str] = []
    with chainrebuild.Rebuild(REG, paths, EMPTY) as rebuild:
        count = reconcile.execute(plan, REG, paths, reported.append, failed.append, rebuild)
    assert count == 1 and made == [reconcile.FORWARDING, reconcile.START]
    assert failed == [
        "failed to rebuild nat chain GPUSHELL: sh failed: line 2: no chain/target/match by that name"
    ]
    assert reported == ["done: turn on IPv4 forwarding", "done: start container alice (autostart)"]
