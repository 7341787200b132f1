"""``meshnode credit`` as a volunteer runs it: two node processes, a job verified by both, the executor's
credit from the owner equal to the fuel of its verified runs, receipts that verify, and a tampered one caught."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from meshnode.core.credit import FUEL_PER_CREDIT

from ..waiting import JOB
from .nodes import NodeProcess, api_get, meshnode, nodes, pair, poll  # noqa: F401  (nodes is a fixture)

ROOT = Path(__file__).resolve().parents[2]
MODULE = str(ROOT / "tasks_wasm" / "mandelbrot.wasm")
TILES = ROOT / "examples" / "mandelbrot_tiles.jsonl"


def credit(node: NodeProcess) -> dict[str, object]:
    shown = meshnode("credit", "--json", "--data-dir", str(node.data_dir))
    assert shown.returncode in (0, 1), shown.stderr
    report: dict[str, object] = json.loads(shown.stdout)
    return report


def test_the_executor_holds_signed_credit_for_its_verified_runs(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a, a_info, b, b_info = pair(tmp_path, nodes)
    tiles = tmp_path / "tiles.jsonl"
    tiles.write_text("".join(TILES.read_text().splitlines(keepends=True)[:6]))

    submitted = meshnode("submit", MODULE, "--input-jsonl", str(tiles), "--data-dir", str(a.data_dir), timeout=JOB)
    assert submitted.returncode == 0, submitted.stderr + a.stderr + b.stderr
    job_id = submitted.stderr.split()[1].rstrip(":")
    cost = api_get(a.data_dir, f"/v1/jobs/{job_id}")["cost"]
    # replicas 2 on two nodes: both ran and agreed on every subtask, so each did half the accepted fuel
    assert cost["runs_per_peer"] == {a_info["peer_id"]: 6, b_info["peer_id"]: 6}
    earned = cost["fuel"] // 2

    poll(lambda: api_get(b.data_dir, "/v1/credit")["received"]["fuel"] == earned, JOB, "the executor to hold its receipts")
    got = credit(b)["received"]  # every receipt checked by the command
    assert got["invalid"] == 0 and got["credit"] == earned / FUEL_PER_CREDIT
    (owner,) = got["owners"]  # type: ignore[attr-defined]
    assert owner["owner"] == a_info["peer_id"] and owner["results"] == 6
    # one receipt per batch: a busy owner may sign the job's grants in more than one
    assert {r["job_id"] for r in owner["receipts"]} == {job_id} and all(r["valid"] for r in owner["receipts"])
    shown = meshnode("credit", "--data-dir", str(b.data_dir))
    assert shown.returncode == 0 and f"from {a_info['peer_id']}" in shown.stdout and "for 6 results" in shown.stdout

    # the owner's side: granted to the executor, nothing to itself
    granted = api_get(a.data_dir, "/v1/credit")["granted"]
    assert granted == [{"executor": b_info["peer_id"], "results": 6, "fuel": earned, "credit": earned / FUEL_PER_CREDIT}]

    # a receipt changed in the executor's journal no longer verifies, and is not counted
    with sqlite3.connect(b.data_dir / "node.db") as db:
        (envelope,) = db.execute("SELECT receipt FROM credit_receipts").fetchone()
        forged = bytearray(envelope)
        forged[-70] ^= 0x01  # a byte of the signed body
        db.execute("UPDATE credit_receipts SET receipt = ?", (bytes(forged),))
    tampered = meshnode("credit", "--data-dir", str(b.data_dir))
    assert tampered.returncode == 1 and "INVALID receipt 1" in tampered.stdout
    assert tampered.stdout.startswith("credit received: 0  (0 fuel")  # not counted
