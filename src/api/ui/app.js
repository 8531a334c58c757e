// ferry's dashboard: a page over the HTTP API, polled while it is open.
//
// Everything shown comes from the API (GET /uploads?limit=, GET /uploads/{id},
// GET /uploads/{id}/files?state=&after=&limit=). When the API answers 401, the page asks for
// the token once, keeps it in sessionStorage and sends it as a bearer. Rates and the throughput
// graph are computed here, from the bytes uploaded between two polls.
"use strict";

const POLL_MS = 2000;
const JOBS_PAGE = 50;
const FILES_PAGE = 50;
const GRAPH_WINDOW_MS = 5 * 60 * 1000;
const TOKEN_KEY = "ferry.token";

const $ = (id) => document.getElementById(id);

// ---- the API --------------------------------------------------------------------------------

let tokenWaiters = null;

function askToken(why) {
  if (!tokenWaiters) {
    tokenWaiters = [];
    $("token-why").textContent = why;
    $("token").value = "";
    const dialog = $("token-dialog");
    if (!dialog.open) dialog.showModal();
    $("token").focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function tokenGiven(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-dialog").close();
  const waiters = tokenWaiters || [];
  tokenWaiters = null;
  waiters.forEach((resolve) => resolve());
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the API; on 401 asks for the token and tries again. Answers the parsed body (or null)
// and the response's headers.
async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (res.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(token
        ? "That token was refused. Enter FERRY_API_TOKEN again; it is kept in this tab only."
        : "This ferry asks for its API token (FERRY_API_TOKEN). It is kept in this tab only.");
      continue;
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.code || "http_" + res.status,
        err.message || res.status + " " + res.statusText);
    }
    return { data, headers: res.headers };
  }
}

// The `after` of a Link: <...>; rel="next" header, or null on the last page.
function nextAfter(headers) {
  const link = headers.get("link");
  if (!link) return null;
  const m = /<([^>]+)>;\s*rel="next"/.exec(link);
  if (!m) return null;
  return new URL(m[1], location.origin).searchParams.get("after");
}

// ---- formatting -----------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function rate(bps) {
  return bps === null || bps === undefined ? "–" : bytes(Math.round(bps)) + "/s";
}

