// StreamSense dashboard: fetches /api/summary and draws inline SVG charts (no libraries, nothing from a CDN).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#3366cc", "#d6453d", "#2f9e62", "#f0a030", "#8e44ad", "#17a2b8", "#7f8c8d", "#c2185b"];
const SENTIMENTS = ["negative", "neutral", "positive"];
const LEVELS = ["low", "medium", "high", "critical"];
const KINDS = ["post", "ticket", "dead_letter"];
const KIND_NAMES = {post: "posts", ticket: "tickets", dead_letter: "dead letters", alert: "alerts"};
const STEP_MS = {minute: 60e3, hour: 3600e3};
const MAX_LINES = 6;
const REFRESH_MS = 10e3;
const WIDE = 900, HALF = 520;  // viewBox widths of full-width and half-width charts
const SMOOTH = {minute: 5, hour: 1};  // negative share over this many trailing buckets
const MIN_POINT = 20;  // a share of fewer messages is not drawn (the negative_share rule's min_messages)
const state = {kind: "post", bucket: "minute", filters: {}};
const FILTERS = ["from", "grp", "lang", "sentiment", "risk"];

const cssVar = name => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const colours = names => Object.fromEntries(names.map(n => [n, cssVar("--" + n)]));

function add(parent, tag, attrs = {}, text = null) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function svgIn(container, width, height) {
  container.replaceChildren();
  return add(container, "svg:svg", {viewBox: `0 0 ${width} ${height}`, role: "img"});
}

