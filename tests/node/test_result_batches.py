"""Results pushed to an owner travel in messages of bounded size (first pushes and outbox retries alike)."""

from __future__ import annotations

from meshnode.core.output_codec import PLAIN
from meshnode.core.job_messages import PushedResult
from meshnode.node.stealing import MAX_STEAL, PUSH_BYTES, _by_size


def pushed(size: int) -> PushedResult:
    return PushedResult(claim=b"c", output=bytes(size), codec=PLAIN)


def test_outputs_are_split_at_the_byte_budget_and_the_batch_limit_in_order() -> None:
    big = [pushed(PUSH_BYTES // 2 + 1) for _ in range(5)]
    assert [len(b) for b in _by_size(big)] == [1, 1, 1, 1, 1]
    small = [pushed(10) for _ in range(MAX_STEAL * 2 + 3)]
    batches = list(_by_size(small))
    assert [len(b) for b in batches] == [MAX_STEAL, MAX_STEAL, 3]
    assert [r for b in batches for r in b] == small


def test_an_output_over_the_budget_still_travels_alone() -> None:
    assert [len(b) for b in _by_size([pushed(10), pushed(PUSH_BYTES + 1), pushed(10)])] == [1, 1, 1]
    assert list(_by_size([])) == []
