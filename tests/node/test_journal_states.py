"""``journal_states``: the dashboard's grid of a job no longer in memory, from its journalled verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from meshnode.node.job_summary import journal_states

JOB = b"j" * 16


@dataclass
class Saved:
    subtasks: int


@dataclass
class Journal:
    """The two reads ``journal_states`` makes of the journal."""

    saved: dict[bytes, Saved]
    verdicts_of: dict[bytes, list[tuple[int, str]]] = field(default_factory=dict)

    def job(self, job_id: bytes) -> Saved | None:
        return self.saved.get(job_id)

    def verdicts(self, job_id: bytes) -> Iterator[tuple[int, str]]:
        yield from self.verdicts_of.get(job_id, [])


@dataclass
class Jobs:
    store: Any


def test_each_verdict_gives_its_letter_and_a_subtask_without_one_reads_queued() -> None:
    journal = Journal({JOB: Saved(6)}, {JOB: [(0, "ok"), (1, "disputed"), (2, "trap"), (4, "ok")]})
    assert journal_states(Jobs(journal), JOB) == "vdfqvq"  # type: ignore[arg-type]


def test_a_job_cancelled_while_ingesting_counts_what_was_decided_and_an_unknown_job_is_none() -> None:
    journal = Journal({JOB: Saved(0)}, {JOB: [(0, "ok"), (2, "timeout")]})
    assert journal_states(Jobs(journal), JOB) == "vqf"  # type: ignore[arg-type]
    assert journal_states(Jobs(journal), b"x" * 16) is None  # type: ignore[arg-type]
