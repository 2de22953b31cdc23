// streamrec's JavaScript client: one ES module, no build step, for browsers and Node 20+.
//
//   import { StreamrecClient } from "./streamrec.js";
//   const client = new StreamrecClient({ baseUrl: "http://127.0.0.1:8000", apiKey });
//   client.track("u1", "i1", "view");                      // batched
//   const rec = await client.recommendations("u1", { k: 5, placement: "home" });
//   client.click(rec, rec.items[0].item_id);               // carries rec.recommendation_id
//   await client.close();                                  // sends what is buffered
//
// The rules are the Python client's (clients/python): every event gets an event_id (a
// UUID) when tracked, so a batch sent again cannot count twice; events go by size or time;
// 503, 429, timeouts and network errors are retried with exponential backoff and full
// jitter, never sooner than Retry-After; a batch refused as too large (413) or for one
// invalid event (422) is sent in halves, so only the invalid event is refused.
// In a browser, when the page is hidden or left (visibilitychange, pagehide) what is
// buffered goes out with navigator.sendBeacon, which outlives the page; a beacon cannot
// carry X-API-Key, so with an apiKey the client uses fetch(..., {keepalive: true}) instead.

const RETRIED_STATUSES = new Set([429, 503]);
const SPLIT_ON = new Set([413, 422]);
// Browsers cap what a beacon or a keepalive request may carry (64 KiB in flight).
const PAGE_HIDE_BYTES = 60000;

export class StreamrecError extends Error {
  constructor(message, status = null, detail = null) {
    super(message);
    this.name = "StreamrecError";
    this.status = status;
    this.detail = detail;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function newEventId() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // a version 4 UUID, also where randomUUID is not
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // offered (a page served over plain http)
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Retry-After in milliseconds (delta-seconds or an HTTP date), or null. */
export function retryAfterMs(response, now = Date.now()) {
  const value = response.headers.get("Retry-After");
  if (value === null) return null;
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Math.max(0, Number(value) * 1000);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, when - now);
}

export class StreamrecClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl where the API answers
   * @param {string} [options.apiKey] sent as X-API-Key
   * @param {number} [options.batchSize=100] events per POST /events
   * @param {number} [options.flushIntervalMs=1000] longest an event waits in the buffer
   * @param {number} [options.maxBuffered=100000] events kept while the API cannot take them
   * @param {number} [options.timeoutMs=5000] per HTTP attempt
   * @param {number} [options.maxAttempts=5] per request, the first included
   * @param {number} [options.backoffMs=200] first backoff; doubles, at most 10 s
   */
  constructor({ baseUrl, apiKey = null, batchSize = 100, flushIntervalMs = 1000,
                maxBuffered = 100000, timeoutMs = 5000, maxAttempts = 5,
                backoffMs = 200 } = {}) {
    if (!baseUrl) throw new TypeError("baseUrl: required");
    if (!(batchSize >= 1)) throw new RangeError(`batchSize: must be at least 1, got ${batchSize}`);
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.batchSize = batchSize;
    this.flushIntervalMs = flushIntervalMs;
    this.maxBuffered = maxBuffered;
    this.timeoutMs = timeoutMs;
    this.maxAttempts = maxAttempts;
    this.backoffMs = backoffMs;
    this.retries = 0;
    this.refused = []; // [{event, error}] the API refused as invalid, the latest 1,000
    this._buffer = [];
    this._sending = Promise.resolve();
    this._timer = null;
    this._closed = false;
    this._onPageHide = null;
    if (typeof window !== "undefined" && typeof document !== "undefined") {
      this._onPageHide = (event) => {
        if (event.type === "pagehide" || document.visibilityState === "hidden") {
          this.flushOnPageHide();
        }
      };
      window.addEventListener("pagehide", this._onPageHide);
      document.addEventListener("visibilitychange", this._onPageHide);
    }
  }

  get buffered() {
    return this._buffer.length;
  }

  // -- lists ---------------------------------------------------------------------------

  async recommendations(userId, { k = 10, placement, model, category, filter,
                                  filterValues } = {}) {
    const response = await this._request("GET", "/recommendations", {
      query: { user_id: userId, k, placement, model, category, filter,
               filter_values: filterValues } });
    return response.json();
  }

  async similar(itemId, { k = 10, ...rest } = {}) {
    const response = await this._request(
      "GET", `/items/${encodeURIComponent(itemId)}/similar`, { query: { k, ...rest } });
    return response.json();
  }

  async popular({ k = 10, category, ...rest } = {}) {
    const response = await this._request("GET", "/popular",
                                         { query: { k, category, ...rest } });
    return response.json();
  }

  // -- events --------------------------------------------------------------------------

  /** Buffer one event; returns its event_id. `fields`: value, recommendation_id,
   * context, timestamp (leave it out: the server's clock decides attribution). */
  track(userId, itemId, eventType, fields = {}) {
    if (this._closed) throw new StreamrecError("track: the client is closed");
    if (this._buffer.length >= this.maxBuffered) {
      throw new StreamrecError(
        `track: ${this._buffer.length} events are waiting for the API already (maxBuffered)`);
    }
    if (fields.value !== undefined && fields.value !== null && !Number.isFinite(fields.value)) {
      throw new RangeError(`value: must be a finite number, got ${fields.value}`);
    }
    const event = { event_id: fields.event_id ?? newEventId(), user_id: userId,
                    item_id: itemId, event_type: eventType };
    for (const name of ["value", "recommendation_id", "context", "timestamp"]) {
      if (fields[name] !== undefined && fields[name] !== null) event[name] = fields[name];
    }
    this._buffer.push(event);
    if (this._buffer.length >= this.batchSize) {
      this.flush().catch(() => {}); // what failed stays buffered for the next flush
    } else if (this._timer === null) {
      this._timer = setTimeout(() => {
        this._timer = null;
        this.flush().catch(() => {});
      }, this.flushIntervalMs);
      this._timer.unref?.(); // Node: a pending flush alone does not keep the process up
    }
    return event.event_id;
  }

