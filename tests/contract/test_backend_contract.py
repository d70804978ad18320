"""What every container backend does, checked on the fake (unit run) and on real LXC (integration run).

The fake backend stands in for LXC in the unit tests; these tests hold it
to the same answers LXC gives, so a unit test that passes on the fake
means what it says.  A second backend (issue: several hosts) joins the
parameter list and must pass the same suite.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gpushell.containers.backend import FROZEN, MISSING, RUNNING, STOPPED, ContainerDriver
from gpushell.containers.lxc import LxcDriver
from gpushell.core.errors import GpushellError
from gpushell.gpu.gpudevices import Node
from tests.fakes import FakeBackend

# A device node for the live device tests: GPU 7's numbers, a node no container here gets at start.
LENT = Node("nvidia7", 195, 7)


@dataclass
class Subject:
    backend: ContainerDriver
    name: str  # a defined container, stopped between tests
    lent_source: str  # the host's node for LENT (a stand-in made with mknod for LXC)


def fake_subject(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subject]:
    backend = FakeBackend(default=MISSING, lxcpath=str(tmp_path_factory.mktemp("lxc")))
    backend.define("contract")
    yield Subject(backend, "contract", "/nonexistent/nvidia7")


def lxc_subject() -> Iterator[Subject]:
    from tests.integration.lab import Lab

    if os.geteuid() != 0:
        pytest.fail("the LXC contract needs root (a real container)")
    lab = Lab()
    try:
        lab.create()
        student = lab.add_student("contract")
        source = f"{lab.root}/nvidia7"  # under the lab's root, removed with it
        os.mknod(source, 0o666 | stat.S_IFCHR, os.makedev(LENT.major, LENT.minor))
        yield Subject(LxcDriver(lab.lxcpath), student.container, source)
    finally:
        lab.destroy()


@pytest.fixture(
    scope="module",
    params=["fake", pytest.param("lxc", marks=pytest.mark.integration)],
)
def subject(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subject]:
    made = fake_subject(tmp_path_factory) if request.param == "fake" else lxc_subject()
    yield from made


@pytest.fixture
def stopped(subject: Subject) -> Iterator[Subject]:
    """The subject, stopped again after the test whatever it did."""
    yield subject
    if subject.backend.state(subject.name) == FROZEN:
        subject.backend.unfreeze(subject.name)
    subject.backend.stop(subject.name)


def test_a_defined_container_is_stopped_with_its_files_in_place(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    assert backend.exists(name) and name in backend.names()
    assert backend.state(name) == STOPPED and backend.info(name) == (STOPPED, None)
    assert backend.may_be_running(name) is False
    assert os.path.isdir(backend.rootfs(name)) and os.path.isfile(backend.config_path(name))
    assert os.path.dirname(backend.rootfs(name)) == backend.directory(name)


def test_start_runs_it_once(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    assert backend.start(name) is True
    state, pid = backend.info(name)
    assert (state, backend.state(name)) == (RUNNING, RUNNING)
    assert pid is not None and pid > 1
    assert name in backend.running() and backend.may_be_running(name)
    assert backend.start(name) is False  # running already: left alone
    assert backend.info(name) == (RUNNING, pid)


def test_freeze_stops_every_task_and_unfreeze_resumes(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    backend.start(name)
    _, pid = backend.info(name)
    assert pid is not None
    backend.freeze(name)
    assert backend.state(name) == FROZEN and backend.cgroup_frozen(pid)
    backend.unfreeze(name)
    assert backend.state(name) == RUNNING and not backend.cgroup_frozen(pid)


def test_attach_runs_a_command_inside_without_the_callers_environment(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    backend.start(name)
    argv = backend.attach(name, ["/bin/sh", "-c", "echo in:${GPUSHELL_CONTRACT:-clear}"])
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GPUSHELL_CONTRACT": "leaked"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (0, "in:clear\n"), result.stderr


def test_a_blocked_container_cannot_start_until_released(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    backend.start(name)
    with pytest.raises(GpushellError):
        backend.block_start(name)  # running: nothing to hold
    backend.stop(name)
    assert backend.state(name) == STOPPED
    guard = backend.block_start(name)
    try:
        with pytest.raises(GpushellError):
            backend.start(name)
        assert backend.state(name) == STOPPED
    finally:
        guard.close()
    assert backend.start(name) is True


def test_a_missing_container_is_said_to_be_missing(subject: Subject) -> None:
    backend, name = subject.backend, "no-such-container"
    assert not backend.exists(name) and name not in backend.names()
    assert backend.state(name) == MISSING and backend.info(name) == (MISSING, None)
    with pytest.raises(GpushellError):
        backend.start(name)


def test_a_device_comes_and_goes_in_a_running_container_any_number_of_times(stopped: Subject) -> None:
    backend, name = stopped.backend, stopped.name
    backend.add_device(name, stopped.lent_source, LENT)  # stopped: nothing to do, no error
    backend.remove_device(name, LENT)
    assert backend.device_holders(name, LENT) == []
    backend.start(name)
    for _ in range(2):
        backend.add_device(name, stopped.lent_source, LENT)
    assert backend.device_holders(name, LENT) == []  # there, and nobody has it open
    for _ in range(2):
        backend.remove_device(name, LENT)
    assert backend.device_holders(name, LENT) == []
    backend.add_device(name, stopped.lent_source, LENT)  # and back again after a return
    backend.remove_device(name, LENT)