function empty(svg, width, height, message) {
  add(svg, "svg:text", {x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty"}, message);
}

const pad2 = n => String(n).padStart(2, "0");
function clock(ms, withDate) {
  const d = new Date(ms);
  const time = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  return withDate ? `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${time}` : time;
}

// Evenly spaced slots from the first to the last bucket, so that empty buckets show as gaps.
function slots(times, step) {
  if (!times.length) return [];
  const first = Math.min(...times), last = Math.max(...times), out = [];
  for (let t = first; t <= last; t += step) out.push(t);
  return out;
}

function xAxis(svg, ticks, x, y, withDate, format = null) {
  const every = Math.max(1, Math.ceil(ticks.length / 8));
  ticks.forEach((t, i) => {
    if (i % every) return;
    add(svg, "svg:text", {x: x(t), y: y + 16, "text-anchor": "middle"}, format ? format(t) : clock(t, withDate && i === 0));
  });
  add(svg, "svg:line", {x1: 50, x2: x(ticks[ticks.length - 1]) + 10, y1: y, y2: y, class: "axis"});
}

function yGrid(svg, top, bottom, right, max, format) {
  for (let i = 0; i <= 4; i++) {
    const y = bottom - (bottom - top) * i / 4;
    add(svg, "svg:line", {x1: 50, x2: right, y1: y, y2: y, class: "grid"});
    add(svg, "svg:text", {x: 44, y: y + 4, "text-anchor": "end"}, format(max * i / 4));
  }
}

function legend(svg, entries, x, y) {
  const g = add(svg, "svg:g", {class: "legend"});
  entries.forEach(([label, colour], i) => {
    add(g, "svg:rect", {x, y: y + i * 20, width: 12, height: 12, rx: 2, fill: colour});
    add(g, "svg:text", {x: x + 18, y: y + i * 20 + 11}, label);
  });
}

// One line per group: negative share over the trailing SMOOTH buckets; a gap where those held fewer than MIN_POINT
// messages (a share of a handful jumps between 0 % and 100 %). A point's area grows with its messages.
function lineChart(container, rows, bucket) {
  const step = STEP_MS[bucket], width = WIDE, height = 260, top = 12, bottom = height - 28, right = width - 190;
  const svg = svgIn(container, width, height);
  if (!rows.length) return empty(svg, width, height, "no messages yet");
  const byGroup = new Map();
  for (const r of rows) {
    const key = r.grp ?? "(none)";
    if (!byGroup.has(key)) byGroup.set(key, {n: 0, buckets: new Map()});
    const g = byGroup.get(key);
    g.n += r.n;
    g.buckets.set(Date.parse(r.bucket_start), r);
  }
  const groups = [...byGroup.entries()].sort((a, b) => b[1].n - a[1].n).slice(0, MAX_LINES);
  const ticks = slots(rows.map(r => Date.parse(r.bucket_start)), step);
  const span = Math.max(ticks[ticks.length - 1] - ticks[0], 1);
  const x = t => ticks.length === 1 ? (50 + right) / 2 : 60 + (right - 70) * (t - ticks[0]) / span;
  const y = share => bottom - (bottom - top) * share;
  yGrid(svg, top, bottom, right, 1, v => `${Math.round(v * 100)}%`);
  xAxis(svg, ticks, x, bottom, true);
  const trailing = g => t => {
    let n = 0, negative = 0;
    for (let k = 0; k < SMOOTH[bucket]; k++) {
      const r = g.buckets.get(t - k * step);
      if (r) { n += r.n; negative += r.negative; }
    }
    return {n, negative};
  };
  const largest = Math.max(1, ...groups.flatMap(([, g]) => ticks.map(t => trailing(g)(t).n)));
  let held = 0;
  groups.forEach(([name, g], i) => {
    const colour = PALETTE[i % PALETTE.length];
    let d = "", joined = false;
    for (const t of ticks) {
      const {n, negative} = trailing(g)(t);
      if (n < MIN_POINT) {
        held += g.buckets.has(t);
        joined = false;
        continue;
      }
      d += `${joined ? "L" : "M"}${x(t).toFixed(1)},${y(negative / n).toFixed(1)}`;
      joined = true;
      if (g.buckets.has(t)) {
        const dot = add(svg, "svg:circle", {cx: x(t), cy: y(negative / n), r: (1.5 + 3.5 * Math.sqrt(n / largest)).toFixed(2),
                                            fill: colour, class: "point", "data-n": n, "data-group": name});
        add(dot, "svg:title", {}, `${name} ${clock(t, true)}: ${negative} of ${n} negative`);
      }
    }
    add(svg, "svg:path", {d, stroke: colour, class: "line series", "data-group": name});
  });
  legend(svg, groups.map(([name, g], i) => [`${name} (${g.n})`, PALETTE[i % PALETTE.length]]), right + 24, top);
  const note = [`dot area: its messages`, held ? `${held} points of under ${MIN_POINT}` : `no point of under ${MIN_POINT}`,
                `messages${held ? " not drawn" : ""}`];
  note.forEach((line, i) => add(svg, "svg:text", {x: right + 24, y: top + groups.length * 20 + 16 + 15 * i,
                                                    class: "held"}, line));
}

// Stacked bars per time bucket; `values(t)` gives {key: count}; `format(t)`: a tick's label (default: the clock).
function stackedBars(container, width, height, times, step, keys, palette, values, format = null) {
  const top = 12, bottom = height - 28, right = width - 130;
  const svg = svgIn(container, width, height);
  if (!times.length) return empty(svg, width, height, "no rows yet");
  const ticks = slots(times, step);
  const max = Math.max(...ticks.map(t => keys.reduce((sum, k) => sum + (values(t)[k] || 0), 0)), 1);
  const band = (right - 60) / ticks.length, barWidth = Math.min(band * 0.8, 40);
  const x = t => 60 + band * ((t - ticks[0]) / step) + band / 2;
  yGrid(svg, top, bottom, right, max, v => String(Math.round(v)));
  xAxis(svg, ticks, x, bottom, false, format);
  for (const t of ticks) {
    let y = bottom;
    for (const k of keys) {
      const n = values(t)[k] || 0;
      if (!n) continue;
      const h = (bottom - top) * n / max;
      y -= h;
      const bar = add(svg, "svg:rect", {x: x(t) - barWidth / 2, y, width: barWidth, height: h, fill: palette[k],
                                        class: "bar", "data-key": k});
      add(bar, "svg:title", {}, `${format ? format(t) : clock(t, true)} ${KIND_NAMES[k] || k}: ${n}`);
    }
  }
  legend(svg, keys.map(k => [KIND_NAMES[k] || k, palette[k]]), right + 20, top);
}

// Rows folded per bucket start: Map(t -> {key: n}), `accumulate(sums, row)` adding each row in.
function perBucket(rows, accumulate) {
  const out = new Map();
  for (const r of rows) {
    const t = Date.parse(r.bucket_start);
    if (!out.has(t)) out.set(t, {});
    accumulate(out.get(t), r);
  }
  return out;
}

function volumeChart(rows, bucket) {
  const sums = perBucket(rows, (into, r) => { for (const s of SENTIMENTS) into[s] = (into[s] || 0) + r[s]; });
  stackedBars(document.getElementById("volume-chart"), WIDE, 150, [...sums.keys()], STEP_MS[bucket], SENTIMENTS,
              colours(SENTIMENTS), t => sums.get(t) || {});
}

function throughputChart(rows) {
  const sums = perBucket(rows, (into, r) => { into[r.kind] = r.n; });
  const palette = {post: PALETTE[0], ticket: PALETTE[3], dead_letter: PALETTE[1]};
  stackedBars(document.getElementById("throughput-chart"), HALF, 260, [...sums.keys()], STEP_MS.minute, KINDS,
              palette, t => sums.get(t) || {});
}

// Horizontal stacked bars: tickets per product split by risk level.
function riskChart(rows) {
  const products = new Map();
  for (const r of rows) {
    const name = r.product ?? "(none)";
    const p = products.get(name) || {total: 0, weighted: 0};
    p[r.risk_level] = r.n;
    p.total += r.n;
    p.weighted += r.n * r.avg_risk_score;
    products.set(name, p);
  }
  const list = [...products.entries()].sort((a, b) => b[1].total - a[1].total);
  const width = HALF, rowH = 22, top = 8, left = 96, right = width - 110;
  const height = Math.max(top + list.length * rowH + 30, 80);
  const svg = svgIn(document.getElementById("risk-chart"), width, height);
  if (!list.length) return empty(svg, width, height, "no tickets yet");
  const max = Math.max(...list.map(([, p]) => p.total));
  const palette = colours(LEVELS);
  list.forEach(([name, p], i) => {
    const y = top + i * rowH;
    add(svg, "svg:text", {x: left - 8, y: y + 14, "text-anchor": "end", class: "bar-label"}, name);
    let x = left;
    for (const level of LEVELS) {
      if (!p[level]) continue;
      const w = (right - left) * p[level] / max;
      const bar = add(svg, "svg:rect", {x, y: y + 2, width: w, height: rowH - 6, fill: palette[level], class: "bar",
                                        "data-key": level});
      add(bar, "svg:title", {}, `${name}: ${p[level]} ${level}`);
      x += w;
    }
    add(svg, "svg:text", {x: x + 6, y: y + 14}, `${p.total} · avg ${(p.weighted / p.total).toFixed(2)}`);
  });
  const legendY = top + list.length * rowH + 10;
  LEVELS.forEach((level, i) => {
    add(svg, "svg:rect", {x: left + i * 90, y: legendY, width: 12, height: 12, rx: 2, fill: palette[level]});
    add(svg, "svg:text", {x: left + i * 90 + 18, y: legendY + 11, class: "bar-label"}, level);
  });
}

function fillTable(id, rows, cells, emptyText) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (!rows.length) {
    const td = add(add(body, "tr"), "td", {colspan: document.querySelectorAll(`#${id} th`).length, class: "empty"});
    td.textContent = emptyText;
    return;
  }
  for (const row of rows) cells(add(body, "tr"), row);
}

const badge = (parent, level) => add(parent, "span", {class: `badge ${level}`}, level);
const shortTime = iso => iso ? clock(Date.parse(iso), true) : "";

function alertsTable(rows) {
  fillTable("alerts-table", rows, (tr, a) => {
    tr.className = "alert";
    add(tr, "td", {class: "time"}, shortTime(a.created_at));
    badge(add(tr, "td"), a.severity);
    add(tr, "td", {}, a.rule);
    add(tr, "td", {}, a.key);
    const cell = add(tr, "td");
    add(cell, "div", {class: "summary"}, a.summary);
    const items = Array.isArray(a.evidence) ? a.evidence : [];
    const about = items.length && items[0] && typeof items[0].about === "object" ? items[0].about : null;
    if (about) {
      aboutDetails(cell, about, items, a);
    } else if (items.length) {
      evidenceList(cell, items);
    }
    if (a.message) messageDetails(cell, a.message);
  }, "no alerts");
}

function evidenceList(parent, items) {
  const list = add(parent, "ul", {class: "evidence"});
  for (const e of items) {
    const li = add(list, "li");
    add(li, "span", {class: "id"}, `${e.message_id ?? ""}${typeof e.risk_score === "number" ?
      ` (${e.risk_score.toFixed(2)})` : ""}`);
    li.append(`: ${e.excerpt ?? ""}`);
    for (const r of Array.isArray(e.reasons) ? e.reasons : []) {  // a per-message alert: every rule's reason
      add(add(li, "div", {class: "reason"}), "span", {}, `${r.rule} (${r.severity}): ${r.reason}`);
    }
  }
}

// A per-message alert opens to its message as stored, with every reason the store has for its risk level.
function messageDetails(parent, m) {
  const details = add(parent, "details", {class: "message"});
  add(details, "summary", {}, `the message (${m.kind} ${m.message_id})`);
  const list = add(details, "dl");
  const labels = m.risk_labels && typeof m.risk_labels === "object" ? Object.entries(m.risk_labels)
    .sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${Number(v).toFixed(2)}`).join(", ") : "";
  const signals = Array.isArray(m.risk_signals) ? m.risk_signals.map(s => typeof s === "string" ? s :
    JSON.stringify(s)).join(", ") : "";
  for (const [term, value] of [["time", shortTime(m.event_at)], ["group", m.grp ?? ""], ["author", m.author ?? ""],
    ["language", m.lang ?? "none"], ["sentiment", m.sentiment], ["risk", `${m.risk_level} (${Number(m.risk_score)
      .toFixed(2)}): ${m.risk_explanation}`], ["risk labels", labels || "–"], ["risk signals", signals || "none"],
    ["text", m.text ?? "(text not stored)"]]) {
    add(list, "dt", {}, term);
    add(list, "dd", {}, value);
  }
}

// A windowed alert opens to what its window is about (streams/alerting/terms.py): terms, representative messages,
// duplicates, then the rest of its evidence.
function aboutDetails(parent, about, items, alert) {
  const details = add(parent, "details", {class: "about"});
  const terms = Array.isArray(about.terms) ? about.terms : [];
  const dup = about.duplicates || {};
  add(details, "summary", {}, terms.length ? `terms, examples (${terms.length} terms)` :
    about.note ? about.note : "no term stands out from the baseline");
  if (terms.length) {
    const table = add(details, "table", {class: "terms"});
    const head = add(add(table, "thead"), "tr");
    for (const [label, num] of [["term", false], ["messages", true], ["in the baseline", true], ["z", true]]) {
      add(head, "th", num ? {class: "num"} : {}, label);
    }
    const body = add(table, "tbody");
    for (const t of terms) {
      const tr = add(body, "tr");
      add(tr, "td", {class: "term"}, t.term);
      add(tr, "td", {class: "num"}, String(t.count));
      add(tr, "td", {class: "num"}, String(t.baseline));
      add(tr, "td", {class: "num"}, String(t.z));
    }
  }
  add(details, "p", {class: "about-note"}, `${about.messages ?? "?"} messages in the window, ${about.baseline_messages ?? "?"}` +
    ` in its baseline; ${dup.distinct ?? "?"} distinct texts` + (dup.bot_like ?
      ` — ${dup.top_count} are one text (bot-like)` : ""));
  const shown = Math.min(about.examples || 0, items.length);
  if (shown) {
    add(details, "h3", {}, "representative messages");
    evidenceList(details, items.slice(0, shown));
  }
  if (items.length > shown) {
    add(details, "h3", {}, "more of the window");
    evidenceList(details, items.slice(shown));
  }
  const [kind, ...group] = String(alert.key || "").split(":");
  if (alert.window_start && alert.window_end && group.length) {
    const button = add(details, "button", {class: "window-messages", type: "button"}, "messages of the window");
    button.addEventListener("click", () => windowMessages(details, button, kind, group.join(":"), alert));
  }
}

// Every stored message of a windowed alert's window (up to the API's limit), oldest first.
async function windowMessages(parent, button, kind, group, alert) {
  button.disabled = true;
  const query = new URLSearchParams({kind, grp: group, start: alert.window_start, end: alert.window_end});
  const box = add(parent, "div", {class: "window"});
  try {
    const response = await fetch(`/api/window?${query}`, {cache: "no-store"});
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    const data = await response.json();
    add(box, "p", {class: "about-note"}, `${data.total} messages stored in the window` +
      (data.total > data.messages.length ? `, the first ${data.messages.length} shown` : ""));
    const table = add(box, "table", {class: "rows window-table"});
    const head = add(add(table, "thead"), "tr");
    for (const label of ["time", "message", "sentiment", "risk", "text"]) add(head, "th", {}, label);
    const body = add(table, "tbody");
    for (const m of data.messages) {
      const tr = add(body, "tr");
      add(tr, "td", {class: "time"}, shortTime(m.event_at));
      add(tr, "td", {class: "id"}, m.message_id);
      add(tr, "td", {}, m.sentiment);
      badge(add(tr, "td"), m.risk_level);
      add(tr, "td", {}, m.text ?? "(text not stored)");
    }
  } catch (err) {
    add(box, "p", {class: "error"}, `could not load the window: ${err.message}`);
    button.disabled = false;
  }
}

function ticketsTable(rows) {
  fillTable("tickets-table", rows, (tr, t) => {
    add(tr, "td", {class: "num"}, t.risk_score.toFixed(2));
    badge(add(tr, "td"), t.risk_level);
    add(tr, "td", {}, t.ticket_id);
    add(tr, "td", {}, t.product ?? "");
    add(tr, "td", {}, t.priority ?? "");
    add(tr, "td", {}, t.risk_explanation);
    add(tr, "td", {}, t.excerpt ?? "(text not stored)");
  }, "no tickets");
}

function totals(data) {
  const box = document.getElementById("totals");
  box.replaceChildren();
  const newest = data.throughput.length ? data.throughput[0].bucket_start : null;
  const cards = [...["post", "ticket", "alert", "dead_letter"].map(k => [KIND_NAMES[k], data.totals[k] ?? 0]),
                 ["newest stored minute (UTC)", newest ? clock(Date.parse(newest)) : "–"]];
  for (const [label, value] of cards) {
    const card = add(box, "div", {class: "card"});
    add(card, "div", {class: "value"}, String(value));
    add(card, "div", {class: "label"}, label);
  }
}

function render(data) {
  totals(data);
  document.getElementById("group-word").textContent = state.kind === "post" ? "brand (posts)" : "product (tickets)";
  document.getElementById("smooth-note").textContent = SMOOTH[data.bucket] > 1 ?
    ` (each point: the share of the ${SMOOTH[data.bucket]} ${data.bucket}s up to it)` : " (each point: its hour)";
  const sentiment = data.sentiment.filter(r => r.kind === state.kind);
  lineChart(document.getElementById("sentiment-chart"), sentiment, data.bucket);
  volumeChart(sentiment, data.bucket);
  riskChart(data.risk);
  throughputChart(data.throughput);
  alertsTable(data.alerts);
  ticketsTable(data.top_tickets);
  fillTable("rules-table", data.alert_counts, (tr, r) => {
    add(tr, "td", {}, r.rule);
    badge(add(tr, "td"), r.severity);
    add(tr, "td", {class: "num"}, String(r.n));
    add(tr, "td", {class: "time"}, shortTime(r.last_created_at));
  }, "no alerts");
  fillTable("languages-table", data.languages ?? [], (tr, l) => {
    add(tr, "td", {}, KIND_NAMES[l.kind] ?? l.kind);
    add(tr, "td", {}, l.lang ?? "none");
    add(tr, "td", {class: "num"}, String(l.n));
    add(tr, "td", {class: "num"}, `${Math.round(100 * (l.supported_share ?? 0))}%`);
  }, "no messages stored yet");
  fillTable("drift-table", data.drift ?? [], (tr, d) => {
    add(tr, "td", {class: "time"}, shortTime(d.window_start));
    add(tr, "td", {}, `${d.model_version} ${d.scope}`);
    add(tr, "td", {class: "num"}, String(d.messages));
    add(tr, "td", {}, d.status ?? "open");
    add(tr, "td", {}, d.summary ?? "");
  }, "no drift windows yet");
  offsetsTable(data.offsets);
  filterOptions(data);
  const range = data.range || {};
  document.getElementById("range").textContent = range.start ?
    `event time ${shortTime(range.start)} – ${range.end ? shortTime(range.end) : "now"} UTC` +
    (data.bucket_note ? ` · ${data.bucket_note}` : "") : "";
}

function offsetsTable(offsets, lag) {
  const byPartition = new Map((lag && lag.lag || []).map(l => [`${l.topic}/${l.partition}`, l.lag]));
  fillTable("offsets-table", offsets, (tr, o) => {
    add(tr, "td", {}, o.group_id);
    add(tr, "td", {}, o.topic);
    add(tr, "td", {class: "num"}, String(o.partition));
    add(tr, "td", {class: "num"}, String(o.next_offset));
    const value = byPartition.get(`${o.topic}/${o.partition}`);
    add(tr, "td", {class: "num lag"}, value === undefined ? "–" : String(value));
  }, "no offsets stored yet");
  if (lag) {
    const failed = (lag.sources || []).filter(s => !s.ok);
    document.getElementById("lag-note").dataset.state = !lag.configured ? "off" : failed.length ? "error" : "ok";
    if (!lag.configured) {
      document.getElementById("lag-note").textContent = "Lag: set STREAMSENSE_DASHBOARD_METRICS_URL to the " +
        "workers' /metrics URLs to show it (the broker's high-water mark minus the next offset, per partition).";
    } else if (failed.length) {
      document.getElementById("lag-note").textContent = `Lag: could not read ${failed.map(s => `${s.url} ` +
        `(${s.error})`).join(", ")}`;
    }
  }
}

// The filter menus: groups of the kind shown and the languages of the time range; a chosen value stays listed.
function filterOptions(data) {
  const options = data.options || {};
  const form = document.getElementById("filters");
  const fillSelect = (name, values) => {
    const select = form.elements[name];
    const chosen = state.filters[name] || "";
    const all = [...new Set([...values, ...(chosen ? [chosen] : [])])];
    select.replaceChildren();
    add(select, "option", {value: ""}, "all");
    for (const v of all) add(select, "option", {value: v}, v);
    select.value = chosen;
  };
  fillSelect("grp", (options.groups || []).filter(g => g.kind === state.kind).map(g => g.grp));
  fillSelect("lang", options.languages || []);
  document.getElementById("group-label").textContent = state.kind === "post" ? "brand" : "product";
}

async function loadLag(offsets) {
  try {
    const response = await fetch("/api/lag", {cache: "no-store"});
    if (response.ok) offsetsTable(offsets, await response.json());
  } catch (exc) { /* the offsets stay; the note says nothing new */ }
}

// --- feedback: labels collected, precision with its interval, a shadowed challenger (/api/feedback) ---------------
const DAY_MS = 86400e3;
const day = ms => { const d = new Date(ms); return `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`; };
const percent = v => `${Math.round(100 * v)}%`;
const SCOPES = {"alert rule": "rule", "would-be alert rule": "would-be rule", head: "head"};

function feedbackSummary(data) {
  const note = document.getElementById("feedback-summary");
  note.classList.toggle("empty", !!data.hint);
  if (data.hint) { note.textContent = data.hint; return; }
  const sum = key => data.labels.reduce((n, l) => n + l[key], 0);
  note.textContent = `${data.verdicts} verdicts from ${data.people} ${data.people === 1 ? "person" : "people"}: ` +
    `${sum("random")} on the review queue's random share (the unbiased estimate), ${sum("queue")} on the rest of ` +
    `the queue (alerts, least sure), ${sum("outside")} given outside it` + (data.precision_rows > data.precision.length ?
      ` · precision: the first ${data.precision.length} of ${data.precision_rows} lines` : "");
}

// One line per alert rule, would-be alert rule or head label: its 95 % interval, a dot at the precision from all
// verdicts, a ring at the random share's.
function precisionChart(rows) {
  const width = WIDE, rowH = 24, top = 24, left = 340, right = width - 270;
  const height = Math.max(top + rows.length * rowH + 8, 70);
  const svg = svgIn(document.getElementById("feedback-precision-chart"), width, height);
  if (!rows.length) return empty(svg, width, height, "no verdicts yet");
  const x = p => left + (right - left) * p, bottom = top + rows.length * rowH;
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    add(svg, "svg:line", {x1: x(v), x2: x(v), y1: top - 6, y2: bottom, class: "grid"});
    add(svg, "svg:text", {x: x(v), y: top - 10, "text-anchor": "middle"}, percent(v));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH + rowH / 2;
    const label = `${SCOPES[r.scope] || r.scope} ${r.name}${r.scope === "head" ? ` → ${r.predicted}` : ""}` +
      ` · ${r.model_version ?? "?"}`;
    add(svg, "svg:text", {x: left - 10, y: y + 4, "text-anchor": "end", class: "bar-label"}, label);
    const g = add(svg, "svg:g", {class: "precision-row", "data-scope": r.scope, "data-name": r.name,
                                 "data-n": r.n, "data-low": r.low, "data-high": r.high});
    add(g, "svg:line", {x1: x(r.low), x2: x(r.high), y1: y, y2: y, class: "interval"});
    const dot = add(g, "svg:circle", {cx: x(r.precision), cy: y, r: 4.5, class: "estimate"});
    add(dot, "svg:title", {}, `${label}: ${r.right} of ${r.n} right, ${percent(r.precision)} ` +
      `(95 %: ${percent(r.low)} – ${percent(r.high)})`);
    if (r.precision_random !== null && r.precision_random !== undefined) {
      const ring = add(g, "svg:circle", {cx: x(r.precision_random), cy: y, r: 7, class: "random-estimate"});
      add(ring, "svg:title", {}, `random share: ${r.right_random} of ${r.n_random} right, ` +
        `${percent(r.precision_random)} (95 %: ${percent(r.low_random)} – ${percent(r.high_random)})`);
    }
    add(svg, "svg:text", {x: right + 14, y: y + 4, class: "bar-label"}, `${percent(r.precision)} of ${r.n}` +
      ` [${Math.round(100 * r.low)}–${percent(r.high)}]` +
      (r.n_random ? ` · random ${percent(r.precision_random)} of ${r.n_random}` : ""));
  });
}

