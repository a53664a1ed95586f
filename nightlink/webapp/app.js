/* The Nightlink app: the current reading, a chart, alerts and a careportal for one patient.
   Data comes from /app/api (the portal's session cookie) and live over the tenant's WebSocket;
   every glucose value is stored in mg/dL and converted here only for display, with the factor
   the server sends from nightlink.shared.units. No library, no network beyond this site.
   Acknowledgements and treatments go through an outbox kept in localStorage: offline or with
   the server unreachable they wait on the phone, shown as waiting, and are sent when the
   connection is back (doubling back-off with jitter; a refusal (4xx) is shown and dropped).
   The same app runs on the cloud and on the bedside node (CONFIG.tier). */
"use strict";

const CONFIG = JSON.parse(document.body.dataset.config);
const MGDL = "mg/dL";
const MMOLL = "mmol/L";
const ARROWS = {
  DoubleUp: ["⇈", "rising quickly"], TripleUp: ["⇈", "rising very quickly"],
  SingleUp: ["↑", "rising"], FortyFiveUp: ["↗", "rising slowly"], Flat: ["→", "steady"],
  FortyFiveDown: ["↘", "falling slowly"], SingleDown: ["↓", "falling"],
  DoubleDown: ["⇊", "falling quickly"], TripleDown: ["⇊", "falling very quickly"],
};
const RECONNECT_MAX_S = 60;
const REFRESH_S = 60;
const LIVE_LOG = 200;  // live messages kept to replay over a state answer that crossed them
const OUTBOX_KEY = "nightlink-outbox-v1";
const OUTBOX_FIRST_S = 2;  // the first retry after a failed send; doubling up to the ceiling
const OUTBOX_MAX_S = 60;
// On the bedside node, which has no accounts, the unit is this browser's own choice, kept
// here; the node's stored unit is only the default (the cloud keeps it per person).
const UNIT_KEY = "nightlink-unit-v1";
const PATIENT_KEY = "nightlink-patient-v1";  // the patient opened last on this device
const LIVE_SILENT_MS = 45000;  // two missed pings of the live socket: it is dead
const UNIT_WAITING_KEY = "nightlink-unit-waiting-v1";  // a unit chosen offline, not yet stored
const UNIT_HERE = CONFIG.tier === "edge";

const state = {
  me: null, tenant: null, hours: 3, data: null, unit: MGDL, offlineSince: null,
  socket: null, socketTries: 0, socketTimer: null, lastFetchOk: 0, liveLog: [],
  outboxTimer: null, flushing: null, flushAgain: false, refused: new Set(),
  unitSetAt: -1, unitsSending: 0, unitUnsent: null,
};

const $ = (id) => document.getElementById(id);

// -- units and formatting ------------------------------------------------------------------

function fmt(mgdl, unit = state.unit) {
  if (mgdl === null || mgdl === undefined) return "–";
  if (mgdl <= 39) return "LOW";
  if (unit === MMOLL) return (mgdl / CONFIG.mgdl_per_mmoll).toFixed(1);
  return String(Math.round(mgdl));
}

function fmtDelta(d) {
  const sign = d > 0 ? "+" : d < 0 ? "−" : "±";
  const v = Math.abs(d);
  return sign + (state.unit === MMOLL ? (v / CONFIG.mgdl_per_mmoll).toFixed(1) : String(Math.round(v)));
}

function band(mgdl) {
  if (mgdl < CONFIG.low) return "low";
  if (mgdl > CONFIG.high) return "high";
  return "in";
}

