"""Per-peer reputation: what this node has seen each peer do with the work it was given.

Theory of operation:

Every verified subtask says, of each executor that reported on it, whether it
agreed with the quorum, disagreed (claimed another output, or the same output
with a fuel count its engine peers did not reproduce), or failed (reported a
different failure code). A replica whose lease lapsed, or whose holder left, is
a failure too: the peer took work and never answered.

    counter        raised by                               effect
    -------------  --------------------------------------  --------------------------------
    agreements     agreeing with a verified quorum          score up
    disagreements  disagreeing with a verified quorum       score down hard; barred for good
    failures       a failed run, a lapsed lease, leaving    score down gently

A peer caught disagreeing once is *barred from quorum* on this node's jobs for
good: one forged output is enough to distrust its signature on any other. It
may still run work (its claims are recorded and shown in disputes), but it can
never help a candidate reach quorum. Failures do not bar: timeouts and crashes
happen to honest machines.

The score is a smoothed success rate in (0, 1): a newcomer starts at 1/2, a long
clean record approaches 1, and a disagreement weighs as much as
``DISAGREEMENT_WEIGHT`` failures. ``rank`` orders peers for "hand work to and
steal from good peers first": not barred before barred, then by score, then by
peer ID so that the order is deterministic.

The whole record is a plain dict (``to_dict`` / ``from_dict``) for the node to
persist; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from ..errors import WireError
from .peer_id import PeerId
from .verify import Verified

__all__ = ["DISAGREEMENT_WEIGHT", "PeerReputation", "Reputation"]

DISAGREEMENT_WEIGHT: Final = 10
_FORMAT: Final = 1
_FIELDS: Final = ("agreements", "disagreements", "failures")


@dataclass(slots=True)
class PeerReputation:
    """The record of one peer."""

    agreements: int = 0
    disagreements: int = 0
    failures: int = 0

    @property
    def barred_from_quorum(self) -> bool:
        return self.disagreements > 0

    @property
    def score(self) -> float:
        """A smoothed success rate: (agreements + 1) / (agreements + 2 + weighted faults)."""
        faults = DISAGREEMENT_WEIGHT * self.disagreements + self.failures
        return (self.agreements + 1) / (self.agreements + 2 + faults)


class Reputation:
    """What this node knows of every peer's record. Unknown peers have a clean, empty one."""

    __slots__ = ("_peers",)

    def __init__(self) -> None:
        self._peers: dict[PeerId, PeerReputation] = {}

    def __getitem__(self, peer: PeerId) -> PeerReputation:
        """The peer's record (a fresh copy for a peer never seen: reading does not create one)."""
        r = self._peers.get(peer)
        return PeerReputation() if r is None else PeerReputation(r.agreements, r.disagreements, r.failures)

    def __iter__(self) -> Iterator[PeerId]:
        return iter(list(self._peers))

    def __len__(self) -> int:
        return len(self._peers)

    def _record(self, peer: PeerId) -> PeerReputation:
        return self._peers.setdefault(peer, PeerReputation())

    # --- events ------------------------------------------------------------------------

    def record_verdict(self, verdict: Verified) -> None:
        """Credit and blame every executor of a verified subtask."""
        for peer in verdict.agreeing:
            self._record(peer).agreements += 1
        for peer in verdict.disagreeing:
            self._record(peer).disagreements += 1
        for peer in verdict.failed:
            self._record(peer).failures += 1

    def record_failure(self, peer: PeerId) -> None:
        """The peer took a replica and did not answer before its lease lapsed (or it left)."""
        self._record(peer).failures += 1

    # --- queries -----------------------------------------------------------------------

    def barred_from_quorum(self, peer: PeerId) -> bool:
        """True once the peer has disagreed with a verified quorum."""
        record = self._peers.get(peer)
        return record is not None and record.barred_from_quorum

    def barred(self) -> frozenset[PeerId]:
        """Every peer barred from quorum: the ``untrusted`` set a job's verifier needs."""
        return frozenset(p for p, r in self._peers.items() if r.barred_from_quorum)

    def score(self, peer: PeerId) -> float:
        return self[peer].score

    def rank(self, peers: Iterable[PeerId]) -> list[PeerId]:
        """``peers`` best first: not barred before barred, then higher score, then by peer ID."""
        return sorted(set(peers), key=lambda p: (self.barred_from_quorum(p), -self.score(p), p.to_bytes()))

    # --- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        """A plain, JSON-compatible dict of every record."""
        return {
            "format": _FORMAT,
            "peers": {
                str(peer): {name: getattr(record, name) for name in _FIELDS}
                for peer, record in sorted(self._peers.items(), key=lambda item: item[0].to_bytes())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Reputation:
        """Rebuild from ``to_dict``'s output.

        Raises:
            ValueError: the dict is not one ``to_dict`` wrote (wrong format, a bad peer ID,
                a missing or negative counter). The caller should log it and start afresh.
        """
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown reputation format {str(data.get('format'))[:20]!r}")
        peers = data.get("peers")
        if not isinstance(peers, Mapping):
            raise ValueError("reputation: 'peers' must be a map")
        out = cls()
        for text, fields in peers.items():
            try:
                peer = PeerId.from_base58(text) if isinstance(text, str) else None
            except WireError as exc:
                raise ValueError(f"reputation: {exc}") from None
            if peer is None or not isinstance(fields, Mapping):
                raise ValueError("reputation: each peer must map a peer ID to its counters")
            counts: list[int] = []
            for name in _FIELDS:
                n = fields.get(name)
                if type(n) is not int or n < 0:
                    raise ValueError(f"reputation of {text}: {name} must be a non-negative integer")
                counts.append(n)
            out._peers[peer] = PeerReputation(*counts)
        return out
