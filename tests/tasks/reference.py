"""Pure-Python reference implementations of the bundled tasks.

Each function takes a task's input bytes and returns the output bytes the task must produce,
or raises :class:`InvalidInput` where the task must answer with a JSON error instead. They are
written from the task specifications (tasks_wasm/README.md and the comment at the top of
each task's source), for clarity rather than speed. Floating-point results are bit-for-bit
comparable because Python floats are IEEE doubles and every expression below performs the
operations the specification lists, in its order.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "InvalidInput",
    "exp_neg",
    "log_1_2",
    "logreg_step",
    "mandelbrot",
    "matrix_mul",
    "monte_carlo_pi",
    "password_hash",
    "secondary_structure",
    "splitmix64",
]

MASK64 = (1 << 64) - 1


class InvalidInput(ValueError):
    """The task must reject this input with a JSON error output."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


MAX_JSON_DEPTH = 64  # arrays and objects nested in one another, the outermost included


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _loads(data: bytes) -> Any:
    """Strict RFC 8259 JSON from UTF-8 bytes, as the tasks read it.

    No NaN or Infinity, the first of duplicate keys wins, and at most MAX_JSON_DEPTH levels of nesting.
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_first_wins)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")
    return value


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = _loads(data)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise InvalidInput("input must be a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidInput("input must be a JSON object")
    return value


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    if key not in obj:
        raise InvalidInput(f"missing key {key}")
    value = obj[key]
    if type(value) is not int or not lo <= value <= hi:  # bool is not an integer here
        raise InvalidInput(f"{key} must be an integer in {lo}..{hi}")
    return value


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def splitmix64(seed: int) -> Iterator[int]:
    """The splitmix64 output stream started at ``seed``."""
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


def _unit(r: int) -> float:
    return (r >> 11) * 2.0**-53


# --- mandelbrot ---------------------------------------------------------------------------


def mandelbrot(data: bytes) -> bytes:
    obj = _json_object(data)
    side = 2**31 - 1
    x0 = _int(obj, "x0", 0, side)
    y0 = _int(obj, "y0", 0, side)
    w = _int(obj, "w", 1, side)
    h = _int(obj, "h", 1, side)
    width = _int(obj, "width", 1, side)
    height = _int(obj, "height", 1, side)
    max_iter = _int(obj, "max_iter", 1, 1_000_000)
    if x0 + w > width or y0 + h > height:
        raise InvalidInput("tile outside the image")
    if w * h > 16_777_216:
        raise InvalidInput("tile too large")

    counts = []
    for py in range(y0, y0 + h):
        ci = -1.5 + float(py) * (3.0 / float(height))
        for px in range(x0, x0 + w):
            cr = -2.0 + float(px) * (3.0 / float(width))
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = (zr * zr - zi * zi) + cr, (2.0 * zr) * zi + ci
                n += 1
            counts.append(n)
    return struct.pack(f"<{len(counts)}I", *counts)


# --- matrix_mul ---------------------------------------------------------------------------


def matrix_mul(data: bytes) -> bytes:
    obj = _json_object(data)
    dim = 1 << 20
    seed = _int(obj, "seed", 0, MASK64)
    m = _int(obj, "m", 1, dim)
    k = _int(obj, "k", 1, dim)
    n = _int(obj, "n", 1, dim)
    row0 = _int(obj, "row0", 0, dim)
    col0 = _int(obj, "col0", 0, dim)
    rows = _int(obj, "rows", 1, dim)
    cols = _int(obj, "cols", 1, dim)
    if row0 + rows > m or col0 + cols > n:
        raise InvalidInput("tile outside the matrix")
    if max(rows * k, k * cols, rows * cols) > 1 << 22:
        raise InvalidInput("tile too large")

    stream = splitmix64(seed)
    values = [2.0 * _unit(next(stream)) - 1.0 for _ in range(m * k + k * n)]
    a = [values[i * k : (i + 1) * k] for i in range(m)]
    b = [values[m * k + p * n : m * k + (p + 1) * n] for p in range(k)]
    out = []
    for i in range(row0, row0 + rows):
        for j in range(col0, col0 + cols):
            acc = 0.0
            for p in range(k):
                acc = acc + a[i][p] * b[p][j]
            out.append(acc)
    return struct.pack(f"<{len(out)}d", *out)


# --- password_hash ------------------------------------------------------------------------


def password_hash(data: bytes) -> bytes:
    obj = _json_object(data)
    if "target" not in obj:
        raise InvalidInput("missing key target")
    target = obj["target"]
    if not isinstance(target, str) or len(target) != 64 or any(c not in "0123456789abcdefABCDEF" for c in target):
        raise InvalidInput("target must be a string of 64 hex digits")
    if "candidates" not in obj:
        raise InvalidInput("missing key candidates")
    candidates = obj["candidates"]
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise InvalidInput("candidates must be an array of strings")
    want = bytes.fromhex(target)
    matches = []
    for index, password in enumerate(candidates):
        try:
            encoded = password.encode("utf-8")
        except UnicodeEncodeError as exc:  # an unpaired surrogate from a \u escape
            raise InvalidInput(f"candidates[{index}] has no UTF-8 form") from exc
        if hashlib.sha256(encoded).digest() == want:
            matches.append({"index": index, "password": password})
    return _dumps({"checked": len(candidates), "matches": matches})


# --- monte_carlo_pi -----------------------------------------------------------------------


def monte_carlo_pi(data: bytes) -> bytes:
    obj = _json_object(data)
    seed = _int(obj, "seed", 0, MASK64)
    samples = _int(obj, "samples", 0, 10**12)
    stream = splitmix64(seed)
    hits = 0
    for _ in range(samples):
        x = _unit(next(stream))
        y = _unit(next(stream))
        if x * x + y * y <= 1.0:
            hits += 1
    return _dumps({"samples": samples, "hits": hits})


# --- secondary_structure ------------------------------------------------------------------

# Chou-Fasman (1978): Pa, Pb, Pt (x100) and the turn frequencies f(i), f(i+1), f(i+2), f(i+3) (x1000).
CHOU_FASMAN: dict[str, tuple[int, int, int, tuple[int, int, int, int]]] = {
    "A": (142, 83, 66, (60, 76, 35, 58)),
    "R": (98, 93, 95, (70, 106, 99, 85)),
    "N": (67, 89, 156, (161, 83, 191, 91)),
    "D": (101, 54, 146, (147, 110, 179, 81)),
    "C": (70, 119, 119, (149, 50, 117, 128)),
    "Q": (111, 110, 98, (74, 98, 37, 98)),
    "E": (151, 37, 74, (56, 60, 77, 64)),
    "G": (57, 75, 156, (102, 85, 190, 152)),
    "H": (100, 87, 95, (140, 47, 93, 54)),
    "I": (108, 160, 47, (43, 34, 13, 56)),
    "L": (121, 130, 59, (61, 25, 36, 70)),
    "K": (114, 74, 101, (55, 115, 72, 95)),
    "M": (145, 105, 60, (68, 82, 14, 55)),
    "F": (113, 138, 60, (59, 41, 65, 65)),
    "P": (57, 55, 152, (102, 301, 34, 68)),
    "S": (77, 75, 143, (120, 139, 125, 106)),
    "T": (83, 119, 96, (86, 108, 65, 79)),
    "W": (108, 137, 96, (77, 13, 64, 167)),
    "Y": (69, 147, 114, (82, 65, 114, 125)),
    "V": (106, 170, 50, (62, 48, 28, 53)),
}

_SPACE = " \t\n\r\v\f"


def _read_sequence(data: bytes) -> str:
    text = data.decode("utf-8", errors="surrogateescape")  # any non-ASCII byte is an error below
    if text.lstrip(_SPACE).startswith('"'):
        try:
            text = _loads(data)
            text.encode("utf-8")  # an unpaired surrogate has no UTF-8 form
        except ValueError as exc:
            raise InvalidInput("not a valid JSON string") from exc
    residues = []
    for line in text.split("\n"):
        if line.lstrip(_SPACE).startswith(">"):
            continue
        for ch in line:
            if ch in _SPACE:
                continue
            if not ch.isascii() or ch.upper() not in CHOU_FASMAN:
                raise InvalidInput(f"unknown residue at position {len(residues) + 1}")
            residues.append(ch.upper())
    if len(residues) > 1_000_000:
        raise InvalidInput("sequence too long")
    return "".join(residues)


def _segments(prop: list[int], rival: list[int], window: int, formers: int, accept: int) -> set[int]:
    """Nucleate, extend and accept helices (or strands); return the residues covered."""
    n = len(prop)
    covered: set[int] = set()
    for start in range(n - window + 1):
        if sum(p > 100 for p in prop[start : start + window]) < formers:
            continue
        s, e = start, start + window
        while e < n and sum(prop[e - 3 : e + 1]) >= 400:
            e += 1
        while s > 0 and sum(prop[s - 1 : s + 3]) >= 400:
            s -= 1
        total = sum(prop[s:e])
        if total > accept * (e - s) and total > sum(rival[s:e]):
            covered.update(range(s, e))
    return covered


def _predict(seq: str) -> str:
    n = len(seq)
    pa = [CHOU_FASMAN[c][0] for c in seq]
    pb = [CHOU_FASMAN[c][1] for c in seq]
    pt = [CHOU_FASMAN[c][2] for c in seq]
    helix = _segments(pa, pb, 6, 4, 103)
    strand = _segments(pb, pa, 5, 3, 105)

    result = ["H" if i in helix else "E" if i in strand else "C" for i in range(n)]
    both = sorted(helix & strand)
    runs: list[list[int]] = []
    for i in both:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        letter = "H" if sum(pa[i] for i in run) >= sum(pb[i] for i in run) else "E"
        for i in run:
            result[i] = letter

    for i in range(n - 3):
        window = range(i, i + 4)
        bend = math.prod(CHOU_FASMAN[seq[j]][3][j - i] for j in window)
        t = sum(pt[j] for j in window)
        if bend > 75_000_000 and t > 400 and t > sum(pa[j] for j in window) and t > sum(pb[j] for j in window):
            for j in window:
                result[j] = "C"
    return "".join(result)


def secondary_structure(data: bytes) -> bytes:
    seq = _read_sequence(data)
    return _dumps({"length": len(seq), "prediction": _predict(seq)})


# --- logreg_step --------------------------------------------------------------------------

_INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
_LN2_HI = float.fromhex("0x1.62e42feep-1")
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_SQRT2 = float.fromhex("0x1.6a09e667f3bcdp+0")


def exp_neg(t: float) -> float:
    """e**t for t <= 0, by the task's recipe: range reduction and a Taylor polynomial."""
    if not t >= -708.0:
        return 0.0
    k = math.floor(t * _INV_LN2 + 0.5)
    r = (t - k * _LN2_HI) - k * _LN2_LO
    q = 1.0 / math.factorial(13)
    for i in range(12, -1, -1):
        q = q * r + 1.0 / math.factorial(i)
    return q * 2.0**k


