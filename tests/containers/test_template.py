"""template: the apt mirror lookup and the cache key."""

from __future__ import annotations

import os
import subprocess

import pytest

from gpushell.containers import template
from gpushell.containers.template import PACKAGES, RECIPE_VERSION, SUITE, cache_key, mirror_from_apt_sources

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DEB822_SECURITY_FIRST = """\
Types: deb
URIs: http://deb.debian.org/debian-security/
Suites: bookworm-security
Components: main

Types: deb
URIs: https://mirror.example.org/debian/
Suites: bookworm
Components: main
"""


@pytest.mark.parametrize(
    ("texts", "mirror"),
    [
        (["deb http://deb.debian.org/debian bookworm main\n"], "http://deb.debian.org/debian"),
        (
            ["deb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main contrib\n"],
            "http://ftp.de.debian.org/debian/",
        ),
        (
            ["deb [signed-by=/usr/share/keyrings/d.gpg] http://m.example/debian bookworm main\n"],
            "http://m.example/debian",
        ),
        (
            ["# deb http://old.example/debian bookworm main\ndeb http://new.example/debian bookworm main\n"],
            "http://new.example/debian",
        ),
        (["deb http://new.example/debian bookworm main # the mirror\n"], "http://new.example/debian"),
        (
            [
                "deb-src http://src.example/debian bookworm main\n"
                "deb http://bin.example/debian bookworm main\n"
            ],
            "http://bin.example/debian",
        ),
        (
            [
                "deb http://security.debian.org/debian-security bookworm-security main\n"
                "deb http://deb.debian.org/debian bookworm main\n"
            ],
            "http://deb.debian.org/debian",
        ),
        (
            ["deb http://mirror.example/security bookworm main\ndeb http://x.example/debian bookworm main\n"],
            "http://x.example/debian",
        ),
        ([DEB822], "http://deb.debian.org/debian"),
        ([DEB822_SECURITY_FIRST], "https://mirror.example.org/debian/"),
        (["", "# nothing\n", DEB822], "http://deb.debian.org/debian"),
        (["deb http://first.example/debian bookworm main\n", DEB822], "http://first.example/debian"),
    ],
)
def test_mirror_found(texts, mirror):
    assert mirror_from_apt_sources(texts) == mirror


@pytest.mark.parametrize(
    "texts",
    [
        [],
        [""],
        ["# deb http://deb.debian.org/debian bookworm main\n"],
        ["deb-src http://deb.debian.org/debian bookworm main\n"],
        ["deb http://deb.debian.org/debian-security bookworm-security main\n"],
        ["deb http://deb.debian.org/debian\n"],
        ["Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"],
        ["#URIs: http://deb.debian.org/debian\n"],
    ],
)
def test_no_mirror(texts):
    assert mirror_from_apt_sources(texts) is None


def test_mirror_with_two_options():
    text = "deb [arch=amd64 signed-by=/usr/share/keyrings/d.gpg] http://deb.debian.org/debian bookworm main\n"
    assert mirror_from_apt_sources([text]) == "http://deb.debian.org/debian"


def test_cache_key():
    key = cache_key("bookworm", ("a", "b"))
    assert key.startswith("bookworm-")
    assert len(key) == len("bookworm-") + 12
    assert all(c in "0123456789abcdef" for c in key.removeprefix("bookworm-"))
    assert cache_key("bookworm", ("a", "b")) == key
    assert cache_key("trixie", ("a", "b")) != key.replace("bookworm", "trixie")
    assert cache_key("trixie", ("a", "b")).startswith("trixie-")
    assert cache_key("bookworm", ("a", "c")) != key
    assert cache_key("bookworm", ("a",)) != key
    assert cache_key("bookworm", ("a", "b", "c")) != key
    assert cache_key("bookworm", ("b", "a")) != key


def test_cache_key_changes_with_recipe_version(monkeypatch):
    before = cache_key(SUITE, PACKAGES)
    monkeypatch.setattr(template, "RECIPE_VERSION", RECIPE_VERSION + "x")
    assert cache_key(SUITE, PACKAGES) != before
    assert cache_key(SUITE, PACKAGES).startswith(f"{SUITE}-")


@pytest.mark.parametrize(("kind", "made_by"), [("dir", "DirStorage"), ("btrfs", "BtrfsStorage")])
def test_template_build_takes_the_tree_kind_from_the_registry_not_the_filesystem(
    tmp_path, monkeypatch, kind: str, made_by: str
):
    from gpushell.admin import commands
    from gpushell.admin.cli import Options
    from gpushell.containers import btrfs, dirstorage
    from gpushell.core.paths import Paths
    from gpushell.core.registry import parse
    from gpushell.system import registry_store

    lxcpath = tmp_path / "lxc"
    reg = parse(
        f"storage: {kind}\nlxcpath: {lxcpath}\ntemplate: tpl\n"
        "idmap:\n  start: 1000000\n  size: 65536\nusers:\n",
        "/etc/gpushell.yaml",
    )
    payload = tmp_path / "payload"
    (payload / "etc").mkdir(parents=True)
    (payload / "etc" / "hostname").write_text("tpl\n")
    tarball = tmp_path / "tpl.tar"
    subprocess.run(["tar", "-C", str(payload), "-cf", str(tarball), "."], check=True)
    roots: list[str] = []

    def make_root(store: object, path: str) -> None:
        roots.append(type(store).__name__)
        os.mkdir(path, 0o755)

    monkeypatch.setattr(registry_store, "load", lambda paths: reg)
    monkeypatch.setattr(btrfs, "is_btrfs", lambda path: True)  # the lxcpath is on btrfs either way
    monkeypatch.setattr(dirstorage.Storage, "make_root", make_root)
    monkeypatch.setattr(btrfs.BtrfsStorage, "make_root", make_root)
    monkeypatch.setattr(template, "ensure_cached", lambda *args: str(tarball))
    args = commands.build_parser().parse_args(["template", "build"], namespace=Options())
    assert args.run(Paths(run_dir=str(tmp_path / "run")), args) == 0
    assert roots == [made_by]
    assert (lxcpath / "tpl" / "rootfs" / "etc" / "hostname").read_text() == "tpl\n"
    assert sorted(os.listdir(lxcpath)) == ["tpl"]
