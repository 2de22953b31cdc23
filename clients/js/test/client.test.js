// Node's test runner against a real streamrec API: STREAMREC_URL names it (an API with a
// worker of its own, so /popular holds only what tests sent). tests/clients/test_js_client.py
// starts the stack and runs this file.
import assert from "node:assert/strict";
import { test } from "node:test";

import { StreamrecClient, StreamrecError, retryAfterMs } from "../streamrec.js";

const url = process.env.STREAMREC_URL;
if (!url) throw new Error("STREAMREC_URL: the API to test against (test_js_client.py sets it)");
const run = Math.random().toString(16).slice(2, 10);

async function listed(itemId) {
  const body = await (await fetch(`${url}/popular?k=500`)).json();
  return body.items.some((item) => item.item_id === itemId);
}

async function eventually(predicate, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

test("events arrive in batches and a list comes back", async () => {
  const items = [0, 1, 2, 3].map((n) => `${run}-item-${n}`);
  const client = new StreamrecClient({ baseUrl: url, batchSize: 12 });
  const ids = [];
  for (const user of [0, 1, 2]) {
    for (const item of items) ids.push(client.track(`${run}-user-${user}`, item, "view"));
  }
  assert.equal(new Set(ids).size, 12);
  assert.match(ids[0], /^[0-9a-f]{32}$/);
  await client.flush(); // more than the API takes per request: sent in halves
  assert.ok(await eventually(async () => {
    for (const item of items) if (!(await listed(item))) return false;
    return true;
  }), "the events did not arrive");
  const rec = await client.recommendations(`${run}-user-0`, { k: 5 });
  assert.ok(rec.recommendation_id && rec.variant && rec.model);
  assert.ok(rec.items.length > 0);
  assert.ok(rec.items.every((item) => !items.includes(item.item_id)));
  const similar = await client.similar(items[0], { k: 3 });
  assert.ok(similar.items.every((item) => items.slice(1).includes(item.item_id)));
  const popular = await client.popular({ k: 500 });
  assert.ok(items.every((item) => popular.items.some((i) => i.item_id === item)));
  client.click(rec, rec.items[0].item_id);
  assert.equal(client._buffer[0].recommendation_id, rec.recommendation_id);
  await client.close();
  assert.equal(client.buffered, 0);
});

test("events are sent by time without a flush", async () => {
  const item = `${run}-timed`;
  const client = new StreamrecClient({ baseUrl: url, flushIntervalMs: 200 });
  client.track(`${run}-timed-user`, item, "view");
  assert.ok(await eventually(() => client.buffered === 0, 10000));
  assert.ok(await eventually(() => listed(item)));
  await client.close();
});

test("an invalid event is refused alone and named", async () => {
  const client = new StreamrecClient({ baseUrl: url, batchSize: 10 });
  const good = [0, 1, 2].map((n) => `${run}-good-${n}`);
  client.track(`${run}-u`, good[0], "view");
  client.track(`${run}-u`, good[1], "view");
  assert.throws(() => client.track(`${run}-u`, "x", "view", { value: NaN }), RangeError);
  const bad = client.track(`${run}-u`, `${run}-bad`, "teleport");
  client.track(`${run}-u`, good[2], "view");
  await assert.rejects(client.close(), (error) => error instanceof StreamrecError &&
    error.status === 422 && /event_type/.test(error.message));
  assert.deepEqual(client.refused.map((r) => r.event.event_id), [bad]);
  assert.ok(await eventually(async () => (await Promise.all(good.map(listed))).every(Boolean)));
});

test("connection errors are retried, then reported", async () => {
  const client = new StreamrecClient({ baseUrl: "http://127.0.0.1:9", maxAttempts: 3,
                                       backoffMs: 10 });
  await assert.rejects(client.popular(), /gave up after 3 attempts/);
  assert.equal(client.retries, 2);
});

test("Retry-After is read as seconds or a date", () => {
  const at = (value) => ({ headers: new Headers(value === null ? {} : { "Retry-After": value }) });
  assert.equal(retryAfterMs(at("2")), 2000);
  assert.equal(retryAfterMs(at(null)), null);
  assert.equal(retryAfterMs(at("Wed, 21 Oct 2015 07:28:05 GMT"),
                            Date.parse("Wed, 21 Oct 2015 07:28:00 GMT")), 5000);
});
