"""`rebuild` on a cluster, around a stand-in for the engine: what happens in which order, and
what is left when a step fails.

The engine's side (its rebuild API or a delete and a make, volumes, exec)
is exercised for real on Incus and LXD 5.0.2 by
tests/integration/test_cluster.py; here: the refusals before any change,
and the home volume on each failure path.
"""

from __future__ import annotations

import pytest

from gpushell.containers import lxdapi, lxdrebuild
from gpushell.containers.backend import MISSING, RUNNING, STOPPED
from gpushell.containers.lxd import LxdDriver
from gpushell.core.errors import GpushellError
from gpushell.core.model import User
from gpushell.core.registry import parse
from tests.fakes import ONE_MEMBER_CLUSTER

VOLUME = "alice-home"


class Engine(LxdDriver):
    """The engine as gpushell sees it: its API extensions, snapshots, volumes, and what exec ends with."""

    def __init__(self, *, state: str = RUNNING, snapshots: tuple[str, ...] = (), volume: bool = False,
                 save: int = 0, bring_back: int = 0, rebuild_fails: bool = False, make_fails: bool = False,
                 refuse_volume: bool = False,
                 extensions: tuple[str, ...] = (lxdrebuild.REBUILD_API,)) -> None:  # fmt: skip
        super().__init__(parse(ONE_MEMBER_CLUSTER, "/etc/gpushell.yaml"))
        self.now, self.snapshots, self.extensions = state, snapshots, extensions
        self.volumes = {VOLUME} if volume else set()
        self.exits = {lxdrebuild.SAVE_HOME: save, lxdrebuild.BRING_BACK_HOME: bring_back}
        self.rebuild_fails, self.make_fails, self.refuse_volume = rebuild_fails, make_fails, refuse_volume
        self.done: list[str] = []
        self.devices: set[str] = set()

    def client(self, name: str | None = None) -> Engine:  # type: ignore[override]
        return self

    def get(self, endpoint: str, **query: str) -> dict[str, object]:
        assert endpoint == ""
        return {"api_extensions": list(self.extensions)}

    def call(self, method: str, endpoint: str, body: object = None, query: object = None) -> None:
        assert query == {"target": "m1"}
        if method == "POST":
            assert isinstance(body, dict)
            self.volumes.add(body["name"])
        elif method == "DELETE":
            self.volumes.remove(endpoint.rsplit("/", 1)[-1])
        elif endpoint.rsplit("/", 1)[-1] not in self.volumes:
            raise lxdapi.ApiError(404, "not found")
        self.done.append(f"{method} volume")

    def pull_file(self, instance: str, path: str, limit: int = 0) -> bytes:
        raise lxdapi.ApiError(404, "not found")  # no host keys: new ones are made

    def request(self, method: str, name: str, path: str = "", body: object = None,
                query: object = None, wait: float = 0) -> object:  # fmt: skip
        if path == "/snapshots":
            assert query == {"recursion": "1"}
            return [{"name": snap, "created_at": "2026-12-03T10:20:30Z"} for snap in self.snapshots]
        if (method, path) == ("DELETE", ""):
            assert self.now == STOPPED
            self.now = MISSING
            self.done.append("delete")
            return None
        assert (method, path) == ("POST", "/rebuild") and self.now == STOPPED
        assert body == {"source": {"type": "image", "alias": "lab-image"}}
        if self.rebuild_fails:
            raise lxdapi.ApiError(500, "the pool is full")
        self.done.append("rebuild")
        return None

    def state(self, name: str) -> str:
        return self.now

    def make(self, reg: object, user: User) -> None:
        assert (self.now == MISSING and lxdrebuild.REBUILD_API not in self.extensions) or self.volumes
        if self.make_fails:
            raise lxdapi.ApiError(500, "the pool is full")
        self.now = STOPPED
        self.devices = set()  # the registry's devices alone
        self.done.append("make")

    def start(self, name: str) -> bool:
        self.now = RUNNING
        self.done.append("start")
        return True

    def stop(self, name: str) -> None:
        self.now = STOPPED
        self.done.append("stop")

    def reconfigure(self, user: User, extra_devices: dict[str, dict[str, str]] | None = None) -> None:
        if extra_devices and self.refuse_volume:  # LXD 5.0.2 in a project that allows the NAS's path
            raise lxdapi.ApiError(
                400, 'Invalid device "gpushell-home": Disk source path "alice-home" not allowed'
            )
        self.devices = set(extra_devices or {})
        self.done.append(f"devices {sorted(self.devices)}")

    def run_inside(self, name: str, command: list[str], timeout: float = 90.0) -> int:
        assert command[:2] == ["sh", "-c"] and command[3:] == ["sh", lxdrebuild.HOME_MOUNT, "alice"]
        assert self.now == RUNNING and lxdrebuild.HOME_DEVICE in self.devices
        self.done.append("save" if command[2] == lxdrebuild.SAVE_HOME else "bring back")
        return self.exits[command[2]]

    def give_identity(self, user: User, keys: str, host_keys: object = None) -> None:
        self.done.append("identity")

    def install_keys(self, user: User, keys: str) -> None:
        self.done.append("keys")