function clock(ms) {
  const d = new Date(ms);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

function ago(ms, now) {
  const min = Math.floor((now - ms) / 60000);
  if (min < 1) return "just now";
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  return `${h} h ${min % 60} min ago`;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- talking to the server -------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const init = {credentials: "same-origin", headers: {Accept: "application/json"}, ...options};
  if (options.body !== undefined) {
    init.headers = {...init.headers, "Content-Type": "application/json"};
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    location.assign(CONFIG.sign_in);
    throw new HttpError(401, "Sign in first.");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new HttpError(response.status, (body && body.detail) || `The server answered ${response.status}.`);
  }
  return {body, offline: response.headers.get("X-Nightlink-Offline") === "1"};
}

function setStatus(text, offline = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("offline", offline);
}

async function loadState() {
  if (!state.tenant) return;
  const asked = performance.now();
  try {
    const {body, offline} = await api(`/app/api/${encodeURIComponent(state.tenant)}/state?hours=${state.hours}`);
    state.data = body;
    // A unit chosen while this answer was on its way, or not yet stored, is the newer one.
    if (state.unitUnsent) state.unit = state.unitUnsent;
    else if (!state.unitsSending && !(state.unitSetAt >= asked)) state.unit = unitHere() || body.unit;
    // What the socket brought while the answer was on its way is newer than the answer.
    for (const [at, msg] of state.liveLog) if (at >= asked) applyLive(msg);
    if (offline) {
      state.offlineSince = body.now_ms;
      setStatus(`offline — last data from ${clock(body.now_ms)}`, true);
    } else {
      state.offlineSince = null;
      state.lastFetchOk = Date.now();
      if ($("status").classList.contains("offline")) setStatus("");
      // The server answers again: the unit chosen while it did not is stored now.
      if (state.unitUnsent && !state.unitsSending) setUnit(state.unitUnsent);
    }
    render();
  } catch (err) {
    if (err instanceof HttpError && err.status !== 401) {
      setStatus(err.message);
    } else if (!(err instanceof HttpError)) {
      const since = state.data ? ` — last data from ${clock(state.data.now_ms)}` : "";
      setStatus(`offline${since}; retrying.`, true);
    }
  }
}

// -- the live socket ---------------------------------------------------------------------------

async function connectLive() {
  clearTimeout(state.socketTimer);
  if (!state.tenant || state.socket) return;
  let ticket;
  try {
    ({body: ticket} = await api(`/app/api/${encodeURIComponent(state.tenant)}/live-token`, {method: "POST"}));
  } catch (err) {
    return scheduleReconnect();
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}${ticket.url}?access_token=${encodeURIComponent(ticket.access_token)}`);
  state.socket = ws;
  // Both servers ping every 20 s: a socket silent for 45 s is dead (a network that went away
  // without closing it, a proxy holding it open) and is given up for a new one, said.
  let watchdog;
  const alive = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      ws.onclose = null;
      if (state.socket === ws) state.socket = null;
      document.body.dataset.live = "closed";
      setStatus("Live updates lost (no word from the server for 45 s); reconnecting.", true);
      ws.close();
      scheduleReconnect();
    }, LIVE_SILENT_MS);
  };
  ws.onmessage = (event) => {
    alive();
    let msg;
    try { msg = JSON.parse(event.data); } catch (err) { return; }
    onLive(msg);
  };
  ws.onopen = () => { alive(); state.socketTries = 0; document.body.dataset.live = "open"; };
  ws.onclose = (event) => {
    clearTimeout(watchdog);
    state.socket = null;
    document.body.dataset.live = "closed";
    if (event.code === 4404) return setStatus("This patient is no longer shared with you.");
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  // Doubling with jitter up to a ceiling, so a restarting server is not flooded.
  state.socketTries += 1;
  const ceiling = Math.min(RECONNECT_MAX_S, 2 ** Math.min(state.socketTries, 6));
  const wait = ceiling / 2 + Math.random() * ceiling / 2;
  if (state.socketTries > 1) setStatus(`Live updates interrupted; reconnecting in ${Math.round(wait)} s.`, true);
  state.socketTimer = setTimeout(() => { connectLive(); loadState(); }, wait * 1000);
}

function onLive(msg) {
  if (msg.type === "resync") {  // the server dropped messages for this slow client
    loadState();
    return;
  }
  state.liveLog.push([performance.now(), msg]);
  if (state.liveLog.length > LIVE_LOG) state.liveLog.shift();
  if (state.data && applyLive(msg)) render();
  // The forecast is the clock's model on the newest hour: after a new reading, the server's
  // again (once for a burst of readings).
  if (msg.type === "entry") {
    clearTimeout(state.forecastTimer);
    state.forecastTimer = setTimeout(loadState, 1500);
  }
}

function applyLive(msg) {
  if (msg.type === "hello") {
    if ($("status").textContent.startsWith("Live updates")) setStatus("");
    state.data.alerts = msg.data.alerts.slice();
    if (msg.data.entry) addEntry(msg.data.entry);
  } else if (msg.type === "entry") {
    addEntry(msg.data);
  } else if (msg.type === "alerts") {  // the bedside node: the alerts holding now
    state.data.alerts = msg.data.slice();
  } else if (msg.type === "treatment") {
    addTreatment(msg.data);
  } else if (msg.type === "alert") {
    const a = msg.data;
    state.data.alerts = state.data.alerts.filter((x) => x.id !== a.id);
    if (a.acked_at === null || a.acked_at === undefined) state.data.alerts.push(a);
    else closeNotifications(a.id);
  } else {
    return false;
  }
  return true;
}

function addEntry(doc) {
  if ((doc.type || "sgv") !== "sgv" || typeof doc.sgv !== "number" || doc.sgv < 39) return;
  const entries = state.data.entries;
  if (entries.some((e) => e.date === doc.date)) return;
  entries.push({date: doc.date, sgv: doc.sgv, direction: doc.direction || "NONE"});
  entries.sort((a, b) => a.date - b.date);
}

function addTreatment(t) {
  // Entered here, on another phone, by an uploader (AndroidAPS, xDrip+) or over MQTT: the
  // same treatment replaces its older copy; a deleted one leaves.
  const rest = state.data.treatments.filter((x) => x.id !== t.id);
  if (!t.deleted) rest.push(t);
  rest.sort((a, b) => a.at_ms - b.at_ms);
  state.data.treatments = rest;
}

// -- rendering ---------------------------------------------------------------------------------

function render() {
  const d = state.data;
  if (!d) return;
  $("patient-name").textContent = d.name;
  document.title = `Nightlink · ${d.name}`;
  for (const r of document.querySelectorAll("input[name=unit]")) r.checked = r.value === state.unit;
  renderNow();
  renderChart();
  renderAlerts();
  renderTreatments();
  $("care").hidden = !d.can_act;
  $("care-h").textContent = d.can_act ? "Log a treatment" : "Treatments";
  $("care-readonly").hidden = d.can_act;
  $("alerts-readonly").hidden = d.can_act;
  if (!d.can_act && d.role !== "doctor") {  // a caregiver invited to follow, read-only
    $("alerts-readonly").textContent = "Your access is read-only: the patient and the " +
      "caregivers who may act acknowledge the alerts.";
    $("care-readonly").textContent = "Your access is read-only: the patient and the " +
      "caregivers who may act log treatments.";
  }
  document.body.dataset.role = d.role;
}

function renderNow() {
  const now = Date.now();
  const entries = state.data.entries;
  const last = entries[entries.length - 1];
  const card = $("now");
  card.classList.remove("low", "in", "high", "stale");
  $("unit-label").textContent = state.unit;
  const stale = $("stale");
  if (!last) {
    $("level").hidden = true;
    $("value").textContent = "–";
    $("arrow").textContent = "";
    $("arrow").setAttribute("aria-label", "no trend");
    $("delta").textContent = "";
    $("age").textContent = CONFIG.tier === "cloud" && state.data.role === "patient"
      ? "No reading yet: connect a CGM app (the address and secret are on the Sharing page)."
      : "No reading yet.";
    stale.hidden = true;
    return;
  }
  const ageMin = (now - last.date) / 60000;
  $("value").textContent = fmt(last.sgv);
  const [arrow, words] = ARROWS[last.direction] || ["", "no trend"];
  $("arrow").textContent = arrow;
  $("arrow").setAttribute("aria-label", words);
  const prev = entries[entries.length - 2];
  $("delta").textContent = prev && last.date - prev.date <= CONFIG.stale_min * 60000
    ? `${fmtDelta(last.sgv - prev.sgv)} ${state.unit} since the previous reading ·` : "";
  $("age").textContent = ago(last.date, now);
  // The level in words as well as colour: a red number alone is missed, and an urgent low
  // must not look like a mild one.
  const level = $("level");
  const word = ageMin > CONFIG.stale_min ? "" : last.sgv < CONFIG.very_low ? "Urgent low"
    : last.sgv < CONFIG.low ? "Low" : last.sgv > CONFIG.very_high ? "Very high"
    : last.sgv > CONFIG.high ? "High" : "";
  level.textContent = word;
  level.hidden = !word;
  level.classList.toggle("urgent", word === "Urgent low" || word === "Very high");
  if (ageMin > CONFIG.stale_min) {
    card.classList.add("stale");
    stale.hidden = false;
    stale.classList.toggle("urgent", ageMin > CONFIG.urgent_stale_min);
    stale.textContent = `No new reading for ${Math.floor(ageMin)} min: this value is old.`;
  } else {
    card.classList.add(band(last.sgv));
    stale.hidden = true;
  }
}

const SVGNS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderChart() {
  const d = state.data;
  const box = $("chart");
  const width = Math.max(300, Math.round(box.clientWidth || 600));
  const height = width < 600 ? 220 : 300;
  const pad = {l: 40, r: 12, t: 10, b: 40};
  const now = Math.max(d.now_ms, Date.now());
  const t0 = now - d.hours * 3600000;
  const t1 = now + 35 * 60000;  // room for the 30-minute forecast
  const entries = d.entries.filter((e) => e.date >= t0);
  const top = Math.max(300, ...entries.map((e) => e.sgv + 20));
  const x = (t) => pad.l + (t - t0) / (t1 - t0) * (width - pad.l - pad.r);
  const y = (g) => pad.t + (1 - (g - 40) / (top - 40)) * (height - pad.t - pad.b);
  const chart = svg("svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                            id: "glucose-chart"});
  const fc = d.forecast;
  chart.setAttribute("aria-label", `Glucose over the last ${d.hours} hours: ${entries.length} readings, `
    + `${d.treatments.length} treatments, target range ${fmt(CONFIG.low)} to ${fmt(CONFIG.high)} ${state.unit}`
    + (shownForecast(fc) ? `, forecast in 30 minutes ${fmt(fc.forecast30_mgdl)}` : "") + ".");
  chart.appendChild(svg("rect", {class: "band", x: pad.l, y: y(CONFIG.high), width: width - pad.l - pad.r,
                                 height: y(CONFIG.low) - y(CONFIG.high)}));
  // The target range's ends are labelled first: where labels would overlap (a phone's short
  // chart), the 54 and 250 lines stay without theirs, never the 70 and 180.
  const labelled = [];
  for (const g of [CONFIG.low, CONFIG.high, CONFIG.very_low, CONFIG.very_high]) {
    chart.appendChild(svg("line", {class: "grid", x1: pad.l, x2: width - pad.r, y1: y(g), y2: y(g)}));
    if (labelled.some((at) => Math.abs(y(g) - at) < 14)) continue;
    labelled.push(y(g));
    chart.appendChild(svg("text", {class: "axis", x: pad.l - 4, y: y(g) + 4, "text-anchor": "end",
                                   "data-mgdl": g}, fmt(g)));
  }
  const stepH = d.hours <= 3 ? 1 : d.hours <= 6 ? 2 : d.hours <= 12 ? 3 : 6;
  const first = new Date(t0); first.setMinutes(0, 0, 0);
  for (let t = first.getTime() + 3600000; t <= now; t += 3600000) {
    if (new Date(t).getHours() % stepH) continue;
    chart.appendChild(svg("text", {class: "axis", x: x(t), y: height - pad.b + 16, "text-anchor": "middle"}, clock(t)));
  }
  chart.appendChild(svg("line", {class: "now-line", x1: x(now), x2: x(now), y1: pad.t, y2: height - pad.b}));
  const r = d.hours <= 6 ? 3 : 2;
  for (const e of entries) {
    const dot = svg("circle", {class: `pt-${band(e.sgv)}`, cx: x(e.date).toFixed(1), cy: y(e.sgv).toFixed(1), r});
    dot.appendChild(svg("title", {}, `${clock(e.date)} ${fmt(e.sgv)} ${state.unit}`));
    chart.appendChild(dot);
  }
  if (shownForecast(fc) && entries.length) {
    const last = entries[entries.length - 1];
    const at = fc.at_ms + 30 * 60000;
    chart.appendChild(svg("line", {class: "fc", x1: x(last.date), y1: y(last.sgv), x2: x(at), y2: y(fc.forecast30_mgdl)}));
    const p = svg("circle", {class: "fc-pt", cx: x(at), cy: y(fc.forecast30_mgdl), r: 4});
    p.appendChild(svg("title", {}, `forecast for ${clock(at)}: ${fmt(fc.forecast30_mgdl)} ${state.unit}`));
    chart.appendChild(p);
  }
  const base = height - pad.b + 30;
  for (const t of d.treatments) {
    if (t.at_ms < t0) continue;
    const label = treatmentShort(t);
    const g = svg("g", {class: "treatment"});
    g.appendChild(svg("path", {class: "tr", d: `M${x(t.at_ms)} ${base - 8} l-5 -8 h10 z`}));
    g.appendChild(svg("title", {}, `${clock(t.at_ms)} ${t.eventType}: ${treatmentText(t)}`));
    if (label) g.appendChild(svg("text", {class: "tr-text", x: x(t.at_ms) + 6, y: base - 8}, label));
    chart.appendChild(g);
  }
  box.replaceChildren(chart);
  $("range-text").textContent = `${fmt(CONFIG.low)}–${fmt(CONFIG.high)} ${state.unit}`;
  const note = $("forecast");
  if (!fc) {
    note.textContent = "No forecast: the low alarm's model needs a reading from the last " +
      "15 minutes and most of the hour before it.";
  } else {
    // The clock's own model on these readings, and what its low alarm sounds at.
    const parts = [];
    if (shownForecast(fc)) {
      parts.push(`In 30 minutes about ${fmt(fc.forecast30_mgdl)} ${state.unit}`);
    }
    parts.push(`predicted-low risk ${Math.round(fc.low_risk * 100)} %`);
    const floor = fc.alarm_floor_mgdl;
    let rule = `the low alarm sounds at ${Math.round(fc.alarm_at * 100)} %`;
    if (floor) rule += ` with a forecast below ${fmt(floor)} ${state.unit}`;
    if (fc.policy_from === "edge" || fc.policy_from === "cloud") {
      rule += ", set on this person's own nights";
    }
    const said = parts.join("; ");
    note.textContent = `${fc.sounding ? "Low predicted. " : ""}` +
      `${said[0].toUpperCase()}${said.slice(1)} ` +
      `(${rule}; reading of ${clock(fc.at_ms)}).`;
  }
}

function shownForecast(fc) {
  // The forecast is a mean: before a low it runs high (at 74 mg/dL falling it may say 85),
  // so past the alarm's threshold the risk speaks alone, in words and on the chart.
  return Boolean(fc && fc.forecast30_mgdl && fc.low_risk < fc.alarm_at);
}

function treatmentShort(t) {
  const parts = [];
  if (t.carbs) parts.push(`${t.carbs} g`);
  if (t.insulin) parts.push(`${t.insulin} U`);
  if (t.duration && t.eventType === "Exercise") parts.push(`${t.duration}′`);
  return parts.join(" ");
}

function treatmentText(t) {
  const short = treatmentShort(t);
  return [short, t.notes].filter(Boolean).join(" · ") || "—";
}

// An alert's words in the person's unit: the cloud writes them in mg/dL ("Urgent low: 52
// mg/dL (below 54).", "Rising fast: 3.1 mg/dL/min …").
function alertText(a) {
  if (state.unit !== MMOLL) return a.message;
  const num = "(\\d+(?:\\.\\d+)?)";
  return a.message
    .replace(new RegExp(num + " mg/dL/min", "g"),
             (_, v) => `${(+v / CONFIG.mgdl_per_mmoll).toFixed(2)} mmol/L/min`)
    .replace(new RegExp(num + " mg/dL", "g"),
             (_, v) => (+v <= 39 ? "below the sensor's range" : `${fmt(+v)} mmol/L`))
    .replace(new RegExp("\\((below|above) " + num + "\\)", "g"), (_, w, v) => `(${w} ${fmt(+v)})`);
}

function renderAlerts() {
  const d = state.data;
  const list = $("alerts");
  const alerts = d.alerts.slice().sort((a, b) =>
    (a.level === "urgent" ? 0 : 1) - (b.level === "urgent" ? 0 : 1) || b.at_ms - a.at_ms);
  list.replaceChildren(...alerts.map((a) => {
    const li = el("li", {class: a.level, "data-alert": a.id});
    const text = el("div");
    text.appendChild(el("span", {class: "lvl"}, a.level === "urgent" ? "Urgent" : "Warning"));
    text.appendChild(document.createTextNode(" " + alertText(a)));
    text.appendChild(el("time", {datetime: new Date(a.at_ms).toISOString()}, `${clock(a.at_ms)} · ${ago(a.at_ms, Date.now())}`));
    li.appendChild(text);
    if (d.can_ack === undefined ? d.can_act : d.can_ack) {
      const b = el("button", {type: "button", "aria-label": `Acknowledge: ${alertText(a)}`,
                              "data-message": alertText(a)}, "Acknowledge");
      b.addEventListener("click", () => acknowledge(a));
      li.appendChild(b);
    }
    return li;
  }));
  $("alerts-empty").hidden = alerts.length > 0;
  renderPending();
  $("alerts-h").textContent = alerts.length ? `Alerts (${alerts.length})` : "Alerts";
}

// -- sounding alerts on this device -----------------------------------------------------------

// Chosen per device (a browser plays sound only after a tap on the page): an alert that opens
// while the page is open rings, and, when the page is behind others, shows a system
// notification. In the cloud an urgent one rings again every URGENT_RING_S until it is
// acknowledged (here, even while the acknowledgement waits to be sent) or ends. The bedside
// node lists what holds now, named by rule, and has no acknowledging: there an alert rings
// once, and again only after RING_AGAIN_S without it (as an episode ends), so glucose
// flapping around 70 does not ring every ten minutes. What was open when the page opened
// does not ring at once. A locked phone suspends the page, so it is no alarm for the night
// (docs/app.md).
const SOUND_KEY = "nightlink-sound";
const URGENT_RING_S = 20;
const RING_AGAIN_S = 15 * 60;
const ring = {on: false, ctx: null, seen: null, timer: null, rang: new Map()};

function renderSound() {
  $("sound").setAttribute("aria-pressed", String(ring.on));
  // After a reload the browser lets the page play sound only once it is tapped again.
  const held = ring.on && (!ring.ctx || ring.ctx.state !== "running");
  $("sound-state").textContent = !ring.on ? "Off."
    : held ? "On, once the page is tapped: tap anywhere on it (not this button)." : "On.";
}

async function toggleSound() {
  ring.on = !ring.on;
  try { localStorage.setItem(SOUND_KEY, ring.on ? "1" : "0"); } catch (err) { /* private mode */ }
  if (ring.on) {
    const ctx = audio();  // this tap lets the page play sound
    if (ctx) await ctx.resume().catch(() => {});
    tone("warning");  // how it sounds
    if ("Notification" in window && Notification.permission === "default") {
      try { await Notification.requestPermission(); } catch (err) { /* the sound stays */ }
    }
  }
  renderSound();
  renderPending();  // which rings (or stops) as the alerts and the waiting acknowledgements say
  if (CONFIG.tier !== "edge") inTurn(ring.on ? subscribePush : unsubscribePush);
}

// -- alerts on a locked phone (Web Push: cloud/push.py, the worker's "push" in sw.js) ------------

// The page rings only while it runs; with sound on, the browser also subscribes to its push
// service, and the cloud sends each new alert there, which wakes the phone. What stands in the
// way is said under the button, in words: the operator set no key, notifications are blocked,
// the browser cannot (an iPhone's Safari until the app is on the home screen), the push
// service refused, or the last delivery failed.
const PUSH_WAIT_S = 20;
let pushTurn = Promise.resolve();

function inTurn(step) {
  // One subscribe or unsubscribe at a time, in the order of the taps: sound turned off and
  // on quickly must not reach the server as "on, then off".
  pushTurn = pushTurn.then(step, step);
  return pushTurn;
}

function sayPush(text) { $("push-state").textContent = text; }

function pushKeyBytes(b64) {
  const raw = atob(b64.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function pushSummary(s) {
  if (!s) return "Locked phone: not subscribed.";
  if (s.error) return `Locked phone: the last alert did not reach this phone (${clock(s.error_at * 1000)}: ${s.error}).`;
  return s.delivered_at ? `Locked phone: on; the last alert reached the push service at ${clock(s.delivered_at * 1000)}.`
    : "Locked phone: on; new alerts come as notifications even while the phone is locked.";
}

async function pushRegistration() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) return null;
  return Promise.race([navigator.serviceWorker.ready,
                       new Promise((done) => setTimeout(() => done(null), 5000))]);
}

async function pushSubscription() {
  // This browser's push subscription, null without one (or without push).
  const reg = await pushRegistration();
  return reg ? reg.pushManager.getSubscription().catch(() => null) : null;
}

async function subscribePush() {
  // Sound on: subscribed, under the server's current key, and told to the server, each time
  // the app opens (the cloud may have forgotten it: a push service's 410, another person
  // signed in on this browser, a subscription that did not answer in time; or the operator
  // changed the key).
  const reg = await pushRegistration();
  if (!reg) {
    sayPush("Locked phone: this browser cannot receive alerts while the page is closed (on an iPhone, add the app to the home screen and open it from there).");
    return;
  }
  let info;
  try { ({body: info} = await api(`/app/api/${encodeURIComponent(state.tenant)}/push`)); } catch (err) {
    sayPush(`Locked phone: not set up (${err.message}).`);
    return;
  }
  if (!info.key) {
    sayPush("Locked phone: this server does not send alerts to locked phones (its operator has not set NIGHTLINK_PUSH_KEY); alerts ring only while the page is open.");
    return;
  }
  if (!("Notification" in window) || Notification.permission !== "granted") {
    sayPush("Locked phone: notifications are blocked for this site; allow them in the browser's settings, then turn sound off and on.");
    return;
  }
  try {
    let sub = await reg.pushManager.getSubscription();
    const key = pushKeyBytes(info.key);
    const same = (a, b) => a && a.byteLength === b.byteLength && new Uint8Array(a).every((v, i) => v === b[i]);
    if (sub && !same(sub.options && sub.options.applicationServerKey, key)) {
      await sub.unsubscribe();  // subscribed under another key (the operator changed it)
      sub = null;
    }
    if (!sub) {
      sayPush("Locked phone: subscribing…");
      // A browser whose push service cannot be reached never answers: say so after a while.
      sub = await Promise.race([
        reg.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: key}),
        new Promise((done, fail) => setTimeout(() => fail(new Error(
          "the browser's push service did not answer")), PUSH_WAIT_S * 1000))]);
    }
    const {body} = await api(`/app/api/${encodeURIComponent(state.tenant)}/push`,
                             {method: "POST", body: sub.toJSON()});
    sayPush(pushSummary(body.subscription));
  } catch (err) {
    sayPush(`Locked phone: not subscribed (${err.message || err.name}); alerts ring only while the page is open. It is tried again when the app opens.`);
  }
}

async function unsubscribePush() {
  sayPush("");
  const sub = await pushSubscription();
  if (!sub) return;
  try {
    await api(`/app/api/${encodeURIComponent(state.tenant)}/push/remove`,
              {method: "POST", body: {endpoint: sub.endpoint}});
  } catch (err) { sayPush(`Locked phone: could not be turned off (${err.message}).`); }
  if (!ring.on) endPush(sub);  // (unless sound was turned on again meanwhile)
}

async function endPush(sub) {
  // Sound is off on this device: its subscription ends with the push service too, so no one's
  // alerts (another patient's, the last person's who used this browser) reach it; the cloud
  // forgets what is left of it at its next push, which the service refuses.
  try { await sub.unsubscribe(); } catch (err) { /* the cloud's next push ends it */ }
}

async function showPush() {
  // Each time the app opens. With sound on: subscribed again if need be, and the last
  // delivery to this phone shown; with sound off: no subscription left behind.
  if (CONFIG.tier === "edge") return;
  if (ring.on) { inTurn(subscribePush); return; }
  const sub = await pushSubscription();
  if (sub) endPush(sub);
}

function audio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  if (!ring.ctx) {
    ring.ctx = new Ctx();
    ring.ctx.addEventListener("statechange", renderSound);
  }
  if (ring.ctx.state === "suspended") ring.ctx.resume().catch(() => {});
  return ring.ctx;
}

function tone(level) {
  // Three high beeps for an urgent alert, two lower ones for a warning. Only while the page
  // may play: tones scheduled before would all sound at once when it may.
  const ctx = audio();
  if (!ctx || ctx.state !== "running") return;
  const [freq, beeps] = level === "urgent" ? [880, 3] : [660, 2];
  const t0 = ctx.currentTime + 0.05;
  for (let i = 0; i < beeps; i += 1) {
    const at = t0 + i * 0.4;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.25);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.3);
  }
}

function soundAlerts(waiting) {
  // waiting: the ids of the alerts whose acknowledgement waits to be sent (renderPending's)
  if (!state.data) return;
  const open = state.data.alerts;
  const now = Date.now();
  const node = CONFIG.tier === "edge";
  const first = ring.seen === null;
  const fresh = first ? [] : open.filter((a) => !ring.seen.has(String(a.id))
    && !(node && now - (ring.rang.get(String(a.id)) || -Infinity) < RING_AGAIN_S * 1000));
  ring.seen = new Set(open.map((a) => String(a.id)));
  for (const a of fresh) ring.rang.set(String(a.id), now);
  const urgent = !node && open.some((a) => a.level === "urgent" && !waiting.has(String(a.id)));
  if (!ring.on || !urgent) {
    clearInterval(ring.timer);
    ring.timer = null;
  }
  document.body.dataset.ringing = ring.on && urgent ? "urgent" : "";
  if (!ring.on) return;
  if (fresh.length) {
    tone(fresh.some((a) => a.level === "urgent") ? "urgent" : "warning");
    notify(fresh);
  }
  if (urgent && !ring.timer) ring.timer = setInterval(() => tone("urgent"), URGENT_RING_S * 1000);
}

// The service worker's registration once it is active, null after 3 s or without one (the
// bedside node over plain http has none).
function workerReady() {
  return navigator.serviceWorker ? Promise.race([
    navigator.serviceWorker.ready, new Promise((done) => setTimeout(() => done(null), 3000))])
    : Promise.resolve(null);
}

// An alert closed (acknowledged here or elsewhere, or over): its notification on this
// phone goes, whether the page or a push showed it (the worker holds both).
function closeNotifications(id) {
  workerReady()
    .then((reg) => reg ? reg.getNotifications({tag: `nightlink-${state.tenant}-${id}`}) : [])
    .then((shown) => shown.forEach((n) => n.close()))
    .catch(() => {});
}

async function notify(alerts) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (document.visibilityState === "visible" && document.hasFocus()) return;  // the page says it
  const name = state.data ? state.data.name : "Nightlink";
  try {
    const reg = await workerReady();
    const d = state.data || {};
    const acks = CONFIG.tier !== "edge" && (d.can_ack === undefined ? d.can_act : d.can_ack);
    for (const a of alerts) {
      const title = a.level === "urgent" ? `Urgent · ${name}` : name;
      const options = {body: alertText(a), tag: `nightlink-${state.tenant}-${a.id}`,
                       requireInteraction: a.level === "urgent", icon: "/app/static/icon-192.png",
                       data: {url: location.pathname}};
      if (reg && acks) {
        // the same notification as a push of this alert (one replaces the other, whichever
        // comes last), with its Acknowledge button (sw.js)
        options.actions = [{action: "ack", title: "Acknowledge"}];
        options.data.ack = `/app/api/${encodeURIComponent(state.tenant)}/alerts/${a.id}/ack`;
      }
      if (reg) await reg.showNotification(title, options);
      else new Notification(title, options);  // no worker (the bedside node over plain http)
    }
  } catch (err) { /* no notification: the sound and the page remain */ }
}

function renderTreatments() {
  const items = state.data.treatments.slice().reverse().slice(0, 8);
  $("treatments").replaceChildren(...items.map((t) => {
    const li = el("li");
    li.appendChild(el("time", {datetime: new Date(t.at_ms).toISOString()}, clock(t.at_ms)));
    li.appendChild(document.createTextNode(`${t.eventType}: ${treatmentText(t)}`));
    return li;
  }));
  if (!items.length) $("treatments").replaceChildren(el("li", {class: "small"}, `None in the last ${state.data.hours} h.`));
}

// -- actions -----------------------------------------------------------------------------------

// The outbox: what the person did, kept until the server has it. Each item names the person
// (only their own items are sent or shown), the patient, the route and the body; a treatment
// carries its own identifier and time, so sending it twice stores it once.

function outboxAll() {
  try { return JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"); } catch (err) { return []; }
}

function outboxSave(items) {
  localStorage.setItem(OUTBOX_KEY, JSON.stringify(items));
}

function outboxMine() {
  return outboxAll().filter((i) => state.me && i.who === state.me.email);
}

function newIdentifier() {
  // crypto.randomUUID needs a secure context; the bedside node is plain http on the LAN.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "nlapp-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function enqueue(kind, path, body, label, extra = {}) {
  // Resolves once a first try is over: sent, refused (its id in state.refused) or waiting.
  const id = newIdentifier();
  const items = outboxAll();
  items.push({id, who: state.me.email, tenant: state.tenant, kind, path, body, label,
              tries: 0, next_at: 0, ...extra});
  outboxSave(items);
  renderPending();
  await flushOutbox();
  return id;
}

function outboxUpdate(id, change) {
  const items = outboxAll();
  const at = items.findIndex((i) => i.id === id);
  if (at < 0) return;
  if (change === null) items.splice(at, 1); else Object.assign(items[at], change);
  outboxSave(items);
}

async function flushOutbox() {
  // One flush at a time; a call during one makes it go round once more (the new item).
  if (state.flushing) { state.flushAgain = true; return state.flushing; }
  state.flushing = (async () => {
    do { state.flushAgain = false; await flushOnce(); } while (state.flushAgain);
  })();
  try { await state.flushing; } finally { state.flushing = null; }
}

async function flushOnce() {
  // In order; a failure leaves the rest waiting for the next try.
  clearTimeout(state.outboxTimer);
  if (!state.me) return;
  let sent = 0;
  for (const item of outboxMine()) {
    if (item.next_at > Date.now()) break;
    try {
      await api(item.path, {method: "POST", body: item.body});
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) break;  // signing in again first
      if (err instanceof HttpError && err.status >= 400 && err.status < 500
          && err.status !== 408 && err.status !== 429) {
        outboxUpdate(item.id, null);  // refused: retrying would be refused again
        refused(item, err.message);
        continue;
      }
      const tries = item.tries + 1;  // 5xx or no connection: later, with back-off
      const ceiling = Math.min(OUTBOX_MAX_S, OUTBOX_FIRST_S * 2 ** (tries - 1));
      const wait = ceiling / 2 + Math.random() * ceiling / 2;
      outboxUpdate(item.id, {tries, next_at: Date.now() + wait * 1000});
      setStatus(`Offline: ${outboxMine().length} waiting to be sent; next try in ${Math.round(wait)} s.`, true);
      break;
    }
    outboxUpdate(item.id, null);
    sent += 1;
    if (item.kind === "ack" && state.data && item.tenant === state.tenant) {
      state.data.alerts = state.data.alerts.filter((a) => String(a.id) !== item.alert);
    }
    if (item.kind === "treatment") $("care-error").textContent = "";
    setStatus(item.kind === "ack" ? "Alert acknowledged." : `${item.body.eventType} saved.`);
  }
  const waiting = outboxMine();
  if (waiting.length) {
    const next = Math.min(...waiting.map((i) => i.next_at));
    state.outboxTimer = setTimeout(flushOutbox, Math.max(0, next - Date.now()));
  }
  renderPending();
  if (sent && state.data) {
    render();
    // Live, the server's own message brings what was stored; without the socket, ask.
    if (document.body.dataset.live !== "open") await loadState();
  }
}

function refused(item, message) {
  state.refused.add(item.id);
  if (item.kind === "treatment") {  // it may have waited: say which one
    $("care-error").textContent = `${item.label} was not saved: ${message}`;
  } else {
    setStatus(`${item.label} was not sent: ${message}`);
  }
}

function renderPending() {
  const items = outboxMine().filter((i) => i.tenant === state.tenant);
  $("pending").replaceChildren(...items.map((i) => el("li", {"data-pending": i.kind}, i.label)));
  $("pending-card").hidden = items.length === 0;
  const acks = new Set(items.filter((i) => i.kind === "ack").map((i) => i.alert));
  for (const li of document.querySelectorAll("#alerts li")) {
    const waiting = acks.has(li.dataset.alert);
    li.classList.toggle("pending", waiting);
    const b = li.querySelector("button");
    if (!b) continue;
    const word = waiting ? "Waiting to send" : "Acknowledge";
    b.disabled = waiting;
    b.textContent = word;
    b.setAttribute("aria-label", `${word}: ${b.dataset.message}`);
  }
  soundAlerts(acks);  // an urgent alert acknowledged here, even unsent, rings no more
}

async function acknowledge(alert) {
  // `alert`: which one to take off the list once sent. This browser's push endpoint goes
  // with it: the cloud then tells the family's other phones, not this one, that it closed.
  const sub = CONFIG.tier === "edge" ? null : await Promise.race([
    pushSubscription().catch(() => null), new Promise((done) => setTimeout(() => done(null), 1000))]);
  return enqueue("ack", `/app/api/${encodeURIComponent(state.tenant)}/alerts/${alert.id}/ack`,
                 sub ? {endpoint: sub.endpoint} : {}, `Acknowledge: ${alertText(alert)}`,
                 {alert: String(alert.id)});
}

function careFields() {
  const kind = $("care-type").value;
  const shown = {"Meal Bolus": ["carbs", "insulin"], "Carb Correction": ["carbs"],
                 "Correction Bolus": ["insulin"], Exercise: ["duration"], Note: []}[kind];
  for (const label of document.querySelectorAll("#care .fields label")) {
    label.hidden = !shown.includes(label.dataset.for);
  }
}

async function saveTreatment(event) {
  event.preventDefault();
  const form = event.target;
  const body = {eventType: form.eventType.value, notes: form.notes.value,
                identifier: newIdentifier()};
  for (const name of ["carbs", "insulin", "duration"]) {
    const input = form[name];
    if (!input.closest("label").hidden && input.value.trim() !== "") body[name] = input.value.trim();
  }
  // The time is fixed now: sent later, the treatment still happened when it was entered.
  body.at_ms = Date.now() - Number(form.when.value || 0) * 60000;
  $("care-error").textContent = "";
  const label = `${body.eventType} at ${clock(body.at_ms)}`
    + (body.carbs ? ` · ${body.carbs} g` : "") + (body.insulin ? ` · ${body.insulin} U` : "")
    + (body.duration ? ` · ${body.duration} min` : "");
  const id = await enqueue("treatment", `/app/api/${encodeURIComponent(state.tenant)}/treatments`,
                          body, label);
  if (!state.refused.has(id)) {  // sent or waiting: the form is free for the next one
    form.reset();
    careFields();
  }
}

function unitHere() {
  if (!UNIT_HERE) return null;
  try {
    const unit = localStorage.getItem(UNIT_KEY);
    return unit === MGDL || unit === MMOLL ? unit : null;
  } catch (err) { return null; }
}

function waitingUnit() {
  // The unit this account chose while offline, kept across reloads until it is stored.
  try {
    const w = JSON.parse(localStorage.getItem(UNIT_WAITING_KEY) || "null");
    return w && state.me && w.user === state.me.id && (w.unit === MGDL || w.unit === MMOLL)
      ? w.unit : null;
  } catch (err) { return null; }
}

function setWaitingUnit(unit) {
  state.unitUnsent = unit;
  try {
    if (unit) localStorage.setItem(UNIT_WAITING_KEY, JSON.stringify({user: state.me.id, unit}));
    else localStorage.removeItem(UNIT_WAITING_KEY);
  } catch (err) { /* this page only */ }
}

async function setUnit(unit) {
  state.unit = unit;
  state.unitSetAt = performance.now();
  render();
  if (UNIT_HERE) {
    try { localStorage.setItem(UNIT_KEY, unit); } catch (err) { /* this screen only */ }
    return;
  }
  if (state.unitUnsent) setWaitingUnit(null);  // this choice supersedes one that waited
  state.unitsSending += 1;
  try {
    await api("/app/api/units", {method: "PUT", body: {unit}});
  } catch (err) {
    if (err instanceof HttpError) {  // refused: said, and not sent again
      setStatus(err.message);
    } else if (state.unit === unit && !state.unitUnsent) {
      // offline: kept on this screen (and across reloads), stored once the server answers
      setWaitingUnit(unit);
      setStatus("Offline: the unit is changed on this screen and saved when the server answers.", true);
    }
  } finally {
    state.unitsSending -= 1;
    // A state answer asked before the server stored the unit may carry the old one: only
    // answers asked from now on are newer than this choice.
    state.unitSetAt = performance.now();
  }
}

function setHours(hours) {
  state.hours = hours;
  for (const b of document.querySelectorAll(".hours button")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.hours) === hours));
  }
  loadState();
}

// -- start -------------------------------------------------------------------------------------

async function start() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", {scope: "/app"}).catch(() => {});
  }
  try { ring.on = localStorage.getItem(SOUND_KEY) === "1"; } catch (err) { ring.on = false; }
  if (ring.on) audio();
  renderSound();
  $("sound").addEventListener("click", toggleSound);
  for (const kind of ["click", "touchend", "keydown"]) {  // what lets a page play sound
    document.addEventListener(kind, () => { if (ring.on) audio(); });
  }
  $("care-type").addEventListener("change", careFields);
  $("care").addEventListener("submit", saveTreatment);
  careFields();
  for (const b of document.querySelectorAll(".hours button")) {
    b.addEventListener("click", () => setHours(Number(b.dataset.hours)));
  }
  for (const r of document.querySelectorAll("input[name=unit]")) {
    r.addEventListener("change", () => setUnit(r.value));
  }
  $("sign-out").addEventListener("submit", async (event) => {
    try { localStorage.removeItem(UNIT_WAITING_KEY); } catch (err) { /* nothing kept */ }
    if (navigator.serviceWorker && navigator.serviceWorker.controller) {
      navigator.serviceWorker.controller.postMessage("forget-data");
    }
    // A signed-out phone hears no one's alerts: its push subscription ends (the cloud forgets
    // it at the next push, which the push service refuses).
    const form = event.target;
    if (form.dataset.unsubscribed) return;
    event.preventDefault();
    const sub = await pushSubscription();
    if (sub) await Promise.race([sub.unsubscribe().catch(() => {}),
                                 new Promise((done) => setTimeout(done, 2000))]);
    form.dataset.unsubscribed = "1";
    form.submit();
  });
  window.addEventListener("resize", () => { if (state.data) renderChart(); });
  window.addEventListener("online", () => {
    // Back online: what waits goes now, without the back-off's remaining wait.
    outboxSave(outboxAll().map((i) => ({...i, next_at: 0})));
    flushOutbox(); loadState(); connectLive();
  });
  let me;
  try {
    ({body: me} = await api("/app/api/me"));
  } catch (err) {
    if (!(err instanceof HttpError)) setStatus("offline — the app has no saved data yet.", true);
    return;
  }
  state.me = me;
  state.unitUnsent = waitingUnit();
  state.unit = state.unitUnsent || unitHere() || me.unit;
  $("who").textContent = me.email;
  const wanted = decodeURIComponent(location.pathname.split("/")[2] || "");
  const tenants = me.tenants;
  if (!tenants.length) {
    setStatus("No patient is shared with this account yet.");
    return;
  }
  // The patient in the address, else the one opened last on this device, else the first
  // (the server lists patients with readings first).
  let last = null;
  try { last = localStorage.getItem(PATIENT_KEY); } catch (err) { last = null; }
  const has = (id) => tenants.some((t) => t.tenant === id);
  state.tenant = has(wanted) ? wanted : has(last) ? last : tenants[0].tenant;
  try { localStorage.setItem(PATIENT_KEY, state.tenant); } catch (err) { /* private mode */ }
  if (!wanted) history.replaceState(null, "", `/app/${encodeURIComponent(state.tenant)}`);
  if (tenants.length > 1) {
    const pick = $("patient");
    pick.replaceChildren(...tenants.map((t) => el("option", {value: t.tenant}, t.name)));
    pick.value = state.tenant;
    pick.addEventListener("change", () => location.assign(`/app/${encodeURIComponent(pick.value)}`));
    pick.closest("label").hidden = false;
  }
  const pages = `/portal/p/${encodeURIComponent(state.tenant)}`;
  $("to-portal").href = pages;
  $("to-morning").href = `${pages}/morning`;  // last night's card, one tap from the app
  $("to-insights").href = `${pages}/insights`;
  const mine = tenants.find((t) => t.tenant === state.tenant);
  $("to-sharing").href = `${pages}/sharing`;
  $("to-sharing").hidden = !(mine && (mine.role === "patient" || mine.role === "admin"));
  await loadState();
  flushOutbox();  // what waited on this phone since the last time
  showPush();
  connectLive();
  setInterval(() => { if (state.data) { renderNow(); } }, 15000);
  setInterval(loadState, REFRESH_S * 1000);
  document.body.dataset.ready = "1";
}

start();
