"""The bundled tasks agree bit for bit with the Python references, and fail bad input with task_error.

Every input goes through both the committed .wasm (via the ``run_task`` fixture) and
``reference``. Valid inputs must give identical bytes; inputs the reference rejects must fail
the subtask with ``task_error`` and a message, never trap or give output.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from . import reference
from .conftest import TaskFailed

RunTask = Callable[[str, bytes], bytes]

TASKS = ["mandelbrot", "matrix_mul", "password_hash", "monte_carlo_pi", "secondary_structure", "logreg_step"]


def examples(n: int) -> settings:
    """Hypothesis settings: n examples and no deadline (the first call of a task compiles its module)."""
    return settings(max_examples=n, deadline=None)


U64 = st.integers(0, 2**64 - 1)


def dumps(obj: Any, *, ascii_only: bool = True) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


def expect_same(run_task: RunTask, name: str, data: bytes) -> bytes:
    """The input is valid, and the task's output equals the reference's."""
    expected = getattr(reference, name)(data)
    assert run_task(name, data) == expected
    return expected


def expect_error(run_task: RunTask, name: str, data: bytes) -> str:
    """The input is invalid: the reference rejects it and the task fails the subtask with task_error; its message."""
    with pytest.raises(reference.InvalidInput):
        getattr(reference, name)(data)
    with pytest.raises(TaskFailed) as failed:
        run_task(name, data)
    assert failed.value.code == "task_error" and failed.value.message, failed.value
    return failed.value.message


def expect_agreement(run_task: RunTask, name: str, data: bytes) -> None:
    """Valid or not, task and reference agree."""
    try:
        getattr(reference, name)(data)
    except reference.InvalidInput:
        expect_error(run_task, name, data)
    else:
        expect_same(run_task, name, data)


# --- every task ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("data", [b"", b" ", b"\x00" * 7, b"null", b"[]", b"{", b'{"a":1}'])
def test_rubbish_fails_with_task_error(run_task: RunTask, name: str, data: bytes) -> None:
    if name == "secondary_structure" and not data.strip():  # blank text is an empty sequence
        assert json.loads(expect_same(run_task, name, data)) == {"length": 0, "prediction": ""}
    else:
        expect_error(run_task, name, data)


@pytest.mark.parametrize("name", TASKS)
@examples(100)
@given(data=st.binary(max_size=48))
def test_arbitrary_bytes_never_trap(run_task: RunTask, name: str, data: bytes) -> None:
    expect_agreement(run_task, name, data)


def test_json_reading(run_task: RunTask) -> None:
    valid = {"seed": 3, "samples": 10}
    expect_same(run_task, "monte_carlo_pi", b' \t\r\n{ "seed" : 3 ,\n "samples":10 } \n')
    expect_same(run_task, "monte_carlo_pi", dumps({"note": 'a "quoted" \\ \u00e9 \U0001f600', **valid}))
    expect_same(run_task, "monte_carlo_pi", dumps({"other": {"seed": 99, "x": [1, 2.5e-3, None, True]}, **valid}))
    # The first of duplicate keys wins.
    out = expect_same(run_task, "monte_carlo_pi", b'{"seed":3,"samples":10,"samples":20}')
    assert json.loads(out)["samples"] == 10
    for bad in [b'{"seed":3,"samples":10,}', b'{"seed":3 "samples":10}', b"{'seed':3}", b'{"seed":03,"samples":1}']:
        expect_error(run_task, "monte_carlo_pi", bad)


@pytest.mark.parametrize("depth,ok", [(63, True), (64, False), (100_000, False)])
def test_json_nesting_is_bounded(run_task: RunTask, depth: int, ok: bool) -> None:
    # The object itself is one level: 63 arrays inside it make 64, the most the reader accepts.
    # Far deeper input must give an error, not exhaust the task's stack.
    data = b'{"seed":1,"samples":2,"deep":' + b"[" * depth + b"]" * depth + b"}"
    if ok:
        expect_same(run_task, "monte_carlo_pi", data)
    else:
        expect_error(run_task, "monte_carlo_pi", data)


# --- mandelbrot ---------------------------------------------------------------------------


def mandelbrot_input(**fields: int) -> bytes:
    spec = {"x0": 0, "y0": 0, "w": 1, "h": 1, "width": 1, "height": 1, "max_iter": 50} | fields
    return dumps(spec)


def counts(out: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(out) // 4}I", out))


@pytest.mark.parametrize(
    "fields",
    [
        {"w": 8, "h": 6, "width": 8, "height": 6},  # the whole image as one tile
        {"x0": 3, "y0": 2, "w": 1, "h": 1, "width": 8, "height": 6},  # 1x1
        {"x0": 5, "y0": 4, "w": 3, "h": 2, "width": 8, "height": 6},  # bottom-right corner
        {"x0": 700, "y0": 390, "w": 5, "h": 3, "width": 1000, "height": 800, "max_iter": 500},
        {"x0": 0, "y0": 0, "w": 1, "h": 1, "width": 1, "height": 1, "max_iter": 1},
        {"x0": 2147483646, "y0": 0, "w": 1, "h": 1, "width": 2147483647, "height": 1, "max_iter": 3},
    ],
)
def test_mandelbrot_fixed(run_task: RunTask, fields: dict[str, int]) -> None:
    expect_same(run_task, "mandelbrot", mandelbrot_input(**fields))


def test_mandelbrot_known_points(run_task: RunTask) -> None:
    # In a 3x2 image pixel (0, 0) is c = -2 - 1.5i, outside at once; pixel (2, 1) is c = 0, never escaping.
    out = counts(run_task("mandelbrot", mandelbrot_input(w=3, h=2, width=3, height=2, max_iter=77)))
    assert out[0] == 1
    assert out[5] == 77


def test_mandelbrot_tiles_assemble_the_image(run_task: RunTask) -> None:
    size = {"width": 10, "height": 7, "max_iter": 40}
    full = counts(run_task("mandelbrot", mandelbrot_input(w=10, h=7, **size)))
    for x0, w in [(0, 4), (4, 6)]:
        for y0, h in [(0, 3), (3, 4)]:
            tile = counts(run_task("mandelbrot", mandelbrot_input(x0=x0, y0=y0, w=w, h=h, **size)))
            assert tile == [full[y * 10 + x] for y in range(y0, y0 + h) for x in range(x0, x0 + w)]


@st.composite
def mandelbrot_tiles(draw: st.DrawFn) -> bytes:
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    w, h = draw(st.integers(1, min(8, width - x0))), draw(st.integers(1, min(8, height - y0)))
    return mandelbrot_input(x0=x0, y0=y0, w=w, h=h, width=width, height=height, max_iter=draw(st.integers(1, 100)))


@examples(200)
@given(data=mandelbrot_tiles())
def test_mandelbrot_matches_reference(run_task: RunTask, data: bytes) -> None:
    expect_same(run_task, "mandelbrot", data)


@pytest.mark.parametrize(
    "data",
    [
        mandelbrot_input(max_iter=0),
        mandelbrot_input(max_iter=1_000_001),
        mandelbrot_input(w=0),
        mandelbrot_input(width=0),
        mandelbrot_input(x0=-1),
        mandelbrot_input(x0=1, width=1),  # tile outside
        mandelbrot_input(y0=5, h=2, height=6),
        mandelbrot_input(w=4097, h=4096, width=5000, height=5000),  # too many pixels
        mandelbrot_input(width=2**31),
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":1.5}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":1e2}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":"7"}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":true}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":99999999999999999999999}',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":1',
        b'{"x0":0,"y0":0,"w":1,"h":1,"width":1,"height":1,"max_iter":1} x',
    ],
)
def test_mandelbrot_rejects(run_task: RunTask, data: bytes) -> None:
    expect_error(run_task, "mandelbrot", data)


def test_mandelbrot_error_messages(run_task: RunTask) -> None:
    assert expect_error(run_task, "mandelbrot", b'{"x0":0}') == "missing key y0"
    assert expect_error(run_task, "mandelbrot", mandelbrot_input(max_iter=0)) == "max_iter must be an integer in 1..1000000"


# --- matrix_mul ---------------------------------------------------------------------------


def matrix_input(**fields: int) -> bytes:
    spec = {"seed": 1, "m": 1, "k": 1, "n": 1, "row0": 0, "col0": 0, "rows": 1, "cols": 1} | fields
    return dumps(spec)


def doubles(out: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(out) // 8}d", out))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"seed": 0, "m": 4, "k": 5, "n": 3, "rows": 4, "cols": 3},
        {"seed": 2**64 - 1, "m": 7, "k": 9, "n": 6, "row0": 6, "col0": 5},  # bottom-right 1x1
        {"seed": 42, "m": 20, "k": 50, "n": 20, "row0": 5, "col0": 10, "rows": 3, "cols": 7},
    ],
)
def test_matrix_mul_fixed(run_task: RunTask, fields: dict[str, int]) -> None:
    expect_same(run_task, "matrix_mul", matrix_input(**fields))


def test_matrix_mul_one_by_one(run_task: RunTask) -> None:
    # A = [a], B = [b]: the first two stream values, so C = [a * b].
    stream = reference.splitmix64(99)
    a, b = (2.0 * ((next(stream) >> 11) * 2.0**-53) - 1.0 for _ in range(2))
    assert doubles(run_task("matrix_mul", matrix_input(seed=99))) == [a * b]


def test_matrix_mul_tiles_assemble_the_product(run_task: RunTask) -> None:
    size = {"seed": 7, "m": 5, "k": 4, "n": 6}
    full = doubles(run_task("matrix_mul", matrix_input(rows=5, cols=6, **size)))
    tile = doubles(run_task("matrix_mul", matrix_input(row0=2, col0=1, rows=3, cols=4, **size)))
    assert tile == [full[i * 6 + j] for i in range(2, 5) for j in range(1, 5)]


@st.composite
def matrix_tiles(draw: st.DrawFn) -> bytes:
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    row0, col0 = draw(st.integers(0, m - 1)), draw(st.integers(0, n - 1))
    rows, cols = draw(st.integers(1, m - row0)), draw(st.integers(1, n - col0))
    return matrix_input(seed=draw(U64), m=m, k=k, n=n, row0=row0, col0=col0, rows=rows, cols=cols)


@examples(200)
@given(data=matrix_tiles())
def test_matrix_mul_matches_reference(run_task: RunTask, data: bytes) -> None:
    expect_same(run_task, "matrix_mul", data)


@pytest.mark.parametrize(
    "data",
    [
        matrix_input(seed=2**64),
        matrix_input(seed=-1),
        matrix_input(m=0),
        matrix_input(k=2**20 + 1),
        matrix_input(row0=1),  # tile outside
        matrix_input(n=3, col0=1, cols=3),
        matrix_input(m=4096, k=1025, n=1, rows=4096),  # rows * k too large
        b'{"seed":1,"m":1,"k":1,"n":1,"row0":0,"col0":0,"rows":1}',
    ],
)
def test_matrix_mul_rejects(run_task: RunTask, data: bytes) -> None:
    expect_error(run_task, "matrix_mul", data)


# --- password_hash ------------------------------------------------------------------------


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def password_input(target: str, candidates: list[Any], *, ascii_only: bool = True) -> bytes:
    return dumps({"target": target, "candidates": candidates}, ascii_only=ascii_only)


TRICKY = ['say "hi"', "back\\slash", "tab\there", "nul\x00", "\x1f\x7f", "pässwörd", "日本語", "emoji 😀", "", " "]


@pytest.mark.parametrize("secret", TRICKY)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_password_hash_finds_tricky_passwords(run_task: RunTask, secret: str, ascii_only: bool) -> None:
    data = password_input(sha256_hex(secret), ["decoy", secret, "x"], ascii_only=ascii_only)
    out = json.loads(expect_same(run_task, "password_hash", data))
    assert out == {"checked": 3, "matches": [{"index": 1, "password": secret}]}


def test_password_hash_fixed(run_task: RunTask) -> None:
    target = sha256_hex("password")
    expect_same(run_task, "password_hash", password_input(target, []))
    expect_same(run_task, "password_hash", password_input(target.upper(), ["password", "a", "password"]))
    expect_same(run_task, "password_hash", password_input(target, ["nope"] * 5))
    long_text = "x" * 55 + "y" * 9 + "z" * 100  # crosses the 55/56/64-byte padding boundaries
    for cut in (0, 55, 56, 63, 64, 65, 119, 120, 164):
        expect_same(run_task, "password_hash", password_input(sha256_hex(long_text[:cut]), [long_text[:cut]]))
    # A surrogate pair written as escapes is one 4-byte UTF-8 character.
    expect_same(run_task, "password_hash", b'{"target":"%s","candidates":["\\ud83d\\ude00"]}' % sha256_hex("😀").encode())


@examples(300)
@given(
    candidates=st.lists(st.text(max_size=12), max_size=6),
    pick=st.integers(0, 5),
    ascii_only=st.booleans(),
)
def test_password_hash_matches_reference(run_task: RunTask, candidates: list[str], pick: int, ascii_only: bool) -> None:
    target = sha256_hex(candidates[pick]) if pick < len(candidates) else "ab" * 32
    expect_same(run_task, "password_hash", password_input(target, candidates, ascii_only=ascii_only))


@pytest.mark.parametrize(
    "data",
    [
        password_input("ab" * 31, []),
        password_input("ab" * 33, []),
        password_input("zz" * 32, []),
        password_input(" " + "a" * 63, []),
        dumps({"target": 5, "candidates": []}),
        dumps({"candidates": []}),
        dumps({"target": "ab" * 32}),
        dumps({"target": "ab" * 32, "candidates": "password"}),
        dumps({"target": "ab" * 32, "candidates": ["a", 1]}),
        dumps({"target": "ab" * 32, "candidates": [["a"]]}),
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\\ud800"]}',  # unpaired surrogate
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\\udc00\\ud800"]}',
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\xff"]}',  # not UTF-8
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\xed\xa0\x80"]}',  # UTF-8 of a surrogate
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\xc0\xaf"]}',  # overlong
        b'{"target":"' + b"ab" * 32 + b'","candidates":["\\x"]}',
    ],
)
def test_password_hash_rejects(run_task: RunTask, data: bytes) -> None:
    expect_error(run_task, "password_hash", data)


# --- monte_carlo_pi -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed,samples", [(0, 0), (0, 1), (1, 2), (2**64 - 1, 100), (12345, 5000), (2**63, 3)]
)
def test_monte_carlo_pi_fixed(run_task: RunTask, seed: int, samples: int) -> None:
    expect_same(run_task, "monte_carlo_pi", dumps({"seed": seed, "samples": samples}))


def test_monte_carlo_pi_estimates_pi(run_task: RunTask) -> None:
    out = json.loads(run_task("monte_carlo_pi", dumps({"seed": 2024, "samples": 200_000})))
    assert out["samples"] == 200_000
    assert abs(4 * out["hits"] / out["samples"] - math.pi) < 0.02


@examples(200)
@given(seed=U64, samples=st.integers(0, 300))
def test_monte_carlo_pi_matches_reference(run_task: RunTask, seed: int, samples: int) -> None:
    expect_same(run_task, "monte_carlo_pi", dumps({"seed": seed, "samples": samples}))


@pytest.mark.parametrize(
    "data",
    [
        dumps({"seed": 1, "samples": -1}),
        dumps({"seed": 1, "samples": 10**12 + 1}),
        dumps({"seed": 2**64, "samples": 1}),
        dumps({"seed": 1.0, "samples": 1}),
        dumps({"samples": 1}),
        dumps({"seed": 1}),
    ],
)
def test_monte_carlo_pi_rejects(run_task: RunTask, data: bytes) -> None:
    expect_error(run_task, "monte_carlo_pi", data)


# --- secondary_structure ------------------------------------------------------------------

HBA = (  # human hemoglobin subunit alpha
    "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRV"
    "DPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR"
)
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def prediction(out: bytes) -> str:
    result = json.loads(out)
    assert result["length"] == len(result["prediction"])
    return str(result["prediction"])


def test_secondary_structure_input_forms_agree(run_task: RunTask) -> None:
    plain = expect_same(run_task, "secondary_structure", HBA.encode())
    wrapped = "\n".join(HBA[i : i + 60] for i in range(0, len(HBA), 60))
    forms = [
        HBA.lower().encode(),
        f">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha\n{wrapped}\n".encode(),
        f"  > header after blanks\r\n{wrapped.replace(chr(10), chr(13) + chr(10))}\r\n".encode(),
        " ".join(HBA).encode(),
        dumps(HBA),
        dumps(f">header\n{wrapped}") + b"\n",
        b'  "' + HBA.encode() + b'"  ',
    ]
    for data in forms:
        assert expect_same(run_task, "secondary_structure", data) == plain
    assert len(prediction(plain)) == len(HBA)


@pytest.mark.parametrize(
    "seq,expected",
    [
        ("", ""),
        ("A", "C"),
        ("AAAAA", "CCCCC"),  # shorter than the helix window
        ("A" * 12, "H" * 12),  # every residue a strong helix former
        ("V" * 12, "E" * 12),  # strand wins: Pb > Pa over the segment
        ("GPNG", "CCCC"),
    ],
)
def test_secondary_structure_simple_sequences(run_task: RunTask, seq: str, expected: str) -> None:
    assert prediction(expect_same(run_task, "secondary_structure", seq.encode())) == expected


@pytest.mark.parametrize("length", range(9))
def test_secondary_structure_short_sequences(run_task: RunTask, length: int) -> None:
    for seq in ("EEEEEEEE"[:length], "VIVIVIVI"[:length], "NPDGNPDG"[:length], "MKVLAEWY"[:length]):
        expect_same(run_task, "secondary_structure", seq.encode())


@st.composite
def sequence_inputs(draw: st.DrawFn) -> bytes:
    seq = draw(st.text(alphabet=AMINO + AMINO.lower(), max_size=120))
    form = draw(st.sampled_from(["raw", "lines", "fasta", "json"]))
    if form == "raw":
        return seq.encode()
    width = draw(st.integers(1, 30))
    wrapped = "\n".join(seq[i : i + width] for i in range(0, len(seq), width))
    if form == "lines":
        return wrapped.encode()
    if form == "fasta":
        header = draw(st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=10))
        return f">seq {header}\n{wrapped}\n".encode()
    return dumps(wrapped, ascii_only=draw(st.booleans()))


@examples(400)
@given(data=sequence_inputs())
def test_secondary_structure_matches_reference(run_task: RunTask, data: bytes) -> None:
    expect_same(run_task, "secondary_structure", data)


@examples(200)
@given(seq=st.text(alphabet=st.sampled_from("AEVIGPNDLK"), min_size=20, max_size=200))
def test_secondary_structure_structured_sequences(run_task: RunTask, seq: str) -> None:
    # A small alphabet of strong formers and breakers makes long helices, strands and overlaps likely.
    expect_same(run_task, "secondary_structure", seq.encode())


@pytest.mark.parametrize(
    "data,message",
    [
        (b"MKVX", "unknown residue 'X' at position 4"),
        (b"MK*", "unknown residue '*' at position 3"),
        (b"MK1V", "unknown residue '1' at position 3"),
        (b"B", "unknown residue 'B' at position 1"),
        (b">h\nMK\n\"Q", "unknown residue '\"' at position 3"),
        ("MKé".encode(), "unknown residue 0xC3 at position 3"),
        (b"MK\x00", "unknown residue 0x00 at position 3"),
        (b'"MKV', None),
        (b'"MKV" x', None),
        (b'"MK\\ud800"', None),
        (b'"MKJ"', "unknown residue 'J' at position 3"),
    ],
)
def test_secondary_structure_rejects(run_task: RunTask, data: bytes, message: str | None) -> None:
    error = expect_error(run_task, "secondary_structure", data)
    if message is not None:
        assert error == message


# --- logreg_step --------------------------------------------------------------------------


def logreg_input(lr: float, weights: list[float], rows: list[tuple[list[float], float]]) -> bytes:
    features = len(weights) - 1
    body = b"".join(struct.pack(f"<{features + 1}d", *x, y) for x, y in rows)
    return b"LRS1" + struct.pack(f"<IId{features + 1}d", len(rows), features, lr, *weights) + body


def test_logreg_step_fixed(run_task: RunTask) -> None:
    rows = [([1.0, 2.0], 1.0), ([-1.5, 0.25], 0.0), ([0.0, -3.0], 1.0), ([4.0, 4.0], 0.0)]
    expect_same(run_task, "logreg_step", logreg_input(0.1, [0.5, -0.25, 0.125], rows))
    expect_same(run_task, "logreg_step", logreg_input(0.0, [0.0, 0.0, 0.0], rows))
    expect_same(run_task, "logreg_step", logreg_input(1.0, [0.3], [([], 1.0), ([], 0.0), ([], 1.0)]))  # bias only
    # |z| = 900, far past where exp underflows, with both signs and both labels
    extremes = [([9.0], 1.0), ([-9.0], 1.0), ([9.0], 0.0), ([-9.0], 0.0)]
    out = doubles(expect_same(run_task, "logreg_step", logreg_input(0.5, [100.0, 0.0], extremes)))
    assert out[-1] == 900.0 / 2  # two rows cost 900 each, two cost (almost) nothing


def test_logreg_step_zero_rows_returns_weights_unchanged(run_task: RunTask) -> None:
    weights = [-0.0, 1.5, -2.25]
    out = run_task("logreg_step", logreg_input(0.7, weights, []))
    assert out == struct.pack("<3d", *weights) + struct.pack("<d", 0.0)


def test_logreg_step_is_a_gradient_step(run_task: RunTask) -> None:
    rows = [([0.5, -1.0, 2.0], 1.0), ([1.0, 1.0, -0.5], 0.0), ([-2.0, 0.5, 0.0], 1.0)]
    weights, lr = [0.2, -0.4, 0.1, 0.05], 0.3
    out = doubles(run_task("logreg_step", logreg_input(lr, weights, rows)))

    def z(x: list[float]) -> float:
        return sum(w * v for w, v in zip(weights, x)) + weights[-1]

    p = [1 / (1 + math.exp(-z(x))) for x, _ in rows]
    loss = -sum(math.log(pi) if y else math.log(1 - pi) for pi, (_, y) in zip(p, rows)) / len(rows)
    grad = [sum((pi - y) * x[j] for pi, (x, y) in zip(p, rows)) / len(rows) for j in range(3)]
    grad.append(sum(pi - y for pi, (_, y) in zip(p, rows)) / len(rows))
    assert out[:-1] == pytest.approx([w - lr * g for w, g in zip(weights, grad)], rel=1e-12)
    assert out[-1] == pytest.approx(loss, rel=1e-12)


finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)


@st.composite
def logreg_inputs(draw: st.DrawFn) -> bytes:
    features = draw(st.integers(0, 5))
    weights = draw(st.lists(st.floats(-5.0, 5.0), min_size=features + 1, max_size=features + 1))
    rows = draw(
        st.lists(
            st.tuples(st.lists(finite, min_size=features, max_size=features), st.sampled_from([0.0, 1.0])),
            max_size=8,
        )
    )
    return logreg_input(draw(st.floats(0.0, 2.0)), weights, rows)


@examples(400)
@given(data=logreg_inputs())
def test_logreg_step_matches_reference(run_task: RunTask, data: bytes) -> None:
    expect_same(run_task, "logreg_step", data)


@examples(1000)
@given(t=st.floats(-745.0, 0.0))
def test_reference_exp_is_accurate(t: float) -> None:
    # Not a test of the task but of its specification: the exp recipe is a good exp.
    if t < -708.0:
        assert reference.exp_neg(t) == 0.0
    else:
        assert reference.exp_neg(t) == pytest.approx(math.exp(t), rel=1e-15, abs=0.0)


@examples(1000)
@given(v=st.floats(1.0, 2.0))
def test_reference_log_is_accurate(v: float) -> None:
    assert reference.log_1_2(v) == pytest.approx(math.log(v), rel=1e-15, abs=1e-300)


@pytest.mark.parametrize(
    "data",
    [
        b"LRS2" + bytes(24),
        b"LRS",
        b"LRS1" + bytes(8),  # header cut short
        logreg_input(0.1, [0.0, 0.0], [([1.0], 1.0)])[:-1],
        logreg_input(0.1, [0.0, 0.0], [([1.0], 1.0)]) + b"\x00" * 8,
        b"LRS1" + struct.pack("<IId", 2**32 - 1, 2**32 - 1, 0.1) + bytes(8),  # sizes that overflow 64 bits
        logreg_input(math.nan, [0.0], []),
        logreg_input(0.1, [math.inf], []),
        logreg_input(0.1, [0.0, 0.0], [([math.nan], 1.0)]),
        logreg_input(0.1, [0.0, 0.0], [([-math.inf], 0.0)]),
        logreg_input(0.1, [0.0, 0.0], [([1.0], 0.5)]),
        logreg_input(0.1, [0.0, 0.0], [([1.0], math.nan)]),
    ],
)
def test_logreg_step_rejects(run_task: RunTask, data: bytes) -> None:
    expect_error(run_task, "logreg_step", data)


@examples(100)
@given(data=logreg_inputs(), cut=st.integers(1, 16))
def test_logreg_step_rejects_truncated_input(run_task: RunTask, data: bytes, cut: int) -> None:
    assume(cut < len(data))
    expect_error(run_task, "logreg_step", data[:-cut])


# --- failure messages built from parts ----------------------------------------------------


def test_a_message_built_from_parts_replaces_the_output_written_so_far(run_task: RunTask) -> None:
    # The first candidate matches, so its match is already written when the second turns out bad.
    data = dumps({"target": hashlib.sha256(b"a").hexdigest(), "candidates": ["a", 7]})
    assert expect_error(run_task, "password_hash", data) == "candidates[1] is not a string"
    header_only = b"LRS1" + struct.pack("<IId", 2, 1, 0.5)
    assert expect_error(run_task, "logreg_step", header_only) == "bad length: 20 bytes do not hold 2 rows of 1 features"
