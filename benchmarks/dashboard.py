"""The dashboard's load time with many peers and a 10,000-subtask job, in a real headless Chromium.

    python benchmarks/dashboard.py [--nodes 50] [--subtasks 10000] [--loads 10]
    python benchmarks/dashboard.py --nodes 4 --loads 0 --screenshot docs/dashboard.png

Needs ``pip install -e '.[test]'`` (Playwright) and Chromium (Debian's ``chromium`` package, installed
as tests/cli/chromium.py does). ``--nodes`` ``python -m meshnode`` processes on loopback, one slot each,
mDNS off, every node bootstrapped to the first and started a few at a time. Once the first (the
owner) lists the others alive, or ``--meet`` seconds have passed, it takes a job of ``--subtasks``
subtasks (a module that counts down ``--iterations`` times and echoes its input; every subtask on 2
nodes, ``--verify fixed``), and the dashboard is loaded ``--loads`` times in each of three phases,
each time in a fresh tab of a browser logged in once:

1. while the job runs, every node at the same priority: the owner and the browser get a share of the
   machine's cores with every other node and its sandboxes;
2. while it still runs, the other nodes (and their sandboxes) at nice 19, as if each ran on a machine
   of its own as on a LAN: the owner's node, its sandboxes and the browser come first;
3. once the job has ended.

Each load is timed three times: the overview, from the start of the navigation until the peer table
lists every peer the owner knows and the job's row has its progress bar; the job's page, until its
grid holds every subtask and its summary and runs per peer are drawn; and for comparison, a blank
page from the same node (its 404 answer), until it is parsed. Times are the browser's own
(``performance.now()``, checked at every animation frame), with the two parts of each: the owner's
answer (the first byte of the page) and the page's own script time (Chromium's ``ScriptDuration``).
Prints a Markdown report; every node is stopped on exit, Ctrl-C included. ``--screenshot FILE`` first
saves the overview as the job runs, once a quarter of it is decided and the peer table shows credit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import wasmtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.node_process import listening_addr, wait_until_serving  # noqa: E402
from meshnode.api.client import ApiClient  # noqa: E402
from tests.cli.chromium import chromium_binary  # noqa: E402

LOOPBACK = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--slots", "1"]
WAVE = 5  # nodes started at once: 49 dials to one node in the same second stall its libp2p for minutes
LOAD_TIMEOUT_MS = 60_000
PHASES = ("job running, one priority", "job running, other nodes at nice 19", "job ended")
PAGES = ("overview", "job page", "blank page")
DRAWN = {
    # a 404 from the same node: what any page costs this browser on this machine now (a fresh tab's renderer)
    "blank page": "() => document.readyState !== 'loading' && performance.now()",
    "overview": """(expected) => document.querySelectorAll('#peers tbody tr').length >= expected.peers
        && document.querySelector(`tr[data-job="${expected.job}"] progress`) !== null && performance.now()""",
    "job page": """(expected) => document.querySelector('#grid')?.dataset.subtasks === String(expected.subtasks)
        && document.querySelectorAll('#job-summary tr').length > 0
        && document.querySelectorAll('#contributions tr').length > 0 && performance.now()""",
}
SHOWN = """() => ({peers: document.querySelectorAll('#peers tbody tr').length, jobs: document.querySelectorAll('#jobs tbody tr').length,
    grid: document.querySelector('#grid')?.dataset.subtasks, summary: document.querySelectorAll('#job-summary tr').length,
    contributions: document.querySelectorAll('#contributions tr').length, status: document.querySelector('#status')?.textContent})"""
FIRST_BYTE = "() => performance.getEntriesByType('navigation')[0].responseStart"


def countdown_echo(iterations: int) -> bytes:
    """A task that counts down ``iterations`` times, then returns its input."""
    return wasmtime.wat2wasm(f"""(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32) (result i64) (local $i i64)
          (local.set $i (i64.const {max(iterations, 1)}))
          (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1))) (br_if $l (i64.ne (local.get $i) (i64.const 0))))
          (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))))""")


class Node:
    """A ``python -m meshnode`` process on loopback, its stderr in a file beside its data dir."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "meshnode", "--data-dir", str(data_dir), *LOOPBACK, *args],
                                         stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip

    def ready(self, timeout: float = 300.0) -> None:
        wait_until_serving(self.data_dir, self.proc, self.log_path, timeout)

    def dial_addr(self) -> str:
        return listening_addr(self.log_path)

    def api(self) -> ApiClient:
        return ApiClient.for_data_dir(self.data_dir, timeout=60)

    def renice(self, niceness: int) -> None:
        """Set the niceness of the node and of the sandbox processes it runs now (later ones inherit it)."""
        with contextlib.suppress(psutil.Error):
            node = psutil.Process(self.proc.pid)
            for process in [node, *node.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    process.nice(max(niceness, process.nice()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def mesh(root: Path, count: int) -> Iterator[list[Node]]:
    """``count`` nodes, the first one's peers bootstrapped to it, ``WAVE`` at a time; all killed on exit."""
    nodes: list[Node] = []
    try:
        first = Node(root / "n0", [])
        nodes.append(first)
        first.ready()
        for start in range(1, count, WAVE):
            wave = [Node(root / f"n{i}", ["--bootstrap", first.dial_addr()]) for i in range(start, min(start + WAVE, count))]
            nodes.extend(wave)
            for node in wave:
                node.ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", file=sys.stderr, flush=True)


def alive(api: ApiClient) -> int:
    return sum(p["state"] == "alive" for p in api.get("/v1/peers")["peers"])


@dataclass(frozen=True)
class Load:
    drawn_ms: float | None  # None: not drawn within LOAD_TIMEOUT_MS
    first_byte_ms: float
    script_ms: float


@dataclass
class Loads:
    """Every load, by page and phase; the machine's load average as each phase began."""

    loads: dict[tuple[str, str], list[Load]] = field(default_factory=dict)
    load_average: dict[str, float] = field(default_factory=dict)

    def add(self, page: str, phase: str, load: Load) -> None:
        self.loads.setdefault((page, phase), []).append(load)

    def row(self, page: str, phase: str) -> str:
        loads = self.loads.get((page, phase), [])
        drawn = [x.drawn_ms for x in loads if x.drawn_ms is not None]
        late = len(loads) - len(drawn)
        cells = [page, phase, f"{self.load_average.get(phase, 0):.1f}", str(len(loads))]
        if drawn:
            cells += [f"**{statistics.median(drawn):.0f}**", f"{min(drawn):.0f}", f"{max(drawn):.0f}",
                      f"{statistics.median(x.first_byte_ms for x in loads):.0f}",
                      f"{statistics.median(x.script_ms for x in loads):.0f}"]  # fmt: skip
        else:
            cells += [""] * 5
        cells.append(f"{late} not drawn within {LOAD_TIMEOUT_MS / 1000:g} s" if late else "")
        return "| " + " | ".join(cells) + " |"


def login_url(owner: Node) -> str:
    done = subprocess.run([sys.executable, "-m", "meshnode", "dashboard", "--no-browser", "--data-dir", str(owner.data_dir)],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return next(word for word in done.stdout.split() if "/dashboard?token=" in word)


def first_snapshot_bytes(owner: Node) -> int:
    """The size of the first event a page gets: what it reads before it can draw anything."""
    info = json.loads((owner.data_dir / "api.json").read_text())
    with httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"}, timeout=60,
                      trust_env=False) as client, client.stream("GET", "/v1/events") as events:  # fmt: skip
        return len(next(events.iter_lines()).encode())


def load(context: Any, url: str, drawn: str, expected: dict[str, Any]) -> Load:
    """Open ``url`` in a fresh tab and time it until ``drawn`` holds (what the page showed when it did
    not within ``LOAD_TIMEOUT_MS`` goes to stderr)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = context.new_page()
    try:
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url, wait_until="commit")
        try:
            drawn_ms: float | None = float(page.wait_for_function(drawn, arg=expected, timeout=LOAD_TIMEOUT_MS).json_value())
        except PlaywrightTimeout:
            say(f"{url}: not drawn within {LOAD_TIMEOUT_MS / 1000:g} s, expected {expected}, shown {page.evaluate(SHOWN)}")
            drawn_ms = None
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return Load(drawn_ms, float(page.evaluate(FIRST_BYTE)), metrics["ScriptDuration"] * 1000)
    finally:
        page.close()


def screenshot(context: Any, url: str, job_id: str, path: Path) -> None:
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function("""(job) => { const bar = document.querySelector(`tr[data-job="${job}"] progress`);
            return bar && bar.value >= bar.max / 4 && [...document.querySelectorAll('#peers td.credit')].some(e => e.textContent); }""",
                               arg=job_id, timeout=600_000)  # fmt: skip
        page.screenshot(path=str(path))
        say(f"screenshot saved to {path}")
    finally:
        page.close()


def measure(args: argparse.Namespace, root: Path, nodes: list[Node], loads: Loads) -> dict[str, Any]:
    """Start the job, load the pages in each phase; the job's status and the figures around it."""
    from playwright.sync_api import sync_playwright

    owner, others = nodes[0], nodes[1:]
    api = owner.api()
    started = time.monotonic()
    while alive(api) < len(others) and time.monotonic() - started < args.meet:
        time.sleep(1.0)
    found = {"peers_alive": alive(api), "meet_s": time.monotonic() - started}
    say(f"the owner lists {found['peers_alive']} peers alive after {found['meet_s']:.0f} s")
    task = root / "countdown.wasm"
    task.write_bytes(countdown_echo(args.iterations))
    submitted = subprocess.run(
        [sys.executable, "-m", "meshnode", "submit", str(task), "--range", str(args.subtasks), "--detach", "--verify",
         "fixed", "--label", f"{args.subtasks:,} subtasks", "--data-dir", str(owner.data_dir)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if submitted.returncode:
        raise SystemExit(f"meshnode submit: {submitted.stderr}")
    job_id = submitted.stdout.strip()
    job_started = time.monotonic()
    say(f"job {job_id} submitted")
    url = login_url(owner)
    base = url.split("/dashboard?")[0]
    targets = {"overview": f"{base}/dashboard", "job page": f"{base}/dashboard/job/{job_id}", "blank page": f"{base}/none"}
    running = lambda: api.get(f"/v1/jobs/{job_id}")["state"] == "running"  # noqa: E731
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(args.chromium), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            login = context.new_page()
            login.goto(url)  # the cookie, for every tab after
            login.close()
            if args.screenshot:
                screenshot(context, targets["overview"], job_id, args.screenshot)
            expected = {"job": job_id, "subtasks": args.subtasks}
            for phase in PHASES:
                if phase == PHASES[1]:
                    for node in others:
                        node.renice(19)
                if phase == PHASES[2]:
                    while running():
                        time.sleep(1.0)
                    found["job_s"] = time.monotonic() - job_started
                    found["snapshot_bytes"] = first_snapshot_bytes(owner)
                loads.load_average[phase] = os.getloadavg()[0]
                say(f"{phase}: load average {loads.load_average[phase]:.1f}")
                for _ in range(args.loads):
                    if phase != PHASES[2] and not running():
                        say(f"the job ended during '{phase}'")
                        break
                    expected["peers"] = len(api.get("/v1/peers")["peers"])
                    for page in PAGES:
                        loads.add(page, phase, load(context, targets[page], DRAWN[page], expected))
        finally:
            browser.close()
    found["status"] = api.get(f"/v1/jobs/{job_id}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--subtasks", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=2_000_000, help="countdown steps per subtask")
    parser.add_argument("--loads", type=int, default=10, help="loads of each page in each phase")
    parser.add_argument("--meet", type=float, default=180.0, help="seconds the owner gets to list every other node")
    parser.add_argument("--screenshot", type=Path, metavar="FILE", help="save the overview as the job runs, as a PNG")
    args = parser.parse_args()
    args.chromium = chromium_binary()
    loads = Loads()
    with tempfile.TemporaryDirectory(prefix="meshnode-dashboard-") as tmp, mesh(Path(tmp), args.nodes) as nodes:
        say(f"{args.nodes} nodes up")
        try:
            found = measure(args, Path(tmp), nodes, loads)
        except BaseException:
            log = nodes[0].log_path.read_text(errors="replace").splitlines()
            say(f"the owner's log ends (exit status {nodes[0].proc.poll()}):\n" + "\n".join(log[-40:]))
            raise
    status = found["status"]
    print(f"## The dashboard: {args.nodes} nodes, a {args.subtasks:,}-subtask job\n")
    print(f"{len(os.sched_getaffinity(0))} cores. The owner listed {found['peers_alive']} of {args.nodes - 1} peers "
          f"alive {found['meet_s']:.0f} s after the last node was up; the job ({args.iterations:,} countdown steps a "
          f"subtask, each on 2 nodes) ran {found['job_s']:.0f} s: {status['verified']:,} verified, {status['failed']} failed, "
          f"{status['disputed']} disputed, runs on {len(status['cost']['runs_per_peer'])} nodes. The first event a page "
          f"reads: {found['snapshot_bytes']:,} bytes. Milliseconds from the start of the navigation:\n")  # fmt: skip
    print("| page | when | load average | loads | drawn, median | min | max | owner's first byte, median "
          "| page script, median | |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for page in PAGES:
        for phase in PHASES:
            print(loads.row(page, phase))


if __name__ == "__main__":
    main()
