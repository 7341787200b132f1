"""Sandboxes in processes of their own, so that subtasks never wait for the node's GIL.

Why: wasmtime-py makes dozens of ctypes calls per run, and each gives up the GIL
and must win it back. Measured on 2 cores, 256 mandelbrot tiles in two threads
take 1.18 s when nothing else runs in the process, and 7.9 s while a third
thread runs Python (2.5 s with a 1 ms switch interval). A node's event loop is
such a thread: in a node, tiles ran 1.65x slower than alone. So each slot hands
its batches to a child process holding a ``Sandbox`` of its own: one message
each way per batch, over a socket pair, pickled (both ends are this program).

Children are started when work is expected (``warm``) or by the first batch, and
stop after ``IDLE_STOP`` seconds without one, so an idle node has none. A child
that dies in a batch (a crash in wasmtime, the kernel's OOM killer) fails that
batch with ``SandboxGone``, not with a result: a crash says nothing about the
subtask. The next batch starts a new child. A child whose node dies reads end
of file and exits.

A module's bytes go to a child once (it asks again, ``NEED``, if it dropped them).
The child's side is ``process_main.py``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from ..core.manifest import TaskLimits
from ..core.outcome import TaskError, TaskOutcome
from ..errors import SandboxError, SandboxGone
from .python_runtime import PythonScript

__all__ = ["Batch", "SandboxProcesses"]


IDLE_STOP: Final = 30.0  # seconds without a batch before a child stops
# Children run at a lower priority than the node (as BOINC runs its tasks): a node's event loop
# renews leases, pushes results and answers its peers, and must not wait behind subtasks.
SANDBOX_NICE: Final = 10
# The child's answers (process_main.py): the outcomes; it has not got the module's bytes; or the
# module cannot be loaded (a SandboxError's TaskError).
RAN: Final = "ran"
NEED: Final = "need"
REFUSED: Final = "refused"

# An outcome as it crosses the pipe: plain values. Pickling a slots dataclass runs Python code for each
# object at both ends (dataclasses' __getstate__ and __setstate__); measured on 256 outcomes of an empty
# module: 4.7 µs per outcome pickled and unpickled, 1.1 µs as these tuples, rebuilt (a trivial run: 116 µs).
PipedOutcome = tuple[bytes | None, tuple[str, str] | None, int, float]


def piped(outcome: TaskOutcome) -> PipedOutcome:
    error = None if outcome.error is None else (outcome.error.code, outcome.error.message)
    return outcome.output, error, outcome.fuel_used, outcome.seconds


def unpiped(sent: PipedOutcome) -> TaskOutcome:
    output, error, fuel_used, seconds = sent
    return TaskOutcome(output, None if error is None else TaskError(*error), fuel_used, seconds)


@dataclass(frozen=True, slots=True)
class Batch:
    """Subtasks of one module, for one child: a wasm module (by hash, with its bytes when the child
    asks) or a Python script."""

    sha256: bytes
    wasm: bytes | None
    script: PythonScript | None
    nan_canonical: bool
    entry: str
    limits: TaskLimits
    inputs: Sequence[bytes]
    budget: float | None = None  # seconds: the child stops after the run that reaches it (Sandbox.run_many_sync)


class _Child:
    """One sandbox process and the parent's end of its socket."""

    def __init__(self, cache_dir: Path | None) -> None:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "meshnode.sandbox.process_main", str(theirs.fileno())]
        if cache_dir is not None:
            command.append(str(cache_dir))
        # The child imports meshnode as this process did, also when an application put it on sys.path itself.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, env=env, start_new_session=True)  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())
        self.last_used = time.monotonic()
        self.known: set[bytes] = set()  # modules sent to it (it may have dropped the oldest since)

    def ask(self, batch: Batch) -> tuple[Any, ...]:
        self.connection.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        reply: tuple[Any, ...] = pickle.loads(self.connection.recv_bytes())
        return reply

    def stop(self) -> None:
        """Kill the process (a run in it may take minutes) and reap it."""
        with contextlib.suppress(OSError):
            self.connection.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()


