"""registry_store: the one way the registry is read and changed."""

from __future__ import annotations

import ast
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gpushell.core import registry, registry_edit
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.paths import Paths
from gpushell.system import files, lock, registry_store

TEXT = """\
# The lab's registry.  Keep this comment.
subnet: 10.0.3.0/24
template: debian   # the default template

users:
  # first student
  alice:
    port: 22001
    ip: 10.0.3.2
    idmap: 1000000
"""


@pytest.fixture
def paths(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> Paths:
    path = os.path.join(tmp_path, "gpushell.yaml")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(TEXT)
    monkeypatch.setattr(registry_store, "check_owned_by_root", lambda path: None)  # tmp is ours, not root's
    return Paths(registry=path, run_dir=os.path.join(tmp_path, "run"))


def content(paths: Paths) -> str:
    with open(paths.registry, encoding="utf-8") as stream:
        return stream.read()


def set_template(name: str) -> Callable[[str, registry.Registry], str]:
    return lambda text, reg: registry_edit.set_setting(text, "template", name)


# --- update ------------------------------------------------------------------------------------


def test_update_writes_the_edit_and_keeps_comments_and_layout(paths: Paths) -> None:
    old, new = registry_store.update(paths, set_template("cuda12"))
    assert (old.template, new.template) == ("debian", "cuda12")
    assert content(paths) == TEXT.replace("template: debian", "template: cuda12")
    assert registry_store.load(paths) == new


def test_update_gives_the_edit_the_text_and_the_parsed_registry(paths: Paths) -> None:
    seen = []

    def edit(text: str, reg: registry.Registry) -> str:
        seen.append((text, list(reg.users)))
        return text

    registry_store.update(paths, edit)
    assert seen == [(TEXT, ["alice"])]


def test_an_edit_that_does_not_validate_is_refused_in_one_line_and_not_written(paths: Paths) -> None:
    before = os.stat(paths.registry)
    bad = lambda text, reg: text.replace("port: 22001", "port: 80")  # noqa: E731
    with pytest.raises(GpushellError) as info:
        registry_store.update(paths, bad)
    assert info.value.user_message.startswith("not changed: ")
    assert len(info.value.user_message.splitlines()) == 1
    assert info.value.status == ExitStatus.USAGE
    assert content(paths) == TEXT
    assert os.stat(paths.registry).st_ino == before.st_ino  # not even rewritten
    assert sorted(os.listdir(os.path.dirname(paths.registry))) == ["gpushell.yaml", "run"]  # no temporary


def test_an_edit_that_raises_leaves_the_file_and_frees_the_lock(paths: Paths) -> None:
    def refuse(text: str, reg: registry.Registry) -> str:
        raise GpushellError("template x is not built")

    with pytest.raises(GpushellError, match="not built"):
        registry_store.update(paths, refuse)
    assert content(paths) == TEXT
    registry_store.update(paths, set_template("cuda12"))  # the lock was let go


def test_an_unchanged_text_is_not_rewritten(paths: Paths) -> None:
    before = os.stat(paths.registry)
    registry_store.update(paths, lambda text, reg: text)
    after = os.stat(paths.registry)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_update_holds_the_registry_lock_while_it_edits(paths: Paths) -> None:
    held = []

    def edit(text: str, reg: registry.Registry) -> str:
        fd = os.open(paths.registry_lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(True)
        finally:
            os.close(fd)
        return text

    registry_store.update(paths, edit)
    assert held == [True]


def test_update_writes_atomically(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    monkeypatch.setattr(
        registry_store, "write_atomically", lambda path, text, *rest: written.append((path, text))
    )
    registry_store.update(paths, set_template("cuda12"))
    assert written == [(paths.registry, TEXT.replace("template: debian", "template: cuda12"))]


def test_a_held_lock_ends_the_wait_in_one_clear_line(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_store, "REGISTRY_WAIT", 0.05)
    with lock.locked(paths.registry_lock), pytest.raises(lock.Busy) as info:
        registry_store.update(paths, set_template("cuda12"))
    assert info.value.user_message == registry_store.REGISTRY_BUSY
    assert "\n" not in info.value.user_message
    assert content(paths) == TEXT


def test_two_updates_at_once_both_land(paths: Paths) -> None:
    """The second reads the first's result: no lost update."""
    entered = threading.Event()

    def slow_first(text: str, reg: registry.Registry) -> str:
        entered.set()
        time.sleep(0.2)
        return registry_edit.set_setting(text, "template", "cuda12")

    first = threading.Thread(target=registry_store.update, args=(paths, slow_first))
    first.start()
    entered.wait()
    registry_store.update(paths, lambda text, reg: text.replace("port: 22001", "port: 22005"))
    first.join()
    assert content(paths) == TEXT.replace("template: debian", "template: cuda12").replace("22001", "22005")


def test_change_writes_only_when_asked(paths: Paths) -> None:
    with registry_store.Change(paths) as change:
        new = change.propose(registry_edit.remove_user(change.old_text, "alice"))
        assert new.users == {} and content(paths) == TEXT  # validated, not yet written
    assert content(paths) == TEXT
    with registry_store.Change(paths) as change:
        change.propose(registry_edit.remove_user(change.old_text, "alice"))
        change.write()
    assert "alice" not in registry_store.load(paths).users
    assert "# The lab's registry.  Keep this comment." in content(paths)


# --- create ------------------------------------------------------------------------------------


def test_create_writes_a_starter_only_where_there_is_none(paths: Paths) -> None:
    assert registry_store.create(paths, "subnet: 10.0.4.0/24\n") is False
    assert content(paths) == TEXT
    os.unlink(paths.registry)
    assert registry_store.create(paths, "subnet: 10.0.4.0/24\n") is True
    assert str(registry_store.load(paths).subnet) == "10.0.4.0/24"


def test_create_refuses_a_starter_that_would_not_load(paths: Paths) -> None:
    os.unlink(paths.registry)
    with pytest.raises(GpushellError):
        registry_store.create(paths, "subnet: nonsense\n")
    assert not os.path.exists(paths.registry)


# --- loading ----------------------------------------------------------------------------------


def test_load_all_parses_once_then_reads_the_compiled_copy(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = registry_store.load_all(paths)
    assert os.stat(paths.registry_cache).st_mode & 0o777 == 0o600
    parses: list[str] = []
    real_parse = registry.parse

    def counted_parse(text: str, path: str) -> registry.Registry:
        parses.append(path)
        return real_parse(text, path)

    monkeypatch.setattr(registry, "parse", counted_parse)
    assert registry_store.load_all(paths) == first  # from the copy: no parse
    assert registry_store.load_user(paths, "alice")[1] == first.users["alice"]
    assert parses == []
    with open(paths.registry, "a", encoding="utf-8") as stream:
        stream.write("# an edit\n")
    assert registry_store.load_all(paths) == first  # the edit changed the key: parsed again
    assert parses == [paths.registry]


def test_load_user_gives_one_students_entry_and_refuses_an_unknown_one(paths: Paths) -> None:
    for _ in range(2):  # parsed, then from the copy
        reg, user = registry_store.load_user(paths, "alice")
        assert (user.port, reg.template) == (22001, "debian")
        with pytest.raises(GpushellError) as info:
            registry_store.load_user(paths, "mallory")
        assert info.value.status == ExitStatus.NOT_REGISTERED


def test_an_unsafe_registry_is_refused_by_load_but_read_for_doctor(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsafe(path: str) -> None:
        raise GpushellError(f"{path} is writable by others", status=ExitStatus.CONFIG)

    monkeypatch.setattr(registry_store, "check_owned_by_root", unsafe)
    with pytest.raises(GpushellError, match="writable by others"):
        registry_store.load(paths)
    assert list(registry_store.load_for_doctor(paths).users) == ["alice"]


def test_load_for_doctor_says_why_it_cannot_read(paths: Paths) -> None:
    os.unlink(paths.registry)
    with pytest.raises(GpushellError, match="cannot read"):
        registry_store.load_for_doctor(paths)


# --- the one atomic writer --------------------------------------------------------------------


def test_write_atomically_replaces_with_the_mode_and_leaves_no_temporary(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    files.write_atomically(path, "one", 0o640)
    files.write_atomically(path, b"two", 0o600, durable=False)
    with open(path, encoding="utf-8") as stream:
        assert stream.read() == "two"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_write_atomically_replaces_a_temporary_left_by_a_killed_writer(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(os.path.join(tmp_path, f".f.{os.getpid()}.tmp"), "w", encoding="utf-8") as stream:
        stream.write("stale")
    files.write_atomically(path, "new")
    assert os.listdir(tmp_path) == ["f"]


def test_a_failed_write_leaves_the_old_file(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = os.path.join(tmp_path, "f")
    files.write_atomically(path, "old")

    def no_rename(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(OSError):
        files.write_atomically(path, "new")
    monkeypatch.undo()
    with open(path, encoding="utf-8") as stream:
        assert stream.read() == "old"
    assert os.listdir(tmp_path) == ["f"]


# --- the store is the only way in --------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[2] / "gpushell"
# Where other modules may name the registry file: doctor checks its owner, init whether one is there.
NAMING_THE_FILE = {"check_owned_by_root", "os.path.exists"}


def test_every_read_and_edit_of_the_registry_goes_through_the_store() -> None:
    """No other module parses the registry, opens, writes or locks its file to edit it by hand."""
    found = []
    sources = sorted(PACKAGE.glob("**/*.py"))
    assert len(sources) > 40  # the package was really read
    for path in sources:
        if path.stem in ("registry_store", "registry"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            called = ast.unparse(node.func)
            arguments = [ast.unparse(arg) for arg in [*node.args, *(k.value for k in node.keywords)]]
            if called in ("registry.parse", "parse") or (
                any(arg.endswith("paths.registry") for arg in arguments) and called not in NAMING_THE_FILE
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if any(arg.endswith("registry_lock") for arg in arguments):
                # apply and template build hold the lock to keep editors out; they edit nothing
                assert path.stem == "commands", f"{path.name}:{node.lineno}"
    assert found == []
