"""Ctrl-C while a job goes up: before the last input it stops the upload; after, it is held for the cancel."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from meshnode.cli.job_commands import _Counted, _ctrl_c_held_once_sent


@pytest.fixture(autouse=True)
def ctrl_c_as_at_a_terminal() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal (a suite started in the background ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_before_the_last_input_stops_the_upload() -> None:
    sent = _Counted(iter([b"a", b"b", b"c"]))
    with pytest.raises(KeyboardInterrupt), _ctrl_c_held_once_sent(sent):
        for data in sent:
            if data == b"b":
                os.kill(os.getpid(), signal.SIGINT)
    assert sent.count == 2


def test_ctrl_c_after_the_last_input_is_held_until_the_job_is_known() -> None:
    sent = _Counted(iter([b"a", b"b"]))
    with _ctrl_c_held_once_sent(sent) as ctrl_c:
        assert list(sent) == [b"a", b"b"]
        os.kill(os.getpid(), signal.SIGINT)  # while the node answers
        signal.raise_signal(signal.SIGINT)
    assert ctrl_c == [signal.SIGINT, signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual Ctrl-C again


def test_ctrl_c_ignored_by_whoever_started_us_stays_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sent = _Counted(iter([b"a"]))
    with _ctrl_c_held_once_sent(sent) as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
        assert list(sent) == [b"a"]
    assert ctrl_c == [] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
