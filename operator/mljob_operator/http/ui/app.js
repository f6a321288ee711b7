// The anomaly explorer: plain DOM and SVG, no library, no build step.
// Every call goes to this operator's data API with the user's bearer token (kept in
// sessionStorage, as the Kubernetes Dashboard does); what the page shows is what the
// API's TokenReview and SubjectAccessReview allow. Text from the API is only ever set as
// textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "mljob.token";
const SVG = "http://www.w3.org/2000/svg";
const PAGE = 10000; // the API's largest page
const $ = (id) => document.getElementById(id);

// ---- state ------------------------------------------------------------------------
const view = { ns: "", job: "", data: null, series: "", zoom: null, zoomStack: [], notice: "" };

function route() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { ns: p.get("ns") || "", job: p.get("job") || "" };
}

function go(ns, job) {
  const p = new URLSearchParams();
  if (ns) p.set("ns", ns);
  if (job) p.set("job", job);
  location.hash = p.toString();
}

// ---- the API ----------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, what) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + token, Accept: "application/json" },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.ok) return body;
  const message = (body && body.error && body.error.message) || response.statusText;
  const err = new ApiError(response.status, message);
  err.what = what;
  throw err;
}

function jobPath(ns, job, tail) {
  return `/v1/namespaces/${encodeURIComponent(ns)}/mljobs/${encodeURIComponent(job)}/${tail}`;
}

// ---- messages -----------------------------------------------------------------------
function say(text, kind) {
  const el = $("message");
  el.textContent = text;
  el.className = kind || "";
  el.hidden = !text;
}

function explain(err) {
  if (err.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    show();
    say(`Token not accepted: ${err.message}. Sign in with another token.`);
  } else if (err.status === 403) {
    say(`You may not ${err.what}: ${err.message}.`);
  } else if (err.status === 404) {
    say(`Not found: ${err.message}.`);
  } else {
    say(`Could not ${err.what} (${err.status || "no answer"}): ${err.message}`);
  }
}

// ---- formatting ---------------------------------------------------------------------
function utc(ms, withDate = true) {
  if (ms === null || ms === undefined) return "";
  const iso = new Date(ms).toISOString();
  return withDate ? iso.slice(0, 16).replace("T", " ") : iso.slice(11, 16);
}

function severity(score) {
  if (score === null || score === undefined) return "none";
  if (score >= 75) return "critical";
  if (score >= 50) return "major";
  if (score >= 25) return "warning";
  return "low";
}

function el(tag, attrs = {}, text = "") {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

function scoreBadge(score) {
  const text = score === null || score === undefined ? "–" : score.toFixed(1);
  return el("span", { class: `score sev-${severity(score)}` }, text);
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.append(c);
    else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.append(td);
  }
  return tr;
}

// ---- pages --------------------------------------------------------------------------
function show() {
  const signedIn = !!sessionStorage.getItem(TOKEN_KEY);
  const { ns, job } = route();
  $("sign-in").hidden = signedIn;
  $("who").hidden = !signedIn;
  $("namespace-form").hidden = !signedIn;
  $("jobs").hidden = !signedIn || !ns || !!job;
  $("job").hidden = !signedIn || !ns || !job;
  if (ns) {
    $("namespace").value = ns;
    $("sign-in-namespace").value = ns;
  }
  return { signedIn, ns, job };
}

let renders = 0; // a newer render makes an older one's answers stale

async function render() {
  const { signedIn, ns, job } = show();
  const mine = ++renders;
  say(view.notice, "info");
  view.notice = "";
  if (!signedIn) return;
  if (!ns) {
    say("Choose a namespace.", "info");
    return;
  }
  try {
    if (job) await showJob(ns, job, () => mine !== renders);
    else await showJobs(ns, () => mine !== renders);
  } catch (err) {
    if (mine !== renders) return;
    $(job ? "job" : "jobs").hidden = true;
    if (err instanceof ApiError) explain(err);
    else say(`The page failed: ${err.message}`);
  }
}

const JOBS_PAGE = 100; // jobs a page asks for; "More jobs" follows the API's continue

