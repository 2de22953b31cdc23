// Live dashboard: subscribes to /metrics/stream (Server-Sent Events); live-metrics.js draws.
"use strict";
const live = LiveMetrics.view(document.getElementById("live"), "/metrics/stream");
const source = new EventSource("/metrics/stream");
source.addEventListener("snapshot", (message) => {
  live.status("live from /metrics/stream");
  live.draw(JSON.parse(message.data));
});
source.onerror = () => { live.status("reconnecting …"); };
