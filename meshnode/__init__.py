"""meshnode: a peer-to-peer compute mesh for WebAssembly tasks."""

from __future__ import annotations

__version__ = "0.1.0"
