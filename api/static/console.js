// The streamrec console: one page, navigated by the URL fragment (#/apps, #/users/u1 ...).
//
// The API key is typed once and kept in this tab's sessionStorage; every call sends it as
// X-API-Key, never in a URL, and nothing logs it. Everything the API returns is inserted
// as text (textContent, text nodes): never parsed as HTML, whoever chose a name or title.
"use strict";

const KEY = "streamrec.key";
const APP = "streamrec.app";
// cleanup: what the current page stops when one leaves it; token: which render is current
// (a page that awaits before drawing draws nothing once another page was chosen).
const state = { cleanup: [], token: 0 };

// --- DOM helpers ----------------------------------------------------------------------

// h("button", {class: "primary", onclick: f}, "Save"): an element; strings become text.
function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) { continue; }
    if (name.startsWith("on")) {
      element.addEventListener(name.slice(2), value);
    } else if (name === "value") {
      element.value = value;
    } else if (name === "checked") {
      element.checked = Boolean(value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) { continue; }
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let labels = 0;
// A labelled input: [label, input], the label tied to the input by id.
function field(text, input) {
  labels += 1;
  input.id = input.id || `field-${labels}`;
  return [h("label", { for: input.id }, text), input];
}

function page(...children) {
  const main = document.getElementById("page");
  main.replaceChildren();
  append(main, children);
  return main;
}

function say(text, ok = true) {
  const box = h("span", { class: ok ? "ok" : "error" }, text);
  document.getElementById("message").replaceChildren(box);
  document.body.dataset.message = ok ? "ok" : "error";
}

const number = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–");
const json = (value) => JSON.stringify(value, null, 2);

// --- the API --------------------------------------------------------------------------

class ApiError extends Error {}

function currentApp() { return sessionStorage.getItem(APP) || "default"; }

// An app's route: bare for default, else under /apps/{app}. `platform` routes never are.
function route(path, platform = false) {
  const app = currentApp();
  return platform || app === "default" ? path : `/apps/${encodeURIComponent(app)}${path}`;
}

// The API's error, as it says it: `detail` verbatim (a 422's entries, one a line).
function problem(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    return detail.map((entry) => `${entry.field || (entry.loc || []).join(".")}: ${entry.msg}`).join("\n");
  }
  if (typeof detail === "string") { return detail; }
  return `HTTP ${status}` + (body ? ": " + JSON.stringify(body) : "");
}

async function api(method, path, body, { platform = false, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) { headers["X-API-Key"] = key; }
  if (body !== undefined) { headers["Content-Type"] = "application/json"; }
  document.body.dataset.lastCall = `${method} ${route(path, platform)}`; // never the key
  const response = await fetch(route(path, platform), {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (error) { parsed = { detail: text }; }
  if (!response.ok) { throw new ApiError(problem(response.status, parsed)); }
  return parsed;
}

// Reads what a page shows; says only when that fails (an action's result stays shown).
async function fetched(what, run) {
  try {
    return await run();
  } catch (error) {
    say(error instanceof ApiError ? error.message : `${what} failed: ${error}`, false);
    return undefined;
  }
}

// Runs an action; shows its result (or the API's error) in the message line.
async function act(what, run) {
  try {
    const result = await run();
    say(what);
    return result;
  } catch (error) {
    say(error instanceof ApiError ? error.message : `${what} failed: ${error}`, false);
    return undefined;
  }
}

// --- key and app ----------------------------------------------------------------------

function showKeyState() {
  const held = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("key-form").hidden = held;
  document.getElementById("key-held").hidden = !held;
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  const key = input.value.trim();
  input.value = "";
  if (!key) { say("API key: paste a key first", false); return; }
  sessionStorage.setItem(KEY, key);
  showKeyState();
  say("key held for this tab (sessionStorage; sent as X-API-Key)");
  loadApps();
  render();
});

document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showKeyState();
  say("key forgotten");
  document.getElementById("key").focus();
});

document.getElementById("app-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const app = document.getElementById("app").value.trim() || "default";
  sessionStorage.setItem(APP, app);
  say(`app ${app}: every call goes to ${app === "default" ? "the bare routes" : "/apps/" + app + "/..."}`);
  render();
});

