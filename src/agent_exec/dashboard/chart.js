// The activity picture: jobs started per interval, stacked by their current state.
import { $, COLOURS, clear, h, svg } from "./dom.js";

const ORDER = ["failed", "nonzero", "killed", "exited", "running", "created", "unknown"];
const NAMES = { nonzero: "exited \u2260 0" };
const LABELS = {
  hour: ["60 min ago", "45", "30", "15", "now"],
  day: ["24 h ago", "18", "12", "6", "now"],
};

function bucketLabel(activity, index) {
  const from = new Date((activity.start + index * activity.bucket_seconds) * 1000);
  const to = new Date(from.getTime() + activity.bucket_seconds * 1000);
  const fmt = (d) => d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return `${fmt(from)}\u2013${fmt(to)}`;
}

export function renderActivity(activity) {
  const chart = $("activity");
  clear(chart);
  const width = Math.max(200, chart.clientWidth || 600);
  const height = 120;
  const top = 8;
  const bottom = 18;
  const left = 26;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const buckets = activity.buckets;
  const totals = buckets.map((b) => ORDER.reduce((sum, s) => sum + (b[s] || 0), 0));
  const peak = Math.max(1, ...totals);
  const plot = height - top - bottom;
  const slot = (width - left) / buckets.length;
  const bar = Math.max(1, slot - (slot > 6 ? 2 : 0.5));

  const marks = peak >= 2 && peak % 2 === 0 ? [0, peak / 2, peak] : [0, peak];
  for (const mark of marks) {
    const y = top + plot * (1 - mark / peak);
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }));
    if (mark > 0) {
      const label = svg("text", { x: left - 4, y: y + 3, "text-anchor": "end", class: "axis" });
      label.textContent = String(mark);
      chart.append(label);
    }
  }
  buckets.forEach((bucket, i) => {
    if (!totals[i]) return;
    let y = top + plot;
    const group = svg("g");
    const title = svg("title");
    const parts = ORDER.filter((s) => bucket[s]).map((s) => `${bucket[s]} ${NAMES[s] || s}`);
    title.textContent = `${bucketLabel(activity, i)}: ${parts.join(", ")}`;
    group.append(title);
    for (const state of ORDER) {
      const n = bucket[state] || 0;
      if (!n) continue;
      const h2 = (n / peak) * plot;
      y -= h2;
      group.append(svg("rect", { x: left + i * slot, y, width: bar, height: h2, rx: 1.5, fill: COLOURS[state] }));
    }
    chart.append(group);
  });
  const labels = LABELS[activity.window] || [];
  labels.forEach((text, i) => {
    const x = left + ((width - left) * i) / (labels.length - 1);
    const anchor = i === 0 ? "start" : i === labels.length - 1 ? "end" : "middle";
    const label = svg("text", { x, y: height - 4, "text-anchor": anchor, class: "axis" });
    label.textContent = text;
    chart.append(label);
  });
  if (!totals.some(Boolean)) {
    const label = svg("text", { x: (width + left) / 2, y: top + plot / 2, "text-anchor": "middle", class: "axis" });
    label.textContent = `no jobs started in the last ${activity.window}`;
    chart.append(label);
  }

  const legend = $("legend");
  clear(legend);
  const sums = Object.fromEntries(ORDER.map((s) => [s, buckets.reduce((sum, b) => sum + (b[s] || 0), 0)]));
  for (const state of ORDER) {
    if (!sums[state] && ["unknown", "created", "nonzero"].includes(state)) continue;
    const swatch = h("i");
    swatch.style.background = COLOURS[state]; // CSSOM, allowed by the CSP (no inline style attribute)
    legend.append(h("span", {}, swatch, `${NAMES[state] || state} ${sums[state]}`));
  }
}
