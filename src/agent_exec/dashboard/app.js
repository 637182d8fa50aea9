// agent-exec dashboard: the job table, the job view, the token, and the polling loop.
// Plain ES modules, no build step; every value from the server is rendered as text.
import { renderActivity } from "./chart.js";
import {
  $,
  STATES,
  append,
  badge,
  clear,
  commandText,
  formatBytes,
  formatDuration,
  h,
  jobDurationMs,
  localTime,
  parseTs,
  relativeTime,
  resultNode,
  stateIcon,
} from "./dom.js";
import { LogView } from "./logview.js";

const LIST_EVERY_MS = 2000;
const JOB_EVERY_MS = 1000;
const TOKEN_KEY = "agent-exec-dashboard-token";
const TERMINAL = new Set(["exited", "failed", "killed"]);

const app = {
  config: null,
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  view: "list",
  jobId: null,
  job: null,
  filters: { state: "", tag: "", q: "", scope: "all", window: "hour" },
  lastList: null,
  timer: null,
  busy: false,
  again: false,
  locked: false,
};
const logView = new LogView($("log"), $("log-note"));

// -- server access -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (app.token) headers.Authorization = `Bearer ${app.token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (method === "POST") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, init);
  let doc = null;
  try {
    doc = await response.json();
  } catch {
    doc = null;
  }
  if (!response.ok) {
    const error = doc && doc.error ? doc.error : {};
    throw new ApiError(response.status, error.code || "http_error", error.message || `HTTP ${response.status}`);
  }
  return doc;
}

// -- live indicator, banner, token ----------------------------------------------------

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function showTokenForm(message, { locked = false } = {}) {
  app.locked = locked;
  $("lock").hidden = false;
  $("lock-text").textContent = message;
  $("token-cancel").hidden = locked;
  $("token-error").textContent = "";
  if (locked) {
    $("list-view").hidden = true;
    $("job-view").hidden = true;
  }
  $("token-input").focus();
}

function hideTokenForm() {
  $("lock").hidden = true;
  app.locked = false;
}

function updateTokenButton() {
  const button = $("token-button");
  const needed = app.config && app.config.token_required;
  button.hidden = !needed;
  button.textContent = app.token ? "Forget token" : "Enter token";
}

async function submitToken(event) {
  event.preventDefault();
  const typed = $("token-input").value.trim();
  if (!typed) return;
  const previous = app.token;
  app.token = typed;
  try {
    await api("/ui/api/session", { method: "POST" });
  } catch (error) {
    app.token = previous;
    $("token-error").textContent = error.status === 401 ? "That token was refused." : error.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, typed);
  $("token-input").value = "";
  hideTokenForm();
  updateTokenButton();
  route();
}

function forgetToken() {
  app.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  updateTokenButton();
  if (app.config.auth_reads) showLocked();
}

function showLocked() {
  clear($("job-rows"));
  showTokenForm("This server shows jobs only to holders of its token (--auth-reads).", { locked: true });
  setLive("paused", "token required");
}

// -- the loop ---------------------------------------------------------------------------

function schedule(ms) {
  clearTimeout(app.timer);
  app.timer = setTimeout(tick, ms);
}

/** Refresh now (after a filter change or an action), without overlapping a running poll. */
function kick() {
  if (app.busy) app.again = true;
  else schedule(0);
}

async function tick() {
  if (app.locked) return;
  if (document.hidden) {
    setLive("paused", "paused (tab hidden)");
    return; // visibilitychange restarts the loop
  }
  app.busy = true;
  try {
    if (app.view === "list") await refreshList();
    else await refreshJob();
    setLive("ok", `live \u00B7 ${new Date().toLocaleTimeString()}`);
    banner("");
  } catch (error) {
    if (error.status === 401 && app.config.auth_reads) {
      app.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      showLocked();
      return;
    }
    setLive("error", "disconnected");
    banner(error instanceof ApiError ? error.message : `Cannot reach the server (${error.message}).`);
  } finally {
    app.busy = false;
  }
  const again = app.again;
  app.again = false;
  schedule(again ? 0 : app.view === "list" ? LIST_EVERY_MS : JOB_EVERY_MS);
}

