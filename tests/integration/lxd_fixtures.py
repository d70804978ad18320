"""Fixtures for the LXD backend's tests: a real three-member cluster with gpushell's image.

A test module takes `cluster` with `from .lxd_fixtures import cluster`; it
gets one cluster per engine, LXD and Incus (about 10 s each to build, image
included), taken down when the module ends: the engines' daemons, which run
as host root, would otherwise stay up through the modules after it and share
host root's kernel pools with their containers (test_limits.py measures
those).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from .lab import ENV, free_subnets
from .lxdcluster import ENGINES, Cluster, template_tarball

IMAGE_ALIAS = "gpushell-debian"
REQUIRED = ("nsenter", "openssl", "ip", "umount")


@contextlib.contextmanager
def running_cluster(members: int = 3, engine: str = "lxd") -> Iterator[Cluster]:
    """A cluster up with the image imported as IMAGE_ALIAS; taken down after, even after a failure."""
    # Missing parts are a failure, not a skip: `make test` installs them all.
    if os.geteuid() != 0:
        pytest.fail("the LXD cluster needs root (daemons, namespaces, mounts)")
    tools = (ENGINES[engine].daemon, ENGINES[engine].client, *REQUIRED)
    missing = [tool for tool in tools if shutil.which(tool, path=ENV["PATH"]) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)}; run `make test`, which installs them")
    subnet, container_subnet = free_subnets(2)
    cluster = Cluster("gpt" + secrets.token_hex(2), subnet, container_subnet, members, ENGINES[engine])
    try:
        cluster.up()
        cluster.import_image(IMAGE_ALIAS, template_tarball())
        yield cluster
    finally:
        cluster.down()


# Each test that takes a cluster runs on both engines, one cluster of each at a time.
ENGINE_NAMES = sorted(ENGINES)


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with running_cluster(engine=request.param) as running:
        yield running
