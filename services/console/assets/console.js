// The waiter-bus console: spans arrive as server-sent events and are drawn
// as one row per request, a lane per hop. The registry token lives only in
// this page's memory; it is sent with each change and never stored.
"use strict";

const LANES = ["gateway", "dispatch", "kafka", "waiter", "ledger", "reply"];
const MAX_ROWS = 200;
const traces = new Map(); // trace id → { spans: [], row }
let config = { jaeger_url: null, max_burst: 500 };

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
};
const ms = (us) => (us / 1000).toFixed(1) + " ms";

// ── live flow ──────────────────────────────────────────────────────────
function connect() {
  const events = new EventSource("/events");
  events.onopen = () => { $("connection").textContent = "live"; };
  events.onerror = () => { $("connection").textContent = "reconnecting…"; };
  events.addEventListener("span", (event) => addSpan(JSON.parse(event.data)));
  events.addEventListener("lagged", (event) => {
    $("connection").textContent = `live (skipped ${event.data} spans to keep up)`;
  });
}

function addSpan(span) {
  let trace = traces.get(span.trace_id);
  if (!trace) {
    trace = { spans: [], row: null };
    traces.set(span.trace_id, trace);
  }
  if (trace.spans.some((s) => s.span_id === span.span_id)) return;
  trace.spans.push(span);
  // Only requests are rows: a trace with a hop of the flow in it.
  if (!trace.spans.some((s) => lane(s))) return;
  drawRow(span.trace_id, trace);
}

// Which lane a span fills, if any.
function lane(span) {
  if (span.kind === "server" && ["gateway", "dispatch", "ledger"].includes(span.service)) return span.service;
  if (span.kind === "producer" && span.service === "dispatch") return "kafka";
  if (span.kind === "consumer" && span.service === "waiter") return "waiter";
  if (span.kind === "consumer" && span.service === "dispatch") return "reply";
  return null;
}

function drawRow(traceId, trace) {
  const spans = trace.spans;
  const start = Math.min(...spans.map((s) => s.start_us));
  const end = Math.max(...spans.map((s) => s.start_us + s.duration_us));
  const tenant = spans.map((s) => s.tenant).find((t) => t) || "";
  const row = el("tr", { "data-trace": traceId, "data-tenant": tenant });
  row.append(el("td", {}, new Date(start / 1000).toLocaleTimeString()));
  row.append(el("td", {}, tenant || "—"));
  for (const name of LANES) {
    const taken = spans.find((s) => lane(s) === name);
    const cell = el("td", { class: "lane", "data-lane": name });
    if (taken) {
      if (name === "kafka") {
        cell.append(el("span", { class: "record" }, taken.detail || "sent"));
      } else {
        const variant = taken.variant || "?";
        cell.setAttribute("data-variant", variant);
        cell.append(el("span", { class: "variant " + (variant === "baseline" ? "baseline" : "") }, variant));
      }
      cell.append(el("span", { class: "timing" }, " " + ms(taken.duration_us)));
      if (taken.late) cell.append(el("span", { class: "late" }, " late"));
    }
    if (name === "waiter") {
      for (const skip of spans.filter((s) => s.skip_reason)) {
        cell.append(el("span", { class: "skip", "data-skipped-by": skip.variant },
          `${skip.variant} skipped: ${skip.skip_reason}`));
      }
    }
    row.append(cell);
  }
  row.append(el("td", {}, ms(end - start)));
  const links = el("td");
  if (config.jaeger_url) {
    links.append(el("a", { href: `${config.jaeger_url.replace(/\/$/, "")}/trace/${traceId}`, target: "_blank" }, "Jaeger"));
  }
  row.append(links);
  row.addEventListener("click", () => showWaterfall(traceId));
  const rows = $("flow-rows");
  if (trace.row && trace.row.parentNode) {
    row.className = trace.row.className;
    trace.row.replaceWith(row);
  } else {
    rows.prepend(row);
    while (rows.children.length > MAX_ROWS) {
      const last = rows.lastElementChild;
      traces.delete(last.getAttribute("data-trace"));
      last.remove();
    }
  }
  trace.row = row;
}

