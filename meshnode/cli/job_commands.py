"""``submit``, ``status``, ``results`` and ``jobs``: the job commands, through the running node's API."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..config import resolve_data_dir
from ..errors import ConfigError, MeshError
from ..units import format_size
from .parser import input_spec, limits_from_args, read_module

__all__ = ["cmd_cancel", "cmd_jobs", "cmd_results", "cmd_status", "cmd_submit", "cost_lines", "progress_line"]

POLL_SECONDS = 0.5
RESULTS_PAGE = 1000  # result records per request


def _client(args: argparse.Namespace, timeout: float = 5.0) -> Any:
    from ..api.client import ApiClient

    return ApiClient.for_data_dir(resolve_data_dir(args.data_dir), timeout=timeout)


def cmd_submit(args: argparse.Namespace) -> int:
    from ..api.job_body import JOB_CONTENT_TYPE, encode_job
    from ..api.job_files import read_inputs, read_rows
    from .task_commands import is_python, measure_script, read_script

    limits = limits_from_args(args)
    # --replicas or --quorum ask for fixed replication; otherwise trust is paid for once (core/adaptive.py)
    args.verify = args.verify or ("fixed" if args.replicas is not None or args.quorum is not None else "adaptive")
    args.replicas = 2 if args.replicas is None else args.replicas
    args.quorum = 2 if args.quorum is None else args.quorum
    if not 1 <= args.quorum <= args.max_replicas or not 1 <= args.replicas <= args.max_replicas:
        raise ConfigError("need 1 <= --quorum <= --max-replicas and 1 <= --replicas <= --max-replicas")
    python = is_python(args.module)
    if python:  # rows, counted first: the default grouping depends on how many there are
        module = read_script(args.module)
        rows = list(read_rows(input_spec(args), csv_strings=args.csv_strings))
        # checked here first: a script that cannot run is refused before anything is sent (exit 2)
        per = measure_script(module, limits, args.module, rows) if rows else 1
        per = args.rows_per_subtask or per
        inputs: Iterator[bytes] = iter(rows)
    else:
        module = read_module(args.module)
        inputs = read_inputs(input_spec(args), csv_strings=args.csv_strings)
    # the first input is read before the upload, so an unreadable or empty source
    # is reported before the node compiles anything
    first = next(inputs, None)
    if first is None:
        raise ConfigError("the job has no inputs")
    options = {
        "replicas": args.replicas, "quorum": args.quorum, "max_replicas": args.max_replicas,
        "fuel": limits.fuel, "memory": limits.memory, "timeout_ms": limits.timeout_ms,
        "max_output": limits.max_output, "entry": args.entry, "nan_canonical": args.nan_canonical,
        "label": (args.label or Path(args.module).name)[:200], "verify": args.verify,
    }  # fmt: skip
    if python:
        options["rows_per_subtask"] = per
    sent = _Counted(itertools.chain([first], inputs))
    client = _client(args, timeout=300.0)
    with _ctrl_c_held_once_sent(sent) as ctrl_c:
        reply = client.post_stream("/v1/jobs", encode_job(module, options, sent), JOB_CONTENT_TYPE)
    job_id, subtasks = reply["job_id"], reply["subtasks"]
    if ctrl_c:  # pressed before the job's ID was known: the user wants no job
        return _cancel_after_ctrl_c(client, job_id)
    expected = -(-sent.count // per) if python else sent.count
    if subtasks != expected:
        raise MeshError(f"job {job_id}: the node counted {subtasks} subtasks where {expected} were sent")
    if args.detach:
        print(job_id)
        return 0
    rows_note = f" of {per} rows ({sent.count} rows)" if python else ""
    policy = (f"adaptive replication (quorum {args.quorum} where checked)" if args.verify == "adaptive"
              else f"{args.replicas} replicas, quorum {args.quorum}")  # fmt: skip
    print(f"job {job_id}: {subtasks} subtasks{rows_note}, {policy}", file=sys.stderr)
    try:
        status = _follow(client, job_id)
    except KeyboardInterrupt:  # the job is this terminal's: stop it across the mesh, as the user means
        return _cancel_after_ctrl_c(client, job_id)
    all_ok = _write_results(_results(client, job_id), args.output)
    return 0 if all_ok and status["verified"] == status["total"] else 1


def _cancel_after_ctrl_c(client: Any, job_id: str) -> int:
    status = client.post_json(f"/v1/jobs/{job_id}/cancel")
    print(f"\n{_cancelled(status)}", file=sys.stderr)
    return 130


def _cancelled(status: dict[str, Any]) -> str:
    decided = status["verified"] + status["failed"] + status["disputed"]
    return (f"job {status['job_id']} cancelled across the mesh: {decided} of {status['total']} subtasks were "
            f"decided (meshnode results {status['job_id']})")  # fmt: skip


def cmd_cancel(args: argparse.Namespace) -> int:
    status = _client(args, timeout=30.0).post_json(f"/v1/jobs/{args.job}/cancel")
    print(_cancelled(status))
    return 0


class _Counted:
    """An iterable of inputs that counts them as they are read."""

    def __init__(self, inputs: Iterator[bytes]) -> None:
        self._inputs = inputs
        self.count = 0
        self.all_read = False

    def __iter__(self) -> Iterator[bytes]:
        for data in self._inputs:
            self.count += 1
            yield data
        self.all_read = True


@contextlib.contextmanager
def _ctrl_c_held_once_sent(sent: _Counted) -> Iterator[list[int]]:
    """Ctrl-C while the job goes up: before the last input is sent it stops the upload (no job is made);
    after, the node may already have made the job, so it is held (in the yielded list) until the node
    answers with the job's ID, and the job can be cancelled rather than left to run unseen.
    """
    held: list[int] = []
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (`&` in a script): so be it
        yield held
        return

    def on_ctrl_c(signum: int, frame: object) -> None:
        if not sent.all_read:
            raise KeyboardInterrupt
        held.append(signum)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def _follow(client: Any, job_id: str) -> dict[str, Any]:
    """Poll the job until it ends, drawing progress on stderr; its last status."""
    start = time.monotonic()
    warned = False
    refused: set[str] = set()
    problem = ""
    live = sys.stderr.isatty()
    while True:
        status: dict[str, Any] = client.get(f"/v1/jobs/{job_id}")
        waiting = status.get("waiting_for_peers")
        if waiting and not warned:
            print(
                f"waiting for peers: the mesh has {waiting['have']} other node(s), this job needs "
                f"{waiting['need']} (--replicas 1 runs unverified on one node); still waiting...",
                file=sys.stderr,
            )
            warned = True
        if status.get("problem", "") != problem:
            problem = status.get("problem", "")
            if problem:
                print(f"\njob {job_id}: {problem}", file=sys.stderr)
        for peer, reason in status.get("refusals", {}).items():
            if peer not in refused:
                refused.add(peer)
                print(f"\npeer {peer} refused this job's work: {reason}", file=sys.stderr)
        line = progress_line(status, time.monotonic() - start)
        if live:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        if status["state"] != "running":
            if live:
                sys.stderr.write("\n")
            print(f"job {job_id} {status['state']}: {line}", file=sys.stderr)
            for text in cost_lines(status.get("cost")):
                print(f"  {text}", file=sys.stderr)
            return status
        time.sleep(POLL_SECONDS)


def progress_line(status: dict[str, Any], elapsed: float, width: int = 24) -> str:
    """``[#######.........]  120/256  verified 118, failed 2, disputed 0 | 6 running on 3 peers | 41.0/s ETA 3 s``"""
    total = max(1, status["total"])
    done = status["verified"] + status["failed"] + status["disputed"]
    filled = round(width * done / total)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {(total - done) / rate:.0f} s" if rate and done < total else "ETA -"
    peers = status.get("peers_working", 0)
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{status['total']}  verified {status['verified']}, "
        f"failed {status['failed']}, disputed {status['disputed']} | {status['running']} running on "
        f"{peers} peer{'' if peers == 1 else 's'} | {rate:.1f}/s {eta}"
    )


