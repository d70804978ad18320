"""The resident helper's pieces, on socket pairs and a socket in a temporary directory.

The server itself, forking a child per request for real students' logins,
runs in the integration tests (every lab starts one; tests/integration/
test_helper_server.py attacks it).  Here: the request's framing and bounds,
who the kernel says is calling, how many children one caller gets, and the
shell's side of the wire, answered by a small listener in a thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gpushell.core import protocol
from gpushell.core.errors import CONTACT_ADMIN, ExitStatus, GpushellError
from gpushell.helper import server
from gpushell.system import helperlink


def test_a_request_is_the_verb_then_what_stdin_would_carry() -> None:
    data = protocol.request("snapshot", b"name=before-exam\n")
    assert data == b"snapshot\nname=before-exam\n"
    assert protocol.split_request(data) == ("snapshot", "name=before-exam\n")
    assert protocol.split_request(protocol.request("login")) == ("login", "")


@pytest.mark.parametrize(
    "data",
    [b"", b"login", b"\xff\xfe\n", b"login\n" + b"x" * protocol.MAX_REQUEST, b"login\n\xff"],
)
def test_what_is_not_a_request_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.split_request(data)


def test_the_caller_is_the_uid_the_kernel_recorded_at_connect() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert server.peer_uid(ours) == os.getuid()


def test_root_and_unknown_uids_are_no_student() -> None:
    with pytest.raises(GpushellError) as root:
        server.caller_name(0)
    assert root.value.status == ExitStatus.USAGE
    with pytest.raises(GpushellError) as unknown:
        server.caller_name(3999999999)
    assert unknown.value.user_message == CONTACT_ADMIN
    assert unknown.value.log_message == "peer uid 3999999999 has no account"
    assert server.caller_name(65534) == "nobody"


def test_one_caller_gets_a_few_children_and_all_callers_a_bounded_number() -> None:
    assert server.admitted([], 1001)
    mine = [1001] * (server.MAX_PER_CALLER - 1)
    assert server.admitted(mine, 1001)
    assert not server.admitted([*mine, 1001], 1001)
    assert server.admitted([*mine, 1001], 1002)  # a neighbour is not held up by it
    crowd = list(range(2000, 2000 + server.MAX_CHILDREN))
    assert not server.admitted(crowd, 1002)


def test_a_request_is_read_to_the_callers_end_of_it() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        theirs.sendall(b"gpu-kill\n")
        theirs.sendall(b"4242\n")
        theirs.shutdown(socket.SHUT_WR)
        assert server._read_request(ours) == (["gpu-kill"], "4242\n")


def test_an_endless_request_is_cut_at_its_bound() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        theirs.setblocking(False)
        try:
            while True:  # far more than a request: the reader stops at its bound
                theirs.send(b"x" * 4096)
        except BlockingIOError:
            pass
        with pytest.raises(ValueError):
            server._read_request(ours)


def test_a_caller_that_never_finishes_its_request_is_dropped_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "REQUEST_SECONDS", 0.3)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        theirs.sendall(b"log")  # and then nothing, ever, without hanging up
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            server._read_request(ours)
        assert time.monotonic() - began < 2


def test_the_socket_is_made_for_root_and_the_group_alone(tmp_path: str) -> None:
    if os.getuid() != 0:
        pytest.skip("the socket is chowned to root: run as root (CI does)")
    path = f"{tmp_path}/helper.sock"
    with open(path, "w", encoding="utf-8"):
        pass  # a stale file where the socket goes
    group = "nogroup"
    listener = server.listen(path, group)
    with listener:
        info = os.stat(path)
        assert (info.st_uid, oct(info.st_mode & 0o7777)) == (0, "0o660")
        import grp

        assert info.st_gid == grp.getgrnam(group).gr_gid


# --- the shell's side ---------------------------------------------------------------------------


@contextlib.contextmanager
def one_answer(path: str, answer: bytes, delay: float = 0.0) -> Iterator[list[bytes]]:
    """A listener at path that reads one request whole (as the server does), waits delay, sends answer.

    Yields the requests received, filled in once the request is read.
    """
    received: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while chunk := connection.recv(4096):
                data += chunk
            received.append(data)
            time.sleep(delay)
            connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener:
        yield received
    thread.join(5)


def test_the_shell_sends_the_request_and_reads_the_whole_answer(tmp_path: str) -> None:
    path, ticks = f"{tmp_path}/helper.sock", list[float]()
    # Long enough an answer for the shell's spinner to tick.
    with one_answer(path, b"state=running\nport=22001\n", delay=0.35) as received:
        answer = helperlink.ask(path, protocol.request("login"), ticks.append)
    assert answer == "state=running\nport=22001\n"
    assert received == [b"login\n"]
    assert ticks and ticks == sorted(ticks)  # the spinner was told how long it has been


def test_no_server_is_none_so_the_shell_takes_sudo(tmp_path: str) -> None:
    assert helperlink.ask(f"{tmp_path}/none.sock", protocol.request("login"), lambda _s: None) is None
    stale = f"{tmp_path}/stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)  # a socket file nobody listens on: a server that died
    dead.close()
    assert helperlink.ask(stale, protocol.request("login"), lambda _s: None) is None
    if os.getuid() != 0:  # root passes any mode
        return
    closed = f"{tmp_path}/closed.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(closed)
        listener.listen(1)
        os.chmod(closed, 0o600)
        pid = os.fork()
        if pid == 0:  # not the socket's owner: sudo decides for this caller
            code = 2
            try:
                os.setgid(65534)
                os.setuid(65534)
                code = 0 if helperlink.ask(closed, protocol.request("login"), lambda _s: None) is None else 1
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_flooding_answer_is_kept_to_its_cap(tmp_path: str) -> None:
    path = f"{tmp_path}/flood.sock"
    with one_answer(path, b"x" * (4 * helperlink.MAX_ANSWER)):
        answer = helperlink.ask(path, protocol.request("status"), lambda _s: None)
    assert answer is not None and len(answer) == helperlink.MAX_ANSWER


def test_the_login_shell_asks_the_server_first_and_sudo_without_one(tmp_path: str) -> None:
    from gpushell.core.paths import Paths
    from gpushell.student.shell import Session, Terminal

    stand_in_sudo = f"{tmp_path}/sudo"  # what `sudo -n HELPER VERB` answers here: the verb it was given
    with open(stand_in_sudo, "w", encoding="utf-8") as script:
        script.write('#!/bin/sh\necho "state=STOPPED"; echo "verb=$3"\n')
    os.chmod(stand_in_sudo, 0o755)
    path = f"{tmp_path}/helper.sock"
    quiet = io.StringIO()
    session = Session(
        Paths(helper_socket=path, sudo=stand_in_sudo), "alice", Terminal(quiet, quiet, quiet, {})
    )
    with one_answer(path, b"state=RUNNING\nport=22001\n") as received:
        assert session.helper("status") == {"state": "RUNNING", "port": "22001"}
    assert received == [b"status\n"]
    assert session.helper("stop") == {"state": "STOPPED", "verb": "stop"}  # the server gone: sudo
