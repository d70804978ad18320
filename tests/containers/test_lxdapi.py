"""lxdapi: the engine's REST client against a real TLS server on loopback.

The server stands in for an LXD member: it presents its own certificate,
demands gpushell's client certificate, and answers with the API's JSON
envelope.  The certificates are real (openssl), made per test.
"""

from __future__ import annotations

import errno
import http.server
import io
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from gpushell.containers import lxdapi
from gpushell.core.errors import GpushellError


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


EXPORT = bytes(range(256)) * (3 * 2**12 + 7)  # a backup's bytes: three chunks and a bit


class Member(http.server.BaseHTTPRequestHandler):
    """Answers like the engine: sync JSON for GETs, an operation for POSTs, errors as the envelope."""

    seen: ClassVar[list[tuple[str, str, bytes]]] = []  # what the member was asked, in order
    wait_seconds: ClassVar[float] = 0.0  # how long an operation takes to end

    def log_message(self, *_: object) -> None:
        pass

    def _answer(self, status: int, document: dict[str, object]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        if self.path.startswith("/1.0/operations/op1/wait"):
            time.sleep(self.wait_seconds)
            self._answer(200, {"type": "sync", "metadata": {"status": "Success", "status_code": 200,
                                                            "metadata": {"return": 0}}})  # fmt: skip
        elif self.path.startswith("/1.0/instances/alice/backups/b/export"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(EXPORT)))
            self.end_headers()
            self.wfile.write(EXPORT)
        elif self.path.startswith("/1.0/instances/alice/files") and "path=%2Fdir" in self.path:
            self._answer(200, {"type": "sync", "metadata": ["libcuda.so.570.86.15", 7, "libc.so.6"]})
        elif self.path.startswith("/1.0/instances/alice/files") and "path=%2Flink" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"/etc")
        elif self.path.startswith("/1.0/instances/missing") or "path=%2Fnone" in self.path:
            self._answer(404, {"type": "error", "error_code": 404, "error": "Instance not found"})
        else:
            self._answer(200, {"type": "sync", "metadata": {"status": "Running"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(("POST", self.path, body))
        self._answer(202, {"type": "async", "operation": "/1.0/operations/op1"})


@pytest.fixture
def member(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed (make test installs it)")
    server_cert, server_key = certificate(tmp_path, "cluster")
    client_cert, client_key = certificate(tmp_path, "client")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(client_cert, credentials / lxdapi.CLIENT_CERT)
    shutil.copy(client_key, credentials / lxdapi.CLIENT_KEY)
    shutil.copy(server_cert, credentials / lxdapi.CLUSTER_CERT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # as the engine: no client certificate, no answer
    context.load_verify_locations(client_cert)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Member)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    Member.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield credentials, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_requests_go_out_with_the_project_and_operations_are_waited_for(member: tuple[Path, int]) -> None:
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    assert client.get("/instances/alice/state") == {"status": "Running"}
    done = client.call("POST", "/instances/alice/exec", {"command": ["true"]})
    assert done["metadata"] == {"return": 0}
    methods = [(method, path) for method, path, _ in Member.seen]
    assert methods == [
        ("GET", "/1.0/instances/alice/state?project=gpushell"),
        ("POST", "/1.0/instances/alice/exec?project=gpushell"),
        ("GET", "/1.0/operations/op1/wait?timeout=120"),
    ]
    assert json.loads(Member.seen[1][2]) == {"command": ["true"]}


def test_an_operation_may_take_longer_than_one_answer(member: tuple[Path, int], monkeypatch) -> None:
    credentials, port = member
    monkeypatch.setattr(lxdapi, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(Member, "wait_seconds", 1.5)  # the engine ends the operation after 1.5 s
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    done = client.call("POST", "/instances/alice/state", {"action": "start"}, wait=5)
    assert done["status"] == "Success"
    monkeypatch.setattr(Member, "wait_seconds", 0.0)
    assert client.get("/instances/alice/state") == {"status": "Running"}  # the short timeout again


def test_an_error_answer_is_an_api_error_with_the_engines_words(member: tuple[Path, int]) -> None:
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    with pytest.raises(lxdapi.ApiError) as caught:
        client.get("/instances/missing")
    assert caught.value.http_status == 404 and "Instance not found" in caught.value.log_message


def test_a_download_streams_the_whole_answer_and_the_connection_serves_on(
    member: tuple[Path, int], tmp_path: Path
) -> None:
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    with open(tmp_path / "backup.tar", "wb") as output:
        assert client.download("/instances/alice/backups/b/export", output) == len(EXPORT)
    assert (tmp_path / "backup.tar").read_bytes() == EXPORT
    assert client.get("/instances/alice/state") == {"status": "Running"}
    with pytest.raises(lxdapi.ApiError) as caught, open(tmp_path / "no.tar", "wb") as output:
        client.download("/instances/missing/backups/b/export", output)
    assert caught.value.http_status == 404 and (tmp_path / "no.tar").read_bytes() == b""


def test_a_directory_listing_is_its_names_and_anything_else_is_none(member: tuple[Path, int]) -> None:
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    assert client.list_directory("alice", "/dir") == ["libcuda.so.570.86.15", "libc.so.6"]  # names only
    assert client.list_directory("alice", "/link") == []  # a link's or a file's content, not a listing
    assert client.list_directory("alice", "/none") == []
    assert client.get("/instances/alice/state") == {"status": "Running"}  # the connection serves on


def test_a_download_whose_output_fails_raises_the_outputs_error(member: tuple[Path, int]) -> None:
    """A full disk on the front door is the disk's error, for the caller to word, not "does not answer"."""
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))

    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        client.download("/instances/alice/backups/b/export", FullDisk())
    assert caught.value.errno == errno.ENOSPC


def test_a_server_with_another_certificate_gets_no_request(member: tuple[Path, int], tmp_path: Path) -> None:
    credentials, port = member
    other, _ = certificate(tmp_path, "impostor")
    shutil.copy(other, credentials / lxdapi.CLUSTER_CERT)  # the pin now names another certificate
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    with pytest.raises(GpushellError, match="could not be verified"):
        client.get("/instances/alice/state")
    assert Member.seen == []


def test_a_connection_the_member_closed_is_made_anew_and_pinned_again(
    member: tuple[Path, int], tmp_path: Path
) -> None:
    credentials, port = member
    client = lxdapi.Client(["127.0.0.1"], port, "gpushell", str(credentials))
    assert client.get("/instances/alice/state") == {
        "status": "Running"
    }  # the member closes after each answer
    other, _ = certificate(tmp_path, "impostor")
    shutil.copy(other, credentials / lxdapi.CLUSTER_CERT)
    with pytest.raises(GpushellError, match="could not be verified"):
        client.get("/instances/alice/state")
    assert len(Member.seen) == 1


def test_members_that_do_not_answer_are_skipped_then_unreachable(member: tuple[Path, int]) -> None:
    credentials, port = member
    # 127.0.0.2 refuses at once (nothing listens there on this port): the next member answers.
    client = lxdapi.Client(["127.0.0.2", "127.0.0.1"], port, "gpushell", str(credentials))
    assert client.get("/instances/alice/state") == {"status": "Running"}
    alone = lxdapi.Client(["127.0.0.2"], port, "gpushell", str(credentials))
    with pytest.raises(lxdapi.Unreachable):
        alone.get("/instances/alice/state")


def test_fingerprint_is_the_sha256_of_the_der_certificate(tmp_path: Path) -> None:
    cert, _ = certificate(tmp_path, "cluster")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert lxdapi.fingerprint(str(cert)) == out.split("=", 1)[1].strip().replace(":", "").lower()