// The apps a platform key sees (GET /admin/apps); another key's list is refused, and
// its app is typed.
const appList = (answer) => answer || [];

async function loadApps() {
  try {
    const apps = appList(await api("GET", "/admin/apps", undefined, { platform: true }));
    const names = ["default", ...apps.map((app) => app.name).filter((name) => name !== "default")];
    document.getElementById("app-names").replaceChildren(...names.map((name) => h("option", { value: name })));
    return apps;
  } catch (error) {
    return null;
  }
}

// --- pages ----------------------------------------------------------------------------

function keysBox(app, keys) {
  const rows = Object.entries(keys).map(([role, key]) => h("tr", {},
    h("td", {}, role), h("td", {}, h("code", { class: "new-key" }, key)),
    h("td", {}, h("button", { type: "button", onclick: () => copy(key, role) }, `Copy ${role} key`))));
  return h("div", { class: "card keys", id: "new-keys" },
    h("h3", {}, `New keys of ${app}: shown this once`),
    h("table", {}, h("tbody", {}, rows)));
}

async function copy(text, role) {
  try {
    await navigator.clipboard.writeText(text);
    say(`${role} key copied`);
  } catch (error) {
    say(`${role} key: the browser refused the clipboard; select the key and copy it`, false);
  }
}

async function appsPage() {
  const list = h("div", { id: "apps-list" }, h("p", { class: "muted" }, "loading …"));
  const created = h("div", {});
  const name = h("input", { required: true, pattern: "[a-z][a-z0-9-]{0,31}", size: 20 });
  const settings = h("textarea", { rows: 4, spellcheck: "false" }, "{}");
  const form = h("form", { class: "card", id: "create-app", onsubmit: async (event) => {
    event.preventDefault();
    let parsed;
    try { parsed = JSON.parse(settings.value || "{}"); } catch (error) {
      say(`settings: not JSON (${error.message})`, false); return;
    }
    const answer = await act(`app ${name.value} created`, () =>
      api("POST", "/admin/apps", { name: name.value, settings: parsed }, { platform: true }));
    if (answer) {
      created.replaceChildren(keysBox(answer.name, answer.api_keys));
      await drawApps(list, created);
      loadApps();
    }
  } },
  h("h2", {}, "Create an app"),
  h("div", { class: "row" }, field("Name", name)),
  field("Settings (JSON: event_weights, decay_half_life_seconds, default_model, quotas …)", settings),
  h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Create app")));
  page(h("h2", {}, "Apps"), created, list, form);
  await drawApps(list, created);
}

async function drawApps(list, created) {
  let apps;
  try {
    apps = appList(await api("GET", "/admin/apps", undefined, { platform: true }));
  } catch (error) {
    list.replaceChildren(h("p", { class: "error" }, error.message));
    return;
  }
  const rows = [];
  for (const app of apps) {
    const roleText = Object.entries(app.keys || {}).map(([role, made]) => `${role} (made ${when(made.created_at)})`).join(", ");
    const editor = h("textarea", { rows: 3, spellcheck: "false" }, json(app.settings || {}));
    const role = h("select", {}, h("option", { value: "" }, "every role"),
      ["read", "write", "admin"].map((r) => h("option", { value: r }, r)));
    const confirm = h("span", { hidden: true },
      `Delete ${app.name} and all its state? `,
      h("button", { type: "button", class: "danger", onclick: async () => {
        const removed = await act(`app ${app.name} deleted`, () =>
          api("DELETE", `/admin/apps/${encodeURIComponent(app.name)}`, undefined, { platform: true }));
        if (removed !== undefined) {
          created.replaceChildren(h("div", { class: "card", id: "deleted" }, h("h3", {}, `Removed with ${app.name}`), h("pre", {}, json(removed))));
          if (currentApp() === app.name) { sessionStorage.setItem(APP, "default"); document.getElementById("app").value = "default"; }
          await drawApps(list, created);
          loadApps();
        }
      } }, `Yes, delete ${app.name}`),
      h("button", { type: "button", onclick: () => { confirm.hidden = true; } }, "Cancel"));
    const isDefault = app.name === "default";
    rows.push(h("tr", { "data-app": app.name },
      h("td", {}, h("strong", {}, app.name), h("div", { class: "muted" }, when(app.created_at))),
      h("td", {}, roleText || "–"),
      h("td", {}, isDefault ? h("pre", {}, json(app.settings || {})) : [editor,
        h("button", { type: "button", onclick: async () => {
          let parsed;
          try { parsed = JSON.parse(editor.value); } catch (error) { say(`settings: not JSON (${error.message})`, false); return; }
          const saved = await act(`settings of ${app.name} saved`, () =>
            api("PATCH", `/admin/apps/${encodeURIComponent(app.name)}`, { settings: parsed }, { platform: true }));
          if (saved) { await drawApps(list, created); }
        } }, "Save settings")]),
      h("td", {}, isDefault ? h("span", { class: "muted" }, "keys in STREAMREC_API_KEYS") : [
        h("div", { class: "row" }, field("Rotate", role),
          h("button", { type: "button", onclick: async () => {
            const body = role.value ? { role: role.value } : {};
            const answer = await act(`keys of ${app.name} rotated: the old ones no longer work`, () =>
              api("POST", `/admin/apps/${encodeURIComponent(app.name)}/keys`, body, { platform: true }));
            if (answer) { created.replaceChildren(keysBox(app.name, answer.api_keys)); }
          } }, "Rotate keys")),
        h("div", { class: "row" },
          h("button", { type: "button", onclick: () => { sessionStorage.setItem(APP, app.name); document.getElementById("app").value = app.name; say(`app ${app.name} selected`); } }, "Select"),
          h("button", { type: "button", class: "danger", onclick: () => { confirm.hidden = false; confirm.querySelector("button").focus(); } }, "Delete…"),
          confirm)])));
  }
  list.replaceChildren(h("table", { class: "card" },
    h("thead", {}, h("tr", {}, ["App", "Key roles", "Settings", "Keys and actions"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows)));
}

// A searchable, paged table: `fetchPage(query, cursor)` -> {entries, next_cursor}.
function pager(title, id, fetchPage, columns) {
  const query = h("input", { type: "search", size: 24 });
  const body = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Next page");
  const summary = h("span", { class: "muted" });
  let cursor = 0, shown = 0, asked = 0;
  async function load(reset) {
    if (reset) { cursor = 0; shown = 0; body.replaceChildren(); }
    const mine = ++asked;
    const answer = await fetched(title, () => fetchPage(query.value, cursor));
    if (!answer || mine !== asked) { return; } // a newer search or page was asked since
    for (const entry of answer.entries) {
      body.append(h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(entry)))));
    }
    shown += answer.entries.length;
    cursor = answer.next_cursor;
    more.hidden = cursor === null;
    summary.textContent = `${shown} shown${cursor === null ? " (the end)" : ""}`;
  }
  more.addEventListener("click", () => load(false));
  const form = h("form", { class: "row", onsubmit: (event) => { event.preventDefault(); load(true); } },
    field("Search", query), h("button", { type: "submit", class: "primary" }, "Search"), summary);
  const section = h("section", { class: "card", id },
    h("h2", {}, title), form,
    h("table", {}, h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", {}, name)))), body),
    h("div", { class: "row" }, more));
  return { section, load };
}

function catalogPage() {
  const items = pager("Items", "items", (query, cursor) =>
    api("GET", `/admin/items?${new URLSearchParams({ query, cursor, limit: 20 })}`), [
    ["Item", (e) => h("code", {}, e.item_id)],
    ["Title", (e) => (e.document ? String((e.document.properties || {}).title ?? "") : h("span", { class: "muted" }, "deleted"))],
    ["Categories", (e) => (e.document && Array.isArray(e.document.categories) ? e.document.categories.join(", ") : "")],
    ["Document", (e) => h("details", {}, h("summary", {}, "JSON"), h("pre", {}, json(e.document)))],
    ["Changed", (e) => when(e.changed_at)],
  ]);
  const users = pager("Users", "users", (query, cursor) =>
    api("GET", `/admin/users?${new URLSearchParams({ query, cursor, limit: 20 })}`), [
    ["User", (e) => h("a", { href: `#/users/${encodeURIComponent(e.user_id)}` }, e.user_id)],
    ["History", (e) => String(e.history_length)],
    ["Document", (e) => (e.document ? h("pre", {}, json(e.document)) : "–")],
  ]);
  page(h("div", { class: "columns catalog" }, items.section, users.section));
  items.load(true);
  users.load(true);
}

// Why an item: each model's reason, one line each.
function reasons(why) {
  const lines = [];
  const c = why.cooccurrence;
  if (c.from.length) {
    lines.push(`co-occurrence ${number(c.score)} from ` +
      c.from.map((f) => `${f.item_id} (${number(f.amount)})`).join(", "));
  }
  if (c.content > 0) { lines.push(`content similarity ${number(c.content)} to a recent item nobody else touched yet`); }
  if (why.mf.score !== null) { lines.push(`MF score ${number(why.mf.score)}` + (why.mf.rank ? ` (rank ${why.mf.rank})` : "")); }
  if (why.popular.rank !== null) { lines.push(`popularity ${number(why.popular.score, 2)} (rank ${why.popular.rank})`); }
  const fused = Object.entries(why.hybrid.sources).filter(([, s]) => s.rank !== null)
    .map(([source, s]) => `${source} #${s.rank} (+${number(s.points)})`);
  if (fused.length) {
    lines.push(`hybrid fusion: ${fused.join(", ")}` + (why.hybrid.leader !== "hybrid" ? `; serving ${why.hybrid.leader} alone` : ""));
  }
  return lines;
}

async function userPage(userId) {
  const input = h("input", { value: userId || "", size: 28, spellcheck: "false" });
  const k = h("input", { type: "number", min: 1, max: 100, value: 10, size: 4 });
  const form = h("form", { class: "row", onsubmit: (event) => {
    event.preventDefault();
    go(`#/users/${encodeURIComponent(input.value.trim())}`, false);
  } }, field("User", input), field("k", k), h("button", { type: "submit", class: "primary" }, "Explain"));
  const out = h("div", { id: "explain" });
  page(h("h2", {}, "A user's lists and why"), form, out);
  if (!userId) { input.focus(); return; }
  const found = await fetched(`lists of ${userId}`, () =>
    api("GET", `/admin/users/${encodeURIComponent(userId)}/explain?k=${Number(k.value) || 10}`));
  if (!found) { return; }
  const history = h("table", {}, h("thead", {}, h("tr", {}, ["Item", "Event types", "Time", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, found.history.slice(0, 50).map((e) => h("tr", {},
      h("td", {}, h("code", {}, e.item_id)), h("td", {}, e.event_types.join(", ") || "–"),
      h("td", {}, when(e.time)), h("td", {}, e.positive ? "" : "seen, not liked")))));
  const fusion = found.fusion;
  const lists = Object.entries(found.lists).map(([name, list]) => h("section", { class: "card model-list", "data-model": name },
    h("h3", {}, name, list.model !== name ? h("span", { class: "muted" }, ` (served as ${list.model})`) : ""),
    list.items.length === 0 ? h("p", { class: "muted" }, "empty") :
      h("ol", { class: "ranked" }, list.items.map((item) => h("li", {},
        h("div", {}, h("code", {}, item.item_id), " ", h("span", { class: "muted" }, number(item.score)),
          item.backfill ? h("span", { class: "badge" }, " backfill (popular)") : ""),
        h("ul", { class: "why" }, reasons(item.why).map((line) => h("li", {}, line))))))));
  out.replaceChildren(
    h("div", { class: "card" }, h("h3", {}, `Recent events of ${found.user_id} (${found.history.length})`),
      found.history.length ? history : h("p", { class: "muted" }, "no history: every list is popular items")),
    h("p", { class: "muted" }, `Hybrid fusion weights ${Object.entries(fusion.weights).map(([s, w]) => `${s} ${number(w, 3)}`).join(", ")}; ` +
      `leader ${fusion.leader}; rank constant ${fusion.rank_constant}. ` + (found.has_factors ? "The user has MF factors." : "No MF factors yet.")),
    h("div", { class: "columns" }, lists));
}

async function placementsPage(name) {
  const token = state.token;
  const configs = await fetched("placements", () => api("GET", "/admin/placements"));
  if (token !== state.token) { return; }
  if (!configs) { page(h("h2", {}, "Placements")); return; }
  const links = Object.keys(configs).sort().map((p) => h("li", {}, h("a", { href: `#/placements/${encodeURIComponent(p)}` }, p)));
  const newName = h("input", { size: 20, pattern: "[A-Za-z0-9_.-]{1,64}" });
  const create = h("form", { class: "row", onsubmit: (event) => {
    event.preventDefault();
    go(`#/placements/${encodeURIComponent(newName.value.trim())}`, false);
  } }, field("New or other placement", newName), h("button", { type: "submit" }, "Open"));
  const detail = h("div", { id: "placement" });
  page(h("h2", {}, "Placements"), h("div", { class: "card" }, links.length ? h("ul", {}, links) : h("p", { class: "muted" }, "none configured"), create), detail);
  if (name) { await drawPlacement(detail, name, configs[name]); }
}

async function drawPlacement(detail, name, config) {
  const path = `/admin/placements/${encodeURIComponent(name)}`;
  const body = config ? { strategy: config.strategy, floor: config.floor, pin: config.pin ?? null, variants: config.variants }
    : { strategy: "split", variants: [{ name: "A", model: "popular", weight: 1 }, { name: "B", model: "hybrid", weight: 1 }] };
  const editor = h("textarea", { rows: 10, spellcheck: "false", id: "placement-json" }, json(body));
  async function save(changed, what) {
    const saved = await act(what, () => api("PUT", path, changed));
    if (saved) { await placementsPage(name); }
  }
  const variants = (body.variants || []).map((v) => h("tr", { "data-variant": v.name },
    h("td", {}, v.name), h("td", {}, v.model), h("td", { class: "number" }, String(v.weight ?? 1)),
    h("td", {}, Object.keys(v.params || {}).length ? json(v.params) : "–"),
    h("td", {}, body.pin === v.name ? h("span", { class: "badge on" }, "pinned") : (v.weight === 0 ? h("span", { class: "badge off" }, "off") : h("span", { class: "badge on" }, "on"))),
    h("td", {},
      h("button", { type: "button", onclick: () => save({ ...body, pin: body.pin === v.name ? null : v.name }, body.pin === v.name ? `unpinned ${v.name}` : `pinned ${v.name}`) }, body.pin === v.name ? "Unpin" : "Pin"),
      " ",
      h("button", { type: "button", class: v.weight === 0 ? "" : "danger", onclick: () => save({ ...body, variants: body.variants.map((o) => (o.name === v.name ? { ...o, weight: v.weight === 0 ? 1 : 0 } : o)) }, `${v.name} switched ${v.weight === 0 ? "on" : "off"}`) },
        v.weight === 0 ? "Switch on" : "Kill switch: off"))));
  const report = h("div", {}, h("p", { class: "muted" }, "report loading …"));
  const log = h("div", {}, h("p", { class: "muted" }, "log loading …"));
  detail.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, `Placement ${name}`, config ? ` (version ${config.version ?? "?"})` : " (not configured yet)"),
      config ? h("table", {}, h("thead", {}, h("tr", {}, ["Variant", "Model", "Weight", "Params", "State", "Actions"].map((t) => h("th", {}, t)))), h("tbody", {}, variants)) : "",
      config ? h("p", {}, `strategy ${body.strategy}` + (body.strategy === "bandit" ? `, floor ${body.floor}` : "") + (body.pin ? `, pinned to ${body.pin}` : "")) : "",
      h("details", { open: !config }, h("summary", {}, config ? "Edit the configuration" : "Configure it"),
        h("form", { onsubmit: (event) => {
          event.preventDefault();
          let parsed;
          try { parsed = JSON.parse(editor.value); } catch (error) { say(`placement: not JSON (${error.message})`, false); return; }
          save(parsed, `placement ${name} saved`);
        } }, field("Configuration (PUT body: strategy split|bandit, floor, pin, variants)", editor),
        h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Save placement"))))),
    h("section", { class: "card", id: "placement-report" }, h("h2", {}, "Report and bandit state"), report),
    h("section", { class: "card", id: "placement-log" }, h("h2", {}, "Change log"), log));
  if (!config) { report.replaceChildren(); log.replaceChildren(); return; }
  try {
    const r = await api("GET", `${path}/report`);
    report.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["Variant", "Share", "Lists", "Rewarded", "Clicks", "CTR", "Take-rate", "Posterior mean", "Conversions", "vs control"].map((t) => h("th", {}, t)))),
      h("tbody", {}, Object.entries(r.variants || {}).map(([variant, m]) => {
        const c = (r.comparisons || {})[variant];
        return h("tr", {}, h("td", {}, variant + (variant === r.control ? " (control)" : "")),
          h("td", { class: "number" }, r.shares && r.shares[variant] !== undefined ? `${(100 * r.shares[variant]).toFixed(1)}%` : "–"),
          h("td", { class: "number" }, String(m.impressions)), h("td", { class: "number" }, String(m.lists_rewarded)),
          h("td", { class: "number" }, String(m.clicks)),
          h("td", { class: "number" }, `${(100 * m.ctr).toFixed(2)}%`), h("td", { class: "number" }, `${(100 * m.take_rate).toFixed(2)}%`),
          // The bandit's Beta posterior of the take-rate, uniform prior (recommender.allocation).
          h("td", { class: "number" }, `${(100 * (1 + m.lists_rewarded) / (2 + m.impressions)).toFixed(2)}%`),
          h("td", { class: "number" }, String(m.conversions)),
          h("td", {}, !c ? "–" : c.lift === null ? c.verdict : `${(100 * c.lift).toFixed(1)}%` + (c.p_value !== null ? ` (p ${c.p_value.toFixed(3)})` : "")));
      }))),
    h("details", {}, h("summary", {}, "Whole report (JSON)"), h("pre", {}, json(r))));
  } catch (error) { report.replaceChildren(h("p", { class: "invalid" }, error.message)); }
  try {
    const entries = await api("GET", `${path}/log`);
    log.replaceChildren(h("ol", { id: "log-entries" }, entries.map((entry) => h("li", {},
      `${when(entry.at ?? entry.time ?? entry.updated_at)} by ${entry.author ?? "?"}: `,
      h("code", {}, JSON.stringify(entry.configuration ?? entry.config ?? entry))))));
  } catch (error) { log.replaceChildren(h("p", { class: "invalid" }, error.message)); }
}

