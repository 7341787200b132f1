"""meshnode.sandbox.toolchain and tasks_wasm/build.py: reproducible builds and clear build errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from meshnode.errors import BuildError
from meshnode.sandbox.toolchain import compile_task, task_include_dir

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = REPO / "tasks_wasm"

needs_zig = pytest.mark.skipif(
    importlib.util.find_spec("ziglang") is None,
    reason="ziglang is not installed (pip install 'meshnode[build]')",
)

MINIMAL_TASK = """\
#include "meshnode_task.h"

MESHNODE_EXPORT(run) int64_t run(const uint8_t *in, uint32_t len) {
    out_bytes(in, len);
    return mn_return();
}
"""


def write(tmp_path: Path, source: str, name: str = "task.c") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def test_include_dir_holds_the_header() -> None:
    assert (task_include_dir() / "meshnode_task.h").is_file()


@needs_zig
def test_rebuilding_gives_the_committed_modules(tmp_path: Path) -> None:
    sources = sorted(TASKS_DIR.glob("*.c"))
    assert [src.stem for src in sources] == [
        "logreg_step", "mandelbrot", "matmul_tile", "matrix_mul", "monte_carlo_pi", "password_hash", "secondary_structure",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(TASKS_DIR / "build.py"), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for src in sources:
        built, committed = tmp_path / f"{src.stem}.wasm", TASKS_DIR / f"{src.stem}.wasm"
        assert built.read_bytes() == committed.read_bytes(), f"{committed.name} is stale: run python tasks_wasm/build.py"


@needs_zig
def test_check_mode_passes_on_a_clean_checkout() -> None:
    proc = subprocess.run(
        [sys.executable, "tasks_wasm/build.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


@needs_zig
def test_check_mode_reports_a_stale_module(tmp_path: Path) -> None:
    copy = tmp_path / "tasks_wasm"
    copy.mkdir()
    for path in [TASKS_DIR / "build.py", *TASKS_DIR.glob("*.c"), *TASKS_DIR.glob("*.wasm")]:
        (copy / path.name).write_bytes(path.read_bytes())
    stale = copy / "monte_carlo_pi.wasm"
    stale.write_bytes(stale.read_bytes() + b"\x00")
    proc = subprocess.run(
        [sys.executable, str(copy / "build.py"), "--check"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "monte_carlo_pi.wasm" in proc.stderr and "mandelbrot.wasm" not in proc.stderr


@needs_zig
def test_compiled_module_follows_the_abi(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "echo.wasm"  # the directory is created
    compile_task(write(tmp_path, MINIMAL_TASK), out)
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(out))
    assert module.imports == []
    assert {e.name for e in module.exports} == {"memory", "alloc", "run"}
    assert [p.name for p in out.parent.iterdir()] == ["echo.wasm"]  # no temporary file left behind


@needs_zig
def test_readme_example_builds_and_runs(tmp_path: Path) -> None:
    readme = (TASKS_DIR / "README.md").read_text()
    source = readme.split("```c\n", 1)[1].split("```", 1)[0]
    out = tmp_path / "sum.wasm"
    compile_task(write(tmp_path, source, "sum.c"), out)

    engine = wasmtime.Engine()

    def call(data: bytes) -> tuple[bool, bytes]:
        """Whether the task failed the subtask, and its output or failure message (as the host reads run's result)."""
        store = wasmtime.Store(engine)
        exports = wasmtime.Instance(store, wasmtime.Module.from_file(engine, str(out)), []).exports(store)
        alloc, memory, run = exports["alloc"], exports["memory"], exports["run"]
        assert isinstance(alloc, wasmtime.Func) and isinstance(memory, wasmtime.Memory) and isinstance(run, wasmtime.Func)
        ptr = alloc(store, len(data))
        memory.write(store, data, ptr)
        packed = run(store, ptr, len(data)) & 0xFFFF_FFFF_FFFF_FFFF
        at, length = packed >> 32, packed & 0xFFFF_FFFF
        return bool(length & 0x8000_0000), bytes(memory.read(store, at, at + (length & 0x7FFF_FFFF)))

    overflow = b"values must be integers with a sum that fits in 64 bits"
    assert call(b'{"values":[1,2,3]}') == (False, b'{"sum":6}')
    assert call(b'{"values":[]}') == (False, b'{"sum":0}')
    assert call(b'{"values":[-9223372036854775808]}') == (False, b'{"sum":-9223372036854775808}')
    assert call(b'{"values":[9223372036854775807,1]}') == (True, overflow)
    assert call(b'{"values":[1.5]}') == (True, overflow)
    assert call(b"[]") == (True, b"input must be a JSON object")


@needs_zig
def test_same_source_gives_the_same_bytes_under_any_name(tmp_path: Path) -> None:
    src = write(tmp_path, MINIMAL_TASK)
    compile_task(src, tmp_path / "a.wasm")
    compile_task(src, tmp_path / "other" / "b.wasm")
    assert (tmp_path / "a.wasm").read_bytes() == (tmp_path / "other" / "b.wasm").read_bytes()


@needs_zig
def test_extra_include_dirs(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "answer.h").write_text("#define ANSWER 42\n")
    src = write(tmp_path, '#include "answer.h"\n' + MINIMAL_TASK.replace("out_bytes(in, len);", "out_u64(ANSWER);"))
    compile_task(src, tmp_path / "t.wasm", include_dirs=[tmp_path / "inc"])


@needs_zig
def test_syntax_error_carries_the_compiler_message(tmp_path: Path) -> None:
    src = write(tmp_path, MINIMAL_TASK.replace("return mn_return();", "return mn_return()"), "broken.c")
    out = tmp_path / "broken.wasm"
    with pytest.raises(BuildError) as info:
        compile_task(src, out)
    message = str(info.value)
    assert "broken.c" in message and "error" in message and "expected ';'" in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]


