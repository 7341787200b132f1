"""The API server over real loopback sockets: routes, the bearer token, binding and shutdown."""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import httpx
import pytest
import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshnode.api.server import new_token, serve_api
from meshnode.errors import ConfigError

from ..waiting import STEP
from .conftest import PEER_A, FakeView, RunningServer, sample_peer


def client(url: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=headers, trust_env=False, timeout=STEP)


async def test_the_right_token_gets_node_info_and_peers(server: RunningServer) -> None:
    async with client(server.url, server.auth) as http:
        node = await http.get("/v1/node")
        peers = await http.get("/v1/peers")
    assert node.status_code == 200 and node.json() == {"peer_id": PEER_A, "version": "0.1.0"}
    assert peers.status_code == 200 and peers.json() == {"peers": [sample_peer()]}
    assert peers.headers["content-type"] == "application/json"


async def test_handlers_see_the_node_state_of_the_moment(server: RunningServer) -> None:
    async with client(server.url, server.auth) as http:
        server.view.peer_list = []
        assert (await http.get("/v1/peers")).json() == {"peers": []}


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Bearer not-the-token"}, "wrong bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not a Bearer token"),
        ({"Authorization": "Bearer"}, "not a Bearer token"),
    ],
)
async def test_a_missing_or_wrong_token_is_401(server: RunningServer, headers: dict[str, str], problem: str) -> None:
    async with client(server.url, headers) as http:
        for path in ("/v1/node", "/v1/peers", "/no/such/path"):  # no route is reachable without the token
            response = await http.get(path)
            assert response.status_code == 401
            assert problem in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_scheme_name_is_case_insensitive(server: RunningServer) -> None:
    async with client(server.url, {"Authorization": f"bearer {server.token}"}) as http:
        assert (await http.get("/v1/node")).status_code == 200


async def test_an_unknown_path_is_404_json(server: RunningServer) -> None:
    async with client(server.url, server.auth) as http:
        response = await http.get("/v1/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "no such endpoint: /v1/nope"}


async def test_a_wrong_method_is_405_json(server: RunningServer) -> None:
    async with client(server.url, server.auth) as http:
        response = await http.post("/v1/peers")
    assert response.status_code == 405 and "error" in response.json()


async def test_a_failing_view_is_500_json(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenView(FakeView):
        def peers(self) -> list[dict[str, object]]:
            raise RuntimeError("peer table on fire")

    token = new_token()
    url = await nursery.start(serve_api, BrokenView(), "127.0.0.1:0", token)
    async with client(url, {"Authorization": f"Bearer {token}"}) as http:
        response = await http.get("/v1/peers")
    assert response.status_code == 500
    assert "peer table on fire" in response.json()["error"]
    # the traceback reaches the node's log, just after the response went out
    with trio.fail_after(STEP):
        while "peer table on fire" not in caplog.text:
            await trio.sleep(0.01)


async def test_port_0_reports_the_real_url(server: RunningServer) -> None:
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", server.url)
    assert match and int(match.group(1)) > 0
    async with client(server.url, server.auth) as http:
        assert (await http.get("/v1/node")).status_code == 200


async def test_ipv6_loopback_in_brackets(nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    token = new_token()
    try:
        url = await nursery.start(serve_api, FakeView(), "[::1]:0", token)
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert re.fullmatch(r"http://\[::1\]:\d+", url)
    async with client(url, {"Authorization": f"Bearer {token}"}) as http:
        assert (await http.get("/v1/node")).status_code == 200


async def test_a_busy_port_is_a_config_error_suggesting_port_0(server: RunningServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    with pytest.raises(ConfigError) as caught, trio.fail_after(STEP):
        await serve_api(FakeView(), f"127.0.0.1:{port}", new_token())
    assert "in use" in str(caught.value) and "--api 127.0.0.1:0" in str(caught.value)


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "10.1.2.3:7351", "[::]:0"])
async def test_a_non_loopback_bind_is_refused(bind: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"), trio.fail_after(STEP):
        await serve_api(FakeView(), bind, new_token())


async def test_localhost_is_loopback(nursery: trio.Nursery) -> None:
    url = await nursery.start(serve_api, FakeView(), "localhost:0", new_token())
    assert re.fullmatch(r"http://(127\.0\.0\.1|\[::1\]):\d+", url)


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1:http", ":7351", "127.0.0.1:70000"])
async def test_a_malformed_bind_is_a_config_error(bind: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        await serve_api(FakeView(), bind, new_token())


def test_new_tokens_are_long_and_distinct() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)


_CANCEL_SCRIPT = textwrap.dedent(
    """
    import httpx, trio
    from meshnode.api.server import serve_api

    class View:
        def info(self): return {"peer_id": "x"}
        def peers(self): return []

    async def main():
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_api, View(), "127.0.0.1:0", "t")
            # leave a keep-alive connection open while the server is cancelled
            http = httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer t"}, trust_env=False)
            assert (await http.get("/v1/node")).status_code == 200
            nursery.cancel_scope.cancel()
        await http.aclose()
        print("stopped")

    trio.run(main)
    """
)


def test_cancelling_the_server_is_silent() -> None:
    # -W default shows every warning (unclosed sockets included) on stderr
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", _CANCEL_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped\n"
    assert result.stderr == ""


async def test_an_error_reaches_a_client_still_sending_a_large_body(nursery: trio.Nursery) -> None:
    async def slow_refusal(request: Request) -> JSONResponse:
        await trio.sleep(0.3)  # deciding takes a while (a module to compile); the body keeps coming
        raise HTTPException(400, "no thanks")

    token = new_token()
    url = await nursery.start(
        functools.partial(serve_api, extra_routes=[Route("/v1/slow", slow_refusal, methods=["POST"])]),
        FakeView(), "127.0.0.1:0", token,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}

    def upload() -> httpx.Response:
        with httpx.Client(base_url=url, headers=auth, trust_env=False, timeout=10) as http:
            return http.post("/v1/slow", content=iter([b"x" * (1 << 16)] * 1024))  # far more than socket buffers hold

    with trio.fail_after(20):
        refused = await trio.to_thread.run_sync(upload)
    assert refused.status_code == 400 and refused.json() == {"error": "no thanks"}
    async with client(url, auth) as http:
        assert (await http.get("/v1/node")).status_code == 200


async def test_clients_that_hang_up_mid_request_do_not_stop_the_server(server: RunningServer) -> None:
    # hypercorn answers a truncated request while the app closes the connection; unguarded,
    # the two collide now and then on the socket, and the whole server stopped
    class HangUp(Exception):
        pass

    def body() -> Iterator[bytes]:
        raise HangUp
        yield b""

    def hang_up_repeatedly() -> None:
        with httpx.Client(base_url=server.url, headers=server.auth, trust_env=False, timeout=5) as http:
            for _ in range(300):
                with pytest.raises(HangUp):
                    http.post("/v1/peers", content=body())

    with trio.fail_after(30):
        await trio.to_thread.run_sync(hang_up_repeatedly)
    async with client(server.url, server.auth) as http:
        assert (await http.get("/v1/node")).status_code == 200
