// sketchgen live page: polls /history and /density and draws on canvases. Hand-written, no libraries.
// Test hooks: the canvases carry data-points / data-total / data-cells, <body> data-refreshes,
// data-density-refreshes, data-error and data-auth ("needed" / "refused" after a 401), so a driver can read
// what was drawn from the DOM.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_MS = Number(params.get("refresh")) || 2000;
const DENSITY_EVERY = 2; // density refreshed every this many history refreshes
const COLORS = { loss: "#3b5bdb", floor: "#868e96", drift: "#e8590c", threshold: "#c92a2a", records: "#2f9e44" };
// a viridis-like ramp: five stops, interpolated
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

const state = { points: [], maxlen: 2000, since: null, refreshes: 0, densityBusy: false, lastHistory: null };
const $ = (id) => document.getElementById(id);

function fmt(v, digits = 3) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e12) return v.toLocaleString("en");
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toLocaleString("en");
}

function setError(message) {
  $("error").textContent = message;
  document.body.dataset.error = message;
}

// ---- API token -------------------------------------------------------------------------------
// A learner started with --api-token-file answers its data endpoints only with "Authorization: Bearer TOKEN".
// The page is opened as http://HOST:PORT/#token=TOKEN: the fragment never reaches the server (nor its logs);
// the token is kept in sessionStorage (this tab only), stripped from the address bar, and sent on every fetch.
const TOKEN_KEY = "sketchgen-api-token";

function takeTokenFromFragment() {
  const frag = new URLSearchParams(location.hash.slice(1));
  const token = frag.get("token");
  if (token === null) return;
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  frag.delete("token");
  const rest = frag.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

class AuthError extends Error {}

function authMessage(refused) {
  const where = `${location.origin}${location.pathname}${location.search}#token=…`;
  return refused ? `the token was refused by this learner: open ${where} with a valid token`
    : `this learner needs a token: open ${where}`;
}

async function getJSON(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path, { cache: "no-store", headers });
  if (resp.status === 401) {
    document.body.dataset.auth = token ? "refused" : "needed";
    throw new AuthError(authMessage(Boolean(token)));
  }
  const body = await resp.json();
  if (!resp.ok) throw new Error(`${path}: ${body.error || resp.status}`);
  return body;
}

