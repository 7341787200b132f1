"""Logging for the node process: readable lines by default, JSON lines with ``--log-json``.

Every record goes through the one handler set here, libp2p's included: the
libp2p import resets its logger so that its records bypass this handler as
bare stderr lines, and ``net/libp2p_adapter.py`` undoes that. libp2p's own
records describe ordinary events (a failed TCP connect, a peer closing a stream
during shutdown), often with multi-line tracebacks, and meshnode reports the
ones that matter in its own words; so they are shown only at
``--log-level debug`` (CRITICAL ones always). Python warnings go through
logging too, so that under ``--log-json`` every line on stderr is JSON.

A JSON line carries the sentence (``msg``) and, for the records that matter to
a program reading the log, the fields its call site gave with ``extra=``: a
stable ``event`` name (``peer_joined``, ``job_finished``, ``message_dropped``,
...) and ``job``, ``peer``, ``subtask``, ``reason`` and figures where they apply.
The text format shows the sentence only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..net.libp2p_adapter import LibP2PNoiseFilter, route_libp2p_logging

__all__ = ["configure_logging"]

# What every LogRecord has: anything else on a record is a field its call site gave (``extra=``).
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# Loggers of the libraries under the node; shown only at debug level.
_NOISY = ("libp2p", "zeroconf", "multiaddr", "async_service", "hypercorn")


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        # a library's lines say whose they are: meshnode's own need no name
        source = "" if record.name.split(".")[0] in ("meshnode", "root") else f"[{record.name}] "
        text = f"{stamp}  {level}{source}{record.getMessage()}"
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
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    """Send every log record to stderr, one line each (libp2p's below CRITICAL only at debug level).

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``: the lowest level
            of meshnode's records shown; ``debug`` also shows every library's.
        json_lines: one JSON object per line instead of text.
    """
    debug = level == "debug"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _HumanFormatter())
    if not debug:
        handler.addFilter(LibP2PNoiseFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("meshnode").setLevel(level.upper())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.CRITICAL)
    # libp2p's logger is reset when libp2p is imported; the adapter re-applies this level then
    route_libp2p_logging(logging.DEBUG if debug else logging.CRITICAL)
    logging.captureWarnings(True)
