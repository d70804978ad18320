"""template: the apt mirror lookup and the cache key."""

from __future__ import annotations

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
