// orderstream console: plain ES module, no dependencies, no CDN. The API key lives in this tab's
// sessionStorage only and goes out in the Authorization header, never in a cookie or a URL.
// Every value from the service is put on the page as text (never as HTML): payloads are untrusted.

const $ = (sel) => document.querySelector(sel);
const KEY = "orderstream-key";
let me = null; // {name, scopes}
let current = "flow";
let timer = null;
let live = null; // AbortController of the SSE reader

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const canWrite = () => !!me && me.scopes.includes("write");
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
const money = (minor, cur) => `${(minor / 100).toFixed(2)} ${cur || ""}`;

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(opts.headers || {}) };
  const resp = await fetch(path, { ...opts, headers });
  if (resp.status === 401) {
    signOut("The key was refused: sign in again.");
    throw new Error("401");
  }
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json() : await resp.text();
  return { status: resp.status, body };
}

// ---- sign in ----------------------------------------------------------------------------------

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  const resp = await fetch("/v1/whoami", { headers: { Authorization: `Bearer ${key}` } });
  if (resp.status !== 200) {
    sessionStorage.removeItem(KEY);
    const err = await resp.json().catch(() => ({}));
    $("#signin-error").textContent = (err.error && err.error.reason) || `refused (${resp.status})`;
    return;
  }
  me = await resp.json();
  $("#who").textContent = `${me.name} · ${me.scopes.join(", ")}`;
  document.body.classList.toggle("readonly", !canWrite());
  $("#stock-form").hidden = !canWrite();
  $("#signin").hidden = true;
  $("main").hidden = false;
  $("#tabs").hidden = false;
  $("#signout").hidden = false;
  startLive();
  show("flow");
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  me = null;
  if (live) live.abort();
  clearInterval(timer);
  $("#signin").hidden = false;
  $("main").hidden = true;
  $("#tabs").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#signin-error").textContent = message;
}

function show(view) {
  current = view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  clearInterval(timer);
  const refresh = { flow: pollMetrics, review: loadReview, sla: loadSla, stock: loadStock, dead: loadDead }[view];
  if (refresh) {
    refresh();
    timer = setInterval(refresh, view === "flow" ? 2000 : 10000);
  }
}

// ---- flow: /metrics, parsed here ----------------------------------------------------------------

function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const part of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[part[1]] = part[2];
    out.push({ name: m[1], labels, value: parseFloat(m[4]) });
  }
  return out;
}

const sum = (rows, name, pred = () => true) =>
  rows.filter((r) => r.name === name && pred(r.labels)).reduce((a, r) => a + r.value, 0);

function quantile(q, buckets) {
  // buckets: [[le, cumulative count]] sorted; linear within the bucket, as Prometheus does
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!isFinite(le)) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(count - prevCount, 1e-9));
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

