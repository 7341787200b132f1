"""The blocking side of the local API: calls to the node running with a data dir (or at a URL).

The CLI makes a few calls and exits: each opens a connection of its own.
``meshnode.Client`` keeps its connections open (``open``/``close``) for its many,
one per call under way (calls may come from several threads).

The standard library's ``http.client`` carries the calls: the node's API is plain
HTTP on this machine. httpx took 0.3 s and 0.25 CPU-s of each command's start
(its transport imports trio whenever trio is installed), more than the call itself.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from ..errors import ApiError, MeshError, NodeNotRunning
from .discovery import API_FILE_NAME, ApiEndpoint, read_api_file

__all__ = ["ApiClient"]

# The node answers from memory on its own loop; five seconds means it is stuck.
DEFAULT_TIMEOUT_S: Final = 5.0


class ApiClient:
    """Blocking calls to one node's API, for commands that run, print and exit.

    Every error is a ``MeshError`` whose message is fit for the user: the CLI
    prints it as one line.
    """

    def __init__(self, endpoint: ApiEndpoint, data_dir: Path | None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Talk to ``endpoint``, which was read from ``data_dir`` (named in error messages; None when
        the endpoint was given as a URL and token)."""
        self.endpoint = endpoint
        self.data_dir = data_dir
        self.timeout = timeout
        url = urlsplit(endpoint.url)
        if url.scheme != "http" or not url.hostname:
            raise MeshError(f"not a node API address: {endpoint.url!r} (an http://host:port URL)")
        self._host, self._port, self._prefix = url.hostname, url.port or 80, url.path.rstrip("/")
        # No proxy is ever asked: an HTTP(S)_PROXY in the environment must never see the token or a
        # request meant for this machine (http.client reads no environment).
        self._headers = {"Authorization": f"Bearer {endpoint.token}"}
        self._keep = False
        self._idle: list[http.client.HTTPConnection] = []  # open connections no call is using
        self._lock = threading.Lock()

    def open(self) -> None:
        """Keep connections open for later calls, until ``close``."""
        self._keep = True

    def close(self) -> None:
        with self._lock:
            self._keep = False
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> ApiClient:
        """A client for the node running with ``data_dir``.

        Raises:
            NodeNotRunning: no node is running there.
        """
        return cls(read_api_file(data_dir), data_dir, timeout=timeout)

    def get(self, path: str, *, timeout: float | None = None) -> Any:
        """``GET path`` and return the parsed JSON body (see ``request``)."""
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, content: bytes, content_type: str = "application/cbor") -> Any:
        """``POST`` a body and return the parsed JSON answer (see ``request``)."""
        return self.request("POST", path, content, content_type)

    def post_json(self, path: str) -> Any:
        """``POST`` with no body (an action, such as a cancel) and return the parsed JSON answer."""
        return self.request("POST", path)

    def post_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> Any:
        """``POST`` a body sent as ``chunks`` are produced, and return the parsed JSON answer.

        The body goes out with chunked transfer encoding, each chunk as soon as
        the iterable yields it, so it is never held whole; an exception the
        iterable raises ends the upload and propagates unchanged (the node sees
        a broken body and creates nothing). See ``request`` for the other errors.
        """
        return self.request("POST", path, chunks, content_type)

    def request(
        self, method: str, path: str, content: bytes | Iterable[bytes] | None = None, content_type: str = "",
        *, timeout: float | None = None,
    ) -> Any:  # fmt: skip
        """Send ``method path`` (e.g. ``GET /v1/peers``) and return the parsed JSON body.

        Raises:
            NodeNotRunning: the node does not answer (it died without removing
                its API file, or is stuck).
            MeshError: the node refused the token, or answered with an error.
        """
        url = self.endpoint.url
        wait = self.timeout if timeout is None else timeout
        headers = {**self._headers, "Content-Type": content_type} if content_type else self._headers
        body = content if content is None or isinstance(content, (bytes, bytearray)) else _BodyOf(content)
        while True:
            connection, reused = self._connection()
            connection.timeout = wait
            if connection.sock is not None:
                connection.sock.settimeout(wait)
            try:
                response, broken = _exchange(connection, method, self._prefix + path, body, headers)
                data = response.read()
                if broken:
                    connection.close()
            except Exception as exc:
                connection.close()
                if isinstance(body, _BodyOf) and exc is body.failed:
                    raise  # the body's own error, not the connection's
                if isinstance(exc, TimeoutError):
                    raise self._not_running(
                        f"the node at {url} (pid {self.endpoint.pid}) did not answer within {wait:g} s"
                    ) from None
                if not isinstance(exc, (OSError, http.client.HTTPException)):
                    raise
                if reused and method == "GET":
                    continue  # the node closed a kept connection as the call began: once more, on a new one
                where = f", the address in {API_FILE_NAME}" if self.data_dir is not None else ""
                raise self._not_running(f"nothing answers at {url}{where} ({exc or type(exc).__name__})") from None
            if not broken:
                self._done_with(connection, response)
            break
        if response.status == 401:
            if self.data_dir is None:
                raise MeshError(f"the node at {url} refused the token")
            raise MeshError(
                f"the node at {url} refused the token in {self.data_dir / API_FILE_NAME}; "
                "did another node take over this data dir? Restart the node to rewrite the file"
            )
        if not 200 <= response.status < 300:
            error = _error_text(data, response.reason)
            raise ApiError(f"{method} {path}: the node answered HTTP {response.status}: {error}",
                           response.status, error)  # fmt: skip
        try:
            return json.loads(data)
        except ValueError:
            raise MeshError(f"{method} {path}: the node's answer is not JSON: {data[:200]!r}") from None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept connection (True), or a new one (False)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout), False
            if connection.sock is not None and not select.select([connection.sock], [], [], 0)[0]:
                return connection, True
            connection.close()  # readable while idle: the node closed it (it ends idle ones after a while)

    def _done_with(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        with self._lock:
            if self._keep and not response.will_close:
                self._idle.append(connection)
                return
        connection.close()

    def _not_running(self, reason: str) -> MeshError:
        return NodeNotRunning(self.data_dir, reason) if self.data_dir is not None else NodeNotRunning.at_url(reason)


def _error_text(data: bytes, reason: str) -> str:
    """The ``error`` of a JSON error body, else the start of the body as text."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return data[:200].decode("utf-8", "replace") or reason


def _exchange(
    connection: http.client.HTTPConnection, method: str, target: str, body: bytes | bytearray | _BodyOf | None,
    headers: dict[str, str],
) -> tuple[http.client.HTTPResponse, bool]:  # fmt: skip
    """Send a request and return the node's answer, and whether the connection broke on the way.

    A node may answer before the body's end (a refusal: 405, 413) and close the connection;
    the rest of the body then fails to send, and the answer is read all the same, as httpcore
    does. Measured: a POST refused with 405 failed once in a suite run with "Broken pipe".
    """
    try:
        connection.request(method, target, body, headers)  # an iterable goes chunked
    except OSError as exc:
        own = isinstance(body, _BodyOf) and exc is body.failed
        if own or connection.sock is None or isinstance(exc, TimeoutError):
            raise  # the body's own error, no connection, or a node that is stuck (no answer to wait for)
        try:
            return connection.getresponse(), True
        except (OSError, http.client.HTTPException):
            raise exc from None  # nothing was answered: the write's error says why
    return connection.getresponse(), False


class _BodyOf:
    """A streamed body that remembers the error its iterable raised (told apart from the connection's)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.failed: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except Exception as exc:
            self.failed = exc
            raise
