// The meshnode dashboard: a snapshot of the node arrives every second over /v1/events (server-sent
// events) and is drawn as it comes; a job's page (#job=<id>) reads its subtask grid from
// /v1/jobs/<id>/states. Every request goes to the node that served the page.
"use strict";

const COLORS = { v: "--v", f: "--f", d: "--d", r: "--r", q: "--q" };
const NAMES = { v: "verified", f: "failed", d: "disputed", r: "running", q: "queued" };
const HISTORY_S = 300; // the throughput plot's span
const RATE_WINDOW_S = 10; // a job's rate is its progress over this many seconds

const $ = (selector) => document.querySelector(selector);
const decidedOf = (job) => job.verified + job.failed + job.disputed;
const short = (id) => (id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id);
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const bytes = (n) => (n == null ? "" : n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : `${Math.round(n / (1 << 20))} MiB`);
const memory = (free, total) => (free == null || total == null ? "" : total >= 1 << 30
  ? `${(free / (1 << 30)).toFixed(1)} / ${(total / (1 << 30)).toFixed(1)} GiB` : `${bytes(free)} / ${bytes(total)}`);
const fixed = (n, digits) => (n == null ? "" : Number(n).toFixed(digits));

let latest = null;
const creditWith = new Map(); // peer id -> {granted, received}: credit this node granted it and received from it
const seen = new Map(); // job id -> [[time, decided], ...] over RATE_WINDOW_S
const throughput = []; // [time, subtasks decided per second]
let lastTotal = null;

function record(snapshot) {
  const t = snapshot.time;
  for (const [time, total] of snapshot.history || []) { // the minutes before this page opened
    if (lastTotal !== null && time > lastTotal[0]) throughput.push([time, Math.max(0, total - lastTotal[1]) / (time - lastTotal[0])]);
    lastTotal = [time, total];
  }
  let total = 0;
  for (const job of snapshot.jobs) {
    const points = seen.get(job.job_id) || [];
    points.push([t, decidedOf(job)]);
    while (points.length > 1 && t - points[0][0] > RATE_WINDOW_S) points.shift();
    seen.set(job.job_id, points);
    total += decidedOf(job);
  }
  if (lastTotal !== null && t > lastTotal[0]) throughput.push([t, Math.max(0, total - lastTotal[1]) / (t - lastTotal[0])]);
  lastTotal = [t, total];
  while (throughput.length && t - throughput[0][0] > HISTORY_S) throughput.shift();
}

function rateOf(job) {
  const points = seen.get(job.job_id) || [];
  if (points.length < 2) return null;
  const [t0, d0] = points[0];
  const [t1, d1] = points[points.length - 1];
  return t1 > t0 ? (d1 - d0) / (t1 - t0) : null;
}

function drawNode(node) {
  $("#node").textContent = `${short(node.peer_id)} · v${node.version} · ${node.idle}/${node.slots} slots idle · load ${fixed(node.load1, 2)}`;
}

function drawJobs(jobs) {
  $("#no-jobs").hidden = jobs.length > 0;
  $("#jobs tbody").innerHTML = jobs.map((job) => {
    const rate = job.state === "running" ? rateOf(job) : null;
    const wall = job.cost ? `${fixed(job.cost.wall_s, 1)} s` : "";
    return `<tr data-job="${job.job_id}">
      <td><a href="#job=${job.job_id}">${escape(job.label || short(job.job_id))}</a></td>
      <td class="state-${job.state}">${job.state}</td>
      <td><progress class="job-progress" max="${job.total}" value="${decidedOf(job)}"></progress></td>
      <td class="num">${decidedOf(job)} / ${job.total}</td>
      <td class="num">${rate == null ? "" : `${rate.toFixed(1)}/s`}</td>
      <td class="num">${job.peers_working}</td><td class="num">${wall}</td></tr>`;
  }).join("");
}

