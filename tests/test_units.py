from __future__ import annotations

import pytest

from meshnode.errors import ConfigError
from meshnode.units import format_size, parse_count, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("64KiB", 65536), ("64MiB", 64 << 20), ("1.5GiB", 3 << 29), ("2MB", 2_000_000), ("10 kb", 10_000)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("30", 30.0), ("1.5s", 1.5), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0)])
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(("text", "value"), [("1000", 1000), ("5G", 5 * 10**9), ("1e9", 10**9), ("1_000", 1000)])
def test_counts(text: str, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("parse", [parse_size, parse_duration, parse_count])
@pytest.mark.parametrize("text", ["", "lots", "-5", "5 parsecs", "1e999x"])
def test_nonsense_is_a_clear_error(parse: object, text: str) -> None:
    with pytest.raises(ConfigError, match="not a"):
        parse(text)  # type: ignore[operator]


def test_format_size_round_trips() -> None:
    for n in (65536, 64 << 20, 1 << 30):
        assert parse_size(format_size(n)) == n