function percent(p) {
  return (Math.floor(p * 1000) / 10).toFixed(1) + " %";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

function stateBadge(state) {
  return el("span", { class: "state state-" + state, text: state });
}

function cell(label, content, cls) {
  const td = el("td", { "data-label": label, class: cls });
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

let statusTimer = null;
function say(message, isError) {
  const s = $("status");
  s.textContent = message;
  s.classList.toggle("error", !!isError);
  clearTimeout(statusTimer);
  if (!isError && message) statusTimer = setTimeout(() => { s.textContent = ""; }, 6000);
}

// ---- rates, from the bytes uploaded between polls -------------------------------------------

// Per job: samples of [time ms, uploaded_bytes], the last GRAPH_WINDOW_MS of them.
const samples = new Map();

// Jobs not seen for a whole window (deleted, or on another page) keep nothing.
function forgetStale() {
  const now = Date.now();
  for (const [id, list] of samples) {
    if (now - list[list.length - 1][0] > GRAPH_WINDOW_MS) samples.delete(id);
  }
}

function sample(job) {
  const now = Date.now();
  let list = samples.get(job.upload_id);
  if (!list) { list = []; samples.set(job.upload_id, list); }
  list.push([now, job.uploaded_bytes]);
  while (list.length > 2 && now - list[0][0] > GRAPH_WINDOW_MS) list.shift();
}

// The rate over the last ~10 s of samples, or null before two samples.
function currentRate(id) {
  const list = samples.get(id);
  if (!list || list.length < 2) return null;
  const last = list[list.length - 1];
  let first = list[list.length - 2];
  for (let i = list.length - 2; i >= 0 && last[0] - list[i][0] <= 10000; i--) first = list[i];
  const dt = (last[0] - first[0]) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, (last[1] - first[1]) / dt);
}

// ---- the jobs list --------------------------------------------------------------------------

const listState = { after: null, previous: [], next: null };

async function renderList() {
  const q = new URLSearchParams({ limit: String(JOBS_PAGE) });
  if (listState.after) q.set("after", listState.after);
  const { data, headers } = await api("GET", "/uploads?" + q);
  listState.next = nextAfter(headers);
  const body = $("jobs").tBodies[0];
  const rows = data.map((job) => {
    sample(job);
    const link = el("a", { href: "#/jobs/" + encodeURIComponent(job.upload_id), text: job.upload_id });
    const bar = el("progress", { max: "1", value: String(job.progress),
      "aria-label": "Progress of " + job.upload_id });
    const prog = el("span", {}, bar, " " + percent(job.progress));
    return el("tr", { "data-job": job.upload_id },
      cell("Job", link, "path"),
      cell("State", stateBadge(job.state)),
      cell("Progress", prog),
      cell("Bytes", bytes(job.uploaded_bytes) + " of " + bytes(job.total_bytes), "num"),
      cell("Rate", rate(currentRate(job.upload_id)), "num"),
      cell("Files failed", String(job.failed_files), "num"),
      cell("Managed by", job.managed_by + (job.manifest ? " (" + job.manifest + ")" : "")));
  });
  body.replaceChildren(...rows);
  $("jobs-empty").hidden = data.length > 0 || listState.after !== null;
  $("jobs-prev").disabled = listState.previous.length === 0;
  $("jobs-next").disabled = listState.next === null;
}

// ---- one job --------------------------------------------------------------------------------

const jobState = { id: null, fileState: "", after: null, previous: [], next: null };

function pairs(dl, entries) {
  const nodes = [];
  for (const [k, v] of entries) {
    if (v === null || v === undefined || v === "") continue;
    nodes.push(el("dt", { text: k }));
    const dd = el("dd");
    if (v instanceof Node) dd.append(v); else dd.textContent = String(v);
    nodes.push(dd);
  }
  dl.replaceChildren(...nodes);
}

function mapText(m) {
  const keys = Object.keys(m || {});
  return keys.length ? keys.map((k) => k + "=" + m[k]).join(", ") : null;
}

async function renderJob() {
  const id = jobState.id;
  const path = "/uploads/" + encodeURIComponent(id);
  const { data: job } = await api("GET", path);
  if (jobState.id !== id) return;
  sample(job);
  $("job-title").textContent = job.upload_id;
  document.title = job.upload_id + " – ferry";
  $("job-progress").value = job.progress;
  pairs($("summary"), [
    ["State", stateBadge(job.state)],
    ["Progress", percent(job.progress)],
    ["Bytes", bytes(job.uploaded_bytes) + " of " + bytes(job.total_bytes)],
    ["Rate", rate(currentRate(id))],
    ["Files", job.completed_files + " uploaded, " + job.in_progress_files + " uploading, " +
      job.pending_files + " pending, " + job.failed_files + " failed, of " + job.total_files],
    ["Error", job.error],
    ["Last scan", job.scanned_at || "not yet"],
  ]);
  pairs($("spec"), [
    ["Source folder", job.source_folder],
    ["Bucket", job.destination_bucket],
    ["Pattern", job.pattern || "every file"],
    ["Key prefix", job.key_prefix],
    ["Exclude", job.exclude.length ? job.exclude.join(", ") : null],
    ["Storage class", job.storage_class],
    ["Encryption", job.sse ? job.sse + (job.kms_key_id ? " (" + job.kms_key_id + ")" : "") : null],
    ["Metadata", mapText(job.metadata)],
    ["Tags", mapText(job.tags)],
    ["After upload", job.after_upload],
    ["Prune", job.prune ? "yes" : "no"],
    ["Managed by", job.managed_by + (job.manifest ? " (" + job.manifest + ")" : "")],
    ["Generation", job.generation + " (observed " + job.observed_generation + ")"],
    ["Created", job.created_at],
  ]);
  $("conditions").tBodies[0].replaceChildren(...job.conditions.map((c) => el("tr", {},
    cell("Type", c.type), cell("Status", stateBadge(c.status)), cell("Reason", c.reason),
    cell("Message", c.message))));
  $("do-delete").disabled = job.managed_by !== "api";
  $("do-delete").title = job.managed_by === "api" ? "" : "A manifest declares this job: remove it there";
  drawGraph(id);
  await Promise.all([renderFailures(path, job), renderFiles(path)]);
}

async function renderFailures(path, job) {
  const card = $("failures-card");
  if (job.failed_files === 0) { card.hidden = true; return; }
  const { data } = await api("GET", path + "/files?state=FAILED&limit=100");
  card.hidden = false;
  const items = data.map((f) => el("li", {},
    el("strong", { text: f.path }), ": ",
    el("span", { class: "error", text: f.last_error || "no error recorded" }),
    " (" + f.attempts + " attempts)"));
  if (job.failed_files > data.length) {
    items.push(el("li", { text: "and " + (job.failed_files - data.length) + " more; show FAILED below" }));
  }
  $("failures").replaceChildren(...items);
}

async function renderFiles(path) {
  const q = new URLSearchParams({ limit: String(FILES_PAGE) });
  if (jobState.fileState) q.set("state", jobState.fileState);
  if (jobState.after) q.set("after", jobState.after);
  const { data, headers } = await api("GET", path + "/files?" + q);
  jobState.next = nextAfter(headers);
  $("files").tBodies[0].replaceChildren(...data.map((f) => el("tr", {},
    cell("Path", f.path, "path"), cell("State", stateBadge(f.state)),
    cell("Size", bytes(f.size), "num"), cell("Sent", bytes(f.bytes_uploaded), "num"),
    cell("Attempts", String(f.attempts), "num"), cell("Last error", f.last_error || "", "error"))));
  $("files-empty").hidden = data.length > 0;
  $("files-prev").disabled = jobState.previous.length === 0;
  $("files-next").disabled = jobState.next === null;
}

function drawGraph(id) {
  const svg = $("graph");
  const list = samples.get(id) || [];
  const points = [];
  for (let i = 1; i < list.length; i++) {
    const dt = (list[i][0] - list[i - 1][0]) / 1000;
    if (dt > 0) points.push([list[i][0], Math.max(0, (list[i][1] - list[i - 1][1]) / dt)]);
  }
  const ns = "http://www.w3.org/2000/svg";
  const desc = document.createElementNS(ns, "desc");
  desc.id = "graph-desc";
  if (points.length < 2) {
    desc.textContent = "Not enough samples yet";
    svg.replaceChildren(desc);
    return;
  }
  const now = Date.now();
  const peak = Math.max(...points.map((p) => p[1]), 1);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map(([t, r]) =>
    ((300 * (1 - (now - t) / GRAPH_WINDOW_MS)).toFixed(1)) + "," + (95 - 85 * r / peak).toFixed(1)).join(" "));
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "10");
  label.textContent = "peak " + rate(peak);
  desc.textContent = "Throughput over the last " + Math.round((now - points[0][0]) / 1000) +
    " s: now " + rate(points[points.length - 1][1]) + ", peak " + rate(peak);
  svg.replaceChildren(desc, line, label);
}