function drawPeers(peers) {
  $("#peer-count").textContent = `${peers.filter((p) => p.state === "alive").length} alive of ${peers.length}`;
  $("#peers tbody").innerHTML = peers.map((p) => {
    const rep = p.reputation;
    return `<tr data-peer="${p.peer_id}"><td title="${p.peer_id}">${short(p.peer_id)}</td>
      <td class="state-${p.state}">${p.state}</td><td>${escape(p.addrs[0] || "")}</td>
      <td class="num">${p.slots}</td><td class="num">${p.idle}</td><td class="num">${fixed(p.load1, 2)}</td>
      <td class="num">${memory(p.mem_free, p.mem_total)}</td>
      <td class="num rtt">${p.rtt_ms == null ? "" : `${fixed(p.rtt_ms, 1)} ms`}</td><td>${escape(p.engine)}</td>
      <td>${fixed(rep.score, 2)} (${rep.agreements}✓ ${rep.disagreements}✗ ${rep.failures}!)${rep.barred ? " barred" : ""}</td>
      <td class="num credit">${creditCell(creditWith.get(p.peer_id))}</td></tr>`;
  }).join("");
}

const creditCell = (c) => (c ? `${fixed(c.granted, 2)} / ${fixed(c.received, 2)}` : "");

function drawThroughput() {
  const svg = $("#throughput");
  if (throughput.length < 2) {
    $("#throughput-top").textContent = "";
    svg.innerHTML = "";
    return;
  }
  const now = throughput[throughput.length - 1][0];
  const span = Math.min(HISTORY_S, Math.max(60, now - throughput[0][0])); // a fresh page's minute grows to five
  const top = Math.max(1, ...throughput.map((p) => p[1]));
  const points = throughput.map(([t, r]) => `${(600 * (1 - (now - t) / span)).toFixed(1)},${(88 - (80 * r) / top).toFixed(1)}`);
  svg.innerHTML = `<polyline points="${points.join(" ")}"/>`;
  $("#throughput-top").textContent = `peak ${top.toFixed(1)}/s, now ${throughput[throughput.length - 1][1].toFixed(1)}/s`;
}

function drawHealth(node, jobs) {
  const dropped = Object.entries(node.dropped_messages);
  const refusals = {};
  for (const job of jobs) for (const [why, n] of Object.entries(job.refusals)) refusals[why] = (refusals[why] || 0) + n;
  const rows = (entries) => entries.map(([k, n]) => `<tr><td>${escape(k)}</td><td class="num">${n}</td></tr>`).join("");
  const table = (id, entries) => (entries.length ? `<table id="${id}">${rows(entries)}</table>` : `<p class="muted">none</p>`);
  const journal = node.journal.ok ? "takes writes" : `<b class="state-gone">${escape(node.journal.problem)}</b>`;
  $("#health").innerHTML = `<div class="columns">
    <div><h2>Dropped messages</h2>${table("dropped", dropped)}</div>
    <div><h2>Refused by peers <span class="muted">replicas of this node's jobs</span></h2>${table("refused-by-peers", Object.entries(refusals))}</div>
    <div><h2>Refused here <span class="muted">replicas of other owners' jobs</span></h2>${table("refused-here", Object.entries(node.refused_work || {}))}</div>
    <div><h2>Node</h2><table>${rows([["uptime", `${Math.round(node.uptime_s)} s`], ["journal", journal],
      ["peers alive / stale / gone", `${node.peers.alive} / ${node.peers.stale} / ${node.peers.gone}`]])}</table></div></div>`;
}

