"""The commands about tasks on this machine: ``build`` (C to wasm) and ``exec`` (run a task's subtasks here)."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from ..api.job_files import read_inputs, result_record
from ..config import default_slots, resolve_data_dir
from ..core.outcome import TaskOutcome
from ..errors import ConfigError, InputError, SandboxError
from .parser import input_spec, limits_from_args, read_module

__all__ = ["cmd_build", "cmd_exec", "cmd_python_setup", "is_python", "measure_script", "read_script"]


def cmd_build(args: argparse.Namespace) -> int:
    from ..sandbox.toolchain import compile_task

    output = Path(args.output)
    compile_task(Path(args.source), output, include_dirs=[Path(d) for d in args.include])
    print(f"built {output} ({output.stat().st_size} bytes)", file=sys.stderr)
    return 0


def cmd_python_setup(args: argparse.Namespace) -> int:
    from ..sandbox.python_runtime import PythonRuntime, python_engine, runtime_dir

    start = time.monotonic()
    was_ready = PythonRuntime.ready()
    PythonRuntime.prepare(python_engine(), progress=lambda line: print(line, file=sys.stderr, flush=True))
    state = "was ready" if was_ready else "is ready"
    print(f"the Python runtime {state} in {runtime_dir()} ({time.monotonic() - start:.1f} s); "
          "nodes on this machine now run Python tasks", file=sys.stderr)  # fmt: skip
    return 0


def _open_output(path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


class _Progress:
    """A one-line progress display on stderr, shown only on a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.done = self.failed = 0
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._live = sys.stderr.isatty()

    def add(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if self._live and (now - self._last_draw > 0.1 or self.done == self.total):
            self._last_draw = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            sys.stderr.write(
                f"\r{self.label}: {self.done}/{self.total} done, {self.failed} failed, "
                f"{rate:.1f}/s, ETA {eta:.0f} s   "
            )
            sys.stderr.flush()

    def finish(self, slots: int, what: str = "subtasks") -> None:
        elapsed = time.monotonic() - self.start
        if self._live:
            sys.stderr.write("\r\x1b[K")
        print(
            f"{self.label}: {self.total} {what}, {self.total - self.failed} ok, {self.failed} failed "
            f"in {elapsed:.2f} s on {slots} slot{'s' * (slots != 1)}",
            file=sys.stderr,
        )


def is_python(path: str) -> bool:
    return path.endswith(".py")


def read_script(path: str) -> bytes:
    """A ``.py`` file as a job's module.

    Raises:
        InputError: unreadable, or not UTF-8 text.
    """
    from ..core.python_rows import encode_script

    data = read_module(path)
    try:
        return encode_script(Path(path).name, data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def prepare_python(sandbox: Any) -> None:
    """Make the sandbox's Python runtime ready, saying so on stderr when it must be compiled first."""
    sandbox.prepare_python(progress=lambda line: print(line, file=sys.stderr, flush=True))


def check_script(sandbox: Any, script: Any, limits: Any, path: str, rows: list[bytes]) -> int:
    """How many rows per subtask suit the script (from its start-up and first row, measured in the sandbox).

    Raises:
        InputError: (exit 2) the script cannot run at all: a syntax error, no main, its imports fail.
    """
    from ..core.python_rows import default_rows_per_subtask

    checked = sandbox.check_python(script, limits, rows[0] if rows else None)
    if checked.problem is not None:
        message = checked.problem["message"]
        raise InputError(message if message.startswith(Path(path).name) else f"{path}: {message}")
    return default_rows_per_subtask(len(rows), checked.startup_fuel, checked.row_fuel)


def measure_script(module: bytes, limits: Any, path: str, rows: list[bytes]) -> int:
    """``check_script`` in a sandbox of its own (``submit``, before the rows go to the node)."""
    from ..sandbox.runtime import Sandbox

    with Sandbox(slots=1) as sandbox:
        prepare_python(sandbox)
        return check_script(sandbox, sandbox.load_python(module), limits, path, rows)


def _exec_python(args: argparse.Namespace, limits: Any, slots: int, data_dir: Path) -> int:
    import trio

    from ..api.job_files import read_rows
    from ..core.python_rows import batch_rows, row_records
    from ..sandbox.local_exec import run_locally
    from ..sandbox.runtime import Sandbox
    from ..storage.identity import load_or_create_identity

    module = read_script(args.module)
    rows = list(read_rows(input_spec(args), csv_strings=args.csv_strings))
    executors = [str(load_or_create_identity(data_dir).peer_id)]
    out = _open_output(args.output)
    progress = _Progress(len(rows), Path(args.module).name)

    def emit(index: int, outcome: TaskOutcome) -> None:
        error = None if outcome.error is None else {"code": outcome.error.code, "message": outcome.error.message}
        extra = {"sha256": None if outcome.output is None else hashlib.sha256(outcome.output).hexdigest(),
                 "executors": executors}  # fmt: skip
        for line in row_records(index, len(rows), per, outcome.output, error, extra):
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            progress.add(line["status"] == "ok")

    try:
        with Sandbox(slots=slots) as sandbox:
            prepare_python(sandbox)
            script = sandbox.load_python(module)
            per = check_script(sandbox, script, limits, args.module, rows)
            per = args.rows_per_subtask or per
            inputs = list(batch_rows(rows, per))
            trio.run(functools.partial(run_locally, sandbox, script, inputs, limits, emit))
    finally:
        out.flush()
        if out is not sys.stdout:
            out.close()
    progress.finish(slots, "rows")
    return 1 if progress.failed else 0


def cmd_exec(args: argparse.Namespace) -> int:
    import trio

    from ..sandbox.local_exec import run_locally
    from ..sandbox.runtime import Sandbox
    from ..storage.identity import load_or_create_identity

    limits = limits_from_args(args)
    slots = args.slots if args.slots is not None else default_slots()
    if slots < 1:
        raise ConfigError(f"--slots {slots}: need at least 1")
    if is_python(args.module):
        return _exec_python(args, limits, slots, resolve_data_dir(args.data_dir))
    wasm = read_module(args.module)
    inputs = list(read_inputs(input_spec(args), csv_strings=args.csv_strings))
    data_dir = resolve_data_dir(args.data_dir)
    executors = [str(load_or_create_identity(data_dir).peer_id)]
    out = _open_output(args.output)
    progress = _Progress(len(inputs), Path(args.module).name)

    def emit(index: int, outcome: TaskOutcome) -> None:
        record: dict[str, Any] = result_record(index, outcome, executors)
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        progress.add(outcome.ok)

    try:
        with Sandbox(slots=slots, cache_dir=data_dir / "modules") as sandbox:
            try:
                module = sandbox.load(wasm, nan_canonical=args.nan_canonical)
            except SandboxError as exc:
                raise InputError(f"{args.module} cannot run: {exc.error.message} ({exc.error.code})") from None
            problem = module.check_entry(args.entry)
            if problem is not None:
                raise InputError(f"{args.module}: {problem.message}")
            trio.run(functools.partial(run_locally, sandbox, module, inputs, limits, emit, entry=args.entry))
    finally:
        out.flush()
        if out is not sys.stdout:
            out.close()
    progress.finish(slots)
    return 1 if progress.failed else 0
