"""A submitted job's options: exactly the manifest's types and ranges, and one clear line when not."""

from __future__ import annotations

import math
from typing import Any

import pytest

from meshnode.api.job_options import job_options
from meshnode.core.manifest import Replication, TaskLimits
from meshnode.errors import WireError

GOOD: dict[str, Any] = {
    "replicas": 2, "quorum": 2, "max_replicas": 5,
    "fuel": 10**9, "memory": 1 << 24, "timeout_ms": 30_000, "max_output": 1 << 20,
}  # fmt: skip


def test_good_options_with_defaults() -> None:
    options = job_options(dict(GOOD))
    assert options.replication == Replication(2, 2, 5)
    assert options.limits == TaskLimits(10**9, 1 << 24, 30_000, 1 << 20)
    assert (options.entry, options.nan_canonical, options.label) == ("run", False, "")


def test_the_optional_ones() -> None:
    options = job_options({**GOOD, "entry": "main", "nan_canonical": True, "label": "tiles"})
    assert (options.entry, options.nan_canonical, options.label) == ("main", True, "tiles")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fuel": math.inf}, "options.fuel: expected an integer, got inf"),
        ({"memory": -math.inf}, "options.memory: expected an integer, got -inf"),
        ({"timeout_ms": math.nan}, "options.timeout_ms: expected an integer, got nan"),
        ({"replicas": 2.0}, "options.replicas: expected an integer, got 2.0"),
        ({"fuel": "1000"}, "options.fuel: expected an integer, got str"),
        ({"quorum": True}, "options.quorum: expected an integer, got bool"),
        ({"max_output": None}, "options.max_output: expected an integer, got NoneType"),
        ({"fuel": 0}, "options.fuel: 0 is outside 1..4611686018427387904"),
        ({"max_output": -1}, "options.max_output: -1 is outside 0..1073741824"),
        ({"replicas": 33}, "options.replicas: 33 is outside 1..32"),
        ({"memory": 2**63}, "options.memory: 9223372036854775808 is outside 65536..4294967296"),
        ({"fuel": 10**100_000}, "options.fuel: a 332193-bit number is outside 1..4611686018427387904"),
        ({"fuel": -(10**100_000)}, "options.fuel: a 332193-bit number is outside"),
        ({"nan_canonical": 1}, "options.nan_canonical: expected true or false, got int"),
        ({"nan_canonical": "yes"}, "options.nan_canonical: expected true or false, got str"),
        ({"entry": "not a name"}, "options.entry: 'not a name' does not match"),
        ({"entry": b"run"}, "options.entry: expected text, got bytes"),
        ({"label": "x" * 201}, "options.label: text longer than 200 characters"),
        ({"quorum": 3, "max_replicas": 2, "replicas": 2}, "options: quorum 3 can never be met with at most 2 replicas"),
        ({"fule": 5}, "options: unknown option 'fule'"),
        ({7: 5}, "options: unknown option '7'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(change: dict[Any, Any], message: str) -> None:
    with pytest.raises(WireError) as caught:
        job_options({**GOOD, **change})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_limit_and_replication_option_is_required(name: str) -> None:
    with pytest.raises(WireError, match=f"options: missing '{name}'"):
        job_options({k: v for k, v in GOOD.items() if k != name})
