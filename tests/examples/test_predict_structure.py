"""examples/predict_structure.py: a FASTA file in, the task's predictions out, and a summary that adds up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.nodes import NodeProcess

from .conftest import EXAMPLES, run_example

TASK = EXAMPLES.parent / "tasks_wasm" / "secondary_structure.wasm"

# Multi-line records, lower case, blank lines, a final '*' and a header with no description.
FASTA = """\
>sp|P69905|HBA_HUMAN Hemoglobin subunit alpha
MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHG
KKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTP
AVHASLDKFLASVSTVLTSKYR

>crambin
ttccpsivarsnfnvcrlpg
tpeaicatytgciiipgatcpgdyan*
>sp|P01308|INS_HUMAN Insulin B chain
FVNQHLCGSHLVEALYLVCGERGFFYTPKT
"""
SEQUENCES = [
    "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHG"
    "KKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR",
    "TTCCPSIVARSNFNVCRLPGTPEAICATYTGCIIIPGATCPGDYAN",
    "FVNQHLCGSHLVEALYLVCGERGFFYTPKT",
]
HEADERS = ["sp|P69905|HBA_HUMAN Hemoglobin subunit alpha", "crambin", "sp|P01308|INS_HUMAN Insulin B chain"]


def exec_predictions(tmp_path: Path) -> list[str]:
    """What ``python -m meshnode exec`` makes of the same sequences, one JSON string per line."""
    inputs = tmp_path / "sequences.jsonl"
    inputs.write_text("".join(json.dumps(sequence) + "\n" for sequence in SEQUENCES))
    command = [sys.executable, "-m", "meshnode", "exec", str(TASK), "--input-jsonl", str(inputs)]
    command += ["--data-dir", str(tmp_path / "exec")]
    ran = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return [json.loads(line)["output"]["prediction"] for line in ran.stdout.splitlines()]


def read_pairs(path: Path) -> list[tuple[str, str, str, str]]:
    """(header, sequence, prediction header, prediction) for each record pair of the written FASTA."""
    records: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            records.append([line[1:], ""])
        else:
            assert len(line) <= 60
            records[-1][1] += line
    assert len(records) % 2 == 0
    return [(*records[i], *records[i + 1]) for i in range(0, len(records), 2)]  # type: ignore[misc]


def test_predictions_are_the_tasks_and_the_summary_adds_up(node: NodeProcess, tmp_path: Path) -> None:
    (tmp_path / "proteins.fasta").write_text(FASTA)
    ran = run_example("predict_structure.py", "proteins.fasta", "-o", "out.fasta", node=node, cwd=tmp_path)
    expected = exec_predictions(tmp_path)
    assert [len(p) for p in expected] == [len(s) for s in SEQUENCES]

    pairs = read_pairs(tmp_path / "out.fasta")
    assert [(h, s) for h, s, _, _ in pairs] == list(zip(HEADERS, SEQUENCES, strict=True))
    assert [h for _, _, h, _ in pairs] == [
        "sp|P69905|HBA_HUMAN:secstr Hemoglobin subunit alpha",
        "crambin:secstr",
        "sp|P01308|INS_HUMAN:secstr Insulin B chain",
    ]
    assert [p for _, _, _, p in pairs] == expected

    residues = sum(map(len, SEQUENCES))
    assert f"3 sequences, {residues} residues: 3 subtasks on 1 peer in" in ran.stdout
    shares = re.findall(r"(helix|strand|coil) (\d+) \(([\d.]+)%\)", ran.stdout)
    counts = {kind: (int(n), float(percent)) for kind, n, percent in shares}
    assert list(counts) == ["helix", "strand", "coil"]
    assert sum(n for n, _ in counts.values()) == residues
    assert abs(sum(pct for _, pct in counts.values()) - 100) < 0.2
    letters = "".join(expected)
    assert counts["helix"][0] == letters.count("H") and counts["strand"][0] == letters.count("E")

    runs = [(len(run[0]), run.start() + 1, index) for index, p in enumerate(expected) for run in re.finditer("H+", p)]
    length, first, index = max(runs, key=lambda r: (r[0], -r[2], -r[1]))
    assert f"longest helix: {length} residues, {first}-{first + length - 1} of >{HEADERS[index]}" in ran.stdout


def test_json_lines_output(node: NodeProcess, tmp_path: Path) -> None:
    (tmp_path / "proteins.fasta").write_text(FASTA)
    run_example("predict_structure.py", "proteins.fasta", "-o", "out.jsonl", node=node, cwd=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["header"], r["sequence"]) for r in rows] == list(zip(HEADERS, SEQUENCES, strict=True))
    assert all(len(r["prediction"]) == len(r["sequence"]) and set(r["prediction"]) <= set("HEC") for r in rows)


def test_a_letter_that_is_no_amino_acid_is_a_one_line_error_naming_the_record(
    node: NodeProcess, tmp_path: Path
) -> None:
    (tmp_path / "bad.fasta").write_text(">first\nMKVL\n>second protein\nMKTA\nYIAKQRZI\n")
    command = [sys.executable, str(EXAMPLES / "predict_structure.py"), "bad.fasta", "--data-dir", str(node.data_dir)]
    ran = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    message = "error: bad.fasta: record 2 (>second protein): 'Z' at residue 11 is not one of the 20 amino acids\n"
    assert ran.stderr == message
    assert not (tmp_path / "predictions.fasta").exists()
