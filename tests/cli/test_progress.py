"""The progress line ``submit`` draws: bar, counts, peers working, rate, ETA."""

from __future__ import annotations

from meshnode.cli.job_commands import progress_line


def test_the_progress_line_shows_every_count_the_rate_and_the_eta() -> None:
    status = {"total": 100, "verified": 40, "failed": 5, "disputed": 5, "running": 6, "peers_working": 3}
    line = progress_line(status, elapsed=10.0, width=10)
    assert line.startswith("[#####.....] 50/100")
    assert "verified 40, failed 5, disputed 5" in line
    assert "6 running on 3 peers" in line
    assert line.endswith("5.0/s ETA 10 s")
    assert "on 1 peer |" in progress_line({**status, "peers_working": 1}, elapsed=10.0)


def test_no_eta_before_anything_is_decided_or_once_everything_is() -> None:
    start = {"total": 8, "verified": 0, "failed": 0, "disputed": 0, "running": 0}
    assert progress_line(start, elapsed=0.0).endswith("0.0/s ETA -")
    done = {"total": 8, "verified": 8, "failed": 0, "disputed": 0, "running": 0, "peers_working": 0}
    assert progress_line(done, elapsed=2.0).endswith("4.0/s ETA -")