@needs_zig
def test_failed_build_keeps_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "task.wasm"
    out.write_bytes(b"previous")
    with pytest.raises(BuildError):
        compile_task(write(tmp_path, "this is not C"), out)
    assert out.read_bytes() == b"previous"


@needs_zig
def test_undefined_function_fails(tmp_path: Path) -> None:
    source = "extern uint64_t host_time(void);\n" + MINIMAL_TASK.replace("out_bytes(in, len);", "out_u64(host_time());")
    out = tmp_path / "t.wasm"
    with pytest.raises(BuildError, match="undefined symbol: host_time"):
        compile_task(write(tmp_path, '#include "meshnode_task.h"\n' + source), out)
    assert not out.exists()


@needs_zig
def test_explicit_import_is_refused(tmp_path: Path) -> None:
    # wasm-ld accepts a declared import without complaint; the ABI check must catch it.
    source = (
        '__attribute__((import_module("env"), import_name("now"))) unsigned long long now(void);\n'
        + MINIMAL_TASK.replace("out_bytes(in, len);", "out_u64(now());")
    )
    out = tmp_path / "t.wasm"
    with pytest.raises(BuildError, match=r"imports env\.now"):
        compile_task(write(tmp_path, source), out)
    assert not out.exists()


@needs_zig
def test_missing_run_is_refused(tmp_path: Path) -> None:
    src = write(tmp_path, '#include "meshnode_task.h"\n')
    with pytest.raises(BuildError, match="does not export 'run'"):
        compile_task(src, tmp_path / "t.wasm")


@needs_zig
def test_run_with_the_wrong_signature_is_refused(tmp_path: Path) -> None:
    source = '#include "meshnode_task.h"\nMESHNODE_EXPORT(run) int32_t run(int32_t a) { return a; }\n'
    with pytest.raises(BuildError, match=r"'run' must be a function \(i32, i32\) -> i64"):
        compile_task(write(tmp_path, source), tmp_path / "t.wasm")


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="task source not found"):
        compile_task(tmp_path / "nope.c", tmp_path / "nope.wasm")
    assert not (tmp_path / "nope.wasm").exists()


def test_missing_ziglang_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ziglang" else real_find_spec(name, *a)
    )
    with pytest.raises(BuildError, match=r"ziglang is not installed: pip install 'meshnode\[build\]'"):
        compile_task(write(tmp_path, MINIMAL_TASK), tmp_path / "t.wasm")