function feedbackPanel(data) {
  feedbackSummary(data);
  fillTable("feedback-labels-table", data.labels, (tr, l) => {
    add(tr, "td", {}, l.kind === l.head ? l.head : `${l.kind === "would_alert" ? "would-be alert" : l.kind}, ${l.head}`);
    for (const key of ["n", "labelled", "random", "queue", "outside", "people"]) add(tr, "td", {class: "num"}, String(l[key]));
    add(tr, "td", {class: "time"}, shortTime(l.last_at));
  }, "no verdicts yet");
  const days = new Map(data.per_day.map(d => [Date.parse(d.bucket_start), d]));
  stackedBars(document.getElementById("feedback-days-chart"), HALF, 170, [...days.keys()], DAY_MS, ["random", "other"],
              {random: cssVar("--positive"), other: PALETTE[0]}, t => days.get(t) || {}, day);
  precisionChart(data.precision);
  fillTable("feedback-shadow-table", data.shadow, (tr, s) => {
    add(tr, "td", {}, s.champion);
    add(tr, "td", {}, s.challenger);
    add(tr, "td", {class: "num"}, String(s.messages));
    add(tr, "td", {class: "num"}, percent(s.sentiment_agreement));
    add(tr, "td", {class: "num"}, percent(s.risk_level_agreement));
    add(tr, "td", {class: "num"}, String(s.challenger_alerts));
    add(tr, "td", {class: "num"}, String(s.judged));
    add(tr, "td", {}, s.judged ? `${percent(s.precision)} [${percent(s.low)}–${percent(s.high)}]` :
      "none judged yet: streamsense feedback queue");
    add(tr, "td", {class: "time"}, shortTime(s.last_at));
  }, "no challenger shadowed (STREAMSENSE_SHADOW_MODEL)");
}

