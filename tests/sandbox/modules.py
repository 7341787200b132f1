"""Small task modules written in WebAssembly text, one per behaviour under test."""

from __future__ import annotations

import wasmtime

# memory, a bump allocator and nothing else: every module below adds a `run`
ABI = """
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
"""
RETURN_INPUT = "(i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))"


def module(body: str, *, abi: str = ABI, head: str = "") -> bytes:
    return wasmtime.wat2wasm(f"(module {head} {abi} {body})")


ECHO = module(f'(func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})')
INFINITE_LOOP = module('(func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))')
MEMORY_BOMB = module(
    """(func (export "run") (param i32 i32) (result i64)
         (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
         unreachable)"""
)
RECURSION = module('(func $r (export "run") (param i32 i32) (result i64) (call $r (local.get 0) (local.get 1)))')
IMPORTS_WASI = module(
    '(func (export "run") (param i32 i32) (result i64) (i64.const 0))',
    head='(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
)
HUGE_OUTPUT = module('(func (export "run") (param i32 i32) (result i64) (i64.const 1048576))')  # ptr 0, 1 MiB
OUTPUT_OUT_OF_BOUNDS = module('(func (export "run") (param i32 i32) (result i64) (i64.const 0x0001000000000010))')
# counts down from 2^63: finite fuel would stop it, but the budget given is far larger than the wall limit allows
SLOW_LOOP = module(
    """(func (export "run") (param i32 i32) (result i64) (local $i i64)
         (local.set $i (i64.const 0x7fffffffffffffff))
         (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1))) (br_if $l (i64.ne (local.get $i) (i64.const 0))))
         (i64.const 0))"""
)
DIVIDE_BY_ZERO = module('(func (export "run") (param i32 i32) (result i64) (i64.div_s (i64.const 1) (i64.const 0)))')
NO_ALLOC = module(f'(memory (export "memory") 1) (func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})', abi="")
WRONG_ENTRY_TYPE = module('(func (export "run") (param i32) (result i32) (local.get 0))')
ALLOC_FAILS = module(
    f'(memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0))'
    f'(func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})',
    abi="",
)
BIG_INITIAL_MEMORY = module(
    f'(memory (export "memory") 1000) (func (export "alloc") (param i32) (result i32) (i32.const 8))'
    f'(func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})',
    abi="",
)
SHARED_MEMORY = wasmtime.wat2wasm(
    f'(module (memory (export "memory") 1 1 shared) (func (export "alloc") (param i32) (result i32) (i32.const 8))'
    f'(func (export "run") (param i32 i32) (result i64) {RETURN_INPUT}))'
)
# writes 0.0/0.0 as f32 at the input pointer and returns those 4 bytes: the NaN's bit pattern
ZERO_DIV_ZERO = module(
    """(func (export "run") (param i32 i32) (result i64)
         (f32.store (local.get 0) (f32.div (f32.load (local.get 0)) (f32.load (local.get 0))))
         (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.const 4)))"""
)
# a named second entry point, for --entry
TWO_ENTRIES = module(
    f'(func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})'
    '(func (export "first_byte") (param i32 i32) (result i64)'
    "  (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.const 1)))"
)
# fails the subtask (bit 31 of the returned length) with the input as its message
FAIL_WITH_INPUT = module(
    f'(func (export "run") (param i32 i32) (result i64) (i64.or {RETURN_INPUT} (i64.const 0x80000000)))'
)
# fails with a message that would run past the end of linear memory, or start beyond it
FAIL_PAST_MEMORY = module('(func (export "run") (param i32 i32) (result i64) (i64.const 0x0000FFF0_80000020))')
FAIL_OUTSIDE_MEMORY = module('(func (export "run") (param i32 i32) (result i64) (i64.const 0xFFFFFFFF_FFFFFFFF))')
# leaves state behind: counts its runs in a global, adds the count to the i32 at 0, grows memory by a page
# and keeps the page count before the grow at 4; returns those 8 bytes (1 and 1 in a fresh instance)
LEAVES_STATE = module(
    """(global $runs (mut i32) (i32.const 0))
       (func (export "run") (param i32 i32) (result i64)
         (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
         (i32.store (i32.const 4) (memory.grow (i32.const 1)))
         (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (global.get $runs)))
         (i64.const 8))"""
)
# a table of 100,000 function references: more than the pooling allocator's default table allows
BIG_TABLE = module(
    f"""(table 100000 funcref)
       (func (export "run") (param i32 i32) (result i64) {RETURN_INPUT})"""
)