function histogram(rows, name) {
  const by = new Map();
  for (const r of rows) {
    if (r.name !== `${name}_bucket`) continue;
    const le = r.labels.le === "+Inf" ? Infinity : parseFloat(r.labels.le);
    by.set(le, (by.get(le) || 0) + r.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

const series = {}; // name -> [values]
let previous = null;
const KEEP = 90;

function push(name, value) {
  (series[name] = series[name] || []).push(value);
  if (series[name].length > KEEP) series[name].shift();
}

function chart(title, names, unit, extra = null) {
  const w = 300, hgt = 60;
  const all = names.flatMap((n) => series[n] || []).filter(isFinite);
  const max = Math.max(1e-9, ...all, extra ? extra.value : 0);
  const lines = names.map((n, i) => {
    const vals = series[n] || [];
    // the newest sample at the right edge, older ones to its left
    const x = (j) => w - ((vals.length - 1 - j) / (KEEP - 1)) * w;
    const pts = vals.map((v, j) => `${x(j)},${hgt - (isFinite(v) ? v : 0) / max * (hgt - 4) - 2}`).join(" ");
    return `<polyline class="${i ? "b" : ""}" points="${pts}"></polyline>`;
  });
  if (extra) {
    const y = hgt - (extra.value / max) * (hgt - 4) - 2;
    lines.push(`<line class="budget" x1="0" x2="${w}" y1="${y}" y2="${y}"></line>`);
  }
  const now = names.map((n) => { const v = (series[n] || []).at(-1); return isFinite(v) ? fmt(v, unit) : "—"; }).join(" / ");
  const box = h("div", { class: "chart" }, h("div", { class: "muted" }, title), h("div", { class: "now" }, now));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.innerHTML = lines.join(""); // numbers only: built here, not from the service's text
  box.append(svg);
  return box;
}

function fmt(v, unit) {
  if (unit === "ms") return `${Math.round(v)} ms`;
  if (unit === "MiB") return `${Math.round(v)} MiB`;
  if (unit === "%") return `${(v * 100).toFixed(2)} %`;
  return v >= 100 ? Math.round(v).toLocaleString() : v.toFixed(1);
}

async function pollMetrics() {
  const { status, body } = await api("/metrics");
  if (status !== 200) return;
  const rows = parseMetrics(body);
  const t = Date.now() / 1000;
  const now = {
    t,
    in: sum(rows, "orderstream_ingested_total"),
    out: sum(rows, "orderstream_orders_recorded_total", (l) => l.kind === "created"),
    e2e: histogram(rows, "orderstream_end_to_end_seconds"),
  };
  if (previous) {
    const dt = Math.max(t - previous.t, 0.001);
    push("in", (now.in - previous.in) / dt);
    push("out", (now.out - previous.out) / dt);
    const delta = now.e2e.map(([le, c], i) => [le, c - ((previous.e2e[i] || [le, 0])[1])]);
    push("p50", quantile(0.5, delta) * 1000);
    push("p99", quantile(0.99, delta) * 1000);
  }
  previous = now;
  push("journal", sum(rows, "orderstream_journal_depth"));
  push("lag", sum(rows, "orderstream_consumer_lag"));
  const broker = sum(rows, "orderstream_process_resident_bytes", (l) => l.role === "broker") / 2 ** 20;
  push("broker", broker);
  const budget = sum(rows, "orderstream_memory_budget_bytes") / 2 ** 20;

  const created = Math.max(now.out, 1);
  const flow = sum(rows, "orderstream_flow_breaks_total") / created;
  const manual = (1000 * sum(rows, "orderstream_manual_interventions_total")) / created;
  const shipped = sum(rows, "orderstream_shipments_total");
  const onTime = shipped ? sum(rows, "orderstream_shipments_total", (l) => l.on_time === "true") / shipped : NaN;
  const kpi = (title, value, good, shown) =>
    h("div", { class: `kpi ${isFinite(value) ? (good ? "good" : "bad") : ""}` },
      h("div", { class: "muted" }, title), h("div", { class: "value" }, isFinite(value) ? shown : "—"));
  $("#kpis").replaceChildren(
    kpi("Flow break rate (healthy ≤ 0.3 %)", flow, flow <= 0.003, `${(flow * 100).toFixed(2)} %`),
    kpi("Manual interventions / 1,000 orders (≤ 2)", manual, manual <= 2, manual.toFixed(1)),
    kpi("On-time shipment", onTime, onTime >= 0.95, `${(onTime * 100).toFixed(1)} %`),
  );
  const lagByTopic = new Map();
  for (const r of rows) {
    if (r.name !== "orderstream_consumer_lag") continue;
    const stage = r.labels.group === "sync" ? `${r.labels.topic} (sync)` : r.labels.topic;
    lagByTopic.set(stage, (lagByTopic.get(stage) || 0) + r.value);
  }
  $("#lag tbody").replaceChildren(...[...lagByTopic.entries()].sort().map(([topic, v]) =>
    h("tr", {}, h("td", {}, topic), h("td", {}, Math.round(v).toLocaleString()))));
  $("#charts").replaceChildren(
    chart("Orders/s in / recorded", ["in", "out"], ""),
    chart("Accepted → recorded p50 / p99", ["p50", "p99"], "ms"),
    chart("Journal depth (accepted, not yet recorded)", ["journal"], ""),
    chart("Consumer lag (envelopes, all stages)", ["lag"], ""),
    chart(budget ? `Broker memory (budget ${Math.round(budget)} MiB)` : "Broker memory", ["broker"], "MiB",
      budget ? { value: budget } : null),
  );
}

// ---- live orders over SSE (fetch streaming: the key stays in a header) ---------------------------

let liveCount = 0;
const liveOrders = new Set();
async function startLive() {
  if (live) live.abort();
  live = new AbortController();
  try {
    const resp = await fetch("/v1/stream?type=order", {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
      signal: live.signal,
    });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (data) onLive(JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") setTimeout(startLive, 2000);
  }
}

function onLive(event) {
  const d = event.data || {};
  liveCount += 1;
  if (d.order_id) liveOrders.add(d.order_id);
  const counter = $("#live-count");
  counter.textContent = `${liveCount.toLocaleString()} changes of ${liveOrders.size.toLocaleString()} orders since sign-in`;
  counter.dataset.orders = String(liveOrders.size);
  const row = h("tr", { "data-order": d.order_id || "" },
    h("td", {}, new Date().toLocaleTimeString()),
    h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); openOrder(d.order_id); } }, d.order_id || "")),
    h("td", {}, d.channel || ""), h("td", {}, d.state || ""), h("td", {}, d.kind || ""));
  const body = $("#live tbody");
  body.prepend(row);
  while (body.children.length > 50) body.lastChild.remove();
}

