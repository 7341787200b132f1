"""The dashboard's endpoints on a real server with a stand-in node: login tokens, the cookie, the
event stream and the subtask states; and ``Sessions`` on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from meshnode.api import dashboard
from meshnode.api.dashboard import Sessions, dashboard_routes
from meshnode.api.server import new_token, serve_api

from ..waiting import STEP
from .conftest import FakeView, sample_peer

JOB = bytes(range(16))


@dataclass
class FakeNode(FakeView):
    """A node with one job of 50 peers' worth of table and 10,000 subtasks."""

    def job_ids(self) -> list[bytes]:
        return [JOB]

    def job_summary(self, job_id: bytes) -> dict[str, Any] | None:
        if job_id != JOB:
            return None
        return {"job_id": job_id.hex(), "state": "running", "total": 10_000, "verified": 9_000, "failed": 2,
                "disputed": 1}  # fmt: skip

    async def subtask_states(self, job_id: bytes) -> str | None:
        return "v" * 9_000 + "r" * 10 + "q" * 990 if job_id == JOB else None


async def serve(nursery: trio.Nursery) -> tuple[str, str, Sessions]:
    node, token, sessions = FakeNode(peer_list=[sample_peer()] * 50), new_token(), Sessions()
    url = await nursery.start(
        lambda task_status: serve_api(node, "127.0.0.1:0", token, extra_routes=dashboard_routes(node, sessions),
                                      sessions=sessions, task_status=task_status))  # fmt: skip
    return url, token, sessions


def first_event(url: str, cookies: httpx.Cookies) -> Any:
    """The first snapshot of the event stream (read in a thread: the stream never ends, and a blocking
    client just stops reading it)."""
    with httpx.Client(base_url=url, cookies=cookies, trust_env=False, timeout=STEP) as page:
        with page.stream("GET", "/v1/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            line = next(events.iter_lines())
    return json.loads(line.removeprefix("data: "))


async def test_a_login_opens_a_session_that_reads_the_states_and_the_event_stream(nursery: trio.Nursery) -> None:
    url, token, _ = await serve(nursery)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as page:
        minted = await page.post("/v1/dashboard/login-token", headers={"Authorization": f"Bearer {token}"})
        assert minted.status_code == 200 and minted.json()["expires_s"] == dashboard.LOGIN_TOKEN_TTL_S
        assert (await page.post("/v1/dashboard/login-token")).status_code == 401, "only the API token mints"
        login = await page.get("/dashboard", params={"token": minted.json()["token"]})
        assert login.status_code == 303 and "samesite=strict" in login.headers["set-cookie"].lower()
        states = await page.get(f"/v1/jobs/{JOB.hex()}/states")
        assert states.status_code == 200 and states.text.count("v") == 9_000 and len(states.content) == 10_000
        assert (await page.get(f"/v1/jobs/{'ab' * 16}/states")).status_code == 404
        assert (await page.get("/v1/jobs/not-hex/states")).status_code == 400
        snapshot = await trio.to_thread.run_sync(first_event, url, page.cookies)
        assert len(snapshot["peers"]) == 50 and snapshot["jobs"][0]["verified"] == 9_000
        assert snapshot["node"]["peer_id"]
        assert [total for _, total in snapshot["history"]] == [9_003], "the throughput so far, for a page that opens"
        for path in ("/", "/dashboard", f"/dashboard/job/{JOB.hex()}"):
            served = await page.get(path)
            assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
            # one file: its style sheet and script are in it, so nothing else is asked for before the data
            assert "<style>" in served.text and '<script type="module">' in served.text and ' src=' not in served.text
            assert "new EventSource(" in served.text and ".state-alive" in served.text
        assert (await page.get("/dashboard/app.js")).status_code == 404


def test_a_login_token_is_good_once_and_not_after_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, now = Sessions(), [1000.0]
    monkeypatch.setattr(dashboard.time, "monotonic", lambda: now[0])
    token = sessions.mint()
    assert sessions.redeem("guess") is None
    assert sessions.redeem(token) is not None and sessions.redeem(token) is None
    late = sessions.mint()
    now[0] += dashboard.LOGIN_TOKEN_TTL_S + 1
    assert sessions.redeem(late) is None


def test_the_cookie_reads_only_and_only_its_own_port() -> None:
    sessions = Sessions()
    session = sessions.redeem(sessions.mint())
    assert session is not None

    def scope(method: str, port: int, value: str = session) -> dict[str, Any]:
        cookie = f"other=1; meshnode_session_{port}={value}".encode()
        return {"method": method, "server": ("127.0.0.1", port), "headers": [(b"cookie", cookie)]}

    assert sessions.knows(scope("GET", 7351))
    assert not sessions.knows(scope("POST", 7351)), "a cookie never makes the node act"
    assert not sessions.knows(scope("GET", 7351, "forged"))
    port_of_cookie = scope("GET", 7351)
    port_of_cookie["server"] = ("127.0.0.1", 7352)  # another node on the machine: its cookie has another name
    assert not sessions.knows(port_of_cookie)


def test_old_sessions_are_forgotten_past_the_limit() -> None:
    sessions = Sessions()
    first = sessions.redeem(sessions.mint())
    for _ in range(dashboard.MAX_SESSIONS):
        sessions.redeem(sessions.mint())
    cookie = f"meshnode_session_1={first}".encode()
    scope = {"method": "GET", "server": ("127.0.0.1", 1), "headers": [(b"cookie", cookie)]}
    assert not sessions.knows(scope)
