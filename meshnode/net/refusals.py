"""Refused inbound streams and frames: counted by reason, and logged without letting a peer flood the log.

Anything on the LAN can open a stream to a node's protocols and send junk. Each
refusal is counted in the node's dropped-message counters (``GET /v1/node``
shows them as ``dropped_messages``, ``meshnode peers`` under its table) under a
key ``<protocol>_<reason>``, and logged with a one-line reason: the first
refusal in a minute at warning level (so an operator hears of it), the rest at
debug level only (so a peer sending junk in a loop writes one line a minute,
not one per stream).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

from ..core.peer_id import PeerId

__all__ = ["WARN_EVERY", "Refusals"]

log = logging.getLogger(__name__)

WARN_EVERY: Final = 60.0  # seconds between two refusals logged at warning level, per protocol


class Refusals:
    """Counts and logs what one protocol's server refuses.

    Args:
        dropped: the node's counters, by reason (shared with its other receivers).
        protocol: the short name the keys start with (``jobs``, ``blob``, ...).
        what: what is refused, for the log (default: "a <protocol> stream").
        clock: seconds on a monotonic clock (a parameter so tests can move it).
    """

    def __init__(
        self, dropped: Counter[str], protocol: str, *, what: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dropped = dropped
        self.protocol = protocol
        self.what = what or f"a {protocol} stream"
        self._clock = clock
        self._last_warning: float | None = None

    def refuse(self, reason: str, peer: PeerId | str, detail: str) -> None:
        """Count a refusal as ``<protocol>_<reason>`` and log ``detail`` (cut to one line)."""
        key = f"{self.protocol}_{reason}"
        self.dropped[key] += 1
        text = detail.strip().splitlines()[0][:300] if detail.strip() else reason.replace("_", " ")
        now = self._clock()
        fields = {"event": "message_dropped", "peer": str(peer), "protocol": self.protocol, "reason": key}
        if self._last_warning is None or now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("refused %s from %s: %s (%s; any more within %.0f s are logged at debug level only)",
                        self.what, peer, text, key, WARN_EVERY, extra=fields)  # fmt: skip
        else:
            log.debug("refused %s from %s: %s (%s)", self.what, peer, text, key, extra=fields)
