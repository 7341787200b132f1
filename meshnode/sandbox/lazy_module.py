"""A module imported on its first use, for what an idle node never needs.

An idle node runs no module, yet importing wasmtime costs it 5 MiB of resident
memory (of about 93) and its engines 2 MiB more, measured on a lone node. The
sandbox names ``wasmtime`` through a ``LazyModule``: the import happens at the
first attribute read, in whichever thread makes it, under the import system's
own lock (``importlib.util.LazyLoader`` is not thread-safe in Python 3.11).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["LazyModule"]


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # from now on reads are plain attribute lookups
        return getattr(module, attr)