// -- the job table ---------------------------------------------------------------------

async function refreshList() {
  const f = app.filters;
  const query = new URLSearchParams({ scope: f.scope, window: f.window, limit: "200" });
  if (f.state) query.set("state", f.state);
  if (f.tag) query.set("tag", f.tag);
  if (f.q) query.set("q", f.q);
  const doc = await api(`/ui/api/jobs?${query}`);
  app.lastList = doc;
  renderList(doc);
}

function renderList(doc) {
  const now = Date.now();
  $("root-path").textContent = doc.root;
  $("root-path").title = `jobs root: ${doc.root}`;
  $("scope-cwd").title = doc.server_cwd;
  renderTiles(doc.counts);
  renderChips(doc.counts);
  renderActivity(doc.activity);
  const body = $("job-rows");
  clear(body);
  if (!doc.jobs.length) {
    const filtered = app.filters.state || app.filters.tag || app.filters.q || app.filters.scope !== "all";
    body.append(h("tr", {}, h("td", { colspan: 8, class: "empty", text: filtered ? "No job matches these filters." : "No jobs yet. Start one with agent-exec run -- <command>." })));
  }
  for (const job of doc.jobs) body.append(jobRow(job, now));
  let note = `${doc.matched} of ${doc.total} jobs match`;
  if (doc.jobs.length < doc.matched) note += ` \u00B7 showing the newest ${doc.jobs.length}`;
  if (doc.skipped) note += ` \u00B7 ${doc.skipped} unreadable job directories skipped`;
  $("list-footnote").textContent = note;
}

function jobRow(job, now) {
  const href = `#/job/${encodeURIComponent(job.job_id)}`;
  const started = parseTs(job.started_at) ?? parseTs(job.created_at);
  const command = commandText(job.command);
  const row = h(
    "tr",
    { "data-job-id": job.job_id, "data-state": job.state, onclick: () => (location.hash = href) },
    h("td", { class: "id" }, h("a", { href, title: job.job_id, text: job.short_job_id })),
    h("td", {}, badge(job)),
    h("td", { class: "cmd", title: command, text: command }),
    h("td", { class: "tags" }, (job.tags || []).map((tag) => h("span", { class: "tag", text: tag }))),
    h("td", { class: "cwd", title: job.cwd || "" }, h("span", { text: job.cwd || "" })),
    h("td", { class: "when", title: localTime(started), text: relativeTime(started, now) }),
    h("td", { class: "num", text: formatDuration(jobDurationMs(job, now)) }),
    h("td", { class: "result", title: [job.signal, job.reason].filter(Boolean).join(" \u00B7 ") }, resultNode(job)),
  );
  return row;
}

function renderTiles(counts) {
  const tiles = $("tiles");
  clear(tiles);
  for (const state of ["running", "failed", "killed", "exited"]) {
    const on = app.filters.state === state;
    const tile = h(
      "button",
      { type: "button", class: `tile s-${state}${on ? " on" : ""}`, "data-state": state, onclick: () => setStateFilter(on ? "" : state) },
      h("div", { class: "n", text: counts[state] || 0 }),
      h("div", { class: "label" }, h("span", { class: "icon", "aria-hidden": "true", text: stateIcon(state) }), state),
    );
    tiles.append(tile);
  }
}

function renderChips(counts) {
  const chips = $("state-chips");
  clear(chips);
  const total = STATES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const entries = [["", "all", total], ...STATES.filter((s) => s !== "unknown" || counts[s]).map((s) => [s, s, counts[s] || 0])];
  for (const [value, label, n] of entries) {
    const on = app.filters.state === value;
    chips.append(
      h(
        "button",
        { type: "button", class: `chip${on ? " on" : ""}`, "data-filter-state": value || "all", "aria-pressed": on, onclick: () => setStateFilter(value) },
        value ? h("span", { "aria-hidden": "true", text: stateIcon(value) }) : null,
        label,
        h("span", { class: "count", text: n }),
      ),
    );
  }
}