def log_1_2(v: float) -> float:
    """ln(v) for v in [1, 2], by the task's recipe: log v = 2 atanh((v-1)/(v+1))."""
    halve = v > _SQRT2
    f = v * 0.5 if halve else v
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    q = 1.0 / 25.0
    for i in range(11, -1, -1):
        q = q * z + 1.0 / (2 * i + 1)
    y = (2.0 * s) * q
    return _LN2 + y if halve else y


def logreg_step(data: bytes) -> bytes:
    if data[:4] != b"LRS1":
        raise InvalidInput("bad magic")
    if len(data) < 20:
        raise InvalidInput("short header")
    rows, features = struct.unpack_from("<II", data, 4)
    (lr,) = struct.unpack_from("<d", data, 12)
    width = features + 1
    if len(data) != 20 + 8 * width * (rows + 1):
        raise InvalidInput("bad length")
    weights = list(struct.unpack_from(f"<{width}d", data, 20))
    if not all(map(math.isfinite, [lr, *weights])):
        raise InvalidInput("non-finite weight")
    records = [struct.unpack_from(f"<{width}d", data, 20 + 8 * width * (i + 1)) for i in range(rows)]
    for *x, y in records:
        if y not in (0.0, 1.0) or not all(map(math.isfinite, x)):
            raise InvalidInput("bad record")
    if rows == 0:
        return data[20 : 20 + 8 * width] + struct.pack("<d", 0.0)

    grad = [0.0] * width
    total = 0.0
    for *x, y in records:
        z = 0.0
        for wj, xj in zip(weights, x):
            z = z + wj * xj
        z = z + weights[-1]
        e = exp_neg(-abs(z))
        p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        margin = -z if y == 1.0 else z
        total = total + ((margin if margin > 0.0 else 0.0) + log_1_2(1.0 + e))
        err = p - y
        for j, xj in enumerate(x):
            grad[j] = grad[j] + err * xj
        grad[-1] = grad[-1] + err
    new = [wj - lr * (gj / rows) for wj, gj in zip(weights, grad)]
    return struct.pack(f"<{width + 1}d", *new, total / rows)