async function showJobs(ns, stale) {
  $("jobs-namespace").textContent = ns;
  $("jobs-table").tBodies[0].replaceChildren();
  $("jobs-more").hidden = true;
  $("jobs-empty").hidden = true;
  const shown = await showJobsPage(ns, null, stale);
  if (stale()) return;
  $("jobs-empty").hidden = shown > 0 || !$("jobs-more").hidden;
}

async function showJobsPage(ns, token, stale) {
  // One page of the jobs list, appended to the table; the button fetches the next one.
  const query = new URLSearchParams({ limit: String(JOBS_PAGE) });
  if (token) query.set("continue", token);
  const list = await api(
    `/v1/namespaces/${encodeURIComponent(ns)}/mljobs?${query}`,
    `list MLJobs in ${ns}`,
  );
  if (stale()) return 0;
  const tbody = $("jobs-table").tBodies[0];
  for (const j of list.jobs) {
    const link = el("a", { href: "#" + new URLSearchParams({ ns, job: j.name }) }, j.name);
    const state = el("span", { class: `state ${j.state || ""}` }, j.state || "unknown");
    const lc = j.lastClose;
    let close = "never";
    if (lc) {
      const when = lc.completedAt || lc.startedAt || lc.requestedAt;
      close = `${when ? utc(Date.parse(when)) : "in progress"}${lc.forced ? " (forced)" : ""}` +
        `${lc.timedOut ? " (timed out)" : ""}`;
    }
    const tr = row([link, state, close, scoreBadge(j.maxAnomalyScore), j.bucketCount]);
    tr.dataset.job = j.name;
    tbody.append(tr);
  }
  const more = $("jobs-more");
  more.hidden = !list.continue;
  more.dataset.continue = list.continue || "";
  const left = list.remainingItemCount;
  more.textContent = left ? `More jobs (about ${left} left)` : "More jobs";
  return tbody.rows.length;
}

async function moreJobs() {
  const { ns } = route();
  const more = $("jobs-more");
  const token = more.dataset.continue;
  if (!ns || !token) return;
  const mine = renders; // a render (new namespace, sign-out) makes this page stale
  more.disabled = true;
  try {
    await showJobsPage(ns, token, () => mine !== renders);
  } catch (err) {
    if (mine !== renders) return;
    if (err instanceof ApiError && err.status === 410) {
      view.notice = "The jobs list changed since its first page was read; showing it afresh.";
      await render();
    } else if (err instanceof ApiError) explain(err);
    else say(`The page failed: ${err.message}`);
  } finally {
    more.disabled = false;
  }
}

async function optional(promise) {
  // The model plot is off unless spec.modelPlotConfig.enabled; without it (404 or
  // nothing stored) the chart draws actuals without a band.
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return null;
    throw err;
  }
}

async function showJob(ns, job, stale) {
  $("job-name").textContent = job;
  $("back").href = "#" + new URLSearchParams({ ns });
  $("back").textContent = `← jobs in ${ns}`;
  const read = `read the results of ${ns}/${job}`;
  // The newest page of each (a job with more keeps its older results out of the chart).
  const newest = `sort=timestamp&desc=true&size=${PAGE}`;
  const [stats, buckets, records, plot, influencers, snapshots] = await Promise.all([
    api(jobPath(ns, job, "stats"), `read the stats of ${ns}/${job}`),
    api(jobPath(ns, job, `results/buckets?${newest}`), read),
    api(jobPath(ns, job, `results/records?${newest}`), read),
    optional(api(jobPath(ns, job, `results/modelplot?${newest}`), read)),
    optional(api(jobPath(ns, job, `results/influencers?${newest}`), read)),
    api(jobPath(ns, job, "modelsnapshots?sort=timestamp&desc=true&size=100"),
      `list the model snapshots of ${ns}/${job}`),
  ]);
  if (stale()) return;
  const state = $("job-state");
  state.textContent = stats.state || "unknown";
  state.className = `state ${stats.state || ""}`;
  const dc = stats.dataCounts || {};
  $("job-facts").textContent = `${dc.processedRecordCount ?? 0} records processed in ` +
    `${buckets.count} buckets; active model snapshot ${stats.modelSnapshotId || "none"}.`;
  const modelPlot = (plot && plot.modelPlot) || [];
  const sameJob = view.data && view.ns === ns && view.job === job;
  view.ns = ns;
  view.job = job;
  view.data = {
    buckets: buckets.buckets.reverse(),
    records: records.records.reverse(),
    modelPlot: modelPlot.reverse(),
    influencers: ((influencers && influencers.influencers) || []).reverse(),
  };
  view.data.detectors = new Set([...records.records, ...modelPlot].map((r) => r.detectorIndex)).size;
  if (!sameJob) {
    view.zoom = null;
    view.zoomStack = [];
    view.series = "";
  }
  fillSeries();
  draw();
  fillSnapshots(snapshots.modelSnapshots, stats.modelSnapshotId);
}