function showWaterfall(traceId) {
  for (const selected of document.querySelectorAll("#flow-rows tr.selected")) selected.classList.remove("selected");
  const trace = traces.get(traceId);
  if (!trace) return;
  trace.row.classList.add("selected");
  const spans = [...trace.spans].sort((a, b) => a.start_us - b.start_us);
  const start = Math.min(...spans.map((s) => s.start_us));
  const total = Math.max(1, Math.max(...spans.map((s) => s.start_us + s.duration_us)) - start);
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const depth = (s) => { let d = 0; let p = byId.get(s.parent_span_id); while (p && d < 20) { d++; p = byId.get(p.parent_span_id); } return d; };
  const box = $("waterfall");
  box.replaceChildren(el("h3", {}, `trace ${traceId}`));
  for (const span of spans) {
    const bar = el("div", { class: "bar" + (span.skip_reason ? " skip" : "") });
    bar.style.left = ((span.start_us - start) / total * 100) + "%";
    bar.style.width = Math.max(0.5, span.duration_us / total * 100) + "%";
    box.append(el("div", { class: "bar-row" },
      el("span", {}, span.service),
      el("span", {}, span.variant),
      el("span", {}, "\u00a0".repeat(2 * depth(span)) + span.name + (span.skip_reason ? ` (${span.skip_reason})` : "")),
      el("div", { class: "track" }, bar),
      el("span", {}, ms(span.duration_us))));
  }
}

// ── sending ────────────────────────────────────────────────────────────
$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    tenant: $("send-tenant").value.trim() || null,
    wait_ms: Number($("send-wait").value),
    count: Number($("send-count").value),
    rate: Number($("send-rate").value),
  };
  const summary = $("send-summary");
  summary.removeAttribute("data-done");
  summary.textContent = `sending ${body.count}…`;
  const response = await fetch("/api/send", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    summary.textContent = `refused: ${answer.error || response.status}`;
    summary.setAttribute("data-done", "error");
    return;
  }
  const variants = Object.entries(answer.by_variant).map(([hops, n]) => `  ${n} × ${hops}`).join("\n");
  summary.textContent = `sent ${answer.sent}: answered ${answer.answered}, timed out ${answer.timed_out}, failed ${answer.failed}\n${variants}`
    + (answer.first_error ? `\nfirst error: ${answer.first_error}` : "");
  summary.setAttribute("data-done", "ok");
  summary.setAttribute("data-answered", answer.answered);
  summary.setAttribute("data-traces", answer.trace_ids.join(" "));
});

// ── tenants ────────────────────────────────────────────────────────────
const token = () => $("token").value.trim();
const registry = (path, options = {}) => {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.authorization = `Bearer ${token()}`;
  return fetch(`/api/registry/${path}`, { ...options, headers });
};

async function refreshTenants() {
  const [tenants, variants] = await Promise.all([
    registry("tenants").then((r) => (r.ok ? r.json() : [])).catch(() => []),
    registry("variants").then((r) => (r.ok ? r.json() : [])).catch(() => []),
  ]);
  // Each tenant's own status: its variants' liveness, instances, lag and
  // the records they processed and skipped.
  const statuses = await Promise.all(tenants.map((t) =>
    registry(`tenants/${encodeURIComponent(t.id)}`).then((r) => (r.ok ? r.json() : null)).catch(() => null)));
  const rows = $("tenant-rows");
  rows.replaceChildren();
  tenants.forEach((tenant, i) => {
    const mapped = Object.entries(tenant.services).map(([s, l]) => `${s}=${l}`).join(" ")
      + (tenant.expires_at_ms ? ` (expires ${new Date(tenant.expires_at_ms).toLocaleTimeString()})` : "");
    const status = statuses[i];
    const live = status && status.variants
      ? status.variants.map((v) => `${v.service}=${v.label}: ${v.live ? "live" : "not live"}, `
          + `${v.instances} instance(s)` + (v.lag != null ? `, lag ${v.lag}` : "")
          + `, processed ${v.processed}, skipped ${v.skipped}`).join("; ")
      : Object.entries(tenant.services).map(([s, l]) => {
          const v = variants.find((x) => x.service === s && x.label === l);
          return `${s}=${l}: ${v ? (v.live ? "live" : "not live") : "not registered"}`;
        }).join(", ");
    const remove = el("button", { type: "button", "data-delete": tenant.id }, "Delete");
    remove.addEventListener("click", () => deleteTenant(tenant.id));
    rows.append(el("tr", { "data-tenant": tenant.id },
      el("td", {}, tenant.id + (tenant.state && tenant.state !== "active" ? ` (${tenant.state})` : "")),
      el("td", {}, mapped), el("td", {}, live), el("td", {}, remove)));
  });
  for (const service of ["dispatch", "waiter"]) {
    const select = $(`tenant-${service}`);
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "baseline"));
    for (const v of variants.filter((x) => x.service === service)) {
      select.append(el("option", { value: v.label }, v.label + (v.live ? "" : " (not live)")));
    }
    select.value = chosen;
  }
}

