"""Sizes and durations as people write them on the command line: ``64MiB``, ``1.5GB``, ``30s``."""

from __future__ import annotations

import re
from typing import Final

from .errors import ConfigError

__all__ = ["format_size", "parse_count", "parse_duration", "parse_size"]

_SIZE_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS: Final = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER_UNIT: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864. Plain numbers are bytes; KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024.

    Raises:
        ConfigError: not a size.
    """
    m = _NUMBER_UNIT.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"{text!r} is not a size (examples: 4096, 64KiB, 256MiB, 1GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """``"30s"`` -> 30.0, ``"250ms"`` -> 0.25, ``"2m"`` -> 120.0; plain numbers are seconds.

    Raises:
        ConfigError: not a duration.
    """
    m = _NUMBER_UNIT.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _DURATION_UNITS:
        raise ConfigError(f"{text!r} is not a duration (examples: 30, 1.5s, 250ms, 2m)")
    return float(m.group(1)) * _DURATION_UNITS[unit]


def format_size(n: int) -> str:
    """67108864 -> ``"64MiB"``, for messages and ``--help``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B" if n < 1024 else f"{n / 1024:.1f}KiB"


_COUNT_UNITS: Final = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_count(text: str) -> int:
    """``"5G"`` -> 5000000000, ``"1e9"`` -> 1000000000, ``"1_000"`` -> 1000 (for fuel budgets).

    Raises:
        ConfigError: not a positive whole number.
    """
    cleaned = text.strip().replace("_", "")
    m = _NUMBER_UNIT.fullmatch(cleaned)
    try:
        if m is not None and m.group(2).lower() in _COUNT_UNITS:
            value = float(m.group(1)) * _COUNT_UNITS[m.group(2).lower()]
        else:
            value = float(cleaned)
    except ValueError:
        value = -1.0
    if not (value >= 1 and value == int(value)):
        raise ConfigError(f"{text!r} is not a positive whole number (examples: 1000000, 5G, 1e9)")
    return int(value)