// ---- review ---------------------------------------------------------------------------------------

function orderSummary(title, view) {
  if (!view || !view.order) return h("div", { class: "card" }, h("h3", {}, title), h("p", { class: "muted" }, "not found"));
  const o = view.order, r = o.recipient || {};
  return h("div", { class: "card" },
    h("h3", {}, `${title}: ${o.channel} ${o.channel_order_no}`),
    h("dl", {},
      h("dt", {}, "state"), h("dd", {}, view.state),
      h("dt", {}, "total"), h("dd", {}, money(o.total, o.currency)),
      h("dt", {}, "recipient"), h("dd", {}, [r.name, r.phone || r.phone_masked].filter(Boolean).join(" · ")),
      h("dt", {}, "address"), h("dd", {}, [r.region, r.city, r.district, r.address, r.postcode].filter(Boolean).join(" ")),
      h("dt", {}, "lines"), h("dd", {}, (o.lines || []).map((l) => `${l.sku}×${l.quantity}`).join(", ")),
      h("dt", {}, "created"), h("dd", {}, when(o.created_at))));
}

async function loadReview() {
  const { body } = await api("/v1/review");
  const list = $("#review-list");
  if (!Array.isArray(body) || !body.length) { list.replaceChildren(h("p", { class: "muted" }, "Nothing is held.")); return; }
  const cards = [];
  for (const item of body) {
    const held = (await api(`/v1/orders/${item.order_id}`)).body;
    const other = item.suspected_of ? (await api(`/v1/orders/${item.suspected_of}`)).body : null;
    const why = item.suspected_of
      ? h("p", {}, `Suspected duplicate (score ${item.match_score}): `, ...(item.match_fields || []).map((f) => h("span", { class: "chip" }, f)))
      : h("p", {}, `Held: ${item.reason}`);
    const result = h("span", { class: "result" });
    const decide = async (decision) => {
      const r = await api(`/v1/review/${item.order_id}/${decision}`, { method: "POST" });
      result.textContent = r.status === 200 ? `${decision}d: now ${r.body.state || ""}` : `${r.status}: ${(r.body.error || {}).reason || ""}`;
      result.className = r.status === 200 ? "ok result" : "error result";
      if (r.status === 200) setTimeout(loadReview, 800);
    };
    const actions = canWrite()
      ? h("div", { class: "actions" },
          h("button", { class: "primary approve", onclick: () => decide("approve") }, "Approve"),
          h("button", { class: "danger reject", onclick: () => decide("reject") }, "Reject"), result)
      : null;
    cards.push(h("div", { class: "review", "data-order": item.order_id }, why,
      h("div", { class: "pair" }, orderSummary("Held", held), other ? orderSummary("May duplicate", other) : h("div")), actions));
  }
  list.replaceChildren(...cards);
}

// ---- SLA ------------------------------------------------------------------------------------------

const PICKED = new Set(["picking", "shipped", "in_transit", "delivered", "completed"]);
const SHIPPED = new Set(["shipped", "in_transit", "delivered", "completed"]);

