"""Refusals: every refusal counted by reason; one warning a minute at most, the rest at debug level."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from meshnode.net.refusals import WARN_EVERY, Refusals


def test_refusals_warn_at_most_once_a_minute_and_always_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meshnode.net.refusals")
    now = [0.0]
    dropped: Counter[str] = Counter()
    refusals = Refusals(dropped, "jobs", clock=lambda: now[0])
    for t in (0.0, 1.0, WARN_EVERY - 1, WARN_EVERY, WARN_EVERY + 1):
        now[0] = t
        refusals.refuse("malformed", "peer", "malformed CBOR: premature end of stream\nsecond line")
    refusals.refuse("empty", "peer", "")
    assert dropped == {"jobs_malformed": 5, "jobs_empty": 1}
    records = [r for r in caplog.records if r.name == "meshnode.net.refusals"]
    warning, debug = logging.WARNING, logging.DEBUG
    assert [r.levelno for r in records] == [warning, debug, debug, warning, debug, debug]
    assert all("second line" not in r.getMessage() and "\n" not in r.getMessage() for r in records)
    assert records[-1].getMessage() == "refused a jobs stream from peer: empty (jobs_empty)"
