# mypy: ignore-errors
# (this file is a program for the interpreter inside the sandbox, CPython 3.15, not a module of the host)
"""The program the Python runtime runs inside the sandbox (CPython on WASI): never imported by the host.

It asks the host for its work through the runtime's one door (``_host.call``),
loads the script, and runs ``main(row)`` on each row of the batch. Before each
row it asks the host to re-seed randomness and restart the clocks for that row,
and re-seeds ``random`` (and numpy's legacy global generator, when loaded) from
that stream, so a row's result never depends on the rows before it. ``print``
goes to the row's log, bounded. It answers with a JSON array of one record per
row. An exception raised by ``main(row)`` is that row's failure, ``task_error``
(the task refusing its row); a script that cannot load at all (a syntax error,
an exception at its top level, no ``main``) fails every row with
``python_error``, which ``exec`` and ``submit`` find before a job starts. Its
text is part of the runtime's identity: changing it changes fuel counts.

Door frames, host-bound: ``I`` (the work), ``R`` + u32 position (a row starts),
``O`` + output (the answer, once).
"""

import _host  # type: ignore[import-not-found]
import json
import os
import random
import struct
import sys

LOG_MAX = 65536  # characters of a row's log that are kept
TRACEBACK_LINES = 24
MESSAGE_MAX = 2000


class _Log:
    """A bounded text sink for print(): keeps the first LOG_MAX characters and counts the rest."""

    def __init__(self):
        self.parts, self.size, self.dropped = [], 0, 0

    def write(self, text):
        text = str(text)
        room = LOG_MAX - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self):
        pass

    def text(self):
        tail = f"\n[log cut: {self.dropped} more characters]" if self.dropped else ""
        return "".join(self.parts) + tail


def _plain(value):
    """JSON for what main returns: numpy arrays and scalars by tolist(), nothing else extra."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"main returned a {type(value).__name__}, which is not JSON (return dicts, lists, numbers, text)")


_SCRIPT = []  # the script's name and source, for tracebacks


def _error(exc, code):
    import linecache  # only when something failed: importing these costs every subtask otherwise
    import traceback

    if _SCRIPT:  # tracebacks show the script's lines
        linecache.cache[_SCRIPT[0]] = (len(_SCRIPT[1]), None, _SCRIPT[1].splitlines(True), _SCRIPT[0])

    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None else None  # the runner's own frame
    lines = "".join(traceback.format_exception(type(exc), exc, tb)).splitlines()
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    message = message.split(". Site initialization is disabled")[0]  # a hint about venvs, meaningless here
    return {"code": code, "message": message[:MESSAGE_MAX], "traceback": "\n".join(lines[-TRACEBACK_LINES:])}


def _load(name, source):
    """The script's namespace, or an error naming the line (a syntax error or an exception at import)."""
    try:
        code = compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return None, {"code": "python_error", "message": f"{name}, line {exc.lineno}: {type(exc).__name__}: {exc.msg}",
                      "line": exc.lineno}
    _SCRIPT[:] = [name, source]
    namespace = {"__name__": "__meshnode_task__", "__file__": name, "__builtins__": __builtins__}
    sink = _Log()
    sys.stdout = sys.stderr = sink
    try:
        exec(code, namespace)
    except BaseException as exc:  # the script's top level failed: every row fails with it
        error = _error(exc, "python_error")
        import traceback

        line = next((f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == name), None)
        error["message"] = f"{name}, line {line}: {error['message']}"
        error["line"] = line
        return None, error
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    main = namespace.get("main")
    if not callable(main):
        return None, {"code": "python_error", "message": f"{name} defines no function main(row)", "line": None}
    return main, None


def _rows(batch):
    first, count = struct.unpack_from("<QI", batch, 0)
    at = 12
    for _ in range(count):
        kind, size = struct.unpack_from("<cQ", batch, at)
        at += 9
        payload = batch[at : at + size]
        at += size
        yield json.loads(payload) if kind == b"J" else bytes(payload)


def _restart(position):
    """The row's own randomness and clocks, whatever ran before it."""
    _host.call(b"R" + struct.pack("<I", position))
    random.seed(int.from_bytes(os.urandom(32), "little"))  # from the row's stream
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(random.getrandbits(32))


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _run_row(main, row, position, max_output):
    _restart(position)
    log = _Log()
    sys.stdout = sys.stderr = log
    try:
        value = main(row)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain)
        record = '{"status":"ok","output":' + text
        if len(text) > max_output:
            error = {"code": "output_too_large", "message": f"the row's output is {len(text)} characters of JSON, "
                     f"over the {max_output}-byte limit"}
            record = '{"status":"error","error":' + _dumps(error)
    except ValueError as exc:
        error = _error(exc, "task_error")
        if "Out of range float values" in str(exc):
            error["message"] = "main returned NaN or infinity, which JSON cannot hold (return None or text)"
        record = '{"status":"error","error":' + _dumps(error)
    except BaseException as exc:  # the row's error; the other rows go on
        record = '{"status":"error","error":' + _dumps(_error(exc, "task_error"))
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    text = log.text()
    return record + (',"log":' + _dumps(text) if text else "") + "}"


def run():
    work = _host.call(b"I")
    mode, max_output, name_size, source_size = struct.unpack_from("<BQII", work, 0)
    at = 17
    name = work[at : at + name_size].decode("utf-8")
    at += name_size
    source = work[at : at + source_size].decode("utf-8")
    batch = work[at + source_size :]
    main, error = _load(name, source)
    if mode == 1:  # check: can the script run at all? (and what do its rows cost: the host measures)
        if error is None and len(batch):
            _restart(0)
            for i, row in enumerate(_rows(batch)):
                _run_row(main, row, i, max_output)
        answer = _dumps({"ok": error is None, "error": error})
    elif error is not None:
        record = '{"status":"error","error":' + _dumps(error) + "}"
        answer = "[" + ",".join(record for _ in _rows(batch)) + "]"
    else:
        _restart(0)  # once before the rows: what the restart itself sets up lazily is set up for every row
        answer = "[" + ",".join(_run_row(main, row, i, max_output) for i, row in enumerate(_rows(batch))) + "]"
    _host.call(b"O" + answer.encode("utf-8"))


run()
