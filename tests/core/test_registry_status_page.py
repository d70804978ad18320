"""The registry's status_page: (enabled, names): its defaults, its errors, the helper's compiled copy."""

from __future__ import annotations

import pytest

from gpushell.core.model import StatusPage
from gpushell.core.registry import RegistryError, parse
from gpushell.system import registry_cache

USERS = "users:\n  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"


def test_without_the_key_the_page_is_written_and_names_nobody() -> None:
    assert parse(USERS, "/r").status_page == StatusPage(enabled=True, names=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status_page: {names: true}", StatusPage(True, True)),
        ("status_page: {enabled: false}", StatusPage(False, False)),
        ("status_page: {}", StatusPage(True, False)),
    ],
)
def test_the_keys_given_change_only_themselves(text: str, expected: StatusPage) -> None:
    assert parse(f"{text}\n{USERS}", "/r").status_page == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status_page: false", "/r:1: status_page: must be a mapping like {enabled: false} or {names: true}"),
        ("status_page: {names: yes please}", "/r:1: status_page.names: 'yes please' is not true or false"),
        ("status_page: {show: true}", "/r:1: status_page.show: unknown key"),
    ],
)
def test_a_wrong_status_page_is_named_with_its_line(text: str, message: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse(f"{text}\n{USERS}", "/r")
    assert caught.value.problems == [message]


def test_the_compiled_copy_keeps_it() -> None:
    full = parse(f"status_page: {{names: true, enabled: false}}\n{USERS}", "/r")
    copy = registry_cache.registry_from_plain(registry_cache.to_plain(full))
    assert copy.status_page == StatusPage(enabled=False, names=True)
    assert copy == full
