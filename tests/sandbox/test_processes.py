"""Sandbox processes: batches run in child processes with real wasmtime, and a dead child costs no result."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.core.manifest import TaskLimits
from meshnode.errors import SandboxError
from meshnode.sandbox import processes
from meshnode.errors import SandboxGone
from meshnode.sandbox.processes import SANDBOX_NICE, Batch, SandboxProcesses
from meshnode.sandbox.runtime import Sandbox

from ..waiting import STEP, poll
from . import modules as m

LIMITS = TaskLimits(fuel=10**9, memory=4 << 20, timeout_ms=20_000, max_output=64 << 10)


def batch(wasm: bytes, inputs: list[bytes], limits: TaskLimits = LIMITS) -> Batch:
    return Batch(hashlib.sha256(wasm).digest(), wasm, None, False, "run", limits, inputs)


@pytest.fixture
def pool() -> Iterator[SandboxProcesses]:
    p = SandboxProcesses(2)
    try:
        yield p
    finally:
        p.close()


def run_forever(pool: SandboxProcesses) -> tuple[threading.Thread, list[BaseException]]:
    """A thread running an endless batch in ``pool``, and the list its error will be put in."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(batch(m.INFINITE_LOOP, [b"x"]))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    return runner, errors


def pids(pool: SandboxProcesses) -> set[int]:
    return {c.process.pid for c in pool._children}


def test_a_batch_runs_in_a_child_process_with_the_same_outcomes_as_in_this_one(pool: SandboxProcesses) -> None:
    inputs = [b"a", b"bb", b""]
    outcomes, seconds = pool.run(batch(m.ECHO, inputs))
    with Sandbox() as here:
        expected = [here.run_sync(m.ECHO, data, LIMITS) for data in inputs]
    assert [(o.output, o.error, o.fuel_used) for o in outcomes] == [(o.output, o.error, o.fuel_used) for o in expected]
    assert seconds is not None and seconds >= 0
    assert pool.running() == 1 and os.getpid() not in pids(pool)
    failed, _ = pool.run(batch(m.DIVIDE_BY_ZERO, [b"x"]))  # a failure is a result, as in this process
    assert failed[0].error is not None and failed[0].error.code == "trap"


def test_children_run_below_the_nodes_priority(pool: SandboxProcesses) -> None:
    pool.run(batch(m.ECHO, [b"a"]))
    (child,) = pids(pool)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, child) == min(19, mine + SANDBOX_NICE)


def test_a_module_is_sent_to_a_child_once(pool: SandboxProcesses, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bool] = []
    ask = processes._Child.ask

    def counting(child: processes._Child, b: Batch) -> tuple[object, ...]:
        sent.append(b.wasm is not None)
        return ask(child, b)

    monkeypatch.setattr(processes._Child, "ask", counting)
    for _ in range(3):
        outcomes, _ = pool.run(batch(m.ECHO, [b"x"]))
        assert outcomes[0].output == b"x"
    assert sent == [True, False, False]
    # a child that dropped it asks again, and gets it
    child = pool._idle[0]
    child.known.add(hashlib.sha256(m.TWO_ENTRIES).digest())
    outcomes, _ = pool.run(batch(m.TWO_ENTRIES, [b"y"]))
    assert outcomes[0].error is None and sent[3:] == [False, True]


def test_a_module_the_child_cannot_load_is_a_sandbox_error(pool: SandboxProcesses) -> None:
    with pytest.raises(SandboxError) as raised:
        pool.run(batch(m.IMPORTS_WASI, [b"x"]))
    assert raised.value.error.code == "bad_module"
    assert pool.run(batch(m.ECHO, [b"ok"]))[0][0].output == b"ok"  # the child lives on