// ---- series (splits) ----------------------------------------------------------------
function splitOf(item) {
  // A series: the detector (when the job has several), then its partition and by values.
  const parts = [item.partitionFieldValue, item.byFieldValue].filter((v) => v !== null && v !== undefined);
  if (view.data.detectors > 1) parts.unshift(`detector ${item.detectorIndex}`);
  return parts.join(" / ");
}

function splits() {
  const seen = new Set();
  for (const r of view.data.records) seen.add(splitOf(r));
  for (const m of view.data.modelPlot) seen.add(splitOf(m));
  return [...seen].sort();
}

function fillSeries() {
  const names = splits().filter((s) => s !== "");
  const select = $("series");
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  $("series-label").hidden = names.length === 0;
  if (names.length && !names.includes(view.series)) view.series = names[0];
  if (!names.length) view.series = "";
  select.value = view.series;
}

// ---- time range ---------------------------------------------------------------------
function fullRange() {
  const d = view.data;
  let lo = Infinity;
  let hi = -Infinity;
  for (const b of [...d.buckets, ...d.modelPlot, ...d.records]) {
    lo = Math.min(lo, b.timestamp);
    hi = Math.max(hi, b.timestamp + b.bucketSpan * 1000);
  }
  return lo < hi ? [lo, hi] : [Date.now() - 3600e3, Date.now()];
}

function range() {
  return view.zoom || fullRange();
}

function zoomTo(lo, hi) {
  const [flo, fhi] = fullRange();
  lo = Math.max(lo, flo);
  hi = Math.min(hi, fhi);
  if (hi - lo < 60e3) return;
  view.zoomStack.push(view.zoom);
  view.zoom = [lo, hi];
  draw();
}

// ---- the single-metric chart --------------------------------------------------------
const W = 960;
const H = 320;
const M = { left: 56, right: 24, top: 14, bottom: 28 };

function scales(lo, hi, ymin, ymax) {
  const pad = (ymax - ymin) * 0.08 || 1;
  const y0 = ymin - pad;
  const y1 = ymax + pad;
  return {
    x: (t) => M.left + ((t - lo) / (hi - lo)) * (W - M.left - M.right),
    t: (x) => lo + ((x - M.left) / (W - M.left - M.right)) * (hi - lo),
    y: (v) => H - M.bottom - ((v - y0) / (y1 - y0)) * (H - M.top - M.bottom),
    y0,
    y1,
  };
}

function ticks(lo, hi, n) {
  const step = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step));
  const nice = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step) || step;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi; v += nice) out.push(v);
  return out;
}

const TIME_STEPS = [5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * 60e3);

function timeTicks(lo, hi) {
  const step = TIME_STEPS.find((s) => (hi - lo) / s <= 8) || (hi - lo) / 8;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return { out, withDate: hi - lo > 2 * 86400e3 };
}

function seriesData() {
  const [lo, hi] = range();
  const inRange = (b) => b.timestamp + b.bucketSpan * 1000 > lo && b.timestamp < hi;
  const mine = (item) => splitOf(item) === view.series;
  const plot = view.data.modelPlot.filter((m) => mine(m) && inRange(m));
  const records = view.data.records.filter((r) => mine(r) && inRange(r));
  const buckets = view.data.buckets.filter(inRange);
  // Without a model plot the line is the bucket event counts (a count detector's actual),
  // or the anomalous records' actuals where they are all there is.
  const line = plot.length
    ? plot.map((m) => [m.timestamp + m.bucketSpan * 500, m.actual])
    : buckets.map((b) => [b.timestamp + b.bucketSpan * 500, b.eventCount]);
  return { lo, hi, plot, records, buckets, line, lineIsCounts: !plot.length };
}

