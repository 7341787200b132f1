"""A sandbox process killed in the middle of a job costs no result: its batch runs again in a new one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import wasmtime

from meshnode.node.mesh_node import open_node

from ..waiting import JOB, STEP, wait_until
from .conftest import node_config

# Counts down from 60 million (about a second on an idle machine) and echoes its input.
COUNTDOWN = wasmtime.wat2wasm(
    """(module (memory (export "memory") 1)
         (func (export "alloc") (param i32) (result i32) (i32.const 1024))
         (func (export "run") (param i32 i32) (result i64) (local $i i64)
           (local.set $i (i64.const 60000000))
           (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1))) (br_if $l (i64.ne (local.get $i) (i64.const 0))))
           (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))))"""
)


async def test_a_job_survives_its_sandbox_process_being_killed_mid_batch(tmp_path: Path) -> None:
    async with open_node(node_config(tmp_path, "a", slots=1)) as node:
        inputs = [b"subtask %d" % i for i in range(6)]
        job = await node.submit(COUNTDOWN, inputs, replicas=1, quorum=1, max_replicas=1)
        processes = node.jobs.executor.sandbox.processes
        assert processes is not None
        await wait_until(lambda: processes.running() == 1 and not processes._idle, STEP, "a batch to run")
        (child,) = processes._children
        os.kill(child.process.pid, signal.SIGKILL)
        await wait_until(lambda: job.done, JOB, "the job to finish")
        results = await job.wait()
        assert [(r.status, r.output) for r in results] == [("ok", data) for data in inputs]
        assert node.jobs.executor.sandbox_restarts == 1 and processes.started == 2
