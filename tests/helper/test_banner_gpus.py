"""The login banner's GPU keys: the cached snapshot on one host, a pointer to `gpus` on a cluster."""

from __future__ import annotations

import pytest

from gpushell.core.paths import Paths
from gpushell.core.registry import parse
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


def test_on_a_cluster_the_banner_points_to_gpus_and_nothing_is_read(tmp_path, queued) -> None:
    keys = verbs.banner_gpus(context(ONE_MEMBER_CLUSTER, tmp_path))
    assert gpu_lines(keys) == "GPU status: run `gpus`\n"
    assert queued == []  # no snapshot of this host's GPUs: they are on a member


def test_on_one_host_a_missing_snapshot_is_made_after_the_answer(tmp_path, queued) -> None:
    keys = verbs.banner_gpus(context(ONE_HOST, tmp_path))
    assert gpu_lines(keys) == "GPU status: run `gpus`\n"
    assert len(queued) == 1
