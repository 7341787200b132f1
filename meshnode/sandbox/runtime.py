"""The wasmtime sandbox: runs one subtask with fuel, memory and time limits.

Theory of operation:

Outputs must be bit-identical on every machine (replicas are cross-verified by
hash), so the engine refuses threads and relaxed SIMD, a module may import
nothing, and every subtask gets a fresh Store and Instance. NaN bit patterns
are the one remaining difference between CPU architectures; Cranelift's NaN
canonicalization removes it at about 3x the cost on float-heavy code, so it is
a per-job option and runs on a second engine.

Limits: fuel (deterministic, counted in wasm operators) bounds the work; an
epoch deadline, driven by one ticker thread per sandbox, bounds wall time; store
limits bound linear memory, tables and instances.

The epoch counts ticks of real (monotonic) time, not wakeups of the ticker: a
ticker that wakes late on a loaded machine catches up by the ticks it missed
(``EpochClock``), so a deadline fires within a tick or two of the wall-clock
timeout however late the thread is scheduled, and a run starting while the
ticker lags still gets its whole timeout. The ticker sleeps while no wasm runs. When memory cannot grow,
``memory.grow`` returns -1 and the guest decides what to do (the task ABI says
``alloc`` returns 0, and the task then traps), so a trap with memory at its
limit is reported as ``memory_limit``.

Every failure comes back as a ``TaskOutcome`` with a stable code, never as an
exception. A task fails a subtask itself by setting ``FAILED_FLAG`` in the
length ``run`` returns (docs/task_abi.md): the bytes it points at are then a
message, and the subtask fails with ``task_error``. The ABI stays import-free:
the flag is bit 31 of the length, which no output can reach (``max_output`` is
at most 1 GiB).

Runs happen in worker threads (wasmtime releases the GIL while wasm runs), at
most ``slots`` at a time. A trio cancellation cannot stop wasm that is running:
the epoch deadline is the real kill switch, and ``close`` uses it to interrupt
every run still in flight.

Each subtask's Store and Instance come from wasmtime's pooling allocator, which
keeps instance slots and their linear memories reserved and resets a slot when
its store is dropped, instead of mapping and unmapping memory for every run: an
empty module's whole run took 52 µs with it against 99 µs without (measured on
this 2-core machine; most of the difference was ``wasmtime_store_delete``). A
pool holds ``slots + POOL_SPARE`` instances per engine: address space (4 GiB and
a guard per memory), not resident memory. At most ``slots`` runs hold an
instance at once (``_seats``), and each closes its store as it ends, so the
pool is never found empty.

Compiled modules are cached by SHA-256 in memory and, when a cache directory is
given, on disk with ``Module.serialize`` so a restart does not recompile. Only
artifacts this node wrote itself are ever deserialized (they are native code).
The cache's folders are 0700 and its files 0600: they are the jobs' code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ..core.manifest import TaskLimits
from ..core.outcome import MESSAGE_READ_MAX, TASK_ERROR, TaskError, TaskOutcome, failure_message
from ..core.python_rows import decode_script, encode_batch
from ..errors import SandboxError, WireError
from ..storage.private_files import private_dir
from .processes import Batch, SandboxProcesses
from .lazy_module import LazyModule
from .python_runtime import PythonRuntime, PythonScript, ScriptCheck, python_engine

if TYPE_CHECKING:
    import wasmtime

    from . import wasm_calls
else:
    wasmtime = LazyModule("wasmtime")  # imported by the first run or compile: an idle node never needs it
    wasm_calls = LazyModule(f"{__package__}.wasm_calls")  # wasmtime's internals: imported with it

__all__ = ["ENGINE_ID", "FAILED_FLAG", "EpochClock", "Sandbox", "TaskModule"]

WASMTIME_VERSION: Final = importlib.metadata.version("wasmtime")
# Fuel counts and NaN bits are comparable only between executors with the same engine.
ENGINE_ID: Final = f"wasmtime-{WASMTIME_VERSION}/{platform.machine().lower()}"

TICK_SECONDS: Final = 0.01
TICK_NS: Final = 10_000_000  # TICK_SECONDS in integer nanoseconds, so tick arithmetic is exact
MAX_WASM_STACK: Final = 1 << 20
MAX_TABLE_ELEMENTS: Final = 1 << 20
MAX_TABLES: Final = 8
MAX_MEMORY: Final = 4 << 30  # the most TaskLimits.memory allows
MAX_INSTANCE_SIZE: Final = 16 << 20  # an instance's own state (globals, function references), not its memory
POOL_SPARE: Final = 4  # pooled instances beyond ``slots``: a margin, as every run closes its store on the way out
PAGE: Final = 65536
MEMORY_CACHE_SIZE: Final = 64
SHORT_RUN_SECONDS: Final = 0.002

_MASK32: Final = 0xFFFF_FFFF
# Set in the low word run returns: the out_len & ~FAILED_FLAG bytes at out_ptr are a failure message.
FAILED_FLAG: Final = 0x8000_0000

def _trap_code(trap: wasmtime.Trap) -> str | None:
    if trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
        return "fuel_exhausted"
    return "timeout" if trap.trap_code == wasmtime.TrapCode.INTERRUPT else None


def _task_engine(nan_canonical: bool, instances: int) -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.wasm_threads = False  # shared memory and atomics: nondeterministic
    cfg.wasm_relaxed_simd = False  # results differ between CPUs
    cfg.cranelift_nan_canonicalization = nan_canonical
    cfg.max_wasm_stack = MAX_WASM_STACK
    wasm_calls.use_pool(cfg, instances, memory=MAX_MEMORY, tables=MAX_TABLES, table_elements=MAX_TABLE_ELEMENTS,
                        instance_size=MAX_INSTANCE_SIZE)  # fmt: skip
    return wasmtime.Engine(cfg)


def _last_line(exc: BaseException) -> str:
    # wasmtime's messages start with "error while executing at wasm backtrace:";
    # the cause is on the last line.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class EpochClock:
    """The engines' epoch as ticks of real time since ``origin_ns`` (monotonic nanoseconds).

    The caller reads the clock and passes the time in, so the arithmetic can be
    checked without a clock or a thread.
    """

    __slots__ = ("origin_ns", "ticked")

    def __init__(self, origin_ns: int) -> None:
        self.origin_ns = origin_ns
        self.ticked = 0  # increments made since origin_ns

    def elapsed_ticks(self, now_ns: int) -> int:
        return (now_ns - self.origin_ns) // TICK_NS

    def take_due(self, now_ns: int) -> int:
        """How many increments the epoch owes at ``now_ns``; they count as made from here on."""
        due = max(0, self.elapsed_ticks(now_ns) - self.ticked)
        self.ticked += due
        return due

    def deadline(self, now_ns: int, timeout_ms: int) -> int:
        """The epoch deadline, relative to the epoch as it stands, for a run starting at ``now_ns``.

        It counts from real time, not from the epoch, so the increments a late ticker
        still owes do not cut the run short; the extra tick makes up for ``now_ns``
        falling part way through a tick, so the deadline never comes before the timeout.
        """
        timeout_ticks = -(-timeout_ms * 1_000_000 // TICK_NS) + 1
        return self.elapsed_ticks(now_ns) + timeout_ticks - self.ticked


def _signature(ft: wasmtime.FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in ft.params], [str(r) for r in ft.results]


@dataclass(frozen=True, slots=True)
class TaskModule:
    """A compiled, checked task module, ready to instantiate."""

    sha256: bytes
    module: wasmtime.Module
    nan_canonical: bool
    entries: frozenset[str]  # exports with the entry signature (i32, i32) -> i64
    wasm: bytes = field(default=b"", repr=False)  # for a sandbox process that has not compiled it yet

    def check_entry(self, entry: str) -> TaskError | None:
        if entry in self.entries:
            return None
        have = ", ".join(sorted(self.entries)) or "none"
        return TaskError("abi_error", f"no entry function {entry!r} of type (i32, i32) -> i64 (found: {have})")


def _check_module(module: wasmtime.Module) -> frozenset[str]:
    """Apply the import allowlist (empty) and the task ABI's required exports."""
    imports = [f"{imp.module}.{imp.name}" for imp in module.imports]
    if imports:
        shown = ", ".join(imports[:5]) + (f" and {len(imports) - 5} more" if len(imports) > 5 else "")
        raise SandboxError(TaskError("bad_module", f"module imports {shown}; tasks may import nothing"))
    exports = {exp.name: exp.type for exp in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise SandboxError(TaskError("abi_error", "module does not export its memory as 'memory'"))
    alloc = exports.get("alloc")
    if not isinstance(alloc, wasmtime.FuncType) or _signature(alloc) != (["i32"], ["i32"]):
        raise SandboxError(TaskError("abi_error", "module does not export 'alloc' of type (i32) -> i32"))
    return frozenset(
        name
        for name, t in exports.items()
        if isinstance(t, wasmtime.FuncType) and _signature(t) == (["i32", "i32"], ["i64"])
    )


class Sandbox:
    """Runs task modules under limits, ``slots`` at a time.

    Use it as a context manager (sync or async) so the epoch ticker thread stops
    with it::

        with Sandbox(slots=2) as sandbox:
            outcome = await sandbox.run(wasm_bytes, b"input", limits)
    """

    def __init__(self, *, slots: int = 1, cache_dir: Path | None = None, processes: bool = False) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        # With processes, ``run_many_sync`` runs batches in sandbox processes (see ``processes``).
        self.processes = SandboxProcesses(slots, cache_dir) if processes else None
        self._cache_dir = cache_dir
        if cache_dir is not None:
            with contextlib.suppress(OSError):  # the cache is an optimization: never fail for it
                private_dir(cache_dir, create=False)
        # made on first use (an idle node needs none); the ticker moves every engine made so far
        self._engines: dict[str, wasmtime.Engine] = {}
        self._engines_lock = threading.Lock()
        self.python: PythonRuntime | None = None  # set by prepare_python
        self._modules: OrderedDict[tuple[bytes, bool], TaskModule] = OrderedDict()
        self._modules_lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(slots)
        # Guards the epoch clock, the count of runs and the ticker's stop flag; the
        # ticker waits on it, so a run starting while none ran wakes it at once.
        self._clock_changed = threading.Condition()
        self._clock = EpochClock(time.monotonic_ns())
        self._running = 0
        self._stopping = False
        self._closing = False
        self._max_deadline_ticks = 1
        self._ticker: threading.Thread | None = None
        self._python_lane = threading.Lock()
        self._seats = threading.BoundedSemaphore(slots)  # task instances alive at once (the pool holds POOL_SPARE more)
        self.compiled = 0  # modules compiled from wasm (for tests and stats)
        self.deserialized = 0  # modules loaded from the on-disk cache
        self._seconds_per_run: dict[bytes, float] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="meshnode-epoch", daemon=True)
            self._ticker.start()

    def warm(self) -> None:
        """Work is coming: start the sandbox processes now, if runs go to processes."""
        if self.processes is not None:
            self.processes.warm()

    def close(self) -> None:
        """Stop the ticker and interrupt every run still in flight (it ends as ``timeout``; in a
        sandbox process, the batch fails with ``SandboxGone``)."""
        self._closing = True
        if self.processes is not None:
            self.processes.close()
        with self._clock_changed:
            self._stopping = True
            self._clock_changed.notify_all()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        # Moving the epoch past every deadline set so far traps all running stores.
        self._increment_epoch(self._max_deadline_ticks + 1)

    def __enter__(self) -> Sandbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Sandbox:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _tick(self) -> None:
        """The ticker thread: moves the epoch with real time while wasm runs, sleeps while none does."""
        with self._clock_changed:
            while not self._stopping:
                self._clock_changed.wait(TICK_SECONDS if self._running else None)
                if self._running:
                    self._increment_epoch(self._clock.take_due(time.monotonic_ns()))

    def _increment_epoch(self, times: int) -> None:
        for engine in tuple(self._engines.values()):
            for _ in range(times):
                engine.increment_epoch()

    def _engine(self, kind: str) -> wasmtime.Engine:
        """The engine for task modules ("std", or "nan" for NaN-canonical runs) or for Python ("python")."""
        engine = self._engines.get(kind)
        if engine is None:
            with self._engines_lock:  # two slots may ask at once: one engine per kind, ever
                engine = self._engines.get(kind)
                if engine is None:
                    engine = python_engine() if kind == "python" else _task_engine(kind == "nan", self.slots + POOL_SPARE)
                    self._engines[kind] = engine
        return engine

    @contextlib.contextmanager
    def _deadline(self, store: wasmtime.Store, timeout_ms: int) -> Iterator[None]:
        """Set the store's epoch deadline and keep the ticker going until the block ends."""
        with self._ticking():
            with self._clock_changed:
                # Under the lock: the ticker cannot move the epoch between reading and setting.
                ticks = self._clock.deadline(time.monotonic_ns(), timeout_ms)
                store.set_epoch_deadline(ticks)
                self._max_deadline_ticks = max(self._max_deadline_ticks, ticks)
            yield

    @contextlib.contextmanager
    def _ticking(self) -> Iterator[None]:
        """Keep the ticker going until the block ends: around each run, and around a whole batch of runs.
        Measured on an empty module: a run cost 226 µs when each one woke the ticker and let it sleep
        again, 116 µs inside one block for the batch."""
        with self._clock_changed:
            if self._running == 0:
                # The ticker was asleep and owes nothing: start counting from now.
                self._clock = EpochClock(time.monotonic_ns())
                self._clock_changed.notify_all()
            self._running += 1
        try:
            yield
        finally:
            with self._clock_changed:
                self._running -= 1

    # --- modules ----------------------------------------------------------------------------

    def load(self, wasm: bytes, *, nan_canonical: bool = False, sha256: bytes | None = None) -> TaskModule:
        """Compile (or fetch from cache) and check a task module.

        Raises:
            SandboxError: ``bad_module`` (invalid wasm, forbidden feature or import) or
                ``abi_error`` (missing ``memory`` or ``alloc`` export).
        """
        digest = sha256 or hashlib.sha256(wasm).digest()
        key = (digest, nan_canonical)
        with self._modules_lock:
            cached = self._modules.get(key)
            if cached is not None:
                self._modules.move_to_end(key)
                return cached
        with self._compile_lock:  # compiles are rare; never compile one module twice at once
            with self._modules_lock:
                cached = self._modules.get(key)
            if cached is None:
                module = self._compile(wasm, digest, nan_canonical)
                cached = TaskModule(digest, module, nan_canonical, _check_module(module), wasm)
                with self._modules_lock:
                    self._modules[key] = cached
                    while len(self._modules) > MEMORY_CACHE_SIZE:
                        self._modules.popitem(last=False)
        return cached

    def _artifact_path(self, digest: bytes, nan_canonical: bool) -> Path | None:
        if self._cache_dir is None:
            return None
        flavour = "nan" if nan_canonical else "std"
        return self._cache_dir / ENGINE_ID.replace("/", "-") / f"{digest.hex()}-{flavour}.cwasm"

    def _compile(self, wasm: bytes, digest: bytes, nan_canonical: bool) -> wasmtime.Module:
        engine = self._engine("nan" if nan_canonical else "std")
        path = self._artifact_path(digest, nan_canonical)
        if path is not None and path.exists():
            try:
                # Read into memory rather than deserialize_file, which maps the file:
                # a file changed under a mapping kills the process with SIGBUS.
                module = wasmtime.Module.deserialize(engine, path.read_bytes())
                self.deserialized += 1
                return module
            except (OSError, wasmtime.WasmtimeError):
                pass  # stale or truncated artifact: recompile and overwrite it
        try:
            module = wasmtime.Module(engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise SandboxError(TaskError("bad_module", f"not a valid module: {_last_line(exc)}")) from None
        self.compiled += 1
        if path is not None:
            self._store_artifact(path, module)
        return module

    @staticmethod
    def _store_artifact(path: Path, module: wasmtime.Module) -> None:
        try:
            private_dir(path.parent.parent)  # the cache dir
            path.parent.mkdir(exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(module.serialize())
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs a recompile next time

    # --- Python ---------------------------------------------------------------------------

    def prepare_python(self, cache: Path | None = None, progress: Callable[[str], None] | None = None) -> PythonRuntime:
        """Make the Python runtime ready (compiling it once per machine); see ``python_runtime``.

        Raises:
            SandboxError: it cannot be prepared.
        """
        if self.python is None:
            self.python = PythonRuntime.prepare(self._engine("python"), cache, progress=progress)
        return self.python

    @staticmethod
    def load_python(module: bytes, sha256: bytes | None = None) -> PythonScript:
        """A job's script module, ready to run.

        Raises:
            SandboxError: ``bad_module``, it is not a script made by ``encode_script``.
        """
        try:
            name, source = decode_script(module)
        except WireError as exc:
            raise SandboxError(TaskError("bad_module", str(exc))) from None
        return PythonScript(sha256 or hashlib.sha256(module).digest(), name, source)

    def check_python(self, script: PythonScript, limits: TaskLimits, first_row: bytes | None = None) -> ScriptCheck:
        """Whether the script can run at all (a syntax error, an exception at import, no ``main``), and what
        it costs: runs its top level once in the sandbox, as each subtask will, then ``first_row`` (from
        ``encode_row``) if given.
        """
        import json

        if self._ticker is None:
            raise RuntimeError("the sandbox is not open (use it as a context manager)")
        # The first row three times; a row costs from its start to the next row's, and the second is
        # measured (the first also pays what the script sets up on first use, once per subtask).
        # Start-up is all the rest: the interpreter, the top level, its shutdown after the last row.
        batch = b"" if first_row is None else encode_batch(0, [first_row] * 3)
        output, error, fuel_used, marks = self._execute_python(script, batch, limits, check=True)
        row = marks[3] - marks[2] if len(marks) == 4 else 0  # the warm-up restart, then the three rows
        if output is None:
            assert error is not None
            if len(marks) >= 2:  # the script loaded and a row ran out of fuel or time: that row's failure
                return ScriptCheck(None, marks[1], max(1, fuel_used - marks[1]))
            return ScriptCheck({"code": error.code, "message": error.message, "line": None}, fuel_used, 0)
        problem: dict[str, Any] | None = json.loads(output).get("error")
        return ScriptCheck(problem, fuel_used - 3 * row, row)

    def _execute_python(
        self, script: PythonScript, data: bytes, limits: TaskLimits, check: bool
    ) -> tuple[bytes | None, TaskError | None, int, list[int]]:
        """Output, error, fuel used, and the fuel used when each row started."""
        if self.python is None:
            return None, TaskError("bad_module", "the Python runtime is not prepared on this node"), 0, []
        try:
            run = self.python.work(script, data, limits.max_output, check=check)
        except WireError as exc:
            return None, TaskError("abi_error", f"not a batch of rows: {exc}"), 0, []
        store = wasmtime.Store(self._engine("python"))
        store.set_fuel(limits.fuel)
        store.set_limits(memory_size=limits.memory, table_elements=MAX_TABLE_ELEMENTS, instances=1,
                         tables=MAX_TABLES, memories=1)  # fmt: skip
        try:
            with self._deadline(store, limits.timeout_ms):
                status = self.python.execute(store, run)
        except wasmtime.Trap as trap:
            return None, self._trap_error(trap, None, limits), self._fuel_used(store, limits), run.marks
        except wasmtime.WasmtimeError as exc:
            return None, self._instantiation_error(exc), self._fuel_used(store, limits), run.marks
        fuel_used = self._fuel_used(store, limits)
        if run.refused:
            return None, TaskError("output_too_large", run.refused[0]), fuel_used, run.marks
        if run.output is None:
            ended = TaskError("trap", f"the script ended the interpreter (exit status {status}) before it answered")
            return None, ended, fuel_used, run.marks
        return run.output, None, fuel_used, run.marks

    # --- running ----------------------------------------------------------------------------

    async def run(
        self,
        wasm: bytes | TaskModule | PythonScript,
        data: bytes,
        limits: TaskLimits,
        *,
        entry: str = "run",
        nan_canonical: bool = False,
    ) -> TaskOutcome:
        """Run one subtask in a worker thread, waiting for a free slot first.

        Cancelling the caller stops the wait, not the wasm: the run goes on until it
        finishes or hits its deadline.
        """
        return await trio.to_thread.run_sync(
            self.run_sync, wasm, data, limits, entry, nan_canonical, limiter=self._limiter
        )

    async def run_many(
        self,
        wasm: bytes | TaskModule | PythonScript,
        inputs: Sequence[bytes],
        limits: TaskLimits,
        *,
        entry: str = "run",
        nan_canonical: bool = False,
    ) -> list[TaskOutcome]:
        """Run several subtasks one after another in one worker thread (one slot).

        For short subtasks the hop into a thread costs more than the run itself;
        batching amortizes it.
        """

        return await trio.to_thread.run_sync(
            self.run_many_sync, wasm, inputs, limits, entry, nan_canonical, limiter=self._limiter
        )

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """One token per slot: hold one while running subtasks in a thread of your own."""
        return self._limiter

    def run_many_sync(
        self,
        wasm: bytes | TaskModule | PythonScript,
        inputs: Sequence[bytes],
        limits: TaskLimits,
        entry: str = "run",
        nan_canonical: bool = False,
        budget: float | None = None,
    ) -> list[TaskOutcome]:
        """``run_many`` in the calling thread (which should hold a ``limiter`` token), or in a sandbox process.

        With a ``budget`` (seconds), the runs stop once they took that long together: the outcomes are
        then those of the first inputs only (at least one), and the caller hands the rest back.

        Raises:
            SandboxError: in a sandbox process, the module cannot be loaded there.
            SandboxGone: the sandbox process died while it ran the batch.
        """
        if self.processes is not None:
            return self._run_in_process(wasm, inputs, limits, entry, nan_canonical, budget)
        key = wasm.sha256 if isinstance(wasm, TaskModule | PythonScript) else None
        # Subtasks this short spend most of their time in Python (wasmtime-py's
        # ctypes calls), and two threads fighting over the GIL run them about 2x
        # slower than one: run such chunks one at a time.
        short = key is not None and self._seconds_per_run.get(key, 1.0) < SHORT_RUN_SECONDS
        with self._python_lane if short else contextlib.nullcontext(), self._ticking():
            t0 = time.perf_counter()
            outcomes = []
            for data in inputs:
                outcomes.append(self.run_sync(wasm, data, limits, entry, nan_canonical))
                if budget is not None and time.perf_counter() - t0 >= budget:
                    break
        if key is not None and outcomes:
            # smoothed over batches: one batch of a job's cheapest or dearest subtasks must not swing the next
            # chunk's size tenfold
            latest = (time.perf_counter() - t0) / len(outcomes)
            last = self._seconds_per_run.get(key, latest)
            self._seconds_per_run[key] = 0.5 * last + 0.5 * latest
        return outcomes

    def _run_in_process(
        self, wasm: bytes | TaskModule | PythonScript, inputs: Sequence[bytes], limits: TaskLimits, entry: str,
        nan_canonical: bool, budget: float | None,
    ) -> list[TaskOutcome]:  # fmt: skip
        assert self.processes is not None
        if isinstance(wasm, PythonScript):
            batch = Batch(wasm.sha256, None, wasm, nan_canonical, entry, limits, inputs, budget)
        else:
            data = wasm.wasm if isinstance(wasm, TaskModule) else wasm
            digest = wasm.sha256 if isinstance(wasm, TaskModule) else hashlib.sha256(data).digest()
            batch = Batch(digest, data, None, nan_canonical, entry, limits, inputs, budget)
        outcomes, seconds = self.processes.run(batch)
        if seconds is not None:
            self._seconds_per_run[batch.sha256] = seconds
        return outcomes

    def seconds_per_run(self, sha256: bytes) -> float | None:
        """The last measured time per subtask of a module (None before it ran here)."""
        return self._seconds_per_run.get(sha256)

    def run_sync(
        self,
        wasm: bytes | TaskModule | PythonScript,
        data: bytes,
        limits: TaskLimits,
        entry: str = "run",
        nan_canonical: bool = False,
        *,
        check: bool = False,
    ) -> TaskOutcome:
        """Run one subtask in the calling thread. Never raises for anything the module does."""
        start = time.perf_counter()
        if self._ticker is None:
            raise RuntimeError("the sandbox is not open (use it as a context manager)")
        if isinstance(wasm, PythonScript):
            output, error, fuel_used, _ = self._execute_python(wasm, data, limits, check)
            return TaskOutcome(output, error, fuel_used, time.perf_counter() - start)
        if isinstance(wasm, TaskModule):
            module = wasm
        else:
            try:
                module = self.load(wasm, nan_canonical=nan_canonical)
            except SandboxError as exc:
                return TaskOutcome(None, exc.error, 0, time.perf_counter() - start)
        problem = module.check_entry(entry)
        if problem is not None:
            return TaskOutcome(None, problem, 0, time.perf_counter() - start)
        output, error, fuel_used = self._execute(module, data, limits, entry)
        return TaskOutcome(output, error, fuel_used, time.perf_counter() - start)

    def _execute(
        self, module: TaskModule, data: bytes, limits: TaskLimits, entry: str
    ) -> tuple[bytes | None, TaskError | None, int]:
        if len(data) + PAGE > limits.memory:
            return None, TaskError("memory_limit", f"the input ({len(data)} bytes) does not fit the memory limit"), 0
        with self._seats:
            store = wasmtime.Store(self._engine("nan" if module.nan_canonical else "std"))
            try:
                return self._instantiate_and_run(store, module, data, limits, entry)
            finally:
                # Its pooled instance goes back now. Dropped, a store that a trap's traceback holds in a
                # reference cycle lived until the next garbage collection: five runs out of fuel in a row
                # emptied a one-slot pool, and the sixth run failed for want of an instance.
                store.close()

    def _instantiate_and_run(
        self, store: wasmtime.Store, module: TaskModule, data: bytes, limits: TaskLimits, entry: str
    ) -> tuple[bytes | None, TaskError | None, int]:
        store.set_fuel(limits.fuel)
        store.set_limits(
            memory_size=limits.memory,
            table_elements=MAX_TABLE_ELEMENTS,
            instances=1,
            tables=MAX_TABLES,
            memories=1,
        )
        exports: wasm_calls.Exports | None = None
        try:
            with self._deadline(store, limits.timeout_ms):
                # _check_module proved these are a memory and two functions of the right types
                exports = wasm_calls.Exports(store, wasmtime.Instance(store, module.module, []), entry)
                ptr = exports.alloc(len(data))
                if (ptr == 0 and data) or ptr + len(data) > exports.memory_size():
                    return None, self._alloc_failure(exports, limits, ptr), self._fuel_used(store, limits)
                exports.write(ptr, data)
                packed = exports.run(ptr, len(data))
        except wasmtime.Trap as trap:
            return None, self._trap_error(trap, exports, limits), self._fuel_used(store, limits)
        except wasmtime.WasmtimeError as exc:
            return None, self._instantiation_error(exc), self._fuel_used(store, limits)
        fuel_used = self._fuel_used(store, limits)
        out_ptr, out_len = packed >> 32, packed & _MASK32
        if out_len & FAILED_FLAG:
            return None, self._task_failure(exports, out_ptr, out_len & ~FAILED_FLAG), fuel_used
        if out_len > limits.max_output:
            return None, TaskError("output_too_large", f"output of {out_len} bytes is over the {limits.max_output}-byte limit"), fuel_used
        if out_ptr + out_len > exports.memory_size():
            return None, TaskError("abi_error", f"output [{out_ptr}, +{out_len}) lies outside linear memory"), fuel_used
        return exports.read(out_ptr, out_len), None, fuel_used

    @staticmethod
    def _task_failure(exports: wasm_calls.Exports, ptr: int, length: int) -> TaskError:
        """The subtask's failure as the task put it: its message, read from linear memory (only as much of it
        as ``failure_message`` keeps)."""
        if ptr + length > exports.memory_size():
            return TaskError("abi_error", f"failure message [{ptr}, +{length}) lies outside linear memory")
        return TaskError(TASK_ERROR, failure_message(exports.read(ptr, min(length, MESSAGE_READ_MAX))))

    @staticmethod
    def _fuel_used(store: wasmtime.Store, limits: TaskLimits) -> int:
        return limits.fuel - store.get_fuel()

    @staticmethod
    def _at_memory_limit(exports: wasm_calls.Exports, limits: TaskLimits) -> bool:
        return exports.memory_size() + PAGE > limits.memory

    def _alloc_failure(self, exports: wasm_calls.Exports, limits: TaskLimits, ptr: int) -> TaskError:
        if self._at_memory_limit(exports, limits):
            return TaskError("memory_limit", f"alloc could not grow memory past the {limits.memory}-byte limit")
        return TaskError("abi_error", f"alloc returned {ptr}, which cannot hold the input")

    def _trap_error(self, trap: wasmtime.Trap, exports: wasm_calls.Exports | None, limits: TaskLimits) -> TaskError:
        code = _trap_code(trap)
        if code == "timeout":
            if self._closing:
                return TaskError("timeout", "interrupted: the sandbox was closed")
            return TaskError("timeout", f"ran longer than {limits.timeout_ms / 1000:g} s")
        if code == "fuel_exhausted":
            return TaskError("fuel_exhausted", f"used all {limits.fuel} fuel")
        if exports is not None and trap.trap_code != wasmtime.TrapCode.STACK_OVERFLOW:
            used = exports.memory_size()
            # A guest whose memory.grow failed aborts (the ABI's alloc returns 0 and
            # the task traps with `unreachable`), but the failed request itself is
            # invisible: call it memory_limit when memory is full, or when an abort
            # came with more than half the limit in use.
            aborted = trap.trap_code == wasmtime.TrapCode.UNREACHABLE
            if used + PAGE > limits.memory or (aborted and 2 * used > limits.memory):
                return TaskError(
                    "memory_limit",
                    f"trapped with {used} bytes of memory in use, limit {limits.memory} ({_last_line(trap)})",
                )
        return TaskError("trap", _last_line(trap))

    @staticmethod
    def _instantiation_error(exc: wasmtime.WasmtimeError) -> TaskError:
        message = _last_line(exc)
        if "limit" in message:  # e.g. "memory minimum size of 4000 pages exceeds memory limits"
            return TaskError("memory_limit", message)
        return TaskError("bad_module", message)
