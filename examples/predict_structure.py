"""Predict the secondary structure of every protein in a FASTA file on the mesh, one subtask per sequence.

    python examples/predict_structure.py examples/proteins.fasta [-o predictions.fasta | -o predictions.jsonl]

Each sequence goes to tasks_wasm/secondary_structure.wasm (Chou-Fasman, integer arithmetic,
so every peer gives the same answer), which labels each residue H (helix), E (strand) or C
(coil). The predictions are written as FASTA, each record followed by its prediction under the
same header with ":secstr" after the ID (as RCSB's ss.txt does), or as JSON Lines of
{"header", "sequence", "prediction"} when the output's name ends in .jsonl. A summary follows:
residues, the share of helix, strand and coil, the longest helix, wall time and peers.

Input: FASTA records ('>' header, then the sequence on any number of lines; blank lines are
fine), one-letter codes of the 20 standard amino acids in either case, a final '*' (stop)
allowed. Any other letter stops the run before anything is submitted, naming the record.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from meshnode import MeshError

from mesh_args import add_mesh_flags, connect

TASK = Path(__file__).resolve().parents[1] / "tasks_wasm" / "secondary_structure.wasm"
AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
MAX_RESIDUES = 1_000_000  # the task's own limit per sequence
LINE_WIDTH = 60  # residues per FASTA line, as UniProt writes them
STRUCTURES = (("helix", "H"), ("strand", "E"), ("coil", "C"))


class FastaError(Exception):
    """The input cannot be read as protein FASTA; the message says where and why, on one line."""


@dataclass(frozen=True)
class Protein:
    header: str  # the header line without its '>'
    sequence: str  # upper case, no whitespace, no final '*'


def read_fasta(path: str) -> list[Protein]:
    """Every record of a protein FASTA file, checked before any of them is submitted.

    Raises:
        FastaError: the file cannot be read, has no records, or a record is empty or holds a
            character that is not an amino acid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FastaError(f"{path}: cannot read it: {exc}") from None
    records: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif line and not records:
            raise FastaError(f"{path}:{number}: sequence before the first '>' header")
        elif line:
            records[-1][1].append("".join(line.split()))
    if not records:
        raise FastaError(f"{path}: no FASTA records (a record starts with a '>' header line)")
    return [_protein(path, position, header, "".join(lines)) for position, (header, lines) in enumerate(records, 1)]


def _protein(path: str, position: int, header: str, sequence: str) -> Protein:
    name = f"{path}: record {position} (>{header[:60]})"
    sequence = sequence.upper().removesuffix("*")
    if not sequence:
        raise FastaError(f"{name} has no residues")
    for residue, letter in enumerate(sequence, 1):
        if letter not in AMINO_ACIDS:
            raise FastaError(f"{name}: {letter!r} at residue {residue} is not one of the 20 amino acids")
    if len(sequence) > MAX_RESIDUES:
        raise FastaError(f"{name} has {len(sequence):,} residues; the task takes at most {MAX_RESIDUES:,}")
    return Protein(header, sequence)


def write_predictions(path: str, proteins: list[Protein], predictions: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for protein, prediction in zip(proteins, predictions, strict=True):
            if path.endswith(".jsonl"):
                record = {"header": protein.header, "sequence": protein.sequence, "prediction": prediction}
                f.write(json.dumps(record) + "\n")
                continue
            name, _, description = protein.header.partition(" ")
            f.write(f">{protein.header}\n{_wrapped(protein.sequence)}")
            f.write(f">{name}:secstr{' ' if description else ''}{description}\n{_wrapped(prediction)}")


def _wrapped(letters: str) -> str:
    return "".join(letters[i : i + LINE_WIDTH] + "\n" for i in range(0, len(letters), LINE_WIDTH))


def longest_helix(proteins: list[Protein], predictions: list[str]) -> tuple[int, int, Protein] | None:
    """(length, first residue counting from 1, protein) of the longest run of H; the first such when tied."""
    best: tuple[int, int, Protein] | None = None
    for protein, prediction in zip(proteins, predictions, strict=True):
        for run in re.finditer("H+", prediction):
            if best is None or len(run[0]) > best[0]:
                best = (len(run[0]), run.start() + 1, protein)
    return best


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@dataclass
class Run:
    predictions: dict[int, str]  # by input index, for the subtasks that succeeded
    failures: list[str]
    subtasks: int
    peers: set[str]
    seconds: float


def predict(args: argparse.Namespace, proteins: list[Protein]) -> Run:
    """One job of one subtask per protein, its results gathered as they are decided."""
    client, policy = connect(args)
    with client:
        started = time.monotonic()
        job = client.submit(TASK, [protein.sequence for protein in proteins], label="predict_structure", **policy)
        run = Run({}, [], job.subtasks, set(), 0.0)
        for result in job.results():
            run.peers.update(result.executors)
            if result.ok:
                run.predictions[result.index] = result.output["prediction"]
            else:
                assert result.error is not None
                run.failures.append(f">{proteins[result.index].header}: {result.error.code}: {result.error.message}")
        run.seconds = time.monotonic() - started
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fasta", help="the proteins, as FASTA")
    p.add_argument(
        "-o", "--output", default="predictions.fasta",
        help="the predictions file: FASTA, or JSON Lines when the name ends in .jsonl (default: predictions.fasta)",
    )  # fmt: skip
    add_mesh_flags(p)
    args = p.parse_args()
    try:
        proteins = read_fasta(args.fasta)
    except FastaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run = predict(args, proteins)
    except MeshError as exc:  # no node running, the job refused
        print(f"error: {exc}", file=sys.stderr)
        return 1

    done = [protein for index, protein in enumerate(proteins) if index in run.predictions]
    predictions = [run.predictions[index] for index in sorted(run.predictions)]
    try:
        write_predictions(args.output, done, predictions)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    residues = sum(len(prediction) for prediction in predictions)
    on = f"{run.subtasks} subtasks on {_count(len(run.peers), 'peer')} in {run.seconds:.2f} s"
    print(f"{len(done)} sequences, {residues:,} residues: {on}")
    if residues:
        counts = {kind: sum(prediction.count(letter) for prediction in predictions) for kind, letter in STRUCTURES}
        print(", ".join(f"{kind} {count:,} ({count / residues:.1%})" for kind, count in counts.items()))
    helix = longest_helix(done, predictions)
    if helix is not None:
        length, first, protein = helix
        print(f"longest helix: {length} residues, {first}-{first + length - 1} of >{protein.header}")
    print(f"wrote {args.output}")
    for failure in run.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
