"""``NodeMetrics`` alone: each node counts in its own registry, runs are counted per outcome, and what the
node keeps is read only when scraped."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from meshnode.node.metrics import NodeMetrics, NodeReadings


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    families = text_string_to_metric_families(body.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_two_nodes_in_one_process_count_apart() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.ran([("ok", 100, 0.001), ("ok", 50, 0.002), ("trap", 7, 0.0)])
    a.verdicts["verified"].inc()
    b.stole("thief", 3)
    got_a, got_b = samples(a), samples(b)
    assert got_a[("meshnode_subtasks_run_total", (("outcome", "ok"),))] == 2
    assert got_a[("meshnode_subtasks_run_total", (("outcome", "trap"),))] == 1
    assert got_a[("meshnode_fuel_consumed_total", ())] == 157
    assert got_a[("meshnode_subtask_run_seconds_count", ())] == 3
    assert got_a[("meshnode_subtasks_verified_total", ())] == 1
    assert ("meshnode_subtasks_run_total", (("outcome", "ok"),)) not in got_b
    assert got_b[("meshnode_subtasks_verified_total", ())] == 0
    assert got_b[("meshnode_steal_requests_total", (("role", "thief"),))] == 1
    assert got_b[("meshnode_steal_granted_replicas_total", (("role", "thief"),))] == 3
    assert ("meshnode_steal_requests_total", (("role", "thief"),)) not in got_a


def test_the_node_state_is_read_at_each_scrape_and_only_then() -> None:
    reads: list[int] = []

    def read() -> NodeReadings:
        reads.append(1)
        return NodeReadings(
            peers={"alive": 2, "gone": 1}, dropped={"jobs_malformed": 4, "old_seq": 1},
            traffic={("jobs", "sent"): 1000, ("jobs", "received"): 800, ("gossip", "sent"): 90},
            gossip_received=12, slots=4, idle=3, identity={"peer_id": "12D3KooWX", "version": "0.1.0", "engine": "e"},
        )  # fmt: skip

    metrics = NodeMetrics(read)
    metrics.ran([("ok", 1, 0.5)])
    assert not reads  # nothing is read until Prometheus asks
    got = samples(metrics)
    assert len(reads) == 1
    assert got[("meshnode_peers", (("state", "alive"),))] == 2
    assert got[("meshnode_peers", (("state", "stale"),))] == 0  # every state, even with no peer in it
    assert got[("meshnode_messages_dropped_total", (("reason", "jobs_malformed"),))] == 4
    assert got[("meshnode_sent_bytes_total", (("protocol", "jobs"),))] == 1000
    assert got[("meshnode_received_bytes_total", (("protocol", "jobs"),))] == 800
    assert ("meshnode_received_bytes_total", (("protocol", "gossip"),)) not in got
    assert got[("meshnode_gossip_messages_received_total", ())] == 12
    assert (got[("meshnode_slots", ())], got[("meshnode_idle_slots", ())]) == (4, 3)
    assert got[("meshnode_node_info", (("engine", "e"), ("peer_id", "12D3KooWX"), ("version", "0.1.0")))] == 1


def test_a_scraper_asking_for_openmetrics_gets_it() -> None:
    body, content_type = NodeMetrics().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
