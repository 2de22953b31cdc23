// Live metrics drawn with uPlot: what /dashboard and the console's metrics page show.
// LiveMetrics.view(root, source) builds the charts, the variants' table and the figures
// under root and draws the snapshots of /metrics/stream into them; the caller subscribes.
"use strict";
const LiveMetrics = (() => {
  const KEEP = 300; // points per series (5 minutes at one snapshot a second)
  // The x axis spans the data's own range, and at least WINDOW seconds from the first
  // point: uPlot's own range for a single point spans years, which read as nothing.
  const WINDOW = 60;
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

  function timeRange(u, min, max) {
    if (min == null || max == null) { return [min, max]; }
    return [min, Math.max(max, min + WINDOW)];
  }

  const pct = (x) => (100 * x).toFixed(2) + "%";
  const interval = (pair) => `[${pct(pair[0])}, ${pct(pair[1])}]`;

  // Every string from the server is written as text (textContent), never parsed as HTML:
  // a name is data, whoever chose it.
  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = String(text);
    row.appendChild(td);
  }

  const CHARTS = [
    ["chart-events", "Events applied per second"],
    ["chart-freshness", "Freshness: Kafka record → state applied (ms)"],
    ["chart-latency", "API latency, this process (ms)"],
    ["chart-take", "Take-rate per variant (lists clicked / lists shown)"],
  ];
  const COLUMNS = ["placement", "variant", "lists", "clicks", "CTR (95% CI)", "take-rate (95% CI)",
    "conversions", "lift vs control", "p"];

  function element(tag, attributes, ...children) {
    const made = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) { made.setAttribute(name, value); }
    made.append(...children);
    return made;
  }

  // The page's parts under `root`: status line, four charts, the variants' table.
  function build(root, source) {
    root.replaceChildren(
      element("div", { id: "status" }, element("span", { id: "state" }, `connecting to ${source} …`), " · ",
        element("span", { id: "updates", "data-count": "0" }, "0"), " updates"),
      element("div", { class: "grid" }, ...CHARTS.map(([id, title]) =>
        element("div", { class: "card" }, element("h2", {}, title), element("div", { id })))),
      element("div", { class: "card below" }, element("h2", {}, "Variants"),
        element("table", { id: "variants" },
          element("thead", {}, element("tr", {}, ...COLUMNS.map((name) => element("th", {}, name)))),
          element("tbody")),
        element("p", {}, "System: ", element("span", { id: "lag" }, "–"), " records of consumer lag · ",
          element("span", { id: "applied" }, "–"), " events applied")));
  }

  // Builds the parts under `root` and answers {draw(snapshot), reset(), status(text)}.
  function view(root, source) {
    build(root, source);
    const charts = {};
    const find = (selector) => root.querySelector(selector);

    function makeChart(id, names) {
      const element = find("#" + id);
      const series = [{}].concat(names.map((name, i) => ({ label: name, stroke: palette[i % palette.length], width: 2 })));
      const data = [[]].concat(names.map(() => []));
      const width = Math.max(320, element.clientWidth || 440);
      const chart = new uPlot({ width, height: 220, series, axes: [{}, { size: 64 }], scales: { x: { time: true, range: timeRange } } }, data, element);
      charts[id] = { chart, data, names, element };
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
      const x = entry.chart.scales.x;
      entry.element.dataset.xSpan = String(x.max - x.min); // seconds the axis spans
      document.body.dataset.drawn = "true";
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
      find("#variants tbody").replaceChildren(...rows);
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
      find("#lag").textContent = snapshot.consumer_lag ?? "–";
      find("#applied").textContent = snapshot.events_applied;
      const updates = find("#updates");
      updates.dataset.count = String(Number(updates.dataset.count) + 1);
      updates.textContent = updates.dataset.count;
    }

    function reset() {
      for (const entry of Object.values(charts)) { entry.chart.destroy(); }
      for (const id of Object.keys(charts)) { delete charts[id]; }
    }

    function status(text) { find("#state").textContent = text; }

    return { draw, reset, status };
  }

  return { view, WINDOW };
})();