async function loadSla() {
  const { body } = await api("/v1/sla");
  if (!body || !body.orders) return;
  const now = body.now;
  $("#sla-legend").textContent =
    `red: not yet picked, less than ${body.red_hours} h to ship-by · yellow: not yet shipped, less than ${body.yellow_hours} h`;
  const light = (o) => {
    const left = (o.ship_by - now) / 3.6e6;
    if (!PICKED.has(o.state) && left < body.red_hours) return "red";
    if (!SHIPPED.has(o.state) && left < body.yellow_hours) return "yellow";
    return "";
  };
  const rows = body.orders.map((o) => ({ o, l: light(o), breached: o.timers.some((t) => t.level > 0 || t.at < now) }));
  rows.sort((a, b) => (b.breached - a.breached) || ((a.l === "red" ? 0 : a.l === "yellow" ? 1 : 2) - (b.l === "red" ? 0 : b.l === "yellow" ? 1 : 2)) || (a.o.state_since - b.o.state_since));
  $("#sla tbody").replaceChildren(...rows.map(({ o, l }) => h("tr", { class: `sla-${l || "none"}` },
    h("td", {}, h("span", { class: `light ${l}`, title: l || "on track" })),
    h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); openOrder(o.id); } }, `${o.channel} ${o.order_no}`)),
    h("td", {}, o.state),
    h("td", {}, `${when(o.ship_by)} (${((o.ship_by - now) / 3.6e6).toFixed(1)} h)`),
    h("td", {}, o.timers.map((t) => `${t.kind} ${t.at < now ? "breached" : "due " + when(t.at)}${t.level ? ` · escalation ${t.level}` : ""}`).join("; ")))));
}

// ---- stock ----------------------------------------------------------------------------------------

async function loadStock() {
  const { body } = await api("/v1/stock");
  if (!Array.isArray(body)) return;
  const rows = [];
  for (const s of body) {
    for (const [wh, lv] of Object.entries(s.warehouses)) {
      rows.push(h("tr", { class: lv.low ? "low" : "" }, h("td", {}, s.sku), h("td", {}, wh), h("td", {}, lv.on_hand),
        h("td", {}, lv.reserved), h("td", {}, lv.safety), h("td", {}, lv.available), h("td", {}, lv.low ? "low" : "")));
    }
  }
  $("#stock tbody").replaceChildren(...rows);
}

