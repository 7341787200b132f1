"""One real node process for the client tests, and task modules to hand it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.nodes import NodeProcess, lone_node
from tests.sandbox import modules as m


def busy_echo(iterations: int) -> bytes:
    """Counts down ``iterations`` times, then returns its input: a subtask that takes a while."""
    return m.module(
        f"""(func (export "run") (param i32 i32) (result i64) (local $i i64)
             (local.set $i (i64.const {iterations}))
             (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1))) (br_if $l (i64.ne (local.get $i) (i64.const 0))))
             {m.RETURN_INPUT})"""
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node alone on loopback (jobs run with replicas 1), shared by a module's tests."""
    with lone_node(tmp_path_factory.mktemp("client") / "node", "--slots", "2") as started:
        yield started


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tasks")
    written = {}
    for name, wasm in {"echo": m.ECHO, "slow": busy_echo(20_000_000), "trap": m.DIVIDE_BY_ZERO}.items():
        written[name] = folder / f"{name}.wasm"
        written[name].write_bytes(wasm)
    return written
