"""The node's local HTTP API: a Starlette app served by hypercorn on the node's own trio loop.

Every CLI command that talks to a running node goes through this API. It listens
on a loopback address only (unless the caller explicitly allows otherwise) and
every request must carry the node's random bearer token, so other local users
and web pages the user happens to visit cannot drive the node.

Handlers are ``async def`` and run as tasks on the node's trio loop, so they read
node state directly: no locks, no thread hops.
"""

from __future__ import annotations

import errno
import functools
import hmac
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import trio
import hypercorn.trio.run
from hypercorn.config import Config
from hypercorn.events import Event
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConfigError
from .dashboard import PAGE_PATHS, Sessions

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    # libp2p depends on trio-typing, whose stubs shadow trio's own annotations
    # for mypy and have no trio.TaskStatus.
    from trio_typing import TaskStatus

__all__ = ["Metrics", "NodeView", "make_app", "new_token", "serve_api"]

# How long in-flight requests may finish once the server is told to stop. The
# API only serves small JSON snapshots, so a second is plenty.
GRACEFUL_TIMEOUT_S: Final = 1.0

# hypercorn's own messages (startup, and errors in handlers) go here rather than
# straight to stderr, so the node's logging config decides what is shown.
_log = logging.getLogger("meshnode.api")

# The node's Prometheus metrics: the scrape's Accept header -> (body, content type).
Metrics = Callable[[str], tuple[bytes, str]]


class NodeView(Protocol):
    """What the API needs from a running node.

    Both methods are called on the node's trio loop and must return JSON-ready
    values (dicts, lists, str, int, float, bool, None; no NaN).
    """

    def info(self) -> dict[str, Any]:
        """This node: peer ID, version, addresses, slots and the like."""
        ...

    def peers(self) -> list[dict[str, Any]]:
        """One dict per known peer (see ``meshnode.cli.peers_view`` for the fields)."""
        ...


def new_token() -> str:
    """A fresh random API token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


# --- the app ---------------------------------------------------------------------------------


class _ErrorResponse(JSONResponse):
    """A JSON error answer that reaches a client still sending its request body.

    An error can be decided before the body is read (a bad token, a job refused
    after its first frames, an upload over the size limit), and the client keeps
    sending. hypercorn queues at most ``max_app_queue_size`` body chunks for the
    app; once the queue is full, finishing the response blocks on queueing the
    disconnect message behind them, and the connection is left open with the
    client blocked writing. So the rest of the body is read and thrown away while
    the answer is sent, and no longer: hypercorn then closes a connection whose
    request was not read to its end, which stops the upload, and the client reads
    the answer.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard_body, receive)
            await super().__call__(scope, receive, send)
            nursery.cancel_scope.cancel()


async def _discard_body(receive: Receive) -> None:
    """Receive and drop request body chunks until the client or the server ends the request."""
    while (await receive())["type"] == "http.request":
        pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _ErrorResponse({"error": message}, status_code=status, headers=headers)