function draw() {
  const s = seriesData();
  const svg = $("chart");
  svg.replaceChildren();
  const defs = el("svg:defs");
  const hatch = el("svg:pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)" });
  hatch.append(el("svg:rect", { width: 6, height: 6, fill: "#fff" }),
    el("svg:line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#bbb", "stroke-width": 3 }));
  defs.append(hatch);
  svg.append(defs);

  const values = [...s.line.map((p) => p[1]), ...s.records.map((r) => r.actual[0])];
  for (const m of s.plot) values.push(m.modelLower, m.modelUpper);
  const finite = values.filter(Number.isFinite);
  const ymin = finite.length ? Math.min(...finite) : 0;
  const ymax = finite.length ? Math.max(...finite) : 1;
  const sc = scales(s.lo, s.hi, Math.min(ymin, ymax), Math.max(ymin, ymax));

  const grid = el("svg:g", { class: "grid" });
  for (const v of ticks(sc.y0, sc.y1, 5)) {
    grid.append(el("svg:line", { x1: M.left, x2: W - M.right, y1: sc.y(v), y2: sc.y(v) }));
    grid.append(el("svg:text", { x: M.left - 6, y: sc.y(v) + 4, "text-anchor": "end" },
      Math.abs(v) >= 1e4 ? v.toExponential(1) : String(+v.toFixed(3))));
  }
  const tt = timeTicks(s.lo, s.hi);
  for (const t of tt.out) {
    grid.append(el("svg:line", { x1: sc.x(t), x2: sc.x(t), y1: M.top, y2: H - M.bottom }));
    grid.append(el("svg:text", { x: sc.x(t), y: H - 8, "text-anchor": "middle" }, utc(t, tt.withDate)));
  }
  svg.append(grid);

  // Interim buckets: hatched behind the data, so they read as "not final yet".
  for (const b of s.buckets.filter((b) => b.isInterim)) {
    const x0 = Math.max(sc.x(b.timestamp), M.left);
    const x1 = Math.min(sc.x(b.timestamp + b.bucketSpan * 1000), W - M.right);
    const zone = el("svg:rect", { class: "interim-zone", x: x0, y: M.top, width: Math.max(x1 - x0, 1),
      height: H - M.top - M.bottom, "data-time": b.timestamp });
    zone.append(el("svg:title", {}, `interim bucket ${utc(b.timestamp)} (not final)`));
    svg.append(zone);
  }

  if (s.plot.length) {
    const mid = (m) => sc.x(m.timestamp + m.bucketSpan * 500);
    const upper = s.plot.map((m) => `${mid(m)},${sc.y(m.modelUpper)}`);
    const lower = s.plot.map((m) => `${mid(m)},${sc.y(m.modelLower)}`).reverse();
    svg.append(el("svg:polygon", { class: "band", points: [...upper, ...lower].join(" ") }));
    svg.append(el("svg:polyline", { class: "median",
      points: s.plot.map((m) => `${mid(m)},${sc.y(m.modelMedian)}`).join(" ") }));
  }
  svg.append(el("svg:polyline", { class: "actual",
    points: s.line.map(([t, v]) => `${sc.x(t)},${sc.y(v)}`).join(" ") }));

  const markers = el("svg:g", { class: "markers" });
  for (const r of [...s.records].sort((a, b) => a.recordScore - b.recordScore)) {
    const t = r.timestamp + r.bucketSpan * 500;
    const sev = severity(r.recordScore);
    const dot = el("svg:circle", {
      class: `marker sev-${sev}${r.isInterim ? " interim" : ""}`,
      cx: sc.x(t), cy: sc.y(r.actual[0]), r: 3 + r.recordScore / 20,
      "data-score": r.recordScore.toFixed(2), "data-time": r.timestamp,
    });
    dot.append(el("svg:title", {}, `${utc(r.timestamp)} score ${r.recordScore.toFixed(1)}` +
      ` actual ${r.actual[0]} typical ${r.typical[0]}${r.isInterim ? " (interim)" : ""}`));
    markers.append(dot);
  }
  svg.append(markers);
  brush(svg, sc);

  const legend = [["l-actual", s.lineIsCounts ? "events per bucket" : "actual"]];
  if (s.plot.length) legend.push(["l-band", "expected (model bounds)"]);
  else legend.push(["l-none", "no model plot: enable spec.modelPlotConfig for the expected band"]);
  legend.push(["l-critical", "≥ 75"], ["l-major", "≥ 50"], ["l-warning", "≥ 25"], ["l-low", "< 25"],
    ["l-interim", "interim"]);
  $("legend").replaceChildren(...legend.map(([c, t]) => el("li", { class: c }, t)));
  $("range").textContent = `${utc(s.lo)} – ${utc(s.hi)} UTC`;
  $("zoom-out").disabled = !view.zoomStack.length;
  drawSwimlane(s.lo, s.hi);
  fillRecords(s.lo, s.hi);
  fillInfluencers(s.lo, s.hi);
}

