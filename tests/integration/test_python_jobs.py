"""Python jobs from a trio program: ``submit_python`` on an in-process mesh, results row by row."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from meshnode.core.python_rows import encode_script
from meshnode.errors import SandboxError
from tests.conftest import PreparedPython

from ..waiting import JOB, wait_until
from .test_mesh_jobs import start_mesh

SOURCE = """
import numpy as np

def main(row):
    if row["x"] < 0:
        raise ValueError(f"negative x: {row['x']}")
    print("x is", row["x"])
    return {"sqrt": float(np.sqrt(row["x"])), "label": row["label"].upper()}
"""


async def test_submit_python_runs_rows_across_the_mesh_verified_twice(
    python_runtime: PreparedPython, tmp_path: Path
) -> None:
    rows = [{"x": x, "label": f"r{x}"} for x in (4, 9, -1, 16, 25)]
    async with AsyncExitStack() as stack:
        owner, other = await start_mesh(stack, tmp_path, 2)
        job = await owner.submit_python(SOURCE, rows, name="roots.py", rows_per_subtask=2, replicas=2, quorum=2)
        assert job.manifest.rows == 5 and job.manifest.subtask_count == 3
        await wait_until(lambda: job.done, JOB, "the job to finish")
        lines = [line for result in await job.wait() for line in job.rows_of(result)]
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line.get("output") for line in lines] == [
        {"sqrt": 2.0, "label": "R4"}, {"sqrt": 3.0, "label": "R9"}, None, {"sqrt": 4.0, "label": "R16"},
        {"sqrt": 5.0, "label": "R25"},
    ]  # fmt: skip
    assert lines[2]["error"]["message"] == "ValueError: negative x: -1" and lines[0]["log"] == "x is 4\n"
    assert all(sorted(line["executors"]) == sorted([str(owner.peer_id), str(other.peer_id)]) for line in lines)


async def test_submit_python_refuses_a_script_without_main(python_runtime: PreparedPython, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (owner,) = await start_mesh(stack, tmp_path, 1)
        with pytest.raises(SandboxError, match="nomain.py defines no function main"):
            await owner.submit_python("def run(row):\n    return row\n", [1, 2], name="nomain.py")
        assert owner.job_ids() == []


async def test_rows_that_are_not_rows_are_refused_and_no_job_is_left(python_runtime: PreparedPython, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (owner,) = await start_mesh(stack, tmp_path, 1)
        script = encode_script("ok.py", "def main(row):\n    return row\n")
        for rows, message in (([b'J{"a": 1}', b"Xjunk"], "row 1 is neither JSON"), ([b"J{oops"], "row 0 is not JSON")):
            with pytest.raises(ValueError, match=message):
                await owner.submit(script, rows, rows_per_subtask=1, replicas=1, quorum=1)
        with pytest.raises(ValueError, match="is for a Python script's job"):
            await owner.submit(script[len(b"meshnode-python-task/1\n"):], [b"J1"], rows_per_subtask=1, replicas=1, quorum=1)
        assert owner.job_ids() == []


async def test_a_hostile_script_ends_with_its_code_and_the_node_runs_on(python_runtime: PreparedPython, tmp_path: Path) -> None:
    hostile = "def main(row):\n    if row == 0:\n        while True: pass\n    return len(bytearray(1 << 30))\n"
    async with AsyncExitStack() as stack:
        (owner,) = await start_mesh(stack, tmp_path, 1)
        # measured on its first row, which never ends: a row's failure, not a script that cannot run
        bad = await owner.submit_python(hostile, [0, 1], replicas=1, quorum=1, fuel=10**9)
        assert bad.manifest.rows_per_subtask == 1
        await wait_until(lambda: bad.done, JOB, "the hostile job to end")
        lines = [line for result in await bad.wait() for line in bad.rows_of(result)]
        assert lines[0]["error"]["code"] == "fuel_exhausted"
        assert lines[1]["error"]["code"] == "task_error" and lines[1]["error"]["message"].startswith("MemoryError")
        good = await owner.submit_python("def main(row):\n    return row + 1\n", [1, 2], replicas=1, quorum=1)
        await wait_until(lambda: good.done, JOB, "the next job to finish")
        assert [line["output"] for r in await good.wait() for line in good.rows_of(r)] == [2, 3]
