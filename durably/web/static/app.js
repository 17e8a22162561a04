// durably's dashboard: plain JavaScript, no build step. Every route and status
// comes from the server (the durably-config block), so the page and the API
// cannot disagree. Data is written with textContent only, never as HTML.
"use strict";

const CONFIG = JSON.parse(document.getElementById("durably-config").textContent);
const PAGE_SIZE = 20;
const state = { page: 0, selected: null, runs: [] };
const $ = (id) => document.getElementById(id);

function url(route, params) {
  const path = CONFIG.routes[route].replace(/^\//, ""); // relative to the mount
  const query = new URLSearchParams(params || {}).toString();
  return query ? `${path}?${query}` : path;
}

async function api(route, params, method) {
  const response = await fetch(url(route, params), { method: method || "GET" });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

function json(value) {
  return value === null || value === undefined ? "–" : JSON.stringify(value, null, 2);
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function showError(error) {
  const box = $("error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

// -- filters --------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  const status = $("filter-status").value;
  const job = $("filter-job").value;
  const label = $("filter-label").value.trim();
  if (status) params.append("status", status);
  if (job) params.append("jobName", job);
  if (label.includes("=")) {
    const [key, ...rest] = label.split("=");
    params.append(`label.${key.trim()}`, rest.join("=").trim());
  }
  return params;
}

function fillSelect(select, values) {
  const current = select.value;
  select.replaceChildren(el("option", { value: "", textContent: "all" }));
  for (const value of values) select.append(el("option", { value, textContent: value }));
  select.value = values.includes(current) ? current : "";
}

// -- the run list -------------------------------------------------------------

function runItem(run) {
  const badge = el("span", { className: `badge status-${run.status}`, textContent: run.status });
  const item = el(
    "li",
    { className: "run" + (run.id === state.selected ? " selected" : "") },
    badge,
    el("span", { className: "job", textContent: run.jobName }),
    el("span", { className: "when", textContent: when(run.createdAt) }),
  );
  item.dataset.runId = run.id;
  item.dataset.status = run.status;
  item.append(el("span", { className: "id", textContent: run.id }));
  const labels = Object.entries(run.labels || {}).map(([k, v]) => `${k}=${v}`).join("  ");
  item.append(el("span", { className: "labels", textContent: labels }));
  if (run.progress && run.isActive) {
    item.append(el("progress", { max: run.progress.total || 1, value: run.progress.current }));
  }
  item.addEventListener("click", () => select(run.id));
  return item;
}

async function loadRuns() {
  const params = filters();
  params.set("limit", String(PAGE_SIZE + 1));
  params.set("offset", String(state.page * PAGE_SIZE));
  try {
    const runs = await api("runs", params);
    state.runs = runs.slice(0, PAGE_SIZE);
    $("runs").replaceChildren(...state.runs.map(runItem));
    $("prev").disabled = state.page === 0;
    $("next").disabled = runs.length <= PAGE_SIZE;
    $("page").textContent = `page ${state.page + 1}`;
    showError(null);
  } catch (error) {
    showError(error);
  }
}

async function loadStats() {
  try {
    const [stats, workers] = await Promise.all([api("stats"), api("workers")]);
    $("stat-pending").textContent = stats.pending;
    $("stat-running").textContent = stats.running;
    $("stat-oldest").textContent = ago(stats.oldestPendingAgeMs);
    fillSelect($("filter-job"), stats.jobs);
    const live = workers.filter((w) => !w.isStale);
    $("stat-workers").textContent = live.length;
    $("workers").replaceChildren(
      ...workers.map((w) =>
        el("li", {
          className: w.isStale ? "stale" : "",
          textContent: `${w.id} (${w.engine}) · last heartbeat ${when(w.lastHeartbeatAt)}`,
        }),
      ),
    );
  } catch (error) {
    showError(error);
  }
}

// -- one run ----------------------------------------------------------------

function select(runId) {
  state.selected = runId;
  for (const item of document.querySelectorAll(".run")) {
    item.classList.toggle("selected", item.dataset.runId === runId);
  }
  loadDetail().then(() => {
    // on a phone the run opens below the list: bring it into view
    if (runId && window.innerWidth < 900) $("detail").scrollIntoView({ block: "start" });
  });
}

function stepItem(step) {
  const text = `${step.name} · ${step.status}` + (step.error ? ` · ${step.error}` : "");
  return el("li", { className: `status-${step.status}`, textContent: text });
}

function attemptItem(attempt) {
  const item = el("li", {
    className: `status-${attempt.status}`,
    textContent: `${attempt.stepName} · attempt ${attempt.runAttempt} · ${attempt.status} · ${when(attempt.startedAt)}`,
  });
  if (attempt.traceback) item.append(el("pre", { className: "traceback", textContent: attempt.traceback }));
  else if (attempt.error) item.append(el("pre", { textContent: attempt.error }));
  return item;
}

function logItem(log) {
  const where = log.stepName ? ` [${log.stepName}]` : "";
  const data = log.data === null || log.data === undefined ? "" : ` ${JSON.stringify(log.data)}`;
  return el("li", { className: `level-${log.level}`, textContent: `${when(log.createdAt)} ${log.level}${where} ${log.message}${data}` });
}

function showActions(run) {
  const allowed = {
    retry: CONFIG.retryable.includes(run.status),
    cancel: run.isActive,
    retrigger: run.isTerminal,
    delete: run.isTerminal,
  };
  for (const button of $("actions").querySelectorAll("button")) {
    button.hidden = !allowed[button.dataset.action];
  }
}

async function loadDetail() {
  const runId = state.selected;
  const pane = $("detail");
  if (!runId) {
    pane.hidden = true;
    document.querySelector("main").classList.remove("with-detail");
    return;
  }
  try {
    const params = { runId };
    const [run, steps, attempts, logs] = await Promise.all([
      api("run", params), api("steps", params), api("attempts", params), api("logs", params),
    ]);
    if (state.selected !== runId) return;
    pane.hidden = false;
    pane.dataset.runId = run.id;
    pane.dataset.status = run.status;
    document.querySelector("main").classList.add("with-detail");
    $("detail-title").textContent = `${run.jobName} · ${run.status}`;
    $("detail-meta").textContent =
      `${run.id} · attempt ${run.attempt} · queue ${run.queue} · created ${when(run.createdAt)}` +
      (run.completedAt ? ` · ended ${when(run.completedAt)}` : "");
    const progress = run.progress;
    $("detail-progress").replaceChildren(
      ...(progress ? [el("progress", { max: progress.total || 1, value: progress.current }),
        el("span", { textContent: ` ${progress.current}/${progress.total ?? "?"} ${progress.message || ""}` })] : []),
    );
    $("detail-input").textContent = json(run.input);
    $("detail-output").textContent = run.error ? run.error : json(run.output);
    $("detail-steps").replaceChildren(...steps.map(stepItem));
    $("detail-attempts").replaceChildren(...attempts.map(attemptItem));
    $("detail-logs").replaceChildren(...logs.map(logItem));
    showActions(run);
  } catch (error) {
    if (String(error.message).includes("not found")) {
      state.selected = null;
      loadDetail();
    } else {
      showError(error);
    }
  }
}

async function act(action) {
  const runId = state.selected;
  if (!runId) return;
  if (action === "delete" && !window.confirm("Delete this run with its steps and logs?")) return;
  const [route, method] = {
    retry: ["retry", "POST"],
    cancel: ["cancel", "POST"],
    retrigger: ["retrigger", "POST"],
    delete: ["run", "DELETE"],
  }[action];
  try {
    const result = await api(route, { runId }, method);
    if (action === "retrigger" && result.runId) state.selected = result.runId;
    if (action === "delete") state.selected = null;
    showError(null);
  } catch (error) {
    showError(error);
  }
  refresh();
}

// -- live updates ---------------------------------------------------------------

let pending = null;
function refresh() {
  // Events come in bursts (a run's steps): one refresh per burst.
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    loadRuns();
    loadStats();
    loadDetail();
  }, 100);
}

let source = null;
function listen() {
  if (source) source.close();
  const params = filters();
  params.delete("status"); // the stream has no status filter: a run changes status
  source = new EventSource(url("runsSubscribe", params));
  source.onopen = () => { $("live").textContent = "● live"; $("live").classList.add("on"); };
  source.onerror = () => { $("live").textContent = "○ reconnecting"; $("live").classList.remove("on"); };
  source.onmessage = () => refresh();
}

function start() {
  fillSelect($("filter-status"), CONFIG.statuses);
  const apply = () => { state.page = 0; loadRuns(); listen(); };
  $("filters").addEventListener("change", apply);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  $("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadRuns(); });
  $("next").addEventListener("click", () => { state.page += 1; loadRuns(); });
  $("close").addEventListener("click", () => select(null));
  for (const button of $("actions").querySelectorAll("button")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  loadRuns();
  loadStats();
  listen();
  setInterval(loadStats, 5000); // ages and worker heartbeats move without events
}

start();