def test_a_child_killed_in_a_batch_fails_that_batch_and_the_next_batch_gets_a_new_child(pool: SandboxProcesses) -> None:
    pool.run(batch(m.ECHO, [b"warm"]))
    (first,) = pids(pool)
    runner, errors = run_forever(pool)
    poll(lambda: not pool._idle, STEP, "the batch to start")
    os.kill(first, signal.SIGKILL)
    runner.join(STEP)
    assert not runner.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SandboxGone) and "signal 9" in str(errors[0])
    assert pool.run(batch(m.ECHO, [b"again"]))[0][0].output == b"again"
    assert first not in pids(pool) and pool.started == 2


def test_close_kills_a_child_in_a_long_run_and_its_caller_hears_at_once() -> None:
    pool = SandboxProcesses(1)
    runner, errors = run_forever(pool)
    try:
        poll(lambda: pool.running() == 1 and not pool._idle, STEP, "the batch to start")
        (child,) = pool._children
    finally:
        pool.close()
    runner.join(STEP)
    assert not runner.is_alive() and isinstance(errors[0], SandboxGone)
    assert child.process.returncode is not None  # killed and reaped: no zombie
    assert pool.running() == 0
    with pytest.raises(SandboxGone):
        pool.run(batch(m.ECHO, [b"x"]))


def test_warm_starts_the_children_ahead_and_idle_ones_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "IDLE_STOP", 0.5)
    pool = SandboxProcesses(2)
    try:
        pool.warm()
        poll(lambda: len(pool._idle) == 2, STEP, "both children to start")
        children = list(pool._children)
        poll(lambda: pool.running() == 0, STEP, "the idle children to stop")
        # taken out under the lock, then killed and reaped outside it
        poll(lambda: all(c.process.returncode is not None for c in children), STEP, "the children to be reaped")
        poll(lambda: pool._reaper is None, STEP, "the reaper thread to end with its last child")
        assert pool.run(batch(m.ECHO, [b"x"]))[0][0].output == b"x"  # and they start again on demand
    finally:
        pool.close()


def test_a_child_whose_node_dies_exits(tmp_path: Path) -> None:
    """The node's end of the socket closing (its process killed) ends the child: no orphans."""
    pool = SandboxProcesses(1)
    try:
        pool.run(batch(m.ECHO, [b"x"]))
        (child,) = pool._children
        child.connection.close()  # what the kernel does to a killed node's sockets
        assert child.process.wait(STEP) == 0
    finally:
        pool.close()


def test_a_sandbox_with_processes_runs_batches_there() -> None:
    with Sandbox(processes=True) as sandbox:
        module = sandbox.load(m.ECHO)
        outcomes = sandbox.run_many_sync(module, [b"one", b"two"], LIMITS)
        assert [o.output for o in outcomes] == [b"one", b"two"]
        assert sandbox.processes is not None and sandbox.processes.running() == 1
        assert sandbox.seconds_per_run(module.sha256) is not None
        processes_ = sandbox.processes
    assert processes_.running() == 0  # closing the sandbox stops them


def test_a_child_that_cannot_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(processes.sys, "executable", str(tmp_path / "no-python"))
    pool = SandboxProcesses(1)
    try:
        with pytest.raises(SandboxGone, match=r"cannot start a sandbox process \(.*no-python\)"):
            pool.run(batch(m.ECHO, [b"x"]))
        assert pool.running() == 0 and pool._starting == 0
    finally:
        pool.close()


@pytest.mark.parametrize("in_processes", [False, True])
def test_a_batchs_time_budget_stops_it_after_the_run_that_reaches_it(in_processes: bool) -> None:
    with Sandbox(processes=in_processes) as sandbox:
        module = sandbox.load(m.ECHO)
        inputs = [b"one", b"two", b"three"]
        assert [o.output for o in sandbox.run_many_sync(module, inputs, LIMITS)] == inputs
        assert [o.output for o in sandbox.run_many_sync(module, inputs, LIMITS, budget=3600.0)] == inputs
        # a budget already spent by the first run: that one, and no other
        assert [o.output for o in sandbox.run_many_sync(module, inputs, LIMITS, budget=0.0)] == [b"one"]
