"""A small client of the LXD/Incus REST API (`/1.0`), over TLS with a client certificate.

Why not pylxd: importing it (requests, cryptography, ws4py) costs 200-250 ms,
more than a whole ssh login, and the student's login asks the engine one or
two questions.  The API is versioned JSON over HTTPS; the few calls gpushell
makes (instances, their state, files, snapshots, operations, cluster
members) fit in this module on the standard library alone.  LXD 5.0 and
Incus answer the same `/1.0` paths.

Trust both ways: gpushell presents its own client certificate, which the
cluster trusts restricted to gpushell's project (README: "Several
servers"); the cluster's certificate is pinned by its SHA-256, checked
before any request goes out.  The files are root's, in the registry's
`lxd.credentials` directory: client.crt, client.key, cluster.crt.
"""

from __future__ import annotations

import json
import os

from ..core.errors import ExitStatus, GpushellError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import http.client
    from typing import Any, BinaryIO

CLIENT_CERT, CLIENT_KEY, CLUSTER_CERT = "client.crt", "client.key", "cluster.crt"
CONNECT_TIMEOUT = 3.0  # seconds to reach a member's API before the next member is tried
REQUEST_TIMEOUT = 30.0  # seconds for one answer; a frozen member must not hang a login
MAX_ANSWER = 64 * 2**20  # bytes of one answer read at most (a file pulled back, a listing)
DOWNLOAD_CHUNK = 2**20  # bytes read and written at a time from a download (a backup)


class ApiError(GpushellError):
    """The engine refused or failed a request: its HTTP status and its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the container engine says: {message}", f"LXD API {status}: {message}")
        self.http_status, self.engine_message = status, message


class Unreachable(GpushellError):
    """No member's API answered."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "the container cluster does not answer; try again in a minute or tell your administrator",
            f"no LXD member answered: {detail}",
            ExitStatus.ERROR,
        )


def fingerprint(pem_path: str) -> str:
    """SHA-256 of a PEM certificate's DER bytes, as lowercase hex (what `lxc config trust list` shows)."""
    import hashlib
    import ssl

    with open(pem_path, encoding="ascii") as stream:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(stream.read())).hexdigest()


