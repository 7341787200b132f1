"""What the dashboard draws, in a real headless Chromium, from a stand-in node served by the real API:
50 peers with their round-trip times and credit, dropped messages and refusals by reason, and
the page of a 10,000-subtask job with disputes and their candidates, runs per peer and its summary.
(tests/cli/test_dashboard.py drives it on real nodes, where no dispute or refusal happens.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshnode.api.dashboard import Sessions, dashboard_routes
from meshnode.api.job_routes import job_routes
from meshnode.storage.journal import VerifiedOutput

from ..api.conftest import PEER_A, PEER_B, FakeView, sample_peer, server_thread
from ..waiting import STEP
from .chromium import chromium  # noqa: F401  (a fixture)

JOB = bytes(range(16))
SUBTASKS = 10_000
DISPUTED = (7, 4_321)
PEERS = [PEER_B] + [f"12D3KooWStandIn{i:034d}" for i in range(49)]
HONEST, LIAR = PEERS[1], PEERS[2]


@dataclass
class StandIn(FakeView):
    """A node owning one running job of 10,000 subtasks, two of them disputed, with 50 peers."""

    def info(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "version": "0.1.0", "slots": 2, "idle": 0, "load1": 1.5, "uptime_s": 75.2,
                "dropped_messages": {"jobs_malformed": 3, "old_seq": 1}, "journal": {"ok": True, "problem": ""},
                "refused_work": {"the job has expired": 4},
                "peers": {"alive": 50, "stale": 0, "gone": 0}}  # fmt: skip

    def job_ids(self) -> list[bytes]:
        return [JOB]

    def job_summary(self, job_id: bytes) -> dict[str, Any] | None:
        if job_id != JOB:
            return None
        runs = {peer: 400 for peer in PEERS}
        return {"job_id": JOB.hex(), "label": "ten-thousand", "state": "running", "total": SUBTASKS, "verified": 8_000,
                "failed": 1, "disputed": len(DISPUTED), "running": 100, "queued": SUBTASKS - 8_103, "peers_working": 50,
                "refusals": {"owner_not_trusted": 2}, "problem": "", "waiting_for_peers": None,
                "cost": {"wall_s": 12.5, "sandbox_cpu_s": 20.1, "fuel": 123_456_789, "runs_per_peer": runs,
                         "input_bytes_sent": 1_000, "output_bytes_received": 2_000, "replicas_lost": 3,
                         "replicas_added": 4, "disputed": len(DISPUTED)}}  # fmt: skip

    async def subtask_states(self, job_id: bytes) -> str | None:
        letters = bytearray(b"v" * 8_000 + b"f" + b"r" * 100 + b"q" * (SUBTASKS - 8_101))
        for index in DISPUTED:
            letters[index] = ord("d")
        return letters.decode() if job_id == JOB else None

    def results_page(self, job_id: bytes, after: int, limit: int) -> list[VerifiedOutput]:
        index = after + 1
        candidates = [{"sha256": "ab" * 32, "status": "ok", "executors": [PEER_A, HONEST]},
                      {"sha256": "cd" * 32, "status": "ok", "executors": [LIAR]}]  # fmt: skip
        return [VerifiedOutput(index, "disputed", None, {"candidates": candidates, "executors": []})]

    def row_layout(self, job_id: bytes) -> tuple[int, int]:
        return (0, 0)

    async def credit_report(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "fuel_per_credit": 10**9,
                "received": {"fuel": 1_500_000_000, "credit": 1.5, "owners": [
                    {"owner": PEER_B, "results": 3, "fuel": 1_500_000_000, "credit": 1.5, "receipts": []}]},
                "granted": [{"executor": PEER_B, "results": 5, "fuel": 5_250_000_000, "credit": 5.25}]}  # fmt: skip


def text(page: Any, selector: str) -> list[str]:
    return [" ".join(t.split()) for t in page.locator(selector).all_inner_texts()]


def test_the_page_draws_peers_health_and_a_job_with_its_disputes(chromium: Path) -> None:  # noqa: F811
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: "
                                         "pip install -e '.[test]'")  # fmt: skip
    view = StandIn(peer_list=[sample_peer(peer_id=p, rtt_ms=0.7 + i) for i, p in enumerate(PEERS)])
    sessions = Sessions()
    routes = [*job_routes(view), *dashboard_routes(view, sessions)]  # type: ignore[arg-type]  (a partial JobDesk)
    with server_thread(view, extra_routes=routes, sessions=sessions) as server, \
            playwright_api.sync_playwright() as playwright:  # fmt: skip
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            page.goto(f"{server.url}/dashboard?token={sessions.mint()}")
            wait = STEP * 1000
            page.wait_for_function("document.querySelectorAll('#peers tbody tr').length === 50", timeout=wait)
            assert text(page, "#peers tbody td.rtt")[:2] == ["0.7 ms", "1.7 ms"]
            page.wait_for_function(f"""document.querySelector('#peers tr[data-peer="{PEER_B}"] td.credit')
                                       ?.textContent === '5.25 / 1.50'""", timeout=wait)  # fmt: skip
            assert text(page, f'#peers tr[data-peer="{HONEST}"] td.credit') == [""], "no credit either way"
            assert text(page, "#dropped tr") == ["jobs_malformed 3", "old_seq 1"]
            assert text(page, "#refused-by-peers tr") == ["owner_not_trusted 2"], "replicas of this node's jobs"
            assert text(page, "#refused-here tr") == ["the job has expired 4"], "replicas of other owners' jobs"

            page.click(f'tr[data-job="{JOB.hex()}"] a')
            page.wait_for_function(f"document.querySelector('#grid').dataset.subtasks === '{SUBTASKS}'", timeout=wait)
            assert text(page, "#legend span") == ["verified 7998", "failed 1", "disputed 2", "running 100",
                                                  "queued 1899"]  # fmt: skip
            page.wait_for_function("document.querySelectorAll('#disputes .dispute li').length === 4", timeout=wait)
            disputes = text(page, "#disputes .dispute")
            assert [d.split(" ab")[0] for d in disputes] == [f"subtask {i}" for i in DISPUTED]
            short = lambda peer: f"{peer[:6]}…{peer[-6:]}"  # noqa: E731
            assert f"abababababababab from {short(PEER_A)}, {short(HONEST)}" in disputes[0]
            assert f"cdcdcdcdcdcdcdcd from {short(LIAR)}" in disputes[0]
            page.wait_for_function("document.querySelectorAll('#contributions td.num').length === 50", timeout=wait)
            summary = dict(zip(text(page, "#job-summary th"), text(page, "#job-summary td"), strict=True))
            assert summary["fuel"] == "123456789" and summary["replicas lost / added"] == "3 / 4"
            assert summary["disputed"] == "2" and summary["job ID"] == JOB.hex()
            assert page.locator("#job-title").text_content() == "Job ten-thousand running"

            stranger = browser.new_page()  # no login: the page says how to get one
            stranger.goto(f"{server.url}/dashboard")
            stranger.wait_for_function("document.querySelector('#status').textContent.startsWith('not logged in')",
                                       timeout=wait)  # fmt: skip
        finally:
            browser.close()
    assert not script_errors
