"""spawn.start and runner.start: a real child left running while the caller works on."""

from __future__ import annotations

import os
import time

import pytest

from gpushell import runner, spawn
from gpushell.environment import SAFE_ENV
from gpushell.errors import GpushellError


def test_start_returns_while_the_child_still_runs() -> None:
    began = time.monotonic()
    child = spawn.start(["/bin/sh", "-c", "sleep 0.5; echo done; echo said >&2; exit 3"], SAFE_ENV)
    assert time.monotonic() - began < 0.4
    assert os.waitpid(child.pid, os.WNOHANG) == (0, 0)  # not ended yet
    assert child.wait(10) == (3, "done\n", "said\n")


def test_input_and_output_larger_than_a_pipe_never_block_the_child() -> None:
    data = b"x" * 300_000  # a pipe holds 64 KiB: the child would wait for a reader
    child = spawn.start(["/bin/sh", "-c", "wc -c; head -c 200000 /dev/zero >&2"], SAFE_ENV, stdin=data)
    time.sleep(0.3)  # nobody reads meanwhile
    began = time.monotonic()
    status, out, err = child.wait(10, max_output=300_000)
    assert (status, out.strip(), len(err)) == (0, "300000", 200_000)
    assert time.monotonic() - began < 0.2  # it had finished meanwhile: the pipe held it all


def test_without_input_the_child_reads_end_of_file() -> None:
    assert spawn.start(["/bin/cat"], SAFE_ENV).wait(10) == (0, "", "")


def test_a_child_past_its_timeout_is_killed_and_reaped() -> None:
    child = spawn.start(["/bin/sleep", "30"], SAFE_ENV)
    with pytest.raises(spawn.Timeout):
        child.wait(0.2)
    with pytest.raises(ChildProcessError):  # already collected: no zombie left behind
        os.waitpid(child.pid, 0)


def test_a_missing_program_fails_at_start() -> None:
    with pytest.raises(FileNotFoundError):
        spawn.start(["no-such-program-here"], SAFE_ENV)


def test_runner_start_checks_the_result_as_run_does() -> None:
    started = runner.start(["/bin/sh", "-c", "echo first >&2; echo no such chain >&2; exit 1"])
    with pytest.raises(GpushellError) as raised:
        started.result()
    assert raised.value.user_message == "sh failed: no such chain"  # the admin's wording
    assert runner.start(["/bin/sh", "-c", "exit 2"]).result(check=False).returncode == 2
    assert runner.start(["/bin/cat"], stdin="rules\n").result().stdout == "rules\n"


def test_runner_start_tells_the_observers() -> None:
    seen: list[list[str]] = []
    runner.observers.append(lambda argv: seen.append(list(argv)))
    try:
        runner.start(["/bin/true"]).result()
    finally:
        runner.observers.pop()
    assert seen == [["/bin/true"]]
