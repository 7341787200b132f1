"""What every simulated peer shares: the clock, the network, gossip, the checker, the seed's random source.

The peers themselves are numbered 0 .. N-1; ``ids`` holds each one's peer ID
(derived from the number, so a run never depends on key generation).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Never, NoReturn

from ..core.peer_id import PeerId
from ..core.presence import Presence, heartbeat_interval, next_seq
from .behaviour import ENGINE, Truth, truth
from .clock import Clock
from .directory import Directory
from .invariants import Checker
from .network import Network
from .report import Counters
from .scenario import Plan, Scenario
from .verification import Verification

__all__ = ["UNIX_EPOCH_MS", "World", "peer_ids", "unknown"]

UNIX_EPOCH_MS: Final = 1_800_000_000_000  # what virtual time 0 is on the peers' unix clocks
PRESENCE_INTERVAL: Final = 30.0  # the node's default base heartbeat (config.presence_interval)


def peer_ids(count: int) -> list[PeerId]:
    return [PeerId.from_public_key(hashlib.sha256(b"meshnode-sim-peer-%d" % i).digest()) for i in range(count)]


def unknown(instruction: Never) -> NoReturn:
    """A driver met an instruction it does not know: the core grew one the simulator must learn to carry out."""
    raise TypeError(f"the simulator does not carry out {type(instruction).__name__}: {instruction!r}")


@dataclass(slots=True, eq=False)
class World:
    seed: int
    scenario: Scenario
    plan: Plan
    clock: Clock
    rng: random.Random
    net: Network
    directory: Directory
    checker: Checker
    verification: Verification
    ids: list[PeerId]
    counters: Counters = field(default_factory=Counters)
    index_of: dict[PeerId, int] = field(default_factory=dict)
    job_owner: dict[bytes, int] = field(default_factory=dict)  # job ID -> its owner's number
    seqs: list[int] = field(default_factory=list)  # each peer's last presence sequence number
    job_ended: Callable[[bytes], None] = lambda job_id: None  # a job finished or was cancelled
    id_rank: dict[int, int] = field(default_factory=dict)  # each peer's place in the order of peer IDs
    last_crash: dict[int, float] = field(default_factory=dict)  # when the plan crashes each peer the last time
    _truths: dict[tuple[bytes, int], Truth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index_of = {p: i for i, p in enumerate(self.ids)}
        self.last_crash = {c.peer: c.at for c in self.plan.crashes}  # crashes are sorted by time
        self.id_rank = {self.index_of[p]: k for k, p in enumerate(sorted(self.ids, key=PeerId.to_bytes))}
        self.seqs = [0] * len(self.ids)

    def may_crash(self, peer: int) -> bool:
        """Whether the plan crashes ``peer`` from now on."""
        return self.last_crash.get(peer, -1.0) >= self.clock.now

    def unix_ms(self) -> int:
        return UNIX_EPOCH_MS + int(self.clock.now * 1000)

    def truth(self, job_id: bytes, index: int) -> Truth:
        """The true result of a subtask (a hash: kept, as every run and claim asks for it)."""
        key = (job_id, index)
        found = self._truths.get(key)
        if found is None:
            found = self._truths[key] = truth(job_id, index, self.scenario.task_errors)
        return found

    def presence(self, peer: int, surplus: int, idle: int) -> Presence:
        """A new presence of ``peer`` (each one newer than the last, as a node's are)."""
        self.seqs[peer] = next_seq(self.seqs[peer], self.unix_ms())
        slots = self.plan.profiles[peer].slots
        return Presence(
            peer_id=self.ids[peer], seq=self.seqs[peer],
            interval_ms=round(heartbeat_interval(PRESENCE_INTERVAL, len(self.ids)) * 1000),
            addrs=(f"/ip4/10.{peer >> 16 & 255}.{peer >> 8 & 255}.{peer & 255}/tcp/7350",), version="sim",
            engine=ENGINE, runtimes=("wasm",), slots=slots, idle=min(idle, slots), surplus=min(surplus, 2**31),
            load1=0.0, mem_free=0, mem_total=0, cpu="simulated", gpus=(),
        )  # fmt: skip