function setStateFilter(state) {
  app.filters.state = state;
  if (app.lastList) {
    renderTiles(app.lastList.counts);
    renderChips(app.lastList.counts);
  }
  kick();
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// -- the job view ------------------------------------------------------------------------

async function refreshJob() {
  const id = encodeURIComponent(app.jobId);
  const job = await api(`/ui/api/jobs/${id}`);
  if (app.view !== "job") return;
  app.job = job;
  renderJob(job);
  await logView.poll(api);
}

function field(label, value, { mono = false } = {}) {
  if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) return null;
  const dd = h("dd", { class: mono ? "mono" : "" });
  append(dd, [value instanceof Node ? value : String(value)]);
  return h("div", {}, h("dt", { text: label }), dd);
}

function timeField(label, text) {
  if (!text) return null;
  const ms = parseTs(text);
  return field(label, h("span", { title: text, text: `${localTime(ms)} (${relativeTime(ms, Date.now())})` }));
}

function renderJob(job) {
  const now = Date.now();
  const badgeBox = $("job-badge");
  clear(badgeBox);
  badgeBox.append(badge(job));
  const command = commandText(job.command);
  $("job-command").textContent = command;
  document.title = `${job.short_job_id} ${job.state} \u00B7 agent-exec`;
  const fields = $("job-fields");
  clear(fields);
  append(fields, [
    field("job id", job.job_id, { mono: true }),
    field("state", job.state),
    field("result", job.exit_code !== undefined || job.signal || job.reason ? resultNode(job) : null),
    field("duration", formatDuration(jobDurationMs(job, now))),
    timeField("created", job.created_at),
    timeField("started", job.started_at),
    timeField("finished", job.finished_at),
    field("pid", job.pid),
    field("cwd", job.cwd, { mono: true }),
    field("tags", (job.tags || []).length ? h("span", {}, job.tags.map((t) => h("span", { class: "tag", text: t }))) : null),
    field("timeout", job.timeout_ms ? formatDuration(job.timeout_ms) : null),
    field("env keys", (job.env_keys || []).join(", "), { mono: true }),
    field("log sizes", `stdout ${formatBytes(job.log_sizes.stdout)} \u00B7 stderr ${formatBytes(job.log_sizes.stderr)}`),
  ]);
  const running = job.state === "running";
  $("kill-button").disabled = !running;
  $("kill-signal").disabled = !running;
  $("delete-button").disabled = !TERMINAL.has(job.state);
  $("restart-button").disabled = !(running || TERMINAL.has(job.state));
}

/** Two-step buttons: the first click arms, the second (within 4 s) acts. */
function armed(button, label, action) {
  const idle = button.textContent;
  let timer = null;
  button.addEventListener("click", async () => {
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.textContent = label();
      timer = setTimeout(() => {
        button.classList.remove("armed");
        button.textContent = idle;
      }, 4000);
      return;
    }
    clearTimeout(timer);
    button.classList.remove("armed");
    button.textContent = idle;
    await action();
  });
}

function actionResult(text, good) {
  const el = $("action-result");
  el.textContent = text;
  el.className = `action-result ${good ? "good" : "bad"}`;
}

async function runAction(verb, body) {
  const id = encodeURIComponent(app.jobId);
  actionResult(`${verb}\u2026`, true);
  try {
    return await api(`/ui/api/jobs/${id}/${verb}`, { method: "POST", body });
  } catch (error) {
    actionResult(`${verb} refused: ${error.message}`, false);
    if (error.status === 401) showTokenForm(`The ${verb} needs the server's token.`);
    return null;
  }
}

function describeKill(doc) {
  const parts = [`sent ${doc.signal}`];
  if (doc.state) parts.push(`job is ${doc.state}`);
  if (doc.terminated_signal) parts.push(`terminated by ${doc.terminated_signal}`);
  if (doc.exit_code !== undefined) parts.push(`exit ${doc.exit_code}`);
  return parts.join(" \u00B7 ");
}

// -- routing and start-up --------------------------------------------------------------

