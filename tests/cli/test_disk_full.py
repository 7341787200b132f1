"""A node whose disk fills up mid-job: it pauses the job, says why in one line, loses nothing, and resumes by itself.

The data dir is on a real tmpfs of a few tens of MiB, most of it taken by a
filler file, so the journal runs out of space part-way through a job of 100
outputs of 100 KB. The outputs are pseudo-random bytes: the journal keeps
outputs compressed where that pays, and these do not compress. Deleting the
filler gives the space back, as a user would. Needs root (to mount the tmpfs);
skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.modules import ABI, module

from .nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401 - nodes is a fixture

pytestmark = pytest.mark.slow

OUTPUT_BYTES = 102_400
MASK = (1 << 64) - 1
ABI_THREE_PAGES = ABI.replace('(memory (export "memory") 1)', '(memory (export "memory") 3)')
# Each output: 100 KB of xorshift64 seeded by the FNV-1a hash of the input (``noise`` below).
NOISE = module(
    f"""(func (export "run") (param $p i32) (param $n i32) (result i64) (local $s i64) (local $i i32) (local $out i32)
      (local.set $s (i64.const 0xcbf29ce484222325))
      (block $seeded (loop $next
        (br_if $seeded (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $s (i64.mul (i64.xor (local.get $s) (i64.load8_u (i32.add (local.get $p) (local.get $i))))
                               (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (local.set $out (call $alloc (i32.const {OUTPUT_BYTES})))
      (local.set $i (i32.const 0))
      (block $full (loop $more
        (br_if $full (i32.ge_u (local.get $i) (i32.const {OUTPUT_BYTES})))
        (local.set $s (i64.xor (local.get $s) (i64.shl (local.get $s) (i64.const 13))))
        (local.set $s (i64.xor (local.get $s) (i64.shr_u (local.get $s) (i64.const 7))))
        (local.set $s (i64.xor (local.get $s) (i64.shl (local.get $s) (i64.const 17))))
        (i64.store (i32.add (local.get $out) (local.get $i)) (local.get $s))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $more)))
      (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32)) (i64.const {OUTPUT_BYTES})))""",
    abi=ABI_THREE_PAGES,
)
NODE_ARGS = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--slots", "1"]
DISK_MIB = 48
FILLER_MIB = 42  # leaves about 6 MiB: room for the node and about half the job's 10 MB of outputs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def seeds(path: Path, count: int) -> list[bytes]:
    """``count`` inputs, one a line, every one different."""
    lines = [json.dumps({"seed": i}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return [line.encode() for line in lines]


def noise(data: bytes) -> bytes:
    """What ``NOISE`` returns for ``data``."""
    s = 0xCBF29CE484222325
    for byte in data:
        s = ((s ^ byte) * 0x100000001B3) & MASK
    out = bytearray()
    for _ in range(OUTPUT_BYTES // 8):
        s ^= (s << 13) & MASK
        s ^= s >> 7
        s ^= (s << 17) & MASK
        out += s.to_bytes(8, "little")
    return bytes(out)


def journalled(data_dir: Path, job_id: str) -> int:
    """Verdicts the journal holds, read by another process as any reader would."""
    with sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True, timeout=10) as db:
        n = int(db.execute("SELECT COUNT(*) FROM outputs WHERE job_id = ?", (bytes.fromhex(job_id),)).fetchone()[0])
    db.close()
    return n


def test_a_full_disk_pauses_the_job_and_it_resumes_with_nothing_lost_once_space_returns(
    tmp_path: Path, small_disk: Path, nodes: list[NodeProcess]
) -> None:
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (FILLER_MIB << 20))
    data_dir = small_disk / "node"
    inputs = seeds(tmp_path / "seeds.jsonl", 100)
    task = tmp_path / "noise.wasm"
    task.write_bytes(NOISE)
    node = NodeProcess(data_dir, NODE_ARGS, log_name="node")
    nodes.append(node)
    node.wait_ready()

    submitted = meshnode("submit", str(task), "--input-jsonl", str(tmp_path / "seeds.jsonl"), "--replicas", "1",
                         "--quorum", "1", "--detach", "--data-dir", str(data_dir))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    def paused() -> bool:
        status = api_get(data_dir, f"/v1/jobs/{job_id}")
        # never a verdict the journal does not hold: what status counts, the journal has
        assert status["verified"] <= journalled(data_dir, job_id)
        return "paused" in status["problem"]

    poll(paused, 120, "the job to pause on the full disk")
    status = api_get(data_dir, f"/v1/jobs/{job_id}")
    assert "disk is full" in status["problem"] and 0 < status["verified"] < 100
    assert api_get(data_dir, "/v1/node")["journal"]["ok"] is False
    refused = meshnode("submit", str(task), "--input-jsonl", str(tmp_path / "seeds.jsonl"), "--replicas", "1",
                       "--quorum", "1", "--detach", "--data-dir", str(data_dir))  # fmt: skip
    assert refused.returncode == 2 and "full" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    filler.unlink()  # the space comes back; nobody restarts anything

    def finished() -> bool:
        return bool(api_get(data_dir, f"/v1/jobs/{job_id}")["state"] == "finished")

    poll(finished, 120, "the job to resume and finish by itself")
    results = meshnode("results", job_id, "--data-dir", str(data_dir))
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    expected = [noise(data) for data in inputs]
    assert [r["index"] for r in lines] == list(range(100))
    assert all(r["status"] == "ok" for r in lines)
    import base64

    assert [base64.b64decode(r["output"]["base64"]) for r in lines] == expected
    assert api_get(data_dir, "/v1/node")["journal"]["ok"] is True
    log = node.stderr
    assert "Traceback" not in log and "paused" in log and "resumed" in log
