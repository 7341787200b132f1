"""A task instance's exports and calls into them, without wasmtime-py's per-call and per-export work.

Why: wasmtime-py's ``Func.__call__`` asks wasmtime for the function's type on
every call, builds Python objects (with finalizers) for each parameter and
result type, and converts each value through them; ``Instance.exports`` wraps
every export of the instance. For a task that does little, that was most of a
run: an empty module's run took 131 µs, of which the two calls and the exports
were about 60 µs. wasmtime's C API has ``wasmtime_func_call_unchecked`` for a
caller that knows the types, and ``wasmtime_instance_export_get`` for one export
by name: the same run took 68 µs through them. Wrapping each export in a
wasmtime-py object (``wrap_extern``: an import statement and an object each) and
writing the input through ``Memory.write`` (a bytearray copy and slice checks)
still cost about 50 µs of a 140 µs run, measured on a slower day; ``Exports``
keeps wasmtime's own structs and copies with ``memmove``.

``use_pool`` sets the pooling allocator up, which wasmtime-py's ``Config`` does
not offer; the C API does.

The types are known: ``runtime._check_module`` proved, when the module was
loaded, that ``memory`` is a memory, ``alloc`` is (i32) -> i32 and every entry
(i32, i32) -> i64. Traps and errors are raised as ``Func.__call__`` raises them
(``wasmtime.Trap``, ``wasmtime.WasmtimeError``). This module uses wasmtime-py's
private ``_ffi`` and ``_func``: the package is pinned to one major version
(pyproject.toml), and the sandbox's tests run every path through here.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import enter_wasm

__all__ = ["Exports", "use_pool"]


class Exports:
    """The memory, ``alloc`` and one entry of an instance, as wasmtime's raw structs.

    Raises (on creation):
        KeyError: the instance has no such export.
    """

    __slots__ = ("_context", "_store", "_memory", "_alloc", "_entry", "_slots")

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, entry: str) -> None:
        self._store = store
        self._context = store._context()
        self._memory = _export(self._context, instance, b"memory").of.memory
        self._alloc = _export(self._context, instance, b"alloc").of.func
        self._entry = _export(self._context, instance, entry.encode()).of.func
        self._slots = (ffi.wasmtime_val_raw_t * 2)()

    def memory_size(self) -> int:
        """Bytes of linear memory now."""
        return int(ffi.wasmtime_memory_data_size(self._context, ctypes.byref(self._memory)))

    def write(self, offset: int, data: bytes) -> None:
        """Copy ``data`` to linear memory at ``offset`` (the caller checked it fits)."""
        ctypes.memmove(self._base() + offset, data, len(data))

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes of linear memory from ``offset`` (the caller checked they lie inside it)."""
        return ctypes.string_at(self._base() + offset, length)

    def alloc(self, size: int) -> int:
        """``alloc(size)``: its result as an unsigned 32-bit integer."""
        self._slots[0].i32 = size
        self._call(self._alloc, 1)
        return int(self._slots[0].i32) & 0xFFFF_FFFF

    def run(self, ptr: int, length: int) -> int:
        """The entry ``(ptr, length)``: its result as an unsigned 64-bit integer."""
        self._slots[0].i32 = ptr
        self._slots[1].i32 = length
        self._call(self._entry, 2)
        return int(self._slots[0].i64) & 0xFFFF_FFFF_FFFF_FFFF

    def _base(self) -> int:
        data = ffi.wasmtime_memory_data(self._context, ctypes.byref(self._memory))
        return ctypes.cast(data, ctypes.c_void_p).value or 0

    def _call(self, func: Any, params: int) -> None:
        """The arguments in the slots in, the results in the slots out (the C API's unchecked convention)."""
        with enter_wasm(self._store) as trap:
            error = ffi.wasmtime_func_call_unchecked(self._context, ctypes.byref(func), self._slots, params, trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)


def _export(context: Any, instance: wasmtime.Instance, name: bytes) -> Any:
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(context, ctypes.byref(instance._instance), name, len(name), ctypes.byref(item))
    if not found:
        raise KeyError(name.decode())
    return item


def use_pool(cfg: wasmtime.Config, instances: int, *, memory: int, tables: int, table_elements: int,
             instance_size: int) -> None:  # fmt: skip
    """Instances from a pool of ``instances`` slots, each holding one memory of up to ``memory`` bytes, up to
    ``tables`` tables of ``table_elements``, and an instance's own state of up to ``instance_size`` bytes."""
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, instances)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, instances)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, instances * tables)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(pool, instances)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, memory)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_module_set(pool, tables)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, table_elements)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pool, instance_size)
        ffi.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), pool)  # copies the settings
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)