def rebuild(engine: Engine, keep_home: bool = True) -> None:
    lxdrebuild.rebuild(engine.reg, engine.reg.users["alice"], engine, "ssh-ed25519 AAAA alice\n", keep_home)


def test_the_home_goes_aside_and_comes_back_around_the_engines_rebuild() -> None:
    engine = Engine(state=STOPPED)
    rebuild(engine)
    assert engine.done == [
        "POST volume", "devices ['gpushell-home']", "start", "save", "stop", "rebuild", "identity",
        "start", "bring back", "keys", "devices []", "DELETE volume",
    ]  # fmt: skip
    assert engine.volumes == set() and engine.now == RUNNING


def test_wiping_the_home_makes_no_volume() -> None:
    engine = Engine()
    rebuild(engine, keep_home=False)
    assert engine.done == ["stop", "rebuild", "identity"]


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (Engine(snapshots=("b", "a")), "delete-snapshot NAME for each of: a, b"),
        (
            Engine(snapshots=("a",), extensions=()),
            "delete-snapshot NAME for each of: a",
        ),  # a delete takes them
        (Engine(state=MISSING), "your container does not exist; ask your administrator"),  # no home aside
    ],
)
def test_what_cannot_be_done_is_refused_before_any_change(engine: Engine, message: str) -> None:
    before = engine.now
    with pytest.raises(GpushellError, match=message):
        rebuild(engine)
    assert engine.done == [] and engine.now == before


def test_without_the_rebuild_api_the_instance_is_made_again_and_the_home_carried_across() -> None:
    engine = Engine(state=STOPPED, extensions=("clustering",))  # LXD 5.0.2
    rebuild(engine)
    assert engine.done == [
        "POST volume", "devices ['gpushell-home']", "start", "save", "stop", "delete", "make",
        "devices ['gpushell-home']", "identity", "start", "bring back", "keys", "devices []", "DELETE volume",
    ]  # fmt: skip
    assert engine.volumes == set() and engine.now == RUNNING


def test_a_make_that_failed_after_the_delete_is_finished_by_the_next_rebuild() -> None:
    engine = Engine(extensions=(), make_fails=True)
    with pytest.raises(GpushellError, match="your home is kept aside and comes back with your next rebuild"):
        rebuild(engine)
    assert engine.now == MISSING and engine.volumes == {VOLUME}
    engine.make_fails, engine.done = False, []
    rebuild(engine)
    assert engine.done == [
        "GET volume", "make", "devices ['gpushell-home']", "identity", "start", "bring back", "keys",
        "devices []", "DELETE volume",
    ]  # fmt: skip
    assert engine.volumes == set() and engine.now == RUNNING


@pytest.mark.parametrize(
    ("status", "message"),
    [(lxdrebuild.NOT_A_DIRECTORY, "not a real directory"), (1, "could not copy its home aside")],
)
def test_a_home_that_cannot_go_aside_is_refused_and_its_volume_goes(status: int, message: str) -> None:
    engine = Engine(save=status)
    with pytest.raises(GpushellError, match=message):
        rebuild(engine)
    assert "rebuild" not in engine.done and engine.volumes == set() and engine.devices == set()


def test_a_failed_rebuild_keeps_the_home_aside_and_the_next_one_brings_it_back() -> None:
    engine = Engine(rebuild_fails=True)
    with pytest.raises(GpushellError, match="your home is kept aside and comes back with your next rebuild"):
        rebuild(engine)
    assert engine.volumes == {VOLUME}  # the only copy of the home
    engine.rebuild_fails, engine.done = False, []
    rebuild(engine)
    assert engine.done[:2] == ["GET volume", "devices ['gpushell-home']"]  # found, not made again
    assert "save" in engine.done and engine.done[-3:] == ["keys", "devices []", "DELETE volume"]
    assert engine.volumes == set()


def test_a_home_that_does_not_come_back_stays_on_its_volume() -> None:
    engine = Engine(bring_back=1)
    with pytest.raises(GpushellError, match="your home is still in its mnt/gpushell-home/alice"):
        rebuild(engine)
    assert engine.volumes == {VOLUME} and "DELETE volume" not in engine.done


def test_wiping_the_home_drops_one_an_earlier_rebuild_kept_aside() -> None:
    engine = Engine(volume=True)
    rebuild(engine, keep_home=False)
    assert engine.done == ["GET volume", "stop", "rebuild", "identity", "devices []", "DELETE volume"]
    assert engine.volumes == set()


def test_an_engine_that_refuses_the_home_volume_changes_nothing_and_says_how_to_rebuild() -> None:
    engine = Engine(extensions=(), refuse_volume=True)
    with pytest.raises(
        GpushellError, match=r"your home cannot be kept .* rebuild --wipe-home --yes"
    ) as caught:
        rebuild(engine)
    assert "Disk source path" in caught.value.log_message
    assert engine.done == ["POST volume", "devices []", "DELETE volume"] and engine.now == RUNNING
    rebuild(engine, keep_home=False)  # no volume needed: made again from the image
    assert engine.done[3:] == ["stop", "delete", "make", "identity"]
