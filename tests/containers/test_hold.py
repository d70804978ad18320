"""hold: a container frozen and verified, or stopped and unable to start, for root's work on its rootfs."""

from __future__ import annotations

import os
import pathlib

import pytest

from gpushell.containers import hold, lxc
from gpushell.containers.lxc import LxcDriver, parse_info
from gpushell.core.errors import GpushellError


class Container:
    """A driver whose container can misbehave: restart, never freeze, linger after a stop."""

    def __init__(self, state: str = "RUNNING", pid: int | None = 100) -> None:
        self.state_now, self.pid = state, pid
        self.freezes = True
        self.lingering = 0  # block_start refusals left after a stop
        self.calls: list[str] = []

    def info(self, name: str) -> tuple[str, int | None]:
        return self.state_now, self.pid

    def cgroup_frozen(self, pid: int) -> bool:
        return self.state_now == "FROZEN" and pid == self.pid

    def freeze(self, name: str) -> None:
        self.calls.append("freeze")
        if self.freezes:
            self.state_now = "FROZEN"

    def unfreeze(self, name: str) -> None:
        self.calls.append("unfreeze")
        if self.state_now == "FROZEN":
            self.state_now = "RUNNING"

    def block_start(self, name: str) -> Container:
        if self.state_now != "STOPPED" or self.lingering:
            self.lingering = max(0, self.lingering - 1)
            raise GpushellError("your container is starting or running; try again in a moment")
        self.calls.append("block")
        return self

    def close(self) -> None:
        self.calls.append("unblock")

    def reboot(self) -> None:
        self.state_now, self.pid = "RUNNING", self.pid + 1 if self.pid else 1


def test_a_running_container_is_held_frozen_and_thawed_after():
    box = Container()
    with hold.held(box, "c", "snapshot") as held:  # type: ignore[arg-type]
        assert held.running and box.state_now == "FROZEN"
        held.check()
    assert box.calls == ["freeze", "unfreeze"] and box.state_now == "RUNNING"


def test_a_restart_during_the_work_is_noticed_and_told_plainly():
    box = Container()
    with pytest.raises(GpushellError) as caught, hold.held(box, "c", "snapshot") as held:  # type: ignore[arg-type]
        box.reboot()  # an admin's lxc-stop/lxc-start, or a reboot that slipped in
        held.check()
    assert (
        caught.value.user_message
        == "your container restarted during the snapshot; nothing was kept; try again"
    )
    assert "init PID 100" in caught.value.log_message


def test_a_freeze_that_never_takes_is_refused_and_thawed(monkeypatch):
    monkeypatch.setattr(hold, "FREEZE_WAIT", 0.1)
    box = Container()
    box.freezes = False  # lxc-freeze returned, the cgroup never reached FROZEN
    with pytest.raises(GpushellError, match="could not be paused"), hold.held(box, "c", "snapshot"):  # type: ignore[arg-type]
        pytest.fail("the work must not run")
    assert box.calls[-1] == "unfreeze"


def test_a_container_that_restarts_as_it_is_frozen_is_refused():
    box = Container()
    real_freeze = box.freeze

    def freeze_a_new_init(name: str) -> None:
        box.reboot()
        real_freeze(name)

    box.freeze = freeze_a_new_init  # type: ignore[method-assign]
    with pytest.raises(GpushellError, match="restarted during the snapshot"), hold.held(box, "c", "snapshot"):  # type: ignore[arg-type]
        pytest.fail("the work must not run")


@pytest.mark.parametrize("state", ["STARTING", "STOPPING", "ABORTING", "MISSING"])
def test_a_container_between_states_is_refused(state):
    box = Container(state, None)
    with (
        pytest.raises(GpushellError, match=f"your container is {state.lower()}"),
        hold.held(box, "c", "snapshot"),
    ):  # type: ignore[arg-type]
        pytest.fail("the work must not run")
    assert box.calls == []


def test_a_stopped_container_cannot_start_while_held():
    box = Container("STOPPED", None)
    with hold.held(box, "c", "snapshot") as held:  # type: ignore[arg-type]
        assert not held.running
        held.check()
    assert box.calls == ["block", "unblock"]


def test_a_monitor_lingering_after_a_stop_is_waited_for():
    box = Container("STOPPED", None)
    box.lingering = 3
    with hold.stopped(box, "c", "restore"):  # type: ignore[arg-type]
        pass
    assert box.calls == ["block", "unblock"]


