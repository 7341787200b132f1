"""The blocking side of the local API: calls to the node running with a data dir (or at a URL).

The CLI makes a few calls and exits: each opens a connection of its own.
``meshnode.Client`` keeps one session open (``open``/``close``) for its many.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import httpx

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
        self._session: httpx.Client | None = None

    def open(self) -> None:
        """Keep one connection pool for every later call, until ``close``."""
        if self._session is None:
            self._session = self._new_session()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _new_session(self) -> httpx.Client:
        # trust_env=False: an HTTP(S)_PROXY in the environment must never see
        # the token or a request meant for this machine. verify=False: the API
        # is plain HTTP on loopback, and loading the CA bundle for nothing
        # costs 40 ms per client, most of a command's run time.
        headers = {"Authorization": f"Bearer {self.endpoint.token}"}
        return httpx.Client(base_url=self.endpoint.url, headers=headers, timeout=self.timeout,
                            trust_env=False, verify=False)  # fmt: skip

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
        extra = {"Content-Type": content_type} if content_type else {}
        try:
            if self._session is not None:
                response = self._session.request(method, path, content=content, headers=extra, timeout=wait)
            else:
                with self._new_session() as http:
                    response = http.request(method, path, content=content, headers=extra, timeout=wait)
        except httpx.TimeoutException:
            raise self._not_running(
                f"the node at {url} (pid {self.endpoint.pid}) did not answer within {wait:g} s"
            ) from None
        except httpx.TransportError as exc:
            where = f", the address in {API_FILE_NAME}" if self.data_dir is not None else ""
            raise self._not_running(f"nothing answers at {url}{where} ({exc or type(exc).__name__})") from None
        if response.status_code == 401:
            if self.data_dir is None:
                raise MeshError(f"the node at {url} refused the token")
            raise MeshError(
                f"the node at {url} refused the token in {self.data_dir / API_FILE_NAME}; "
                "did another node take over this data dir? Restart the node to rewrite the file"
            )
        if not response.is_success:
            error = _error_text(response)
            raise ApiError(f"{method} {path}: the node answered HTTP {response.status_code}: {error}",
                           response.status_code, error)  # fmt: skip
        try:
            return response.json()
        except ValueError:
            raise MeshError(f"{method} {path}: the node's answer is not JSON: {response.text[:200]!r}") from None


    def _not_running(self, reason: str) -> MeshError:
        return NodeNotRunning(self.data_dir, reason) if self.data_dir is not None else NodeNotRunning.at_url(reason)


def _error_text(response: httpx.Response) -> str:
    """The ``error`` of a JSON error body, else the start of the body as text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:200] or response.reason_phrase
