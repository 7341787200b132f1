"""A task instance's exports and calls into them, without wasmtime-py's per-call type work.

Why: wasmtime-py's ``Func.__call__`` asks wasmtime for the function's type on
every call, builds Python objects (with finalizers) for each parameter and
result type, and converts each value through them; ``Instance.exports`` wraps
every export of the instance. For a task that does little, that was most of a
run: an empty module's run took 131 µs, of which the two calls and the exports
were about 60 µs. wasmtime's C API has ``wasmtime_func_call_unchecked`` for a
caller that knows the types, and ``wasmtime_instance_export_get`` for one export
by name: the same run takes 68 µs through them.

The types are known: ``runtime._check_module`` proved, when the module was
loaded, that ``alloc`` is (i32) -> i32 and every entry (i32, i32) -> i64. Traps
and errors are raised as ``Func.__call__`` raises them (``wasmtime.Trap``,
``wasmtime.WasmtimeError``). This module uses wasmtime-py's private ``_ffi`` and
``_func``: the package is pinned to one major version (pyproject.toml), and the
sandbox's tests run every path through here.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern
from wasmtime._func import enter_wasm

__all__ = ["call_i32", "call_i32_i32", "export"]


def export(store: wasmtime.Store, instance: wasmtime.Instance, name: str) -> Any:
    """The instance's export ``name`` (a ``wasmtime.Func`` or ``wasmtime.Memory``, as ``exports()`` gives it).

    Raises:
        KeyError: the instance has no such export.
    """
    item = ffi.wasmtime_extern_t()
    encoded = name.encode()
    if not ffi.wasmtime_instance_export_get(
        store._context(), ctypes.byref(instance._instance), encoded, len(encoded), ctypes.byref(item)
    ):
        raise KeyError(name)
    return wrap_extern(item)


def call_i32(store: wasmtime.Store, func: wasmtime.Func, arg: int) -> int:
    """``func(arg)`` for a function of type (i32) -> i32: its result as an unsigned 32-bit integer."""
    slots = (ffi.wasmtime_val_raw_t * 1)()
    slots[0].i32 = arg
    _call(store, func, slots)
    return int(slots[0].i32) & 0xFFFF_FFFF


def call_i32_i32(store: wasmtime.Store, func: wasmtime.Func, a: int, b: int) -> int:
    """``func(a, b)`` for a function of type (i32, i32) -> i64: its result as an unsigned 64-bit integer."""
    slots = (ffi.wasmtime_val_raw_t * 2)()
    slots[0].i32 = a
    slots[1].i32 = b
    _call(store, func, slots)
    return int(slots[0].i64) & 0xFFFF_FFFF_FFFF_FFFF


def _call(store: wasmtime.Store, func: wasmtime.Func, slots: Any) -> None:
    """The arguments in ``slots`` in, the results in ``slots`` out (the C API's unchecked calling convention)."""
    with enter_wasm(store) as trap:
        error = ffi.wasmtime_func_call_unchecked(store._context(), ctypes.byref(func._func), slots, len(slots), trap)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