class Client:
    """Requests to one project of the cluster, through the first member that answers.

    addresses: the members' API addresses in the order to try them (the
    member a request is about first, so a member that is down costs only
    requests about its own containers).
    """

    def __init__(self, addresses: list[str], port: int, project: str, credentials: str) -> None:
        self.addresses, self.port, self.project, self.credentials = addresses, port, project, credentials
        self._connection: http.client.HTTPConnection | None = None

    # --- the wire ---------------------------------------------------------

    def _context(self) -> Any:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The cluster's certificate names no host and no CA signs it: it is
        # pinned below instead, before a request is sent.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(
            os.path.join(self.credentials, CLIENT_CERT), os.path.join(self.credentials, CLIENT_KEY)
        )
        return context

    def _connect(self) -> http.client.HTTPConnection:
        import hashlib
        import http.client

        if self._connection is not None and self._connection.sock is not None:
            return self._connection
        # A connection the member closed (its answer said so) is made anew here, pinned
        # again: http.client would otherwise reopen it by itself, unchecked (auto_open).
        self.close()
        pinned = fingerprint(os.path.join(self.credentials, CLUSTER_CERT))
        context = self._context()
        failures = []
        for address in self.addresses:
            connection = http.client.HTTPSConnection(
                address, self.port, timeout=CONNECT_TIMEOUT, context=context
            )
            connection.auto_open = 0  # never reconnect past the pin
            try:
                connection.connect()
            except OSError as exc:
                failures.append(f"{address}:{self.port}: {exc}")
                connection.close()
                continue
            assert connection.sock is not None
            presented = connection.sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(presented).hexdigest() != pinned:
                connection.close()
                raise GpushellError(
                    "the container cluster could not be verified; tell your administrator",
                    f"{address}:{self.port} presented a certificate other than {CLUSTER_CERT}",
                )
            self._connection = connection
            return connection
        raise Unreachable("; ".join(failures) or "no member address")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        limit: int = MAX_ANSWER,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request; the status, the body and the headers of its answer.  One retry on a new connection.

        A kept-alive connection the member closed meanwhile fails on first
        use; the retry (the same request) is safe for the calls made here,
        which either read or carry their own end state.  timeout: seconds
        the answer may take (an operation's wait is answered when it ends).
        """
        import http.client

        for attempt in (1, 2):
            if attempt == 2 and body is not None and not isinstance(body, bytes):
                body.seek(0)  # a file sent in part the first time goes again whole
            connection = self._connect()
            assert connection.sock is not None
            connection.sock.settimeout(timeout)
            try:
                connection.request(method, path, body=body, headers=headers or {})
                answer = connection.getresponse()
                data = answer.read(limit + 1)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise Unreachable(f"{method} {path}: {exc}") from None
                continue
            if len(data) > limit:
                self.close()
                raise ApiError(answer.status, f"answer to {method} {path} larger than {limit} bytes")
            return answer.status, data, {key.lower(): value for key, value in answer.getheaders()}
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the API ----------------------------------------------------------

    def url(self, endpoint: str, query: dict[str, str] | None = None) -> str:
        from urllib.parse import quote, urlencode

        params = {"project": self.project, **(query or {})}
        return f"/1.0{quote(endpoint)}?{urlencode(params)}"

    def call(
        self,
        method: str,
        endpoint: str,
        body: object = None,
        query: dict[str, str] | None = None,
        wait: float | None = 120.0,
    ) -> Any:
        """A JSON request; its answer's metadata.  An operation is waited for (up to wait seconds).

        Raises ApiError with the engine's message when it refuses or the
        operation fails, Unreachable when no member answers.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        status, answer, _ = self.raw(method, self.url(endpoint, query), data, headers)
        document = _document(status, answer)
        if document.get("type") == "async" and wait is not None:
            return self.wait(document["operation"], wait)
        return document.get("metadata")

    def get(self, endpoint: str, **query: str) -> Any:
        return self.call("GET", endpoint, query=query)

    def wait(self, operation: str, seconds: float) -> Any:
        """Wait for an operation (its URL, as the API gave it) to end; its metadata, or ApiError."""
        from urllib.parse import urlsplit

        path = urlsplit(operation).path
        # The engine answers when the operation ends: the socket waits as long, and a little more.
        status, answer, _ = self.raw("GET", f"{path}/wait?timeout={int(seconds)}", timeout=seconds + 10)
        metadata = _document(status, answer).get("metadata") or {}
        if metadata.get("status") == "Running":
            raise ApiError(504, f"operation {path} still running after {int(seconds)} s")
        if metadata.get("status_code") != 200:
            raise ApiError(
                int(metadata.get("status_code") or 500), str(metadata.get("err") or "operation failed")
            )
        return metadata

    def push_file(
        self,
        instance: str,
        path: str,
        content: bytes | BinaryIO,
        uid: int = 0,
        gid: int = 0,
        mode: int = 0o644,
    ) -> None:
        """Write a file inside the instance (ids as its root sees them); the engine does the writing.

        The engine opens the path inside the container's own mount
        namespace (or its storage, stopped), so no link the container made
        leads a write of root's out of it.  content: bytes, or a file
        streamed from where it stands (an installer of hundreds of MB).
        """
        self._file(instance, path, content, "file", uid, gid, mode)

    def delete_file(self, instance: str, path: str) -> None:
        """Remove a file inside the instance (the engine does it, inside); none there is no error."""
        status, answer, _ = self.raw("DELETE", self.url(f"/instances/{instance}/files", {"path": path}))
        if status != 404:
            _document(status, answer)

    def list_directory(self, instance: str, path: str) -> list[str]:
        """The names in a directory inside the instance; [] where there is none (attacker input: names
        only, the answer bounded by MAX_ANSWER)."""
        status, answer, headers = self.raw("GET", self.url(f"/instances/{instance}/files", {"path": path}))
        if status == 404 or (
            status == 200 and not headers.get("content-type", "").startswith("application/json")
        ):
            return []  # none there, or a file or link (its content comes back, not a listing)
        names = _document(status, answer).get("metadata")
        if not isinstance(names, list):
            return []
        return [name for name in names if isinstance(name, str)]

    def make_directory(self, instance: str, path: str, uid: int = 0, gid: int = 0, mode: int = 0o755) -> None:
        self._file(instance, path, b"", "directory", uid, gid, mode)

    def _file(
        self, instance: str, path: str, content: bytes | BinaryIO, kind: str, uid: int, gid: int, mode: int
    ) -> None:
        fields = {"type": kind, "uid": str(uid), "gid": str(gid), "mode": f"{mode:04o}", "write": "overwrite"}
        # LXD reads X-LXD-*, Incus X-Incus-* (newer releases only those): both go, each ignores the other's.
        headers = {"Content-Type": "application/octet-stream"}
        if not isinstance(content, bytes):
            headers["Content-Length"] = str(os.fstat(content.fileno()).st_size - content.tell())
        for prefix in ("X-LXD-", "X-Incus-"):
            headers.update({prefix + key: value for key, value in fields.items()})
        url = self.url(f"/instances/{instance}/files", {"path": path})
        status, answer, _ = self.raw("POST", url, content, headers)
        _document(status, answer)

    def upload_image(self, tarball: str, alias: str, wait: float = 1800.0) -> str:
        """Import a unified image tarball into the project and point alias at it; its fingerprint.

        An alias that named an older image now names this one; containers
        made from the old one keep running (an instance never depends on
        its image after it is made).
        """
        size = os.path.getsize(tarball)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with open(tarball, "rb") as stream:
            status, answer, _ = self.raw("POST", self.url("/images"), stream, headers)
        document = _document(status, answer)
        done = self.wait(document["operation"], wait)
        fingerprint = str((done.get("metadata") or {}).get("fingerprint") or "")
        if not fingerprint:
            raise ApiError(500, "the image import named no fingerprint")
        try:
            self.call("PUT", f"/images/aliases/{alias}", {"target": fingerprint, "description": ""})
        except ApiError as exc:
            if exc.http_status != 404:
                raise
            self.call("POST", "/images/aliases", {"name": alias, "target": fingerprint})
        return fingerprint

    def download(self, endpoint: str, output: BinaryIO, timeout: float = REQUEST_TIMEOUT) -> int:
        """Stream a binary answer (an export: as large as a container) into output; the bytes written.

        One attempt: a half-written output cannot be taken back by a retry.
        """
        import http.client

        connection = self._connect()
        assert connection.sock is not None
        connection.sock.settimeout(timeout)
        written, writing = 0, False
        try:
            connection.request("GET", self.url(endpoint))
            answer = connection.getresponse()
            kind = answer.getheader("content-type") or ""
            if answer.status != 200 or kind.startswith("application/json"):
                _document(answer.status, answer.read(MAX_ANSWER))
                raise ApiError(answer.status, f"{endpoint} is not a download")
            while chunk := answer.read(DOWNLOAD_CHUNK):
                writing = True
                output.write(chunk)
                writing = False
                written += len(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if writing:
                raise  # the output's own failure (a full disk): the caller's to word
            raise Unreachable(f"GET {endpoint}: {exc}") from None
        return written

    def pull_file(self, instance: str, path: str, limit: int = MAX_ANSWER) -> bytes:
        """A file's content from inside the instance, at most limit bytes (attacker input: the caller
        bounds its use)."""
        url = self.url(f"/instances/{instance}/files", {"path": path})
        status, answer, headers = self.raw("GET", url, limit=limit)
        if status != 200 or headers.get("content-type", "").startswith("application/json"):
            _document(status, answer)
            raise ApiError(status, f"{path} is not a file")
        return answer


class LocalClient(Client):
    """Requests to the engine on this machine through its unix socket: a cluster member's own root.

    Whoever may open the socket is the engine's administrator (it is
    root's, 0660); no certificate is presented or pinned.  gpushell uses
    it on a member for one thing: publishing that member's GPU report.
    """

    def __init__(self, socket_path: str, project: str) -> None:
        super().__init__([], 0, project, "")
        self.socket_path = socket_path

    def _connect(self) -> http.client.HTTPConnection:
        import http.client
        import socket

        if self._connection is not None and self._connection.sock is not None:
            return self._connection
        self.close()
        connection = http.client.HTTPConnection("localhost", timeout=CONNECT_TIMEOUT)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise Unreachable(f"{self.socket_path}: {exc}") from None
        connection.sock = sock
        connection.auto_open = 0
        self._connection = connection
        return connection


def _document(status: int, answer: bytes) -> dict[str, Any]:
    """The API's JSON envelope, or ApiError for an error answer."""
    try:
        document = json.loads(answer)
    except ValueError:
        raise ApiError(status, f"not a JSON answer (HTTP {status})") from None
    if not isinstance(document, dict):
        raise ApiError(status, "not a JSON object")
    if document.get("type") == "error" or status >= 400:
        raise ApiError(
            int(document.get("error_code") or status), str(document.get("error") or f"HTTP {status}")
        )
    return document
