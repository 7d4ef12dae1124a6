// ha-ingestor status page: polls /api/stats every second and /alerts every
// few seconds, and draws the rate chart on a canvas. Everything shown that
// came from outside (entity ids, log messages) is set as text, never as HTML.
"use strict";

const POLL_MS = 1000;
const ALERTS_EVERY = 3; // polls
const MAX_POINTS = 600; // 10 minutes at one point per second

const series = []; // {t (s since epoch), received, written}
let last = null; // previous /api/stats answer
let polls = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtRate(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return s.toFixed(0) + " s";
  if (s < 5400) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function pushPoint(p) {
  series.push(p);
  while (series.length > MAX_POINTS) series.shift();
}

function drawChart() {
  const canvas = $("rate-chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = String(series.length);
  const padL = 48, padR = 8, padT = 8, padB = 22;
  const styles = getComputedStyle(document.documentElement);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = styles.getPropertyValue("--muted");
  ctx.strokeStyle = styles.getPropertyValue("--line");
  if (series.length < 2) {
    ctx.fillText("waiting for data…", padL, h / 2);
    return;
  }
  const t0 = series[0].t, t1 = series[series.length - 1].t;
  let max = 1;
  for (const p of series) max = Math.max(max, p.received, p.written);
  max *= 1.1;
  const x = (t) => padL + (w - padL - padR) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = (v) => padT + (h - padT - padB) * (1 - v / max);
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    ctx.beginPath(); ctx.moveTo(padL, y(v)); ctx.lineTo(w - padR, y(v)); ctx.stroke();
    ctx.fillText(fmtRate(v), 4, y(v) + 4);
  }
  const span = t1 - t0;
  ctx.fillText("−" + fmtAge(span), padL, h - 6);
  ctx.fillText("now", w - padR - 22, h - 6);
  for (const [key, color] of [["received", "--received"], ["written", "--written"]]) {
    ctx.strokeStyle = styles.getPropertyValue(color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    series.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
    ctx.stroke();
  }
}

function bars(container, rows) {
  const top = rows.slice(0, 10);
  const max = Math.max(1e-9, ...top.map((r) => r[1]));
  container.replaceChildren(...top.map(([name, v]) =>
    el("div", { class: "row" },
      el("span", { class: "name", title: name }, name),
      el("div", {}, el("div", { class: "fill", style: "width:" + ((100 * v) / max).toFixed(1) + "%" })),
      el("span", { class: "num" }, fmtRate(v)))));
  if (!top.length) container.replaceChildren(el("span", { class: "muted" }, "no events yet"));
}

function render(s) {
  $("ready").textContent = s.ready ? "ready" : "not ready";
  $("ready").className = "badge " + (s.ready ? "ok" : "bad");
  $("ready").title = (s.reasons || []).join("\n");
  $("meta").textContent = "v" + s.version + " · up " + fmtAge(s.uptime_seconds);

  const rt = s.rates.total;
  $("rate-received").textContent = fmtRate(rt.received["1m"]);
  $("rate-received-sub").textContent = "5 m " + fmtRate(rt.received["5m"]) + " · 15 m " + fmtRate(rt.received["15m"]);
  $("rate-written").textContent = fmtRate(rt.written["1m"]);
  $("rate-written-sub").textContent = "5 m " + fmtRate(rt.written["5m"]) + " · 15 m " + fmtRate(rt.written["15m"]) +
    (s.sink.name ? " · " + s.sink.name + ", last write " + fmtAge(s.sink.last_write_age_seconds) + " ago" : "");

  const bar = $("buffer-bar");
  if (s.buffer) {
    const fill = s.buffer.fill_percent;
    $("buffer-fill").textContent = fill.toFixed(1) + " %";
    bar.style.width = Math.min(100, fill).toFixed(1) + "%";
    bar.className = fill >= 80 ? "bad" : fill >= 50 ? "warn" : "";
    $("buffer-sub").textContent = s.buffer.points + " points · " + fmtBytes(s.buffer.bytes) + " of " +
      fmtBytes(s.buffer.max_bytes) + " · oldest " + fmtAge(s.buffer.oldest_age_seconds) + " · when full: " + s.buffer.when_full;
  } else {
    $("buffer-fill").textContent = "off";
    bar.style.width = "0";
    $("buffer-sub").textContent = s.buffer_error || "durable buffer disabled";
  }
  const t = s.totals;
  $("totals").replaceChildren(
    el("div", {}, "received " + t.received + " · written " + t.written),
    el("div", {}, "filtered " + t.filtered + " · skipped " + t.skipped),
    el("div", {}, "dead letters " + t.dead_lettered + " · decode errors " + t.decode_errors + " · dropped " + t.dropped));

  $("connections").replaceChildren(
    el("tr", {}, el("th", {}, "source"), el("th", {}, "state"), el("th", {}, "events/s (1 m)"), el("th", {}, "last error")),
    ...Object.entries(s.connections).map(([name, c]) => el("tr", {},
      el("td", {}, el("span", { class: "dot" + (c.connected ? " up" : "") }), name),
      el("td", {}, c.connected ? "connected" : "disconnected"),
      el("td", { class: "num" }, fmtRate((s.rates.source[name] || {})["1m"])),
      el("td", {}, c.last_error || ""))));

  const g = s.last_gap;
  $("last-gap").textContent = g
    ? "last gap (" + g.source + "): " + g.from.replace("T", " ").replace(/\.\d+\+00:00$/, "Z") + " → " +
      g.to.replace("T", " ").replace(/\.\d+\+00:00$/, "Z") + " · " + g.states + " states recovered · " +
      g.attributes_restored + " attributes restored" +
      (g.unrecorded_entities ? " · " + g.unrecorded_entities + " entities not recorded by HA" : "") +
      (g.confirmed ? "" : " · recorder did not confirm the gap's end")
    : "no gap backfilled since start";

  const byRate = (obj) => Object.entries(obj).map(([k, v]) => [k, v["1m"]]).sort((a, b) => b[1] - a[1]);
  bars($("domains"), byRate(s.rates.domain));
  bars($("entities"), s.rates.top_entities.map((e) => [e.entity_id, e.rate]));
  $("event-types").replaceChildren(...Object.entries(s.rates.event_type)
    .sort((a, b) => b[1]["15m"] - a[1]["15m"]).slice(0, 12)
    .map(([name, r]) => el("tr", {}, el("td", {}, name),
      el("td", { class: "num" }, fmtRate(r["1m"])), el("td", { class: "num" }, fmtRate(r["5m"])),
      el("td", { class: "num" }, fmtRate(r["15m"])))));

  const errors = s.errors || [];
  $("errors").replaceChildren(...(errors.length ? errors.map((e) => el("li", {},
    el("span", { class: "muted" }, e.time.replace("T", " ").replace(/\.\d+Z$/, "Z") + " "),
    el("span", { class: "lvl-" + e.level }, e.level + " "), e.message)) : [el("li", { class: "muted" }, "none")]));
}

function renderAlerts(answer) {
  const box = $("alerts");
  if (!answer) {
    box.className = "muted";
    box.textContent = "alerts unavailable";
    return;
  }
  const rules = answer.rules || [];
  const firing = rules.filter((r) => r.state === "firing");
  const pending = rules.filter((r) => r.state === "pending");
  box.className = "";
  const rows = [...firing, ...pending].map((r) => el("div", { class: "alert" },
    el("span", { class: "sev-" + r.severity }, (r.state === "firing" ? "● " : "◌ ") + r.name),
    " — " + (r.summary || "") + (r.since ? " (since " + r.since + ")" : "") +
    (r.value !== null && r.value !== undefined ? " · value " + fmtRate(r.value) : "")));
  box.replaceChildren(...(rows.length ? rows
    : [el("span", { class: "muted" }, "no alert firing (" + rules.length + " rules)")]));
}

async function pollAlerts() {
  try {
    const r = await fetch("alerts", { cache: "no-store" });
    renderAlerts(r.ok ? await r.json() : null);
  } catch (_) {
    renderAlerts(null);
  }
}

async function poll() {
  try {
    const r = await fetch("api/stats", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    if (!last) {
      for (const p of s.rates.history) pushPoint(p);
    } else {
      const dt = s.uptime_seconds - last.uptime_seconds;
      if (dt > 0) {
        pushPoint({
          t: Date.parse(s.time) / 1000,
          received: Math.max(0, s.totals.received - last.totals.received) / dt,
          written: Math.max(0, s.totals.written - last.totals.written) / dt,
        });
      }
    }
    last = s;
    render(s);
    drawChart();
    $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  } catch (e) {
    $("live").textContent = "cannot reach ha-ingestor: " + e.message;
  }
  if (polls++ % ALERTS_EVERY === 0) await pollAlerts();
  setTimeout(poll, POLL_MS);
}

window.addEventListener("resize", drawChart);
poll();