// ---- footer links ------------------------------------------------------------------------------
// A plain navigation cannot send the Authorization header, so with a token the footer's data links (data-api) are
// fetched with it and the JSON opened as a blob: URL in a new tab; without a token they stay plain links.
// Test hook: the link's data-fetched is the status of its last such fetch.
async function openWithToken(event) {
  const link = event.currentTarget, path = link.getAttribute("href");
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  const view = window.open("", "_blank"); // opened within the click, so no popup blocker stops it
  try {
    const resp = await fetch(path, { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
    link.dataset.fetched = String(resp.status);
    if (resp.status === 401) {
      document.body.dataset.auth = "refused";
      throw new AuthError(authMessage(true));
    }
    const url = URL.createObjectURL(await resp.blob());
    if (view) view.location.href = url; else location.assign(url);
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    if (view) view.close();
    setError(err instanceof AuthError ? err.message : `cannot open ${path}: ${err.message}`);
  }
}

// ---- canvas helpers ---------------------------------------------------------------------------

function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(50, canvas.clientWidth), h = Math.max(40, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function rampColor(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

// A line chart of time series. series: [{label, color, data: [[t, v], ...], dash}];
// opts.log: a log y axis; opts.zero: the y axis includes 0. data-points counts the first series' drawn points.
function lineChart(canvas, series, opts = {}) {
  const { ctx, w, h } = prepare(canvas);
  const pad = { l: 52, r: 8, t: 16, b: 18 };
  const tf = (v) => (opts.log ? Math.log10(v) : v);
  const usable = (v) => v !== null && Number.isFinite(v) && (!opts.log || v > 0);
  const all = series.flatMap((s) => s.data.filter((p) => usable(p[1])));
  canvas.dataset.points = String(series[0].data.filter((p) => usable(p[1])).length);
  ctx.strokeStyle = "#d9dbe3";
  ctx.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  if (all.length === 0) {
    ctx.fillStyle = "#6b7080";
    ctx.fillText("no data yet", pad.l + 8, pad.t + 16);
    return;
  }
  const now = Date.now() / 1000;
  let t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(now, ...all.map((p) => p[0]));
  if (t1 - t0 < 60) t0 = t1 - 60; // at least a minute, so that a young history does not fill the width
  let y0 = Math.min(...all.map((p) => tf(p[1]))), y1 = Math.max(...all.map((p) => tf(p[1])));
  if (opts.zero) { y0 = Math.min(0, y0); y1 = Math.max(0, y1); }
  if (!(y1 > y0)) { const d = Math.max(Math.abs(y0) * 0.05, 0.5); y0 -= d; y1 += d; }
  const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - ((tf(v) - y0) / (y1 - y0)) * (h - pad.t - pad.b);
  // y ticks
  ctx.fillStyle = "#6b7080";
  ctx.textAlign = "right";
  for (let k = 0; k <= 3; k++) {
    const yv = y0 + (k / 3) * (y1 - y0), py = h - pad.b - (k / 3) * (h - pad.t - pad.b);
    ctx.fillText(fmt(opts.log ? 10 ** yv : yv, 2), pad.l - 4, py + 4);
  }
  ctx.textAlign = "left";
  ctx.fillText(`−${fmt((t1 - t0) / 60, 2)} min`, pad.l + 2, h - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", w - pad.r, h - 4);
  // series
  let lx = pad.l + 6;
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let started = false;
    for (const [t, v] of s.data) {
      if (!usable(v)) { started = false; continue; }
      if (started) ctx.lineTo(X(t), Y(v)); else ctx.moveTo(X(t), Y(v));
      started = true;
    }
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = s.color;
    ctx.textAlign = "left";
    ctx.fillText(s.label, lx, pad.t - 4);
    lx += ctx.measureText(s.label).width + 14;
  }
}

// ---- density and marginals --------------------------------------------------------------------

function drawDensity(canvas, d) {
  const { ctx, w, h } = prepare(canvas);
  if (!d.counts) {
    canvas.dataset.total = "0";
    ctx.fillStyle = "#6b7080";
    ctx.fillText("d = 1: see the marginal below", 10, 20);
    return;
  }
  const pad = { l: 40, r: 6, t: 6, b: 28 };
  const bins = d.counts.length;
  let max = 0, total = 0, cells = 0;
  for (const row of d.counts) for (const c of row) { max = Math.max(max, c); total += c; cells += c > 0 ? 1 : 0; }
  const img = ctx.createImageData(bins, bins);
  for (let i = 0; i < bins; i++) {
    for (let j = 0; j < bins; j++) {
      const c = d.counts[i][j], o = ((bins - 1 - j) * bins + i) * 4; // y grows upwards
      const rgb = c > 0 ? rampColor(Math.sqrt(c / max)) : [255, 255, 255];
      img.data.set([...rgb, 255], o);
    }
  }
  const off = document.createElement("canvas");
  off.width = off.height = bins;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  ctx.strokeStyle = "#d9dbe3";
  ctx.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  ctx.fillStyle = "#6b7080";
  ctx.textAlign = "left";
  ctx.fillText(fmt(d.x_range[0], 2), pad.l, h - 14);
  ctx.textAlign = "right";
  ctx.fillText(fmt(d.x_range[1], 2), w - pad.r, h - 14);
  ctx.textAlign = "center";
  ctx.fillText(`x${d.x}`, (pad.l + w) / 2, h - 2);
  ctx.textAlign = "right";
  ctx.fillText(fmt(d.y_range[1], 2), pad.l - 3, pad.t + 10);
  ctx.fillText(fmt(d.y_range[0], 2), pad.l - 3, h - pad.b);
  ctx.fillText(`x${d.y}`, pad.l - 3, (pad.t + h - pad.b) / 2);
  canvas.dataset.total = String(total);
  canvas.dataset.cells = String(cells);
  canvas.dataset.n = String(d.n);
  canvas.dataset.x = String(d.x);
  canvas.dataset.y = String(d.y);
}

function drawMarginals(box, d) {
  while (box.children.length > d.marginals.length) box.lastChild.remove();
  while (box.children.length < d.marginals.length) box.appendChild(document.createElement("canvas"));
  d.marginals.forEach((m, k) => {
    const canvas = box.children[k];
    const { ctx, w, h } = prepare(canvas);
    const max = Math.max(1, ...m.counts), bw = w / m.counts.length;
    const selected = m.dim === d.x || m.dim === d.y;
    ctx.fillStyle = selected ? "#3b5bdb" : "#748ffc";
    m.counts.forEach((c, i) => {
      const bh = (c / max) * (h - 14);
      ctx.fillRect(i * bw, h - bh, Math.max(1, bw - 0.5), bh);
    });
    ctx.fillStyle = "#1d1f24";
    ctx.fillText(`x${m.dim}  [${fmt(m.lo, 2)}, ${fmt(m.hi, 2)}]`, 3, 11);
    canvas.dataset.total = String(m.counts.reduce((a, b) => a + b, 0));
  });
  box.dataset.count = String(d.marginals.length);
}

// Bars of a typed stream's category and bool fields: per field, the share of the samples taking each value
// (null drawn as "(null)"). Test hooks: #categories data-count, each row's data-label and data-share.
function drawCategories(box, fields) {
  $("categories-block").hidden = fields.length === 0;
  box.replaceChildren(...fields.map((f) => {
    const total = f.counts.reduce((a, b) => a + b, 0);
    const card = document.createElement("div");
    card.className = "catfield";
    card.dataset.field = f.field;
    const title = document.createElement("div");
    title.className = "name";
    title.textContent = `${f.field} (${f.type})`;
    card.appendChild(title);
    f.labels.forEach((label, i) => card.appendChild(barRow(label, total ? f.counts[i] / total : 0)));
    return card;
  }));
  box.dataset.count = String(fields.length);
}

function barRow(label, share) {
  const row = document.createElement("div");
  row.className = "bar-row";
  row.dataset.label = label === null ? "" : label;
  row.dataset.share = String(share);
  const name = document.createElement("span");
  name.className = "bar-label" + (label === null ? " null" : "");
  name.textContent = label === null ? "(null)" : label;
  name.title = name.textContent;
  const track = document.createElement("span");
  track.className = "bar-track";
  const fill = document.createElement("span");
  fill.className = "bar-fill";
  fill.style.width = `${(100 * share).toFixed(2)}%`;
  track.appendChild(fill);
  const value = document.createElement("span");
  value.className = "bar-value";
  value.textContent = `${(100 * share).toFixed(1)} %`;
  row.append(name, track, value);
  return row;
}

// ---- refresh loops ----------------------------------------------------------------------------

function fillSelectors(dim) {
  const sx = $("sel-x"), sy = $("sel-y");
  if (sx.options.length === dim) return;
  for (const [sel, def] of [[sx, params.get("x") || "0"], [sy, params.get("y") || "1"]]) {
    sel.innerHTML = "";
    for (let k = 0; k < dim; k++) sel.add(new Option(`x${k}`, String(k)));
    sel.value = def;
  }
  sy.disabled = dim < 2;
  if (dim < 2) sy.value = "";
  $("sel-n").value = params.get("n") || "10000";
}

// The top fields of the per-field drift scores (learner/drift_fields.py), a category field with its most moved value.
function showDriftFields(fields) {
  const list = $("drift-fields");
  const top = fields.slice(0, 3);
  list.replaceChildren(...top.map((f) => {
    const item = document.createElement("li");
    const cat = f.categories && f.categories.length ? ` (${f.categories[0].category})` : "";
    item.textContent = `${f.field}${cat} ${fmt(f.score)}`;
    return item;
  }));
  list.dataset.count = String(top.length);
}

function showState(hist) {
  $("stream").textContent = hist.stream;
  const role = $("role");
  role.textContent = !hist.reachable ? "redis unreachable" : hist.leader ? "leader" : "standby";
  role.className = "badge " + (!hist.reachable ? "down" : hist.leader ? "leader" : "standby");
  $("holder").textContent = hist.lease_holder ? `lease: ${hist.lease_holder}` : "no lease holder";
  $("records").textContent = fmt(hist.records, 6);
  $("rate").textContent = `${fmt(hist.rate, 3)} records/s`;
  $("loss").textContent = fmt(hist.loss);
  $("rounds").textContent = `${hist.rounds} rounds · ${hist.steps ?? "–"} steps`;
  const drift = $("drift");
  drift.textContent = fmt(hist.drift);
  drift.classList.toggle("alarm", hist.drift !== null && hist.drift > hist.threshold);
  $("threshold").textContent = `threshold ${fmt(hist.threshold)}`;
  showDriftFields(hist.drift_fields || []);
  const s = hist.spec;
  if (s) {
    const sigma = Array.isArray(s.sigma) ? `[${fmt(Math.min(...s.sigma), 2)}…${fmt(Math.max(...s.sigma), 2)}]`
      : fmt(s.sigma);
    const scales = Array.isArray(s.scales) && s.scales.length > 1
      ? `${s.scales.length} scales σ = ${s.scales.map((v) => fmt(v, 2)).join(", ")}` : `σ = ${sigma}`;
    $("spec").textContent = `d = ${s.d} · m = ${s.m} · ${s.law} · ${scales}`;
    fillSelectors(s.d);
  }
  $("target").textContent = `target ${hist.target} · ${fmt(hist.target_records, 6)} records`;
}

function drawHistory() {
  const pts = state.points, thr = state.lastHistory ? state.lastHistory.threshold : null;
  lineChart($("loss-chart"), [
    { label: "loss", color: COLORS.loss, data: pts.map((p) => [p.time, p.loss]) },
    { label: "minibatch floor", color: COLORS.floor, data: pts.map((p) => [p.time, p.floor]), dash: [4, 3] },
  ], { log: true });
  const driftPts = pts.map((p) => [p.time, p.drift]);
  lineChart($("drift-chart"), [
    { label: "drift score", color: COLORS.drift, data: driftPts },
    { label: `threshold ${fmt(thr)}`, color: COLORS.threshold, data: pts.map((p) => [p.time, p.threshold]),
      dash: [6, 3] },
  ], { zero: true });
  lineChart($("records-chart"), [
    { label: "records", color: COLORS.records, data: pts.map((p) => [p.time, p.records]) },
  ], { zero: true });
}

async function refreshHistory() {
  const query = state.since === null ? "" : `?since=${state.since}`;
  const hist = await getJSON(`/history${query}`);
  state.lastHistory = hist;
  state.maxlen = hist.maxlen;
  state.points.push(...hist.points);
  if (state.points.length > state.maxlen) state.points.splice(0, state.points.length - state.maxlen);
  if (hist.points.length) state.since = hist.points[hist.points.length - 1].time;
  showState(hist);
  drawHistory();
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
}

async function refreshDensity() {
  const hist = state.lastHistory;
  if (!hist || !hist.has_model || state.densityBusy) return;
  state.densityBusy = true;
  try {
    const n = $("sel-n").value, x = $("sel-x").value || "0", y = $("sel-y").value;
    const query = `n=${n}&x=${x}&bins=64` + (hist.spec && hist.spec.d > 1 ? `&y=${y}` : "");
    const started = performance.now();
    const d = await getJSON(`/density?${query}`);
    drawDensity($("density"), d);
    drawMarginals($("marginals"), d);
    drawCategories($("categories"), d.categories || []);
    $("density-caption").textContent =
      `${fmt(d.n, 6)} samples, binned by the learner in ${fmt(performance.now() - started, 2)} ms round trip`;
    const body = document.body;
    body.dataset.densityRefreshes = String(Number(body.dataset.densityRefreshes) + 1);
  } finally {
    state.densityBusy = false;
  }
}

async function tick() {
  try {
    await refreshHistory();
    if ((state.refreshes - 1) % DENSITY_EVERY === 0) await refreshDensity();
    setError("");
    document.body.dataset.auth = "";
  } catch (err) {
    setError(err instanceof AuthError ? err.message : `cannot refresh: ${err.message}`);
  }
  setTimeout(tick, REFRESH_MS);
}

function onSelect() {
  const x = $("sel-x"), y = $("sel-y");
  if (x.value === y.value && !y.disabled) y.value = String((Number(x.value) + 1) % x.options.length);
  refreshDensity().catch((err) => setError(`cannot refresh: ${err.message}`));
}

for (const id of ["sel-x", "sel-y", "sel-n"]) $(id).addEventListener("change", onSelect);
for (const link of document.querySelectorAll("a[data-api]")) link.addEventListener("click", openWithToken);
window.addEventListener("resize", () => drawHistory());
window.addEventListener("hashchange", takeTokenFromFragment);
takeTokenFromFragment();
tick();
