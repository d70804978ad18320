"""helper/loans.py: the book is written first, then the devices follow it (fake backend, stand-in nodes).

The GPU nodes come from `host_nodes`, replaced here by a fixed list: the
nodes' own numbers are what gpudevices reads from real device files, which
the integration tests (test_lending.py) make.
"""

from __future__ import annotations

import os

import pytest

from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.gpu.gpudevices import Node
from gpushell.helper import loans, services
from gpushell.system import loanstore, registry_store
from tests.fakes import FakeBackend

NODES = (
    Node("nvidia0", 195, 0),
    Node("nvidia1", 195, 1),
    Node("nvidiactl", 195, 255),
    Node("nvidia-uvm", 509, 0),
)
SHARED = {"nvidiactl", "nvidia-uvm"}


def registry(lending: str = "lending: {gpus: all, max_per_student: 2}\n", ann_gpus: str = "none"):
    return parse(
        lending
        + "users:\n"
        + f"  ann: {{port: 22001, ip: 10.0.3.2, idmap: 1000000, gpus: {ann_gpus}}}\n"
        + "  ben: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n",
        "/etc/gpushell.yaml",
    )


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setattr(loans, "host_nodes", lambda reg: NODES)
    monkeypatch.setattr(loans, "busy_gpus", lambda reg: None)  # no NVML here
    monkeypatch.setattr(loans, "whole_registry", lambda ctx: ctx.registry)  # no registry file: the ctx's
    paths = Paths(run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))
    (tmp_path / "run").mkdir()
    driver = FakeBackend({"ann": RUNNING, "ben": RUNNING})
    return paths, driver


WHOLE_REGISTRY = loans.whole_registry


def context(lab, reg=None) -> services.Context:
    paths, driver = lab
    return services.Context(paths, reg or registry(), driver)


def test_borrow_puts_the_gpu_and_its_shared_nodes_into_the_running_container(lab) -> None:
    ctx = context(lab)
    answer = loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1", "duration": "2h"})
    assert answer["lent"] == "0"
    assert ctx.driver.devices["ann"] == {"nvidia0"} | SHARED
    (loan,) = loanstore.read(ctx.paths).of("ann")
    assert loan.gpu == 0 and loan.ends - loan.started == 2 * 3600
    assert answer["loans"] == f"0:{int(loan.ends)}:0"


def test_the_last_free_gpu_goes_to_one_student_and_the_next_hears_none_free(lab) -> None:
    ctx = context(lab)
    loans.borrow(ctx, ctx.registry.users["ann"], {"count": "2"})
    with pytest.raises(GpushellError, match="none free"):
        loans.borrow(ctx, ctx.registry.users["ben"], {"count": "1"})
    assert "ben" not in ctx.driver.devices
    assert loanstore.read(ctx.paths).lent == {0, 1}


def test_without_a_duration_a_loan_lasts_the_labs_longest(lab) -> None:
    ctx = context(lab)
    loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1"})
    (loan,) = loanstore.read(ctx.paths).of("ann")
    assert loan.ends - loan.started == 86400  # the default max_duration, 1d


def test_a_stopped_container_gets_its_loans_at_its_next_start(lab) -> None:
    ctx = context(lab)
    ctx.driver.states["ann"] = STOPPED
    loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1"})
    assert "ann" not in ctx.driver.devices  # nothing to put a device into
    assert services.start(ctx, ctx.registry.users["ann"]) is True
    assert ctx.driver.devices["ann"] == {"nvidia0"} | SHARED


def test_return_takes_the_gpu_and_the_shared_nodes_when_none_is_left(lab) -> None:
    ctx = context(lab)
    ann = ctx.registry.users["ann"]
    loans.borrow(ctx, ann, {"count": "2"})
    answer = loans.give_back(ctx, ann, {"gpu": "1"})
    assert answer["returned"] == "1"
    assert ctx.driver.devices["ann"] == {"nvidia0"} | SHARED  # a GPU is left: so are its shared nodes
    loans.give_back(ctx, ann, {"gpu": "all"})
    assert ctx.driver.devices["ann"] == set()
    assert loanstore.read(ctx.paths).of("ann") == ()


def test_return_keeps_the_shared_nodes_of_a_student_with_a_gpu_of_their_own(lab) -> None:
    ctx = context(lab, registry(ann_gpus="[0]"))
    ann = ctx.registry.users["ann"]
    loans.borrow(ctx, ann, {"count": "1"})
    assert loanstore.read(ctx.paths).of("ann")[0].gpu == 1  # GPU 0 is hers already: not lendable
    ctx.driver.devices["ann"] |= {"nvidia0"}  # as her config gave it at start
    loans.give_back(ctx, ann, {"gpu": "1"})
    assert ctx.driver.devices["ann"] == {"nvidia0"} | SHARED