function brush(svg, sc) {
  let start = null;
  let rect = null;
  const toX = (ev) => {
    const box = svg.getBoundingClientRect();
    return ((ev.clientX - box.left) / box.width) * W;
  };
  svg.onpointerdown = (ev) => {
    start = Math.max(M.left, Math.min(toX(ev), W - M.right));
    rect = el("svg:rect", { class: "brush", x: start, y: M.top, width: 0, height: H - M.top - M.bottom });
    svg.append(rect);
    svg.setPointerCapture(ev.pointerId);
  };
  svg.onpointermove = (ev) => {
    if (start === null) return;
    const x = Math.max(M.left, Math.min(toX(ev), W - M.right));
    rect.setAttribute("x", Math.min(start, x));
    rect.setAttribute("width", Math.abs(x - start));
  };
  svg.onpointerup = (ev) => {
    if (start === null) return;
    const x = Math.max(M.left, Math.min(toX(ev), W - M.right));
    const [from, to] = [Math.min(start, x), Math.max(start, x)];
    start = null;
    rect.remove();
    if (to - from >= 4) zoomTo(sc.t(from), sc.t(to));
  };
}

// ---- swimlane ----------------------------------------------------------------------
const QUIET = 1; // a cell scoring below this is drawn empty, so the anomalies stand out
function drawSwimlane(lo, hi) {
  const d = view.data;
  const lanes = [["overall", d.buckets.map((b) => [b.timestamp, b.anomalyScore, b.isInterim])]];
  for (const name of splits()) {
    const recs = d.records.filter((r) => splitOf(r) === name);
    lanes.push([name || "records", recs.map((r) => [r.timestamp, r.recordScore, r.isInterim])]);
  }
  const cols = Math.min(96, Math.max(1, d.buckets.length));
  const width = (hi - lo) / cols;
  const left = 140;
  const cw = (W - left - M.right) / cols;
  const lh = 22;
  const svg = $("swimlane");
  svg.setAttribute("viewBox", `0 0 ${W} ${lanes.length * lh + 22}`);
  svg.replaceChildren();
  lanes.forEach(([name, items], i) => {
    const label = el("svg:text", { x: left - 8, y: i * lh + 15, "text-anchor": "end",
      class: "lane-label" + (i > 0 && name === (view.series || "records") ? " selected" : "") }, name);
    if (i > 0 && name !== "records") {
      label.addEventListener("click", () => {
        view.series = name;
        $("series").value = name;
        draw();
      });
    }
    svg.append(label);
    const best = new Array(cols).fill(null);
    const interim = new Array(cols).fill(false);
    for (const [t, score, isInterim] of items) {
      const c = Math.floor((t - lo) / width);
      if (c < 0 || c >= cols) continue;
      if (best[c] === null || score > best[c]) best[c] = score;
      interim[c] = interim[c] || isInterim;
    }
    best.forEach((score, c) => {
      const t0 = lo + c * width;
      const sev = score === null || score < QUIET ? "none" : severity(score);
      const cell = el("svg:rect", {
        class: `cell sev-${sev}${interim[c] ? " interim" : ""}`,
        x: left + c * cw + 0.5, y: i * lh + 2, width: Math.max(cw - 1, 1), height: lh - 4,
        "data-lane": name, "data-score": score === null ? "" : score.toFixed(2), "data-time": Math.round(t0),
      });
      cell.append(el("svg:title", {}, `${name} ${utc(t0)}: ${score === null ? "no anomaly" : score.toFixed(1)}`));
      cell.addEventListener("click", () => zoomTo(t0 - width, t0 + 2 * width));
      svg.append(cell);
    });
  });
  svg.append(el("svg:text", { x: left, y: lanes.length * lh + 16 }, utc(lo)));
  svg.append(el("svg:text", { x: W - M.right, y: lanes.length * lh + 16, "text-anchor": "end" }, utc(hi)));
}

