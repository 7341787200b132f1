"""The dashboard's endpoints: the page, its login, its live feed and a job's subtask grid.

    GET  /  and  /dashboard         the page (meshnode/dashboard/index.html, its script and style sheet
                                    inlined: one request, then its data); ?token=T logs in
    GET  /dashboard/job/{id}        the page, showing a job (as ``/dashboard#job=<id>`` does)
    POST /v1/dashboard/login-token  (API token only) a one-time login token -> {"token", "expires_s"}
    GET  /v1/events                 server-sent events: a snapshot of the node every second
    GET  /v1/jobs/{id}/states       one letter per subtask (``JobOwner.state_letters``), as text

Login works as Jupyter's does: ``meshnode dashboard`` asks the node (with the API token) for a
one-time token and opens ``/dashboard?token=T``. The node trades it for a session cookie (HttpOnly,
SameSite=Strict) and redirects to ``/dashboard``, so the token never stays in the address bar or the
history; it is good once, for ``LOGIN_TOKEN_TTL_S``. The cookie authenticates reads only (GET): a
page elsewhere can neither read the dashboard nor make the node do anything with it.

The page is no secret and is served to anyone (but at a job's own address, which names the job);
everything it shows comes through ``/v1/...``, behind the token or the cookie.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import Scope

__all__ = ["LOGIN_TOKEN_TTL_S", "PAGE_PATHS", "DashboardView", "Sessions", "dashboard_routes"]

LOGIN_TOKEN_TTL_S: Final = 120.0
SNAPSHOT_EVERY_S: Final = 1.0
RECENT_JOBS: Final = 20  # the jobs a snapshot describes, newest first
MAX_SESSIONS: Final = 64  # the oldest is forgotten past this (each login makes one)
HISTORY_S: Final = 300  # the throughput a page is given when it opens
_FOLDER: Final = Path(__file__).resolve().parent.parent / "dashboard"
PAGE_PATHS: Final = frozenset({"/", "/dashboard"})


class DashboardView(Protocol):
    """What the dashboard reads from the node, on the node's trio loop (JSON-ready values)."""

    def info(self) -> dict[str, Any]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def job_ids(self) -> list[bytes]: ...

    def job_summary(self, job_id: bytes) -> dict[str, Any] | None: ...

    async def subtask_states(self, job_id: bytes) -> str | None:
        """One letter per subtask (v, f, d, r, q), or None when this node owns no such job."""
        ...


class Sessions:
    """One-time login tokens and the sessions they open.

    Only hashes are kept, so looking one up takes the same time whatever the guess.
    """

    def __init__(self) -> None:
        self._tokens: dict[bytes, float] = {}  # hash -> when it expires (monotonic)
        self._sessions: OrderedDict[bytes, None] = OrderedDict()

    def mint(self) -> str:
        """A new login token, good once within ``LOGIN_TOKEN_TTL_S``."""
        now = time.monotonic()
        self._tokens = {h: t for h, t in self._tokens.items() if t > now}
        token = secrets.token_urlsafe(32)
        self._tokens[_hash(token)] = now + LOGIN_TOKEN_TTL_S
        return token

    def redeem(self, token: str) -> str | None:
        """The session a login token opens, or None when it is unknown, used or expired."""
        expires = self._tokens.pop(_hash(token), None)
        if expires is None or expires < time.monotonic():
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_hash(session)] = None
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def knows(self, scope: Scope) -> bool:
        """Whether the request reads with a session cookie this node opened."""
        if scope["method"] not in ("GET", "HEAD"):
            return False
        header = next((v for k, v in scope["headers"] if k == b"cookie"), None)
        if header is None:
            return False
        session = cookie_parser(header.decode("latin-1")).get(cookie_name(scope))
        return session is not None and _hash(session) in self._sessions


