"""The job endpoints on a real node, over real loopback HTTP: streamed uploads, refusals, result pages.

The node runs in the test's trio loop; its API is served with a small body
limit, so going over it costs a few megabytes rather than a gigabyte.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
import trio

from meshnode.api.job_body import JOB_CONTENT_TYPE, encode_job
from meshnode.api.job_routes import job_routes
from meshnode.api.server import new_token, serve_api
from meshnode.node.mesh_node import MeshNode, open_node
from tests.integration.conftest import node_config
from tests.sandbox import modules as m
from tests.waiting import wait_until

CAP = 4 << 20
OPTIONS: dict[str, Any] = {
    "replicas": 1, "quorum": 1, "max_replicas": 1,
    "fuel": 10**9, "memory": 1 << 24, "timeout_ms": 10_000, "max_output": 1 << 20,
}  # fmt: skip


@dataclass(frozen=True)
class Api:
    url: str
    token: str
    node: MeshNode

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self._headers(), trust_env=False, timeout=30)

    async def post(self, body: bytes | Iterable[bytes], **headers: str) -> httpx.Response:
        """``POST /v1/jobs`` as the CLI does: the blocking client, the body chunked unless it is bytes.

        (From a worker thread: the node serves on this test's loop. A blocking
        client also keeps the test free of httpx's async generators, which warn
        when a server's early answer leaves them unfinished.)
        """

        def send() -> httpx.Response:
            with httpx.Client(base_url=self.url, headers=self._headers(**headers), trust_env=False, timeout=30) as http:
                return http.post("/v1/jobs", content=body)

        return await trio.to_thread.run_sync(send)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": JOB_CONTENT_TYPE, **extra}

    def job_count(self) -> int:
        return len(self.node.jobs.store.jobs())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_node(node_config(tmp_path, "a")) as node, trio.open_nursery() as nursery:
        token = new_token()
        serve = functools.partial(serve_api, extra_routes=job_routes(node, max_job_bytes=CAP))
        url = await nursery.start(serve, node, "127.0.0.1:0", token)
        yield Api(url, token, node)
        nursery.cancel_scope.cancel()


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def header(module: bytes = m.ECHO, **options: Any) -> bytes:
    return frame(cbor2.dumps({"module": module, "options": {**OPTIONS, **options}}))


def assert_one_line_error(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert text in error and "\n" not in error and "Traceback" not in error, error


async def submit_ok(api: Api, inputs: list[bytes]) -> str:
    response = await api.post(encode_job(m.ECHO, OPTIONS, inputs))
    assert response.status_code == 200, response.text
    assert response.json()["subtasks"] == len(inputs)
    return str(response.json()["job_id"])


async def test_a_chunked_upload_over_the_limit_is_413_and_the_node_carries_on(api: Api) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield header()
        while True:
            sent += 1 << 16
            yield frame(b"x" * ((1 << 16) - 4))

    with trio.fail_after(20):
        response = await api.post(endless())
    assert_one_line_error(response, 413, f"over the {CAP}-byte limit")
    assert sent < 4 * CAP  # refused while the client was still sending, not after
    assert api.job_count() == 0
    async with api.client() as http:
        assert (await http.get("/v1/node")).status_code == 200
    await submit_ok(api, [b"1", b"2"])
    assert api.job_count() == 1


async def test_a_declared_length_over_the_limit_is_413_before_reading(api: Api) -> None:
    response = await api.post(header() + frame(b"x" * CAP))
    assert_one_line_error(response, 413, f"{CAP + len(header()) + 4} bytes is over the {CAP}-byte limit")


async def test_a_frame_over_the_limit_is_413_from_its_length(api: Api) -> None:
    response = await api.post([header(), frame(b"1"), b"\xff\xff\xff\xf0"])
    assert_one_line_error(response, 413, f"frame 3 is {0xFFFFFFF0} bytes, over the {CAP}-byte limit for one frame")


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"fuel": math.inf}, "options.fuel: expected an integer, got inf"),
        ({"memory": math.nan}, "options.memory: expected an integer, got nan"),
        ({"timeout_ms": "10s"}, "options.timeout_ms: expected an integer, got str"),
        ({"max_output": -1}, "options.max_output: -1 is outside 0..1073741824"),
        ({"fuel": 10**1000}, "options.fuel: a 3322-bit number is outside 1..4611686018427387904"),
        ({"nan_canonical": 0}, "options.nan_canonical: expected true or false, got int"),
        ({"replicas": 2}, "options: replicas 2 is more than max_replicas 1"),
    ],
)
async def test_bad_options_are_400_with_one_line(api: Api, options: dict[str, Any], text: str) -> None:
    response = await api.post([header(**options), frame(b"1")])
    assert_one_line_error(response, 400, f"bad job: {text}")
    assert api.job_count() == 0


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ([], "the body is empty"),
        ([header()], "a job needs at least one input"),
        ([header(), frame(b"12")[:-1]], "the body ends inside frame 2: 1 of its 2 bytes arrived"),
        ([header(), b"\x00\x00"], "the body ends inside the 4-byte length of frame 2"),
        ([frame(b"\xff not cbor")], "the header frame is not CBOR"),
        ([frame(cbor2.dumps([1, 2]))], "the header frame must be a CBOR map"),
        ([frame(cbor2.dumps({"module": "text", "options": {}}))], "the header's module must be bytes, not str"),
        ([frame(cbor2.dumps({"module": m.ECHO, "options": {}}))], "options: missing 'replicas'"),
    ],
)
async def test_a_malformed_body_is_400_with_one_line(api: Api, body: list[bytes], text: str) -> None:
    response = await api.post(body)
    assert_one_line_error(response, 400, f"bad job: {text}")
    assert api.job_count() == 0


async def test_the_old_cbor_body_is_refused_by_its_content_type(api: Api) -> None:
    body = cbor2.dumps({"module": m.ECHO, "inputs": [b"1"], "options": OPTIONS})
    response = await api.post(body, **{"Content-Type": "application/cbor"})
    assert_one_line_error(response, 415, f"a job is sent as {JOB_CONTENT_TYPE}")


async def test_a_refusal_reaches_a_client_still_uploading(api: Api) -> None:
    # the module is refused before any input is read; the client has megabytes left to send
    inputs = [frame(b"y" * (1 << 16))] * 50
    with trio.fail_after(20):
        response = await api.post([header(module=b"\x00asm junk"), *inputs])
    assert_one_line_error(response, 400, "the module cannot run: bad_module")
    with trio.fail_after(20):
        response = await api.post([header(), *inputs], Authorization="Bearer wrong")
    assert_one_line_error(response, 401, "wrong bearer token")
    async with api.client() as http:
        assert (await http.get("/v1/node")).status_code == 200


async def test_a_client_that_goes_away_mid_upload_creates_no_job(api: Api) -> None:
    class Abort(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield header()
        yield frame(b"1") * 1000
        raise Abort

    with pytest.raises(Abort):
        await api.post(broken())
    await trio.sleep(0.2)
    assert api.job_count() == 0
    await submit_ok(api, [b"1"])


async def test_results_come_in_pages_in_index_order(api: Api) -> None:
    inputs = [b"%d" % i for i in range(25)]
    job_id = await submit_ok(api, inputs)
    async with api.client() as http:
        done = lambda: api.node.jobs.jobs[bytes.fromhex(job_id)].done  # noqa: E731
        await wait_until(done, 30, "the job to finish")
        pages: list[dict[str, Any]] = []
        query = "limit=10"
        while True:
            page = (await http.get(f"/v1/jobs/{job_id}/results?{query}")).json()
            pages.append(page)
            if page["next"] is None:
                break
            query = f"limit=10&after={page['next']}"
        assert [len(p["results"]) for p in pages] == [10, 10, 5]
        assert [p["next"] for p in pages] == [9, 19, None]
        records = [r for p in pages for r in p["results"]]
        assert [r["index"] for r in records] == list(range(25))
        assert [r["output"] for r in records] == list(range(25))
        everything = (await http.get(f"/v1/jobs/{job_id}/results")).json()  # the default page holds them all
        assert everything == {"results": records, "next": None}
        assert (await http.get(f"/v1/jobs/{job_id}/results?after=24")).json() == {"results": [], "next": None}


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("after=x", "after must be a whole number in -1..2147483648, not 'x'"),
        ("after=-2", "after must be a whole number"),
        ("limit=0", "limit must be a whole number in 1..10000, not '0'"),
        ("limit=10001", "limit must be a whole number in 1..10000"),
        ("limit=9999999999999999999999", "limit must be a whole number in 1..10000"),
    ],
)
async def test_a_bad_page_query_is_400(api: Api, query: str, text: str) -> None:
    async with api.client() as http:
        response = await http.get(f"/v1/jobs/{'0' * 32}/results?{query}")
    assert_one_line_error(response, 400, text)
