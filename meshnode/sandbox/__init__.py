"""The wasmtime sandbox a subtask runs in (fuel, memory and time limits), and the tools around it.

    runtime.py          compile and run task modules under limits
    python_runtime.py   the Python interpreter (CPython on WASI): compiled once, deterministic host calls
    python_guest.py     the program that interpreter runs on a batch of rows (not imported here)
    local_exec.py       run a task over its inputs on this machine (``meshnode exec``)
    toolchain.py        build a C task to WebAssembly (``meshnode build``)
"""
