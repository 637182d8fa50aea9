// DOM helpers. Everything that came from the server becomes text nodes or attribute
// values: no markup is ever parsed from a string (tests/test_dashboard.py checks the sinks).

/** Build an element: h("td", {class: "x", title: t}, child, "text", ...). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

export const $ = (id) => document.getElementById(id);

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

// -- presentation of job fields ------------------------------------------------------

export const STATES = ["running", "exited", "failed", "killed", "created", "unknown"];
const ICONS = {
  running: "\u25B6", // ▶
  exited: "\u2714", // ✔
  nonzero: "\u25B2", // ▲
  failed: "\u2716", // ✖
  killed: "\u25A0", // ■
  created: "\u25CB", // ○
  unknown: "?",
};
export const COLOURS = {
  running: "#2563eb",
  exited: "#16a34a",
  nonzero: "#d97706",
  failed: "#dc2626",
  killed: "#7c3aed",
  created: "#94a3b8",
  unknown: "#475569",
};

/** The visual class of a job: an exited job with a non-zero code is not a success. */
export function stateKind(job) {
  if (job.state === "exited" && job.exit_code !== undefined && job.exit_code !== 0) return "nonzero";
  return STATES.includes(job.state) ? job.state : "unknown";
}

export function stateIcon(state) {
  return ICONS[state] || "?";
}

export function badge(job) {
  const kind = stateKind(job);
  const label = kind === "nonzero" ? `exited ${job.exit_code}` : job.state;
  return h(
    "span",
    { class: `badge s-${kind}`, "data-state": job.state, title: label },
    h("span", { class: "icon", "aria-hidden": "true", text: ICONS[kind] }),
    label,
  );
}

/** Shell-like rendering of an argv (one word: the shell string as given). */
export function commandText(command) {
  if (!Array.isArray(command)) return "";
  if (command.length === 1) return command[0];
  return command.map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`)).join(" ");
}

export function parseTs(text) {
  if (!text) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function jobDurationMs(job, now) {
  if (job.duration_ms !== undefined) return job.duration_ms;
  const started = parseTs(job.started_at);
  if (started === null) return null;
  const end = parseTs(job.finished_at) ?? (job.state === "running" ? now : null);
  return end === null ? null : Math.max(0, end - started);
}

export function relativeTime(ms, now) {
  if (ms === null) return "";
  const s = Math.round((now - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function localTime(ms) {
  return ms === null ? "" : new Date(ms).toLocaleString();
}

// Linux numbers of the signals a job is commonly ended by (state.json records the number).
const SIGNAL_NAMES = { 1: "HUP", 2: "INT", 3: "QUIT", 6: "ABRT", 9: "KILL", 10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM" };

export function signalName(signal) {
  const text = String(signal);
  if (/^\d+$/.test(text)) return SIGNAL_NAMES[text] ? `SIG${SIGNAL_NAMES[text]}` : `signal ${text}`;
  return text.startsWith("SIG") ? text : `SIG${text}`;
}

/** Exit code / signal / reason in a few words, as a node. */
export function resultNode(job) {
  const parts = [];
  if (job.exit_code !== undefined) {
    parts.push(h("span", { class: job.exit_code === 0 ? "code-ok" : "code-bad", text: `exit ${job.exit_code}` }));
  }
  if (job.signal) parts.push(h("span", { class: "sig", title: `signal ${job.signal}`, text: signalName(job.signal) }));
  if (job.reason) parts.push(h("span", { class: "muted", text: job.reason }));
  const out = h("span");
  parts.forEach((part, i) => append(out, i ? [" \u00B7 ", part] : [part]));
  return out;
}