def cookie_name(scope: Scope) -> str:
    """The session cookie's name: browsers share cookies across a host's ports, nodes on one machine do not."""
    server = scope.get("server")
    return f"meshnode_session_{server[1] if server else 0}"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def dashboard_routes(view: DashboardView, sessions: Sessions) -> list[Route]:
    """The dashboard's endpoints, for ``serve_api(..., extra_routes=...)``; pass the same ``sessions``
    to ``serve_api`` so that its cookie opens the ``/v1/...`` reads."""

    history: deque[tuple[float, int]] = deque(maxlen=int(HISTORY_S / SNAPSHOT_EVERY_S))

    async def page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return Response(_page(), media_type="text/html", headers={"Cache-Control": "no-cache"})
        session = sessions.redeem(token)
        if session is None:
            return PlainTextResponse("This login link was used already or has expired: run `meshnode dashboard` "
                                     "again for a new one.", status_code=403)  # fmt: skip
        answer = RedirectResponse("/dashboard", status_code=303)
        answer.set_cookie(cookie_name(request.scope), session, httponly=True, samesite="strict", path="/")
        return answer

    async def login_token(request: Request) -> JSONResponse:
        return JSONResponse({"token": sessions.mint(), "expires_s": LOGIN_TOKEN_TTL_S})

    async def events(request: Request) -> StreamingResponse:
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(_snapshots(view, history), media_type="text/event-stream", headers=headers)

    async def states(request: Request) -> PlainTextResponse:
        try:
            job_id = bytes.fromhex(request.path_params["job_id"])
        except ValueError:
            raise HTTPException(400, "a job ID is hexadecimal") from None
        letters = await view.subtask_states(job_id)
        if letters is None:
            raise HTTPException(404, f"no such job: {request.path_params['job_id']}")
        return PlainTextResponse(letters, headers={"Cache-Control": "no-store"})

    return [
        Route("/", page), Route("/dashboard", page), Route("/dashboard/job/{job_id}", page),
        Route("/v1/dashboard/login-token", login_token, methods=["POST"]), Route("/v1/events", events),
        Route("/v1/jobs/{job_id}/states", states),
    ]  # fmt: skip


def snapshot(view: DashboardView) -> dict[str, Any]:
    """What the page shows: the node, its peers and its recent jobs."""
    recent = reversed(view.job_ids()[-RECENT_JOBS:])
    jobs = [s for s in (view.job_summary(job_id) for job_id in recent) if s is not None]
    return {"time": time.time(), "node": view.info(), "peers": view.peers(), "jobs": jobs}


async def _snapshots(view: DashboardView, history: deque[tuple[float, int]]) -> AsyncIterator[str]:
    """A snapshot a second for as long as the page listens: an idle node with no page open does nothing.

    ``history`` keeps (time, subtasks decided) from every snapshot sent, so the first one a page gets
    carries the throughput of the last minutes that any page watched, as ``"history"``.
    """
    first = True
    while True:
        now = snapshot(view)
        if not history or now["time"] - history[-1][0] >= SNAPSHOT_EVERY_S * 0.9:  # two pages: one sample
            history.append((now["time"], sum(j["verified"] + j["failed"] + j["disputed"] for j in now["jobs"])))
        if first:
            now["history"], first = list(history), False
        yield f"data: {json.dumps(now, separators=(',', ':'))}\n\n"
        await trio.sleep(SNAPSHOT_EVERY_S)


@functools.cache
def _page() -> str:
    """index.html with its style sheet and script in it: a page that waits for no other file before it
    asks for its data (each request to a node busy with a job can wait a while for its turn)."""
    html = (_FOLDER / "index.html").read_text(encoding="utf-8")
    inlined = {
        '<link rel="stylesheet" href="style.css">': f"<style>\n{(_FOLDER / 'style.css').read_text(encoding='utf-8')}</style>",
        '<script src="app.js" defer></script>':  # a module script waits for the document, as defer does
            f'<script type="module">\n{(_FOLDER / "app.js").read_text(encoding="utf-8")}</script>',
    }  # fmt: skip
    for tag, inline in inlined.items():
        assert tag in html, f"index.html no longer has {tag}"
        html = html.replace(tag, inline)
    return html
