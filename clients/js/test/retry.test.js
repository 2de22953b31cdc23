// Run by tests/clients/test_js_client.py while the API at STREAMREC_HUNG_URL has its
// Redis hung for a few seconds: reads are answered 503 with Retry-After until it resumes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { StreamrecClient } from "../streamrec.js";

const url = process.env.STREAMREC_HUNG_URL;
if (!url) throw new Error("STREAMREC_HUNG_URL: an API whose Redis is hung (see above)");
const retryAfterMs = Number(process.env.STREAMREC_RETRY_AFTER ?? "1") * 1000;

test("a 503 is retried no sooner than Retry-After asks", async () => {
  const client = new StreamrecClient({ baseUrl: url, maxAttempts: 10, backoffMs: 10 });
  const seen = [];
  const realFetch = globalThis.fetch;
  // The real fetch, noting when each exchange ended and began: the gaps are the client's.
  globalThis.fetch = async (...args) => {
    const sent = Date.now();
    const response = await realFetch(...args);
    seen.push({ sent, answered: Date.now(), status: response.status,
                retryAfter: response.headers.get("Retry-After") });
    return response;
  };
  try {
    const rec = await client.recommendations("js-retried", { k: 3 });
    assert.ok(rec.recommendation_id);
  } finally {
    globalThis.fetch = realFetch;
  }
  assert.equal(seen[0].status, 503);
  assert.equal(seen.at(-1).status, 200);
  assert.ok(client.retries >= 1);
  for (let n = 1; n < seen.length; n++) {
    assert.equal(seen[n - 1].retryAfter, String(retryAfterMs / 1000));
    assert.ok(seen[n].sent - seen[n - 1].answered >= retryAfterMs,
              `retried after ${seen[n].sent - seen[n - 1].answered} ms`);
  }
});
