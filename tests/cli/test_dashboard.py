"""The dashboard in a real headless Chromium: three nodes, a job that takes a few seconds, the page
that ``meshnode dashboard`` logs in to; and its login rules, over plain HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

import httpx
import pytest

from meshnode import Client
from tests.client.conftest import busy_echo

from ..waiting import JOB, MEET, STEP, poll
from .chromium import chromium  # noqa: F401  (a fixture)
from .nodes import NodeProcess, api_get, nodes  # noqa: F401  (a fixture)
from .test_node_cli import LOOPBACK

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

SUBTASKS = 60


def login_url(data_dir: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "meshnode", "dashboard", "--no-browser", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=STEP)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = re.search(r"http://\S+/dashboard\?token=\S+", done.stdout)
    assert found, done.stdout
    return found.group(0)


def job_progress(page: Page, job_id: str) -> tuple[float, float]:
    bar = page.locator(f'tr[data-job="{job_id}"] progress')
    return float(bar.evaluate("e => e.value")), float(bar.evaluate("e => e.max"))


def test_the_dashboard_shows_peers_a_job_advancing_and_its_grid_with_nothing_leaving_the_machine(
    tmp_path: Path, nodes: list[NodeProcess], chromium: Path  # noqa: F811
) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: "
                                         "pip install -e '.[test]'")  # fmt: skip
    owner = NodeProcess(tmp_path / "a", [*LOOPBACK, "--slots", "1"])
    nodes.append(owner)
    owner.wait_ready()
    for name in ("b", "c"):
        nodes.append(NodeProcess(tmp_path / name, [*LOOPBACK, "--slots", "1", "--bootstrap", owner.dial_addr()]))
    for node in nodes:
        node.wait_ready()
    poll(lambda: sum(p["state"] == "alive" for p in api_get(owner.data_dir, "/v1/peers")["peers"]) == 2, MEET,
         "the owner hears both peers")  # fmt: skip
    task = tmp_path / "slow.wasm"
    task.write_bytes(busy_echo(60_000_000))  # a few seconds on three slots
    url = login_url(owner.data_dir)
    base = "{0.scheme}://{0.netloc}".format(urlsplit(url))

    requested: list[str] = []

    def only_the_node(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:  # a CDN, a font, anything: blocked, and the assertion below names it
            route.abort()

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.route("**/*", only_the_node)
            page = context.new_page()
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            page.goto(url)
            assert page.url == f"{base}/dashboard", "the login token stays out of the address bar"
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            page.wait_for_function("document.querySelectorAll('#peers tbody td.state-alive').length === 2",
                                   timeout=STEP * 1000)  # fmt: skip
            page.wait_for_function(  # each peer's round-trip time, measured once it joined
                "[...document.querySelectorAll('#peers tbody td.rtt')].filter(e => / ms$/.test(e.textContent)).length === 2",
                timeout=STEP * 1000)  # fmt: skip
            with Client(owner.data_dir) as client:
                job = client.submit(task, [f"row {i}" for i in range(SUBTASKS)], replicas=1, quorum=1)
            page.wait_for_selector(f'tr[data-job="{job.id}"] progress', timeout=STEP * 1000)
            first, total = job_progress(page, job.id)
            assert total == SUBTASKS and first < SUBTASKS
            poll(lambda: job_progress(page, job.id)[0] > first, JOB, "the progress bar advances")
            page.screenshot(path=str(tmp_path / "dashboard.png"))

            page.click(f'tr[data-job="{job.id}"] a')  # the job's page
            page.wait_for_function(f"document.querySelector('#grid').dataset.subtasks === '{SUBTASKS}'",
                                   timeout=STEP * 1000)  # fmt: skip
            job.wait()
            page.wait_for_function(f"document.querySelector('#legend [data-state=v] b')?.textContent === '{SUBTASKS}'",
                                   timeout=STEP * 1000)  # fmt: skip
            page.wait_for_function(  # runs per peer: every subtask ran once at least, on more than one node
                f"""(() => {{ const runs = [...document.querySelectorAll('#contributions td.num')].map(e => +e.textContent);
                    return runs.length > 1 && runs.reduce((a, b) => a + b, 0) >= {SUBTASKS}; }})()""",
                timeout=STEP * 1000)  # fmt: skip
            page.goto(f"{base}/dashboard/job/{job.id}")  # the job page's own address, for a bookmark
            page.wait_for_function(f"document.querySelector('#legend [data-state=v] b')?.textContent === '{SUBTASKS}'",
                                   timeout=STEP * 1000)  # fmt: skip
            page.goto(f"{base}/dashboard")  # the credit this node granted, per executor, also in the peer table
            page.wait_for_function("document.querySelectorAll('#credit tr td.num').length >= 4", timeout=STEP * 1000)
            granted = {g["executor"]: g["credit"] for g in api_get(owner.data_dir, "/v1/credit")["granted"]}
            assert granted and set(granted) <= {p["peer_id"] for p in api_get(owner.data_dir, "/v1/peers")["peers"]}
            for peer, credit in granted.items():  # granted to it / received from it
                page.wait_for_function(f"""document.querySelector('#peers tr[data-peer="{peer}"] td.credit')
                                           ?.textContent === '{credit:.2f} / 0.00'""", timeout=STEP * 1000)  # fmt: skip
        finally:
            browser.close()
    assert requested and all(u.startswith(base + "/") for u in requested), requested
    assert not script_errors


def test_a_login_token_works_once_and_the_cookie_only_reads(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    node = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(node)
    node.wait_ready()
    url = login_url(node.data_dir)
    base = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    with httpx.Client(base_url=base, trust_env=False) as browser:
        assert browser.get("/v1/node").status_code == 401
        assert browser.get("/dashboard").status_code == 200, "the page itself is no secret"
        login = browser.get(url)
        assert login.status_code == 303 and login.headers["location"] == "/dashboard"
        assert "httponly" in login.headers["set-cookie"].lower()
        assert browser.get("/v1/node").json()["peer_id"], "the cookie reads"
        assert browser.post(f"/v1/jobs/{'00' * 32}/cancel").status_code == 401, "and does nothing else"
    with httpx.Client(base_url=base, trust_env=False) as stranger:
        assert stranger.get(url).status_code == 403, "a token logs in once"
        assert stranger.get("/v1/events").status_code == 401
    opened = tmp_path / "opened.txt"
    done = subprocess.run([sys.executable, "-m", "meshnode", "dashboard", "--data-dir", str(node.data_dir)],
                          env={**os.environ, "BROWSER": f"sh -c 'echo %s > {opened}'"}, capture_output=True,
                          text=True, timeout=STEP)  # fmt: skip
    assert done.returncode == 0, done.stderr
    poll(lambda: opened.exists() and "?token=" in opened.read_text(), STEP, "the browser opens the login link")
    assert opened.read_text().strip() in done.stdout
