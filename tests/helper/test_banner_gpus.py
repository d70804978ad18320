"""The login banner's GPU keys: the cached snapshot on one host, the member's snapshot on a cluster."""

from __future__ import annotations

import time

import pytest

from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.gpu import gpucache
from gpushell.helper import services, verbs
from gpushell.student.banner import gpu_lines
from tests.fakes import ONE_MEMBER_CLUSTER, FakeBackend

ONE_HOST = """
users:
  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000, gpus: [0]}
"""


@pytest.fixture
def queued(monkeypatch) -> list[object]:
    after: list[object] = []
    monkeypatch.setattr(verbs, "after_answer", after)
    return after


def context(text: str, tmp_path) -> services.Context:
    return services.Context(Paths(run_dir=str(tmp_path)), parse(text, "/etc/gpushell.yaml"), FakeBackend())


def test_on_a_cluster_the_banner_reads_its_members_snapshot_and_never_refreshes_it(tmp_path, queued) -> None:
    ctx = context(ONE_MEMBER_CLUSTER, tmp_path)
    keys = verbs.banner_gpus(ctx, ctx.registry.users["alice"])
    assert gpu_lines(keys) == "GPU status: run `gpus`\n"  # no report from m1 yet
    gpucache.write(ctx.paths.member_gpu_snapshot("m1"), {"taken": int(time.time()), "gpu_state": "no-driver"})
    keys = verbs.banner_gpus(ctx, ctx.registry.users["alice"])
    assert gpu_lines(keys) == "GPUs: none on m1 (no NVIDIA driver)\n"
    assert queued == []  # the front door's tick keeps it, from m1's own report


def test_on_one_host_a_missing_snapshot_is_made_after_the_answer(tmp_path, queued) -> None:
    ctx = context(ONE_HOST, tmp_path)
    keys = verbs.banner_gpus(ctx, ctx.registry.users["alice"])
    assert gpu_lines(keys) == "GPU status: run `gpus`\n"
    assert len(queued) == 1
