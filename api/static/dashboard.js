// Live dashboard: subscribes to /metrics/stream (Server-Sent Events) and draws with uPlot.
"use strict";
const KEEP = 300; // points per series (5 minutes at one snapshot a second)
const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const charts = {};

function makeChart(id, names) {
  const element = document.getElementById(id);
  const series = [{}].concat(names.map((name, i) => ({ label: name, stroke: palette[i % palette.length], width: 2 })));
  const data = [[]].concat(names.map(() => []));
  const width = Math.max(320, element.clientWidth || 440);
  const chart = new uPlot({ width, height: 220, series, scales: { x: { time: true } } }, data, element);
  charts[id] = { chart, data, names };
  return charts[id];
}

function push(id, names, time, values) {
  let entry = charts[id];
  if (!entry || entry.names.join("|") !== names.join("|")) {
    if (entry) { entry.chart.destroy(); }
    entry = makeChart(id, names);
  }
  entry.data[0].push(time);
  values.forEach((value, i) => entry.data[i + 1].push(value));
  if (entry.data[0].length > KEEP) { entry.data.forEach((column) => column.shift()); }
  entry.chart.setData(entry.data);
  document.body.dataset.drawn = "true";
}

const pct = (x) => (100 * x).toFixed(2) + "%";
const interval = (pair) => `[${pct(pair[0])}, ${pct(pair[1])}]`;

// Every string from the server is written as text (textContent), never parsed as HTML: a
// name is data, whoever chose it.
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  row.appendChild(td);
}

function table(snapshot) {
  const rows = [];
  for (const [placement, report] of Object.entries(snapshot.placements || {})) {
    for (const [variant, m] of Object.entries(report.variants)) {
      const c = (report.comparisons || {})[variant];
      const row = document.createElement("tr");
      cell(row, placement);
      cell(row, variant + (variant === report.control ? " (control)" : ""));
      cell(row, m.impressions);
      cell(row, m.clicks);
      cell(row, `${pct(m.ctr)} ${interval(m.ctr_interval)}`);
      cell(row, `${pct(m.take_rate)} ${interval(m.take_rate_interval)}`);
      cell(row, m.conversions);
      // lift and p are null while a comparison has not enough data: its verdict says so.
      cell(row, !c ? "–" : c.lift === null ? c.verdict : (100 * c.lift).toFixed(1) + "%");
      cell(row, !c || c.p_value === null ? "–" : c.p_value.toFixed(3));
      rows.push(row);
    }
  }
  document.querySelector("#variants tbody").replaceChildren(...rows);
}

function draw(snapshot) {
  const t = snapshot.time;
  push("chart-events", ["events/s"], t, [snapshot.events_per_second]);
  push("chart-freshness", ["p50", "p99"], t, [snapshot.freshness_ms.p50, snapshot.freshness_ms.p99]);
  push("chart-latency", ["p50", "p99"], t, [snapshot.api_latency_ms.p50, snapshot.api_latency_ms.p99]);
  const names = [], values = [];
  for (const [placement, report] of Object.entries(snapshot.placements || {})) {
    for (const [variant, m] of Object.entries(report.variants)) {
      names.push(`${placement}/${variant}`);
      values.push(m.take_rate);
    }
  }
  if (names.length) { push("chart-take", names, t, values); }
  table(snapshot);
  document.getElementById("lag").textContent = snapshot.consumer_lag ?? "–";
  document.getElementById("applied").textContent = snapshot.events_applied;
  const updates = document.getElementById("updates");
  updates.dataset.count = String(Number(updates.dataset.count) + 1);
  updates.textContent = updates.dataset.count;
}

const source = new EventSource("/metrics/stream");
source.addEventListener("snapshot", (message) => {
  document.getElementById("state").textContent = "live from /metrics/stream";
  draw(JSON.parse(message.data));
});
source.onerror = () => { document.getElementById("state").textContent = "reconnecting …"; };