def test_returning_a_gpu_not_lent_to_you_changes_nothing(lab) -> None:
    ctx = context(lab)
    loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1"})
    with pytest.raises(GpushellError, match="not lent to you"):
        loans.give_back(ctx, ctx.registry.users["ben"], {"gpu": "0"})
    assert ctx.driver.devices["ann"] == {"nvidia0"} | SHARED
    assert loanstore.read(ctx.paths).lent == {0}


def test_extend_moves_the_end(lab) -> None:
    ctx = context(lab)
    ann = ctx.registry.users["ann"]
    loans.borrow(ctx, ann, {"count": "1", "duration": "1h"})
    before = loanstore.read(ctx.paths).of("ann")[0].ends
    assert loans.extend(ctx, ann, {"gpu": "0", "duration": "30m"})["extended"] == 0
    assert loanstore.read(ctx.paths).of("ann")[0].ends == before + 1800


def test_a_waiter_gets_a_place_and_no_device(lab) -> None:
    ctx = context(lab)
    loans.borrow(ctx, ctx.registry.users["ann"], {"count": "2"})
    answer = loans.borrow(ctx, ctx.registry.users["ben"], {"count": "1", "wait": "1"})
    assert answer["queue_place"] == 1 and "lent" not in answer
    assert "ben" not in ctx.driver.devices


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"count": "x"}, "usage: borrow"),
        ({"count": "1", "duration": "8"}, "duration like"),
        ({"count": "1", "duration": "../x"}, "duration like"),
    ],
)
def test_a_malformed_request_is_refused_before_anything_changes(lab, request_fields, message) -> None:
    ctx = context(lab)
    with pytest.raises(GpushellError, match=message):
        loans.borrow(ctx, ctx.registry.users["ann"], request_fields)
    assert loanstore.read(ctx.paths).loans == ()
    assert ctx.driver.calls == []


def test_a_lab_without_lending_lends_nothing(lab) -> None:
    ctx = context(lab, registry(lending=""))
    with pytest.raises(GpushellError, match="does not lend"):
        loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1"})
    assert services.describe(ctx, ctx.registry.users["ann"], RUNNING)["disabled"] == "borrow,extend,return"


def test_a_damaged_loan_book_costs_the_banner_its_loan_lines_not_the_login(lab, monkeypatch) -> None:
    ctx = context(lab)
    os.makedirs(ctx.paths.state_dir, mode=0o700, exist_ok=True)
    with open(ctx.paths.loans, "w", encoding="utf-8") as book_file:
        book_file.write("{not json")
    os.chmod(ctx.paths.loans, 0o600)
    warned = []
    monkeypatch.setattr(loans.audit, "record", lambda *args, **kwargs: warned.append(args))
    assert loans.shown_loans(ctx, ctx.registry.users["ann"]) == {}
    ctx.driver.states["ann"] = STOPPED
    assert services.start(ctx, ctx.registry.users["ann"]) is True  # the container starts all the same
    assert [entry[1:3] for entry in warned] == [("loans", "failed"), ("loans", "failed")]
    with pytest.raises(GpushellError, match="unavailable"):
        loans.borrow(ctx, ctx.registry.users["ann"], {"count": "1"})  # a change is refused, never a guess


def test_a_gpu_of_anothers_own_is_never_lent_though_the_helper_was_given_the_caller_alone(
    lab, tmp_path, monkeypatch
) -> None:
    """A helper's context is registry_store.load_user's: the caller's entry, the others not built.
    The free GPUs are decided on the whole registry, from the real file and its compiled copy."""
    paths = Paths(
        registry=str(tmp_path / "gpushell.yaml"), run_dir=lab[0].run_dir, state_dir=lab[0].state_dir
    )
    (tmp_path / "gpushell.yaml").write_text(
        "lending: {gpus: all}\nusers:\n"
        "  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000, gpus: [0]}\n"
        "  ben: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n"
    )
    monkeypatch.setattr(registry_store, "check_owned_by_root", lambda path: None)  # tmp is ours
    monkeypatch.setattr(loans, "whole_registry", WHOLE_REGISTRY)
    registry_store.load_all(paths)  # writes the compiled copy, as any admin command does
    reg, ben = registry_store.load_user(paths, "ben")
    assert set(reg.users) == {"ben"}  # what the helper holds
    answer = loans.borrow(services.Context(paths, reg, lab[1]), ben, {"count": "1"})
    assert answer["lent"] == "1"  # GPU 0 is ann's own