async function setStock(e) {
  e.preventDefault();
  const f = new FormData(e.target);
  const body = { warehouse: f.get("warehouse") };
  for (const k of ["on_hand", "safety"]) if (f.get(k) !== "") body[k] = parseInt(f.get(k), 10);
  const r = await api(`/v1/stock/${encodeURIComponent(f.get("sku"))}`, {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const out = $("#stock-result");
  if (r.status === 200) { out.className = "ok"; out.textContent = "set"; loadStock(); }
  else { out.className = "error"; out.textContent = `${r.status}: ${(r.body.error || {}).field || ""} ${(r.body.error || {}).reason || ""}`; }
}

// ---- order ----------------------------------------------------------------------------------------

async function openOrder(id) {
  show("order");
  $("#order-form").elements.namedItem("id").value = id;
  await lookUp(`/v1/orders/${encodeURIComponent(id)}`);
}

async function findOrder(e) {
  e.preventDefault();
  const f = new FormData(e.target);
  if (f.get("id")) return lookUp(`/v1/orders/${encodeURIComponent(f.get("id"))}`);
  const q = new URLSearchParams({ channel: f.get("channel"), order_no: f.get("order_no") });
  return lookUp(`/v1/orders?${q}`);
}

async function lookUp(path) {
  const card = $("#order-card");
  const { status, body } = await api(path);
  if (status !== 200) { card.replaceChildren(h("p", { class: "error" }, `${status}: ${(body.error || {}).reason || ""}`)); return; }
  if (body.state === "accepted" || body.state === "dead_lettered") {
    card.replaceChildren(h("div", { class: "card" }, h("h3", {}, `${body.id}: ${body.state}`), h("pre", {}, JSON.stringify(body, null, 2))));
    return;
  }
  const o = body.order, res = body.reservation;
  const history = (await api(`/v1/orders/${body.id}/history`)).body;
  const entries = (history && history.history) || [];
  card.replaceChildren(
    h("div", { class: "pair" }, orderSummary("Order", body),
      h("div", { class: "card" }, h("h3", {}, "Health"),
        h("dl", {},
          h("dt", {}, "id"), h("dd", { class: "order-id" }, body.id),
          h("dt", {}, "state"), h("dd", { class: "order-state" }, `${body.state} since ${when(body.state_since)}`),
          h("dt", {}, "paid"), h("dd", {}, `${o.payment_status} ${when(o.paid_at)}`),
          h("dt", {}, "tracking"), h("dd", {}, body.tracking_no ? `${body.carrier} ${body.tracking_no}` : "—"),
          h("dt", {}, "reservation"), h("dd", {}, res ? `${res.status}: ${(res.lines || []).map((l) => `${l.sku}×${l.quantity} ${l.outcome}${l.warehouse ? " @ " + l.warehouse : l.tracked === false ? " (not stock-managed)" : ""}`).join(", ")}` : "—"),
          h("dt", {}, "copies"), h("dd", {}, `${body.copies} (duplicates ${body.duplicate_count})${body.duplicate_of ? ` · duplicate of ${body.duplicate_of}` : ""}`),
          h("dt", {}, "SLA"), h("dd", {}, (body.deadlines || []).map((d) => `${d.timer} due ${when(d.due_at)}${d.level ? ` (escalation ${d.level})` : ""}`).join("; ") || "—"),
          h("dt", {}, "hold"), h("dd", {}, body.hold_reason || "—")))),
    h("h2", {}, "Timeline"),
    h("table", { class: "timeline" }, h("thead", {}, h("tr", {}, ["when", "from", "to", "event", "who", "system", "why"].map((t) => h("th", {}, t)))),
      h("tbody", {}, entries.map((a) => h("tr", {}, h("td", {}, when(a.at)), h("td", {}, a.from_state), h("td", {}, a.to_state),
        h("td", {}, a.event), h("td", {}, a.actor), h("td", {}, a.source), h("td", {}, a.reason || ""))))));
}

// ---- dead letters ---------------------------------------------------------------------------------

async function loadDead() {
  const { body } = await api("/v1/dead-letters?limit=100");
  if (!Array.isArray(body)) return;
  $("#dead-list").replaceChildren(...body.map((d) => {
    const result = h("span", { class: "result" });
    const editor = h("textarea", { rows: 6, cols: 80, hidden: "" });
    editor.value = d.payload;
    const replay = async () => {
      const edited = !editor.hidden && editor.value !== d.payload;
      const r = await api(`/v1/dead-letters/${d.key}/replay`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: edited ? editor.value : "" });
      result.className = r.status === 202 ? "ok result" : "error result";
      result.textContent = r.status === 202 ? `replayed: ${r.body.status} ${r.body.id || r.body.reason || ""}` : `${r.status}: ${(r.body.error || {}).reason || ""}`;
    };
    const actions = canWrite() && !d.replayed
      ? h("div", { class: "actions" },
          h("button", { class: "edit", onclick: () => { editor.hidden = !editor.hidden; } }, "Correct payload"),
          h("button", { class: "primary replay", onclick: replay }, "Replay"), result)
      : null;
    return h("div", { class: "card dead", "data-key": d.key },
      h("h3", {}, `${d.stage} · ${d.channel} ${d.order_no || ""}`),
      h("p", {}, h("strong", {}, d.field), ": ", d.reason),
      d.replayed ? h("p", { class: "ok" }, `replayed ${when(d.replayed.at)} by ${d.replayed.actor}: ${d.replayed.status} ${d.replayed.id || ""}`) : null,
      h("pre", {}, d.payload), editor, actions);
  }));
}

// ---- wiring ---------------------------------------------------------------------------------------

$("#signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#key").value.trim()); $("#key").value = ""; });
$("#signout").addEventListener("click", () => signOut());
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
for (const b of document.querySelectorAll("button.refresh")) b.addEventListener("click", () => show(b.dataset.refresh));
$("#order-form").addEventListener("submit", findOrder);
$("#stock-form").addEventListener("submit", setStock);
if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