def test_a_container_started_before_the_block_is_refused():
    box = Container("STOPPED", None)

    def started_meanwhile(name: str) -> Container:
        box.state_now, box.pid = "RUNNING", 7
        raise GpushellError("your container is starting or running; try again in a moment")

    box.block_start = started_meanwhile  # type: ignore[method-assign]
    with pytest.raises(GpushellError, match="your container is running; try the restore again"):  # noqa: SIM117
        with hold.stopped(box, "c", "restore"):  # type: ignore[arg-type]
            pytest.fail("the work must not run")


# --- the LXC side --------------------------------------------------------------


def test_parse_info_reads_state_and_pid():
    assert parse_info("State:          RUNNING\nPID:            8314\n") == ("RUNNING", 8314)
    assert parse_info("State:          STOPPED\n") == ("STOPPED", None)
    assert parse_info("") == ("MISSING", None)
    assert parse_info("State: FROZEN\nPID: junk\n") == ("FROZEN", None)


def test_block_start_holds_lxcs_socket_name_until_closed(tmp_path):
    lxcpath = str(tmp_path)
    driver = LxcDriver(lxcpath)
    name = f"c-{os.getpid()}"
    guard = driver.block_start(name)
    try:
        # lxc-start's own bind of that name fails now; a second hold too.
        with pytest.raises(GpushellError, match="starting or running"):
            driver.block_start(name)
        # Bound, never listening: to lxc-info (and may_be_running) it reads stopped.
        assert driver.may_be_running(name) is False
    finally:
        guard.close()
    driver.block_start(name).close()  # free again


def test_block_start_refuses_a_name_lxc_would_hash(tmp_path):
    driver = LxcDriver("/" + "x" * lxc.MAX_LXC_SOCKET_NAME)
    with pytest.raises(GpushellError, match="ask your admin"):
        driver.block_start("c")


def test_cgroup_frozen_reads_the_v1_freezer(tmp_path, monkeypatch):
    from gpushell.containers import cgroups

    freezer = tmp_path / "freezer" / "lxc.payload.c"
    freezer.mkdir(parents=True)
    monkeypatch.setattr(cgroups, "controller_dir", lambda pid, controller: str(freezer))
    for text, frozen in (("FROZEN\n", True), ("FREEZING\n", False), ("THAWED\n", False)):
        (freezer / "freezer.state").write_text(text)
        assert lxc.cgroup_frozen(1234) is frozen


def test_ask_freezer_writes_the_v1_freezer_of_the_containers_level(tmp_path, monkeypatch):
    from gpushell.containers import cgroups

    freezer = tmp_path / "freezer" / "lxc.payload.c"
    freezer.mkdir(parents=True)
    (freezer / "freezer.state").write_text("THAWED\n")
    monkeypatch.setattr(cgroups, "controller_dir", lambda pid, controller: str(freezer))
    assert lxc.ask_freezer(1234) is True
    assert (freezer / "freezer.state").read_text() == "FROZEN"


def test_ask_freezer_on_v2_writes_cgroup_freeze_and_reads_events(tmp_path, monkeypatch):
    from gpushell.containers import cgroups

    level = tmp_path / "lxc.payload.c"
    (level / "nested").mkdir(parents=True)  # a cgroup the container made below its own
    (level / "cgroup.freeze").write_text("0\n")
    (level / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    monkeypatch.setattr(cgroups, "controller_dir", lambda pid, controller: None)
    monkeypatch.setattr(cgroups, "ROOT", str(tmp_path))

    def read(path: str) -> str:  # the init's own cgroup file, and the real ones under tmp_path
        return "0::/lxc.payload.c/nested\n" if path.startswith("/proc/") else pathlib.Path(path).read_text()

    monkeypatch.setattr(lxc, "_read_small", read)
    assert lxc.ask_freezer(1234) is True
    assert (level / "cgroup.freeze").read_text() == "1"
    assert lxc.cgroup_frozen(1234) is False
    (level / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert lxc.cgroup_frozen(1234) is True


def test_ask_freezer_is_false_where_the_freezer_is_unknown(monkeypatch):
    from gpushell.containers import cgroups

    monkeypatch.setattr(cgroups, "controller_dir", lambda pid, controller: None)
    monkeypatch.setattr(lxc, "_read_small", lambda path: "")
    assert lxc.ask_freezer(1234) is False
