"""``/metrics`` on real nodes, scraped as Prometheus scrapes it: counters that follow a two-node job as it
runs, a format ``promtool check metrics`` accepts, and the API token (or ``--metrics-public``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.sandbox.modules import RETURN_INPUT, module

from ..waiting import JOB, MEET, STEP
from .nodes import NodeProcess, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .promtool import promtool  # noqa: F401  (a fixture)
from .test_node_cli import LOOPBACK

# Each subtask counts down from 40 million (about 30 ms on an idle machine) and answers its input:
# a job of SUBTASKS runs for about two seconds on the two nodes, long enough to be seen running.
SPIN = module(f"""(func (export "run") (param i32 i32) (result i64) (local $i i32)
  (local.set $i (i32.const 40000000))
  (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $l (local.get $i)))
  {RETURN_INPUT})""")  # fmt: skip
SUBTASKS = 48

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(info: dict[str, object], path: str, *, token: bool = True) -> httpx.Response:
    """``GET path`` from a node's API, with its token or without, as a Prometheus on the machine would."""
    headers = {"Authorization": f"Bearer {info['token']}"} if token else {}
    return httpx.get(f"{info['url']}{path}", headers=headers, trust_env=False, timeout=STEP)


def scrape(info: dict[str, object], *, token: bool = True) -> tuple[Samples, str]:
    """A node's metrics: every sample by name and labels, and the text as served."""
    response = get(info, "/metrics", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }  # fmt: skip
    return samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_follow_a_two_node_job_and_pass_promtool(
    tmp_path: Path, nodes: list[NodeProcess], promtool: Path
) -> None:
    a = NodeProcess(tmp_path / "a", [*LOOPBACK, "--slots", "1"])
    nodes.append(a)
    a_info = a.wait_ready()
    b = NodeProcess(tmp_path / "b", [*LOOPBACK, "--slots", "1", "--bootstrap", a.dial_addr(), "--metrics-public"])
    nodes.append(b)
    b_info = b.wait_ready()

    # the token: a's /metrics needs it; b's does not (--metrics-public), but the rest of b's API still does
    assert get(a_info, "/metrics", token=False).status_code == 401
    assert get(b_info, "/v1/peers", token=False).status_code == get(b_info, "/v1/node", token=False).status_code == 401
    assert get(b_info, "/v1/peers").status_code == 200

    def scrape_a() -> Samples:
        return scrape(a_info)[0]

    # peers by state, read when scraped
    for info in (a_info, b_info):
        poll(lambda info=info: value(scrape(info)[0], "meshnode_peers", state="alive") == 1, MEET, "the nodes to meet")
    assert value(scrape_a(), "meshnode_subtasks_verified_total") == 0

    work = tmp_path / "spin.wasm"
    work.write_bytes(SPIN)
    submitted = meshnode("submit", str(work), "--range", str(SUBTASKS), "--replicas", "2", "--detach",
                         "--data-dir", str(a.data_dir))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr

    # while it runs: a's verified count climbs, never falls, and is seen between none and all
    seen: list[float] = []

    def verified_all() -> bool:
        seen.append(value(scrape_a(), "meshnode_subtasks_verified_total"))
        return seen[-1] == SUBTASKS

    poll(verified_all, JOB, "every subtask verified", every=0.05, report=lambda: f"{seen}\n{a.stderr}\n{b.stderr}")
    assert seen == sorted(seen), seen
    assert any(0 < v < SUBTASKS for v in seen), f"the job was never seen running: {seen}"

    (a_end, a_text), (b_end, b_text) = scrape(a_info), scrape(b_info, token=False)
    assert value(a_end, "meshnode_subtasks_failed_total") == value(a_end, "meshnode_subtasks_disputed_total") == 0
    assert value(a_end, "meshnode_job_duration_seconds_count", outcome="finished") == 1
    assert value(b_end, "meshnode_subtasks_verified_total") == 0  # b owns no job
    for end in (a_end, b_end):
        # replicas 2 on two nodes: each ran every subtask once, and b's runs came before a's verdicts
        assert value(end, "meshnode_subtasks_run_total", outcome="ok") == SUBTASKS
        assert value(end, "meshnode_subtask_run_seconds_count") == SUBTASKS
        assert value(end, "meshnode_fuel_consumed_total") >= SUBTASKS * 40_000_000
        assert value(end, "meshnode_sandbox_seconds_total") > 0
        assert value(end, "meshnode_subtasks_refused_total") == 0
        for protocol in ("hello", "jobs"):
            assert value(end, "meshnode_sent_bytes_total", protocol=protocol) > 0
            assert value(end, "meshnode_received_bytes_total", protocol=protocol) > 0
        assert value(end, "meshnode_slots") == 1
    # b took its replicas by stealing them from a: every one it ran was granted to it, by a
    b_granted = value(b_end, "meshnode_steal_granted_replicas_total", role="thief")
    assert value(b_end, "meshnode_steal_requests_total", role="thief") >= 1 and b_granted >= SUBTASKS
    assert value(a_end, "meshnode_steal_granted_replicas_total", role="owner") >= b_granted

    # the scrapes are valid Prometheus text, by Prometheus's own linter
    for text in (a_text, b_text):
        checked = subprocess.run([str(promtool), "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=STEP)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr + text
        assert "meshnode_node_info{" in text and "process_cpu_seconds_total" in text


def test_metrics_public_is_a_flag_an_environment_variable_and_a_setting(tmp_path: Path) -> None:
    from meshnode.cli.parser import build_parser
    from meshnode.config import load_node_config

    assert build_parser().parse_args(["run", "--metrics-public"]).metrics_public is True
    assert build_parser().parse_args(["run"]).metrics_public is None  # not given: the environment or file decides
    assert not load_node_config(str(tmp_path), {}, env={}).metrics_public
    assert load_node_config(str(tmp_path), {"metrics_public": True}, env={}).metrics_public
    assert load_node_config(str(tmp_path), {}, env={"MESHNODE_METRICS_PUBLIC": "yes"}).metrics_public
    (tmp_path / "meshnode.toml").write_text("metrics_public = true\n")
    assert load_node_config(str(tmp_path), {}, env={}).metrics_public
    assert not load_node_config(str(tmp_path), {}, env={"MESHNODE_METRICS_PUBLIC": "0"}).metrics_public
