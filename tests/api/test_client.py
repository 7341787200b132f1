"""ApiClient against real servers in background threads: finding the right node, and every way it can fail."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshnode.api.client import ApiClient
from meshnode.api.discovery import ApiEndpoint, write_api_file
from meshnode.errors import NodeNotRunning
from meshnode.errors import InputError, MeshError

from .conftest import PEER_A, PEER_B, FakeView, RunningServer, server_thread


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    with server_thread(FakeView()) as server:
        write_api_file(tmp_path, url=server.url, token=server.token, peer_id=PEER_A, pid=os.getpid())
        yield server


def test_get_returns_the_parsed_json(tmp_path: Path, running: RunningServer) -> None:
    assert ApiClient.for_data_dir(tmp_path).get("/v1/node") == {"peer_id": PEER_A, "version": "0.1.0"}


def test_two_nodes_with_two_data_dirs_are_never_mixed_up(tmp_path: Path) -> None:
    dirs = {PEER_A: tmp_path / "a", PEER_B: tmp_path / "b"}
    with server_thread(FakeView(peer_id=PEER_A)) as a, server_thread(FakeView(peer_id=PEER_B)) as b:
        for server, peer_id in ((a, PEER_A), (b, PEER_B)):
            dirs[peer_id].mkdir()
            write_api_file(dirs[peer_id], url=server.url, token=server.token, peer_id=peer_id, pid=os.getpid())
        for peer_id, data_dir in dirs.items():
            assert ApiClient.for_data_dir(data_dir).get("/v1/node")["peer_id"] == peer_id
        # each node's token opens only its own API
        crossed = ApiEndpoint(url=b.url, token=a.token, peer_id=PEER_B, pid=os.getpid())
        with pytest.raises(MeshError, match="refused the token"):
            ApiClient(crossed, dirs[PEER_B]).get("/v1/node")


def test_a_token_the_node_refuses(tmp_path: Path, running: RunningServer) -> None:
    write_api_file(tmp_path, url=running.url, token="stale", peer_id=PEER_A, pid=os.getpid())
    with pytest.raises(MeshError) as caught:
        ApiClient.for_data_dir(tmp_path).get("/v1/node")
    assert not isinstance(caught.value, NodeNotRunning)
    message = str(caught.value)
    assert "refused the token" in message and str(tmp_path / "api.json") in message
    assert "another node" in message


def test_an_error_answer_carries_the_status_and_the_error(tmp_path: Path, running: RunningServer) -> None:
    with pytest.raises(MeshError, match=r"HTTP 404: no such endpoint: /v1/nope"):
        ApiClient.for_data_dir(tmp_path).get("/v1/nope")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_node_that_died_without_cleaning_up(tmp_path: Path) -> None:
    # the pid is alive (ours) but nothing listens: the pid was reused, or the API is gone
    url = f"http://127.0.0.1:{free_port()}"
    write_api_file(tmp_path, url=url, token="t", peer_id=PEER_A, pid=os.getpid())
    with pytest.raises(NodeNotRunning) as caught:
        ApiClient.for_data_dir(tmp_path).get("/v1/node")
    assert url in str(caught.value) and "start one with" in str(caught.value)


def test_a_node_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (in the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        endpoint = ApiEndpoint(url=url, token="t", peer_id=PEER_A, pid=os.getpid())
        with pytest.raises(NodeNotRunning, match="did not answer within 0.2 s"):
            ApiClient(endpoint, tmp_path, timeout=0.2).get("/v1/node")


def test_no_node_at_all(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match="start one with"):
        ApiClient.for_data_dir(tmp_path)


def test_a_proxy_in_the_environment_is_not_used(
    tmp_path: Path, running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy that does not exist: the request works only if it goes straight to the node
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert ApiClient.for_data_dir(tmp_path).get("/v1/node")["peer_id"] == PEER_A


def test_post_stream_lets_the_errors_of_its_body_through(tmp_path: Path, running: RunningServer) -> None:
    client = ApiClient.for_data_dir(tmp_path)

    def chunks() -> Iterator[bytes]:
        raise InputError("rows.csv, line 4: 1 fields where the header has 2")
        yield b""  # a generator, as the CLI's body is

    # the error the body raises is the error the caller gets: not a connection problem
    with pytest.raises(InputError, match="line 4"):
        client.post_stream("/v1/peers", chunks(), "application/octet-stream")
    with pytest.raises(MeshError, match="HTTP 405"):  # a whole body gets the node's answer
        client.post_stream("/v1/peers", iter([b"a", b"b"]), "application/octet-stream")


@contextmanager
def raw_node(
    tmp_path: Path, answer: Callable[[bytes], bytes], connections: int
) -> Iterator[tuple[ApiClient, threading.Event]]:  # fmt: skip
    """A node played on a raw socket, and a client of it: each of ``connections`` connections reads one request's
    head, sends ``answer(head)`` and closes; ``closed`` is set at each close."""
    closed = threading.Event()

    def serve(listener: socket.socket) -> None:
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                conn.sendall(answer(head))
            closed.set()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = threading.Thread(target=serve, args=(listener,), daemon=True)
        server.start()
        endpoint = ApiEndpoint(url=f"http://127.0.0.1:{listener.getsockname()[1]}", token="t", peer_id=PEER_A, pid=0)
        client = ApiClient(endpoint, tmp_path, timeout=5.0)
        client.open()
        try:
            yield client, closed
        finally:
            client.close()
        server.join(5)


def _json_answer(status: bytes, value: object, *headers: bytes) -> bytes:
    body = json.dumps(value).encode()
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (status, len(body))
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def test_a_kept_connection_the_node_closed_is_not_reused(tmp_path: Path) -> None:
    """The node ends idle kept connections after a while: the next call opens a new one."""
    asked: list[bytes] = []

    def answer(head: bytes) -> bytes:  # as if the connection stayed open; then it closes
        asked.append(head.split(b" ")[1])
        return _json_answer(b"200 OK", {"n": len(asked) - 1})

    with raw_node(tmp_path, answer, connections=2) as (client, closed):
        assert client.get("/v1/node") == {"n": 0}
        assert closed.wait(30)  # the first connection is closed at the node: the next call comes after
        assert client.post_json("/v1/jobs/x/cancel") == {"n": 1}  # a POST is never sent twice
    assert asked == [b"/v1/node", b"/v1/jobs/x/cancel"]


def test_an_answer_the_node_gives_before_the_body_ends_is_the_answer(tmp_path: Path) -> None:
    """A node may refuse a streamed upload (405, 413) before it has read it and close the connection: the rest
    of the body then fails to send, and the caller gets the node's answer, not "nothing answers"."""
    refusal = _json_answer(b"413 Content Too Large", {"error": "the job is too large"}, b"Connection: close")
    with raw_node(tmp_path, lambda head: refusal, connections=1) as (client, closed):

        def chunks() -> Iterator[bytes]:
            yield b"row 1\n"
            assert closed.wait(30)
            for _ in range(64):  # into a closed connection: a write fails before the end
                yield b"x" * (1 << 20)

        with pytest.raises(MeshError, match="HTTP 413: the job is too large"):
            client.post_stream("/v1/jobs", chunks(), "text/csv")


def test_calls_from_several_threads_share_one_client(tmp_path: Path, running: RunningServer) -> None:
    client = ApiClient.for_data_dir(tmp_path)
    client.open()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("/v1/node")["peer_id"], range(64)))
    finally:
        client.close()
    assert answers == [PEER_A] * 64


def test_an_address_that_is_not_an_http_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MeshError, match="not a node API address"):
        ApiClient(ApiEndpoint(url="ftp://127.0.0.1:1", token="t", peer_id=PEER_A, pid=0), tmp_path)
