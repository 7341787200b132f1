"""Trio wraps every error that leaves a nursery in an ExceptionGroup; callers of our
public API should see the one ``MeshError`` that actually happened."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import MeshError

__all__ = ["leaves", "raise_mesh_error_plainly"]


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


@contextmanager
def raise_mesh_error_plainly() -> Iterator[None]:
    """Re-raise a group whose only real error is a MeshError as that MeshError."""
    try:
        yield
    except BaseExceptionGroup as group:
        real = [e for e in leaves(group) if not _cancelled(e)]
        if len(real) == 1 and isinstance(real[0], MeshError):
            raise real[0] from None
        raise


def _cancelled(exc: BaseException) -> bool:
    """A ``trio.Cancelled``; trio is not imported for this (a program that never imported it raised none)."""
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(exc, trio.Cancelled)
