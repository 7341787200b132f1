"""Credit as volunteers earn it: three node processes, a job owned by one and verified by the others
and itself, each executor's credit from the owner equal to the fuel of its verified runs (each run's
fuel measured here, in the sandbox), receipts that verify with the owner's key, and ``meshnode credit``
catching a tampered one."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

from meshnode import DEFAULT_LIMITS
from meshnode.core.credit import FUEL_PER_CREDIT, open_receipt
from meshnode.core.peer_id import PeerId
from meshnode.sandbox.runtime import Sandbox

from ..waiting import JOB
from .nodes import NodeProcess, api_get, mesh_of, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "tasks_wasm" / "mandelbrot.wasm"
TILES = ROOT / "examples" / "mandelbrot_tiles.jsonl"


def fuel_of_each(tiles: list[bytes]) -> list[int]:
    """The fuel of each tile's run, measured in this process: what a quorum must agree on."""
    with Sandbox() as sandbox:
        module = sandbox.load(MODULE.read_bytes())
        return [sandbox.run_sync(module, tile, DEFAULT_LIMITS).fuel_used for tile in tiles]


def test_a_3_node_job_grants_each_executor_the_fuel_of_its_verified_runs(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    (a, a_info), (b, b_info), (c, c_info) = mesh_of(tmp_path, nodes, 3)
    owner, executors = a_info["peer_id"], {b_info["peer_id"]: b, c_info["peer_id"]: c}
    results = tmp_path / "results.jsonl"
    submitted = meshnode("submit", str(MODULE), "--input-jsonl", str(TILES), "--output", str(results),
                         "--data-dir", str(a.data_dir), timeout=JOB)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + a.stderr + b.stderr + c.stderr
    job_id = submitted.stderr.split()[1].rstrip(":")

    # who ran each subtask (the executors whose runs were accepted: a quorum that agreed, or a peer the
    # owner trusts) and the fuel of that run
    ran = [line["executors"] for line in map(json.loads, results.read_text().splitlines())]
    fuel = fuel_of_each(TILES.read_bytes().splitlines())
    cost = api_get(a.data_dir, f"/v1/jobs/{job_id}")["cost"]
    assert cost["runs_per_peer"] == Counter(peer for pair in ran for peer in pair)
    assert cost["fuel"] == sum(f * len(pair) for f, pair in zip(fuel, ran, strict=True))
    earned = {peer: sum(f for f, pair in zip(fuel, ran) if peer in pair) for peer in executors}
    assert sum(earned.values()) > 0, "the executors ran none of the job"

    # the owner's ledger: each executor granted the fuel of its verified runs, the owner nothing
    granted = {g["executor"]: g for g in api_get(a.data_dir, "/v1/credit")["granted"]}
    assert owner not in granted
    assert granted == {
        peer: {"executor": peer, "results": cost["runs_per_peer"][peer], "fuel": f, "credit": f / FUEL_PER_CREDIT}
        for peer, f in earned.items() if f
    }  # fmt: skip

    # each executor's: receipts for exactly that, each signed by the owner for that executor
    for peer, node in executors.items():
        poll(lambda: api_get(node.data_dir, "/v1/credit")["received"]["fuel"] == earned[peer], JOB,
             f"{node.data_dir.name} to hold its receipts")  # fmt: skip
        listed = [r for o in api_get(node.data_dir, "/v1/credit")["received"]["owners"] for r in o["receipts"]]
        receipts = [open_receipt(bytes.fromhex(r["receipt"]), PeerId.from_base58(owner), PeerId.from_base58(peer))
                    for r in listed]  # fmt: skip
        # one receipt per batch: a busy owner may sign the job's grants in more than one
        assert {r.job_id.hex() for r in receipts} <= {job_id} and sum(r.fuel for r in receipts) == earned[peer]
        assert sum(r.results for r in receipts) == cost["runs_per_peer"].get(peer, 0)

    # `meshnode credit` checks every signature itself, and counts a receipt that does not verify for nothing
    peer, executor = max(executors.items(), key=lambda item: earned[item[0]])
    shown = meshnode("credit", "--data-dir", str(executor.data_dir))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith(f"credit received: {earned[peer] / FUEL_PER_CREDIT:.6g}  ({earned[peer]:,} fuel;")
    assert f"from {owner}: " in shown.stdout and f"for {cost['runs_per_peer'][peer]} results" in shown.stdout
    with sqlite3.connect(executor.data_dir / "node.db") as db:
        envelope, seq, its_fuel = db.execute("SELECT receipt, seq, fuel FROM credit_receipts ORDER BY seq").fetchone()
        forged = bytearray(envelope)
        forged[-70] ^= 0x01  # a byte of the signed body
        db.execute("UPDATE credit_receipts SET receipt = ? WHERE seq = ?", (bytes(forged), seq))
    tampered = meshnode("credit", "--data-dir", str(executor.data_dir))
    assert tampered.returncode == 1 and f"INVALID receipt {seq}" in tampered.stdout
    counted = earned[peer] - its_fuel  # the other receipts still count
    assert tampered.stdout.startswith(f"credit received: {counted / FUEL_PER_CREDIT:.6g}  ({counted:,} fuel;")
