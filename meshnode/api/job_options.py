"""The options of a job submitted through the API, checked strictly before anything runs.

Every value is checked against the same ranges the wire enforces on the signed
manifest (``core/manifest.py``), with no conversion: an integer option takes an
integer (not a float, a bool or text), a flag takes a bool. A bad value is a
``WireError`` naming the option, in one line, for a 400 answer; before this
check, ``Infinity`` for a limit reached ``int()`` deep in the handler and came
back as a 500 with a traceback.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from ..core.manifest import JobManifest, JobOptions, Replication, TaskLimits
from ..core.python_rows import MAX_ROWS_PER_SUBTASK
from ..core.wire import Bool, Int, Spec, Str
from ..errors import WireError

__all__ = ["job_options"]


def _specs(cls: Any, *names: str) -> dict[str, Spec]:
    """The wire specs of fields of ``cls`` (all of them when no names are given)."""
    specs = {f.name: f.metadata["wire"] for f in dataclasses.fields(cls)}
    return {name: specs[name] for name in names} if names else specs


_REQUIRED: Final = {**_specs(Replication), **_specs(TaskLimits)}
_OPTIONAL: Final[dict[str, tuple[Spec, Any]]] = {
    "entry": (_specs(JobManifest, "entry")["entry"], "run"),
    "nan_canonical": (Bool(), False),
    "label": (Str(200), ""),
    "rows_per_subtask": (Int(0, MAX_ROWS_PER_SUBTASK), 0),  # a Python script's job: rows per subtask
    "verify": (Str(8, pattern="fixed|adaptive"), "fixed"),  # adaptive replication (core/adaptive.py)
}
# A bigger integer is out of every range above; refusing it by size keeps the
# message short (a bignum can have millions of digits, too many even to print).
_MAX_BITS: Final = 64


def job_options(raw: dict[Any, Any]) -> JobOptions:
    """The ``JobOptions`` that the options map of a job body asks for.

    Args:
        raw: the ``options`` map as decoded from CBOR.

    Returns:
        The options, every value within the manifest's ranges.

    Raises:
        WireError: an unknown or missing option, a value of the wrong type
            (including a float where an integer belongs, NaN or infinity), out
            of range, or a replication policy that can never verify.
    """
    unknown = [key for key in raw if key not in _REQUIRED and key not in _OPTIONAL]
    if unknown:
        raise WireError(f"options: unknown option {str(unknown[0])[:40]!r}")
    values = {}
    for name, spec in _REQUIRED.items():
        if name not in raw:
            raise WireError(f"options: missing {name!r}")
        values[name] = _checked(spec, raw[name], name)
    for name, (spec, default) in _OPTIONAL.items():
        values[name] = _checked(spec, raw[name], name) if name in raw else default
    replication = Replication(values["replicas"], values["quorum"], values["max_replicas"])
    problem = replication.check()
    if not problem and values["verify"] == "adaptive" and replication.quorum < 2:
        problem = "adaptive replication needs a quorum of 2 or more, for the subtasks it checks"
    if problem:
        raise WireError(f"options: {problem}")
    limits = TaskLimits(values["fuel"], values["memory"], values["timeout_ms"], values["max_output"])
    return JobOptions(
        limits=limits, replication=replication, entry=values["entry"],
        nan_canonical=values["nan_canonical"], label=values["label"], rows_per_subtask=values["rows_per_subtask"],
        verify=values["verify"],
    )  # fmt: skip


def _checked(spec: Spec, value: Any, name: str) -> Any:
    """``value`` as ``spec`` loads it, with short messages for the values people actually send by mistake."""
    path = f"options.{name}"
    if isinstance(spec, Int):
        if type(value) is float:  # Int.load would only say "got float"; say which, e.g. inf or nan
            raise WireError(f"{path}: expected an integer, got {value!r}")
        if type(value) is int and value.bit_length() > _MAX_BITS:
            raise WireError(f"{path}: a {value.bit_length()}-bit number is outside {spec.lo}..{spec.hi}")
    return spec.load(value, path)