class _BearerAuth:
    """ASGI middleware: refuse any request whose ``Authorization`` is not ``Bearer <token>``.

    It wraps the whole app, routing included, so a caller without the token
    cannot even tell which paths exist; only the paths in ``open_paths`` (exactly
    those) are served to anyone, and a request that ``session_ok`` accepts (the
    dashboard's cookie, ``dashboard.Sessions.knows``) needs no token.
    """

    def __init__(
        self, app: ASGIApp, token: str, open_paths: frozenset[str] = frozenset(),
        session_ok: Callable[[Scope], bool] | None = None,
    ) -> None:  # fmt: skip
        self._app = app
        self._expected = token.encode()
        self._open = open_paths
        self._session_ok = session_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in self._open and not self._has_session(scope):
            problem = self._problem(scope["headers"])
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _has_session(self, scope: Scope) -> bool:
        return self._session_ok is not None and scope["type"] == "http" and self._session_ok(scope)

    def _problem(self, headers: list[tuple[bytes, bytes]]) -> JSONResponse | None:
        """The 401 response for these request headers, or None when the token is right."""
        value = next((v for k, v in headers if k == b"authorization"), None)
        if value is None:
            return _error(401, "missing Authorization: Bearer <token> header", {"WWW-Authenticate": "Bearer"})
        scheme, _, credentials = value.strip().partition(b" ")
        presented = credentials.strip()
        # RFC 7235: the scheme name is case-insensitive
        if scheme.lower() != b"bearer" or not presented:
            return _error(401, "the Authorization header is not a Bearer token", {"WWW-Authenticate": "Bearer"})
        # constant time, so response timing reveals nothing about the token
        if not hmac.compare_digest(presented, self._expected):
            return _error(401, "wrong bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    # a route's own 404 says what is missing (a job, say); the router's says nothing, so the path is named
    unnamed = exc.status_code == 404 and exc.detail in ("", "Not Found")
    message = f"no such endpoint: {request.url.path}" if unnamed else exc.detail
    return _error(exc.status_code, message, dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this response, so hypercorn still
    # logs the traceback; the client gets JSON like every other error.
    return _error(500, f"internal error in the node: {type(exc).__name__}: {exc}")


def make_app(
    view: NodeView, token: str, extra_routes: Sequence[Route] = (), *, metrics: Metrics | None = None,
    metrics_public: bool = False, sessions: Sessions | None = None,
) -> Starlette:  # fmt: skip
    """The API as an ASGI app.

    Routes:
        ``GET /v1/node``: ``view.info()``.
        ``GET /v1/peers``: ``{"peers": view.peers()}``.
        ``GET /metrics``: the node's Prometheus metrics (when ``metrics`` is given).

    Every request needs ``Authorization: Bearer <token>`` (but ``/metrics`` with
    ``metrics_public``); without it, or with a wrong token, the answer is 401 with
    ``WWW-Authenticate: Bearer``. Every error body is ``{"error": "<message>"}``.

    Args:
        view: the running node.
        token: the bearer token clients must present.
        metrics: the metrics in the format a scrape's ``Accept`` header asks for.
        metrics_public: serve ``/metrics`` without the token (a Prometheus on the machine scrapes it as is).
        sessions: the dashboard's logins (``dashboard_routes``): its page is served to anyone, and its
            session cookie reads what the token does.

    Returns:
        The Starlette app, ready for ``serve_api`` (or any ASGI server).
    """

    async def node_info(request: Request) -> JSONResponse:
        return JSONResponse(view.info())

    async def peer_list(request: Request) -> JSONResponse:
        return JSONResponse({"peers": view.peers()})

    routes = [Route("/v1/node", node_info), Route("/v1/peers", peer_list), *extra_routes]
    if metrics is not None:
        scrape = metrics

        async def metrics_page(request: Request) -> Response:
            body, content_type = scrape(request.headers.get("accept", ""))
            return Response(body, media_type=content_type)

        routes.append(Route("/metrics", metrics_page))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
    public = frozenset({"/metrics"} if metrics is not None and metrics_public else ())
    if sessions is not None:
        public |= PAGE_PATHS
    session_ok = None if sessions is None else sessions.knows
    app.add_middleware(_BearerAuth, token=token, open_paths=public, session_ok=session_ok)
    return app


# --- serving ---------------------------------------------------------------------------------


def _split_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:0"`` -> ``("127.0.0.1", 0)``; ``"[::1]:7351"`` -> ``("::1", 7351)``."""
    host, sep, port_text = bind.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--api {bind!r} is not HOST:PORT (examples: 127.0.0.1:7351, 127.0.0.1:0, [::1]:0)")
    return host, int(port_text)


async def _resolve(bind: str, *, allow_remote: bool) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address family and socket address to listen on, checked to be loopback.

    The check runs on the resolved address, so ``localhost`` passes and a name
    that resolves to a LAN address does not.
    """
    host, port = _split_bind(bind)
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--api {bind}: cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    if not allow_remote and not ipaddress.ip_address(sockaddr[0]).is_loopback:
        raise ConfigError(
            f"--api {bind}: {sockaddr[0]} is not a loopback address; the control API is local by design "
            "(use 127.0.0.1:PORT or [::1]:PORT)"
        )
    return family, sockaddr


def _listen_socket(bind: str, family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> socket.socket:
    """A bound TCP socket, so a busy port is a clear ConfigError before hypercorn starts."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            # Restarting on a fixed port must not fail on the old connections'
            # TIME_WAIT. (On Windows this option would let another program
            # steal a port that is in use, so it stays off there.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--api {bind}: the port is in use (another meshnode?); "
                "pick another port, or let the system choose one with --api 127.0.0.1:0"
            ) from None
        raise ConfigError(f"--api {bind}: cannot listen there: {exc.strerror or exc}") from exc
    return sock


def _hypercorn_config(bind: str) -> Config:
    config = Config()
    config.bind = [bind]
    config.accesslog = None  # one line per CLI call would drown the node's own log
    config.errorlog = _log
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    return config


class _DropStartupBanner(logging.Filter):
    """hypercorn logs "Running on http://... (CTRL + C to quit)", which is wrong for an embedded server."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


_log.addFilter(_DropStartupBanner())


class _TCPServer(TCPServer):
    """hypercorn's connection handler, made to survive a client that hangs up mid-request.

    When a client closes its connection before its request body ends (a CLI
    interrupted during an upload), hypercorn's reading task answers 400 while the
    app's task may be closing the same stream (``send_eof``, which it does not
    serialize with sends). trio then raises ``BusyResourceError`` in the send,
    hypercorn lets it escape the connection, and the whole server (and the node
    with it) stops. A send that collides with the close is dropped: the
    connection is going away, and the bytes had no one to reach.
    """

    async def protocol_send(self, event: Event) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            pass


# worker_serve looks TCPServer up in its module each time it serves
hypercorn.trio.run.TCPServer = _TCPServer  # type: ignore[attr-defined]


async def serve_api(
    view: NodeView,
    bind: str,
    token: str,
    *,
    allow_remote: bool = False,
    extra_routes: Sequence[Route] = (),
    metrics: Metrics | None = None,
    metrics_public: bool = False,
    sessions: Sessions | None = None,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``bind`` until cancelled.

    Start it with ``url = await nursery.start(serve_api, view, bind, token)``;
    cancel the nursery (or an enclosing scope) to stop it. Cancellation is quiet:
    open connections are closed and nothing is printed.

    Args:
        view: the running node.
        bind: ``"HOST:PORT"``; port 0 picks a free port. IPv6 hosts go in brackets.
        token: the bearer token clients must present (see ``new_token``).
        allow_remote: listen on a non-loopback address too. Off by default: the
            API is a local control channel, and the token travels in clear text.
        extra_routes: more endpoints (the node's job routes), behind the token too.
        metrics, metrics_public: ``GET /metrics`` and whether it needs the token (``make_app``).
        sessions: the dashboard's logins (``make_app``).
        task_status: receives the URL actually served, e.g. ``"http://127.0.0.1:54321"``.

    Raises:
        ConfigError: ``bind`` is malformed, not loopback (without ``allow_remote``),
            cannot be resolved, or the port is in use.
    """
    family, sockaddr = await _resolve(bind, allow_remote=allow_remote)
    sock = _listen_socket(bind, family, sockaddr)
    config = _hypercorn_config(f"fd://{sock.fileno()}")
    # hypercorn adopts the descriptor (socket.socket(fileno=...)) and closes it;
    # detaching keeps this object from closing it a second time.
    sock.detach()
    async with trio.open_nursery() as nursery:
        # Starlette is a plain ASGI 3 app; its scope types are just looser than hypercorn's TypedDicts.
        app = cast("ASGIFramework", make_app(view, token, extra_routes, metrics=metrics, metrics_public=metrics_public,
                                                   sessions=sessions))
        urls: list[str] = await nursery.start(functools.partial(serve, app, config))
        task_status.started(urls[0])