function tenantMessage(text, state) {
  const box = $("tenant-message");
  box.textContent = text;
  box.setAttribute("data-state", state);
}

$("tenant-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("tenant-id").value.trim();
  const services = {};
  for (const service of ["dispatch", "waiter"]) {
    const label = $(`tenant-${service}`).value;
    if (label) services[service] = label;
  }
  const response = await registry(`tenants/${encodeURIComponent(id)}`, {
    method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ services }),
  });
  const text = await response.text();
  tenantMessage(response.ok ? `tenant ${id} mapped` : `refused (${response.status}): ${text}`, response.ok ? "ok" : "error");
  refreshTenants();
});

async function deleteTenant(id) {
  tenantMessage(`deleting ${id} (its variants drain first)…`, "busy");
  const response = await registry(`tenants/${encodeURIComponent(id)}`, { method: "DELETE" });
  const text = await response.text();
  tenantMessage(response.ok ? `tenant ${id} deleted` : `refused (${response.status}): ${text}`, response.ok ? "ok" : "error");
  refreshTenants();
}

// ── pipeline ───────────────────────────────────────────────────────────
async function refreshPipeline() {
  const views = await fetch("/api/pipeline").then((r) => r.json()).catch(() => []);
  const box = $("pipeline");
  box.replaceChildren();
  // Waiters sharing a process (the demo) share a registry: each variant
  // is shown once, from the first source that has it.
  const shown = new Set();
  for (const view of views) {
    if (view.error) { box.append(el("p", {}, `${view.source}: unreadable: ${view.error}`)); continue; }
    for (const [variant, stages] of Object.entries(view.variants)) {
      if (shown.has(variant)) continue;
      shown.add(variant);
      box.append(el("h3", { "data-variant": variant }, `${variant} `, el("span", { class: "source" }, view.source)));
      for (const channel of Object.keys(stages.channel_capacity)) {
        const depth = stages.channel_depth[channel] || 0;
        const capacity = stages.channel_capacity[channel] || 1;
        const fill = el("div");
        fill.style.width = Math.min(100, depth / capacity * 100) + "%";
        box.append(el("div", { class: "stage", "data-channel": channel },
          el("span", {}, `${channel} channel ${depth} / ${capacity}`),
          el("div", { class: "meter" }, fill),
          el("span", {}, `blocked ${(stages.blocked_seconds[channel] || 0).toFixed(2)} s`)));
      }
      box.append(el("div", { class: "stage" },
        el("span", {}, `waits in flight ${stages.waits_in_flight}`), el("span"), el("span", {}, `lag ${stages.consumer_lag}`)));
      for (const partition of stages.stopped_partitions || []) {
        box.append(el("p", { class: "stopped", "data-stopped": partition },
          `partition ${partition} stopped at a record set it cannot decode (waiter.undecodable_batches: stop); its /readyz says where`));
      }
    }
  }
}

fetch("/api/config").then((r) => r.json()).then((c) => { config = c; }).catch(() => {});
connect();
refreshTenants();
refreshPipeline();
setInterval(refreshPipeline, 2000);
setInterval(refreshTenants, 5000);
