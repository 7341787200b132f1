"""The node's Prometheus metrics, served at ``/metrics`` on the local API.

Each node has a registry of its own, never prometheus_client's global one: several
nodes can run in one process (the tests run them so), and each must count its own.

Two kinds of figures, so that an idle node spends nothing on them:

* events are counted where they happen, one line each: runs in the executor,
  verdicts in the jobs' driver, steals and refusals in the thief and the owner's
  job service (``NodeMetrics``'s counters and histograms);
* what the node keeps anyway (the peer table, dropped messages, bytes per
  protocol, gossip received, its slots) is read only when Prometheus scrapes,
  by a collector (``_NodeState``) that turns ``NodeReadings`` into metrics.

Names follow Prometheus's conventions: ``meshnode_`` first, counters end in
``_total``, and units are base units (seconds, bytes).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["NodeMetrics", "NodeReadings"]

# A subtask runs for 50 us (a trivial one) up to the default limit of 10 minutes.
RUN_BUCKETS: Final = (0.0005, 0.002, 0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0)
JOB_BUCKETS: Final = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
PEER_STATES: Final = ("alive", "stale", "gone")
VERDICTS: Final = ("verified", "failed", "disputed")


@dataclass(frozen=True, slots=True)
class NodeReadings:
    """What the node keeps anyway, read at each scrape."""

    peers: Mapping[str, int]  # by state: alive, stale, gone
    dropped: Mapping[str, int]  # messages dropped, by reason (GET /v1/node's dropped_messages)
    traffic: Mapping[tuple[str, str], int]  # bytes by (protocol, "sent" or "received")
    gossip_received: int  # gossip messages that reached the validator, valid or not
    slots: int
    idle: int
    identity: Mapping[str, str]  # peer_id, version, engine


class NodeMetrics:
    """One node's metrics.

    Args:
        read: what the node keeps, read at each scrape (None: only the counted events).
    """

    def __init__(self, read: Callable[[], NodeReadings] | None = None) -> None:
        r = self.registry = CollectorRegistry()
        self.subtasks_run = Counter(
            "meshnode_subtasks_run", "Subtasks run in this node's sandbox, by outcome (ok or the failure code); "
            "results answered from the result cache are not counted", ["outcome"], registry=r,
        )  # fmt: skip
        self.verdicts = {
            kind: Counter(f"meshnode_subtasks_{kind}", f"Subtasks of this node's jobs {kind} (journalled verdicts)",
                          registry=r)
            for kind in VERDICTS
        }  # fmt: skip
        self.subtasks_refused = Counter(
            "meshnode_subtasks_refused", "Replicas of other owners' jobs this node refused to run", registry=r
        )
        self.lease_renewals_failed = Counter(
            "meshnode_lease_renewals_failed", "Lease renewals of other owners' work that this node sent and no "
            "owner answered (the owner unreachable or too busy): the leases may lapse", registry=r,
        )  # fmt: skip
        self.fuel = Counter("meshnode_fuel_consumed", "Fuel used by the subtasks run on this node", registry=r)
        self.sandbox_seconds = Counter(
            "meshnode_sandbox_seconds", "Wall time of the subtasks run on this node, in the sandbox", registry=r
        )
        self.run_seconds = Histogram(
            "meshnode_subtask_run_seconds", "Wall time of each subtask run on this node", buckets=RUN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.steal_requests = Counter(
            "meshnode_steal_requests", "Steal requests: sent by this node (role thief), answered by it (role owner)",
            ["role"], registry=r,
        )  # fmt: skip
        self.steal_granted = Counter(
            "meshnode_steal_granted_replicas", "Replicas granted by steals: to this node (role thief), "
            "by it (role owner)", ["role"], registry=r,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "meshnode_job_duration_seconds", "Wall time of this node's jobs, from submission (or the node's restart) "
            "to their end, by outcome (finished, cancelled)", ["outcome"], buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        ProcessCollector(registry=r)  # the process's CPU seconds, memory, open files: read from /proc at each scrape
        if read is not None:
            r.register(_NodeState(read))

    def ran(self, runs: Iterable[tuple[str, int, float]]) -> None:
        """Subtasks run here: (outcome, fuel, seconds) of each. One increment per outcome, not per run:
        a batch of trivial subtasks costs its runs a microsecond each here."""
        outcomes: Tally[str] = Tally()
        fuel, seconds = 0, 0.0
        for outcome, used, took in runs:
            outcomes[outcome] += 1
            fuel, seconds = fuel + used, seconds + took
            self.run_seconds.observe(took)
        for outcome, n in outcomes.items():
            self.subtasks_run.labels(outcome).inc(n)
        if outcomes:
            self.fuel.inc(fuel)
            self.sandbox_seconds.inc(seconds)

    def stole(self, role: str, granted: int) -> None:
        """A steal request sent (role ``thief``) or answered (role ``owner``), and the replicas it granted."""
        self.steal_requests.labels(role).inc()
        self.steal_granted.labels(role).inc(granted)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics as a scrape's body, in the format the ``Accept`` header asks for, and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class _NodeState:
    """Turns the node's readings into metrics when Prometheus scrapes, and never otherwise."""

    def __init__(self, read: Callable[[], NodeReadings]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        now = self._read()
        peers = GaugeMetricFamily("meshnode_peers", "Peers in this node's table, by state", labels=["state"])
        for state in PEER_STATES:
            peers.add_metric([state], now.peers.get(state, 0))
        yield peers
        dropped = CounterMetricFamily(
            "meshnode_messages_dropped", "Messages and streams dropped as invalid, by reason (as dropped_messages "
            "in GET /v1/node: gossip validation, the peer table, <protocol>_<reason> for refused streams)",
            labels=["reason"],
        )  # fmt: skip
        for reason, n in sorted(now.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily(
            "meshnode_gossip_messages_received", "Gossip messages that reached this node's validator, valid or not",
            value=now.gossip_received,
        )  # fmt: skip
        for direction in ("sent", "received"):
            family = CounterMetricFamily(
                f"meshnode_{direction}_bytes", f"Bytes {direction} by protocol: every byte of a stream protocol's "
                "streams; for gossip, the presence messages published and first received (not libp2p's forwarding)",
                labels=["protocol"],
            )  # fmt: skip
            for (protocol, way), n in sorted(now.traffic.items()):
                if way == direction:
                    family.add_metric([protocol], n)
            yield family
        yield GaugeMetricFamily("meshnode_slots", "Subtasks this node runs at once", value=now.slots)
        yield GaugeMetricFamily("meshnode_idle_slots", "Slots running nothing now", value=now.idle)
        keys = sorted(now.identity)
        info = GaugeMetricFamily("meshnode_node_info", "This node: its peer ID, version and engine", labels=keys)
        info.add_metric([now.identity[k] for k in keys], 1)
        yield info
