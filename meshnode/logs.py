"""Logging for the node process: readable lines by default, JSON lines with ``--log-json``.

libp2p's own WARNING/ERROR records describe ordinary events (a peer closing a
stream during shutdown) with multi-line tracebacks; they are shown only at
``--log-level debug`` (see net/libp2p_adapter.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .net.libp2p_adapter import LibP2PNoiseFilter

__all__ = ["configure_logging"]


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{stamp}  {level}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    """Send every log record to stderr, one line each; libp2p's noise only at debug level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _HumanFormatter())
    if level != "debug":
        handler.addFilter(LibP2PNoiseFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.getLogger("meshnode").setLevel(level.upper())
    if level != "debug":
        for noisy in ("libp2p", "zeroconf", "multiaddr", "async_service", "hypercorn"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
