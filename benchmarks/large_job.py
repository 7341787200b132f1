"""A job of a million trivial subtasks on a 2-node mesh: submit, run, stop and restart the owner mid-job.

    python benchmarks/large_job.py [--subtasks 1000000] [--replicas 2] [--stop-at 0.5]

Two ``python -m meshnode`` processes on loopback, one slot each: the owner ``a``
and a worker ``b``. The job is ``meshnode submit --range N`` of a module that
echoes its input, so every figure is the mesh's own cost. Measured, with the
peak resident set size (RSS) of each node sampled every 0.1 s:

* submit: the wall time of ``meshnode submit --detach``; whether ``b`` ever saw
  ``a`` go stale while ``a`` took the job in;
* run: the time to the first verdict, and to the last;
* stop and restart: ``SIGTERM`` to ``a`` once ``--stop-at`` of the job is decided,
  how long it takes to exit, and how long the restarted ``a`` takes to answer
  its API with the job resumed.

Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.node_process import listening_addr, wait_until_serving  # noqa: E402
from meshnode.api.client import ApiClient  # noqa: E402

ECHO = wasmtime.wat2wasm(
    '(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 1024))'
    ' (func (export "run") (param i32 i32) (result i64)'
    " (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))))"
)
MiB = 1 << 20


class Node:
    """A node process, and the peak RSS it reached while watched."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshnode", "--data-dir", str(data_dir), "--no-mdns", "--slots", "1",
             "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", *args],
            stderr=self.log, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.peak_rss = 0
        self._watching = True
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        ps = psutil.Process(self.proc.pid)
        while self._watching and self.proc.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    def ready(self, timeout: float = 120) -> ApiClient:
        wait_until_serving(self.data_dir, self.proc, self.log_path, timeout)
        return ApiClient.for_data_dir(self.data_dir, timeout=30)

    def dial_addr(self) -> str:
        return listening_addr(self.log_path)

    def stop(self, sig: int = signal.SIGTERM) -> float:
        start = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(120)
        self._watching = False
        return time.monotonic() - start


def decided(status: dict[str, Any]) -> int:
    return int(status["verified"] + status["failed"] + status["disputed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subtasks", type=int, default=1_000_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--stop-at", type=float, default=0.5, help="stop the owner once this share is decided")
    args = parser.parse_args()
    n = args.subtasks
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        module = root / "echo.wasm"
        module.write_bytes(ECHO)
        a = Node(root / "a", [])
        a_api = a.ready()
        b = Node(root / "b", ["--bootstrap", a.dial_addr()])
        b_api = b.ready()
        while not any(p["state"] == "alive" for p in a_api.get("/v1/peers")["peers"]):
            time.sleep(0.1)
        load_before = os.getloadavg()[0]

        # --- submit, watching from b whether a stays alive -------------------------------------
        stale_seen = []
        submitting = True

        def watch_from_b() -> None:
            while submitting:
                states = {p["state"] for p in b_api.get("/v1/peers")["peers"]}
                stale_seen.append("alive" not in states)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_from_b)
        watcher.start()
        t0 = time.monotonic()
        submitted = subprocess.run(
            [sys.executable, "-m", "meshnode", "submit", str(module), "--range", str(n), "--replicas", str(args.replicas),
             "--quorum", str(args.replicas), "--detach", "--data-dir", str(a.data_dir)],
            capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        submit_s = time.monotonic() - t0
        submitting = False
        watcher.join()
        if submitted.returncode:
            raise SystemExit(submitted.stderr)
        job_id = submitted.stdout.strip()
        submit_rss = a.peak_rss

        # --- run to --stop-at, then SIGTERM the owner and restart it -----------------------------
        first = None
        while True:
            status = a_api.get(f"/v1/jobs/{job_id}")
            done = decided(status)
            if first is None and done:
                first = time.monotonic() - t0
            if done >= args.stop_at * n:
                break
            time.sleep(0.5)
        before_stop = time.monotonic() - t0
        run_rss = a.peak_rss
        stop_s = a.stop()
        t1 = time.monotonic()
        a = Node(root / "a", ["--bootstrap", b.dial_addr()])
        a_api = a.ready()
        restart_s = time.monotonic() - t1
        resumed_line = next(line for line in (root / "a.log").read_text().splitlines() if f"resumed job    {job_id}" in line)
        restart_rss = psutil.Process(a.proc.pid).memory_info().rss

        while (status := a_api.get(f"/v1/jobs/{job_id}"))["state"] == "running":
            time.sleep(1.0)
        total_s = time.monotonic() - t0
        load_after = os.getloadavg()[0]
        b_rss = b.peak_rss
        a_rss = a.peak_rss
        a.stop()
        b.stop()

    print(f"## {n:,} trivial subtasks, replicas {args.replicas}, 2 nodes (1 slot each), loopback\n")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}; {os.cpu_count()} cores\n")
    print("| phase | figure |\n|---|---|")
    print(f"| submit (`meshnode submit --range {n} --detach`) | {submit_s:.1f} s; owner peak RSS {submit_rss / MiB:.0f} MiB |")
    print(f"| worker saw the owner stale while it took the job in | {'yes' if any(stale_seen) else 'no'} ({len(stale_seen)} looks) |")
    print(f"| first verdict | {first:.2f} s after the submit began |")
    print(f"| {args.stop_at:.0%} decided | {before_stop:.1f} s; owner peak RSS {run_rss / MiB:.0f} MiB |")
    print(f"| SIGTERM to exit, owner | {stop_s:.2f} s |")
    print(f"| restart to API up, job resumed | {restart_s:.2f} s; RSS after {restart_rss / MiB:.0f} MiB (`{resumed_line.strip()[10:]}`) |")
    print(f"| job finished | {total_s:.1f} s after the submit began ({status['verified']:,} verified) |")
    print(f"| peak RSS, whole run | owner {max(a_rss, run_rss, submit_rss) / MiB:.0f} MiB, worker {b_rss / MiB:.0f} MiB |")


if __name__ == "__main__":
    main()
