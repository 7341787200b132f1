"""The child side of a sandbox process (``processes.py``): ``python -m meshnode.sandbox.process_main FD [CACHE_DIR]``.

It reads batches from the socket on file descriptor ``FD``, runs each in a
``Sandbox`` of its own, and answers; it exits when the node closes its end (or
dies). It keeps the bytes of the last ``MODULES_KEPT`` modules it was sent, and
asks for a module it does not have.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections import OrderedDict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from ..errors import SandboxError
from .processes import NEED, RAN, REFUSED, SANDBOX_NICE, Batch, piped
from .runtime import Sandbox

MODULES_KEPT: Final = 64


def serve(connection: Connection, cache_dir: Path | None) -> None:
    wasm: OrderedDict[bytes, bytes] = OrderedDict()
    with Sandbox(slots=1, cache_dir=cache_dir) as sandbox:
        while True:
            try:
                batch: Batch = pickle.loads(connection.recv_bytes())
            except (EOFError, OSError):
                return  # the node closed its end, or died
            try:
                reply = run(sandbox, wasm, batch)
            except SandboxError as exc:
                reply = (REFUSED, (exc.error.code, exc.error.message))
            try:
                connection.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                return


def run(sandbox: Sandbox, wasm: OrderedDict[bytes, bytes], batch: Batch) -> tuple[Any, ...]:
    """The answer to one batch.

    Raises:
        SandboxError: the module (or the Python runtime) cannot be loaded.
    """
    module: Any
    if batch.script is not None:
        sandbox.prepare_python()  # once per child: the runtime is compiled already, loading it takes milliseconds
        module = batch.script
    else:
        if batch.wasm is not None:
            wasm[batch.sha256] = batch.wasm
            while len(wasm) > MODULES_KEPT:
                wasm.popitem(last=False)
        data = wasm.get(batch.sha256)
        if data is None:
            return (NEED,)
        wasm.move_to_end(batch.sha256)
        module = sandbox.load(data, nan_canonical=batch.nan_canonical, sha256=batch.sha256)
    outcomes = sandbox.run_many_sync(module, batch.inputs, batch.limits, batch.entry, batch.nan_canonical, batch.budget)
    return (RAN, [piped(o) for o in outcomes], sandbox.seconds_per_run(batch.sha256))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the terminal is for the node, which stops us
    os.nice(SANDBOX_NICE)  # the node's own work (leases, pushes, answers to peers) comes before subtasks
    serve(Connection(int(sys.argv[1])), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    os._exit(0)  # no interpreter teardown: nothing is left to flush