// ---- tables ------------------------------------------------------------------------
function fillRecords(lo, hi) {
  const rows = view.data.records
    .filter((r) => r.timestamp + r.bucketSpan * 1000 > lo && r.timestamp < hi)
    .sort((a, b) => b.recordScore - a.recordScore);
  $("records-count").textContent = `(${rows.length} in range${rows.length > 200 ? ", top 200 shown" : ""})`;
  const tbody = $("records-table").tBodies[0];
  tbody.replaceChildren(...rows.slice(0, 200).map((r) => {
    const tr = row([utc(r.timestamp), scoreBadge(r.recordScore), r.initialRecordScore.toFixed(1),
      r.probability.toExponential(2), r.function + (r.fieldName ? `(${r.fieldName})` : ""),
      splitOf(r), r.actual.map((v) => +v.toFixed(3)).join(", "),
      r.typical.map((v) => +v.toFixed(3)).join(", "), r.isInterim ? "interim" : ""]);
    if (r.isInterim) tr.className = "interim";
    return tr;
  }));
}

function fillInfluencers(lo, hi) {
  // The values that most influenced the anomalies of the range, by their best score.
  const best = new Map();
  for (const i of view.data.influencers) {
    if (i.timestamp < lo || i.timestamp >= hi) continue;
    const key = `${i.influencerFieldName}\u0000${i.influencerFieldValue}`;
    const seen = best.get(key);
    if (!seen || i.influencerScore > seen.influencerScore) best.set(key, i);
  }
  const top = [...best.values()].sort((a, b) => b.influencerScore - a.influencerScore).slice(0, 20);
  const tbody = $("influencers-table").tBodies[0];
  if (!top.length) {
    const none = row(["none in range (influencers come from spec.analysisConfig.influencers)"]);
    none.firstChild.setAttribute("colspan", "4");
    tbody.replaceChildren(none);
    return;
  }
  tbody.replaceChildren(...top.map((i) => {
    const tr = row([i.influencerFieldName, i.influencerFieldValue, scoreBadge(i.influencerScore),
      utc(i.timestamp) + (i.isInterim ? " (interim)" : "")]);
    tr.dataset.value = i.influencerFieldValue;
    return tr;
  }));
}

function fillSnapshots(snapshots, active) {
  const tbody = $("snapshots-table").tBodies[0];
  if (!snapshots.length) {
    const none = row(["none yet: closing the job persists its model"]);
    none.firstChild.setAttribute("colspan", "6");
    tbody.replaceChildren(none);
    return;
  }
  tbody.replaceChildren(...snapshots.map((s) => row([
    s.snapshotId + (s.snapshotId === active ? " (active)" : ""), utc(s.timestamp), s.description,
    utc(s.latestRecordTimeStamp), `${(s.sizeBytes / 1024).toFixed(1)} KiB`, s.retain ? "yes" : "no",
  ])));
}

// ---- wiring ------------------------------------------------------------------------
$("sign-in-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  const ns = $("sign-in-namespace").value.trim();
  const before = location.hash;
  go(ns, route().job);
  if (location.hash === before) render();
});
$("sign-out").addEventListener("click", () => {
  // Back to the namespace: the next token may not read this job.
  sessionStorage.removeItem(TOKEN_KEY);
  view.data = null;
  view.notice = "Signed out: the token is forgotten.";
  const { ns, job } = route();
  if (job) go(ns, "");
  else render();
});
$("namespace-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go($("namespace").value.trim(), "");
});
$("series").addEventListener("change", () => {
  view.series = $("series").value;
  draw();
});
$("zoom-out").addEventListener("click", () => {
  view.zoom = view.zoomStack.pop() || null;
  draw();
});
$("refresh").addEventListener("click", render);
$("jobs-more").addEventListener("click", moreJobs);
$("zoom-reset").addEventListener("click", () => {
  view.zoom = null;
  view.zoomStack = [];
  draw();
});
$("home").addEventListener("click", (ev) => {
  ev.preventDefault();
  go(route().ns, "");
});
window.addEventListener("hashchange", render);
render();