def _results(client: Any, job_id: str, limit: int = RESULTS_PAGE) -> Iterator[dict[str, Any]]:
    """A job's result records in index order, fetched a page at a time as they are consumed."""
    after: int | None = None
    while True:
        query = f"limit={limit}" if after is None else f"limit={limit}&after={after}"
        page: dict[str, Any] = client.get(f"/v1/jobs/{job_id}/results?{query}")
        yield from page["results"]
        after = page["next"]
        if after is None:
            return


def _write_results(results: Iterable[dict[str, Any]], output: str | None) -> bool:
    """Write ``results`` as JSON Lines, each page as it arrives; whether every one was ok."""
    all_ok = True
    out: IO[str] = sys.stdout if output is None else open(output, "w", encoding="utf-8")
    try:
        for record in results:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            all_ok = all_ok and record["status"] == "ok"
    finally:
        if out is not sys.stdout:
            out.close()
    return all_ok


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    statuses = [client.get(f"/v1/jobs/{args.job}")] if args.job else client.get("/v1/jobs")["jobs"]
    for s in statuses:
        if args.json:
            print(json.dumps(s))
        else:
            wait = "  (waiting for peers)" if s.get("waiting_for_peers") else ""
            print(f"{s['job_id']}  {s['state']:8}  {s['verified']}/{s['total']} verified, {s['failed']} failed, "
                  f"{s['disputed']} disputed, {s['running']} running{wait}")  # fmt: skip
            for peer, reason in s.get("refusals", {}).items():
                print(f"  refused by {peer}: {reason}")
            if s.get("problem"):
                print(f"  {s['problem']}")
            if s.get("suspect"):
                print(f"  {s['suspect']} results rest on the word of an executor caught lying since: "
                      f"meshnode results --recheck {s['job_id']}")  # fmt: skip
            if args.job:
                for text in cost_lines(s.get("cost")):
                    print(f"  {text}")
    return 0


def cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The job summary's lines: time, work, who did it, bytes moved, retries and disputes."""
    if not cost:
        return []
    cpu = cost["sandbox_cpu_s"]
    work = f"sandbox CPU about {cpu:.1f} s" if cpu is not None else "sandbox CPU not measured here"
    runs = cost["runs_per_peer"]
    shown = ", ".join(f"{peer[-8:]} {n}" for peer, n in list(runs.items())[:8])
    more = f" and {len(runs) - 8} more" if len(runs) > 8 else ""
    return [
        f"cost: {cost['wall_s']:.1f} s wall, {work}, {cost['fuel']:,} fuel",
        f"runs accepted per peer: {shown or 'none yet'}{more}",
        f"moved: {format_size(cost['input_bytes_sent'])} of subtasks out, "
        f"{format_size(cost['output_bytes_received'])} of results in",
        f"retries: {cost['replicas_lost']} replicas lost and run again, {cost['replicas_added']} added on "
        f"disagreement; {cost['disputed']} disputed",
    ]


def cmd_results(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.recheck:
        count = client.post_json(f"/v1/jobs/{args.job}/recheck")["rechecked"]
        if count:
            print(f"job {args.job}: {count} results that rested on one executor's word run again on others",
                  file=sys.stderr)  # fmt: skip
            _follow(client, args.job)
    return 0 if _write_results(_results(client, args.job), args.output) else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = _client(args).get("/v1/jobs")["jobs"]
    if args.json:
        print(json.dumps(jobs))
    elif not jobs:
        print("no jobs yet")
    else:
        for s in jobs:
            print(f"{s['job_id']}  {s['state']:8}  {s['verified']}/{s['total']} verified  {s.get('label', '')}")
            if s.get("problem"):
                print(f"  {s['problem']}")
    return 0


