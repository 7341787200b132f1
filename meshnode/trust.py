"""Which job owners this node runs work for: ``--trust any`` or ``--trust FILE`` (one peer ID a line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core.peer_id import PeerId
from .errors import ConfigError, WireError

__all__ = ["TrustPolicy"]


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """``owners`` is None for "any owner"; otherwise the owners whose subtasks this node runs."""

    owners: frozenset[PeerId] | None = None

    @classmethod
    def from_flag(cls, value: str) -> TrustPolicy:
        """``any``, or a file of owner peer IDs (blank lines and ``#`` comments allowed).

        Raises:
            ConfigError: the file cannot be read, or a line is not a peer ID (the message names it).
        """
        if value == "any":
            return cls(None)
        path = Path(value)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--trust {value}: cannot read it ({exc})") from exc
        owners = set()
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                owners.add(PeerId.from_base58(text))
            except WireError:
                raise ConfigError(f"--trust {value}, line {number}: {text[:60]!r} is not a peer ID") from None
        return cls(frozenset(owners))

    def trusts(self, owner: PeerId) -> bool:
        return self.owners is None or owner in self.owners