// Credit changes slowly and its report reads the journal: asked for when the overview is shown and
// every 10 s while it is, not with each snapshot.
async function drawCredit() {
  const response = await fetch("/v1/credit");
  if (response.ok) {
    const report = await response.json();
    const granted = [...report.granted].sort((a, b) => b.fuel - a.fuel);
    const owners = [...report.received.owners].sort((a, b) => b.fuel - a.fuel);
    creditWith.clear();
    const credit = (peer) => creditWith.get(peer) || creditWith.set(peer, { granted: 0, received: 0 }).get(peer);
    for (const r of granted) credit(r.executor).granted += r.credit;
    for (const r of owners) credit(r.owner).received += r.credit;
    if (latest && !jobShown()) drawPeers(latest.peers);
    const table = (rows, who) => rows.length
      ? `<table><tr><th>peer</th><th>results</th><th>credit</th></tr>${rows.map((r) =>
        `<tr><td title="${r[who]}">${short(r[who])}</td><td class="num">${r.results}</td><td class="num">${fixed(r.credit, 2)}</td></tr>`).join("")}</table>`
      : `<p class="muted">none yet</p>`;
    $("#credit").innerHTML = `<div><h2>Granted to executors of this node's jobs</h2>${table(granted, "executor")}</div>
      <div><h2>Received from owners: ${fixed(report.received.credit, 2)} in all</h2>${table(owners, "owner")}</div>`;
  }
}

// --- the job page -------------------------------------------------------------------------

let gridTimer = null;
const disputes = new Map(); // index -> its result record

async function showJob(jobId) {
  // the job's summary comes with each snapshot, but not before the first one, nor for a job older than
  // the snapshot's recent ones: then it is asked for at the same time as the grid
  const known = latest && latest.jobs.find((j) => j.job_id === jobId);
  const [response, status] = await Promise.all([fetch(`/v1/jobs/${jobId}/states`), known ? null : fetch(`/v1/jobs/${jobId}`)]);
  if (!response.ok) {
    $("#job-title").textContent = `job ${jobId}: ${response.status === 404 ? "not on this node" : response.statusText}`;
    return;
  }
  const letters = await response.text();
  const job = known || (status && status.ok ? await status.json() : null);
  drawGrid(letters);
  if (job) drawJobSummary(job);
  drawDisputes(jobId, letters);
  if (!job || job.state === "running" || /[qr]/.test(letters)) gridTimer = setTimeout(() => showJob(jobId), 1000);
}

function jobShown() {
  const match = location.hash.match(/^#job=([0-9a-f]+)$/) || location.pathname.match(/^\/dashboard\/job\/([0-9a-f]+)$/);
  return match ? match[1] : null;
}

function drawGrid(letters) {
  const counts = { v: 0, f: 0, d: 0, r: 0, q: 0 };
  for (const letter of letters) counts[letter]++;
  $("#legend").innerHTML = Object.keys(NAMES).map((k) =>
    `<span data-state="${k}"><i style="background: var(${COLORS[k]})"></i>${NAMES[k]} <b>${counts[k]}</b></span>`).join("");
  const canvas = $("#grid");
  const n = letters.length;
  const cell = n <= 500 ? 16 : n <= 2000 ? 10 : n <= 10000 ? 7 : 4;
  const cols = Math.max(1, Math.floor(Math.min(900, canvas.parentElement.clientWidth || 900) / cell));
  canvas.width = cols * cell;
  canvas.height = Math.ceil(n / cols) * cell;
  canvas.dataset.subtasks = n;
  const context = canvas.getContext("2d");
  const style = getComputedStyle(document.documentElement);
  const gap = cell > 4 ? 1 : 0;
  for (const k of Object.keys(COLORS)) { // one fill colour at a time: 10,000 cells in a few milliseconds
    context.fillStyle = style.getPropertyValue(COLORS[k]);
    for (let i = letters.indexOf(k); i >= 0; i = letters.indexOf(k, i + 1)) {
      context.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - gap, cell - gap);
    }
  }
}

