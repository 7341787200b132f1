"""``GET /metrics`` on the API server: behind the token like every route, or open alone with ``metrics_public``."""

from __future__ import annotations

import functools

import httpx
import trio

from meshnode.api.server import new_token, serve_api

from ..waiting import STEP
from .conftest import FakeView

BODY = b"# HELP meshnode_x An example\n# TYPE meshnode_x gauge\nmeshnode_x 1.0\n"


def metrics(accept: str) -> tuple[bytes, str]:
    return BODY + f"# accept: {accept}\n".encode(), "text/plain; version=0.0.4; charset=utf-8"


async def start(nursery: trio.Nursery, *, public: bool) -> tuple[str, str]:
    token = new_token()
    serve = functools.partial(serve_api, metrics=metrics, metrics_public=public)
    url = await nursery.start(serve, FakeView(), "127.0.0.1:0", token)
    return url, token


async def test_metrics_need_the_token_by_default(nursery: trio.Nursery) -> None:
    url, token = await start(nursery, public=False)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        assert (await http.get("/metrics")).status_code == 401
        answer = await http.get("/metrics", headers={"Authorization": f"Bearer {token}", "Accept": "text/plain"})
    assert answer.status_code == 200 and answer.content == BODY + b"# accept: text/plain\n"
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_public_metrics_open_that_path_and_no_other(nursery: trio.Nursery) -> None:
    url, _ = await start(nursery, public=True)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        assert (await http.get("/metrics")).status_code == 200
        for path in ("/v1/node", "/v1/peers", "/metrics/", "/metrics/x", "/nope"):
            assert (await http.get(path)).status_code == 401, path


async def test_without_metrics_there_is_no_such_route(nursery: trio.Nursery) -> None:
    token = new_token()
    url = await nursery.start(serve_api, FakeView(), "127.0.0.1:0", token)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False,
                                 timeout=STEP) as http:  # fmt: skip
        assert (await http.get("/metrics")).status_code == 404