// The expression with the character at `position` (from 1) marked.
function marked(expression, position) {
  if (!position) { return [expression]; }
  const at = Math.min(position - 1, expression.length);
  return [expression.slice(0, at), h("mark", { id: "error-at" }, expression.slice(at, at + 1) || " "), expression.slice(at + 1)];
}

async function filtersPage(name) {
  const token = state.token;
  const all = await fetched("filters", () => api("GET", "/admin/filters")) || {};
  if (token !== state.token) { return; }
  const chosen = name ? all[name] : null;
  const nameInput = h("input", { value: name || "", size: 24, pattern: "[A-Za-z0-9_.-]{1,64}" });
  const expression = h("textarea", { rows: 4, spellcheck: "false", id: "expression" }, chosen ? chosen.expression : "");
  const view = h("div", { class: "expression-view", id: "expression-view", "aria-live": "polite" });
  const verdict = h("div", { id: "verdict" });
  const values = h("input", { size: 40, spellcheck: "false", placeholder: '{"MAX": 20}' });
  const user = h("input", { size: 20, spellcheck: "false" });
  const item = h("input", { size: 20, spellcheck: "false" });
  const preview = h("div", { id: "preview" });
  let timer = null, asked = 0;
  async function validate() {
    const mine = ++asked;
    try {
      const found = await api("POST", "/admin/filters/validate", { expression: expression.value });
      if (mine !== asked) { return; } // an older answer than the text
      view.replaceChildren(...marked(expression.value, found.position));
      verdict.replaceChildren(found.valid
        ? h("span", { class: "valid" }, `valid: ${found.action}` + (found.parameters.length ? `, parameters ${found.parameters.map((p) => "$" + p).join(", ")}` : ""))
        : h("span", { class: "invalid" }, found.message));
      verdict.dataset.valid = String(found.valid);
      verdict.dataset.position = String(found.position ?? "");
      if (!found.valid && found.position) {
        // The editor's caret goes where the parser stopped, without taking the focus.
        expression.setSelectionRange(found.position - 1, found.position);
      }
    } catch (error) {
      verdict.replaceChildren(h("span", { class: "invalid" }, error.message));
    }
  }
  expression.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 150); });
  const rows = Object.entries(all).map(([n, d]) => h("tr", {},
    h("td", {}, h("a", { href: `#/filters/${encodeURIComponent(n)}` }, n)), h("td", {}, h("code", {}, d.expression)),
    h("td", {}, d.action), h("td", { class: "number" }, String(d.version)), h("td", {}, when(d.updated_at))));
  page(h("h2", {}, "Filters"),
    h("section", { class: "card" }, rows.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Expression", "Action", "Version", "Updated"].map((t) => h("th", {}, t)))), h("tbody", {}, rows)) : h("p", { class: "muted" }, "no filters registered")),
    h("section", { class: "card" }, h("h2", {}, chosen ? `Edit ${name}` : "New filter"),
      h("div", { class: "row" }, field("Name", nameInput)),
      field("Expression (validated as you type)", expression), view, verdict,
      h("form", { class: "row", onsubmit: async (event) => {
        event.preventDefault();
        let given = {};
        if (values.value.trim()) {
          try { given = JSON.parse(values.value); } catch (error) { say(`values: not JSON (${error.message})`, false); return; }
        }
        const body = { expression: expression.value, values: given, k: 10 };
        if (user.value.trim()) { body.user_id = user.value.trim(); }
        if (item.value.trim()) { body.item_id = item.value.trim(); }
        const found = await act("preview ready", () => api("POST", "/admin/filters/preview", body));
        if (found) {
          preview.replaceChildren(h("h3", {}, `Preview (${found.model}, ${found.items.length} items)`),
            h("ol", { class: "ranked", id: "preview-items" }, found.items.map((i) => h("li", {}, h("code", {}, i.item_id), " ", h("span", { class: "muted" }, number(i.score)), i.backfill ? " (backfill)" : ""))));
        }
      } }, field("$PARAMETERS (JSON)", values), field("User", user), field("Item (similar items)", item),
        h("button", { type: "submit" }, "Preview")),
      preview,
      h("div", { class: "row" },
        h("button", { type: "button", class: "primary", onclick: async () => {
          const saved = await act(`filter ${nameInput.value} saved`, () =>
            api("PUT", `/admin/filters/${encodeURIComponent(nameInput.value)}`, { expression: expression.value }));
          if (saved) { go(`#/filters/${encodeURIComponent(nameInput.value)}`); }
        } }, "Save filter"),
        chosen ? h("button", { type: "button", class: "danger", onclick: async () => {
          const done = await act(`filter ${name} deleted`, () => api("DELETE", `/admin/filters/${encodeURIComponent(name)}`));
          if (done !== undefined) { go("#/filters"); }
        } }, "Delete filter") : "")));
  if (expression.value) { validate(); }
}