async function act(button, method, suffix, done) {
  button.disabled = true;
  try {
    await api(method, "/uploads/" + encodeURIComponent(jobState.id) + suffix);
    say(done);
    await refresh();
  } catch (e) {
    say(e.message, true);
  } finally {
    button.disabled = false;
  }
}

// ---- routing and polling --------------------------------------------------------------------

let timer = null;
let busy = false;

function route() {
  const m = /^#\/jobs\/(.+)$/.exec(location.hash);
  const id = m ? decodeURIComponent(m[1]) : null;
  $("list-view").hidden = id !== null;
  $("job-view").hidden = id === null;
  if (id !== jobState.id) {
    Object.assign(jobState, { id, after: null, previous: [], next: null });
    if (id !== null) {
      $("job-title").textContent = id;
      $("summary").replaceChildren();
      $("graph").replaceChildren();
    } else {
      document.title = "ferry";
    }
  }
  refresh();
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    forgetStale();
    if (jobState.id === null) await renderList(); else await renderJob();
    if ($("status").classList.contains("error")) say("");
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && jobState.id !== null) {
      say("No job " + jobState.id + ": it was deleted, or never was.", true);
    } else {
      say(e instanceof ApiError ? e.message : "ferry cannot be reached: " + e.message, true);
    }
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = $("live").checked ? setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS) : null;
}

function page(stateObj, forward) {
  if (forward) {
    if (stateObj.next === null) return;
    stateObj.previous.push(stateObj.after);
    stateObj.after = stateObj.next;
  } else {
    if (stateObj.previous.length === 0) return;
    stateObj.after = stateObj.previous.pop();
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", tokenGiven);
  $("token-dialog").addEventListener("cancel", (e) => e.preventDefault());
  $("live").addEventListener("change", schedule);
  $("jobs-prev").addEventListener("click", () => page(listState, false));
  $("jobs-next").addEventListener("click", () => page(listState, true));
  $("files-prev").addEventListener("click", () => page(jobState, false));
  $("files-next").addEventListener("click", () => page(jobState, true));
  $("file-state").addEventListener("change", (e) => {
    Object.assign(jobState, { fileState: e.target.value, after: null, previous: [], next: null });
    refresh();
  });
  $("do-rescan").addEventListener("click", (e) =>
    act(e.currentTarget, "POST", "/rescan", "Rescan requested."));
  $("do-retry").addEventListener("click", (e) =>
    act(e.currentTarget, "POST", "/retry", "Failed files are queued again."));
  $("do-delete").addEventListener("click", () => {
    $("delete-dialog").returnValue = "";
    $("delete-dialog").showModal();
  });
  $("delete-dialog").addEventListener("close", async () => {
    if ($("delete-dialog").returnValue !== "delete") return;
    const id = jobState.id;
    try {
      await api("DELETE", "/uploads/" + encodeURIComponent(id));
      say("Job " + id + " deleted; its objects stay in S3.");
      location.hash = "#/";
    } catch (e) {
      say(e.message, true);
    }
  });
  window.addEventListener("hashchange", () => { route(); $("main").focus(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  route();
  schedule();
});
