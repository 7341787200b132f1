"""``Client`` with a Python script as the task: each input is a row, each result a row's."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshnode import Client, TaskFailed
from tests.cli.nodes import NodeProcess
from tests.conftest import PreparedPython

SCRIPT = """
def main(row):
    if row == 13:
        raise ValueError("unlucky")
    print("row", row)
    return {"row": row, "square": row * row}
"""


def test_a_script_maps_over_rows_and_a_raising_row_fails_alone(
    python_runtime: PreparedPython, node: NodeProcess, tmp_path: Path
) -> None:
    script = tmp_path / "square.py"
    script.write_text(SCRIPT)
    with Client(node.data_dir) as client:
        job = client.submit(script, range(20), replicas=1, quorum=1, rows_per_subtask=3)
        assert job.subtasks == 7
        results = job.wait()
        assert [r.index for r in results] == list(range(20))
        assert [r.output for r in results if r.ok] == [{"row": i, "square": i * i} for i in range(20) if i != 13]
        assert results[2].log == "row 2\n"
        failed = results[13]
        assert failed.error is not None and "ValueError: unlucky" in failed.error.message
        with pytest.raises(TaskFailed, match="subtask 13 failed"):
            list(client.map(script, range(20), replicas=1, quorum=1))
        # without rows_per_subtask the node groups the rows by what the script costs
        grouped = client.submit(script, range(100, 140), replicas=1, quorum=1)
        assert 1 <= grouped.subtasks <= 40
        assert [r.output["square"] for r in grouped.wait()] == [i * i for i in range(100, 140)]