async function loadFeedback() {
  try {
    const response = await fetch("/api/feedback", {cache: "no-store"});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    feedbackPanel(data);
  } catch (exc) {
    document.getElementById("feedback-summary").textContent = `Could not load the feedback: ${exc.message}`;
  }
}

async function load() {
  const error = document.getElementById("error");
  try {
    const query = new URLSearchParams({bucket: state.bucket});
    for (const [k, v] of Object.entries(state.filters)) if (v) query.set(k, v);
    const response = await fetch(`/api/summary?${query}`, {cache: "no-store"});
    const text = await response.text();
    let data;
    try { data = JSON.parse(text); } catch (exc) { throw new Error(text || response.statusText); }
    if (!response.ok) throw new Error(data.error || response.statusText);
    render(data);
    await loadLag(data.offsets);
    await loadFeedback();
    error.hidden = true;
    document.getElementById("updated").textContent = `updated ${clock(Date.parse(data.generated_at))}:` +
      `${pad2(new Date(data.generated_at).getUTCSeconds())} UTC · every ${REFRESH_MS / 1000} s`;
    document.body.dataset.ready = "1";
  } catch (exc) {
    error.textContent = `Could not load data: ${exc.message}`;
    error.hidden = false;
  }
}

function toggle(id, key) {
  document.getElementById(id).addEventListener("click", event => {
    const value = event.target.dataset[key];
    if (!value) return;
    state[key] = value;
    for (const b of document.querySelectorAll(`#${id} button`)) b.classList.toggle("on", b === event.target);
    load();
  });
}

document.getElementById("filters").addEventListener("change", event => {
  state.filters[event.target.name] = event.target.value;
  load();
});
document.getElementById("clear-filters").addEventListener("click", () => {
  state.filters = {};
  for (const select of document.querySelectorAll("#filters select")) select.value = "";
  load();
});

toggle("kind-toggle", "kind");
toggle("bucket-toggle", "bucket");
load();
setInterval(load, REFRESH_MS);