function drawJobSummary(job) {
  $("#job-title").innerHTML = `Job ${escape(job.label || job.job_id)} <span class="state-${job.state}">${job.state}</span>`;
  const progress = $("#job-progress");
  progress.max = job.total;
  progress.value = decidedOf(job);
  $("#job-counts").textContent = `${decidedOf(job)} / ${job.total} decided`;
  const cost = job.cost || {};
  const fields = [["job ID", job.job_id], ["verified", job.verified], ["failed", job.failed], ["disputed", job.disputed],
    ["running", job.running], ["queued", job.queued], ["wall", cost.wall_s == null ? "" : `${cost.wall_s} s`],
    ["sandbox CPU", cost.sandbox_cpu_s == null ? "" : `${cost.sandbox_cpu_s} s`], ["fuel", cost.fuel],
    ["input bytes sent", cost.input_bytes_sent], ["output bytes received", cost.output_bytes_received],
    ["replicas lost / added", cost.replicas_lost == null ? "" : `${cost.replicas_lost} / ${cost.replicas_added}`],
    ["problem", job.problem]];
  $("#job-summary").innerHTML = fields.filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `<tr><th>${k}</th><td>${escape(v)}</td></tr>`).join("");
  const runs = Object.entries(cost.runs_per_peer || {});
  $("#contributions").innerHTML = runs.length
    ? `<tr><th>peer</th><th>runs</th></tr>` + runs.map(([peer, n]) => `<tr><td title="${peer}">${short(peer)}</td><td class="num">${n}</td></tr>`).join("")
    : `<tr><td class="muted">${job.cost ? "no runs yet" : "counted by the run of the node that ran the job"}</td></tr>`;
}

async function drawDisputes(jobId, letters) {
  const indices = [];
  for (let i = letters.indexOf("d"); i >= 0 && indices.length < 20; i = letters.indexOf("d", i + 1)) indices.push(i);
  await Promise.all(indices.filter((i) => !disputes.has(i)).map(async (index) => {
    const response = await fetch(`/v1/jobs/${jobId}/results?after=${index - 1}&limit=1`);
    if (response.ok) disputes.set(index, (await response.json()).results[0]);
  }));
  const total = letters.split("d").length - 1;
  $("#disputes").innerHTML = !total ? `<p class="muted">none</p>` : indices.map((i) => {
    const r = disputes.get(i);
    const candidates = r ? r.candidates.map((c) => `<li><code>${escape((c.sha256 || c.status).slice(0, 16))}</code> from ${c.executors.map(short).join(", ")}</li>`).join("") : "";
    return `<div class="dispute">subtask ${i}<ul>${candidates}</ul></div>`;
  }).join("") + (total > indices.length ? `<p class="muted">and ${total - indices.length} more</p>` : "");
}

function route() {
  clearTimeout(gridTimer);
  disputes.clear();
  const jobId = jobShown();
  $("#overview").hidden = Boolean(jobId);
  $("#job").hidden = !jobId;
  if (jobId) {
    showJob(jobId);
  } else {
    drawOverview();
    drawCredit();
  }
}

// --- the feed -----------------------------------------------------------------------------

function drawOverview() {
  if (!latest) return;
  drawJobs(latest.jobs);
  drawPeers(latest.peers);
  drawThroughput();
  drawHealth(latest.node, latest.jobs);
}

function showStatus(text, bad) {
  $("#status").textContent = text;
  $("#status").classList.toggle("bad", bad);
}

// The feed is opened at once, without asking first whether the page is logged in: each request to a
// node busy with a job can wait a while for its turn. A refused feed is closed for good, and a plain
// request then says why.
function start() {
  const events = new EventSource("/v1/events");
  events.onmessage = (message) => {
    latest = JSON.parse(message.data);
    record(latest);
    showStatus("live", false);
    drawNode(latest.node);
    const jobId = jobShown();
    if (!jobId) {
      drawOverview();
    } else {
      const shown = latest.jobs.find((job) => job.job_id === jobId);
      if (shown) drawJobSummary(shown);
    }
  };
  events.onerror = async () => {
    if (events.readyState !== EventSource.CLOSED) return showStatus("the node does not answer: retrying", true);
    const probe = await fetch("/v1/node").catch(() => null);
    showStatus(probe && probe.status === 401 ? "not logged in: run `meshnode dashboard` for a login link"
      : "the node refused the live feed: reload the page", true);
  };
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => jobShown() || drawCredit(), 10000);
}

start();