async function versionsPage() {
  const table = h("div", { id: "versions-table" });
  const log = h("div", { id: "serving-log" });
  page(h("h2", {}, "Model versions"), table,
    h("div", { class: "row" }, h("button", { type: "button", onclick: async () => {
      const done = await act("rolled back", () => api("POST", "/admin/versions/rollback", {}));
      if (done) { say(`rolled back: serving ${done.serving}`); await drawVersions(table, log); }
    } }, "Roll back the last promote")),
    h("section", { class: "card" }, h("h2", {}, "Serving log"), log));
  await drawVersions(table, log);
}

async function drawVersions(table, log) {
  let listed;
  try { listed = await api("GET", "/admin/versions"); } catch (error) {
    table.replaceChildren(h("p", { class: "invalid" }, error.message)); return;
  }
  const rows = listed.map((v) => {
    const force = h("input", { type: "checkbox" });
    return h("tr", { "data-version": v.name },
      h("td", {}, h("strong", {}, v.name), v.serving ? h("span", { class: "badge on" }, " serving") : ""),
      h("td", {}, v.status), h("td", {}, v.live === null ? "unknown" : v.live ? `live (${v.workers})` : "NOT LIVE"),
      h("td", { class: "number" }, v.lag === null ? "–" : String(v.lag)),
      h("td", { class: "number" }, String(v.events_applied)),
      h("td", {}, h("code", {}, JSON.stringify(v.settings)), v.status_error ? h("div", { class: "invalid" }, v.status_error) : ""),
      h("td", {}, v.name === "main" ? "the base state" : when(v.created_at)),
      h("td", {}, v.serving ? "" : [h("button", { type: "button", onclick: async () => {
        const done = await act(`promoted ${v.name}`, () =>
          api("POST", `/admin/versions/${encodeURIComponent(v.name)}/promote`, { force: force.checked }));
        if (done) {
          say(done.warning ? `serving ${v.name}; warning: ${done.warning}` : `serving ${v.name} (was ${done.previous})`, !done.warning);
          await drawVersions(table, log);
        }
      } }, `Promote ${v.name}`), " ", field("force", force)]));
  });
  table.dataset.drawn = String(Number(table.dataset.drawn || 0) + 1);
  table.replaceChildren(h("table", { class: "card" }, h("thead", {}, h("tr", {},
    ["Version", "Status", "Worker", "Lag", "Events applied", "Settings (lineage)", "Created", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
  try {
    const entries = await api("GET", "/admin/versions/log");
    log.replaceChildren(entries.length ? h("ol", {}, entries.map((e) => h("li", {},
      `${when(e.at)} ${e.action} ${e.version} (was ${e.previous}) by ${e.author}`))) : h("p", { class: "muted" }, "no promote yet"));
  } catch (error) { log.replaceChildren(h("p", { class: "invalid" }, error.message)); }
  // A version being built: its lag shrinks as it replays; show it every second.
  if (listed.some((v) => v.status === "building")) {
    const timer = setTimeout(() => { if (table.isConnected) { drawVersions(table, log); } }, 1000);
    state.cleanup.push(() => clearTimeout(timer));
  }
}

// The metrics stream, read with fetch so the key goes in a header (EventSource sends none).
async function metricsPage() {
  const root = h("div", { id: "live" });
  page(h("h2", {}, `Live metrics of ${currentApp()}`), root);
  const source = route("/metrics/stream");
  const live = LiveMetrics.view(root, source);
  const stop = new AbortController();
  state.cleanup.push(() => { stop.abort(); live.reset(); });
  const key = sessionStorage.getItem(KEY);
  try {
    const response = await fetch(source, { headers: key ? { "X-API-Key": key } : {}, signal: stop.signal });
    if (!response.ok) {
      const text = await response.text();
      let parsed = null;
      try { parsed = JSON.parse(text); } catch (error) { parsed = { detail: text }; }
      live.status(problem(response.status, parsed));
      return;
    }
    live.status(`live from ${source}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { live.status("the stream ended: open the page again"); return; }
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = message.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
        if (data) { live.draw(JSON.parse(data)); }
      }
    }
  } catch (error) {
    if (!stop.signal.aborted) { live.status(`stream failed: ${error}`); }
  }
}

// --- navigation -----------------------------------------------------------------------

const PAGES = { apps: appsPage, catalog: catalogPage, users: userPage, placements: placementsPage,
  filters: filtersPage, versions: versionsPage, metrics: metricsPage };

// Shows a page (again, if it is the current one), keeping an action's result in view.
function go(hash, keep = true) {
  state.keep = keep;
  if (location.hash === hash) { render(); } else { location.hash = hash; }
}

function render() {
  state.token += 1;
  for (const stop of state.cleanup.splice(0)) { stop(); }
  if (!state.keep) { // a result belongs to its page, unless its action chose the next one
    document.getElementById("message").replaceChildren();
    delete document.body.dataset.message;
  }
  state.keep = false;
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "apps").split("/");
  const argument = rest.length ? decodeURIComponent(rest.join("/")) : undefined;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${name}`) { link.setAttribute("aria-current", "page"); } else { link.removeAttribute("aria-current"); }
  }
  document.body.dataset.page = name;
  if (!sessionStorage.getItem(KEY)) {
    page(h("p", {}, "Enter an API key above (an admin key of the app, or a platform key for every app)."));
    document.getElementById("key").focus();
    return;
  }
  const show = PAGES[name];
  if (!show) { page(h("p", {}, `No page ${name}: pick one above.`)); return; }
  show(argument);
}

window.addEventListener("hashchange", render);
document.getElementById("app").value = currentApp();
showKeyState();
if (sessionStorage.getItem(KEY)) { loadApps(); }
render();
document.body.dataset.ready = "true";
