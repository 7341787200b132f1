"""Audit password hashes against a wordlist on the mesh: which targets does a list of candidate passwords crack?

    python examples/audit_passwords.py WORDLIST TARGETS [--chunk N]

WORDLIST: candidate passwords, one per line (UTF-8; empty lines are skipped, and so are lines
that are not UTF-8, which no UTF-8 password can be; the file is streamed, never read whole).
TARGETS: one hash per line, optionally after a label and a colon ("alice:5e8848...");
empty lines and lines starting with '#' are skipped. Two formats:

    5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8      SHA-256 of the password, unsalted
    pbkdf2_sha256$870000$<salt>$<base64 of 32 bytes>                      Django's salted PBKDF2-HMAC-SHA256

Every subtask runs tasks_wasm/password_hash.wasm on a chunk of candidates against a group of
targets. SHA-256 is cheap, so all SHA-256 targets form one group with large chunks; PBKDF2 is
slow by design (each candidate costs about 2 x iterations SHA-256 blocks per target), so PBKDF2
targets are grouped and chunks sized to keep a subtask near a second of work on one core.
The report lists each cracked target (its line, its label or the hash shortened, the password)
and how many remain. Exit 0 either way; 2 for a file that cannot be read or a malformed target
line (the message names the line); 1 when a subtask failed, so the audit is incomplete.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import json
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshnode import MeshError

from mesh_args import add_mesh_flags, connect

TASK = Path(__file__).resolve().parents[1] / "tasks_wasm" / "password_hash.wasm"
MAX_ITERATIONS = 10_000_000  # the task's own limit
BLOCKS_PER_SUBTASK = 1_000_000  # SHA-256 blocks: about a second for one core running the task
MAX_CHUNK = 100_000  # candidates per subtask, however cheap their targets


class AuditError(Exception):
    """A file cannot be used; the message says which (and which line) and why, on one line."""


@dataclass(frozen=True)
class Target:
    line: int  # in the targets file, counting from 1
    label: str  # the label before the colon, or the hash shortened
    spec: dict[str, Any]  # as the task reads it: {"sha256": ...} or {"pbkdf2_sha256": {...}}

    @property
    def cost(self) -> int:
        """SHA-256 blocks per candidate: two per PBKDF2 iteration, plus the pads and the salt."""
        if "sha256" in self.spec:
            return 1
        iterations: int = self.spec["pbkdf2_sha256"]["iterations"]
        return 2 * iterations + 4


@dataclass
class Group:
    """Targets that go to the task together, in chunks of ``chunk`` candidates."""

    targets: list[Target] = field(default_factory=list)
    chunk: int = 0


def parse_target(path: str, number: int, line: str) -> Target:
    """One line of the targets file.

    Raises:
        AuditError: the hash is neither a SHA-256 digest nor a pbkdf2_sha256 hash.
    """
    label, _, text = line.rpartition(":")  # no hash format holds a colon; a label may
    label, text = label.strip(), text.strip()
    where = f"{path}:{number}"
    if len(text) == 64 and all(c in string.hexdigits for c in text):
        return Target(number, label or f"{text[:10]}…{text[-6:]}", {"sha256": text.lower()})
    if "$" not in text:
        raise AuditError(f"{where}: not a SHA-256 digest (64 hex digits) or a pbkdf2_sha256$<iterations>$<salt>$<hash>")
    fields = text.split("$")
    if fields[0] != "pbkdf2_sha256":
        raise AuditError(f"{where}: unsupported algorithm {fields[0]!r}: this audit knows SHA-256 and pbkdf2_sha256")
    if len(fields) != 4:
        raise AuditError(f"{where}: a pbkdf2_sha256 hash has four fields: pbkdf2_sha256$<iterations>$<salt>$<hash>")
    _, iterations, salt, digest = fields
    if not (iterations.isascii() and iterations.isdigit()) or not 1 <= int(iterations) <= MAX_ITERATIONS:
        raise AuditError(f"{where}: the iteration count must be a whole number in 1..{MAX_ITERATIONS:,}")
    if _key_length(digest) != 32:
        raise AuditError(f"{where}: the hash must be the base64 (or hex) of a 32-byte key")
    spec = {"pbkdf2_sha256": {"iterations": int(iterations), "salt": salt, "hash": digest}}
    return Target(number, label or f"pbkdf2_sha256${iterations}${salt[:8]}{'…' if len(salt) > 8 else ''}", spec)


def _key_length(digest: str) -> int:
    if len(digest) == 64 and all(c in string.hexdigits for c in digest):
        return 32
    try:
        return len(base64.b64decode(digest + "=" * (-len(digest) % 4), validate=True))
    except (binascii.Error, ValueError):
        return 0


def read_targets(path: str) -> list[Target]:
    """Every target of the file, in order.

    Raises:
        AuditError: the file cannot be read, holds no targets, or a line is malformed.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"{path}: cannot read it: {exc}") from None
    targets = [
        parse_target(path, number, line)
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not targets:
        raise AuditError(f"{path}: no targets (one hash per line)")
    return targets


def plan(targets: list[Target], chunk: int | None) -> list[Group]:
    """The target groups: the SHA-256 targets together, the PBKDF2 ones packed in order while a
    candidate costs at most BLOCKS_PER_SUBTASK against the group (a costlier target goes alone);
    each group's chunk sized so that a subtask is about BLOCKS_PER_SUBTASK blocks."""
    groups = [Group([target for target in targets if "sha256" in target.spec])]
    for target in targets:
        if "sha256" in target.spec:
            continue
        if len(groups) == 1 or sum(t.cost for t in groups[-1].targets) + target.cost > BLOCKS_PER_SUBTASK:
            groups.append(Group())
        groups[-1].targets.append(target)
    groups = [group for group in groups if group.targets]
    for group in groups:
        cost = sum(target.cost for target in group.targets)
        group.chunk = chunk or max(1, min(MAX_CHUNK, BLOCKS_PER_SUBTASK // cost))
    return groups


@dataclass
class Wordlist:
    """The candidates of a wordlist file, read once for each group; the counts are of a whole reading."""

    path: str
    candidates: int = 0
    not_utf8: int = 0

    def check(self) -> None:
        """Raises AuditError unless the file can be read and holds a candidate."""
        if next(self.read(), None) is None:
            raise AuditError(f"{self.path}: no candidate passwords (one per line)")

    def read(self) -> Iterator[str]:
        """The candidates in file order.

        Raises:
            AuditError: the file cannot be read.
        """
        candidates = not_utf8 = 0
        try:
            with open(self.path, "rb") as f:
                for number, raw in enumerate(f, 1):
                    line = raw.rstrip(b"\n").rstrip(b"\r")
                    if number == 1:
                        line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
                    if not line:
                        continue
                    try:
                        candidate = line.decode("utf-8")
                    except UnicodeDecodeError:
                        not_utf8 += 1
                        continue
                    candidates += 1
                    yield candidate
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read it: {exc}") from None
        self.candidates, self.not_utf8 = candidates, not_utf8

    def chunks(self, size: int) -> Iterator[list[str]]:
        candidates = self.read()
        while chunk := list(itertools.islice(candidates, size)):
            yield chunk


@dataclass
class Audit:
    cracked: dict[int, tuple[int, int, str]] = field(default_factory=dict)  # target -> (subtask, index, password)
    failures: list[str] = field(default_factory=list)
    subtasks: int = 0
    peers: set[str] = field(default_factory=set)
    seconds: float = 0.0


def audit(args: argparse.Namespace, groups: list[Group], wordlist: Wordlist) -> Audit:
    """One job: every chunk of the wordlist against every group, the matches gathered as decided."""
    group_of: list[int] = []  # subtask index -> group

    def inputs() -> Iterator[dict[str, Any]]:
        for number, group in enumerate(groups):
            specs = [target.spec for target in group.targets]
            for chunk in wordlist.chunks(group.chunk):
                group_of.append(number)
                yield {"targets": specs, "candidates": chunk}

    result = Audit()
    client, policy = connect(args)
    with client:
        started = time.monotonic()
        job = client.submit(TASK, inputs(), label="audit_passwords", **policy)
        result.subtasks = job.subtasks
        for decided in job.results():
            result.peers.update(decided.executors)
            if not decided.ok:
                assert decided.error is not None
                result.failures.append(f"subtask {decided.index}: {decided.error.code}: {decided.error.message}")
                continue
            group = groups[group_of[decided.index]]
            for match in decided.output["matches"]:
                target = group.targets[match["target"]]
                found = (decided.index, match["index"], match["password"])
                result.cracked[target.line] = min(result.cracked.get(target.line, found), found)
        result.seconds = time.monotonic() - started
    return result


def report(targets: list[Target], wordlist: Wordlist, result: Audit) -> None:
    cracked = [target for target in targets if target.line in result.cracked]
    print(f"cracked {len(cracked)} of {len(targets)} targets")
    width = max((len(target.label) for target in cracked), default=0)
    for target in cracked:
        password = json.dumps(result.cracked[target.line][2], ensure_ascii=False)
        print(f"  line {target.line:<5} {target.label:<{width}}  {password}")
    print(f"{len(targets) - len(cracked)} remain")
    skipped = f" ({_count(wordlist.not_utf8, 'line')} not UTF-8, skipped)" if wordlist.not_utf8 else ""
    print(
        f"{wordlist.candidates:,} candidates{skipped} against {len(targets)} targets: "
        f"{result.subtasks} subtasks on {_count(len(result.peers), 'peer')} in {result.seconds:.2f} s"
    )
    for failure in result.failures:
        print(f"failed: {failure}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wordlist", help="candidate passwords, one per line")
    p.add_argument("targets", help="the hashes to audit, one per line, each optionally after 'label:'")
    p.add_argument(
        "--chunk", type=int, metavar="N",
        help="candidates per subtask (default: sized per target group to about a second of work)",
    )  # fmt: skip
    add_mesh_flags(p)
    args = p.parse_args()
    if args.chunk is not None and args.chunk < 1:
        p.error("--chunk must be at least 1")
    wordlist = Wordlist(args.wordlist)
    try:
        targets = read_targets(args.targets)
        wordlist.check()
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = audit(args, plan(targets, args.chunk), wordlist)
    except AuditError as exc:  # the wordlist became unreadable while it was sent
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MeshError as exc:  # no node running, the job refused
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report(targets, wordlist, result)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
