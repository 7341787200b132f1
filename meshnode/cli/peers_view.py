"""The table ``python -m meshnode peers`` prints.

Input is the node's peer dicts as served by ``GET /v1/peers``; any field may be
None (not known yet), which shows as ``-``. Plain aligned columns: the output
is read by people and pasted into bug reports, so no colours and no box drawing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

__all__ = ["format_dropped", "format_peer_table", "short_peer_id"]

UNKNOWN: Final = "-"
EMPTY_MESSAGE: Final = "no peers yet"

# alive first: the peers that can take work right now are the ones people look for
_STATE_ORDER: Final = {"alive": 0, "stale": 1, "gone": 2}


def short_peer_id(peer_id: str, head: int = 8, tail: int = 6) -> str:
    """``12D3KooWAbc…uvwxyz``: long enough to tell peers apart, short enough for a table."""
    if len(peer_id) <= head + tail + 1:
        return peer_id
    return f"{peer_id[:head]}…{peer_id[-tail:]}"


def _size(n: int) -> str:
    """3435973836 -> ``"3.2 GiB"``, 734003200 -> ``"700 MiB"`` (about three significant digits)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n} B"
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _rtt(ms: float) -> str:
    """0.7 -> ``"0.7 ms"``, 123.4 -> ``"123 ms"``, 2500 -> ``"2.5 s"``."""
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _ago(seconds: float) -> str:
    """1.2 -> ``"1.2 s ago"``, 75 -> ``"1 min ago"``, 7200 -> ``"2.0 h ago"``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s ago"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _first_addr(addrs: Sequence[str] | None) -> str:
    return addrs[0] if addrs else UNKNOWN


def _shown(value: Any, fmt: Callable[[Any], str] = str) -> str:
    return UNKNOWN if value is None else fmt(value)


# (header, right-aligned?, cell) for each column, in order
_COLUMNS: Final[tuple[tuple[str, bool, Callable[[dict[str, Any]], str]], ...]] = (
    ("PEER", False, lambda p: _shown(p.get("peer_id"), short_peer_id)),
    ("STATE", False, lambda p: _shown(p.get("state"))),
    ("ADDRESS", False, lambda p: _first_addr(p.get("addrs"))),
    ("SLOTS", True, lambda p: _shown(p.get("slots"))),
    ("IDLE", True, lambda p: _shown(p.get("idle"))),
    ("LOAD", True, lambda p: _shown(p.get("load1"), lambda v: f"{v:.2f}")),
    ("FREE MEM", True, lambda p: _shown(p.get("mem_free"), _size)),
    ("RTT", True, lambda p: _shown(p.get("rtt_ms"), _rtt)),
    ("LAST SEEN", True, lambda p: _shown(p.get("last_seen_s"), _ago)),
    ("AGREE/DISAGREE/FAIL", True, lambda p: _shown(p.get("reputation"), _reputation)),
)


def _reputation(r: Any) -> str:
    """agreements/disagreements/failures, with "barred" for a peer caught disagreeing."""
    if not isinstance(r, dict):
        return "-"
    text = f"{r.get('agreements', 0)}/{r.get('disagreements', 0)}/{r.get('failures', 0)}"
    return f"{text} barred" if r.get("barred") else text


def _sort_key(peer: dict[str, Any]) -> tuple[int, str]:
    return _STATE_ORDER.get(peer.get("state") or "", len(_STATE_ORDER)), str(peer.get("peer_id") or "")


def format_peer_table(peers: Sequence[dict[str, Any]]) -> str:
    """The peers as an aligned text table, alive peers first, or a one-line message when there are none.

    Args:
        peers: peer dicts as served by ``GET /v1/peers`` (fields may be None).

    Returns:
        The table, lines joined by newlines, without a trailing newline.
    """
    if not peers:
        return EMPTY_MESSAGE
    rows = [[cell(peer) for _, _, cell in _COLUMNS] for peer in sorted(peers, key=_sort_key)]
    headers = [header for header, _, _ in _COLUMNS]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(_COLUMNS))]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right, _) in zip(cells, widths, _COLUMNS, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join(line(row) for row in [headers, *rows])


def format_dropped(dropped: Any) -> str | None:
    """The node's dropped-message counters as one line, most frequent first; None when there are none.

    Args:
        dropped: ``dropped_messages`` from ``GET /v1/node``: counts by reason.

    Returns:
        ``"dropped messages: jobs_malformed 3, old_seq 1"``, or None.
    """
    if not isinstance(dropped, dict):
        return None
    counts = [(str(k), v) for k, v in dropped.items() if isinstance(v, int) and v > 0]
    counts.sort(key=lambda kv: (-kv[1], kv[0]))
    if not counts:
        return None
    return "dropped messages: " + ", ".join(f"{reason} {count}" for reason, count in counts)
