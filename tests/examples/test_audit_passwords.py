"""examples/audit_passwords.py and the password_hash task it runs: what it cracks is what hashlib says."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cli.nodes import NodeProcess

from .conftest import EXAMPLES, run_example

TASK = EXAMPLES.parent / "tasks_wasm" / "password_hash.wasm"

COLOURS = ["red", "blue", "green", "gold", "silver", "black", "white", "amber", "ivory", "coral", "jade", "plum"]
ANIMALS = ["fox", "owl", "cat", "wolf", "bear", "hawk", "lynx", "mole", "newt", "orca", "puma", "seal"]
WORDS = [f"{c}{a}{n}" for c, a, n in itertools.product(COLOURS, ANIMALS, ["", "1", "!"])]
WORDS += ["correct horse battery staple", "pässwörd", "日本語", " leading space"]


def sha256_line(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def django(password: str, salt: str, iterations: int) -> str:
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def cracked_by_hashlib(lines: list[str], words: list[str]) -> dict[int, str]:
    """Target line -> the first word whose hash it is, computed here without the task."""
    found: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.rpartition(":")[2]
        for word in words:
            if "$" in text:
                _, iterations, salt, digest = text.split("$")
                key = hashlib.pbkdf2_hmac("sha256", word.encode(), salt.encode(), int(iterations))
                hit = base64.b64encode(key).decode() == digest
            else:
                hit = sha256_line(word) == text.lower()
            if hit:
                found[number] = word
                break
    return found


def test_the_cracked_set_is_what_hashlib_says(node: NodeProcess, tmp_path: Path) -> None:
    assert len(WORDS) > 400
    # Empty lines and a line that is not UTF-8 are skipped; CRLF endings are fine.
    wordlist = "\n".join(WORDS[:200]).encode() + b"\n\n\xff\xfe\n" + "\r\n".join(WORDS[200:]).encode() + b"\r\n"
    (tmp_path / "words.txt").write_bytes(wordlist)
    lines = [
        "alice:" + sha256_line("goldowl!"),
        sha256_line("pässwörd").upper(),
        "carol:" + sha256_line("not in the list"),
        "dave:" + django("correct horse battery staple", "q8XbT1mU7rLk", 1000),
        "erin:" + django("tealfox", "Zp3sW9aQeC1x", 1000),
    ]
    (tmp_path / "targets.txt").write_text("# name:hash\n" + "\n".join(lines) + "\n")
    expected = {number + 1: word for number, word in cracked_by_hashlib(lines, WORDS).items()}  # after the comment
    assert expected == {2: "goldowl!", 3: "pässwörd", 5: "correct horse battery staple"}

    ran = run_example("audit_passwords.py", "words.txt", "targets.txt", node=node, cwd=tmp_path)
    reported = {int(n): json.loads(p) for n, p in re.findall(r"^  line (\d+) .*?  (\".*\")$", ran.stdout, re.M)}
    assert reported == expected, ran.stdout
    labels = [label.strip() for label in re.findall(r"^  line \d+\s+(.+?)  \"", ran.stdout, re.M)]
    shortened = sha256_line("pässwörd").upper()
    assert labels == ["alice", f"{shortened[:10]}…{shortened[-6:]}", "dave"]
    assert "cracked 3 of 5 targets" in ran.stdout and "2 remain" in ran.stdout
    assert f"{len(WORDS)} candidates (1 line not UTF-8, skipped) against 5 targets:" in ran.stdout


def exec_task(tmp_path: Path, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each input through the committed task in the sandbox, with ``python -m meshnode exec``."""
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps(value) + "\n" for value in inputs))
    command = [sys.executable, "-m", "meshnode", "exec", str(TASK), "--input-jsonl", str(path)]
    ran = subprocess.run([*command, "--data-dir", str(tmp_path / "exec")], capture_output=True, text=True, timeout=120)
    return [json.loads(line) for line in ran.stdout.splitlines()]


# RFC 7914 section 11, PBKDF2-HMAC-SHA256: the first 32 bytes of each 64-byte key.
RFC_7914 = [
    ("passwd", "salt", 1, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"),
    ("Password", "NaCl", 80000, "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"),
]
# Lengths around the block boundaries: a key longer than 64 bytes is hashed first; the first
# HMAC message is salt + 4 bytes after the 64-byte pad, so salts of 51/52 bytes cross the padding.
EDGES = [
    ("", "", 1),
    ("p", "s", 2),
    ("k" * 64, "s" * 51, 3),
    ("k" * 65, "s" * 52, 1000),
    ("k" * 200, "s" * 55, 7),
    ("pässwörd 日本語", "sälz 😀", 10),
    ("x", "s" * 120, 1),
]


def test_the_tasks_pbkdf2_is_hashlibs(tmp_path: Path) -> None:
    for password, salt, iterations, known in RFC_7914:
        assert hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex() == known
    vectors = [(p, s, i, bytes.fromhex(k)) for p, s, i, k in RFC_7914]
    vectors += [(p, s, i, hashlib.pbkdf2_hmac("sha256", p.encode(), s.encode(), i)) for p, s, i in EDGES]
    inputs = []
    for number, (password, salt, iterations, key) in enumerate(vectors):
        wrong = bytes([key[0] ^ 1]) + key[1:]
        encoded = [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.b64encode(key).decode()[:43]]
        targets = [
            {"pbkdf2_sha256": {"iterations": iterations, "salt": salt, "hash": encoded[number % 4]}},
            {"pbkdf2_sha256": {"iterations": iterations, "salt": salt, "hash": wrong.hex()}},
            {"sha256": sha256_line(password)},
        ]
        inputs.append({"targets": targets, "candidates": ["decoy", password]})
    inputs.append({"target": sha256_line("b"), "candidates": ["a", "b"]})  # the single-target form
    inputs.append({"targets": [{"pbkdf2_sha256": {"iterations": 0, "salt": "s", "hash": "00" * 32}}], "candidates": []})

    *results, single, bad = exec_task(tmp_path, inputs)
    for (password, *_), result in zip(vectors, results, strict=True):
        assert result["status"] == "ok", result
        matches = [{"target": 0, "index": 1, "password": password}, {"target": 2, "index": 1, "password": password}]
        assert result["output"] == {"checked": 2, "matches": matches}
    assert single["output"] == {"checked": 2, "matches": [{"index": 1, "password": "b"}]}
    message = "targets[0].pbkdf2_sha256.iterations must be an integer in 1..10000000"
    assert bad["error"] == {"code": "task_error", "message": message}


def test_a_malformed_target_line_is_a_one_line_error_naming_it(node: NodeProcess, tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("password\n")
    (tmp_path / "targets.txt").write_text(f"ok:{sha256_line('password')}\n\nbob:5e884898da28047151d0e56f8dc629\n")
    command = [sys.executable, str(EXAMPLES / "audit_passwords.py"), "words.txt", "targets.txt"]
    ran = subprocess.run([*command, "--data-dir", str(node.data_dir)], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 2 and ran.stdout == ""
    error = "error: targets.txt:3: not a SHA-256 digest (64 hex digits) or a pbkdf2_sha256$<iterations>$<salt>$<hash>\n"
    assert ran.stderr == error