class SandboxProcesses:
    """Up to ``slots`` sandbox processes; ``run`` from worker threads, one batch per child at a time."""

    def __init__(self, slots: int, cache_dir: Path | None = None) -> None:
        self.slots = slots
        self._cache_dir = cache_dir
        self._lock = threading.Condition()
        self._idle: list[_Child] = []  # the most recently used last
        self._children: set[_Child] = set()  # idle, busy and starting
        self._starting = 0
        self._closed = False
        self._reaper: threading.Thread | None = None
        self.started = 0  # children started (for tests and stats)

    def warm(self) -> None:
        """Start every missing child now, in the background: work is coming."""
        with self._lock:
            missing = self.slots - len(self._children) - self._starting if not self._closed else 0
            self._starting += max(0, missing)
        for _ in range(missing):
            threading.Thread(target=self._start_idle, name="meshnode-sandbox-start", daemon=True).start()

    def run(self, batch: Batch) -> tuple[list[TaskOutcome], float | None]:
        """Run ``batch`` in a child: the outcomes, and the child's measured seconds per subtask.

        Raises:
            SandboxError: the module cannot be loaded (every run of it would fail so).
            SandboxGone: the child died while it ran the batch, or none could be started.
        """
        child = self._take()
        try:
            reply = child.ask(replace(batch, wasm=None) if batch.sha256 in child.known else batch)
            if reply[0] == NEED:
                reply = child.ask(batch)
            child.known.add(batch.sha256)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self._discard(child)
            code = child.process.poll()
            how = f"it exited with status {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
            raise SandboxGone(f"the sandbox process died running a batch ({how}): {exc or type(exc).__name__}") from None
        except BaseException:
            self._discard(child)
            raise
        self._give_back(child)
        if reply[0] == REFUSED:
            raise SandboxError(TaskError(*reply[1]))
        return [unpiped(sent) for sent in reply[1]], reply[2]

    def close(self) -> None:
        """Stop every child, interrupting the batches they run (their callers get ``SandboxGone``)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
            self._children.clear()
            self._idle.clear()
            self._lock.notify_all()
            reaper = self._reaper
        for child in children:
            child.stop()
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join()

    def running(self) -> int:
        """Child processes alive now."""
        with self._lock:
            return len(self._children)

    # --- children -------------------------------------------------------------------------

    def _take(self) -> _Child:
        with self._lock:
            while True:
                if self._closed:
                    raise SandboxGone("the sandbox is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._children) + self._starting < self.slots:
                    self._starting += 1
                    break
                self._lock.wait()  # a child being started by warm, or busy (more callers than slots)
        return self._start(busy=True)

    def _start_idle(self) -> None:
        with contextlib.suppress(Exception):  # a failed start shows at the next batch, which tries again
            self._give_back(self._start(busy=False))

    def _start(self, *, busy: bool) -> _Child:
        try:
            child = _Child(self._cache_dir)
        except BaseException as exc:
            with self._lock:
                self._starting -= 1
                self._lock.notify_all()
            if isinstance(exc, OSError):
                raise SandboxGone(f"cannot start a sandbox process ({sys.executable}): {exc}") from None
            raise
        with self._lock:
            self._starting -= 1
            self.started += 1
            self._children.add(child)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="meshnode-sandbox-reaper", daemon=True)
                self._reaper.start()
            closed = self._closed
        if closed:
            self._discard(child)
            raise SandboxGone("the sandbox is closed")
        return child

    def _give_back(self, child: _Child) -> None:
        child.last_used = time.monotonic()
        with self._lock:
            if self._closed or child not in self._children:
                closed = True
            else:
                closed = False
                self._idle.append(child)
                self._lock.notify_all()
        if closed:
            child.stop()

    def _discard(self, child: _Child) -> None:
        with self._lock:
            self._children.discard(child)
            if child in self._idle:
                self._idle.remove(child)
            self._lock.notify_all()
        child.stop()

    def _reap(self) -> None:
        """Stop children idle for ``IDLE_STOP`` seconds; the thread ends when no child is left."""
        while True:
            with self._lock:
                if self._closed or not self._children:
                    self._reaper = None
                    return
                now = time.monotonic()
                stale = [c for c in self._idle if now - c.last_used >= IDLE_STOP]
                for child in stale:
                    self._idle.remove(child)
                    self._children.discard(child)
                wait = min((IDLE_STOP - (now - c.last_used) for c in self._idle), default=IDLE_STOP)
                if not stale:
                    self._lock.wait(max(0.1, wait))
            for child in stale:
                child.stop()