  /** Track `eventType` on `itemId` from the list `recommendations` (credits its variant). */
  click(recommendations, itemId, eventType = "click", fields = {}) {
    return this.track(recommendations.user_id, itemId, eventType,
                      { ...fields, recommendation_id: recommendations.recommendation_id });
  }

  /** Send everything buffered. Rejects with StreamrecError if the API did not take it
   * within the retries (it stays buffered) or refused some events as invalid (those are
   * dropped, kept in `refused`; the rest are sent). */
  flush() {
    const run = this._sending.then(() => this._flushNow());
    this._sending = run.catch(() => {});
    return run;
  }

  async _flushNow() {
    const refused = [];
    while (this._buffer.length > 0) {
      const batch = this._buffer.slice(0, this.batchSize);
      refused.push(...await this._send(batch));
      this._buffer.splice(0, batch.length);
    }
    if (refused.length > 0) {
      this.refused.push(...refused);
      this.refused.splice(0, Math.max(0, this.refused.length - 1000));
      const first = refused[0];
      throw new StreamrecError(
        `${refused.length} events refused, the first (${first.event.event_id}): ` +
        first.error.message, first.error.status, first.error.detail);
    }
  }

  /** Hand what is buffered to the browser, which sends it even as the page goes away. */
  flushOnPageHide() {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    const url = `${this.baseUrl}/events`;
    while (this._buffer.length > 0) {
      let count = Math.min(this.batchSize, this._buffer.length);
      let body = JSON.stringify(this._buffer.slice(0, count));
      while (body.length > PAGE_HIDE_BYTES && count > 1) {
        count = Math.ceil(count / 2);
        body = JSON.stringify(this._buffer.slice(0, count));
      }
      let handed = false;
      if (this.apiKey === null && typeof navigator !== "undefined" && navigator.sendBeacon) {
        handed = navigator.sendBeacon(url, new Blob([body], { type: "application/json" }));
      }
      if (!handed) {
        fetch(url, { method: "POST", body, keepalive: true,
                     headers: this._headers({ "Content-Type": "application/json" }) })
          .catch(() => {});
      }
      this._buffer.splice(0, count);
    }
  }

  /** Stop the timer and page listeners, send what is buffered. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    if (this._onPageHide !== null) {
      window.removeEventListener("pagehide", this._onPageHide);
      document.removeEventListener("visibilitychange", this._onPageHide);
    }
    await this.flush();
  }

  // -- the wire ------------------------------------------------------------------------

  async _send(batch) {
    const response = await this._request("POST", "/events", { body: batch, passing: SPLIT_ON });
    if (response.ok) return [];
    const error = await refusal(response);
    if (batch.length === 1) return [{ event: batch[0], error }];
    // Halves until the invalid event is alone; a half sent before the other failed goes
    // again later with the same event_ids, so the server counts it once.
    const middle = Math.floor(batch.length / 2);
    return [...await this._send(batch.slice(0, middle)),
            ...await this._send(batch.slice(middle))];
  }

  _headers(extra = {}) {
    return this.apiKey === null ? extra : { ...extra, "X-API-Key": this.apiKey };
  }

  _delayMs(attempt, retryAfter) {
    const backoff = Math.random() * Math.min(10000, this.backoffMs * 2 ** attempt);
    if (retryAfter === null) return backoff;
    // What the server asked, plus a little jitter so refused clients do not all return
    // at the same instant.
    return retryAfter + Math.random() * this.backoffMs;
  }

  async _request(method, path, { query = {}, body, passing = new Set() } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const init = { method, headers: this._headers(
      body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      let outcome;
      let wait;
      try {
        const response = await fetch(url, { ...init, signal: AbortSignal.timeout(this.timeoutMs) });
        if (response.ok || passing.has(response.status)) return response;
        if (!RETRIED_STATUSES.has(response.status)) throw await refusal(response);
        outcome = await refusal(response);
        wait = this._delayMs(attempt, retryAfterMs(response));
      } catch (error) {
        if (error instanceof StreamrecError) throw error;
        // A timeout or a network error: the request may have arrived, which is safe to
        // repeat because every event carries its own event_id.
        outcome = new StreamrecError(`${method} ${path}: ${error.message}`);
        wait = this._delayMs(attempt, null);
      }
      if (attempt + 1 >= this.maxAttempts) {
        throw new StreamrecError(`${outcome.message} (gave up after ${attempt + 1} attempts)`,
                                 outcome.status, outcome.detail);
      }
      this.retries += 1;
      await sleep(wait);
    }
  }
}

async function refusal(response) {
  let detail = null;
  try {
    detail = (await response.clone().json()).detail ?? null;
  } catch {
    detail = (await response.text()).slice(0, 500);
  }
  const path = new URL(response.url).pathname;
  return new StreamrecError(`${path}: ${response.status} ${JSON.stringify(detail)}`,
                            response.status, detail);
}
