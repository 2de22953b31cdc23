// Loaded by Chromium from the test's same-origin server (tests/clients/test_js_client.py):
// the client sends events and reads a list, reports to the test, then the page is left
// with one event still buffered, which only the page-hide beacon can deliver.
import { StreamrecClient } from "./streamrec.js";

const run = new URLSearchParams(location.search).get("run");
const report = (body) => fetch("report", { method: "POST", body: JSON.stringify(body) });

try {
  const client = new StreamrecClient({ baseUrl: location.origin, flushIntervalMs: 3600000 });
  for (const n of [0, 1, 2]) client.track(`${run}-user`, `${run}-item-${n}`, "view");
  await client.flush();
  const rec = await client.recommendations(`${run}-other`, { k: 3 });
  client.click(rec, rec.items[0].item_id);
  await client.flush();
  client.track(`${run}-user`, `${run}-beacon`, "view");
  const beacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, data) => beacon("beacon-used", "") && beacon(url, data);
  await report({ ok: true, rec, buffered: client.buffered });
  location.href = "blank.html"; // pagehide: the buffered event goes out as a beacon
} catch (error) {
  await report({ ok: false, error: String(error) });
}