function route() {
  if (app.locked) return;
  const match = /^#\/job\/([^/?]+)/.exec(location.hash);
  if (match) {
    const id = decodeURIComponent(match[1]);
    if (app.view !== "job" || app.jobId !== id) {
      app.view = "job";
      app.jobId = id;
      app.job = null;
      $("action-result").textContent = "";
      clear($("job-fields"));
      $("job-command").textContent = "";
      logView.reset(id, currentStream());
    }
  } else {
    app.view = "list";
    app.jobId = null;
    document.title = "agent-exec dashboard";
  }
  $("list-view").hidden = app.view !== "list";
  $("job-view").hidden = app.view !== "job";
  kick();
}

function currentStream() {
  return document.querySelector(".tabs button.on").dataset.stream;
}

function wire() {
  $("token-form").addEventListener("submit", submitToken);
  $("token-cancel").addEventListener("click", hideTokenForm);
  $("token-button").addEventListener("click", () => (app.token ? forgetToken() : showTokenForm("Enter the server's token to kill, restart or delete jobs.")));
  $("filter-tag").addEventListener("input", debounce((e) => ((app.filters.tag = e.target.value.trim()), kick()), 250));
  $("filter-text").addEventListener("input", debounce((e) => ((app.filters.q = e.target.value.trim()), kick()), 250));
  for (const button of document.querySelectorAll("[data-scope]")) {
    button.addEventListener("click", () => {
      app.filters.scope = button.dataset.scope;
      document.querySelectorAll("[data-scope]").forEach((b) => b.classList.toggle("on", b === button));
      kick();
    });
  }
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      app.filters.window = button.dataset.window;
      document.querySelectorAll("[data-window]").forEach((b) => b.classList.toggle("on", b === button));
      kick();
    });
  }
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => {
      document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("on", b === button));
      logView.reset(app.jobId, button.dataset.stream);
      kick();
    });
  }
  const follow = $("log-follow");
  follow.addEventListener("change", () => {
    logView.follow = follow.checked;
    if (follow.checked) logView.pre.scrollTop = logView.pre.scrollHeight;
  });
  logView.onFollowChange = (on) => (follow.checked = on);
  $("log-ansi").addEventListener("change", (e) => {
    logView.colours = e.target.checked;
    logView.reset(app.jobId, currentStream());
    kick();
  });
  $("log-download").addEventListener("click", download);
  armed($("kill-button"), () => `Confirm ${$("kill-signal").value}`, async () => {
    const doc = await runAction("kill", { signal: $("kill-signal").value });
    if (doc) actionResult(describeKill(doc), true);
    kick();
  });
  armed($("delete-button"), () => "Confirm delete", async () => {
    const doc = await runAction("delete", {});
    if (doc) location.hash = "#/"; // route() refreshes the list
  });
  armed($("restart-button"), () => (app.job && app.job.state === "running" ? `Confirm restart (${$("kill-signal").value})` : "Confirm restart"), async () => {
    const doc = await runAction("restart", { signal: $("kill-signal").value });
    if (doc) {
      actionResult(doc.joined ? "joined a restart already in progress" : `restarted \u00B7 job is ${doc.state}`, true);
      logView.reset(app.jobId, currentStream()); // same id, emptied logs
    }
    kick();
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => !document.hidden && kick());
}

/** Raw log download: a plain link when reads are open, else fetched with the token header. */
async function download() {
  const path = `/ui/api/jobs/${encodeURIComponent(app.jobId)}/raw/${encodeURIComponent(currentStream())}`;
  const name = `${(app.jobId || "job").slice(0, 7)}-${currentStream()}.log`;
  const link = h("a", { download: name });
  if (!app.config.auth_reads) {
    link.href = path;
    link.click();
    return;
  }
  try {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${app.token}` }, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    link.href = url;
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    actionResult(`download failed: ${error.message}`, false);
  }
}

async function start() {
  wire();
  try {
    app.config = await api("/ui/api/config");
  } catch (error) {
    setLive("error", "disconnected");
    banner(`Cannot load the dashboard configuration: ${error.message}`);
    return;
  }
  const select = $("kill-signal");
  for (const name of app.config.signals) select.append(h("option", { value: name, text: `SIG${name}` }));
  $("restart-button").hidden = !(app.config.actions || []).includes("restart");
  updateTokenButton();
  if (app.config.auth_reads && !app.token) {
    showLocked();
    return;
  }
  route();
}

start();
